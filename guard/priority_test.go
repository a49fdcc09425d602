package guard

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func acquireAs(t *testing.T, g *Guard, c Class) Ticket {
	t.Helper()
	tk, err := g.AcquireAs(context.Background(), c)
	if err != nil {
		t.Fatalf("AcquireAs(%v): %v", c, err)
	}
	return tk
}

// waitAs starts a call of class c that waits for a slot; its ticket (or
// error) arrives on the returned channel.
func waitAs(g *Guard, c Class) <-chan grant {
	ch := make(chan grant, 1)
	go func() {
		tk, err := g.AcquireAs(context.Background(), c)
		ch <- grant{tk, err}
	}()
	return ch
}

func TestLoginShareLeavesSlotsToRefreshes(t *testing.T) {
	for _, tc := range []struct{ limit, logins int }{{1, 1}, {2, 1}, {4, 3}, {8, 6}, {64, 48}} {
		g, _ := newGuard(t, tc.limit, newClock())
		if got := g.LoginLimit(); got != tc.logins {
			t.Errorf("limit %d: login share %d, want %d", tc.limit, got, tc.logins)
		}
	}

	g, _ := newGuard(t, 8, newClock())
	var held []Ticket
	for range 6 {
		held = append(held, acquireAs(t, g, ClassLogin))
	}
	// A seventh login waits although two slots are free...
	login := waitAs(g, ClassLogin)
	waitFor(t, "a login waiting", func() bool { return waiting(g) == 1 })
	// ...and those two are the refreshes'.
	r1, r2 := acquireAs(t, g, ClassRefresh), acquireAs(t, g, ClassRefresh)
	if g.InFlight() != 8 {
		t.Fatalf("in flight %d", g.InFlight())
	}
	// A refresh that frees its slot does not let a login over its share.
	g.Release(r1, Success)
	select {
	case gr := <-login:
		t.Fatalf("a login took a refresh's slot: %+v", gr)
	case <-time.After(20 * time.Millisecond):
	}
	g.Release(held[0], Success)
	gr := <-login
	if gr.err != nil || !gr.t.login {
		t.Fatalf("the waiting login: %+v", gr)
	}
	for _, tk := range append(held[1:], r2, gr.t) {
		g.Release(tk, Success)
	}
	if g.InFlight() != 0 || g.logins != 0 {
		t.Fatalf("in flight %d, logins %d at the end", g.InFlight(), g.logins)
	}
}

