package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Login exchanges authCode with Rebell and creates a session. It returns the
// new session id (hand it to the Mini App; the cache keeps only its SHA-256)
// and the session's first Grant.
//
// With LoginDedupWindow > 0, the same code arriving while its exchange is in
// flight, or within the window after it succeeded, gets the same session id
// (and that session's current Grant) from one applyToken call (docs/contract.md). The
// exchange then runs under the cache's context and RefreshTimeout, so the
// first caller giving up does not spoil its retry. Failures are not
// remembered. A remembered session that has ended since is forgotten and the
// code exchanged afresh.
//
// A session id is returned only once the session is confirmed stored.
// Errors: ErrAuthCodeRejected, ErrRebellUnavailable (also when ctx ends
// first), ErrRebellRejected (wrapping the *rebell.Error), ErrStoreUnavailable.
func (c *Cache) Login(ctx context.Context, authCode rebell.Secret) (sessionID string, g *Grant, err error) {
	if c.dedupWindow <= 0 {
		id, e, err := c.exchangeCode(ctx, authCode)
		if err != nil {
			return "", nil, err
		}
		return id, &e.state.Load().grant, nil
	}

	h := sha256.Sum256([]byte(authCode.Reveal()))
	call, joined := c.logins.join(h, c.now().UnixNano())
	if !joined {
		if !c.spawnFor(ctx, false, func(ctx context.Context) { c.runLogin(ctx, h, call, authCode) }) {
			c.logins.finish(h, call, "", nil, fmt.Errorf("%w: %w", ErrStoreUnavailable, errClosed), 0)
		}
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		return "", nil, fmt.Errorf("%w: %w", ErrRebellUnavailable, ctx.Err())
	}
	if joined && c.onLogin != nil {
		c.onLogin(resultDeduplicated)
	}
	if call.err != nil {
		return "", nil, call.err
	}
	// The session's current Grant: the same snapshot unless it was refreshed
	// since.
	return call.id, &call.e.state.Load().grant, nil
}

// runLogin is the deduplicated exchange of one auth code, owned by the cache.
func (c *Cache) runLogin(ctx context.Context, h [32]byte, call *loginCall, authCode rebell.Secret) {
	ctx, cancel := context.WithTimeout(ctx, c.refreshTimeout)
	var (
		id  string
		e   *entry
		err error
	)
	id, e, err = c.back.login(ctx, authCode)
	cancel()
	c.logins.finish(h, call, id, e, err, c.now().Add(c.dedupWindow).UnixNano())
}

