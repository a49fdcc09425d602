package cache

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The checks of a copy held in memory against the shared store: the
// periodic comparison (run in the background, so a request never waits on
// the store for a copy it can serve), the idle check across instances, and
// ending a session in the store (docs/sessions.md).

// needsRecheck reports whether e, held in memory, must be compared with the
// store before use: it was last compared more than recheckEvery ago, or
// before the store's subscription was last re-established.
func (r *replica) needsRecheck(e *entry, ns int64) bool {
	checked := e.checked.Load()
	return ns-checked >= r.recheckEvery || checked < r.resyncAt.Load()
}

// recheckInBackground starts comparing e with its record, unless a
// comparison of e runs already: the request that noticed goes on with the
// copy at once, whatever the store is doing (docs/sessions.md).
func (r *replica) recheckInBackground(e *entry, ns int64) {
	if !e.checking.CompareAndSwap(false, true) {
		return
	}
	if !r.h.spawn(func(ctx context.Context) {
		defer e.checking.Store(false)
		_ = r.recheck(ctx, e, ns)
	}) {
		e.checking.Store(false)
	}
}

// recheck compares e with its record, reporting this instance's last use,
// and adopts, writes back or ends as the record says. It returns an error
// only when the session is over; when the store cannot be read the copy
// keeps being used while its token is valid (docs/sessions.md) and the store is
// asked again after the retry cooldown. The caller holds e.checking.
func (r *replica) recheck(ctx context.Context, e *entry, ns int64) error {
	ctx, cancel := r.storeCtx(ctx)
	defer cancel()
	var ttl time.Duration // raise the record's lifetime only with an idle timeout
	if r.idleTimeout > 0 {
		ttl = r.recordTTL(e.state.Load(), time.Unix(0, ns))
	}
	rec, err := r.readRecord(ctx, e, time.Unix(0, e.lastUsed.Load()), ttl)
	if err == nil {
		_, err = r.reconcile(ctx, e, e.state.Load(), rec, restoreIfLost, true)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrSessionInvalid):
		return err
	}
	// The store failed, reading or writing back: go on with the copy while
	// its token is valid, and ask again after the retry cooldown.
	e.checked.Store(ns - r.recheckEvery + int64(r.retryCooldown))
	return nil
}

// idle decides whether e, unused on this instance for the idle
// timeout, is idle everywhere: the store keeps the latest use any instance
// reported. It reports whether the session may go on.
func (r *replica) idle(ctx context.Context, e *entry, ns int64) (bool, error) {
	ctx, cancel := r.storeCtx(context.WithoutCancel(ctx))
	defer cancel()
	rec, err := r.readRecord(ctx, e, time.Time{}, 0)
	switch {
	case err != nil:
		return false, err
	case rec == nil:
		r.h.endSession(e, "ended_elsewhere", zapcore.DebugLevel)
		return false, ErrSessionInvalid
	}
	if used := rec.LastUsed.UnixNano(); ns-used < r.idleTimeout {
		if used > e.lastUsed.Load() {
			e.lastUsed.Store(used)
		}
		return true, nil
	}
	r.h.endSession(e, "idle", zapcore.DebugLevel)
	r.endShared(ctx, e.key, e.state.Load().grant.CustomerID)
	return false, ErrSessionInvalid
}

// endShared ends session k in the store, logging a failure.
func (r *replica) endShared(ctx context.Context, k Key, customerID string) {
	if _, err := r.store.End(ctx, k, customerID); err != nil {
		r.log.Warn("rebell session end could not be stored", zap.String("session", k.Tag()), zap.Error(err))
	}
}
