package cache

import (
	"context"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
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
	// evicted is told that the memory tier removed e to make room for the
	// call with ctx (a login).
	evicted(ctx context.Context, e *entry)
	// close releases what the layer holds. The cache's own work has
	// stopped.
	close()
}

// settings are the cache's settings as plain values, which the cache shares
// with its layer (Cache embeds them; New fills them from Config).
type settings struct {
	// exch calls Rebell's applyToken.
	exch rebell.TokenExchanger
	// pol judges a session's tokens (freshness.go).
	pol policy
	// idleTimeout (ns) ends a session no request used for this long; 0 is
	// none.
	idleTimeout int64
	// dedupWindow is how long the login memo remembers an auth code's
	// session; 0 turns deduplication off.
	dedupWindow time.Duration
	// refreshTimeout bounds one exchange run on the cache's behalf.
	refreshTimeout time.Duration
	// retryCooldown is how long after a failure a session's refresh-ahead
	// (and, with a store, its comparison) waits.
	retryCooldown time.Duration
	// now is the clock.
	now func() time.Time
	// log receives events; it is never nil.
	log *zap.Logger
	// ids verifies session ids (the store's login memo holds them).
	ids *session.IDs
	// ctx is the parent of the cache's own work; Close cancels it.
	ctx context.Context
	// revoke queues the cancel at Rebell of a session the gateway ended
	// (Config.Revoke); nil is none.
	revoke func(context.Context, session.Cancel, string)
}

// host is what a layer may do to the sessions the cache holds, and nothing
// else: *Cache implements it (cache.go, login.go, refresh.go), and the
// layer's tests implement it over a memory tier alone. Its methods are
// called without locks held.
type host interface {
	// held returns the copy of session k that memory holds, or nil.
	held(k Key) *entry
	// heldKeys returns the key of every session memory holds.
	heldKeys() []Key
	// hold puts e, the copy of a session just read from the store with
	// state st at now, in memory until st's R + grace, and returns the copy
	// memory then holds of the session: e, or one another path put there
	// first. It fails with ErrSessionInvalid when e was ended meanwhile,
	// and with ErrStoreUnavailable when memory has no room or is closed.
	hold(e *entry, st *tokenState, now time.Time) (*entry, error)
	// adopt makes st, read from the store, e's state if it is newer than
	// the one e holds (memory then keeps e until st's R + grace), wakes the
	// refreshes of e waiting for a newer state, and returns e's state
	// afterwards.
	adopt(e *entry, st *tokenState) *tokenState
	// endSession ends e's session on this instance for good: marks e ended,
	// drops it from memory, reports the end with reason, and tells the
	// layer (confirmedEnd). It reports whether this call ended it.
	endSession(e *entry, reason string, level zapcore.Level) bool
	// dropEnded is endSession for an e the caller has just marked ended.
	dropEnded(e *entry, reason string, level zapcore.Level)
	// reportEnd reports the end of e, which the caller marked ended and
	// memory no longer holds: it logs it and counts it (OnSessionEnded).
	reportEnd(e *entry, reason string, level zapcore.Level)
	// exchangeCode exchanges authCode with Rebell for a new session, which
	// it records through the layer (create) and holds in memory, and
	// reports the login's result. It returns the new session's id.
	exchangeCode(ctx context.Context, authCode rebell.Secret) (string, *entry, error)
	// reportLogin reports the result of a login that did not call
	// exchangeCode (OnLogin).
	reportLogin(result string)
	// spawn runs f in a goroutine under ctx, which Close cancels and waits
	// for. It reports false, running nothing, once Close has begun.
	spawn(f func(ctx context.Context)) bool
}

// memoryOnly is the layer of a cache without a shared store.
type memoryOnly struct {
	settings
	h host
	// roomWarn limits the WARN of a full memory tier to one a minute.
	roomWarn rateLimited
}

var _ layer = (*memoryOnly)(nil)

func (*memoryOnly) miss(Key) (*entry, error) { return nil, ErrSessionInvalid }

func (*memoryOnly) use(*entry, int64) {}

func (m *memoryOnly) idle(_ context.Context, e *entry, _ int64) (bool, error) {
	m.h.endSession(e, "idle", zapcore.DebugLevel)
	return false, ErrSessionInvalid
}

func (*memoryOnly) create(context.Context, Key, *tokenState, time.Time) error { return nil }

func (m *memoryOnly) login(ctx context.Context, authCode rebell.Secret) (string, *entry, error) {
	return m.h.exchangeCode(ctx, authCode)
}

func (m *memoryOnly) refresh(ctx context.Context, _ *entry, old *tokenState) (*tokenState, bool, error) {
	tok, err := m.exch.Refresh(ctx, old.refreshToken)
	if err != nil {
		return nil, true, err
	}
	st, err := refreshedState(old, tok, m.now())
	return st, true, err
}

func (*memoryOnly) logout(context.Context, Key, bool, string) error { return nil }

func (*memoryOnly) endCustomer(context.Context, string, map[Key]bool, *int) error { return nil }

func (*memoryOnly) confirmedEnd(Key) {}

// evicted ends the session: memory was its only home. ctx is the call that
// needed the room (a login's request): the cancel keeps its trace, not its
// cancellation.
func (m *memoryOnly) evicted(ctx context.Context, e *entry) {
	if !e.ended.CompareAndSwap(false, true) {
		return
	}
	m.h.reportEnd(e, "evicted", zapcore.InfoLevel)
	if m.ctx.Err() == nil { // Close drops every session; that ends none
		m.revokeState(context.WithoutCancel(ctx), e.state.Load(), RevokeEvicted)
	}
	if n, ok := m.roomWarn.allow(m.now()); ok {
		m.log.Warn("rebell memory tier full (max_sessions): sessions used least recently ended to make room",
			zap.Int("sessions", n))
	}
}

func (*memoryOnly) close() {}
