package guard

import (
	"container/list"
	"context"
	"fmt"
	"time"
)

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

// Ticket is the permission for one call. Release it exactly once.
type Ticket struct {
	gen   uint64
	probe bool
}

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

// AcquireQuiet asks to make one call whose outcome the breaker does not
// hear (a cancelToken, docs/rebell-calls.md): it is admitted only while the
// breaker is closed, with no foreground call waiting and a slot free within
// the background share, and never waits or probes. Release its ticket with
// Abandoned. The error is always a *Refusal.
func (g *Guard) AcquireQuiet() (Ticket, error) {
	g.mu.Lock()
	now := g.now()
	g.advance(now)
	switch {
	case g.st != Closed:
		if g.st == Open {
			return Ticket{}, g.refuse(ReasonBreakerOpen, g.openLeft(now), nil)
		}
		return Ticket{}, g.refuse(ReasonBreakerOpen, busyRetryAfter, nil)
	case g.waiters.Len() > 0 || g.inFlight >= g.backgroundLimit():
		return Ticket{}, g.refuse(ReasonNoSlot, busyRetryAfter, nil)
	}
	g.inFlight++
	t := Ticket{gen: g.gen}
	g.unlock()
	return t, nil
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
