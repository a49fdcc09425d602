package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// Timings of the shared store (docs/sessions.md).
const (
	// recheckInterval is how long a copy held in memory is used without
	// comparing it with the store, when no announcement reached it; shorter
	// with a short idle timeout (see replica.recheckEvery).
	recheckInterval = 60 * time.Second
	// minRecheckInterval bounds how often a copy is compared.
	minRecheckInterval = 250 * time.Millisecond
	// defaultLeaseTTL is the lifetime of a refresh lease; its holder renews
	// it every third of that while applyToken runs, so a holder that dies
	// frees the session within this long.
	defaultLeaseTTL = 5 * time.Second
	// heldPoll is how often a refresh waiting on another instance's lease
	// looks again when no announcement woke it.
	heldPoll = 200 * time.Millisecond
	// storeOpTimeout bounds one store call made on behalf of the cache.
	storeOpTimeout = 5 * time.Second
)

// replica is the layer of a cache with a shared store (docs/sessions.md):
// the store holds the record of truth of every session, and the memory tier
// holds copies of the records this instance uses. It reads a record on a
// memory miss, compares a held copy with its record in the background,
// writes logins, refreshes (under the store's lease) and ends through to the
// store, and applies the store's announcements.
type replica struct {
	settings
	// h is the cache that holds the copies.
	h     host
	store session.Store
	// roomWarn limits the WARN of a full memory tier to one a minute.
	roomWarn rateLimited

	leaseTTL time.Duration
	// leaseTicker ticks the renewals of a lease held while applyToken runs
	// (every leaseTTL/3), and the syncer's passes; tests drive it by hand.
	leaseTicker func(every time.Duration) (<-chan time.Time, func())
	// recheckEvery (ns) is how long a copy is used without comparing it
	// with the store: recheckInterval, or a quarter of a shorter idle
	// timeout, since an instance reports its uses to the others only when
	// it compares (docs/sessions.md, with idle_timeout).
	recheckEvery int64
	loads        missLoads
	pending      pendingWrites
	// unknown remembers sessions the store has no record of.
	unknown unknownIDs
	// resyncAt (Unix ns) is when the store's subscription was last
	// re-established: copies compared with the store before then are
	// compared again before use.
	resyncAt atomic.Int64
	// lostAt (Unix ns) is when the store was last found to have lost its
	// data: a copy compared with the store before then whose record is
	// missing is written back instead of ended.
	lostAt atomic.Int64
}

var _ layer = (*replica)(nil)

// newReplica returns the replica layer over store of the cache h, whose
// settings are s. Call listen once h uses it.
func newReplica(s settings, h host, store session.Store) *replica {
	r := &replica{
		settings:     s,
		h:            h,
		store:        store,
		leaseTTL:     defaultLeaseTTL,
		leaseTicker:  realTicker,
		recheckEvery: int64(recheckInterval),
	}
	if idle := time.Duration(s.idleTimeout); idle > 0 {
		r.recheckEvery = int64(min(recheckInterval, max(idle/4, minRecheckInterval)))
	}
	r.loads.m = make(map[Key]*loadCall)
	r.pending.m = make(map[*entry]pendingWrite)
	r.pending.kick = make(chan struct{}, 1)
	return r
}

// listen subscribes to the store's announcements.
func (r *replica) listen() { r.store.Listen(r.onEvent) }

func (r *replica) close() {
	if err := r.store.Close(); err != nil {
		r.log.Warn("rebell session store close", zap.Error(err))
	}
}

// miss reads session k from the store, unless it is known not to exist.
func (r *replica) miss(k Key) (*entry, error) {
	if r.unknown.has(&k, r.now().UnixNano()) {
		return nil, ErrSessionInvalid
	}
	e, err := r.loadMiss(k)
	if errors.Is(err, ErrSessionInvalid) {
		r.rememberUnknown(k)
	}
	return e, err
}

// use starts comparing e with its record, in the background, when it is
// due.
func (r *replica) use(e *entry, ns int64) {
	if r.needsRecheck(e, ns) {
		r.recheckInBackground(e, ns)
	}
}

