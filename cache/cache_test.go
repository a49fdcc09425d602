package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

func TestNewValidatesConfig(t *testing.T) {
	fake := newFakeExchanger(newFakeClock())
	for name, cfg := range map[string]Config{
		"no exchanger":           {},
		"negative max sessions":  {Exchanger: fake, MaxSessions: -1},
		"huge max sessions":      {Exchanger: fake, MaxSessions: 1 << 62},
		"negative refresh ahead": {Exchanger: fake, RefreshAhead: -time.Second},
		"negative idle":          {Exchanger: fake, IdleTimeout: -time.Second},
		"negative dedup":         {Exchanger: fake, LoginDedupWindow: -time.Second},
		"negative timeout":       {Exchanger: fake, RefreshTimeout: -time.Second},
		"negative cooldown":      {Exchanger: fake, RetryCooldown: -time.Second},
	} {
		if c, err := New(cfg); err == nil {
			c.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}

	c, err := New(Config{Exchanger: fake, MaxSessions: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.pol.refreshAhead != DefaultRefreshAhead || c.pol.grace != time.Hour ||
		c.refreshTimeout != DefaultRefreshTimeout || c.retryCooldown != DefaultRetryCooldown || c.dedupWindow != 0 {
		t.Errorf("defaults not applied: %+v", c.pol)
	}
	if p := newPolicy(8*time.Second, 10*time.Minute); p.grace != 10*time.Minute {
		t.Errorf("policy(8s, 10m) = %+v, want grace=10m", p)
	}
}

func TestGetFreshSession(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	if g.CustomerID != "customer-1" || g.AccessToken.Reveal() != "access-1" ||
		!g.AccessTokenExpiry.Equal(t0.Add(accessTTL)) || !g.SessionExpiry.Equal(t0.Add(refreshTTL)) {
		t.Fatalf("grant = %+v", g)
	}
	h.clock.Advance(accessTTL - DefaultRefreshAhead - time.Second)
	if got := mustGet(t, h, k); got != g {
		t.Fatalf("Get returned another grant")
	}
	if n := h.fake.refreshes.Load(); n != 0 {
		t.Fatalf("%d refreshes for a fresh session", n)
	}
	if h.Len() != 1 {
		t.Fatalf("Len = %d", h.Len())
	}
}

func TestGetUnknownSession(t *testing.T) {
	h := newHarness(t)
	k, _ := h.login(t, "code-1")

	_, other := session.RandomIDs().New()
	if _, err := h.get(t, other); err != ErrSessionInvalid {
		t.Fatalf("unknown session: %v", err)
	}
	// Same ristretto key (first 8 bytes), different session: a miss.
	twin := k
	twin[31] ^= 1
	if _, err := h.get(t, twin); err != ErrSessionInvalid {
		t.Fatalf("key mismatch: %v", err)
	}
	mustGet(t, h, k)
}

func TestGetDoesNotAllocate(t *testing.T) {
	h := newHarness(t)
	k, _ := h.login(t, "code-1")
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := h.Get(ctx, k); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Get allocates %v times per call", allocs)
	}
}

func TestReauthAfterRefreshExpiryThenInvalidAfterGrace(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")

	h.clock.Set(g.SessionExpiry)
	for range 2 { // every request in the grace hears reauth, not invalid
		if _, err := h.get(t, k); err != ErrReauthRequired {
			t.Fatalf("at R: %v, want ErrReauthRequired", err)
		}
	}
	h.clock.Set(g.SessionExpiry.Add(time.Hour - time.Nanosecond))
	if _, err := h.get(t, k); err != ErrReauthRequired {
		t.Fatalf("just before R+grace: %v", err)
	}
	if n := h.fake.refreshes.Load(); n != 0 {
		t.Fatalf("Rebell called %d times past R", n)
	}
	h.clock.Set(g.SessionExpiry.Add(time.Hour))
	if _, err := h.get(t, k); err != ErrSessionInvalid {
		t.Fatalf("at R+grace: %v, want ErrSessionInvalid", err)
	}
	if h.Len() != 0 {
		t.Fatalf("Len = %d after the record expired", h.Len())
	}
}

func TestRecordLifetime(t *testing.T) {
	for _, tc := range []struct {
		idle, grace time.Duration
	}{{0, time.Hour}, {10 * time.Minute, 10 * time.Minute}, {2 * time.Hour, time.Hour}} {
		h := newHarness(t, func(c *Config) { c.IdleTimeout = tc.idle })
		k, g := h.login(t, "code-1")
		// The memory lifetime runs on the wall clock from the write.
		ttl, ok := h.mem.lifetime(&k)
		want := g.SessionExpiry.Add(tc.grace).Sub(t0)
		if !ok || ttl > want || ttl < want-time.Minute {
			t.Fatalf("idle %v: TTL %v, want %v (R + grace)", tc.idle, ttl, want)
		}

		// A refresh that moves R moves the record's lifetime with it.
		for range 3 { // 27m: a background refresh, without going idle
			h.clock.Advance(9 * time.Minute)
			mustGet(t, h, k)
		}
		h.settle(t, k)
		g2 := mustGet(t, h, k)
		if !g2.SessionExpiry.After(g.SessionExpiry) {
			t.Fatal("refresh did not move R")
		}
		ttl, ok = h.mem.lifetime(&k)
		want = g2.SessionExpiry.Add(tc.grace).Sub(h.clock.Now())
		if !ok || ttl > want || ttl < want-time.Minute {
			t.Fatalf("idle %v: TTL after refresh %v, want %v", tc.idle, ttl, want)
		}
	}
}

func TestClassify(t *testing.T) {
	p := newPolicy(5*time.Minute, 0)
	a := t0.Add(time.Hour)
	r := t0.Add(2 * time.Hour)
	st := &tokenState{grant: Grant{AccessTokenExpiry: a, SessionExpiry: r}}
	for _, tc := range []struct {
		now  time.Time
		want freshness
	}{
		{t0, fresh},
		{a.Add(-5*time.Minute - 1), fresh},
		{a.Add(-5 * time.Minute), refreshAhead},
		{a.Add(-10*time.Second - 1), refreshAhead},
		{a.Add(-10 * time.Second), mustRefresh},
		{a, mustRefresh},
		{r.Add(-1), mustRefresh},
		{r, reauth},
		{r.Add(time.Hour - 1), reauth},
		{r.Add(time.Hour), gone},
	} {
		if got := p.classify(st, tc.now); got != tc.want {
			t.Errorf("classify at A%+v = %d, want %d", tc.now.Sub(a), got, tc.want)
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.IdleTimeout = 10 * time.Minute })
	k, _ := h.login(t, "code-1")

	h.clock.Advance(9 * time.Minute)
	mustGet(t, h, k) // lastUsed = t0+9m
	h.clock.Advance(10*time.Minute - time.Nanosecond)
	mustGet(t, h, k) // 1ns short of idle
	h.clock.Advance(10 * time.Minute)
	if _, err := h.get(t, k); err != ErrSessionInvalid {
		t.Fatalf("idle session: %v", err)
	}
	if _, err := h.get(t, k); err != ErrSessionInvalid {
		t.Fatalf("after idle end: %v", err)
	}
	if h.Len() != 0 {
		t.Fatalf("Len = %d", h.Len())
	}
}

func TestLastUsedIsWrittenAtMostOncePerSecond(t *testing.T) {
	h := newHarness(t)
	k, _ := h.login(t, "code-1")
	e := h.entryOf(t, k)
	last := func() time.Duration { return time.Duration(e.lastUsed.Load() - t0.UnixNano()) }

	for _, step := range []struct {
		advance time.Duration
		want    time.Duration
	}{
		{500 * time.Millisecond, 0},                 // < 1s since the last write: not written
		{499 * time.Millisecond, 0},                 // 999ms
		{1 * time.Millisecond, time.Second},         // 1s: written
		{900 * time.Millisecond, time.Second},       // 1.9s
		{100 * time.Millisecond, 2 * time.Second},   // 2s: written
		{time.Minute, time.Minute + 2*time.Second},  // long gap: written
		{-time.Minute, time.Minute + 2*time.Second}, // the clock going back never rewinds it
	} {
		h.clock.Advance(step.advance)
		mustGet(t, h, k)
		if got := last(); got != step.want {
			t.Fatalf("after advancing %v: lastUsed = t0+%v, want t0+%v", step.advance, got, step.want)
		}
	}
}

func TestLogoutIsIdempotent(t *testing.T) {
	h := newHarness(t)
	k, _ := h.login(t, "code-1")
	ctx := context.Background()
	for range 2 {
		if err := h.Logout(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	_, unknown := session.RandomIDs().New()
	if err := h.Logout(ctx, unknown); err != nil {
		t.Fatal(err)
	}
	if _, err := h.get(t, k); err != ErrSessionInvalid {
		t.Fatalf("after logout: %v", err)
	}
	if h.Len() != 0 {
		t.Fatalf("Len = %d", h.Len())
	}
}

func TestLogoutMarksHeldEntryEnded(t *testing.T) {
	h := newHarness(t)
	k, _ := h.login(t, "code-1")
	e := h.entryOf(t, k)
	if err := h.Logout(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	if !e.ended.Load() {
		t.Fatal("entry not marked ended")
	}
}

func TestEndCustomer(t *testing.T) {
	var counts []int
	var mu sync.Mutex
	h := newHarness(t, func(c *Config) {
		c.OnSessionsChanged = func(n int) {
			mu.Lock()
			counts = append(counts, n)
			mu.Unlock()
		}
	})
	h.fake.customerForCode["b"] = "customer-2"
	var keysA []Key
	for _, code := range []string{"a1", "a2", "a3"} {
		k, _ := h.login(t, code)
		keysA = append(keysA, k)
	}
	kb, _ := h.login(t, "b")

	ctx := context.Background()
	n, err := h.EndCustomer(ctx, "customer-1")
	if err != nil || n != 3 {
		t.Fatalf("EndCustomer = %d, %v; want 3", n, err)
	}
	for _, k := range keysA {
		if _, err := h.get(t, k); err != ErrSessionInvalid {
			t.Fatalf("ended customer's session: %v", err)
		}
	}
	mustGet(t, h, kb)
	if h.Len() != 1 {
		t.Fatalf("Len = %d, want 1", h.Len())
	}
	if n, _ := h.EndCustomer(ctx, "customer-1"); n != 0 {
		t.Fatalf("second EndCustomer = %d", n)
	}
	if n, _ := h.EndCustomer(ctx, "nobody"); n != 0 {
		t.Fatalf("EndCustomer(unknown) = %d", n)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []int{1, 2, 3, 4, 3, 2, 1}
	if len(counts) != len(want) {
		t.Fatalf("OnSessionsChanged got %v, want %v", counts, want)
	}
	for i := range want {
		if counts[i] != want[i] {
			t.Fatalf("OnSessionsChanged got %v, want %v", counts, want)
		}
	}
	if n := h.mem.customers(); n != 1 {
		t.Fatalf("customer index holds %d customers, want 1", n)
	}
}

// TestFullTierEndsLeastRecentlyUsed: logins into a full memory tier all
// succeed, each spends its auth code once, the tier never holds more than
// MaxSessions, and the sessions ended for room are those used least
// recently, never one just created.
func TestFullTierEndsLeastRecentlyUsed(t *testing.T) {
	const max = 20
	var ends []string
	var mu sync.Mutex
	logs := observe(t)
	h := newHarness(t, func(c *Config) {
		c.MaxSessions = max
		c.LoginDedupWindow = 0
		c.Logger = logs.logger
		c.OnSessionEnded = func(reason string) {
			mu.Lock()
			ends = append(ends, reason)
			mu.Unlock()
		}
	})
	// A working set used on every round, and a stream of one-off logins.
	var hot []Key
	for i := range max / 2 {
		k, _ := h.login(t, fmt.Sprintf("hot-%d", i))
		hot = append(hot, k)
	}
	var last Key
	for i := range 200 {
		h.clock.Advance(time.Second)
		for _, k := range hot {
			_, _ = h.get(t, k)
		}
		k, _ := h.login(t, fmt.Sprintf("code-%d", i))
		mustGet(t, h, k) // never the session just created
		last = k
		if n := h.Len(); n > max {
			t.Fatalf("tier holds %d sessions, max %d", n, max)
		}
	}
	if n := h.fake.exchanges.Load(); n != max/2+200 {
		t.Fatalf("%d exchanges for %d logins", n, max/2+200)
	}
	if got := h.loginResults(); slices.ContainsFunc(got, func(r string) bool { return r != "SUCCESS" }) {
		t.Fatalf("login results %v", got)
	}
	// Sampling approximates LRU: nearly all of the working set survives.
	lost := 0
	for _, k := range hot {
		if _, err := h.get(t, k); err != nil {
			lost++
		}
	}
	if lost > 2 {
		t.Fatalf("%d of %d sessions in constant use were ended for room", lost, len(hot))
	}
	mustGet(t, h, last)
	mu.Lock()
	evicted := len(ends)
	for _, r := range ends {
		if r != "evicted" {
			t.Fatalf("end reasons %v", ends)
		}
	}
	mu.Unlock()
	if evicted != max/2+200-h.Len() {
		t.Fatalf("%d ends reported, %d sessions logged in, %d held", evicted, max/2+200, h.Len())
	}
	// INFO per session, one WARN for the minute (the clock moved 200 s: 4).
	if n := logs.count("rebell session ended"); n != evicted {
		t.Fatalf("%d INFO lines for %d evictions", n, evicted)
	}
	if n := logs.count("rebell memory tier full (max_sessions): sessions used least recently ended to make room"); n < 3 || n > 5 {
		t.Fatalf("%d WARN lines over 200 s of evictions", n)
	}
}

// TestActiveSessionOutlivesNewcomers: a session used since newer sessions
// arrived is never the one ended for room, even when all of it happens within
// a second (the resolution at which a busy session's last use is otherwise
// recorded).
func TestActiveSessionOutlivesNewcomers(t *testing.T) {
	const max = 50
	h := newHarness(t, func(c *Config) { c.MaxSessions = max; c.LoginDedupWindow = 0 })
	first, _ := h.login(t, "first")
	for i := range 3 * max {
		h.clock.Advance(time.Millisecond)
		h.login(t, fmt.Sprintf("code-%d", i))
		h.clock.Advance(time.Millisecond)
		if _, err := h.get(t, first); err != nil {
			t.Fatalf("after login %d: the session used after every login: %v", i+1, err)
		}
		if n := h.Len(); n > max {
			t.Fatalf("tier holds %d sessions, max %d", n, max)
		}
	}
}

// TestRistrettoDropsEndNothing: whatever ristretto drops (a refused or
// dropped write, an eviction of its own), the session stays held and is
// served.
func TestRistrettoDropsEndNothing(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	e := h.entryOf(t, k)
	h.mem.rc.Del(hashKey(&k)) // as if ristretto had dropped or evicted it
	h.mem.rc.Wait()
	if got := mustGet(t, h, k); got != g {
		t.Fatal("session not served after ristretto dropped it")
	}
	if e.ended.Load() || h.Len() != 1 {
		t.Fatalf("ended %v, Len %d", e.ended.Load(), h.Len())
	}
	h.mem.rc.Wait()
	if got, ok := h.mem.rc.Get(hashKey(&k)); !ok || got != e {
		t.Fatal("session not put back into ristretto")
	}
}

func TestCloseIsIdempotentAndSafeWithGet(t *testing.T) {
	h := newHarness(t)
	k, _ := h.login(t, "code-1")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := h.get(t, k); err != nil && err != ErrStoreUnavailable {
					t.Errorf("Get during Close: %v", err)
					return
				}
			}
		})
	}
	h.Close()
	h.Close()
	close(stop)
	waitGroup(t, &wg, "Gets racing Close")
	if _, err := h.get(t, k); err != ErrStoreUnavailable {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, _, err := h.Login(context.Background(), rebell.NewSecret("code-2")); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("Login after Close: %v", err)
	}
	if err := h.Logout(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	if h.Len() != 0 {
		t.Fatalf("Len after Close = %d", h.Len())
	}
}

func TestExpiredHook(t *testing.T) {
	h := newHarness(t)
	k1, _ := h.login(t, "code-1")
	e1 := h.entryOf(t, k1)
	e1.until.Store(time.Now().UnixNano()) // its record lifetime passed
	h.mem.sweep(time.Now().UnixNano())
	h.mem.sweep(time.Now().UnixNano())
	if !e1.ended.Load() {
		t.Fatal("hook did not mark the entry ended")
	}
	if h.Len() != 0 || h.mem.customers() != 0 {
		t.Fatalf("Len %d, %d customers indexed after the sweep", h.Len(), h.mem.customers())
	}
	if _, err := h.get(t, k1); err != ErrSessionInvalid {
		t.Fatalf("expired session: %v", err)
	}
}

// TestLargeMaxSessionsPreallocatesLittle: the memory tier grows with the
// sessions it holds, not with MaxSessions.
func TestLargeMaxSessionsPreallocatesLittle(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c, err := New(Config{Exchanger: newFakeExchanger(newFakeClock()), MaxSessions: 10_000_000})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 4<<20 {
		t.Fatalf("an empty cache for 10M sessions holds %d KiB", grown>>10)
	}
}

// TestConcurrentLoginsIntoAFullTier: more logins at once than the tier
// holds all succeed: a session is not ended for room while its login hands
// it out.
func TestConcurrentLoginsIntoAFullTier(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxSessions = 2; c.LoginDedupWindow = 0 })
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 20 {
				if _, _, err := h.Login(context.Background(), rebell.NewSecret(fmt.Sprintf("code-%d-%d", i, j))); err != nil {
					t.Errorf("Login into a full tier: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := h.Len(); n > 2+16 {
		t.Fatalf("tier holds %d sessions", n)
	}
}
