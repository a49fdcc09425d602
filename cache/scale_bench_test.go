package cache

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// BenchmarkScale measures the memory tier as it fills: with 1k, 100k and 1M
// sessions resident, two readers each do request-like work in a loop (a Get
// of a random resident session, an 8 KiB allocation, about 117 µs of CPU)
// while the benchmark records what the resident sessions cost. Sessions are
// drawn evenly from all those resident: at 1M most have no entry (the hot
// table holds 65,536), so most Gets make one. A last case keeps the 1M
// sessions resident and draws from 50,000 of them, the active users.
// It reports:
//
//   - bytes/session: heap taken per resident session (as
//     BenchmarkMemoryPerSession);
//   - get-p50-ns, get-p99-ns: the Get alone;
//   - op-p50-us, op-p99-us: the whole request-like operation;
//   - ops/s: operations of both readers per second of wall time;
//   - gc-cpu-%: the GC's share of the CPU the process used (runtime/metrics
//     /cpu/classes/gc/total over total minus idle);
//   - mark-cpu-ms/cycle: CPU the mark phase took per GC cycle (assists,
//     dedicated and idle workers);
//   - gc-cycles/s.
//
// Each size runs for scaleMinWindow, then until a collection ends (at most
// scaleMaxWindow), whatever b.N is: with 1M sessions a collection comes only
// after the readers allocated about the resident heap. Run it once:
//
//	go test -run - -bench Scale -benchtime 1x ./cache/
//
// (about 3 minutes). ns/op is wall time per operation of one reader.
// README.md ("Token freshness") quotes its results.
func BenchmarkScale(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		benchmarkScale(b, n)
	}
}