// create stores the first version of a new session's record.
func (r *replica) create(ctx context.Context, k Key, st *tokenState, now time.Time) error {
	st.version = 1
	sctx, cancel := r.storeCtx(ctx)
	defer cancel()
	created, err := r.store.Create(sctx, k, recordOf(st, now, now), r.recordTTL(st, now))
	switch {
	case err != nil:
		return err
	case !created: // a 256-bit collision: not in this universe
		return errors.New("session record exists")
	}
	return nil
}

// login deduplicates the exchange of authCode across instances through
// the store's login memo: the instance that claims the code exchanges it;
// the others wait for its session and return the same one.
func (r *replica) login(ctx context.Context, authCode rebell.Secret) (string, *entry, error) {
	wait := 20 * time.Millisecond
	for {
		sctx, cancel := r.storeCtx(ctx)
		claimed, sid, err := r.store.ClaimLogin(sctx, authCode, r.refreshTimeout)
		cancel()
		if err != nil {
			// Before Rebell is asked: the auth code is not spent.
			r.h.reportLogin(resultStoreError)
			r.log.Error("rebell login could not be claimed in the session store", zap.Error(err))
			return "", nil, storeError(err)
		}
		if claimed {
			id, e, err := r.h.exchangeCode(ctx, authCode)
			if err != nil {
				id = "" // forget the claim: the code may be tried again
			}
			fctx, cancel := r.storeCtx(context.WithoutCancel(ctx))
			if ferr := r.store.FinishLogin(fctx, authCode, id, r.dedupWindow); ferr != nil {
				r.log.Warn("rebell login memo could not be stored", zap.Error(ferr))
			}
			cancel()
			return id, e, err
		}
		if sid != "" {
			k, ok := r.ids.Parse(sid)
			if !ok {
				return "", nil, storeError(fmt.Errorf("%w: login memo", session.ErrRecordCorrupt))
			}
			e := r.h.held(k)
			if e == nil {
				e, err = r.loadMiss(k)
			}
			switch {
			case err == nil && !e.ended.Load():
				r.h.reportLogin(resultDeduplicated)
				return sid, e, nil
			case err == nil || errors.Is(err, ErrSessionInvalid):
				// The remembered session has ended: exchange the code
				// afresh, past the memo (which only a claim's holder
				// may forget; it lapses with the dedup window).
				return r.h.exchangeCode(ctx, authCode)
			default:
				return "", nil, err
			}
		}
		// Another instance is exchanging the code.
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", nil, fmt.Errorf("%w: %w", ErrRebellUnavailable, ctx.Err())
		}
		wait = min(2*wait, 250*time.Millisecond)
	}
}

// evicted drops only the copy: the session lives on in the store, and the
// next request for it reads it back.
func (r *replica) evicted(_ context.Context, e *entry) {
	r.log.Debug("rebell session dropped from memory for room; kept in the store", zap.String("session", e.key.Tag()))
	if n, ok := r.roomWarn.allow(r.now()); ok {
		r.log.Warn("rebell memory tier full (max_sessions): copies of sessions dropped from memory; they are read from the store when next used",
			zap.Int("sessions", n))
	}
}

// confirmedEnd remembers k as unknown.
func (r *replica) confirmedEnd(k Key) { r.rememberUnknown(k) }

// logout ends k in the store. It fails with ErrStoreUnavailable when the
// end cannot be stored; the session, still valid in the store, is then not
// remembered as unknown: it is read back on its next use here, and a
// retried Logout here reaches the store (docs/sessions.md, unknown ids).
func (r *replica) logout(ctx context.Context, k Key, held bool, customer string) error {
	if !held && r.unknown.has(&k, r.now().UnixNano()) {
		return nil // ended already, or never stored
	}
	ctx, cancel := r.storeCtx(ctx)
	defer cancel()
	var rec *session.Record
	if customer == "" || r.revoke != nil {
		// The record holds the session's current tokens, which its end
		// cancels at Rebell, whatever this instance's copy held.
		var err error
		rec, err = r.store.Load(ctx, k, time.Time{}, 0)
		switch {
		case err != nil && !errors.Is(err, session.ErrRecordCorrupt):
			return storeError(err)
		case err == nil && rec == nil && customer == "":
			r.rememberUnknown(k)
			return nil
		case err == nil && rec != nil && customer == "":
			customer = rec.CustomerID
		}
	}
	deleted, err := r.store.End(ctx, k, customer)
	if err != nil {
		return storeError(err)
	}
	if deleted {
		r.revokeRecord(ctx, rec, RevokeLogout)
	}
	r.endedHere(k, "logout")
	return nil
}

