package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// hot sets how many sessions of a harness's memory tier may have an entry.
func hot(n int) func(*Config) { return func(c *Config) { c.HotSessions = int64(n) } }

// TestColdSessionsServeAndEnd: in a tier where only 4 of 40 sessions have
// an entry, every session is served with its own tokens, ended by logout
// or by customer, and counted once.
func TestColdSessionsServeAndEnd(t *testing.T) {
	var thawed atomic.Int64
	h := newHarness(t, hot(4), func(c *Config) { c.OnThawed = func() { thawed.Add(1) } })
	ctx := context.Background()
	keys := make([]Key, 40)
	tokens := make([]string, 40)
	for i := range keys {
		code := fmt.Sprintf("code-%d", i)
		h.fake.customerForCode[code] = fmt.Sprintf("customer-%d", i)
		k, g := h.login(t, code)
		keys[i], tokens[i] = k, g.AccessToken.Reveal()
	}
	if n := h.mem.hotLen(); n > 4 {
		t.Fatalf("%d sessions hot, want at most 4", n)
	}
	for round := range 3 {
		for i, k := range keys {
			g, err := h.Get(ctx, k)
			if err != nil {
				t.Fatalf("round %d, session %d: %v", round, i, err)
			}
			if got := g.AccessToken.Reveal(); got != tokens[i] {
				t.Fatalf("session %d served another token", i)
			}
		}
	}
	if h.Len() != 40 || h.mem.hotLen() > 4 {
		t.Fatalf("Len %d, hot %d", h.Len(), h.mem.hotLen())
	}
	if h.fake.refreshes.Load() != 0 {
		t.Fatal("a fresh session was refreshed")
	}
	// Every Get of the rounds went to a session the 4 before it had pushed
	// out of the hot table.
	if n := thawed.Load(); n != 3*40 {
		t.Fatalf("OnThawed called %d times, want %d", n, 3*40)
	}

	// keys[0] is cold now (the last Gets went to keys 36–39).
	if e := h.mem.get(&keys[0]); e == nil {
		t.Fatal("a cold session is not held")
	}
	cold := keys[1]
	customer := func(k Key) string {
		sh := h.mem.shard(&k)
		sh.mu.RLock()
		defer sh.mu.RUnlock()
		i, ok := sh.s.find(&k)
		if !ok {
			t.Fatal("not held")
		}
		return string(sh.s.customer(i))
	}
	if n, err := h.EndCustomer(ctx, customer(cold)); err != nil || n != 1 {
		t.Fatalf("EndCustomer of a cold session's customer = %d, %v", n, err)
	}
	if _, err := h.Get(ctx, cold); err != ErrSessionInvalid {
		t.Fatalf("ended cold session: %v", err)
	}
	if err := h.Logout(ctx, keys[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Get(ctx, keys[2]); err != ErrSessionInvalid {
		t.Fatalf("logged-out cold session: %v", err)
	}
	if h.Len() != 38 {
		t.Fatalf("Len %d after two ends, want 38", h.Len())
	}
}

// TestFrozenEntryRefreshGoesToCurrent: a request holding an entry the tier
// froze meanwhile refreshes the session through its current entry: one
// call to Rebell, and the new tokens are what the session then serves.
func TestFrozenEntryRefreshGoesToCurrent(t *testing.T) {
	h := newHarness(t, hot(1))
	ctx := context.Background()
	kA, gA := h.login(t, "code-A")
	eA := h.entryOf(t, kA)
	stA := eA.state.Load()
	h.login(t, "code-B") // A's entry is frozen: one hot session
	if !eA.frozen.Load() {
		t.Fatal("the entry of the session used least recently was not frozen")
	}
	h.atAccessExpiry(gA, time.Second) // A must be refreshed
	g, err := h.awaitRefresh(ctx, eA, stA, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if g.AccessToken.Equal(gA.AccessToken) || h.fake.refreshes.Load() != 1 {
		t.Fatalf("refreshes %d; new token %v", h.fake.refreshes.Load(), !g.AccessToken.Equal(gA.AccessToken))
	}
	if eA.state.Load() != stA {
		t.Fatal("a frozen entry's state changed")
	}
	h.settle(t, kA)
	got, err := h.Get(ctx, kA)
	if err != nil || !got.AccessToken.Equal(g.AccessToken) {
		t.Fatalf("after the refresh the session serves another token (%v)", err)
	}
	if h.fake.refreshes.Load() != 1 {
		t.Fatalf("%d refreshes, want 1", h.fake.refreshes.Load())
	}
	// A joinRefresh on the frozen entry starts nothing.
	if call, _ := h.joinRefresh(ctx, eA, stA, h.clock.Now(), false); call != nil {
		t.Fatal("a refresh started on a frozen entry")
	}
}

// TestRefreshedStateSurvivesFreeze: what a session learned while hot (its
// refreshed tokens, its last use, its shortened window) is what it has
// after a freeze and a thaw.
func TestRefreshedStateSurvivesFreeze(t *testing.T) {
	h := newHarness(t, hot(1))
	ctx := context.Background()
	kA, gA := h.login(t, "code-A")
	h.atAccessExpiry(gA, time.Second)
	g1, err := h.Get(ctx, kA)
	if err != nil || g1.AccessToken.Equal(gA.AccessToken) {
		t.Fatalf("refresh: %v", err)
	}
	h.settle(t, kA)
	eA := h.entryOf(t, kA)
	used := eA.lastUsed.Load()
	h.login(t, "code-B")
	if !eA.frozen.Load() {
		t.Fatal("not frozen")
	}
	e := h.entryOf(t, kA)
	if e == eA || e.frozen.Load() {
		t.Fatal("the thawed entry is the frozen one")
	}
	if err := sameSession(e, eA); err != nil {
		t.Fatal(err)
	}
	if e.lastUsed.Load() != used {
		t.Fatal("last use lost")
	}
	g2, err := h.Get(ctx, kA)
	if err != nil || !g2.AccessToken.Equal(g1.AccessToken) {
		t.Fatalf("thawed session serves another token (%v)", err)
	}
}

// TestFreezeSkipsBusyEntries: an entry whose login is handing it out, whose
// refresh runs or whose last refresh failed within its cooldown keeps its
// place; once the cooldown passed, a failed entry is frozen like any other
// (an idle session with an old failure must not stay hot for ever).
func TestFreezeSkipsBusyEntries(t *testing.T) {
	h := newHarness(t, hot(4))
	k, _ := h.login(t, "code-A")
	e := h.entryOf(t, k)
	busy := []struct {
		what string
		set  func()
	}{
		{"pinned", func() { e.pinned.Store(true) }},
		{"refreshing", func() { e.flight.Store(&refreshCall{done: make(chan struct{})}) }},
		{"failed", func() { e.failure.Store(&refreshFailure{until: h.clock.Now().Add(time.Second).UnixNano()}) }},
		{"comparing", func() { e.checking.Store(true) }},
		{"locked", func() { e.mu.Lock() }},
	}
	for _, b := range busy {
		b.set()
		frozen := freeze(h, e)
		if frozen {
			t.Fatalf("a %s entry was frozen", b.what)
		}
	}
	e.mu.Unlock()
	e.pinned.Store(false)
	e.flight.Store(nil)
	e.checking.Store(false)
	h.clock.Advance(time.Second) // the failure's cooldown has passed: no longer busy
	frozen := freeze(h, e)
	if !frozen {
		t.Fatal("an idle entry was not frozen")
	}
}

// freeze freezes e as the memory tier does when it needs room in the hot
// table, and reports whether it did.
func freeze(h *harness, e *entry) bool {
	sh := h.mem.shard(&e.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.freeze(e, h.clock.Now().UnixNano())
}

// TestSweepExpiresColdSessions: sessions without an entry whose record
// lifetime passed are removed by the sweep and reported expired, once.
func TestSweepExpiresColdSessions(t *testing.T) {
	var (
		mu    sync.Mutex
		ended []string
	)
	h := newHarness(t, hot(1), func(c *Config) {
		c.OnSessionEnded = func(r string) { mu.Lock(); ended = append(ended, r); mu.Unlock() }
	})
	var keys []Key
	for _, code := range []string{"code-A", "code-B", "code-C"} {
		k, _ := h.login(t, code)
		keys = append(keys, k)
	}
	h.mem.sweep(time.Now().UnixNano())
	if h.Len() != 3 {
		t.Fatalf("sweep removed live sessions: Len %d", h.Len())
	}
	h.mem.sweep(time.Now().Add(refreshTTL + time.Hour).UnixNano())
	if h.Len() != 0 {
		t.Fatalf("Len %d after the sweep, want 0", h.Len())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ended) != 3 || ended[0] != "expired" || ended[2] != "expired" {
		t.Fatalf("ends %v, want 3 expired", ended)
	}
	for _, k := range keys {
		if _, err := h.Get(context.Background(), k); err != ErrSessionInvalid {
			t.Fatalf("swept session: %v", err)
		}
	}
}

// TestColdVictimRevoked: without a store, a session ended for room while it
// had no entry is cancelled at Rebell with its tokens, like a hot one.
func TestColdVictimRevoked(t *testing.T) {
	var (
		mu      sync.Mutex
		revoked []string
	)
	h := newHarness(t, hot(1), func(c *Config) {
		c.MaxSessions = 3
		c.Revoke = func(_ context.Context, tokens session.Cancel, reason string) {
			mu.Lock()
			revoked = append(revoked, reason+":"+tokens.AccessToken.Reveal())
			mu.Unlock()
		}
	})
	kA, gA := h.login(t, "code-A")
	h.clock.Advance(time.Second)
	kB, gB := h.login(t, "code-B")
	h.clock.Advance(time.Second)
	h.login(t, "code-C") // the one hot session: A and B are cold
	h.clock.Advance(time.Second)
	h.login(t, "code-D") // the least recently used of those sampled makes room
	mu.Lock()
	defer mu.Unlock()
	if len(revoked) != 1 {
		t.Fatalf("%d revoked, want 1", len(revoked))
	}
	// Sampling almost always finds A; B when it misses A (8 samples of 3).
	victim, token := kA, gA.AccessToken
	if _, err := h.Get(context.Background(), kA); err == nil {
		victim, token = kB, gB.AccessToken
	}
	if _, err := h.Get(context.Background(), victim); err != ErrSessionInvalid {
		t.Fatalf("neither cold session was ended for room (%v)", err)
	}
	if revoked[0] != RevokeEvicted+":"+token.Reveal() {
		t.Fatal("the cancel does not carry the ended session's token")
	}
}

// TestSharedWithColdCopies runs the shared store's tests again with one hot
// session per instance: every other copy is frozen into its slot between
// uses, and each use thaws it, so the replica layer's work on a copy
// (comparisons, adopted states, write-backs, ends heard from the store)
// meets frozen entries throughout.
func TestSharedWithColdCopies(t *testing.T) {
	clusterHotSessions = 1
	t.Cleanup(func() { clusterHotSessions = 0 })
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"SessionWorksOnEveryInstance", TestSharedSessionWorksOnEveryInstance},
		{"RefreshStormCallsRebellOnce", TestSharedRefreshStormCallsRebellOnce},
		{"LogoutEndsEverywhere", TestSharedLogoutEndsEverywhere},
		{"RecheckWithoutAnnouncement", TestSharedRecheckWithoutAnnouncement},
		{"StoreDown", TestSharedStoreDown},
		{"RefreshStoredWhileStoreDownIsWrittenBack", TestSharedRefreshStoredWhileStoreDownIsWrittenBack},
		{"LeaseExpiresMidCall", TestSharedLeaseExpiresMidCall},
		{"DeadRefreshTokenEndsEverywhere", TestSharedDeadRefreshTokenEndsEverywhere},
		{"LoginDeduplicatedAcrossInstances", TestSharedLoginDeduplicatedAcrossInstances},
		{"EndCustomer", TestSharedEndCustomer},
		{"IdleTimeoutCountsEveryInstance", TestSharedIdleTimeoutCountsEveryInstance},
		{"StoreLosesLatestVersion", TestSharedStoreLosesLatestVersion},
		{"StoreLosesVersionDuringRefresh", TestSharedStoreLosesVersionDuringRefresh},
		{"MemoryFull", TestSharedMemoryFull},
		{"EndedWhileLoading", TestSharedEndedWhileLoading},
		{"StoreRestartsEmpty", TestSharedStoreRestartsEmpty},
		{"NoWriteBackOfEndedSession", TestSharedNoWriteBackOfEndedSession},
		{"RecordGoneDuringRefresh", TestSharedRecordGoneDuringRefresh},
		{"ShortIdleTimeout", TestSharedShortIdleTimeout},
		{"LeaseRenewedWhileRebellIsSlow", TestSharedLeaseRenewedWhileRebellIsSlow},
		{"EvictionDuringRefreshKeepsSession", TestSharedEvictionDuringRefreshKeepsSession},
		{"AdoptMovesMemoryLifetime", TestSharedAdoptMovesMemoryLifetime},
		{"UnstoredRefreshWrittenBackWhenStoreReturns", TestSharedUnstoredRefreshWrittenBackWhenStoreReturns},
		{"CorruptRecordEndsSession", TestSharedCorruptRecordEndsSession},
		{"UnknownSessionsRemembered", TestSharedUnknownSessionsRemembered},
		{"LoginAfterRememberedSessionEnded", TestSharedLoginAfterRememberedSessionEnded},
		{"DeadRefreshTokenUnconfirmedEnd", TestSharedDeadRefreshTokenUnconfirmedEnd},
	} {
		t.Run(tc.name, tc.f)
	}
}

// BenchmarkGetCold measures Gets spread evenly over 100k sessions of which
// 4096 may have an entry: nearly every Get thaws one and freezes another.
func BenchmarkGetCold(b *testing.B) {
	clock := newFakeClock()
	c, err := New(Config{Exchanger: newFakeExchanger(clock), MaxSessions: 100_000, Now: clock.Now, HotSessions: 4096})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	keys := fillSessions(b, c, 100_000)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			if _, err := c.Get(ctx, keys[r.IntN(len(keys))]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestShardedColdTier: a tier large enough to be split into shards serves
// every session, cold or hot, keeps to its hot table's size, makes room
// across shards, and sweeps them all.
func TestShardedColdTier(t *testing.T) {
	clock := newFakeClock()
	c, err := New(Config{Exchanger: newFakeExchanger(clock), MaxSessions: 5000, Now: clock.Now, HotSessions: 2048})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.mem.shards) != 2 {
		t.Fatalf("%d shards, want 2", len(c.mem.shards))
	}
	keys := fillSessions(t, c, 5000)
	ctx := context.Background()
	for round := range 2 {
		for _, k := range keys {
			if _, err := c.Get(ctx, k); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	if n := c.mem.hotLen(); n > 2048 {
		t.Fatalf("%d hot, want at most 2048", n)
	}
	for j := range c.mem.shards {
		if n := c.mem.shards[j].s.n; n < 2000 {
			t.Fatalf("shard %d holds %d of 5000 sessions", j, n)
		}
	}
	more := fillSessions(t, c, 10) // a full tier: 10 sessions make room
	if c.Len() != 5000 {
		t.Fatalf("Len %d, want 5000", c.Len())
	}
	for _, k := range more {
		if _, err := c.Get(ctx, k); err != nil {
			t.Fatalf("a session just stored: %v", err)
		}
	}
	c.mem.sweep(time.Now().Add(refreshTTL + 24*time.Hour).UnixNano())
	if c.Len() != 0 || c.mem.hotLen() != 0 || c.mem.customers() != 0 {
		t.Fatalf("after the sweep: Len %d, hot %d, customers %d", c.Len(), c.mem.hotLen(), c.mem.customers())
	}
}

// TestUseOfFrozenEntryCounts: a request that used an entry the tier froze
// meanwhile leaves its use in the session: the next request does not find
// the session idle.
func TestUseOfFrozenEntryCounts(t *testing.T) {
	h := newHarness(t, hot(1), func(c *Config) { c.IdleTimeout = 10 * time.Minute })
	ctx := context.Background()
	kA, _ := h.login(t, "code-A")
	eA := h.entryOf(t, kA)
	h.clock.Advance(time.Minute)
	h.login(t, "code-B") // freezes A
	if !eA.frozen.Load() {
		t.Fatal("not frozen")
	}
	h.clock.Advance(9 * time.Minute)
	h.mem.touch(eA, h.clock.Now().UnixNano()) // a request that got eA before the freeze
	h.clock.Advance(2 * time.Minute)          // 12 minutes after the login, 2 after that use
	if _, err := h.Get(ctx, kA); err != nil {
		t.Fatalf("a session used 2 minutes ago: %v", err)
	}
}

func TestHotSessionsNegative(t *testing.T) {
	if _, err := New(Config{Exchanger: newFakeExchanger(newFakeClock()), HotSessions: -1}); err == nil {
		t.Fatal("negative HotSessions accepted")
	}
}