// exchangeCode calls applyToken for authCode and stores the new session. Room
// in memory is secured first, so that Rebell never spends an auth code on a
// session that is not kept.
func (c *Cache) exchangeCode(ctx context.Context, authCode rebell.Secret) (string, *entry, error) {
	r, err := c.mem.reserve(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	defer r.release()
	tok, err := c.exch.ExchangeAuthCode(ctx, authCode)
	now := c.now()
	var st *tokenState
	if err == nil {
		st, err = loginState(tok, now)
	}
	if err != nil {
		// An exchange cancelled by Close is not Rebell's answer, and one the
		// exchanger's guard refused never reached Rebell (counted there).
		if !c.closing() && !refused(err) {
			c.reportLoginFailure(err)
		}
		return "", nil, loginError(err)
	}
	id, e, err := c.storeNew(ctx, st, now, r)
	if e != nil {
		defer e.pinned.Store(false)
	}
	if err != nil {
		c.reportLogin(resultStoreError)
		c.log.Error("rebell session could not be stored", zap.Error(err))
		return "", nil, fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	c.reportLogin(resultSuccess)
	c.noteWindow(e, st)
	session := zap.String("session", e.key.Tag())
	c.log.Info("rebell session created", session,
		zap.Time("access_token_expiry", st.grant.AccessTokenExpiry),
		zap.Time("session_expiry", st.grant.SessionExpiry))
	c.log.Debug("rebell session customer", session, zap.String("customer_id", st.grant.CustomerID))
	return id, e, nil
}

// storeNew stores a new session with st in the room r and confirms it is held:
// in the shared store first when there is one (the record of truth;
// docs/sessions.md), then in memory.
func (c *Cache) storeNew(ctx context.Context, st *tokenState, now time.Time, r *room) (string, *entry, error) {
	id, k := c.ids.New()
	if err := c.back.create(ctx, k, st, now); err != nil {
		return "", nil, err
	}
	e := newEntry(k, st, now)
	e.checked.Store(now.UnixNano())
	e.pinned.Store(true) // until exchange hands it out
	if err := c.mem.insert(ctx, e, c.pol.lifetime(st, now), r); err != nil {
		e.ended.Store(true)
		return "", nil, err
	}
	if e.ended.Load() {
		// EndCustomer found it in the index while it was being stored.
		c.mem.remove(e)
		return "", nil, errEndedWhileStored
	}
	return id, e, nil
}

// errEndedWhileStored reports a new session that EndCustomer ended before
// Login could hand it out.
var errEndedWhileStored = errors.New("session ended while being stored")

func (c *Cache) reportLogin(result string) {
	if c.onLogin != nil {
		c.onLogin(result)
	}
}

func (c *Cache) reportLoginFailure(err error) {
	result := resultOf(err)
	c.reportLogin(result)
	switch rebell.ErrorKind(err) {
	case rebell.KindAuthCodeRejected:
		c.log.Info("rebell login rejected: auth code not accepted", zap.String("result", result))
	case rebell.KindRetryable, 0:
		c.log.Warn("rebell login failed", zap.String("result", result), zap.Error(err))
	default:
		c.log.Error("rebell login rejected", zap.String("result", result),
			zap.String("result_code", rebell.ResultCodeOf(err)), zap.Error(err))
	}
}

// loginMemo deduplicates logins by the SHA-256 of their auth code; it never
// holds a code. An entry lives while its exchange is in flight and, if that
// succeeded, for LoginDedupWindow after; expired entries are swept lazily on
// the next Login, so memory is bounded by the logins of one window.
type loginMemo struct {
	mu sync.Mutex
	m  map[[32]byte]*loginCall
	// succeeded lists successful calls in the order they finished, which is
	// the order they expire in: the sweep pops from the front.
	succeeded []memoItem
}

type memoItem struct {
	h    [32]byte
	call *loginCall
}

// loginCall is one exchange of an auth code, shared by every Login of that
// code. Its result fields are set before done closes.
type loginCall struct {
	done chan struct{}
	id   string
	e    *entry
	err  error
	// expires (Unix ns) is set, under loginMemo.mu, when the exchange
	// succeeded; 0 while in flight.
	expires int64
}

// join returns the call for code hash h: an existing one (joined) or a new one
// the caller must run.
func (l *loginMemo) join(h [32]byte, now int64) (call *loginCall, joined bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	if call := l.m[h]; call != nil {
		if call.expires == 0 || (now < call.expires && !call.e.ended.Load()) {
			return call, true
		}
		delete(l.m, h) // expired, or its session ended: exchange afresh
	}
	call = &loginCall{done: make(chan struct{})}
	l.m[h] = call
	return call, false
}

// finish publishes call's result and wakes its waiters. A failure is
// forgotten at once; a success is remembered until expires.
func (l *loginMemo) finish(h [32]byte, call *loginCall, id string, e *entry, err error, expires int64) {
	l.mu.Lock()
	call.id, call.e, call.err = id, e, err
	if err != nil {
		if l.m[h] == call {
			delete(l.m, h)
		}
	} else {
		call.expires = expires
		l.succeeded = append(l.succeeded, memoItem{h: h, call: call})
	}
	l.mu.Unlock()
	close(call.done)
}

// sweep forgets successful calls whose window has passed. l.mu is held.
func (l *loginMemo) sweep(now int64) {
	n := 0
	for _, it := range l.succeeded {
		if now < it.call.expires {
			break
		}
		if l.m[it.h] == it.call {
			delete(l.m, it.h)
		}
		n++
	}
	if n > 0 {
		clear(l.succeeded[:n])
		l.succeeded = l.succeeded[n:]
	}
}
