package handler

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/guard"
)

// TestRetryAfterFromError: a 503 whose error says when to try again (the
// circuit breaker's next probe) carries that delay, rounded up to whole
// seconds; others carry the default. The same holds when the error is
// returned to the host (ReturnErrors) instead of written.
func TestRetryAfterFromError(t *testing.T) {
	valid, _ := testIDs.New()
	for _, returned := range []bool{false, true} {
		for _, tc := range []struct {
			after time.Duration
			want  string
		}{
			{12 * time.Second, "12"},
			{1500 * time.Millisecond, "2"},
			{time.Millisecond, "1"},
			{0, retryAfter},
		} {
			e := newEnv(t, func(c *Config) { c.ReturnErrors = returned })
			e.s.getErr = fmt.Errorf("%w: %w", cache.ErrRebellUnavailable, &guard.Refusal{Reason: guard.ReasonBreakerOpen, After: tc.after})
			w, err := e.serve(get("/api", "Authorization", bearer(valid)), &upstream{})
			if returned {
				var he *Error
				if !errors.As(err, &he) || he.Status != 503 || he.Code != "rebell_unavailable" {
					t.Fatalf("returned %v, want a 503 rebell_unavailable", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				wantError(t, w, 503, "rebell_unavailable")
			}
			if got := w.Header().Get("Retry-After"); got != tc.want {
				t.Errorf("returned %v, after %v: Retry-After %q, want %q", returned, tc.after, got, tc.want)
			}
		}
	}
}
