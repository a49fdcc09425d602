package guard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/fakeclock"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

type clock = fakeclock.Clock

func newClock() *clock { return fakeclock.New(t0) }

type recorder struct {
	mu      sync.Mutex
	trans   []Transition
	refused map[string]int
}

func newGuard(t *testing.T, limit int, c *clock) (*Guard, *recorder) {
	t.Helper()
	rec := &recorder{refused: map[string]int{}}
	g, err := New(Config{
		MaxConcurrent: limit,
		Now:           c.Now,
		OnTransition: func(tr Transition) {
			rec.mu.Lock()
			rec.trans = append(rec.trans, tr)
			rec.mu.Unlock()
		},
		OnRefused: func(reason string) {
			rec.mu.Lock()
			rec.refused[reason]++
			rec.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g, rec
}

func (r *recorder) transitions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, t := range r.trans {
		s = append(s, t.From.String()+">"+t.To.String())
	}
	return s
}

func mustAcquire(t *testing.T, g *Guard, background bool) Ticket {
	t.Helper()
	tk, err := g.Acquire(context.Background(), background)
	if err != nil {
		t.Fatalf("Acquire(background=%v): %v", background, err)
	}
	return tk
}

func refusal(t *testing.T, err error) *Refusal {
	t.Helper()
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("error %v is not a *Refusal", err)
	}
	return r
}

// fail runs n calls that fail, one after the other.
func fail(t *testing.T, g *Guard, n int) {
	t.Helper()
	for range n {
		g.Release(mustAcquire(t, g, false), Failure("UNKNOWN_EXCEPTION"))
	}
}

func TestBreakerOpensOnRatioWithMinimumCount(t *testing.T) {
	c := newClock()
	g, rec := newGuard(t, 8, c)
	fail(t, g, MinCalls-1)
	if g.State() != Closed {
		t.Fatalf("opened after %d calls, below MinCalls", MinCalls-1)
	}
	// Successes keep the ratio under FailureRatio: 4 failures of 9.
	for range 5 {
		g.Release(mustAcquire(t, g, false), Success)
	}
	if g.State() != Closed {
		t.Fatal("opened at a failure ratio under FailureRatio")
	}
	fail(t, g, 1) // 5 of 10
	if g.State() != Open {
		t.Fatalf("state %v after 5 failures of 10, want open", g.State())
	}
	if got := rec.transitions(); len(got) != 1 || got[0] != "closed>open" {
		t.Fatalf("transitions %v", got)
	}
	if rec.trans[0].LastFailure != "UNKNOWN_EXCEPTION" || rec.trans[0].OpenFor != OpenBase {
		t.Fatalf("transition %+v", rec.trans[0])
	}
}

func TestBreakerWindowForgetsOldOutcomes(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 8, c)
	fail(t, g, MinCalls-1)
	c.Advance(Window + time.Second)
	fail(t, g, 1)
	if g.State() != Closed {
		t.Fatal("failures older than the window counted")
	}
}

func TestNonRetryableAnswersDoNotOpen(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 8, c)
	for _, err := range []error{
		&rebell.Error{Kind: rebell.KindConfiguration, ResultStatus: "F", ResultCode: "ACCESS_DENIED"},
		&rebell.Error{Kind: rebell.KindAuthCodeRejected, ResultStatus: "F", ResultCode: "USED_CODE"},
		&rebell.Error{Kind: rebell.KindRefreshTokenDead, ResultStatus: "F", ResultCode: "USED_REFRESH_TOKEN"},
		&rebell.Error{Kind: rebell.KindBadSignature},
	} {
		for range 2 * MinCalls {
			g.Release(mustAcquire(t, g, false), OutcomeOf(context.Background(), err))
		}
	}
	if g.State() != Closed {
		t.Fatal("F results opened the breaker")
	}
	// A cancelled call says nothing about Rebell.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 2 * MinCalls {
		g.Release(mustAcquire(t, g, false), OutcomeOf(ctx, &rebell.Error{Kind: rebell.KindRetryable, Err: context.Canceled}))
	}
	if g.State() != Closed {
		t.Fatal("cancelled calls opened the breaker")
	}
}

