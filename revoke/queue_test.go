package revoke

import (
	"context"
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

// BenchmarkMemoryQueueLease measures leasing (and removing) one due cancel
// from a memory queue holding 10,000: the scan of an outage's backlog.
func BenchmarkMemoryQueueLease(b *testing.B) {
	q := NewMemoryQueue()
	now := time.Now()
	for range 10_000 {
		_ = q.AddCancel(context.Background(), &session.Cancel{Due: now.Add(time.Hour), RefreshTokenExpiry: now.Add(2 * time.Hour)})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := &session.Cancel{Due: now, RefreshTokenExpiry: now.Add(time.Hour)}
		_ = q.AddCancel(context.Background(), c)
		got, _, _ := q.LeaseCancel(context.Background(), now, time.Minute)
		_ = q.RemoveCancel(context.Background(), got.ID)
	}
}
