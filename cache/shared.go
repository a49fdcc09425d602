package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Timings of the shared store (docs/sessions.md).
const (
	// recheckInterval is how long a copy held in memory is used without
	// comparing it with the store, when no announcement reached it; shorter
	// with a short idle timeout (see Cache.recheckEvery).
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
func (c *Cache) logCorrupt(k Key, err error) {
	c.log.Error("rebell session record unreadable: altered, or written with another encryption_key, endpoint or client_id",
		zap.String("session", k.Tag()), zap.Error(err))
}

// corrupt ends session k, whose record cannot be read as a session (a key
// of another type, a seal that does not open, fields that make no
// session): its copy e (nil if none) here, and its record in the store,
// which announces the end to every instance. It returns the
// ErrSessionInvalid to answer with. A corrupt record is never reported as
// the store being unavailable: the store answered.
func (c *Cache) corrupt(ctx context.Context, k Key, e *entry, err error) error {
	customer := ""
	if e != nil {
		if !e.ended.CompareAndSwap(false, true) {
			// Ended already: by another path that found the record
			// unreadable (and logged it), or otherwise.
			return fmt.Errorf("%w: %w", ErrSessionInvalid, err)
		}
		c.logCorrupt(k, err)
		customer = e.state.Load().grant.CustomerID
		c.dropEnded(e, "record_corrupt", zapcore.InfoLevel)
	} else {
		c.logCorrupt(k, err)
	}
	ctx, cancel := c.storeCtx(context.WithoutCancel(ctx))
	c.endShared(ctx, k, customer)
	cancel()
	return fmt.Errorf("%w: %w", ErrSessionInvalid, err)
}

// storeFailure is what a failed store call about e means: the session's end
// if its record is corrupt, else ErrStoreUnavailable.
func (c *Cache) storeFailure(ctx context.Context, e *entry, err error) error {
	if errors.Is(err, ErrRecordCorrupt) {
		return c.corrupt(ctx, e.key, e, err)
	}
	return storeError(err)
}

// readRecord reads e's record, reporting this instance's last use (with
// ttl, raising the record's lifetime) when used is not zero. A record that
// is gone is (nil, nil): what that means is the caller's to decide. A
// corrupt record, or one that cannot make a session, ends the session
// everywhere and is an ErrSessionInvalid; any other failure an
// ErrStoreUnavailable.
func (c *Cache) readRecord(ctx context.Context, e *entry, used time.Time, ttl time.Duration) (*Record, error) {
	rec, err := c.shared.Load(ctx, e.key, used, ttl)
	if err == nil && rec != nil {
		_, err = stateOf(rec, c.now())
	}
	if err != nil {
		return nil, c.storeFailure(ctx, e, err)
	}
	return rec, nil
}

// recordTTL is the lifetime of a store record with st written at now: until
// R + grace, or, with an idle timeout, at most idleTTL (the record then lives
// on while instances report uses; docs/sessions.md).
func (c *Cache) recordTTL(st *tokenState, now time.Time) time.Duration {
	ttl := c.pol.lifetime(st, now)
	if idle := c.idleTTL(); idle > 0 {
		ttl = min(ttl, idle)
	}
	return ttl
}

// idleTTL is how long a record lives after a use is reported, with an idle
// timeout (0 without): the timeout plus two recheck intervals, since an
// instance reports its uses only when it compares its copy. The idle
// decision itself is the cache's; this lifetime is Redis's backstop for
// sessions no instance asks about again.
func (c *Cache) idleTTL() time.Duration {
	if c.idleTimeout <= 0 {
		return 0
	}
	return time.Duration(c.idleTimeout) + 2*time.Duration(c.recheckEvery)
}

// storeCtx bounds one store call made on the cache's behalf.
func (c *Cache) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, storeOpTimeout)
}

// adopt makes st, read from the store, e's state if it is newer than what e
// holds, and wakes refreshes waiting for it. It returns e's state afterwards.
func (c *Cache) adopt(e *entry, st *tokenState) *tokenState {
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
		c.noteWindow(e, st)
	}
	if moved {
		// Another instance's refresh moved R: so does the copy's lifetime.
		c.extendLifetime(e, cur, c.now())
	}
	return cur
}

