package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// A refresh under the store's lease: exactly one instance calls Rebell for
// a session at a time (docs/sessions.md).

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
		case session.LeaseAcquired:
			return r.refreshWithLease(ctx, e, old, lease)
		case session.LeaseGone:
			st, err := r.reconcile(ctx, e, old, nil, restoreIfLost, false)
			if err != nil {
				return nil, false, err
			}
			old = st
		case session.LeaseStale:
			rec, err := r.readRecord(ctx, e, time.Time{}, 0)
			if err != nil {
				return nil, false, err
			}
			if rec != nil && rec.Version < old.version {
				if wroteBack {
					return nil, false, storeError(fmt.Errorf("record version %d is behind version %d held in memory", rec.Version, old.version))
				}
				// The store lost our latest state (a failover to a
				// replica that lagged): write it back, then take the
				// lease.
				wroteBack = true
			}
			if st, err := r.reconcile(ctx, e, old, rec, endCopy, true); err != nil || st != old {
				return st, false, err
			}
		case session.LeaseHeld:
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
	tok, err := r.exch.Refresh(ctx, old.refreshToken)
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
	case err != nil && errors.Is(err, session.ErrRecordCorrupt):
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
	return r.swapFailed(ctx, e, old, st, lease)
}

// swapFailed settles a refresh whose compare-and-set found the record moved
// on without it: at another version, or gone. Rebell has spent old's
// refresh token on this call, so st holds the only live tokens, unless
// another instance stored a refresh of its own (an instance that took over
// the lease after ours expired): a record at st's version or later wins.
// Otherwise the record is behind (a failover to a replica that lagged) or
// gone (lost by the store, or ended: an end mark refuses the write, and the
// copy ends), and st is written over it (docs/sessions.md, one rule for a
// copy and its record). What the store cannot take now is written back
// later.
func (r *replica) swapFailed(ctx context.Context, e *entry, old, st *tokenState, lease string) (*tokenState, bool, error) {
	sctx, cancel := r.storeCtx(context.WithoutCancel(ctx))
	defer cancel()
	defer func() { _ = r.store.Release(sctx, e.key, lease) }()
	rec, err := r.readRecord(sctx, e, time.Time{}, 0)
	if err == nil && rec != nil && rec.Version >= st.version {
		cur, err := r.reconcile(sctx, e, old, rec, endCopy, false)
		if err != nil {
			return nil, true, err
		}
		r.log.Warn("rebell refreshed tokens discarded: another instance stored newer ones", zap.String("session", e.key.Tag()))
		return cur, true, nil
	}
	var cur *tokenState
	if err == nil {
		cur, err = r.reconcile(sctx, e, st, rec, restoreCopy, true)
	}
	switch {
	case err != nil && errors.Is(err, ErrSessionInvalid):
		return nil, true, err
	case err == nil && cur.version >= st.version:
		return cur, true, nil
	}
	// The store failed, or moved again while st was written back.
	r.syncLater(e, st, "", old.version)
	return st, true, nil
}

// swap writes rec with Store.Swap, retrying a failing store briefly.
func (r *replica) swap(ctx context.Context, e *entry, lease string, old uint64, rec *session.Record, ttl time.Duration) (bool, error) {
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
// another instance may have rotated it (docs/freshness.md), so the record is
// read again; only if nothing newer exists does the session end everywhere.
// The session is remembered as unknown only once the store confirmed its
// end; if the store could not be read or written, it is not.
func (r *replica) deadRefreshToken(ctx context.Context, e *entry, old *tokenState, rerr error) (*tokenState, bool, error) {
	rec, err := r.readRecord(ctx, e, time.Time{}, 0)
	if err != nil {
		return nil, true, rerr
	}
	st, err := r.reconcile(ctx, e, old, rec, keepCopy, false)
	switch {
	case err != nil:
		return nil, true, err
	case st != old:
		r.log.Info("rebell refresh token already rotated by another instance; using its tokens",
			zap.String("session", e.key.Tag()))
		return st, true, nil
	case rec != nil:
		if _, err := r.store.End(ctx, e.key, old.grant.CustomerID); err != nil {
			// Not stored: the session may live on in the store, so it is
			// not remembered as unknown (runRefresh drops only the copy).
			r.log.Warn("rebell session end could not be stored", zap.String("session", e.key.Tag()), zap.Error(err))
			return nil, true, rerr
		}
	}
	r.rememberUnknown(e.key) // the store holds no session k any more
	return nil, true, rerr
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
	started := r.h.spawn(func(ctx context.Context) {
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