func TestOutcomeOfClasses(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{nil, Success},
		{errors.New("not rebell"), Abandoned},
		{&rebell.Error{Kind: rebell.KindRetryable, ResultStatus: "U", ResultCode: "UNKNOWN_EXCEPTION"}, Failure("UNKNOWN_EXCEPTION")},
		{&rebell.Error{Kind: rebell.KindRetryable, ResultStatus: "F", ResultCode: "REQUEST_TRAFFIC_EXCEED_LIMIT"}, Failure("REQUEST_TRAFFIC_EXCEED_LIMIT")},
		{&rebell.Error{Kind: rebell.KindRetryable, HTTPStatus: 503}, Failure("http_error")},
		{&rebell.Error{Kind: rebell.KindRetryable, Err: errors.New("connection refused")}, Failure("transport_error")},
		{&rebell.Error{Kind: rebell.KindRetryable, Err: fmt.Errorf("timeout: %w", context.DeadlineExceeded)}, Failure("timeout")},
	} {
		if got := OutcomeOf(ctx, tc.err); got != tc.want {
			t.Errorf("OutcomeOf(%v) = %+v, want %+v", tc.err, got, tc.want)
		}
	}
}

func TestOpenRefusesWithRetryAfterThenProbes(t *testing.T) {
	c := newClock()
	g, rec := newGuard(t, 8, c)
	fail(t, g, MinCalls)
	c.Advance(300 * time.Millisecond)
	_, err := g.Acquire(context.Background(), false)
	if r := refusal(t, err); r.Reason != ReasonBreakerOpen || r.RetryAfter() != time.Second {
		t.Fatalf("refusal %+v, want breaker_open after 1s", r)
	}
	c.Advance(700 * time.Millisecond) // the open period (OpenBase) has ended
	probe := mustAcquire(t, g, false)
	if g.State() != HalfOpen || !probe.probe {
		t.Fatalf("state %v, probe %v: want half-open with this call as the probe", g.State(), probe.probe)
	}
	if g.MayRetry() {
		t.Fatal("a probe may retry")
	}
	// A background call is refused while the probe runs; a foreground one
	// waits for it.
	if _, err := g.Acquire(context.Background(), true); refusal(t, err).Reason != ReasonBreakerOpen {
		t.Fatalf("background during the probe: %v", err)
	}
	waited := make(chan error, 1)
	go func() {
		tk, err := g.Acquire(context.Background(), false)
		if err == nil {
			g.Release(tk, Success)
		}
		waited <- err
	}()
	waitFor(t, "a waiter", func() bool { return waiting(g) == 1 })
	g.Release(probe, Success)
	if err := <-waited; err != nil {
		t.Fatalf("waiter after the probe succeeded: %v", err)
	}
	if g.State() != Closed || !g.MayRetry() {
		t.Fatalf("state %v after a successful probe", g.State())
	}
	if got := fmt.Sprint(rec.transitions()); got != "[closed>open open>half_open half_open>closed]" {
		t.Fatalf("transitions %s", got)
	}
}

