package guard

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// fakeCanceller is a TokenExchanger and TokenCanceller whose cancels answer
// err.
type fakeCanceller struct {
	err     error
	calls   atomic.Int64
	release chan struct{} // if set, cancels wait for it
}

func (f *fakeCanceller) ExchangeAuthCode(context.Context, rebell.Secret) (*rebell.Token, error) {
	return &rebell.Token{}, nil
}

func (f *fakeCanceller) Refresh(context.Context, rebell.Secret) (*rebell.Token, error) {
	return &rebell.Token{}, nil
}

func (f *fakeCanceller) CancelToken(context.Context, rebell.Secret) error {
	f.calls.Add(1)
	if f.release != nil {
		<-f.release
	}
	return f.err
}

// TestCancelsNeverOpenTheBreaker: failing cancels are not counted, so any
// number of them leaves the breaker closed.
func TestCancelsNeverOpenTheBreaker(t *testing.T) {
	c := newClock()
	g, _ := newGuard(t, 8, c)
	f := &fakeCanceller{err: &rebell.Error{Op: rebell.OpCancelToken, Kind: rebell.KindRetryable, ResultCode: rebell.CodeUnknownException}}
	x := NewExchanger(f, g)
	for range 4 * MinCalls {
		if err := x.CancelToken(context.Background(), rebell.NewSecret("AT")); rebell.ErrorKind(err) != rebell.KindRetryable {
			t.Fatalf("cancel: %v", err)
		}
	}
	if g.State() != Closed || g.InFlight() != 0 {
		t.Fatalf("state %v in flight %d after failing cancels", g.State(), g.InFlight())
	}
	// Nor do successful cancels keep it closed: MinCalls failing refreshes
	// open it whatever the cancels said.
	f.err = nil
	for range 10 {
		if err := x.CancelToken(context.Background(), rebell.NewSecret("AT")); err != nil {
			t.Fatal(err)
		}
	}
	fail(t, g, MinCalls)
	if g.State() != Open {
		t.Fatalf("state %v, want open", g.State())
	}
}

// TestCancelsYield: a cancel is refused while the breaker is open or
// half-open (it is never the probe), when a foreground call waits, and
// beyond the background share; it never waits.
func TestCancelsYield(t *testing.T) {
	c := newClock()
	g, rec := newGuard(t, 4, c)
	f := &fakeCanceller{}
	x := NewExchanger(f, g)

	fail(t, g, MinCalls)
	err := x.CancelToken(context.Background(), rebell.NewSecret("AT"))
	if r := refusal(t, err); r.Reason != ReasonBreakerOpen || r.RetryAfter() != time.Second {
		t.Fatalf("open: %+v", r)
	}
	c.Advance(OpenBase)
	if err := x.CancelToken(context.Background(), rebell.NewSecret("AT")); refusal(t, err).Reason != ReasonBreakerOpen {
		t.Fatalf("half-open: %v", err)
	}
	if g.State() != HalfOpen || f.calls.Load() != 0 {
		t.Fatalf("state %v, %d cancels sent", g.State(), f.calls.Load())
	}
	g.Release(mustAcquire(t, g, false), Success) // the probe closes it

	// Three quarters of 4 slots: the fourth is for requests.
	f.release = make(chan struct{})
	done := make(chan error, 3)
	for range 3 {
		go func() { done <- x.CancelToken(context.Background(), rebell.NewSecret("AT")) }()
	}
	waitFor(t, "three cancels in flight", func() bool { return g.InFlight() == 3 })
	if err := x.CancelToken(context.Background(), rebell.NewSecret("AT")); refusal(t, err).Reason != ReasonNoSlot {
		t.Fatalf("beyond the share: %v", err)
	}
	fg := mustAcquire(t, g, false) // a request still finds its slot
	// A foreground call waiting: cancels are refused.
	waited := make(chan error, 1)
	go func() {
		tk, err := g.Acquire(context.Background(), false)
		if err == nil {
			g.Release(tk, Success)
		}
		waited <- err
	}()
	waitFor(t, "a waiter", func() bool { return waiting(g) == 1 })
	close(f.release)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	g.Release(fg, Success)
	if g.InFlight() != 0 || g.State() != Closed {
		t.Fatalf("in flight %d state %v", g.InFlight(), g.State())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.refused[ReasonNoSlot] != 1 || rec.refused[ReasonBreakerOpen] != 2 {
		t.Errorf("refusals %v", rec.refused)
	}
}

// TestCancelWithoutCanceller: an exchanger that cannot cancel says so.
func TestCancelWithoutCanceller(t *testing.T) {
	g, _ := newGuard(t, 4, newClock())
	x := NewExchanger(plainExchanger{}, g)
	var re *rebell.Error
	if err := x.CancelToken(context.Background(), rebell.NewSecret("AT")); !errors.As(err, &re) || re.Kind != rebell.KindConfiguration {
		t.Fatalf("got %v", err)
	}
}

type plainExchanger struct{}

func (plainExchanger) ExchangeAuthCode(context.Context, rebell.Secret) (*rebell.Token, error) {
	return nil, nil
}
func (plainExchanger) Refresh(context.Context, rebell.Secret) (*rebell.Token, error) { return nil, nil }
