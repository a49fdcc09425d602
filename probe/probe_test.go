package probe

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/fakeclock"
)

func TestProbeStates(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC))
	var answer atomic.Value // error, or nil; "hang" waits for ctx
	answer.Store(errors.New(""))
	hang := errors.New("hang")
	p := New(Config{
		Interval: time.Second,
		Timeout:  20 * time.Millisecond,
		Now:      clk.Now,
		Check: func(ctx context.Context) error {
			switch err := answer.Load().(error); {
			case err == hang:
				<-ctx.Done()
				return ctx.Err()
			case err.Error() == "":
				return nil
			default:
				return err
			}
		},
	})
	if s := p.State(); s.Up || s.Probed {
		t.Fatalf("before any probe: %+v", s)
	}
	ctx := context.Background()
	p.ProbeOnce(ctx)
	if s := p.State(); !s.Up || !s.Probed || s.Err != nil || !s.LastOK.Equal(clk.Now()) {
		t.Fatalf("after a success: %+v", s)
	}
	okAt := clk.Now()

	// No probe for longer than Stale (3 s + 20 ms): down, though the last
	// probe succeeded.
	clk.Advance(3 * time.Second)
	if s := p.State(); !s.Up {
		t.Fatalf("3 s after a success: %+v", s)
	}
	clk.Advance(time.Second)
	if s := p.State(); s.Up || !errors.Is(s.Err, ErrNoAnswer) || !s.LastOK.Equal(okAt) {
		t.Fatalf("stale: %+v", s)
	}

	answer.Store(hang)
	p.ProbeOnce(ctx)
	if s := p.State(); s.Up || !errors.Is(s.Err, ErrNoAnswer) {
		t.Fatalf("after a probe without an answer: %+v", s)
	}
	refused := errors.New("connection refused")
	answer.Store(refused)
	p.ProbeOnce(ctx)
	if s := p.State(); s.Up || s.Err != refused {
		t.Fatalf("after a failed probe: %+v", s)
	}
	answer.Store(errors.New(""))
	p.ProbeOnce(ctx)
	if s := p.State(); !s.Up {
		t.Fatalf("after a success again: %+v", s)
	}

	// A probe cut short by the caller (Stop) records nothing.
	answer.Store(hang)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	p.ProbeOnce(cctx)
	if s := p.State(); !s.Up {
		t.Fatalf("a canceled probe counted: %+v", s)
	}
}

// TestProbeLoop: Start probes at once and then every Interval; Stop ends the
// loop (waiting for a probe in flight) and is idempotent.
func TestProbeLoop(t *testing.T) {
	calls := make(chan struct{}, 100)
	p := New(Config{Interval: 5 * time.Millisecond, Check: func(ctx context.Context) error {
		calls <- struct{}{}
		return nil
	}})
	p.Start()
	for i := 0; i < 3; i++ {
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("probe %d did not run", i+1)
		}
	}
	if !p.State().Up {
		t.Errorf("state %+v", p.State())
	}
	p.Stop()
	p.Stop()
	select {
	case <-p.done: // the loop has returned: no probe after Stop
	default:
		t.Error("Stop returned before the loop ended")
	}
	New(Config{Check: func(context.Context) error { return nil }}).Stop() // never started
}
