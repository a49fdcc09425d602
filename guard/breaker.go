package guard

import (
	"fmt"
	"time"
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

// State returns the breaker's state. An open breaker whose period has ended
// reports Open until a call arrives and becomes the probe.
func (g *Guard) State() State { return State(g.state.Load()) }

// MayRetry reports whether a call in flight may send another attempt after
// a retryable failure: only while the breaker is closed. A probe is one
// attempt, and calls admitted before the breaker opened stop retrying.
func (g *Guard) MayRetry() bool { return g.State() == Closed }

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
