package cache

import (
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/session"
	"github.com/rebell-gateway/caddy-rebell/session/storetest"
)

// TestFakeStoreConformance runs the conformance suite that the Redis store
// passes against the fake the cache's tests use, so the fake cannot drift
// from the store it stands for.
func TestFakeStoreConformance(t *testing.T) {
	clock := newFakeClock()
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) session.Store {
			st := newFakeServer(clock).store()
			t.Cleanup(func() { _ = st.Close() })
			return st
		},
		Advance: func(_ *testing.T, d time.Duration) { clock.Advance(d) },
		Now:     clock.Now,
	})
}
