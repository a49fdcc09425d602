package revoke

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// Defaults of Config.
const (
	// DefaultBackoffBase is the wait after a cancel's first failed try;
	// each further failure doubles it, up to DefaultBackoffMax.
	DefaultBackoffBase = time.Second
	// DefaultBackoffMax caps the wait between tries.
	DefaultBackoffMax = 30 * time.Second
	// DefaultLeaseTTL is how long one instance holds a pending cancel it
	// works on before another may take it: more than one try takes
	// (CallTimeout).
	DefaultLeaseTTL = time.Minute
	// DefaultPoll is how often the queues are looked at for cancels that
	// became due, or that other instances queued or left behind.
	DefaultPoll = time.Second
	// storeTimeout bounds one queue operation.
	storeTimeout = 2 * time.Second
)

// Results reported to Config.OnResult besides rebell.MetricResult's
// vocabulary for a cancelToken call's answer.
const (
	// ResultRefused: the guard refused the call; nothing was sent.
	ResultRefused = "refused"
	// ResultGivenUp: a pending cancel was given up (its tokens expired,
	// Rebell gave a final failure, or it could not be kept).
	ResultGivenUp = "given_up"
)

// Config configures a Revoker.
type Config struct {
	// Queue keeps the pending cancels: a shared store's (durable, shared
	// by every instance), or nil for a MemoryQueue of the Revoker's own.
	Queue session.PendingCancels
	// Canceller calls cancelToken (the guarded client). Required.
	Canceller rebell.TokenCanceller
	// Refresher refreshes a pending cancel whose access token expired
	// before cancelling the new one (the guarded client). Required.
	Refresher rebell.TokenExchanger
	// Now is the clock of due times and expiries. nil means time.Now.
	Now func() time.Time
	// BackoffBase and BackoffMax shape the wait between tries (0 means the
	// defaults).
	BackoffBase, BackoffMax time.Duration
	// LeaseTTL is how long a try holds a pending cancel (0 means
	// DefaultLeaseTTL); one try is given half of it.
	LeaseTTL time.Duration
	// Poll is how often Start's goroutine looks at the queues while some
	// cancel may be pending (0 means DefaultPoll). An idle Revoker sends
	// nothing to the store: it looks again when it queues a cancel, when
	// the store announces one (see Watch) and when its subscription is
	// re-established.
	Poll time.Duration
	// Logger receives one INFO line per cancel Rebell confirmed and a WARN
	// per cancel given up. It never receives a token. nil means none.
	Logger *zap.Logger
	// OnResult, if set, is called once per try with its result: the
	// cancelToken answer in rebell.MetricResult's words, ResultRefused,
	// and ResultGivenUp once per cancel given up.
	OnResult func(result string)
	// OnPending, if set, is called with the number of pending cancels
	// after it may have changed (at most once a Poll while some are).
	OnPending func(n int)
	// Carry, if set, takes what the work on a cancel needs of the context
	// that queued it (a request's trace, docs/operations.md "Tracing")
	// into the context of that work. Enqueue calls it with the queuing
	// context and context.Background(): a result other than that
	// Background is kept in memory with the pending cancel (at most
	// MaxCarried of them, never a request's cancellation), until the
	// cancel settles or is given up. Each try of the cancel calls it again
	// with the kept context and the try's. It must keep no secret. A
	// cancel worked by another instance, or after a restart, has nothing
	// kept.
	Carry func(from, work context.Context) context.Context
}

// MaxCarried bounds the contexts Config.Carry kept for pending cancels;
// beyond it a queued cancel keeps none.
const MaxCarried = 1024

// Revoker cancels the tokens of sessions the gateway ended, in the
// background, retrying with capped backoff until Rebell answers for good
// or nothing is left to cancel (docs/contract.md, revoke). All methods are
// safe for concurrent use.
type Revoker struct {
	cfg     Config
	durable session.PendingCancels // nil without a shared store
	memory  *MemoryQueue           // always: the queue, or the fallback
	now     func() time.Time
	log     *zap.Logger

	// carried holds Config.Carry's contexts by pending cancel id.
	carriedMu sync.Mutex
	carried   map[string]carried

	wake chan struct{}
	// busy is set while a cancel may be pending (the last look found one,
	// or one was queued or announced since): the goroutine looks every
	// Poll only then.
	busy      atomic.Bool
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
}

