// Package guard protects Rebell's applyToken from the gateway and the
// gateway from a failing Rebell: it bounds the calls in flight toward one
// endpoint and client id, lets logins and refreshes that are needed now go
// before background refresh-ahead calls, and runs one circuit breaker that
// stops calling while Rebell keeps failing and lets one real call probe it
// when the open period ends (docs/rebell-calls.md).
//
// It does not import Caddy: the Caddy glue keeps one Guard per endpoint and
// client id across config reloads and wraps the cache's TokenExchanger with
// NewExchanger.
package guard

import (
	"container/list"
	"context"
	"errors"
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
)

// State is the breaker's state.
type State int32

// The breaker's states.
const (
	// Closed: calls go to Rebell, within the bound.
	Closed State = iota
	// Open: no call goes to Rebell until the open period ends.
	Open
	// HalfOpen: the open period has ended; one call (the probe) goes to
	// Rebell, and its outcome closes or re-opens the breaker.
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Reasons of a Refusal, also the reason label of the refused-calls metric.
const (
	// ReasonNoSlot: no slot became free in time, too many calls were
	// waiting, or a background call found no free slot.
	ReasonNoSlot = "no_slot"
	// ReasonBreakerOpen: the breaker is open, or (for a background call)
	// half-open with its probe in flight.
	ReasonBreakerOpen = "breaker_open"
)

// Refusal is the error of a call the Guard did not let through to Rebell:
// nothing was sent, so no auth code or refresh token was spent.
type Refusal struct {
	// Reason is ReasonNoSlot or ReasonBreakerOpen.
	Reason string
	// After is when the caller may try again (at least one second).
	After time.Duration
	// Err is the context's error when the call gave up waiting, else nil.
	Err error
}

func (r *Refusal) Error() string {
	msg := "rebell calls: refused: "
	if r.Reason == ReasonBreakerOpen {
		msg += "circuit breaker open"
	} else {
		msg += "no free slot"
	}
	if r.Err != nil {
		msg += ": " + r.Err.Error()
	}
	return msg
}

// Unwrap returns the context's error, if the call gave up waiting.
func (r *Refusal) Unwrap() error { return r.Err }

// RetryAfter is when the caller may try again: the time left until the
// breaker's next probe, and at least one second.
func (r *Refusal) RetryAfter() time.Duration { return r.After }

// IsRefusal reports whether err is or wraps a *Refusal.
func IsRefusal(err error) bool {
	var r *Refusal
	return errors.As(err, &r)
}

// Transition is a change of the breaker's state, as Config.OnTransition
// receives it.
type Transition struct {
	From, To State
	// LastFailure is the class of the last retryable failure seen (a
	// Rebell resultCode, transport_error, timeout, http_error), "" if none.
	LastFailure string
	// OpenFor is how long the breaker stays open, when To is Open.
	OpenFor time.Duration
}

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
	waiters  list.List // of *waiter, oldest first
	st       State
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
	return g, nil
}

// SetLimit changes the bound of calls in flight (0 means
// DefaultMaxConcurrent). Calls in flight beyond a lowered bound finish; new
// ones wait until the count is under it.
func (g *Guard) SetLimit(n int) error {
	if n < 0 || n > MaxMaxConcurrent {
		return fmt.Errorf("guard: limit %d is not between 1 and %d", n, MaxMaxConcurrent)
	}
	if n == 0 {
		n = DefaultMaxConcurrent
	}
	g.mu.Lock()
	g.limit = n
	g.dispatch(g.now())
	g.unlock()
	return nil
}

// Limit returns the bound of calls in flight.
func (g *Guard) Limit() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit
}

// InFlight returns the number of calls admitted and not yet released.
func (g *Guard) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight
}

// State returns the breaker's state. An open breaker whose period has ended
// reports Open until a call arrives and becomes the probe.
func (g *Guard) State() State { return State(g.state.Load()) }

// MayRetry reports whether a call in flight may send another attempt after
// a retryable failure: only while the breaker is closed. A probe is one
// attempt, and calls admitted before the breaker opened stop retrying.
func (g *Guard) MayRetry() bool { return g.State() == Closed }

// Ticket is the permission for one call. Release it exactly once.
type Ticket struct {
	gen   uint64
	probe bool
}

