package cache

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// BenchmarkMemoryTierPreallocation reports the heap a memory tier takes
// before it holds any session, at the default max_sessions of rebell_auth
// (1,000,000). The tier sizes nothing from max_sessions (ristretto's
// admission counters are capped at hotCounters), so this stays well under
// a MiB whatever max_sessions is. README.md ("Token freshness") quotes it.
func BenchmarkMemoryTierPreallocation(b *testing.B) {
	const maxSessions = 1_000_000
	var total float64
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		m, err := newMemoryTier(maxSessions, 0, time.Now, memoryHooks{evicted: func(context.Context, *entry) {}, expired: func(*entry) {}})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		total += float64(after.HeapAlloc - before.HeapAlloc)
		runtime.KeepAlive(m)
		m.close()
		b.StartTimer()
	}
	b.ReportMetric(total/float64(b.N)/(1<<20), "MiB")
}
