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
	c     *Cache
	store Store
	// log, now and idleTimeout are the cache's.
	log         *zap.Logger
	now         func() time.Time
	idleTimeout int64

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

// newReplica returns the replica layer of c over store. Call listen once c
// uses it.
func newReplica(c *Cache, store Store, idleTimeout time.Duration) *replica {
	r := &replica{
		c:            c,
		store:        store,
		log:          c.log,
		now:          c.now,
		idleTimeout:  int64(idleTimeout),
		leaseTTL:     defaultLeaseTTL,
		leaseTicker:  realTicker,
		recheckEvery: int64(recheckInterval),
	}
	if idleTimeout > 0 {
		r.recheckEvery = int64(min(recheckInterval, max(idleTimeout/4, minRecheckInterval)))
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

// evicted drops only the copy: the session lives on in the store, and the
// next request for it reads it back.
func (r *replica) evicted(e *entry) {
	r.log.Debug("rebell session dropped from memory for room; kept in the store", zap.String("session", e.key.Tag()))
	if n, ok := r.c.roomWarn.allow(r.now()); ok {
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
	if customer == "" {
		rec, err := r.store.Load(ctx, k, time.Time{}, 0)
		switch {
		case err != nil && !errors.Is(err, ErrRecordCorrupt):
			return storeError(err)
		case err == nil && rec == nil:
			r.rememberUnknown(k)
			return nil
		case err == nil:
			customer = rec.CustomerID
		}
	}
	if _, err := r.store.End(ctx, k, customer); err != nil {
		return storeError(err)
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
	if e := r.c.mem.get(&k); e != nil {
		r.c.end(e, reason, zapcore.DebugLevel)
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
		ok, err := r.store.End(ctx, k, customerID)
		if err != nil {
			return storeError(err)
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

// errEndedElsewhere reports a session whose record another instance ended.
var errEndedElsewhere = fmt.Errorf("%w: ended by another instance", ErrSessionInvalid)

// storeError wraps a failure of the shared store.
func storeError(err error) error {
	if errors.Is(err, ErrStoreUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
}

// recordOf is the store record of st.
func recordOf(st *tokenState, created, lastUsed time.Time) *Record {
	return &Record{
		Version:            st.version,
		CustomerID:         st.grant.CustomerID,
		AccessToken:        st.grant.AccessToken,
		AccessTokenExpiry:  st.grant.AccessTokenExpiry,
		RefreshToken:       st.refreshToken,
		RefreshTokenExpiry: st.grant.SessionExpiry,
		Created:            created,
		LastUsed:           lastUsed,
	}
}

// stateOf is the token state of a store record read at now, or an error if
// the record cannot make a session.
func stateOf(rec *Record, now time.Time) (*tokenState, error) {
	if rec.Version == 0 || rec.CustomerID == "" || rec.AccessToken.IsZero() || rec.RefreshToken.IsZero() {
		return nil, fmt.Errorf("%w: incomplete record", ErrRecordCorrupt)
	}
	return &tokenState{
		grant: Grant{
			CustomerID:        rec.CustomerID,
			AccessToken:       rec.AccessToken,
			AccessTokenExpiry: rec.AccessTokenExpiry,
			SessionExpiry:     rec.RefreshTokenExpiry,
		},
		refreshToken: rec.RefreshToken,
		version:      rec.Version,
		lifetime:     rec.AccessTokenExpiry.Sub(now),
	}, nil
}

// logCorrupt reports a record of k that cannot be opened; the session is
// treated as invalid.
func (r *replica) logCorrupt(k Key, err error) {
	r.log.Error("rebell session record unreadable: altered, or written with another encryption_key, endpoint or client_id",
		zap.String("session", k.Tag()), zap.Error(err))
}

// corrupt ends session k, whose record cannot be read as a session (a key
// of another type, a seal that does not open, fields that make no
// session): its copy e (nil if none) here, and its record in the store,
// which announces the end to every instance. It returns the
// ErrSessionInvalid to answer with. A corrupt record is never reported as
// the store being unavailable: the store answered.
func (r *replica) corrupt(ctx context.Context, k Key, e *entry, err error) error {
	customer := ""
	switch {
	case e == nil:
		r.logCorrupt(k, err)
	case e.ended.CompareAndSwap(false, true):
		r.logCorrupt(k, err)
		customer = e.state.Load().grant.CustomerID
		r.c.dropEnded(e, "record_corrupt", zapcore.InfoLevel)
	default:
		// Ended already: by another path that found the record unreadable
		// (and logged it), or otherwise. That path may still be deleting
		// the record; delete it here too (an end is idempotent), so that
		// when this call returns, no instance reading the session finds
		// the corrupt record and reports it again.
		customer = e.state.Load().grant.CustomerID
	}
	ctx, cancel := r.storeCtx(context.WithoutCancel(ctx))
	r.endShared(ctx, k, customer)
	cancel()
	return fmt.Errorf("%w: %w", ErrSessionInvalid, err)
}

// storeFailure is what a failed store call about e means: the session's end
// if its record is corrupt, else ErrStoreUnavailable.
func (r *replica) storeFailure(ctx context.Context, e *entry, err error) error {
	if errors.Is(err, ErrRecordCorrupt) {
		return r.corrupt(ctx, e.key, e, err)
	}
	return storeError(err)
}

// readRecord reads e's record, reporting this instance's last use (with
// ttl, raising the record's lifetime) when used is not zero. A record that
// is gone is (nil, nil): what that means is the caller's to decide. A
// corrupt record, or one that cannot make a session, ends the session
// everywhere and is an ErrSessionInvalid; any other failure an
// ErrStoreUnavailable.
func (r *replica) readRecord(ctx context.Context, e *entry, used time.Time, ttl time.Duration) (*Record, error) {
	rec, err := r.store.Load(ctx, e.key, used, ttl)
	if err == nil && rec != nil {
		_, err = stateOf(rec, r.now())
	}
	if err != nil {
		return nil, r.storeFailure(ctx, e, err)
	}
	return rec, nil
}

// recordTTL is the lifetime of a store record with st written at now: until
// R + grace, or, with an idle timeout, at most idleTTL (the record then lives
// on while instances report uses; docs/sessions.md).
func (r *replica) recordTTL(st *tokenState, now time.Time) time.Duration {
	ttl := r.c.pol.lifetime(st, now)
	if idle := r.idleTTL(); idle > 0 {
		ttl = min(ttl, idle)
	}
	return ttl
}

// idleTTL is how long a record lives after a use is reported, with an idle
// timeout (0 without): the timeout plus two recheck intervals, since an
// instance reports its uses only when it compares its copy. The idle
// decision itself is the cache's; this lifetime is Redis's backstop for
// sessions no instance asks about again.
func (r *replica) idleTTL() time.Duration {
	if r.idleTimeout <= 0 {
		return 0
	}
	return time.Duration(r.idleTimeout) + 2*time.Duration(r.recheckEvery)
}

// storeCtx bounds one store call made on the cache's behalf.
func (r *replica) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, storeOpTimeout)
}

// adopt makes st, read from the store, e's state if it is newer than what e
// holds, and wakes refreshes waiting for it. It returns e's state afterwards.
func (r *replica) adopt(e *entry, st *tokenState) *tokenState {
	e.mu.Lock()
	cur := e.state.Load()
	moved := false
	adopted := st.version > cur.version
	if adopted {
		moved = !st.grant.SessionExpiry.Equal(cur.grant.SessionExpiry)
		e.state.Store(st)
		e.failure.Store(nil)
		cur = st
	}
	if e.wake != nil {
		close(e.wake)
		e.wake = nil
	}
	e.mu.Unlock()
	if adopted {
		r.c.noteWindow(e, st)
	}
	if moved {
		// Another instance's refresh moved R: so does the copy's lifetime.
		r.c.extendLifetime(e, cur, r.now())
	}
	return cur
}

// onEvent applies an announcement of the store.
func (r *replica) onEvent(ev Event) {
	switch ev.Kind {
	case EventResync:
		// Announcements may have been lost: every copy is compared with the
		// store before its next use.
		now := r.now().UnixNano()
		r.resyncAt.Store(now)
		r.kickSyncer() // tokens refreshed while the store failed go first
		if ev.Lost {
			r.lostAt.Store(now)
			r.unknown.clear() // sessions may come back
			r.c.spawn(r.restoreAll)
		}
	case EventEnded:
		r.endedWhileLoading(ev.Key)
		r.rememberUnknown(ev.Key)
		if e := r.c.mem.get(&ev.Key); e != nil {
			r.c.end(e, "ended_elsewhere", zapcore.DebugLevel)
			if e.restored.Load() {
				// This instance wrote the session back after a data loss,
				// perhaps just after the end it had not heard of yet:
				// delete what it wrote.
				r.c.spawn(func(ctx context.Context) {
					ctx, cancel := r.storeCtx(ctx)
					defer cancel()
					r.endShared(ctx, e.key, e.state.Load().grant.CustomerID)
				})
			}
		}
	case EventUpdated:
		e := r.c.mem.get(&ev.Key)
		if e == nil || e.ended.Load() || (ev.Version != 0 && (e.state.Load().version >= ev.Version || e.storing.Load() >= ev.Version)) {
			return // not news: held already, or this instance's own write
		}
		r.c.spawn(func(ctx context.Context) {
			ctx, cancel := r.storeCtx(ctx)
			defer cancel()
			_, _ = r.reload(ctx, e)
		})
	}
}

// reload reads e's record and adopts it if newer. A record that is gone ends
// e (errEndedElsewhere); a corrupt one too.
func (r *replica) reload(ctx context.Context, e *entry) (*tokenState, error) {
	rec, err := r.readRecord(ctx, e, time.Time{}, 0)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		r.c.end(e, "ended_elsewhere", zapcore.DebugLevel)
		return nil, errEndedElsewhere
	}
	st, err := stateOf(rec, r.now())
	if err != nil {
		return nil, r.corrupt(ctx, e.key, e, err)
	}
	if st.version >= e.state.Load().version {
		// A record behind the copy (lost by the store) is not a check: the
		// next recheck writes the copy back.
		e.checked.Store(r.now().UnixNano())
	}
	return r.adopt(e, st), nil
}

// refresh refreshes e from old with the cluster-wide lease (docs/sessions.md):
// exactly one instance calls Rebell; the others wait for its new version. It
// reports whether this call asked Rebell, and Rebell's error if it did.
func (r *replica) refresh(ctx context.Context, e *entry, old *tokenState) (st *tokenState, called bool, err error) {
	// Tokens refreshed here while the store failed, and not yet written
	// back, make the lease Stale: the record is behind, and is written back
	// below before the lease is taken.
	for wroteBack := false; ; {
		lease, res, err := r.store.Acquire(ctx, e.key, old.version, r.leaseTTL)
		if err != nil {
			return nil, false, r.storeFailure(ctx, e, err)
		}
		switch res {
		case LeaseAcquired:
			return r.refreshWithLease(ctx, e, old, lease)
		case LeaseGone:
			if !r.lostRecord(e) {
				r.c.end(e, "ended_elsewhere", zapcore.DebugLevel)
				return nil, false, errEndedElsewhere
			}
			if err := r.restore(ctx, e); err != nil {
				return nil, false, err
			}
			old = e.state.Load()
		case LeaseStale:
			rec, err := r.readRecord(ctx, e, time.Time{}, 0)
			switch {
			case err != nil:
				return nil, false, err
			case rec == nil:
				return nil, false, errEndedElsewhere
			case rec.Version > old.version:
				st, err := stateOf(rec, r.now())
				if err != nil {
					return nil, false, fmt.Errorf("%w: %w", ErrSessionInvalid, err)
				}
				e.checked.Store(r.now().UnixNano())
				return r.adopt(e, st), false, nil
			case wroteBack:
				return nil, false, storeError(fmt.Errorf("record version %d is behind version %d held in memory", rec.Version, old.version))
			}
			// The store lost our latest state (a failover to a replica
			// that lagged): write it back, then take the lease.
			wroteBack = true
			if st, err := r.writeBack(ctx, e, old, rec.Version); err != nil || st != old {
				return st, false, err
			}
		case LeaseHeld:
			if st := r.waitNewer(ctx, e, old); st != nil {
				return st, false, nil
			}
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			// Look again: Stale once the holder swapped, Acquired if it gave
			// up or died and its lease expired.
		default:
			return nil, false, storeError(fmt.Errorf("unknown lease result %d", res))
		}
	}
}

// waitNewer waits until e holds a state newer than old (adopted from an
// announcement), heldPoll passes, or ctx ends. It returns the newer state or
// nil.
func (r *replica) waitNewer(ctx context.Context, e *entry, old *tokenState) *tokenState {
	e.mu.Lock()
	if e.wake == nil {
		e.wake = make(chan struct{})
	}
	wake := e.wake
	e.mu.Unlock()
	if st := e.state.Load(); st.version > old.version {
		return st
	}
	t := time.NewTimer(heldPoll)
	defer t.Stop()
	select {
	case <-wake:
	case <-t.C:
	case <-ctx.Done():
	}
	if st := e.state.Load(); st.version > old.version {
		return st
	}
	return nil
}

// refreshWithLease calls Rebell holding the lease, renewing it meanwhile,
// and writes the result with a compare-and-set on the version.
func (r *replica) refreshWithLease(ctx context.Context, e *entry, old *tokenState, lease string) (*tokenState, bool, error) {
	stop := r.keepLease(e.key, lease)
	tok, err := r.c.exch.Refresh(ctx, old.refreshToken)
	stop()
	now := r.now()
	var st *tokenState
	if err == nil {
		st, err = refreshedState(old, tok, now)
	}
	if err != nil {
		rctx, cancel := r.storeCtx(context.WithoutCancel(ctx))
		defer cancel()
		_ = r.store.Release(rctx, e.key, lease)
		if rebell.ErrorKind(err) == rebell.KindRefreshTokenDead {
			return r.deadRefreshToken(rctx, e, old, err)
		}
		return nil, true, err
	}
	st.version = old.version + 1
	rec := recordOf(st, time.Unix(0, e.created), time.Unix(0, e.lastUsed.Load()))
	e.storing.Store(st.version) // refreshes of e run one at a time
	ok, err := r.swap(ctx, e, lease, old.version, rec, r.recordTTL(st, now))
	switch {
	case err != nil && errors.Is(err, ErrRecordCorrupt):
		return nil, true, r.corrupt(ctx, e.key, e, err)
	case err != nil:
		// Rebell has spent the old refresh token; these tokens are the only
		// ones left. Keep them here and write them back when the store
		// answers again.
		r.log.Error("rebell refreshed tokens could not be stored; kept in this instance's memory until the store is back",
			zap.String("session", e.key.Tag()), zap.Error(err))
		r.syncLater(e, st, lease, old.version)
		return st, true, nil
	case ok:
		return st, true, nil
	}
	// The record moved on without us: written by an instance that took over
	// an expired lease (its state wins), ended, or lost by the store while
	// Rebell answered. Only an end leaves a mark, which refuses the Create.
	sctx, cancel := r.storeCtx(context.WithoutCancel(ctx))
	defer cancel()
	if cur, err := r.store.Load(sctx, e.key, time.Time{}, 0); err == nil && cur == nil {
		created, err := r.store.Create(sctx, e.key, rec, r.recordTTL(st, now))
		switch {
		case err != nil:
			r.syncLater(e, st, "", old.version)
			return st, true, nil
		case created:
			r.log.Info("rebell refreshed tokens written back to a store that lost the session", zap.String("session", e.key.Tag()))
			return st, true, nil
		}
	}
	cur, err := r.reload(sctx, e)
	if err != nil {
		return nil, true, err
	}
	r.log.Warn("rebell refreshed tokens discarded: another instance stored newer ones", zap.String("session", e.key.Tag()))
	return cur, true, nil
}

// swap writes rec with Store.Swap, retrying a failing store briefly.
func (r *replica) swap(ctx context.Context, e *entry, lease string, old uint64, rec *Record, ttl time.Duration) (bool, error) {
	var err error
	for i, backoff := 0, 50*time.Millisecond; i < 3; i, backoff = i+1, backoff*2 {
		sctx, cancel := r.storeCtx(context.WithoutCancel(ctx))
		var ok bool
		ok, err = r.store.Swap(sctx, e.key, lease, old, rec, ttl)
		cancel()
		if err == nil {
			return ok, nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, err
		}
	}
	return false, err
}

// deadRefreshToken handles Rebell's answer that old's refresh token is dead:
// another instance may have rotated it (docs/freshness.md), so the record is read
// again; only if nothing newer exists does the session end everywhere.
func (r *replica) deadRefreshToken(ctx context.Context, e *entry, old *tokenState, rerr error) (*tokenState, bool, error) {
	rec, err := r.readRecord(ctx, e, time.Time{}, 0)
	if err == nil && rec != nil && rec.Version > old.version {
		if st, err := stateOf(rec, r.now()); err == nil {
			r.log.Info("rebell refresh token already rotated by another instance; using its tokens",
				zap.String("session", e.key.Tag()))
			return r.adopt(e, st), true, nil
		}
	}
	if err == nil && rec != nil {
		if _, err := r.store.End(ctx, e.key, old.grant.CustomerID); err != nil {
			r.log.Warn("rebell session end could not be stored", zap.String("session", e.key.Tag()), zap.Error(err))
		}
	}
	return nil, true, rerr
}

// lostRecord reports whether e's record, found missing, may have been lost
// by the store (it came back empty since e was last compared with it)
// rather than ended.
func (r *replica) lostRecord(e *entry) bool { return e.checked.Load() < r.lostAt.Load() }

// restore writes e's state back as a new record, after the store lost its
// data. When another instance wrote the session back first, the newer of
// the two states wins; when the session was ended since (the store keeps
// end marks, so Create refuses it), e is ended.
func (r *replica) restore(ctx context.Context, e *entry) error {
	sctx, cancel := r.storeCtx(ctx)
	defer cancel()
	cur := e.state.Load()
	now := r.now()
	e.restored.Store(true)
	created, err := r.store.Create(sctx, e.key, recordOf(cur, time.Unix(0, e.created), time.Unix(0, e.lastUsed.Load())), r.recordTTL(cur, now))
	if err != nil {
		return storeError(err)
	}
	if created {
		r.log.Info("rebell session written back to a store that lost it", zap.String("session", e.key.Tag()))
		e.checked.Store(now.UnixNano())
		return nil
	}
	rec, err := r.readRecord(sctx, e, time.Time{}, 0)
	switch {
	case err != nil:
		return err
	case rec == nil:
		// Ended since the loss, by an instance this one did not hear.
		r.c.end(e, "ended_elsewhere", zapcore.DebugLevel)
		return errEndedElsewhere
	case rec.Version < cur.version:
		if _, err := r.writeBack(sctx, e, cur, rec.Version); err != nil {
			return err
		}
	case rec.Version > cur.version:
		if st, err := stateOf(rec, r.now()); err == nil {
			r.adopt(e, st)
		}
	}
	e.checked.Store(now.UnixNano())
	return nil
}

// restoreAll writes back, in the background, every session held in memory
// that has not been compared with the store since it lost its data, so that
// sessions this instance holds work on every instance again without waiting
// for a request here.
func (r *replica) restoreAll(ctx context.Context) {
	n := 0
	for _, e := range r.c.mem.idx.all() {
		if ctx.Err() != nil {
			return
		}
		if e.ended.Load() || !r.lostRecord(e) {
			continue
		}
		if err := r.restore(ctx, e); err != nil && errors.Is(err, ErrStoreUnavailable) {
			r.log.Warn("rebell sessions not written back: the store failed again", zap.Int("written_back", n), zap.Error(err))
			return
		}
		n++
	}
	if n > 0 {
		r.log.Info("rebell sessions held in memory written back to the store", zap.Int("sessions", n))
	}
}

// writeBack stores cur, a state the store does not have (refreshed while
// the store was down, or lost by a failover to a replica that lagged), over
// the record at version stored. It returns cur (now synced) or the store's
// newer state, or an error.
func (r *replica) writeBack(ctx context.Context, e *entry, cur *tokenState, stored uint64) (*tokenState, error) {
	sctx, cancel := r.storeCtx(ctx)
	defer cancel()
	rec := recordOf(cur, time.Unix(0, e.created), time.Unix(0, e.lastUsed.Load()))
	ok, err := r.store.Swap(sctx, e.key, "", stored, rec, r.recordTTL(cur, r.now()))
	if err != nil {
		return nil, r.storeFailure(sctx, e, err)
	}
	if !ok {
		return r.reload(sctx, e)
	}
	r.log.Info("rebell session tokens written back to the store", zap.String("session", e.key.Tag()),
		zap.Uint64("stored_version", stored), zap.Uint64("version", cur.version))
	return cur, nil
}

// realTicker is the default replica.leaseTicker.
func realTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// keepLease renews the lease of k every third of its lifetime until the
// returned stop is called; stop waits for the renewer to finish.
func (r *replica) keepLease(k Key, lease string) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	started := r.c.spawn(func(ctx context.Context) {
		defer close(done)
		tick, stopTick := r.leaseTicker(r.leaseTTL / 3)
		defer stopTick()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-tick:
			}
			rctx, cancel := r.storeCtx(ctx)
			ok, err := r.store.Renew(rctx, k, lease, r.leaseTTL)
			cancel()
			if err == nil && !ok {
				r.log.Warn("rebell refresh lease lost while applyToken was in flight", zap.String("session", k.Tag()))
				return
			}
		}
	})
	if !started {
		close(done)
	}
	return func() {
		close(quit)
		<-done
	}
}

// login deduplicates the exchange of authCode across instances through
// the store's login memo: the instance that claims the code exchanges it;
// the others wait for its session and return the same one.
func (r *replica) login(ctx context.Context, authCode rebell.Secret) (string, *entry, error) {
	wait := 20 * time.Millisecond
	for {
		sctx, cancel := r.storeCtx(ctx)
		claimed, sid, err := r.store.ClaimLogin(sctx, authCode, r.c.refreshTimeout)
		cancel()
		if err != nil {
			// Before Rebell is asked: the auth code is not spent.
			r.c.reportLogin(resultStoreError)
			r.log.Error("rebell login could not be claimed in the session store", zap.Error(err))
			return "", nil, storeError(err)
		}
		if claimed {
			id, e, err := r.c.exchange(ctx, authCode)
			if err != nil {
				id = "" // forget the claim: the code may be tried again
			}
			fctx, cancel := r.storeCtx(context.WithoutCancel(ctx))
			if ferr := r.store.FinishLogin(fctx, authCode, id, r.c.dedupWindow); ferr != nil {
				r.log.Warn("rebell login memo could not be stored", zap.Error(ferr))
			}
			cancel()
			return id, e, err
		}
		if sid != "" {
			k, ok := r.c.ids.Parse(sid)
			if !ok {
				return "", nil, storeError(fmt.Errorf("%w: login memo", ErrRecordCorrupt))
			}
			e := r.c.mem.get(&k)
			if e == nil {
				e, err = r.loadMiss(k)
			}
			switch {
			case err == nil && !e.ended.Load():
				r.c.reportLogin(resultDeduplicated)
				return sid, e, nil
			case err == nil || errors.Is(err, ErrSessionInvalid):
				// The remembered session has ended: exchange the code
				// afresh, past the memo (which only a claim's holder
				// may forget; it lapses with the dedup window).
				return r.c.exchange(ctx, authCode)
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
