package guard

import (
	"container/list"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The rule of the breaker and the bounds of the limiter (docs/rebell-calls.md).
const (
	// DefaultMaxConcurrent is the default bound of calls in flight. A call
	// to Rebell takes tens of milliseconds when it is well, so 64 calls in
	// flight carry over a thousand logins and refreshes a second from one
	// instance, more than a Mini App's burst needs, while a hanging Rebell
	// holds at most 64 connections and goroutines of the gateway.
	DefaultMaxConcurrent = 64
	// MaxMaxConcurrent is the largest bound accepted.
	MaxMaxConcurrent = 10_000

	// Window is how far back the breaker looks at outcomes, in one-second
	// buckets.
	Window = 10 * time.Second
	// MinCalls is how many calls the window must hold before the breaker
	// judges their failure ratio: a gateway with little traffic does not
	// open on one or two failures.
	MinCalls = 5
	// FailureRatio is the share of retryable failures among the window's
	// calls at or above which the breaker opens.
	FailureRatio = 0.5
	// OpenBase is how long the breaker stays open the first time; each
	// failed probe doubles it, up to OpenMax.
	OpenBase = time.Second
	// OpenMax caps the open period.
	OpenMax = 30 * time.Second

	// waitersPerSlot bounds the calls waiting for a slot: at most this many
	// per slot wait; more are refused at once. With calls of ~100 ms and
	// 64 slots, 1,024 waiters clear in under two seconds; a longer queue
	// only holds goroutines for requests that would give up anyway.
	waitersPerSlot = 16
	// busyRetryAfter is the Retry-After of a call refused for lack of a
	// slot, and of a background call refused while a probe runs.
	busyRetryAfter = time.Second

	// DefaultLoginRate is the default cap of login calls per second toward
	// Rebell (Config.LoginRate). A Mini App's real users log in once per
	// session, so even a large one seldom needs more than a few dozen a
	// second per instance; the cap bounds the share of the merchant's
	// Rebell quota a distributed flood of made-up codes can spend.
	DefaultLoginRate = 50
	// MaxLoginRate is the largest login rate accepted.
	MaxLoginRate = 100_000
)

// Config configures a Guard.
type Config struct {
	// MaxConcurrent bounds the calls in flight. 0 means
	// DefaultMaxConcurrent; it must not exceed MaxMaxConcurrent.
	MaxConcurrent int
	// Now is the clock. nil means time.Now.
	Now func() time.Time
	// OnTransition, if set, is called after each change of state, outside
	// the Guard's lock, in the order of the changes.
	OnTransition func(Transition)
	// OnRefused, if set, is called for each refused call with its reason.
	OnRefused func(reason string)
	// LoginRate caps the login calls admitted per second (a token bucket
	// holding one second's worth); logins over it are refused at once with
	// ReasonLoginRate. 0 means DefaultLoginRate; it must not exceed
	// MaxLoginRate.
	LoginRate int
}

// Guard admits calls toward one Rebell endpoint and client id. All methods
// are safe for concurrent use. It starts no goroutine and needs no Close:
// the open period ends lazily, when a call arrives after it.
type Guard struct {
	now          func() time.Time
	onTransition func(Transition)
	onRefused    func(string)

	// state mirrors st for lock-free readers (MayRetry, State).
	state atomic.Int32

	// events serialises the OnTransition callbacks, so they arrive in
	// order.
	events sync.Mutex

	mu       sync.Mutex
	limit    int
	inFlight int
	// logins counts the logins in flight: they may hold at most
	// loginLimit() slots, so the rest stays free for refreshes.
	logins int
	// The calls waiting for a slot, oldest first, one queue per class that
	// may wait: refreshes a request waits on are served before logins.
	refreshWaiters list.List // of *waiter
	loginWaiters   list.List // of *waiter
	loginRate      tokenBucket
	st             State
	// gen counts state changes: an outcome counts only for the state its
	// call was admitted in.
	gen       uint64
	openUntil time.Time
	probing   bool // HalfOpen: the probe is in flight
	// failedProbes counts the probes that failed since the breaker last
	// closed; it sets the open period.
	failedProbes int
	win          window
	lastFailure  string
	pending      []Transition // for OnTransition, delivered after mu
}

// New returns a Guard, closed, with no call in flight.
func New(cfg Config) (*Guard, error) {
	if cfg.MaxConcurrent < 0 || cfg.MaxConcurrent > MaxMaxConcurrent {
		return nil, fmt.Errorf("guard: MaxConcurrent %d is not between 1 and %d", cfg.MaxConcurrent, MaxMaxConcurrent)
	}
	if cfg.LoginRate < 0 || cfg.LoginRate > MaxLoginRate {
		return nil, fmt.Errorf("guard: LoginRate %d is not between 1 and %d", cfg.LoginRate, MaxLoginRate)
	}
	g := &Guard{
		now:          cfg.Now,
		onTransition: cfg.OnTransition,
		onRefused:    cfg.OnRefused,
		limit:        cfg.MaxConcurrent,
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.limit == 0 {
		g.limit = DefaultMaxConcurrent
	}
	g.loginRate.setRate(cfg.LoginRate, g.now())
	return g, nil
}

// unlock releases g.mu and delivers the transitions queued under it, in
// order.
func (g *Guard) unlock() {
	if len(g.pending) == 0 {
		g.mu.Unlock()
		return
	}
	g.events.Lock() // before mu is released: the next batch waits for this one
	evs := g.pending
	g.pending = nil
	g.mu.Unlock()
	for _, t := range evs {
		g.onTransition(t)
	}
	g.events.Unlock()
}
