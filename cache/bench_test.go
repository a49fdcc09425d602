package cache

import (
	"context"
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkGet measures a cached request for a fresh session.
func BenchmarkGet(b *testing.B) {
	h := newHarness(b, func(c *Config) { c.MaxSessions = 4096 })
	k, _ := h.login(b, "code-1")
	ctx := context.Background()

	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := h.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel/one-session", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := h.Get(ctx, k); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("parallel/1024-sessions", func(b *testing.B) {
		keys := make([]Key, 1024)
		for i := range keys {
			keys[i], _ = h.login(b, fmt.Sprintf("code-p%d", i))
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := h.Get(ctx, keys[i&1023]); err != nil {
					b.Fatal(err)
				}
				i += 7
			}
		})
	})
}

// BenchmarkGetShared measures a cached request of an instance with a shared
// store, and reports the store calls per request (0: a cached request does
// not ask the store).
func BenchmarkGetShared(b *testing.B) {
	cl := newCluster(b, 2, func(c *Config) { c.MaxSessions = 4096 })
	key, _ := cl.nodes[0].login(b, "code-1")
	h := cl.nodes[1]
	ctx := context.Background()
	if _, err := h.Get(ctx, key); err != nil { // a miss: read from the store
		b.Fatal(err)
	}
	before := cl.srv.calls.Load()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Get(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cl.srv.calls.Load()-before)/float64(b.N), "store-calls/op")
}

// BenchmarkMemoryPerSession stores sessions with realistically sized tokens
// into a tier sized for them and reports the heap they take per session
// (entry, token state, strings, ristretto and the session index), at 100k
// and at 1M sessions. What New allocates before any session is excluded
// (TestLargeMaxSessionsPreallocatesLittle bounds it).
func BenchmarkMemoryPerSession(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchmarkMemoryPerSession(b, n) })
	}
}

func benchmarkMemoryPerSession(b *testing.B, n int) {
	for b.Loop() {
		b.StopTimer()
		h := newHarness(b, func(c *Config) { c.MaxSessions = int64(n); c.LoginDedupWindow = 0 })
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		keys := fillSessions(b, h.Cache, n)
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if h.Len() != n {
			b.Fatalf("Len = %d, want %d", h.Len(), n)
		}
		// The keys fillSessions returns are the benchmark's, not the tier's.
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc-uint64(len(keys))*uint64(len(keys[0])))/float64(n), "bytes/session")
		runtime.KeepAlive(keys)
		h.Close()
		b.StartTimer()
	}
}
