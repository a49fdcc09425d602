package cache

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/guard"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// guardedFake stands where the gateway puts guard.Exchanger: it records
// whether each call was marked background, and refuses calls as told.
type guardedFake struct {
	next *fakeExchanger

	mu         sync.Mutex
	background []bool
	// refuse, if set, answers a call instead of next.
	refuse func(background bool) error
	// hold, if set, is waited on by background calls before refuse.
	hold chan struct{}
}

func (f *guardedFake) ExchangeAuthCode(ctx context.Context, code rebell.Secret) (*rebell.Token, error) {
	if err := f.admit(ctx); err != nil {
		return nil, err
	}
	return f.next.ExchangeAuthCode(ctx, code)
}

func (f *guardedFake) Refresh(ctx context.Context, rt rebell.Secret) (*rebell.Token, error) {
	if err := f.admit(ctx); err != nil {
		return nil, err
	}
	return f.next.Refresh(ctx, rt)
}

func (f *guardedFake) admit(ctx context.Context) error {
	bg := rebell.IsBackground(ctx)
	f.mu.Lock()
	f.background = append(f.background, bg)
	refuse, hold := f.refuse, f.hold
	f.mu.Unlock()
	if bg && hold != nil {
		<-hold
	}
	if refuse != nil {
		return refuse(bg)
	}
	return nil
}

func newGuardedHarness(t *testing.T) (*harness, *guardedFake) {
	gf := &guardedFake{}
	h := newHarness(t, func(c *Config) {
		gf.next = c.Exchanger.(*fakeExchanger)
		c.Exchanger = gf
	})
	return h, gf
}

func TestRefreshAheadIsMarkedBackground(t *testing.T) {
	h, gf := newGuardedHarness(t)
	k, g := h.login(t, "code-1")
	h.atAccessExpiry(g, -time.Minute) // refresh-ahead window
	mustGet(t, h, k)
	h.settle(t, k)
	g2 := mustGet(t, h, k)
	h.atAccessExpiry(g2, time.Second) // must refresh now
	mustGet(t, h, k)
	gf.mu.Lock()
	defer gf.mu.Unlock()
	// login, refresh-ahead, foreground refresh
	if want := []bool{false, true, false}; !slices.Equal(gf.background, want) {
		t.Fatalf("background marks %v, want %v", gf.background, want)
	}
}

// TestRefusedRefreshIsUnavailableWithRetryAfter: a call the guard refused is
// answered from a valid cached token, else as rebell_unavailable carrying the
// guard's Retry-After; it is not reported as a refresh (it never reached
// Rebell).
func TestRefusedRefreshIsUnavailableWithRetryAfter(t *testing.T) {
	h, gf := newGuardedHarness(t)
	k, g := h.login(t, "code-1")
	gf.refuse = func(bool) error { return &guard.Refusal{Reason: guard.ReasonBreakerOpen, After: 7 * time.Second} }

	h.atAccessExpiry(g, -time.Second) // valid, but past A - m
	if got := mustGet(t, h, k); got != g {
		t.Fatal("valid token not served while the guard refuses")
	}
	h.atAccessExpiry(g, time.Second)
	_, err := h.get(t, k)
	var ra interface{ RetryAfter() time.Duration }
	if !errors.Is(err, ErrRebellUnavailable) || !errors.As(err, &ra) || ra.RetryAfter() != 7*time.Second {
		t.Fatalf("expired token while refused: %v", err)
	}
	if got := h.refreshResults(); len(got) != 0 {
		t.Fatalf("refusals reported as refreshes: %v", got)
	}
	// Logins refused likewise: unavailable, not reported as a login.
	_, _, err = h.Login(context.Background(), rebell.NewSecret("code-2"))
	if !errors.Is(err, ErrRebellUnavailable) || !guard.IsRefusal(err) {
		t.Fatalf("refused login: %v", err)
	}
	if got := h.loginResults(); !slices.Equal(got, []string{"SUCCESS"}) {
		t.Fatalf("login results %v", got)
	}
	// The guard lets calls through again: served at once, no cooldown.
	gf.mu.Lock()
	gf.refuse = nil
	gf.mu.Unlock()
	if got := mustGet(t, h, k); got.AccessToken.Reveal() != "access-2" {
		t.Fatalf("after the guard closed: %q", got.AccessToken.Reveal())
	}
}

// TestRefusedBackgroundRefreshYieldsToRequest: a request that must refresh
// now and finds a refresh-ahead call refused for lack of a slot does not
// answer 503 for it: it makes its own (foreground) call.
func TestRefusedBackgroundRefreshYieldsToRequest(t *testing.T) {
	h, gf := newGuardedHarness(t)
	k, g := h.login(t, "code-1")
	gf.hold = make(chan struct{})
	gf.refuse = func(bg bool) error {
		if bg {
			return &guard.Refusal{Reason: guard.ReasonNoSlot, After: time.Second}
		}
		return nil
	}
	h.atAccessExpiry(g, -time.Minute)
	mustGet(t, h, k) // starts the background call, held
	h.atAccessExpiry(g, time.Second)
	got := make(chan error, 1)
	go func() {
		g2, err := h.Get(context.Background(), k)
		if err == nil && g2.AccessToken.Reveal() != "access-2" {
			err = errors.New("not the refreshed token")
		}
		got <- err
	}()
	close(gf.hold)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("request after the background call was refused: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request still waiting")
	}
	if h.fake.refreshes.Load() != 1 {
		t.Fatalf("%d refresh calls reached Rebell, want 1", h.fake.refreshes.Load())
	}
}
