package cache

import (
	"context"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// layer is what lies behind the memory tier (docs/design.md). The core
// (cache.go, login.go, refresh.go) calls it at each point where a shared
// store changes what happens, and nowhere else:
//
//   - memoryOnly, without a store: memory is all there is, so a session
//     memory does not hold does not exist, and ending the copy ends the
//     session;
//   - *replica, with a store (replica*.go): memory holds copies of the
//     store's records, read on a miss, compared in the background, and
//     written through on login, refresh and end.
//
// Its methods are called without locks held.
type layer interface {
	// miss finds session k, which memory does not hold, and holds it; it
	// fails with ErrSessionInvalid when the session does not exist.
	miss(k Key) (*entry, error)
	// use is told of each request served from e's copy, at ns (Unix ns),
	// before the copy is judged. It must not block: it is on the path of
	// every cached request.
	use(e *entry, ns int64)
	// idle decides on e, which no request used on this instance for the
	// idle timeout, and ends it if it is idle. It reports whether the
	// request may go on, and the error to answer with if not.
	idle(ctx context.Context, e *entry, ns int64) (bool, error)
	// create records a new session before memory holds it, setting st's
	// version; the session id is handed out only once it succeeded.
	create(ctx context.Context, k Key, st *tokenState, now time.Time) error
	// login exchanges authCode for a new session, once across every
	// instance that shares the layer while the login memo remembers the
	// code.
	login(ctx context.Context, authCode rebell.Secret) (string, *entry, error)
	// refresh obtains the state that follows old for e. It reports whether
	// it asked Rebell, and Rebell's error if it did.
	refresh(ctx context.Context, e *entry, old *tokenState) (st *tokenState, called bool, err error)
	// logout ends session k beyond this instance's memory, which has
	// dropped its copy if it held one (held), acting for customer (""
	// when unknown).
	logout(ctx context.Context, k Key, held bool, customer string) error
	// endCustomer ends the sessions of customerID beyond this instance's
	// memory; ended holds those whose copies memory just dropped, and n
	// counts the sessions ended, to which it adds.
	endCustomer(ctx context.Context, customerID string, ended map[Key]bool, n *int) error
	// confirmedEnd is told that session k ended for good: its end is
	// stored, or came from the store.
	confirmedEnd(k Key)
	// evicted is told that the memory tier removed e to make room.
	evicted(e *entry)
	// close releases what the layer holds. The cache's own work has
	// stopped.
	close()
}

// memoryOnly is the layer of a cache without a shared store.
type memoryOnly struct{ c *Cache }

func (memoryOnly) miss(Key) (*entry, error) { return nil, ErrSessionInvalid }

func (memoryOnly) use(*entry, int64) {}

func (m memoryOnly) idle(_ context.Context, e *entry, _ int64) (bool, error) {
	m.c.end(e, "idle", zapcore.DebugLevel)
	return false, ErrSessionInvalid
}

func (memoryOnly) create(context.Context, Key, *tokenState, time.Time) error { return nil }

func (m memoryOnly) login(ctx context.Context, authCode rebell.Secret) (string, *entry, error) {
	return m.c.exchange(ctx, authCode)
}

func (m memoryOnly) refresh(ctx context.Context, _ *entry, old *tokenState) (*tokenState, bool, error) {
	tok, err := m.c.exch.Refresh(ctx, old.refreshToken)
	if err != nil {
		return nil, true, err
	}
	st, err := refreshedState(old, tok, m.c.now())
	return st, true, err
}

func (memoryOnly) logout(context.Context, Key, bool, string) error { return nil }

func (memoryOnly) endCustomer(context.Context, string, map[Key]bool, *int) error { return nil }

func (memoryOnly) confirmedEnd(Key) {}

// evicted ends the session: memory was its only home.
func (m memoryOnly) evicted(e *entry) {
	c := m.c
	if !e.ended.CompareAndSwap(false, true) {
		return
	}
	c.logEnd(e, "evicted", zapcore.InfoLevel)
	if !c.closing() {
		c.revoke(context.Background(), e.state.Load(), RevokeEvicted)
	}
	if n, ok := c.roomWarn.allow(c.now()); ok {
		c.log.Warn("rebell memory tier full (max_sessions): sessions used least recently ended to make room",
			zap.Int("sessions", n))
	}
}

func (memoryOnly) close() {}