// onEvent applies an announcement of the store.
func (c *Cache) onEvent(ev Event) {
	switch ev.Kind {
	case EventResync:
		// Announcements may have been lost: every copy is compared with the
		// store before its next use.
		now := c.now().UnixNano()
		c.resyncAt.Store(now)
		c.kickSyncer() // tokens refreshed while the store failed go first
		if ev.Lost {
			c.lostAt.Store(now)
			c.unknown.clear() // sessions may come back
			c.spawn(c.restoreAll)
		}
	case EventEnded:
		c.endedWhileLoading(ev.Key)
		c.rememberUnknown(ev.Key)
		if e := c.mem.get(&ev.Key); e != nil {
			c.end(e, "ended_elsewhere", zapcore.DebugLevel)
			if e.restored.Load() {
				// This instance wrote the session back after a data loss,
				// perhaps just after the end it had not heard of yet:
				// delete what it wrote.
				c.spawn(func(ctx context.Context) {
					ctx, cancel := c.storeCtx(ctx)
					defer cancel()
					c.endShared(ctx, e.key, e.state.Load().grant.CustomerID)
				})
			}
		}
	case EventUpdated:
		e := c.mem.get(&ev.Key)
		if e == nil || e.ended.Load() || (ev.Version != 0 && (e.state.Load().version >= ev.Version || e.storing.Load() >= ev.Version)) {
			return // not news: held already, or this instance's own write
		}
		c.spawn(func(ctx context.Context) {
			ctx, cancel := c.storeCtx(ctx)
			defer cancel()
			_, _ = c.reload(ctx, e)
		})
	}
}

// reload reads e's record and adopts it if newer. A record that is gone ends
// e (errEndedElsewhere); a corrupt one too.
func (c *Cache) reload(ctx context.Context, e *entry) (*tokenState, error) {
	rec, err := c.readRecord(ctx, e, time.Time{}, 0)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		c.end(e, "ended_elsewhere", zapcore.DebugLevel)
		return nil, errEndedElsewhere
	}
	st, err := stateOf(rec, c.now())
	if err != nil {
		return nil, c.corrupt(ctx, e.key, e, err)
	}
	if st.version >= e.state.Load().version {
		// A record behind the copy (lost by the store) is not a check: the
		// next recheck writes the copy back.
		e.checked.Store(c.now().UnixNano())
	}
	return c.adopt(e, st), nil
}

