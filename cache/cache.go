package cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// Defaults of Config: what its zero values select.
const (
	// DefaultMaxSessions is Config.MaxSessions's default.
	DefaultMaxSessions = 1_000_000
	// DefaultRefreshAhead is Config.RefreshAhead's default.
	DefaultRefreshAhead = 5 * time.Minute
	// DefaultRefreshTimeout is Config.RefreshTimeout's default.
	DefaultRefreshTimeout = 30 * time.Second
	// DefaultRetryCooldown is Config.RetryCooldown's default.
	DefaultRetryCooldown = 5 * time.Second
)

// Config configures a Cache. Zero values select the defaults noted.
type Config struct {
	// Exchanger calls Rebell's applyToken. Required.
	Exchanger rebell.TokenExchanger
	// MaxSessions is how many sessions the memory tier holds. A login never
	// fails because it is full: room is made before Rebell is called, by
	// ending the session a request used least recently (approximately: the
	// one idle longest among a few sampled), or, with a shared store, by
	// dropping its copy from memory. Memory grows with the sessions held,
	// not with MaxSessions. 0 means 1,000,000.
	MaxSessions int64
	// HotSessions is how many of the sessions in memory keep an entry ready
	// for requests: the sessions in use (docs/sessions.md). The others are
	// kept compactly, and a request for one of them makes it an entry again
	// (a few microseconds, a few allocations) while the least recently used
	// entry is folded back. 0 means MaxSessions up to 65,536, and the larger
	// of 65,536 and MaxSessions/16 beyond that; more than MaxSessions means
	// MaxSessions; negative is an error.
	HotSessions int64
	// RefreshAhead is how long before the access token expires a background
	// refresh starts (docs/freshness.md). 0 means 5m; negative is an error.
	RefreshAhead time.Duration
	// IdleTimeout ends a session that no request used for this long
	// (measured to within a second). 0 means none.
	IdleTimeout time.Duration
	// LoginDedupWindow is how long after a successful login the same auth
	// code returns the same session; while a code's exchange is in flight,
	// the same code joins it. 0 turns deduplication off entirely (each Login
	// calls Rebell). The gateway's default is 60s (docs/contract.md).
	LoginDedupWindow time.Duration
	// RefreshTimeout bounds one applyToken exchange, its retries included,
	// run on behalf of the cache: a refresh, or a deduplicated login's
	// exchange. It runs under the cache's own context, so one request giving
	// up does not cancel an exchange that others wait on. 0 means 30s.
	RefreshTimeout time.Duration
	// RetryCooldown is how long after a failed or refused refresh (other
	// than a dead refresh token) no background refresh-ahead call starts
	// for that session. A request whose token must be refreshed now does
	// not wait for it: it calls the Exchanger, whose circuit breaker keeps
	// a failing Rebell from being called (docs/rebell-calls.md).
	// 0 means 5s.
	RetryCooldown time.Duration
	// SessionKeys are the keys session ids are tagged with (see
	// session.IDs): the first tags new ids, every one verifies. With a
	// shared store they must be the same on every instance (the gateway
	// derives them from the store's encryption key with session.DeriveKey).
	// Empty means one random key, kept as long as the Cache.
	SessionKeys [][]byte
	// Store, if set, is the record of truth shared with other instances
	// (docs/sessions.md): logins are confirmed in it, memory misses read it, refreshes
	// take its lease, and its announcements end or update the copies held in
	// memory. The Cache owns it: Close closes it. nil means memory only.
	Store session.Store
	// Now is the clock. nil means time.Now.
	Now func() time.Time
	// Logger receives login, refresh and session-end events, naming a session
	// by Key.Tag. It never receives a token, an auth code or a session id,
	// and a customer id only at DEBUG. nil means no logging.
	Logger *zap.Logger
	// OnLogin, if set, is called once per auth code exchange with its
	// result: "SUCCESS", Rebell's resultCode, "transport_error",
	// "bad_signature", "bad_response" or "store_error"; and with
	// "deduplicated" for each Login that reused or joined the exchange of
	// the same code instead of calling Rebell. Exchanges cut short by Close
	// are not reported.
	OnLogin func(result string)
	// OnRefresh, if set, is called once per refresh call to Rebell with its
	// result, in the vocabulary of OnLogin ("store_error" and
	// "deduplicated" do not occur). Refreshes cut short by Close are not
	// reported.
	OnRefresh func(result string)
	// OnSessionEnded, if set, is called once for each session this cache
	// ends, with the reason: "logout", "customer", "idle", "expired",
	// "evicted" (memory full), "refresh_token_dead", "record_corrupt" or
	// "ended_elsewhere" (another instance ended it). Sessions dropped by
	// Close are not reported.
	OnSessionEnded func(reason string)
	// Revoke, if set, is called once for each session whose end the
	// gateway decides: a Logout (RevokeLogout), an EndCustomer
	// (RevokeCustomer) and, without a Store, a session ended to make room
	// in the full memory tier (RevokeEvicted). It gets the session's
	// current tokens (with a Store, those of the record whose end this
	// cache stored), so that they are cancelled at Rebell
	// (docs/contract.md, revoke). Logout and EndCustomer call it before
	// they return; it must only queue the cancel, never call Rebell. Ends
	// Rebell decided (a dead refresh token), expiries, idle ends and ends
	// announced by other instances do not call it.
	Revoke func(ctx context.Context, tokens session.Cancel, reason string)
	// OnSessionsChanged, if set, is called with the number of sessions in
	// memory after it changes. It is called with an internal lock held: it
	// must be quick and must not call the Cache other than Len.
	OnSessionsChanged func(n int)
	// OnThawed, if set, is called each time a session kept without an
	// entry gets one again (see HotSessions): a request for a session not
	// used lately. Its rate tells whether HotSessions is too small for the
	// sessions in use.
	OnThawed func()
	// Carry, if set, gives work a request starts in one of the cache's own
	// goroutines (a login, a refresh) what it keeps of the request's
	// context: the gateway passes its tracing span on this way
	// (docs/operations.md, "Tracing"). background is true for work the
	// request does not wait for (refresh-ahead). It returns the context
	// the work runs with, derived from work.
	Carry func(from, work context.Context, background bool) context.Context
}