// Outcome is what a call's result says about Rebell's health.
type Outcome struct {
	kind  outcomeKind
	class string
}

type outcomeKind uint8

const (
	abandoned outcomeKind = iota
	succeeded
	failed
)

var (
	// Success is a call Rebell answered: a SUCCESS or any answer that is
	// not a retryable failure (an F result says Rebell is up).
	Success = Outcome{kind: succeeded}
	// Abandoned is a call that says nothing about Rebell (cancelled by the
	// gateway before an answer).
	Abandoned = Outcome{kind: abandoned}
)

// Failure is a retryable failure (transport error, timeout, HTTP 429 or
// 5xx, U, REQUEST_TRAFFIC_EXCEED_LIMIT) of the given class.
func Failure(class string) Outcome { return Outcome{kind: failed, class: class} }

type waiter struct {
	ch   chan grant // buffered 1: the decision
	elem *list.Element
}

type grant struct {
	t   Ticket
	err error
}

// Acquire asks to make one call. It returns at once when a slot is free
// and the breaker lets the call through; a foreground call otherwise waits
// for a slot (or for a half-open breaker's probe to settle) until ctx ends.
// A background call never waits: it is refused when no slot is free within
// its share (three quarters of the bound) or when any foreground call is
// waiting. The error is always a *Refusal.
func (g *Guard) Acquire(ctx context.Context, background bool) (Ticket, error) {
	g.mu.Lock()
	now := g.now()
	g.advance(now)
	queued := g.waiters.Len() > 0
	switch g.st {
	case Open:
		return Ticket{}, g.refuse(ReasonBreakerOpen, g.openLeft(now), nil)
	case HalfOpen:
		if !g.probing && g.inFlight < g.limit && !queued {
			t := g.admitProbe()
			g.unlock()
			return t, nil
		}
		if background {
			return Ticket{}, g.refuse(ReasonBreakerOpen, busyRetryAfter, nil)
		}
	default: // Closed
		if background {
			if !queued && g.inFlight < g.backgroundLimit() {
				g.inFlight++
				t := Ticket{gen: g.gen}
				g.unlock()
				return t, nil
			}
			return Ticket{}, g.refuse(ReasonNoSlot, busyRetryAfter, nil)
		}
		if !queued && g.inFlight < g.limit {
			g.inFlight++
			t := Ticket{gen: g.gen}
			g.unlock()
			return t, nil
		}
	}
	if g.waiters.Len() >= g.limit*waitersPerSlot {
		return Ticket{}, g.refuse(ReasonNoSlot, busyRetryAfter, nil)
	}
	w := &waiter{ch: make(chan grant, 1)}
	w.elem = g.waiters.PushBack(w)
	g.unlock()

	select {
	case gr := <-w.ch:
		return gr.t, gr.err
	case <-ctx.Done():
	}
	g.mu.Lock()
	if w.elem != nil {
		g.waiters.Remove(w.elem)
		w.elem = nil
		return Ticket{}, g.refuse(ReasonNoSlot, busyRetryAfter, ctx.Err())
	}
	g.unlock()
	// Decided meanwhile: hand a granted slot back.
	gr := <-w.ch
	if gr.err != nil {
		return Ticket{}, gr.err
	}
	g.Release(gr.t, Abandoned)
	g.mu.Lock()
	return Ticket{}, g.refuse(ReasonNoSlot, busyRetryAfter, ctx.Err())
}

// Release ends the call t was given for, with its outcome: it frees the
// slot and, if the call was admitted in the breaker's current state,
// counts the outcome (closed) or settles the probe (half-open).
func (g *Guard) Release(t Ticket, o Outcome) {
	g.mu.Lock()
	g.inFlight--
	now := g.now()
	if o.kind == failed {
		g.lastFailure = o.class
	}
	if t.gen == g.gen {
		switch {
		case g.st == Closed && o.kind != abandoned:
			g.win.add(now, o.kind == failed)
			if o.kind == failed && g.win.shouldOpen(now) {
				g.trip(now)
			}
		case g.st == HalfOpen && t.probe:
			switch o.kind {
			case succeeded:
				g.failedProbes = 0
				g.setState(Closed, 0)
			case failed:
				g.failedProbes++
				g.trip(now)
			default:
				g.probing = false // another call may probe
			}
		}
	}
	g.dispatch(now)
	g.unlock()
}