// New validates cfg and returns a Revoker. Call Start to run it in the
// background, or Drain to work the queues from a test.
func New(cfg Config) (*Revoker, error) {
	if cfg.Canceller == nil || cfg.Refresher == nil {
		return nil, errors.New("revoke: a canceller and a refresher are required")
	}
	if cfg.BackoffBase < 0 || cfg.BackoffMax < 0 || cfg.LeaseTTL < 0 || cfg.Poll < 0 {
		return nil, errors.New("revoke: durations must not be negative")
	}
	cfg.BackoffBase = orDefault(cfg.BackoffBase, DefaultBackoffBase)
	cfg.BackoffMax = orDefault(cfg.BackoffMax, DefaultBackoffMax)
	cfg.LeaseTTL = orDefault(cfg.LeaseTTL, DefaultLeaseTTL)
	cfg.Poll = orDefault(cfg.Poll, DefaultPoll)
	r := &Revoker{cfg: cfg, durable: cfg.Queue, memory: NewMemoryQueue(), now: cfg.Now, log: cfg.Logger, wake: make(chan struct{}, 1)}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// carried is what Config.Carry kept of a pending cancel's queuing
// context, until its tokens expire at the latest.
type carried struct {
	ctx   context.Context
	until time.Time
}

// keep runs Config.Carry on the context that queues c and, if it gives
// something to keep, names c (AddCancel keeps a set id) and keeps it under
// that name, before c is queued and can be worked.
func (r *Revoker) keep(from context.Context, c *session.Cancel) {
	if r.cfg.Carry == nil {
		return
	}
	bg := context.Background()
	kept := r.cfg.Carry(from, bg)
	if kept == bg {
		return // nothing to carry: nothing allocated
	}
	now := r.now()
	r.carriedMu.Lock()
	defer r.carriedMu.Unlock()
	if len(r.carried) >= MaxCarried {
		// Cancels settled by another instance leave theirs behind:
		// drop those whose tokens expired.
		for id, k := range r.carried {
			if !now.Before(k.until) {
				delete(r.carried, id)
			}
		}
		if len(r.carried) >= MaxCarried {
			return
		}
	}
	if r.carried == nil {
		r.carried = make(map[string]carried)
	}
	c.ID = newID()
	r.carried[c.ID] = carried{ctx: kept, until: c.Until()}
}

// carry returns work with what Config.Carry kept for c, if anything.
func (r *Revoker) carry(c *session.Cancel, work context.Context) context.Context {
	if r.cfg.Carry == nil {
		return work
	}
	r.carriedMu.Lock()
	k, ok := r.carried[c.ID]
	r.carriedMu.Unlock()
	if !ok {
		return work
	}
	return r.cfg.Carry(k.ctx, work)
}

// forget drops what was kept for c, which settled or was given up.
func (r *Revoker) forget(c *session.Cancel) {
	if r.cfg.Carry == nil {
		return
	}
	r.carriedMu.Lock()
	delete(r.carried, c.ID)
	r.carriedMu.Unlock()
}

// carriedLen returns how many pending cancels have a kept context.
func (r *Revoker) carriedLen() int {
	r.carriedMu.Lock()
	defer r.carriedMu.Unlock()
	return len(r.carried)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Enqueue queues the cancel of a session's tokens, ended for reason
// ("logout", "customer", "evicted"). With a shared store it is written
// there before Enqueue returns (so it survives this instance); if the store
// cannot take it, it is kept in memory (and lost with this instance), which
// is logged. Nothing is called at Rebell here: Start's goroutine does it.
// Tokens that expired already are not queued.
func (r *Revoker) Enqueue(ctx context.Context, tok session.Cancel, reason string) {
	now := r.now()
	c := tok
	c.ID, c.Reason, c.Queued, c.Due, c.Attempts = "", reason, now, time.Time{}, 0
	if c.AccessToken.IsZero() || !now.Before(c.Until()) {
		return // nothing left to cancel
	}
	r.keep(ctx, &c)
	id := c.ID // set if Carry kept something under it
	if r.durable != nil {
		// The request may go away meanwhile; the cancel must not.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		err := r.durable.AddCancel(sctx, &c)
		cancel()
		if err == nil {
			r.kick()
			return
		}
		r.log.Warn("rebell cancel kept in this instance's memory only: the store cannot take it",
			zap.String("end", reason), zap.Error(err))
		c.ID = id
	}
	if err := r.memory.AddCancel(context.Background(), &c); err != nil {
		r.giveUp(&c, "cannot be queued", err)
		return
	}
	r.kick()
}

func (r *Revoker) kick() {
	r.busy.Store(true)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start runs the Revoker's goroutine until Close. It is idempotent.
func (r *Revoker) Start() {
	r.startOnce.Do(func() {
		r.wg.Add(1)
		go r.loop()
	})
}

// Close stops the goroutine and waits for it. A try in flight is cut
// short and its cancel put back; pending cancels stay in the shared store
// for another instance, while those held in memory are lost (logged).
func (r *Revoker) Close() {
	r.closeOnce.Do(func() {
		r.cancel()
		r.wg.Wait()
		if n, _ := r.memory.CountCancels(context.Background()); n > 0 {
			r.log.Warn("rebell cancels given up: the gateway stops with them held in memory only", zap.Int("cancels", n))
		}
	})
}

func (r *Revoker) loop() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	r.busy.Store(true) // at start: cancels other instances left behind
	for {
		if r.busy.Load() {
			r.Drain(r.ctx)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
		}
	}
}

// Drain works every pending cancel that is due, one after the other, until
// none is left due or ctx ends, and reports the pending count to
// OnPending.
func (r *Revoker) Drain(ctx context.Context) {
	r.busy.Store(false) // a kick from now on sets it again
	for _, q := range r.queues() {
		for ctx.Err() == nil && r.one(ctx, q) {
		}
	}
	n, err := r.Pending(context.Background())
	if err != nil || n > 0 {
		r.busy.Store(true) // look again at the next Poll
	}
	if err == nil && r.cfg.OnPending != nil {
		r.cfg.OnPending(n)
	}
}

func (r *Revoker) queues() []session.PendingCancels {
	if r.durable != nil {
		return []session.PendingCancels{r.memory, r.durable}
	}
	return []session.PendingCancels{r.memory}
}

// Pending returns the number of pending cancels (those of every instance,
// with a shared store).
func (r *Revoker) Pending(ctx context.Context) (int, error) {
	total := 0
	for _, q := range r.queues() {
		sctx, cancel := context.WithTimeout(ctx, storeTimeout)
		n, err := q.CountCancels(sctx)
		cancel()
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// one leases one due cancel of q and tries it. It reports whether it found
// one (and should look again).
func (r *Revoker) one(ctx context.Context, q session.PendingCancels) bool {
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	c, lease, err := q.LeaseCancel(sctx, r.now(), r.cfg.LeaseTTL)
	cancel()
	if err != nil {
		if errors.Is(err, session.ErrRecordCorrupt) {
			r.log.Warn("rebell cancel given up: its pending record cannot be read", zap.Error(err))
			r.result(ResultGivenUp)
			return true
		}
		if ctx.Err() == nil {
			r.log.Debug("rebell pending cancels cannot be read now", zap.Error(err))
		}
		return false
	}
	if c == nil {
		return false
	}
	r.try(ctx, q, c, lease)
	return true
}

// try makes one step of c: a refresh when its access token expired, or
// the cancel; then removes it (done or given up) or puts it back.
func (r *Revoker) try(ctx context.Context, q session.PendingCancels, c *session.Cancel, lease string) {
	now := r.now()
	if !now.Before(c.Until()) {
		r.remove(q, c)
		r.giveUp(c, "its tokens expired before Rebell confirmed the cancel", nil)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, r.cfg.LeaseTTL/2)
	defer cancel()
	cctx = rebell.WithBackground(r.carry(c, cctx))
	if !now.Before(c.AccessTokenExpiry) {
		r.refreshFirst(cctx, q, c, lease)
		return
	}
	err := r.cfg.Canceller.CancelToken(cctx, c.AccessToken)
	if refusedAfter(err) > 0 {
		r.result(ResultRefused)
	} else {
		r.result(rebell.MetricResult(err))
	}
	switch kind := rebell.ErrorKind(err); {
	case err == nil:
		r.remove(q, c)
		r.log.Info("rebell authorization cancelled",
			zap.String("end", c.Reason), zap.Int("attempts", c.Attempts+1),
			zap.Float64("after_seconds", now.Sub(c.Queued).Round(time.Millisecond).Seconds()))
	case kind == rebell.KindNothingToCancel:
		if rebell.ResultCodeOf(err) == rebell.CodeExpiredAccessToken && !c.RefreshToken.IsZero() &&
			now.Before(c.RefreshTokenExpiry) {
			// Expired by Rebell's clock: refresh first, then cancel.
			c.AccessTokenExpiry = now
			r.putBack(q, c, lease, now)
			return
		}
		r.remove(q, c)
		r.log.Info("rebell authorization cancelled: nothing was left to cancel",
			zap.String("end", c.Reason), zap.String("result_code", rebell.ResultCodeOf(err)),
			zap.Int("attempts", c.Attempts+1))
	case kind == rebell.KindConfiguration:
		r.remove(q, c)
		r.giveUp(c, "Rebell refused it for good", err)
	default: // retryable, refused, bad signature or response, cut short
		r.retry(q, c, lease, now, err)
	}
}

// refreshFirst spends the refresh token of c, whose access token expired,
// for a token that can be cancelled, and puts c back with it, due at once:
// the new tokens are kept before anything else is tried.
func (r *Revoker) refreshFirst(ctx context.Context, q session.PendingCancels, c *session.Cancel, lease string) {
	now := r.now()
	tok, err := r.cfg.Refresher.Refresh(ctx, c.RefreshToken)
	switch {
	case err == nil:
		c.AccessToken, c.AccessTokenExpiry = tok.AccessToken, tok.AccessTokenExpiry
		if !tok.RefreshToken.IsZero() {
			c.RefreshToken, c.RefreshTokenExpiry = tok.RefreshToken, tok.RefreshTokenExpiry
		}
		r.putBack(q, c, lease, now)
	case rebell.ErrorKind(err) == rebell.KindRefreshTokenDead:
		r.remove(q, c)
		r.log.Info("rebell authorization cancelled: nothing was left to cancel",
			zap.String("end", c.Reason), zap.String("result_code", rebell.ResultCodeOf(err)),
			zap.Int("attempts", c.Attempts+1))
	case rebell.ErrorKind(err) == rebell.KindConfiguration:
		r.remove(q, c)
		r.giveUp(c, "Rebell refused the refresh it needs for good", err)
	default:
		if refusedAfter(err) > 0 {
			r.result(ResultRefused)
		}
		r.retry(q, c, lease, now, err)
	}
}

// retry puts c back, due after the backoff of its attempts (or the guard's
// Retry-After, if longer).
func (r *Revoker) retry(q session.PendingCancels, c *session.Cancel, lease string, now time.Time, err error) {
	wait := r.backoff(c.Attempts)
	if after := refusedAfter(err); after > wait {
		wait = min(after, r.cfg.BackoffMax)
	}
	c.Attempts++
	r.log.Debug("rebell cancel to be tried again", zap.String("end", c.Reason),
		zap.Int("attempts", c.Attempts), zap.Float64("in_seconds", wait.Seconds()), zap.Error(err))
	r.putBack(q, c, lease, now.Add(wait))
}

// backoff is the wait after attempts failed tries: BackoffBase doubled per
// try, capped at BackoffMax, between half of it and all of it.
func (r *Revoker) backoff(attempts int) time.Duration {
	d := r.cfg.BackoffMax
	if attempts < 30 {
		if b := r.cfg.BackoffBase << attempts; b > 0 && b < d {
			d = b
		}
	}
	return d/2 + rand.N(d/2+1)
}

// refusedAfter returns when a call the guard refused (nothing was sent)
// may be tried again, and 0 for any other error. A refusal is recognised by
// its RetryAfter method, as the cache does: this package does not import
// guard.
func refusedAfter(err error) time.Duration {
	var r interface{ RetryAfter() time.Duration }
	if errors.As(err, &r) {
		return max(r.RetryAfter(), time.Nanosecond)
	}
	return 0
}

func (r *Revoker) putBack(q session.PendingCancels, c *session.Cancel, lease string, due time.Time) {
	c.Due = due
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if _, err := q.PutBackCancel(ctx, c, lease); err != nil {
		// The lease expires by itself and the cancel is tried again, by
		// this instance or another, with what the store holds.
		r.log.Debug("rebell pending cancel not put back", zap.Error(err))
	}
}

func (r *Revoker) remove(q session.PendingCancels, c *session.Cancel) {
	r.forget(c)
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := q.RemoveCancel(ctx, c.ID); err != nil {
		r.log.Debug("rebell pending cancel not removed", zap.Error(err))
	}
}

func (r *Revoker) giveUp(c *session.Cancel, why string, err error) {
	r.forget(c)
	r.result(ResultGivenUp)
	fields := []zap.Field{zap.String("end", c.Reason), zap.String("why", why), zap.Int("attempts", c.Attempts)}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	r.log.Warn("rebell cancel given up: the authorization may stay alive at Rebell until its tokens expire", fields...)
}

func (r *Revoker) result(res string) {
	if r.cfg.OnResult != nil {
		r.cfg.OnResult(res)
	}
}

// Watch returns st, whose pending cancels this Revoker works, for the cache:
// its announcements of a queued pending cancel, and the re-establishment
// of its subscription, make this Revoker look for due cancels, and the
// cache hears every other announcement as before.
func (r *Revoker) Watch(st session.Store) session.Store { return watched{Store: st, r: r} }

type watched struct {
	session.Store
	r *Revoker
}

func (w watched) Listen(fn func(session.Event)) {
	w.Store.Listen(func(ev session.Event) {
		switch ev.Kind {
		case session.EventCancelQueued:
			w.r.kick()
			return
		case session.EventResync:
			w.r.kick()
		}
		fn(ev)
	})
}