func TestRefreshesGoBeforeLoginsThenBackground(t *testing.T) {
	g, rec := newGuard(t, 4, newClock())
	l1, l2, l3 := acquireAs(t, g, ClassLogin), acquireAs(t, g, ClassLogin), acquireAs(t, g, ClassLogin)
	r0 := acquireAs(t, g, ClassRefresh)
	login := waitAs(g, ClassLogin)
	waitFor(t, "a login waiting", func() bool { return waiting(g) == 1 })
	refresh := waitAs(g, ClassRefresh) // arrives after the login
	waitFor(t, "a refresh waiting", func() bool { return waiting(g) == 2 })
	if _, err := g.AcquireAs(context.Background(), ClassBackground); refusal(t, err).Reason != ReasonNoSlot {
		t.Fatalf("background while others wait: %v", err)
	}

	g.Release(l1, Success) // the refresh goes first, though it came later
	gr := <-refresh
	if gr.err != nil || gr.t.login {
		t.Fatalf("the waiting refresh: %+v", gr)
	}
	select {
	case gr := <-login:
		t.Fatalf("the login went before the refresh freed a slot: %+v", gr)
	case <-time.After(20 * time.Millisecond):
	}
	g.Release(r0, Success)
	lg := <-login
	if lg.err != nil || !lg.t.login {
		t.Fatalf("the waiting login: %+v", lg)
	}
	// Nobody waits now: background work runs within its share.
	g.Release(lg.t, Success)
	g.Release(l2, Success)
	bg := acquireAs(t, g, ClassBackground)
	for _, tk := range []Ticket{l3, gr.t, bg} {
		g.Release(tk, Success)
	}
	if g.InFlight() != 0 || waiting(g) != 0 {
		t.Fatalf("in flight %d, waiting %d", g.InFlight(), waiting(g))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.refused[ReasonNoSlot] != 1 {
		t.Fatalf("refused %v", rec.refused)
	}
}

func TestLoginQueueDoesNotFillTheRefreshQueue(t *testing.T) {
	g, _ := newGuard(t, 2, newClock()) // one login slot, 16 login waiters
	held := acquireAs(t, g, ClassLogin)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	for range waitersPerSlot {
		go func() {
			_, _ = g.AcquireAs(ctx, ClassLogin)
			done <- struct{}{}
		}()
	}
	waitFor(t, "full login queue", func() bool { return waiting(g) == waitersPerSlot })
	if _, err := g.AcquireAs(context.Background(), ClassLogin); refusal(t, err).Reason != ReasonNoSlot {
		t.Fatalf("login over the queue bound: %v", err)
	}
	// The refreshes' slot and queue are untouched.
	r := acquireAs(t, g, ClassRefresh)
	refresh := waitAs(g, ClassRefresh)
	waitFor(t, "a refresh waiting", func() bool { return waiting(g) == waitersPerSlot+1 })
	g.Release(r, Success)
	if gr := <-refresh; gr.err != nil {
		t.Fatal(gr.err)
	} else {
		g.Release(gr.t, Success)
	}
	cancel()
	for range waitersPerSlot {
		<-done
	}
	g.Release(held, Success)
	if g.InFlight() != 0 {
		t.Fatalf("in flight %d", g.InFlight())
	}
}

func TestLoginRateCapsLoginsOnly(t *testing.T) {
	c := newClock()
	g, err := New(Config{MaxConcurrent: 8, Now: c.Now, LoginRate: 5})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		g.Release(acquireAs(t, g, ClassLogin), Success)
	}
	_, err = g.AcquireAs(context.Background(), ClassLogin)
	if r := refusal(t, err); r.Reason != ReasonLoginRate || r.RetryAfter() != time.Second {
		t.Fatalf("sixth login in the second: %+v", r)
	}
	// Refreshes are not capped.
	for range 20 {
		g.Release(acquireAs(t, g, ClassRefresh), Success)
	}
	c.Advance(200 * time.Millisecond) // one token back
	g.Release(acquireAs(t, g, ClassLogin), Success)
	if _, err := g.AcquireAs(context.Background(), ClassLogin); refusal(t, err).Reason != ReasonLoginRate {
		t.Fatalf("second login after 200ms: %v", err)
	}
	// The bucket holds at most one second's worth.
	c.Advance(time.Hour)
	for range 5 {
		g.Release(acquireAs(t, g, ClassLogin), Success)
	}
	if _, err := g.AcquireAs(context.Background(), ClassLogin); err == nil {
		t.Fatal("the bucket held more than one second's worth")
	}
	if err := g.SetLoginRate(MaxLoginRate + 1); err == nil {
		t.Fatal("SetLoginRate accepted a rate over the maximum")
	}
	if _, err := New(Config{LoginRate: -1}); err == nil {
		t.Fatal("New accepted a negative login rate")
	}
	if g.State() != Closed {
		t.Fatal("refusals moved the breaker")
	}
}

// expiringCtx is a context whose deadline passes when told to: Err reports
// DeadlineExceeded from then on (Done never closes, so a wait for a slot
// is not cut short by it).
type expiringCtx struct {
	context.Context
	expired atomic.Bool
}

func (c *expiringCtx) Err() error {
	if c.expired.Load() {
		return context.DeadlineExceeded
	}
	return nil
}

// timeoutNext is an exchanger whose every call spends d on the clock and
// then times out with the caller's deadline.
type timeoutNext struct {
	c   *clock
	d   time.Duration
	ctx *expiringCtx
}

func (n *timeoutNext) answer() (*rebell.Token, error) {
	n.c.Advance(n.d)
	n.ctx.expired.Store(true)
	return nil, &rebell.Error{Kind: rebell.KindRetryable, Err: context.DeadlineExceeded}
}

func (n *timeoutNext) ExchangeAuthCode(context.Context, rebell.Secret) (*rebell.Token, error) {
	return n.answer()
}

func (n *timeoutNext) Refresh(context.Context, rebell.Secret) (*rebell.Token, error) {
	return n.answer()
}