func TestFailedProbesBackOffToTheCap(t *testing.T) {
	c := newClock()
	g, rec := newGuard(t, 8, c)
	fail(t, g, MinCalls)
	want := OpenBase
	for i := range 8 {
		c.Advance(want - time.Nanosecond)
		if _, err := g.Acquire(context.Background(), false); err == nil {
			t.Fatalf("probe %d admitted before the open period of %v ended", i, want)
		}
		c.Advance(time.Nanosecond)
		g.Release(mustAcquire(t, g, false), Failure("transport_error"))
		want = min(2*want, OpenMax)
		rec.mu.Lock()
		last := rec.trans[len(rec.trans)-1]
		rec.mu.Unlock()
		if last.To != Open || last.OpenFor != want {
			t.Fatalf("after failed probe %d: %+v, want open for %v", i, last, want)
		}
	}
	if want != OpenMax {
		t.Fatalf("backoff did not reach the cap: %v", want)
	}
	// A successful probe closes and resets the backoff.
	c.Advance(OpenMax)
	g.Release(mustAcquire(t, g, false), Success)
	fail(t, g, MinCalls)
	rec.mu.Lock()
	last := rec.trans[len(rec.trans)-1]
	rec.mu.Unlock()
	if last.OpenFor != OpenBase {
		t.Fatalf("open period after a close: %v, want %v", last.OpenFor, OpenBase)
	}
}

func TestStaleOutcomesDoNotMoveTheBreaker(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 8, c)
	old := mustAcquire(t, g, false) // admitted while closed, still running
	fail(t, g, MinCalls)
	c.Advance(OpenBase)
	probe := mustAcquire(t, g, false)
	g.Release(old, Success) // an old call's success is not the probe's
	if g.State() != HalfOpen {
		t.Fatalf("state %v: a stale success settled the probe", g.State())
	}
	g.Release(probe, Failure("timeout"))
	if g.State() != Open {
		t.Fatalf("state %v after the probe failed", g.State())
	}
}

func TestAbandonedProbeLetsAnotherProbe(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 8, c)
	fail(t, g, MinCalls)
	c.Advance(OpenBase)
	g.Release(mustAcquire(t, g, false), Abandoned)
	if g.State() != HalfOpen {
		t.Fatalf("state %v", g.State())
	}
	if tk := mustAcquire(t, g, false); !tk.probe {
		t.Fatal("the next call is not a probe")
	}
}

func TestOpeningRefusesWaiters(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 1, c)
	fail(t, g, MinCalls-1)
	held := mustAcquire(t, g, false)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			tk, err := g.Acquire(context.Background(), false)
			if err == nil {
				g.Release(tk, Success)
			}
			errs <- err
		}()
	}
	waitFor(t, "3 waiters", func() bool { return waiting(g) == 3 })
	g.Release(held, Failure("timeout")) // the MinCalls-th failure opens it
	for range 3 {
		select {
		case err := <-errs:
			if r := refusal(t, err); r.Reason != ReasonBreakerOpen || r.RetryAfter() != OpenBase {
				t.Fatalf("waiter: %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a waiter still waits after the breaker opened")
		}
	}
	if g.State() != Open || g.InFlight() != 0 {
		t.Fatalf("state %v, %d in flight", g.State(), g.InFlight())
	}
}

