package guard

import (
	"container/list"
	"context"
	"fmt"
	"time"
)

// Class is what a call is for; it decides the call's place in line
// (docs/rebell-calls.md): refreshes a request waits on first, then logins,
// then background work.
type Class uint8

// The classes of calls.
const (
	// ClassRefresh is a refresh that a request waits on. It may take every
	// slot, and waits before logins do.
	ClassRefresh Class = iota
	// ClassLogin is a login's auth-code exchange. Logins may hold at most
	// the login share of the slots (LoginLimit), so a flood of logins
	// cannot take the slots refreshes need; they wait behind refreshes.
	ClassLogin
	// ClassBackground is background work (a refresh-ahead call, a cancel):
	// it never waits, takes at most three quarters of the slots, and is
	// refused while any other call waits.
	ClassBackground
)

func (c Class) String() string {
	switch c {
	case ClassRefresh:
		return "refresh"
	case ClassLogin:
		return "login"
	case ClassBackground:
		return "background"
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
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

// SetLoginRate changes the cap of login calls per second (0 means
// DefaultLoginRate).
func (g *Guard) SetLoginRate(n int) error {
	if n < 0 || n > MaxLoginRate {
		return fmt.Errorf("guard: login rate %d is not between 1 and %d", n, MaxLoginRate)
	}
	g.mu.Lock()
	g.loginRate.setRate(n, g.now())
	g.mu.Unlock()
	return nil
}

// Limit returns the bound of calls in flight.
func (g *Guard) Limit() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit
}

// LoginLimit returns how many logins may be in flight at once: the bound
// less the refreshes' reserve, a quarter of it (at least one slot when the
// bound is 2 or more; with a bound of 1 there is nothing to split).
func (g *Guard) LoginLimit() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.loginLimit()
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
	login bool
}

type waiter struct {
	ch   chan grant // buffered 1: the decision
	elem *list.Element
}

type grant struct {
	t   Ticket
	err error
}

// Acquire asks to make one call: a foreground refresh, or background work
// when background is true. See AcquireAs.
func (g *Guard) Acquire(ctx context.Context, background bool) (Ticket, error) {
	if background {
		return g.AcquireAs(ctx, ClassBackground)
	}
	return g.AcquireAs(ctx, ClassRefresh)
}

// AcquireAs asks to make one call of class c. It returns at once when a
// slot the class may take is free, nobody of its class or a higher one
// waits, and the breaker lets the call through; a refresh or a login
// otherwise waits for a slot (or for a half-open breaker's probe to settle)
// until ctx ends. A login over the login rate is refused at once. A
// background call never waits: it is refused when no slot is free within
// its share (three quarters of the bound) or when any other call is
// waiting. The error is always a *Refusal.
func (g *Guard) AcquireAs(ctx context.Context, c Class) (Ticket, error) {
	g.mu.Lock()
	now := g.now()
	g.advance(now)
	if c == ClassLogin {
		if wait, ok := g.loginRate.take(now); !ok {
			return Ticket{}, g.refuse(ReasonLoginRate, wait, nil)
		}
	}
	queued := g.refreshWaiters.Len() > 0
	if c != ClassRefresh {
		queued = queued || g.loginWaiters.Len() > 0
	}
	free := g.inFlight < g.limit && (c != ClassLogin || g.logins < g.loginLimit())
	switch g.st {
	case Open:
		return Ticket{}, g.refuse(ReasonBreakerOpen, g.openLeft(now), nil)
	case HalfOpen:
		if !g.probing && free && !queued {
			t := g.admitProbe(c == ClassLogin)
			g.unlock()
			return t, nil
		}
		if c == ClassBackground {
			return Ticket{}, g.refuse(ReasonBreakerOpen, busyRetryAfter, nil)
		}
	default: // Closed
		if c == ClassBackground {
			if !queued && g.inFlight < g.backgroundLimit() {
				t := g.admit(false)
				g.unlock()
				return t, nil
			}
			return Ticket{}, g.refuse(ReasonNoSlot, busyRetryAfter, nil)
		}
		if !queued && free {
			t := g.admit(c == ClassLogin)
			g.unlock()
			return t, nil
		}
	}
	q, bound := &g.refreshWaiters, g.limit*waitersPerSlot
	if c == ClassLogin {
		q, bound = &g.loginWaiters, g.loginLimit()*waitersPerSlot
	}
	if q.Len() >= bound {
		return Ticket{}, g.refuse(ReasonNoSlot, busyRetryAfter, nil)
	}
	w := &waiter{ch: make(chan grant, 1)}
	w.elem = q.PushBack(w)
	g.unlock()

	select {
	case gr := <-w.ch:
		return gr.t, gr.err
	case <-ctx.Done():
	}
	g.mu.Lock()
	if w.elem != nil {
		q.Remove(w.elem)
		w.elem = nil
		// Those queued behind this waiter may now go (a background call
		// no longer yields to it, a login no longer waits behind it).
		g.dispatch(g.now())
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
	case g.waiting() > 0 || g.inFlight >= g.backgroundLimit():
		return Ticket{}, g.refuse(ReasonNoSlot, busyRetryAfter, nil)
	}
	t := g.admit(false)
	g.unlock()
	return t, nil
}