// sharedRefresh refreshes e from old with the cluster-wide lease (docs/sessions.md):
// exactly one instance calls Rebell; the others wait for its new version. It
// reports whether this call asked Rebell, and Rebell's error if it did.
func (c *Cache) sharedRefresh(ctx context.Context, e *entry, old *tokenState) (st *tokenState, called bool, err error) {
	// Tokens refreshed here while the store failed, and not yet written
	// back, make the lease Stale: the record is behind, and is written back
	// below before the lease is taken.
	for wroteBack := false; ; {
		lease, res, err := c.shared.Acquire(ctx, e.key, old.version, c.leaseTTL)
		if err != nil {
			return nil, false, c.storeFailure(ctx, e, err)
		}
		switch res {
		case LeaseAcquired:
			return c.refreshWithLease(ctx, e, old, lease)
		case LeaseGone:
			if !c.lostRecord(e) {
				c.end(e, "ended_elsewhere", zapcore.DebugLevel)
				return nil, false, errEndedElsewhere
			}
			if err := c.restore(ctx, e); err != nil {
				return nil, false, err
			}
			old = e.state.Load()
		case LeaseStale:
			rec, err := c.readRecord(ctx, e, time.Time{}, 0)
			switch {
			case err != nil:
				return nil, false, err
			case rec == nil:
				return nil, false, errEndedElsewhere
			case rec.Version > old.version:
				st, err := stateOf(rec, c.now())
				if err != nil {
					return nil, false, fmt.Errorf("%w: %w", ErrSessionInvalid, err)
				}
				e.checked.Store(c.now().UnixNano())
				return c.adopt(e, st), false, nil
			case wroteBack:
				return nil, false, storeError(fmt.Errorf("record version %d is behind version %d held in memory", rec.Version, old.version))
			}
			// The store lost our latest state (a failover to a replica
			// that lagged): write it back, then take the lease.
			wroteBack = true
			if st, err := c.writeBack(ctx, e, old, rec.Version); err != nil || st != old {
				return st, false, err
			}
		case LeaseHeld:
			if st := c.waitNewer(ctx, e, old); st != nil {
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
func (c *Cache) waitNewer(ctx context.Context, e *entry, old *tokenState) *tokenState {
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
func (c *Cache) refreshWithLease(ctx context.Context, e *entry, old *tokenState, lease string) (*tokenState, bool, error) {
	stop := c.keepLease(e.key, lease)
	tok, err := c.exch.Refresh(ctx, old.refreshToken)
	stop()
	now := c.now()
	var st *tokenState
	if err == nil {
		st, err = refreshedState(old, tok, now)
	}
	if err != nil {
		rctx, cancel := c.storeCtx(context.WithoutCancel(ctx))
		defer cancel()
		_ = c.shared.Release(rctx, e.key, lease)
		if rebell.ErrorKind(err) == rebell.KindRefreshTokenDead {
			return c.deadRefreshToken(rctx, e, old, err)
		}
		return nil, true, err
	}
	st.version = old.version + 1
	rec := recordOf(st, time.Unix(0, e.created), time.Unix(0, e.lastUsed.Load()))
	e.storing.Store(st.version) // refreshes of e run one at a time
	ok, err := c.swap(ctx, e, lease, old.version, rec, c.recordTTL(st, now))
	switch {
	case err != nil && errors.Is(err, ErrRecordCorrupt):
		return nil, true, c.corrupt(ctx, e.key, e, err)
	case err != nil:
		// Rebell has spent the old refresh token; these tokens are the only
		// ones left. Keep them here and write them back when the store
		// answers again.
		c.log.Error("rebell refreshed tokens could not be stored; kept in this instance's memory until the store is back",
			zap.String("session", e.key.Tag()), zap.Error(err))
		c.syncLater(e, st, lease, old.version)
		return st, true, nil
	case ok:
		return st, true, nil
	}
	// The record moved on without us: written by an instance that took over
	// an expired lease (its state wins), ended, or lost by the store while
	// Rebell answered. Only an end leaves a mark, which refuses the Create.
	sctx, cancel := c.storeCtx(context.WithoutCancel(ctx))
	defer cancel()
	if cur, err := c.shared.Load(sctx, e.key, time.Time{}, 0); err == nil && cur == nil {
		created, err := c.shared.Create(sctx, e.key, rec, c.recordTTL(st, now))
		switch {
		case err != nil:
			c.syncLater(e, st, "", old.version)
			return st, true, nil
		case created:
			c.log.Info("rebell refreshed tokens written back to a store that lost the session", zap.String("session", e.key.Tag()))
			return st, true, nil
		}
	}
	cur, err := c.reload(sctx, e)
	if err != nil {
		return nil, true, err
	}
	c.log.Warn("rebell refreshed tokens discarded: another instance stored newer ones", zap.String("session", e.key.Tag()))
	return cur, true, nil
}

// swap writes rec with Store.Swap, retrying a failing store briefly.
func (c *Cache) swap(ctx context.Context, e *entry, lease string, old uint64, rec *Record, ttl time.Duration) (bool, error) {
	var err error
	for i, backoff := 0, 50*time.Millisecond; i < 3; i, backoff = i+1, backoff*2 {
		sctx, cancel := c.storeCtx(context.WithoutCancel(ctx))
		var ok bool
		ok, err = c.shared.Swap(sctx, e.key, lease, old, rec, ttl)
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
func (c *Cache) deadRefreshToken(ctx context.Context, e *entry, old *tokenState, rerr error) (*tokenState, bool, error) {
	rec, err := c.readRecord(ctx, e, time.Time{}, 0)
	if err == nil && rec != nil && rec.Version > old.version {
		if st, err := stateOf(rec, c.now()); err == nil {
			c.log.Info("rebell refresh token already rotated by another instance; using its tokens",
				zap.String("session", e.key.Tag()))
			return c.adopt(e, st), true, nil
		}
	}
	if err == nil && rec != nil {
		if _, err := c.shared.End(ctx, e.key, old.grant.CustomerID); err != nil {
			c.log.Warn("rebell session end could not be stored", zap.String("session", e.key.Tag()), zap.Error(err))
		}
	}
	return nil, true, rerr
}

// lostRecord reports whether e's record, found missing, may have been lost
// by the store (it came back empty since e was last compared with it)
// rather than ended.
func (c *Cache) lostRecord(e *entry) bool { return e.checked.Load() < c.lostAt.Load() }

// restore writes e's state back as a new record, after the store lost its
// data. When another instance wrote the session back first, the newer of
// the two states wins; when the session was ended since (the store keeps
// end marks, so Create refuses it), e is ended.
func (c *Cache) restore(ctx context.Context, e *entry) error {
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	cur := e.state.Load()
	now := c.now()
	e.restored.Store(true)
	created, err := c.shared.Create(sctx, e.key, recordOf(cur, time.Unix(0, e.created), time.Unix(0, e.lastUsed.Load())), c.recordTTL(cur, now))
	if err != nil {
		return storeError(err)
	}
	if created {
		c.log.Info("rebell session written back to a store that lost it", zap.String("session", e.key.Tag()))
		e.checked.Store(now.UnixNano())
		return nil
	}
	rec, err := c.readRecord(sctx, e, time.Time{}, 0)
	switch {
	case err != nil:
		return err
	case rec == nil:
		// Ended since the loss, by an instance this one did not hear.
		c.end(e, "ended_elsewhere", zapcore.DebugLevel)
		return errEndedElsewhere
	case rec.Version < cur.version:
		if _, err := c.writeBack(sctx, e, cur, rec.Version); err != nil {
			return err
		}
	case rec.Version > cur.version:
		if st, err := stateOf(rec, c.now()); err == nil {
			c.adopt(e, st)
		}
	}
	e.checked.Store(now.UnixNano())
	return nil
}

// restoreAll writes back, in the background, every session held in memory
// that has not been compared with the store since it lost its data, so that
// sessions this instance holds work on every instance again without waiting
// for a request here.
func (c *Cache) restoreAll(ctx context.Context) {
	n := 0
	for _, e := range c.mem.idx.all() {
		if ctx.Err() != nil {
			return
		}
		if e.ended.Load() || !c.lostRecord(e) {
			continue
		}
		if err := c.restore(ctx, e); err != nil && errors.Is(err, ErrStoreUnavailable) {
			c.log.Warn("rebell sessions not written back: the store failed again", zap.Int("written_back", n), zap.Error(err))
			return
		}
		n++
	}
	if n > 0 {
		c.log.Info("rebell sessions held in memory written back to the store", zap.Int("sessions", n))
	}
}

// writeBack stores cur, a state the store does not have (refreshed while
// the store was down, or lost by a failover to a replica that lagged), over
// the record at version stored. It returns cur (now synced) or the store's
// newer state, or an error.
func (c *Cache) writeBack(ctx context.Context, e *entry, cur *tokenState, stored uint64) (*tokenState, error) {
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	rec := recordOf(cur, time.Unix(0, e.created), time.Unix(0, e.lastUsed.Load()))
	ok, err := c.shared.Swap(sctx, e.key, "", stored, rec, c.recordTTL(cur, c.now()))
	if err != nil {
		return nil, c.storeFailure(sctx, e, err)
	}
	if !ok {
		return c.reload(sctx, e)
	}
	c.log.Info("rebell session tokens written back to the store", zap.String("session", e.key.Tag()),
		zap.Uint64("stored_version", stored), zap.Uint64("version", cur.version))
	return cur, nil
}

// realTicker is the default Cache.leaseTicker.
func realTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// keepLease renews the lease of k every third of its lifetime until the
// returned stop is called; stop waits for the renewer to finish.
func (c *Cache) keepLease(k Key, lease string) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	started := c.spawn(func(ctx context.Context) {
		defer close(done)
		tick, stopTick := c.leaseTicker(c.leaseTTL / 3)
		defer stopTick()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-tick:
			}
			rctx, cancel := c.storeCtx(ctx)
			ok, err := c.shared.Renew(rctx, k, lease, c.leaseTTL)
			cancel()
			if err == nil && !ok {
				c.log.Warn("rebell refresh lease lost while applyToken was in flight", zap.String("session", k.Tag()))
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