// admitProbe admits the half-open breaker's probe. g.mu is held.
func (g *Guard) admitProbe() Ticket {
	g.probing = true
	g.inFlight++
	return Ticket{gen: g.gen, probe: true}
}

// backgroundLimit is how many calls may be in flight for a background call
// to be admitted: three quarters of the bound (at least one), so logins and
// foreground refreshes arriving meanwhile find a slot. g.mu is held.
func (g *Guard) backgroundLimit() int {
	return max(1, g.limit-g.limit/4)
}

// advance moves an open breaker whose period ended to half-open. g.mu is
// held.
func (g *Guard) advance(now time.Time) {
	if g.st == Open && !now.Before(g.openUntil) {
		g.setState(HalfOpen, 0)
	}
}

// trip opens the breaker for the period its failed probes call for. g.mu
// is held.
func (g *Guard) trip(now time.Time) {
	d := OpenBase
	for i := 0; i < g.failedProbes && d < OpenMax; i++ {
		d *= 2
	}
	d = min(d, OpenMax)
	g.openUntil = now.Add(d)
	g.setState(Open, d)
}

// setState changes the state, starts a new generation and queues the
// transition for OnTransition. g.mu is held.
func (g *Guard) setState(to State, openFor time.Duration) {
	from := g.st
	g.st = to
	g.state.Store(int32(to))
	g.gen++
	g.probing = false
	if to == Closed {
		g.win.reset()
	}
	if g.onTransition != nil {
		g.pending = append(g.pending, Transition{From: from, To: to, LastFailure: g.lastFailure, OpenFor: openFor})
	}
}

// openLeft is the Retry-After of a call refused by the open breaker: the
// time until its probe, rounded up to whole seconds, at least one.
func (g *Guard) openLeft(now time.Time) time.Duration {
	d := g.openUntil.Sub(now)
	return max(time.Second, (d+time.Second-1)/time.Second*time.Second)
}

// dispatch hands freed slots to waiters, oldest first, or refuses them all
// when the breaker is open. g.mu is held.
func (g *Guard) dispatch(now time.Time) {
	g.advance(now)
	for g.waiters.Len() > 0 {
		w := g.waiters.Front().Value.(*waiter)
		var gr grant
		switch {
		case g.st == Open:
			gr.err = &Refusal{Reason: ReasonBreakerOpen, After: g.openLeft(now)}
			g.count(ReasonBreakerOpen)
		case g.st == HalfOpen && !g.probing && g.inFlight < g.limit:
			gr.t = g.admitProbe()
		case g.st == Closed && g.inFlight < g.limit:
			g.inFlight++
			gr.t = Ticket{gen: g.gen}
		default:
			return
		}
		g.waiters.Remove(w.elem)
		w.elem = nil
		w.ch <- gr
	}
}

// refuse builds a refusal, counts it and unlocks g.mu.
func (g *Guard) refuse(reason string, after time.Duration, err error) *Refusal {
	g.count(reason)
	g.unlock()
	return &Refusal{Reason: reason, After: after, Err: err}
}

func (g *Guard) count(reason string) {
	if g.onRefused != nil {
		g.onRefused(reason)
	}
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

// window counts outcomes over the last Window in one-second buckets.
type window struct {
	buckets [windowBuckets]bucket
}

const windowBuckets = int(Window / time.Second)

type bucket struct {
	sec        int64 // Unix second the counts are for
	ok, failed int
}

func (w *window) add(now time.Time, failed bool) {
	sec := now.Unix()
	b := &w.buckets[int(uint64(sec)%uint64(windowBuckets))]
	if b.sec != sec {
		*b = bucket{sec: sec}
	}
	if failed {
		b.failed++
	} else {
		b.ok++
	}
}

// shouldOpen applies the rule: at least MinCalls calls in the window and a
// failure ratio of at least FailureRatio.
func (w *window) shouldOpen(now time.Time) bool {
	sec := now.Unix()
	total, failed := 0, 0
	for _, b := range w.buckets {
		if b.sec > sec-int64(windowBuckets) && b.sec <= sec {
			total += b.ok + b.failed
			failed += b.failed
		}
	}
	return total >= MinCalls && float64(failed) >= FailureRatio*float64(total)
}

func (w *window) reset() { *w = window{} }
