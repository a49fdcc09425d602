package revoke

import (
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/session"
	"github.com/rebell-gateway/caddy-rebell/session/storetest"
)

// TestMemoryQueueConformance runs the pending-cancel part of the store
// conformance suite against the memory queue.
func TestMemoryQueueConformance(t *testing.T) {
	storetest.RunCancels(t, storetest.CancelsHarness{
		New: func(*testing.T) session.PendingCancels { return NewMemoryQueue() },
		Now: time.Now,
	})
}