func TestLimitAndPriority(t *testing.T) {
	c := newClock()
	g, rec := newGuard(t, 4, c)
	// Background calls get three quarters of the slots.
	var bg []Ticket
	for range 3 {
		bg = append(bg, mustAcquire(t, g, true))
	}
	if _, err := g.Acquire(context.Background(), true); refusal(t, err).Reason != ReasonNoSlot {
		t.Fatalf("4th background call: %v", err)
	}
	fg := mustAcquire(t, g, false) // the last slot is the foreground's
	if g.InFlight() != 4 {
		t.Fatalf("in flight %d", g.InFlight())
	}
	// A foreground call waits; a background one is refused while it does.
	got := make(chan Ticket, 1)
	go func() {
		tk, err := g.Acquire(context.Background(), false)
		if err != nil {
			t.Error(err)
		}
		got <- tk
	}()
	waitFor(t, "a waiter", func() bool { return waiting(g) == 1 })
	g.Release(bg[0], Success)
	if _, err := g.Acquire(context.Background(), true); err == nil {
		t.Fatal("a background call took a slot a foreground call was waiting for")
	}
	tk := <-got
	if g.InFlight() != 4 {
		t.Fatalf("in flight %d after the hand-over", g.InFlight())
	}
	for _, t := range append(bg[1:], fg, tk) {
		g.Release(t, Success)
	}
	if g.InFlight() != 0 {
		t.Fatalf("in flight %d at the end", g.InFlight())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.refused[ReasonNoSlot] != 2 {
		t.Fatalf("refused %v", rec.refused)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 1, c)
	tk := mustAcquire(t, g, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := g.Acquire(ctx, false)
	r := refusal(t, err)
	if r.Reason != ReasonNoSlot || !errors.Is(err, context.DeadlineExceeded) || r.RetryAfter() < time.Second {
		t.Fatalf("refusal %+v", r)
	}
	if waiting(g) != 0 {
		t.Fatal("the waiter stayed queued")
	}
	g.Release(tk, Success)
	g.Release(mustAcquire(t, g, false), Success)
}

func TestWaitersAreBounded(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 1, c)
	tk := mustAcquire(t, g, false)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range waitersPerSlot {
		wg.Go(func() { _, _ = g.Acquire(ctx, false) })
	}
	waitFor(t, "full queue", func() bool { return waiting(g) == waitersPerSlot })
	if _, err := g.Acquire(context.Background(), false); refusal(t, err).Reason != ReasonNoSlot {
		t.Fatalf("over the queue bound: %v", err)
	}
	cancel()
	wg.Wait()
	g.Release(tk, Success)
}

func TestSetLimitWakesWaiters(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 1, c)
	tk := mustAcquire(t, g, false)
	done := make(chan error, 1)
	go func() {
		t2, err := g.Acquire(context.Background(), false)
		if err == nil {
			g.Release(t2, Success)
		}
		done <- err
	}()
	waitFor(t, "a waiter", func() bool { return waiting(g) == 1 })
	if err := g.SetLimit(2); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	g.Release(tk, Success)
	if err := g.SetLimit(MaxMaxConcurrent + 1); err == nil {
		t.Fatal("SetLimit accepted a limit over the maximum")
	}
}

// TestRaceUnderLoad runs many callers through one Guard while Rebell's
// answers flip between failing and healthy, and checks the bound holds, no
// slot leaks, and every caller returns.
func TestRaceUnderLoad(t *testing.T) {
	const limit = 8
	var flips atomic.Int64
	c := newClock()
	g, err := New(Config{MaxConcurrent: limit, Now: c.Now, OnTransition: func(Transition) { flips.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	var inFlight, peak, nfail atomic.Int64
	// Rebell fails for 3 s of every 4 on the fake clock, which every call
	// moves by 10 ms: the breaker opens, probes and closes many times.
	failing := func() bool { return c.Now().UnixMilli()%4000 < 3000 }
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second)
	for i := range 64 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
				tk, err := g.Acquire(ctx, i%4 == 0)
				cancel()
				c.Advance(10 * time.Millisecond)
				if err != nil {
					_ = g.MayRetry()
					time.Sleep(100 * time.Microsecond)
					continue
				}
				if n := inFlight.Add(1); n > peak.Load() {
					peak.Store(n)
				}
				time.Sleep(time.Duration(i%3) * 100 * time.Microsecond)
				inFlight.Add(-1)
				if failing() {
					nfail.Add(1)
					g.Release(tk, Failure("transport_error"))
				} else {
					g.Release(tk, Success)
				}
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > limit {
		t.Fatalf("%d calls in flight, bound %d", p, limit)
	}
	if n := g.InFlight(); n != 0 {
		t.Fatalf("%d slots leaked", n)
	}
	if waiting(g) != 0 {
		t.Fatal("waiters left")
	}
	if flips.Load() < 3 {
		t.Fatalf("only %d transitions (%d failures): the breaker was not exercised", flips.Load(), nfail.Load())
	}
	t.Logf("peak %d in flight, %d transitions, final state %v", peak.Load(), flips.Load(), g.State())
}

func waiting(g *Guard) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
