package handler

import (
	"fmt"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/guard"
)

// TestRetryAfterFromError: a 503 whose error says when to try again (the
// circuit breaker's next probe) carries that delay, rounded up to whole
// seconds; others carry the default.
func TestRetryAfterFromError(t *testing.T) {
	valid, _ := testIDs.New()
	for _, tc := range []struct {
		after time.Duration
		want  string
	}{
		{12 * time.Second, "12"},
		{1500 * time.Millisecond, "2"},
		{time.Millisecond, "1"},
		{0, retryAfter},
	} {
		e := newEnv(t, nil)
		e.s.getErr = fmt.Errorf("%w: %w", cache.ErrRebellUnavailable, &guard.Refusal{Reason: guard.ReasonBreakerOpen, After: tc.after})
		w, err := e.serve(get("/api", "Authorization", bearer(valid)), &upstream{})
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, w, 503, "rebell_unavailable")
		if got := w.Header().Get("Retry-After"); got != tc.want {
			t.Errorf("after %v: Retry-After %q, want %q", tc.after, got, tc.want)
		}
	}
}
