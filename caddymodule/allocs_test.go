package caddymodule

import (
	"net/http"
	"testing"
)

// TestCachedRequestAllocs holds rebell_auth's whole ServeHTTP for a cached,
// fresh session to the one allocation README.md ("Performance") reports from
// BenchmarkCachedRequest: the injected header values. It runs in test.sh's
// pass without the race detector.
func TestCachedRequestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	a, sid := provisionedAuth(t)
	w := &discardWriter{h: http.Header{}}
	const runs = 1000
	reqs := make([]*http.Request, runs+1) // AllocsPerRun runs once more to warm up
	for i := range reqs {
		reqs[i] = newAPIRequest(w, sid)
	}
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		if err := a.ServeHTTP(w, reqs[i], noopNext); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs > 1 {
		t.Errorf("a cached request through rebell_auth allocates %v times, want at most 1", allocs)
	}
}