// endedHere follows an end of session k the store confirmed: k is
// remembered as unknown, and a copy read back into memory since this
// instance dropped its own (a request that missed while the end was being
// stored) is ended too, without waiting for the store's announcement, which
// a subscription not yet re-established after an outage would miss.
func (r *replica) endedHere(k Key, reason string) {
	r.endedWhileLoading(k)
	if e := r.h.held(k); e != nil {
		r.h.endSession(e, reason, zapcore.DebugLevel)
	}
	r.rememberUnknown(k)
}

// endCustomer ends in the store the customer's sessions indexed there and
// those in ended (the copies this instance just dropped: ended in the store
// whether or not its customer index still lists them), counting in n those
// not in ended already.
func (r *replica) endCustomer(ctx context.Context, customerID string, ended map[Key]bool, n *int) error {
	ctx, cancel := r.storeCtx(ctx)
	defer cancel()
	keys, err := r.store.CustomerSessions(ctx, customerID)
	if err != nil {
		return storeError(err)
	}
	for k := range ended {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		var rec *session.Record
		if r.revoke != nil {
			// Its current tokens, for the cancel at Rebell; a record that
			// cannot be read is ended without one.
			var err error
			if rec, err = r.store.Load(ctx, k, time.Time{}, 0); err != nil && !errors.Is(err, session.ErrRecordCorrupt) {
				return storeError(err)
			}
		}
		ok, err := r.store.End(ctx, k, customerID)
		if err != nil {
			return storeError(err)
		}
		if ok {
			r.revokeRecord(ctx, rec, RevokeCustomer)
		}
		r.endedHere(k, "customer")
		if ok && !ended[k] {
			ended[k] = true
			*n++
		}
	}
	return nil
}

// rememberUnknown remembers session k, which the store has no record of
// (any longer), as unknown for a while: its id replayed costs no store
// command. Not while the store may be getting back sessions it lost.
func (r *replica) rememberUnknown(k Key) {
	now := r.now().UnixNano()
	if lost := r.lostAt.Load(); lost != 0 && now-lost < int64(unknownFor) {
		return
	}
	r.unknown.add(&k, now)
}

// onEvent applies an announcement of the store.
func (r *replica) onEvent(ev session.Event) {
	switch ev.Kind {
	case session.EventResync:
		// Announcements may have been lost: every copy is compared with the
		// store before its next use.
		now := r.now().UnixNano()
		r.resyncAt.Store(now)
		r.kickSyncer() // tokens refreshed while the store failed go first
		if ev.Lost {
			r.lostAt.Store(now)
			r.unknown.clear() // sessions may come back
			r.h.spawn(r.restoreAll)
		}
	case session.EventEnded:
		r.endedWhileLoading(ev.Key)
		r.rememberUnknown(ev.Key)
		if e := r.h.held(ev.Key); e != nil {
			r.h.endSession(e, "ended_elsewhere", zapcore.DebugLevel)
			if e.restored.Load() {
				// This instance wrote the session back after a data loss,
				// perhaps just after the end it had not heard of yet:
				// delete what it wrote.
				r.h.spawn(func(ctx context.Context) {
					ctx, cancel := r.storeCtx(ctx)
					defer cancel()
					r.endShared(ctx, e.key, e.state.Load().grant.CustomerID)
				})
			}
		}
	case session.EventUpdated:
		e := r.h.held(ev.Key)
		if e == nil || e.ended.Load() || (ev.Version != 0 && (e.state.Load().version >= ev.Version || e.storing.Load() >= ev.Version)) {
			return // not news: held already, or this instance's own write
		}
		r.h.spawn(func(ctx context.Context) {
			ctx, cancel := r.storeCtx(ctx)
			defer cancel()
			_, _ = r.reload(ctx, e)
		})
	}
}