func TestQueueTimeoutsDoNotOpenTheBreaker(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 1, c)
	next := &timeoutNext{c: c, d: time.Second}
	x := NewExchanger(next, g)
	// Each login waits 20 s for its slot, then runs out of its deadline
	// after 1 s at Rebell: the queue, not Rebell, took the time.
	for range 2 * MinCalls {
		next.ctx = &expiringCtx{Context: context.Background()}
		held := acquireAs(t, g, ClassRefresh)
		done := make(chan error, 1)
		go func() {
			_, err := x.ExchangeAuthCode(next.ctx, rebell.NewSecret("code"))
			done <- err
		}()
		waitFor(t, "the login waiting", func() bool { return waiting(g) == 1 })
		c.Advance(20 * time.Second)
		g.Release(held, Success)
		if err := <-done; err == nil || IsRefusal(err) {
			t.Fatalf("login: %v", err)
		}
	}
	if g.State() != Closed {
		t.Fatal("timeouts spent in the gateway's queue opened the breaker")
	}
	// The same timeouts with the time spent at Rebell do open it.
	for range MinCalls {
		next.ctx = &expiringCtx{Context: context.Background()}
		_, _ = x.ExchangeAuthCode(next.ctx, rebell.NewSecret("code"))
	}
	if g.State() != Open {
		t.Fatalf("state %v after timeouts at Rebell, want open", g.State())
	}
}

func TestOutcomeOfCallWeighsWhereTheTimeWent(t *testing.T) {
	timeout := &rebell.Error{Kind: rebell.KindRetryable, Err: context.DeadlineExceeded}
	expired := &expiringCtx{Context: context.Background()}
	expired.expired.Store(true)
	live := context.Background()
	for _, tc := range []struct {
		ctx              context.Context
		err              error
		waited, atRebell time.Duration
		want             Outcome
	}{
		{expired, timeout, 29 * time.Second, time.Second, Abandoned},
		{expired, timeout, time.Second, 29 * time.Second, Failure("timeout")},
		{live, timeout, 29 * time.Second, time.Second, Failure("timeout")}, // Rebell's own attempt timeout
		{expired, &rebell.Error{Kind: rebell.KindRetryable, HTTPStatus: 503}, time.Minute, 0, Failure("http_error")},
		{expired, nil, time.Minute, 0, Success},
	} {
		if got := OutcomeOfCall(tc.ctx, tc.err, tc.waited, tc.atRebell); got != tc.want {
			t.Errorf("OutcomeOfCall(%v, waited %v, at Rebell %v) = %+v, want %+v", tc.err, tc.waited, tc.atRebell, got, tc.want)
		}
	}
}

// blockingNext holds every call until release is closed.
type blockingNext struct{ release chan struct{} }

func (n *blockingNext) ExchangeAuthCode(context.Context, rebell.Secret) (*rebell.Token, error) {
	<-n.release
	return &rebell.Token{}, nil
}

func (n *blockingNext) Refresh(context.Context, rebell.Secret) (*rebell.Token, error) {
	<-n.release
	return &rebell.Token{}, nil
}

func TestExchangerClassesItsCalls(t *testing.T) {
	g, _ := newGuard(t, 4, newClock())
	next := &blockingNext{release: make(chan struct{})}
	x := NewExchanger(next, g)
	done := make(chan error, 8)
	for range 4 {
		go func() {
			_, err := x.ExchangeAuthCode(context.Background(), rebell.NewSecret("code"))
			done <- err
		}()
	}
	// Three logins run, the fourth waits for the login share.
	waitFor(t, "3 logins in flight and one waiting", func() bool { return g.InFlight() == 3 && waiting(g) == 1 })
	go func() {
		_, err := x.Refresh(context.Background(), rebell.NewSecret("rt"))
		done <- err
	}()
	waitFor(t, "the refresh in flight", func() bool { return g.InFlight() == 4 })
	// Background work yields.
	if _, err := x.Refresh(rebell.WithBackground(context.Background()), rebell.NewSecret("rt")); refusal(t, err).Reason != ReasonNoSlot {
		t.Fatalf("background refresh: %v", err)
	}
	close(next.release)
	for range 5 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if g.InFlight() != 0 {
		t.Fatalf("in flight %d", g.InFlight())
	}
}
