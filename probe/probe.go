// Package probe checks a dependency in the background, at a steady pace, so
// that a readiness endpoint answers from the last result and never calls the
// dependency per request (docs/operations.md, "Readiness").
package probe

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultInterval = time.Second
	DefaultTimeout  = 500 * time.Millisecond
)

// Config configures a Prober.
type Config struct {
	// Check is the probe, e.g. a store's PING. It must return when ctx
	// ends.
	Check func(ctx context.Context) error
	// Interval is the time between the start of one probe and the next (0
	// means DefaultInterval).
	Interval time.Duration
	// Timeout bounds one probe (0 means DefaultTimeout): a probe without an
	// answer within it fails.
	Timeout time.Duration
	// Stale is how old the last success may be before the dependency counts
	// as down even while a probe is still waiting (a hung dependency);
	// 0 means three Intervals plus Timeout.
	Stale time.Duration
	// Now is the clock (nil means time.Now).
	Now func() time.Time
}

// State is what the probes found.
type State struct {
	// Up is true when the last probe succeeded and is not older than
	// Config.Stale.
	Up bool
	// Probed is false until the first probe has finished.
	Probed bool
	// LastOK is when a probe last succeeded (zero if none did).
	LastOK time.Time
	// Err is the last probe's error, nil after a success.
	Err error
}

// Prober runs Check every Interval until Stop. It is safe for concurrent
// use.
type Prober struct {
	cfg  Config
	stop context.CancelFunc
	done chan struct{}

	mu     sync.Mutex
	probed bool
	lastOK time.Time
	err    error
}

// ErrNoAnswer is the error of a probe that got no answer within Timeout, or
// of a state whose last success is older than Stale.
var ErrNoAnswer = errors.New("no answer within the probe's timeout")

// New returns a Prober that has not started; Start starts it.
func New(cfg Config) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Stale <= 0 {
		cfg.Stale = 3*cfg.Interval + cfg.Timeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Prober{cfg: cfg, done: make(chan struct{})}
}

// Start runs the first probe at once and then one every Interval, in a
// goroutine of its own, until Stop.
func (p *Prober) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.cfg.Interval)
		defer t.Stop()
		for {
			p.ProbeOnce(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the probes and waits for the one running, if any. It is
// idempotent, and does nothing for a Prober never started.
func (p *Prober) Stop() {
	if p.stop == nil {
		return
	}
	p.stop()
	<-p.done
}

// ProbeOnce runs one probe now and records its result. The background loop
// calls it; tests may too.
func (p *Prober) ProbeOnce(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	err := p.cfg.Check(cctx)
	timedOut := cctx.Err() == context.DeadlineExceeded
	cancel()
	if ctx.Err() != nil {
		return // stopping: the result says nothing about the dependency
	}
	if err != nil && timedOut {
		err = ErrNoAnswer
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probed = true
	p.err = err
	if err == nil {
		p.lastOK = p.cfg.Now()
	}
}

// State returns what the probes found, as of now.
func (p *Prober) State() State {
	p.mu.Lock()
	s := State{Probed: p.probed, LastOK: p.lastOK, Err: p.err}
	p.mu.Unlock()
	s.Up = s.Probed && s.Err == nil
	if s.Up && p.cfg.Now().Sub(s.LastOK) > p.cfg.Stale {
		s.Up, s.Err = false, ErrNoAnswer
	}
	return s
}