// Cache holds the gateway's sessions and keeps their tokens fresh
// (docs/contract.md, docs/freshness.md). All methods are safe for concurrent
// use.
type Cache struct {
	// settings are shared with the layer (layer.go).
	settings
	onLogin   func(string)
	onRefresh func(string)
	onEnded   func(string)
	carry     func(from, work context.Context, background bool) context.Context

	mem    *memoryTier
	logins loginMemo

	// back is what lies behind the memory tier: memoryOnly, or the replica
	// layer of a shared store.
	back layer

	// cancel cancels ctx.
	cancel context.CancelFunc
	// lifeMu guards closed against wg.Add: no goroutine starts after Close
	// began waiting.
	lifeMu    sync.Mutex
	closed    bool
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New validates cfg and returns a Cache. Close it when done.
func New(cfg Config) (*Cache, error) {
	switch {
	case cfg.Exchanger == nil:
		return nil, errors.New("cache: Exchanger is required")
	case cfg.MaxSessions < 0 || cfg.MaxSessions > math.MaxInt64/10:
		return nil, fmt.Errorf("cache: MaxSessions %d out of range", cfg.MaxSessions)
	case cfg.HotSessions < 0:
		return nil, fmt.Errorf("cache: HotSessions %d is negative", cfg.HotSessions)
	case cfg.RefreshAhead < 0:
		return nil, fmt.Errorf("cache: RefreshAhead %v is negative", cfg.RefreshAhead)
	case cfg.IdleTimeout < 0:
		return nil, fmt.Errorf("cache: IdleTimeout %v is negative", cfg.IdleTimeout)
	case cfg.LoginDedupWindow < 0:
		return nil, fmt.Errorf("cache: LoginDedupWindow %v is negative", cfg.LoginDedupWindow)
	case cfg.RefreshTimeout < 0:
		return nil, fmt.Errorf("cache: RefreshTimeout %v is negative", cfg.RefreshTimeout)
	case cfg.RetryCooldown < 0:
		return nil, fmt.Errorf("cache: RetryCooldown %v is negative", cfg.RetryCooldown)
	}
	c := &Cache{
		settings: settings{
			exch:           cfg.Exchanger,
			pol:            newPolicy(orDefault(cfg.RefreshAhead, DefaultRefreshAhead), cfg.IdleTimeout),
			idleTimeout:    int64(cfg.IdleTimeout),
			dedupWindow:    cfg.LoginDedupWindow,
			refreshTimeout: orDefault(cfg.RefreshTimeout, DefaultRefreshTimeout),
			retryCooldown:  orDefault(cfg.RetryCooldown, DefaultRetryCooldown),
			now:            cfg.Now,
			log:            cfg.Logger,
			revoke:         cfg.Revoke,
		},
		onLogin:   cfg.OnLogin,
		onRefresh: cfg.OnRefresh,
		onEnded:   cfg.OnSessionEnded,
		carry:     cfg.Carry,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if len(cfg.SessionKeys) == 0 {
		c.ids = session.RandomIDs()
	} else {
		ids, err := session.NewIDs(cfg.SessionKeys...)
		if err != nil {
			return nil, err
		}
		c.ids = ids
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	c.logins.m = make(map[[32]byte]*loginCall)
	mem, err := newMemoryTier(orDefault(cfg.MaxSessions, DefaultMaxSessions), cfg.HotSessions, c.now, memoryHooks{
		evicted: func(ctx context.Context, e *entry) { c.back.evicted(ctx, e) },
		expired: c.expired,
		changed: cfg.OnSessionsChanged,
		thawed:  cfg.OnThawed,
	})
	if err != nil {
		return nil, err
	}
	c.mem = mem
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if cfg.Store != nil {
		r := newReplica(c.settings, c, cfg.Store)
		c.back = r
		r.listen()
	} else {
		c.back = &memoryOnly{settings: c.settings, h: c}
	}
	return c, nil
}

// rateLimited lets an event through at most once a minute, counting those
// it held back.
type rateLimited struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

// allow counts an event at now and reports whether to log it, with the
// number of events since the last one logged (this one included).
func (r *rateLimited) allow(now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if !r.last.IsZero() && now.Sub(r.last) < time.Minute {
		return 0, false
	}
	n := r.n
	r.last, r.n = now, 0
	return n, true
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// ParseSessionID checks that id is a session id this cache made (its tag
// verifies under one of the session keys) and returns its key; see
// session.IDs.Parse. A made-up id costs no lookup.
func (c *Cache) ParseSessionID(id string) (Key, bool) { return c.ids.Parse(id) }

// Get returns the Grant a request for session k acts with, refreshing the
// session's tokens as docs/freshness.md says. A request whose session is fresh costs no
// allocation, no lock shared with other sessions, and no log line.
//
// Errors: ErrSessionInvalid (unknown, ended, idle-expired), ErrReauthRequired
// (the refresh token expired or Rebell declared it dead),
// ErrRebellUnavailable and ErrRebellRejected (a needed refresh failed and the
// access token has expired; they wrap the *rebell.Error, or ctx's error when
// ctx ended while waiting), ErrStoreUnavailable (the cache is closed).
func (c *Cache) Get(ctx context.Context, k Key) (*Grant, error) {
	e := c.mem.get(&k)
	if e == nil {
		if c.mem.closed() {
			return nil, ErrStoreUnavailable
		}
		var err error
		if e, err = c.back.miss(k); err != nil {
			return nil, err
		}
	}
	if e.ended.Load() {
		return nil, ErrSessionInvalid
	}
	now := c.now()
	ns := now.UnixNano()
	c.back.use(e, ns)
	if c.idleTimeout > 0 && ns-e.lastUsed.Load() >= c.idleTimeout {
		if ok, err := c.back.idle(ctx, e, ns); !ok {
			return nil, err
		}
	}
	st := e.state.Load()
	switch c.pol.classify(st, now) {
	case fresh:
		c.mem.touch(e, ns)
		return &st.grant, nil
	case refreshAhead:
		c.mem.touch(e, ns)
		c.joinRefresh(ctx, e, st, now, true) // start a refresh-ahead; do not wait for it
		return &st.grant, nil
	case mustRefresh:
		c.mem.touch(e, ns)
		return c.awaitRefresh(ctx, e, st, now)
	case reauth:
		return nil, ErrReauthRequired
	default: // gone: kept past its grace (the memory tier's TTL runs on the wall clock)
		c.endSession(e, "expired", zapcore.DebugLevel)
		return nil, ErrSessionInvalid
	}
}

// Logout ends session k: requests holding its id get ErrSessionInvalid from
// then on, on every instance sharing the store. It is idempotent: an unknown
// or ended session is not an error. With a shared store it fails with
// ErrStoreUnavailable when the end cannot be stored; the copy in this
// instance's memory is dropped either way, but the session, still valid in
// the store, is not remembered as unknown: it is read back on its next use
// here, and a retried Logout here reaches the store (docs/sessions.md,
// unknown ids).
func (c *Cache) Logout(ctx context.Context, k Key) error {
	customer := ""
	e := c.mem.get(&k)
	if e != nil {
		st := e.state.Load()
		customer = st.grant.CustomerID
		if c.endCopy(e, "logout", zapcore.InfoLevel) && c.memoryOnlyBack() {
			c.revokeState(ctx, st, RevokeLogout)
		}
	}
	return c.back.logout(ctx, k, e != nil, customer)
}

// EndCustomer ends every session of customerID and returns how many it
// ended: those held by this cache and, with a shared store, every one
// indexed there (on every instance).
func (c *Cache) EndCustomer(ctx context.Context, customerID string) (int, error) {
	n := 0
	ended := make(map[Key]bool)
	for _, e := range c.mem.sessionsOf(customerID) {
		if c.endCopy(e, "customer", zapcore.InfoLevel) {
			ended[e.key] = true
			n++
			if c.memoryOnlyBack() {
				c.revokeState(ctx, e.state.Load(), RevokeCustomer)
			}
		}
	}
	serr := c.back.endCustomer(ctx, customerID, ended, &n)
	if n > 0 {
		c.log.Info("rebell customer sessions ended", zap.Int("sessions", n))
		c.log.Debug("rebell customer sessions ended", zap.String("customer_id", customerID), zap.Int("sessions", n))
	}
	return n, serr
}

// Len returns the number of sessions held in memory.
func (c *Cache) Len() int { return c.mem.len() }

// Close cancels the cache's background refreshes and exchanges, waits for
// them, and closes the memory tier, dropping every session. Requests still
// calling Get afterwards get ErrStoreUnavailable. It is safe to call more
// than once (later calls wait for the first) and concurrently with other
// methods.
func (c *Cache) Close() {
	c.closeOnce.Do(func() {
		c.lifeMu.Lock()
		c.closed = true
		c.lifeMu.Unlock()
		c.cancel()
		c.wg.Wait()
		c.mem.close()
		c.back.close()
	})
}

// spawn runs f in a goroutine owned by the cache, with the cache's context.
// It reports false, running nothing, once Close has begun.
func (c *Cache) spawn(f func(ctx context.Context)) bool {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(c.ctx)
	}()
	return true
}

// spawnFor is spawn for work that the request of ctx starts: the work's
// context gets what Config.Carry keeps of ctx.
func (c *Cache) spawnFor(ctx context.Context, background bool, f func(ctx context.Context)) bool {
	if c.carry == nil {
		return c.spawn(f)
	}
	return c.spawn(func(work context.Context) { f(c.carry(ctx, work, background)) })
}

// closing reports whether Close has begun.
func (c *Cache) closing() bool { return c.ctx.Err() != nil }

// held returns the copy of session k that memory holds, or nil.
func (c *Cache) held(k Key) *entry { return c.mem.get(&k) }

// heldKeys returns the key of every session memory holds.
func (c *Cache) heldKeys() []Key { return c.mem.keys() }

// hold puts e, read from the store with state st at now, in memory; see
// host.hold.
func (c *Cache) hold(e *entry, st *tokenState, now time.Time) (*entry, error) {
	if err := c.mem.insert(context.Background(), e, c.pol.lifetime(st, now), nil); err != nil {
		if held := c.mem.get(&e.key); held != nil {
			return held, nil // another path stored it meanwhile
		}
		return nil, storeError(err)
	}
	if e.ended.Load() {
		c.mem.remove(e)
		return nil, ErrSessionInvalid
	}
	c.noteWindow(e, st)
	return e, nil
}

// endSession ends a session: marks its entry ended (so every holder of the pointer
// sees it), removes it from memory and from the customer index. It reports
// whether this call ended it.
func (c *Cache) endSession(e *entry, reason string, level zapcore.Level) bool {
	if !e.ended.CompareAndSwap(false, true) {
		return false
	}
	c.dropEnded(e, reason, level)
	return true
}

// endCopy is end for a caller that has yet to end the session in the store
// (Logout, EndCustomer): it does not remember the session as unknown, which
// only an end the store confirmed may do (endedHere). If storing the end
// fails, the session lives on in the store, and on this instance it is read
// back from there like on any other (docs/sessions.md, unknown ids).
func (c *Cache) endCopy(e *entry, reason string, level zapcore.Level) bool {
	if !e.ended.CompareAndSwap(false, true) {
		return false
	}
	c.dropCopy(e, reason, level)
	return true
}

// dropEnded removes an entry just marked ended from memory and, with a
// shared store, remembers the session as unknown: only for an end the
// store has (or that came from it).
func (c *Cache) dropEnded(e *entry, reason string, level zapcore.Level) {
	c.dropCopy(e, reason, level)
	c.back.confirmedEnd(e.key)
}

// dropCopy removes an entry just marked ended from memory and logs the end.
func (c *Cache) dropCopy(e *entry, reason string, level zapcore.Level) {
	c.mem.remove(e)
	c.reportEnd(e, reason, level)
}

// expired is the memory tier's report that it removed e's session: its
// record lifetime (R + grace) passed.
func (c *Cache) expired(e *entry) {
	if e.ended.CompareAndSwap(false, true) {
		c.reportEnd(e, "expired", zapcore.DebugLevel)
	}
}

func (c *Cache) reportEnd(e *entry, reason string, level zapcore.Level) {
	if c.closing() {
		return // Close drops every session; that is not news per session
	}
	if c.onEnded != nil {
		c.onEnded(reason)
	}
	if ce := c.log.Check(level, "rebell session ended"); ce != nil {
		age := c.now().Sub(time.Unix(0, e.created)).Round(time.Second)
		ce.Write(zap.String("session", e.key.Tag()), zap.String("reason", reason), zap.Float64("age_seconds", age.Seconds()))
	}
}
