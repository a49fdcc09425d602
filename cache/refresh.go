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

// refreshCall is a refresh in flight. Every request waiting on it gets its
// result: when done is closed, exactly one of st and err is set.
type refreshCall struct {
	done chan struct{}
	st   *tokenState
	err  error
	// background marks a refresh-ahead call: it yields to logins and
	// refreshes that requests wait on (docs/rebell-calls.md).
	background bool
}

// joinRefresh finds the refresh of e to wait on, starting one from st (the
// state the caller judged) if none runs. A background caller starts none
// within RetryCooldown of a failed refresh; a request that must refresh now
// always may: the exchanger's circuit breaker, not a per-session cooldown,
// keeps a failing Rebell from being called (docs/rebell-calls.md). Exactly
// one of its results tells the caller what to do:
//   - call != nil: wait on it;
//   - cur != st: a refresh finished since the caller read st; judge cur;
//   - otherwise none was started: the session ended, e was frozen (the
//     session has another entry), the cache is closing,
//     or (background) the last refresh failed within RetryCooldown.
//
// ctx is the request's: a refresh it starts keeps what Config.Carry keeps of
// it (its trace).
func (c *Cache) joinRefresh(ctx context.Context, e *entry, st *tokenState, now time.Time, background bool) (call *refreshCall, cur *tokenState) {
	// Lock-free first: requests in the refresh-ahead window pass here while a
	// refresh runs or a failure is recent.
	if call := e.flight.Load(); call != nil {
		return call, st
	}
	ns := now.UnixNano()
	if f := e.failure.Load(); background && f != nil && ns < f.until {
		return nil, st
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if call := e.flight.Load(); call != nil {
		return call, st
	}
	if cur := e.state.Load(); cur != st {
		return nil, cur
	}
	if f := e.failure.Load(); background && f != nil && ns < f.until {
		return nil, st
	}
	if e.ended.Load() || e.frozen.Load() {
		return nil, st
	}
	call = &refreshCall{done: make(chan struct{}), background: background}
	if !c.spawnFor(ctx, background, func(ctx context.Context) { c.runRefresh(ctx, e, st, call) }) {
		return nil, st
	}
	e.flight.Store(call)
	return call, st
}

// awaitRefresh answers a request that must not use st's access token without
// a refresh (now ≥ A − m): it joins or starts the refresh and waits for it, or
// for ctx.
func (c *Cache) awaitRefresh(ctx context.Context, e *entry, st *tokenState, now time.Time) (*Grant, error) {
	for {
		call, cur := c.joinRefresh(ctx, e, st, now, false)
		switch {
		case call != nil:
			select {
			case <-call.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", ErrRebellUnavailable, ctx.Err())
			}
			if call.err == nil {
				return &call.st.grant, nil
			}
			if call.background && refused(call.err) {
				continue // a refresh-ahead call yielded: this one must not
			}
			// A failed refresh leaves the state as it was.
			return fallback(call.err, e.state.Load(), c.now())
		case cur != st:
			st = cur
			switch c.pol.classify(st, now) {
			case fresh, refreshAhead:
				return &st.grant, nil
			case mustRefresh:
				continue // the new token is short-lived too: refresh it
			default:
				return nil, ErrReauthRequired
			}
		case e.ended.Load():
			return nil, ErrSessionInvalid
		case e.frozen.Load():
			// The memory tier froze the entry meanwhile: the session's
			// current one refreshes it (memory.go).
			if e = c.mem.get(&e.key); e == nil {
				return nil, ErrSessionInvalid
			}
			continue
		default:
			return fallback(fmt.Errorf("%w: %w", ErrStoreUnavailable, errClosed), st, now)
		}
	}
}

// fallback answers a request whose refresh failed with err, from the state st
// the refresh started from, at now (docs/freshness.md).
func fallback(err error, st *tokenState, now time.Time) (*Grant, error) {
	valid := now.Before(st.grant.AccessTokenExpiry)
	switch {
	case errors.Is(err, ErrSessionInvalid):
		return nil, err
	case errors.Is(err, ErrStoreUnavailable):
		if valid {
			return &st.grant, nil
		}
		return nil, err
	}
	switch rebell.ErrorKind(err) {
	case rebell.KindRefreshTokenDead:
		return nil, fmt.Errorf("%w: %w", ErrReauthRequired, err)
	case rebell.KindConfiguration, rebell.KindBadSignature, rebell.KindBadResponse, rebell.KindAuthCodeRejected:
		if valid {
			return &st.grant, nil
		}
		return nil, fmt.Errorf("%w: %w", ErrRebellRejected, err)
	default: // KindRetryable, a transport error, the RefreshTimeout
		if valid {
			return &st.grant, nil
		}
		return nil, fmt.Errorf("%w: %w", ErrRebellUnavailable, err)
	}
}

// runRefresh calls Rebell for e with old's refresh token, under the cache's
// context and RefreshTimeout, and applies the result: a new snapshot on
// success; on a dead refresh token the session ends; on other failures the
// session is kept and no background refresh starts for RetryCooldown.
func (c *Cache) runRefresh(ctx context.Context, e *entry, old *tokenState, call *refreshCall) {
	if call.background {
		ctx = rebell.WithBackground(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, c.refreshTimeout)
	var (
		st     *tokenState
		err    error
		called = true // whether this run asked Rebell
	)
	st, called, err = c.back.refresh(ctx, e, old)
	cancel()
	now := c.now()
	kind := rebell.ErrorKind(err)
	closing := c.closing()
	// A call the exchanger's guard refused never reached Rebell: it is
	// counted there, not as a refresh.
	called = called && !refused(err)

	// Publish the outcome under mu: the new state (or the failure) becomes
	// visible before flight clears, so no request can start a second refresh
	// with the refresh token this one just spent.
	ended := false
	e.mu.Lock()
	switch {
	case err == nil && e.ended.Load():
		st, err = nil, ErrSessionInvalid // ended meanwhile; its tokens go with it
	case err == nil:
		if cur := e.state.Load(); cur.version > st.version {
			st = cur // a newer state arrived from the store meanwhile
		} else {
			e.state.Store(st)
		}
		e.failure.Store(nil)
	case kind == rebell.KindRefreshTokenDead, errors.Is(err, ErrSessionInvalid):
		ended = e.ended.CompareAndSwap(false, true)
	case !closing:
		e.failure.Store(&refreshFailure{until: now.Add(c.retryCooldown).UnixNano()})
	}
	e.flight.Store(nil)
	e.mu.Unlock()

	if err == nil && st != nil {
		c.noteWindow(e, st)
	}
	switch {
	case ended && kind == rebell.KindRefreshTokenDead:
		// Only the copy: the layer remembers the end once it is stored
		// (a shared store may not have taken it).
		c.dropCopy(e, "refresh_token_dead", zapcore.InfoLevel)
	case ended:
		c.dropEnded(e, "ended_elsewhere", zapcore.DebugLevel)
	case st != nil && !st.grant.SessionExpiry.Equal(old.grant.SessionExpiry):
		c.extendLifetime(e, st, now)
	}
	if called && (!closing || err == nil) { // a call cancelled by Close is not Rebell's answer
		c.reportRefresh(e, st, err, kind)
	}
	call.st, call.err = st, err
	close(call.done)
}

// adopt makes st, read from the store, e's state if it is newer than what e
// holds, and wakes refreshes waiting for it. It returns e's state afterwards.
func (c *Cache) adopt(e *entry, st *tokenState) *tokenState {
	e.mu.Lock()
	if e.frozen.Load() {
		// A snapshot (memory.go): the session's current entry adopts st.
		e.mu.Unlock()
		if cur := c.mem.get(&e.key); cur != nil && cur != e {
			return c.adopt(cur, st)
		}
		return e.state.Load()
	}
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

// extendLifetime keeps e in memory until st's R + grace, after a refresh (here or,
// with a shared store, on another instance) moved R. If ristretto dropped the
// entry meanwhile, it is not brought back.
func (c *Cache) extendLifetime(e *entry, st *tokenState, now time.Time) {
	if c.mem.update(e, c.pol.lifetime(st, now)) && e.ended.Load() {
		c.mem.remove(e)
	}
}

// noteWindow logs, once per session, that the refresh-ahead window of st's
// access token is shorter than the configured refresh_ahead (it lives less
// than twice as long).
func (c *Cache) noteWindow(e *entry, st *tokenState) {
	w := c.pol.window(st)
	if w >= c.pol.refreshAhead || e.shortened.Load() || !e.shortened.CompareAndSwap(false, true) {
		return
	}
	c.log.Info("rebell refresh_ahead shortened to half the access token's lifetime",
		zap.String("session", e.key.Tag()),
		zap.Float64("refresh_ahead_seconds", c.pol.refreshAhead.Seconds()), zap.Float64("used_seconds", w.Seconds()),
		zap.Float64("access_token_lifetime_seconds", st.lifetime.Round(time.Second).Seconds()))
}

func (c *Cache) reportRefresh(e *entry, st *tokenState, err error, kind rebell.Kind) {
	if errors.Is(err, ErrSessionInvalid) {
		// Rebell answered SUCCESS; the session ended while it did.
		if c.onRefresh != nil {
			c.onRefresh(resultSuccess)
		}
		c.log.Debug("rebell token refresh discarded: session ended", zap.String("session", e.key.Tag()))
		return
	}
	result := resultSuccess
	if err != nil {
		result = resultOf(err)
	}
	if c.onRefresh != nil {
		c.onRefresh(result)
	}
	session := zap.String("session", e.key.Tag())
	switch {
	case err == nil:
		c.log.Debug("rebell token refreshed", session,
			zap.Time("access_token_expiry", st.grant.AccessTokenExpiry),
			zap.Time("session_expiry", st.grant.SessionExpiry))
	case kind == rebell.KindRefreshTokenDead:
		c.log.Info("rebell refresh token rejected; session ended", session, zap.String("result", result))
	case kind == rebell.KindRetryable || kind == 0:
		c.log.Warn("rebell token refresh failed", session, zap.String("result", result), zap.Error(err))
	default:
		c.log.Error("rebell token refresh rejected", session, zap.String("result", result),
			zap.String("result_code", rebell.ResultCodeOf(err)), zap.Error(err))
	}
}