func benchmarkScale(b *testing.B, n int) {
	clock := newFakeClock()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	// The wall clock, not the fake one: which sessions the tier keeps
	// entries for is decided by their last use, which a stopped clock
	// would make the same for all.
	c, err := New(Config{Exchanger: newFakeExchanger(clock), MaxSessions: int64(n)})
	if err != nil {
		b.Fatal(err)
	}
	keys := fillSessions(b, c, n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	perSession := float64(after.HeapAlloc-before.HeapAlloc-uint64(len(keys))*uint64(len(keys[0]))) / float64(n)
	spin := calibrateSpin(117 * time.Microsecond)

	b.Run(fmt.Sprint(n), func(b *testing.B) { measureScale(b, c, keys, perSession, spin) })
	if n >= 20*scaleActive {
		// The same tier, with requests for scaleActive of its sessions
		// only: the active users of a day, beside sessions that log in once
		// a month. Each is used once before the window, so that it has an
		// entry, as an active user's session has.
		active := keys[:scaleActive]
		for _, k := range active {
			if _, err := c.Get(context.Background(), k); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("%d/active-%d", n, scaleActive), func(b *testing.B) { measureScale(b, c, active, perSession, spin) })
	}
	c.Close()
	runtime.KeepAlive(keys)
}

// scaleActive is how many sessions the readers of BenchmarkScale's
// active-users case use.
const scaleActive = 50_000

// measureScale runs BenchmarkScale's readers over keys of c and reports.
func measureScale(b *testing.B, c *Cache, keys []Key, perSession float64, spin spinWork) {
	n := len(keys)
	const readers = 2
	var (
		lat  [readers][2][]time.Duration // per reader: Get, whole operation
		stop atomic.Bool
		wg   sync.WaitGroup
	)
	// The window starts at the end of a collection and ends at the end
	// of a later one, so the GC's share covers whole cycles.
	runtime.GC()
	gc0 := readGCMetrics()
	start := time.Now()
	b.ResetTimer()
	for r := range readers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(r), uint64(n)))
			ctx := context.Background()
			for !stop.Load() {
				k := keys[rnd.IntN(len(keys))]
				t0 := time.Now()
				if _, err := c.Get(ctx, k); err != nil {
					b.Error(err)
					return
				}
				t1 := time.Now()
				scaleSink[r] = make([]byte, 8<<10) // what a request allocates
				spin.run()
				t2 := time.Now()
				lat[r][0] = append(lat[r][0], t1.Sub(t0))
				lat[r][1] = append(lat[r][1], t2.Sub(t0))
			}
		})
	}
	for {
		time.Sleep(10 * time.Millisecond)
		took := time.Since(start)
		if took >= scaleMaxWindow || took >= scaleMinWindow && readGCMetrics().cycles > gc0.cycles {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	b.StopTimer()
	wall := time.Since(start)
	gc1 := readGCMetrics()
	var gets, ops []time.Duration
	for r := range lat {
		gets = append(gets, lat[r][0]...)
		ops = append(ops, lat[r][1]...)
	}
	slices.Sort(gets)
	slices.Sort(ops)
	b.ReportMetric(perSession, "bytes/session")
	b.ReportMetric(float64(pct(gets, 0.50).Nanoseconds()), "get-p50-ns")
	b.ReportMetric(float64(pct(gets, 0.99).Nanoseconds()), "get-p99-ns")
	b.ReportMetric(float64(pct(ops, 0.50).Microseconds()), "op-p50-us")
	b.ReportMetric(float64(pct(ops, 0.99).Microseconds()), "op-p99-us")
	b.ReportMetric(float64(len(ops))/wall.Seconds(), "ops/s")
	b.ReportMetric(float64(wall.Nanoseconds())/float64(len(ops)), "ns/op")
	used := (gc1.total - gc1.idle) - (gc0.total - gc0.idle)
	if used > 0 {
		b.ReportMetric(100*(gc1.gc-gc0.gc)/used, "gc-cpu-%")
	}
	cycles := gc1.cycles - gc0.cycles
	if cycles > 0 {
		b.ReportMetric(1e3*(gc1.mark-gc0.mark)/float64(cycles), "mark-cpu-ms/cycle")
	}
	b.ReportMetric(float64(cycles)/wall.Seconds(), "gc-cycles/s")
}

// The measured window of BenchmarkScale.
const (
	scaleMinWindow = 10 * time.Second
	scaleMaxWindow = 2 * time.Minute
)

// scaleSink keeps BenchmarkScale's allocations from being optimised away.
var scaleSink [2][]byte

// fillSessions stores n sessions with realistically sized tokens and
// returns their keys. Sizes: Rebell documents ≤128 for tokens and ≤64 for
// customerId; 64/64/20 is a plausible middle. The strings are made here, so
// that a measurement of the heap counts them.
func fillSessions(b testing.TB, c *Cache, n int) []Key {
	now := c.now()
	keys := make([]Key, n)
	for i := range n {
		st, err := loginState(&rebell.Token{
			CustomerID:         fmt.Sprintf("2188%016d", i),
			AccessToken:        rebell.NewSecret(fmt.Sprintf("%064d", i)),
			AccessTokenExpiry:  now.Add(accessTTL),
			RefreshToken:       rebell.NewSecret(fmt.Sprintf("r%063d", i)),
			RefreshTokenExpiry: now.Add(refreshTTL),
		}, now)
		if err != nil {
			b.Fatal(err)
		}
		_, e, err := c.storeNew(context.Background(), st, now, nil)
		if err != nil {
			b.Fatal(err)
		}
		e.pinned.Store(false)
		keys[i] = e.key
	}
	return keys
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// spinWork is a fixed amount of CPU: rounds of SHA-256 over 1 KiB.
type spinWork struct{ rounds int }

var spinBuf [1 << 10]byte

func (s spinWork) run() {
	var sum [32]byte
	for range s.rounds {
		sum = sha256.Sum256(spinBuf[:])
		spinBuf[0] = sum[0]
	}
}

// calibrateSpin finds how many rounds take about d on this machine (the
// fastest of a few tries, so a busy moment does not inflate it).
func calibrateSpin(d time.Duration) spinWork {
	probe := spinWork{rounds: 1000}
	best := time.Duration(1<<63 - 1)
	for range 5 {
		t := time.Now()
		probe.run()
		best = min(best, time.Since(t))
	}
	return spinWork{rounds: max(1, int(float64(probe.rounds)*float64(d)/float64(best)))}
}

type gcMetrics struct {
	gc, mark, total, idle float64
	cycles                uint64
}

func readGCMetrics() gcMetrics {
	s := []metrics.Sample{
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/cpu/classes/gc/mark/assist:cpu-seconds"},
		{Name: "/cpu/classes/gc/mark/dedicated:cpu-seconds"},
		{Name: "/cpu/classes/gc/mark/idle:cpu-seconds"},
		{Name: "/cpu/classes/total:cpu-seconds"},
		{Name: "/cpu/classes/idle:cpu-seconds"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	metrics.Read(s)
	return gcMetrics{
		gc:     s[0].Value.Float64(),
		mark:   s[1].Value.Float64() + s[2].Value.Float64() + s[3].Value.Float64(),
		total:  s[4].Value.Float64(),
		idle:   s[5].Value.Float64(),
		cycles: s[6].Value.Uint64(),
	}
}