// Release ends the call t was given for, with its outcome: it frees the
// slot and, if the call was admitted in the breaker's current state,
// counts the outcome (closed) or settles the probe (half-open).
func (g *Guard) Release(t Ticket, o Outcome) {
	g.mu.Lock()
	g.inFlight--
	if t.login {
		g.logins--
	}
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

// admit takes a slot. g.mu is held.
func (g *Guard) admit(login bool) Ticket {
	g.inFlight++
	if login {
		g.logins++
	}
	return Ticket{gen: g.gen, login: login}
}

// admitProbe admits the half-open breaker's probe. g.mu is held.
func (g *Guard) admitProbe(login bool) Ticket {
	g.probing = true
	t := g.admit(login)
	t.probe = true
	return t
}

// backgroundLimit is how many calls may be in flight for a background call
// to be admitted: three quarters of the bound (at least one), so logins and
// foreground refreshes arriving meanwhile find a slot. g.mu is held.
func (g *Guard) backgroundLimit() int {
	return max(1, g.limit-g.limit/4)
}

// loginLimit is how many logins may be in flight: the bound less a quarter
// of it, and less at least one slot when the bound is 2 or more, so
// refreshes a request waits on always find a slot logins cannot hold.
// g.mu is held.
func (g *Guard) loginLimit() int {
	if g.limit < 2 {
		return g.limit
	}
	return g.limit - max(1, g.limit/4)
}

// dispatch hands freed slots to waiters, refreshes first and each queue
// oldest first, or refuses them all when the breaker is open. g.mu is held.
func (g *Guard) dispatch(now time.Time) {
	g.advance(now)
	for {
		var q *list.List
		login := false
		switch {
		case g.refreshWaiters.Len() > 0:
			q = &g.refreshWaiters
		case g.loginWaiters.Len() > 0:
			q, login = &g.loginWaiters, true
		default:
			return
		}
		free := g.inFlight < g.limit && (!login || g.logins < g.loginLimit())
		w := q.Front().Value.(*waiter)
		var gr grant
		switch {
		case g.st == Open:
			gr.err = &Refusal{Reason: ReasonBreakerOpen, After: g.openLeft(now)}
			g.count(ReasonBreakerOpen)
		case g.st == HalfOpen && !g.probing && free:
			gr.t = g.admitProbe(login)
		case g.st == Closed && free:
			gr.t = g.admit(login)
		default:
			return
		}
		q.Remove(w.elem)
		w.elem = nil
		w.ch <- gr
	}
}

// waiting returns the number of calls waiting for a slot. g.mu is held.
func (g *Guard) waiting() int { return g.refreshWaiters.Len() + g.loginWaiters.Len() }

// tokenBucket caps a rate: it holds up to one second's worth of tokens and
// refills continuously. The zero value admits nothing until setRate.
type tokenBucket struct {
	rate   float64 // tokens per second
	tokens float64
	last   time.Time
}

func (b *tokenBucket) setRate(n int, now time.Time) {
	if n == 0 {
		n = DefaultLoginRate
	}
	if b.last.IsZero() {
		b.tokens = float64(n)
	}
	b.rate = float64(n)
	b.tokens = min(b.tokens, b.rate)
	b.last = now
}

// take takes a token if one is there; otherwise it says how long until
// one is (at least a second, as every Retry-After).
func (b *tokenBucket) take(now time.Time) (time.Duration, bool) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.rate, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	wait := time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
	return max(time.Second, (wait+time.Second-1)/time.Second*time.Second), false
}
