package cache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

type requestKey struct{}
type carriedKey struct{}

// carryRecorder records, for every call toward Rebell, what Config.Carry
// put into the call's context, and whether the call is background work.
type carryRecorder struct {
	next rebell.TokenExchanger
	mu   sync.Mutex
	seen []string
}

func (r *carryRecorder) note(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, fmt.Sprintf("%v background=%v", ctx.Value(carriedKey{}), rebell.IsBackground(ctx)))
}

func (r *carryRecorder) ExchangeAuthCode(ctx context.Context, code rebell.Secret) (*rebell.Token, error) {
	r.note(ctx)
	return r.next.ExchangeAuthCode(ctx, code)
}

func (r *carryRecorder) Refresh(ctx context.Context, rt rebell.Secret) (*rebell.Token, error) {
	r.note(ctx)
	return r.next.Refresh(ctx, rt)
}

// TestCarry: a login (deduplicated, so run in the cache's goroutine), a
// refresh-ahead and a refresh a request waits for each run with what
// Config.Carry kept of the request that started them, told whether the
// request waits (the gateway's tracing span travels this way).
func TestCarry(t *testing.T) {
	rec := &carryRecorder{}
	h := newHarness(t, func(cfg *Config) {
		rec.next = cfg.Exchanger
		cfg.Exchanger = rec
		cfg.Carry = func(from, work context.Context, background bool) context.Context {
			return context.WithValue(work, carriedKey{}, fmt.Sprintf("%v/%v", from.Value(requestKey{}), background))
		}
	})
	req := func(name string) context.Context { return context.WithValue(context.Background(), requestKey{}, name) }
	id, g, err := h.Login(req("login"), rebell.NewSecret("code-carry"))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := h.ParseSessionID(id)
	h.atAccessExpiry(g, -DefaultRefreshAhead+time.Second) // in the refresh-ahead window
	if _, err := h.Get(req("ahead"), k); err != nil {
		t.Fatal(err)
	}
	h.settle(t, k)
	g = mustGet(t, h, k)
	h.atAccessExpiry(g, time.Second) // past A: the request waits for the refresh
	if _, err := h.Get(req("must"), k); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []string{"login/false background=false", "ahead/true background=true", "must/false background=false"}
	if fmt.Sprint(rec.seen) != fmt.Sprint(want) {
		t.Errorf("calls saw %q, want %q", rec.seen, want)
	}
}
