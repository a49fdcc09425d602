package redisstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

var timeZero time.Time

func TestCreateLoad(t *testing.T) {
	_, s, raw := startedStore(t)
	ctx := context.Background()
	ss := newSession("cust-1")

	if rec, err := s.Load(ctx, ss.k, timeZero, 0); rec != nil || err != nil {
		t.Fatalf("Load of nothing: %v %v", rec, err)
	}
	mustCreate(t, s, ss, time.Hour)
	other := newSession("cust-1")
	other.k = ss.k
	if ok, err := s.Create(ctx, ss.k, other.rec, time.Hour); ok || err != nil {
		t.Fatalf("second Create: %v %v, want false", ok, err)
	}

	rec, err := s.Load(ctx, ss.k, timeZero, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, rec, ss.rec) // not overwritten by the second Create
	if !rec.LastUsed.Equal(ss.rec.Created.Truncate(time.Millisecond)) {
		t.Fatalf("LastUsed %v, want Created %v", rec.LastUsed, ss.rec.Created)
	}

	later := ss.rec.Created.Add(time.Minute)
	if rec, err = s.Load(ctx, ss.k, later, 0); err != nil || !rec.LastUsed.Equal(later.Truncate(time.Millisecond)) {
		t.Fatalf("Load(used later): %v %v", rec.LastUsed, err)
	}
	if rec, err = s.Load(ctx, ss.k, ss.rec.Created, 0); err != nil || !rec.LastUsed.Equal(later.Truncate(time.Millisecond)) {
		t.Fatalf("Load(used earlier) lowered LastUsed: %v %v", rec.LastUsed, err)
	}
	if rec, err = s.Load(ctx, ss.k, timeZero, 0); err != nil || !rec.LastUsed.Equal(later.Truncate(time.Millisecond)) {
		t.Fatalf("Load(no use): %v %v", rec.LastUsed, err)
	}
	if pttl := raw.PTTL(ctx, s.keys.record(ss.k)).Val(); pttl <= 59*time.Minute || pttl > time.Hour {
		t.Fatalf("record TTL %v, want ~1h", pttl)
	}
	// A ttl raises a shorter lifetime and never lowers a longer one.
	if _, err := s.Load(ctx, ss.k, later, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if pttl := raw.PTTL(ctx, s.keys.record(ss.k)).Val(); pttl <= 119*time.Minute || pttl > 2*time.Hour {
		t.Fatalf("record TTL after Load(ttl 2h) %v, want ~2h", pttl)
	}
	if _, err := s.Load(ctx, ss.k, later, time.Minute); err != nil {
		t.Fatal(err)
	}
	if pttl := raw.PTTL(ctx, s.keys.record(ss.k)).Val(); pttl <= 119*time.Minute {
		t.Fatalf("Load(ttl 1m) lowered the TTL to %v", pttl)
	}
}

func TestSwapEnd(t *testing.T) {
	_, s, raw := startedStore(t)
	ctx := context.Background()
	ss := newSession("cust-1")
	mustCreate(t, s, ss, time.Hour)
	used := time.Now().Add(time.Second)
	_, _ = s.Load(ctx, ss.k, used, 0)

	next := refreshed(ss.rec)
	if ok, err := s.Swap(ctx, ss.k, "", 2, next, time.Hour); ok || err != nil {
		t.Fatalf("Swap at the wrong version: %v %v", ok, err)
	}
	if ok, err := s.Swap(ctx, ss.k, "", 1, next, 2*time.Hour); !ok || err != nil {
		t.Fatalf("Swap: %v %v", ok, err)
	}
	rec, err := s.Load(ctx, ss.k, timeZero, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, rec, next)
	if !rec.LastUsed.Equal(used.Truncate(time.Millisecond)) {
		t.Fatalf("Swap lost LastUsed: %v", rec.LastUsed)
	}
	if pttl := raw.PTTL(ctx, s.keys.record(ss.k)).Val(); pttl <= time.Hour {
		t.Fatalf("Swap did not set the TTL: %v", pttl)
	}
	if pttl := raw.PTTL(ctx, s.keys.customer("cust-1")).Val(); pttl <= time.Hour {
		t.Fatalf("Swap did not raise the index TTL: %v", pttl)
	}

	if ok, err := s.End(ctx, ss.k, "cust-1"); !ok || err != nil {
		t.Fatalf("End: %v %v", ok, err)
	}
	if rec, err := s.Load(ctx, ss.k, timeZero, 0); rec != nil || err != nil {
		t.Fatalf("Load after End: %v %v", rec, err)
	}
	if ok, err := s.End(ctx, ss.k, "cust-1"); ok || err != nil {
		t.Fatalf("second End: %v %v", ok, err)
	}
	if ok, err := s.Swap(ctx, ss.k, "", 2, refreshed(next), time.Hour); ok || err != nil {
		t.Fatalf("Swap of an ended session: %v %v", ok, err)
	}
	if n := raw.Exists(ctx, s.keys.record(ss.k)).Val(); n != 0 {
		t.Fatal("Swap recreated an ended record")
	}
	if _, err := s.End(ctx, ss.k, ""); err != nil {
		t.Fatal(err)
	}
}

func TestCustomerSessions(t *testing.T) {
	_, s, raw := startedStore(t)
	ctx := context.Background()
	a, b, c := newSession("cust-1"), newSession("cust-1"), newSession("cust-2")
	mustCreate(t, s, a, time.Hour)
	mustCreate(t, s, b, 2*time.Hour)
	mustCreate(t, s, c, time.Hour)
	noCustomer := newSession("")
	mustCreate(t, s, noCustomer, time.Hour)

	got, err := s.CustomerSessions(ctx, "cust-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !slices.Contains(got, a.k) || !slices.Contains(got, b.k) {
		t.Fatalf("cust-1 sessions: %v", got)
	}
	if pttl := raw.PTTL(ctx, s.keys.customer("cust-1")).Val(); pttl <= time.Hour+59*time.Minute {
		t.Fatalf("index TTL %v, want the longest session's (2h)", pttl)
	}
	if _, err := s.End(ctx, a.k, "cust-1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.CustomerSessions(ctx, "cust-1"); len(got) != 1 || got[0] != b.k {
		t.Fatalf("after End: %v", got)
	}
	if got, err := s.CustomerSessions(ctx, "nobody"); len(got) != 0 || err != nil {
		t.Fatalf("unknown customer: %v %v", got, err)
	}
}

func TestLogin(t *testing.T) {
	_, s, _ := startedStore(t)
	ctx := context.Background()
	code := rebell.NewSecret("code-" + time.Now().String())

	claimed, sid, err := s.ClaimLogin(ctx, code, time.Minute)
	if !claimed || sid != "" || err != nil {
		t.Fatalf("first claim: %v %q %v", claimed, sid, err)
	}
	if claimed, sid, err = s.ClaimLogin(ctx, code, time.Minute); claimed || sid != "" || err != nil {
		t.Fatalf("claim in flight: %v %q %v", claimed, sid, err)
	}
	// Forgetting lets the code be claimed again.
	if err := s.FinishLogin(ctx, code, "", 0); err != nil {
		t.Fatal(err)
	}
	if claimed, _, _ = s.ClaimLogin(ctx, code, time.Minute); !claimed {
		t.Fatal("not claimable after FinishLogin(\"\")")
	}
	id, _ := session.RandomIDs().New()
	if err := s.FinishLogin(ctx, code, id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if claimed, sid, err = s.ClaimLogin(ctx, code, time.Minute); claimed || sid != id || err != nil {
		t.Fatalf("claim after finish: %v %v", claimed, err)
	}
	// A late FinishLogin("") of a stale claimer does not forget the result.
	if err := s.FinishLogin(ctx, code, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, sid, _ = s.ClaimLogin(ctx, code, time.Minute); sid != id {
		t.Fatal("FinishLogin(\"\") forgot a finished login")
	}
	// Another code is independent.
	if claimed, _, _ := s.ClaimLogin(ctx, rebell.NewSecret("other"), time.Minute); !claimed {
		t.Fatal("other code not claimable")
	}
}

func TestTamper(t *testing.T) {
	srv := redistest.Start(t)
	key := newKey()
	s, raw := newStore(t, key, srv.Addr), srv.Client(t)
	ctx := context.Background()
	a, b := newSession("cust-1"), newSession("cust-1")
	mustCreate(t, s, a, time.Hour)
	mustCreate(t, s, b, time.Hour)
	ka, kb := s.keys.record(a.k), s.keys.record(b.k)
	d := raw.HGet(ctx, ka, "d").Val()

	corrupt := func(what string, k session.Key) {
		t.Helper()
		rec, err := s.Load(ctx, k, timeZero, 0)
		if !errors.Is(err, session.ErrRecordCorrupt) || rec != nil {
			t.Fatalf("%s: %v %v, want ErrRecordCorrupt", what, rec, err)
		}
		for _, secret := range []string{a.rec.AccessToken.Reveal(), a.rec.RefreshToken.Reveal(), "cust-1", a.id} {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("%s: error reveals a value: %v", what, err)
			}
		}
	}

	flipped := []byte(d)
	flipped[len(flipped)-3] ^= 0x40
	raw.HSet(ctx, ka, "d", string(flipped))
	corrupt("flipped byte", a.k)

	raw.HSet(ctx, ka, "d", d, "v", "2")
	corrupt("changed version", a.k)
	raw.HSet(ctx, ka, "v", "1")
	if _, err := s.Load(ctx, a.k, timeZero, 0); err != nil {
		t.Fatalf("restored: %v", err)
	}

	raw.HSet(ctx, kb, "d", d)
	corrupt("moved to another key", b.k)

	raw.HSet(ctx, ka, "v", "x")
	corrupt("bad version", a.k)

	// A Store with another key cannot open the records.
	c := newStore(t, newKey(), srv.Addr)
	mustCreate(t, s, newSession("cust-9"), time.Hour)
	cs := newSession("cust-9")
	mustCreate(t, s, cs, time.Hour)
	if _, err := c.Load(ctx, cs.k, timeZero, 0); !errors.Is(err, session.ErrRecordCorrupt) {
		t.Fatalf("wrong key: %v", err)
	}
	// Nor can a Store of another realm (merchant) with the same key.
	other := newStoreConfig(t, Config{Addresses: []string{srv.Addr}, EncryptionKey: key, Realm: "another merchant"})
	if _, err := other.Load(ctx, cs.k, timeZero, 0); !errors.Is(err, session.ErrRecordCorrupt) {
		t.Fatalf("other realm: %v", err)
	}
	code := rebell.NewSecret("code-x")
	s.ClaimLogin(ctx, code, time.Minute)
	s.FinishLogin(ctx, code, cs.id, time.Minute)
	// c names the memo differently (index key), so it sees no claim at all.
	if claimed, _, err := c.ClaimLogin(ctx, code, time.Minute); !claimed || err != nil {
		t.Fatalf("other key's claim: %v %v", claimed, err)
	}
	raw.Set(ctx, s.keys.login(code.Reveal()), "garbage-garbage-garbage-garbage", time.Minute)
	if _, _, err := s.ClaimLogin(ctx, code, time.Minute); !errors.Is(err, session.ErrRecordCorrupt) {
		t.Fatalf("tampered memo: %v", err)
	}
}

// TestTTLAndNoPlaintext runs a whole flow, then checks every key of the
// server: each has a TTL, and no key name or value holds a session id,
// token, customer id or auth code.
func TestTTLAndNoPlaintext(t *testing.T) {
	_, s, raw := startedStore(t)
	s.Listen(func(session.Event) {})
	ctx := context.Background()
	var secrets []string
	var sessions []testSession
	for i, cust := range []string{"2188000000004711", "2188000000004711", "2188000000004712"} {
		ss := newSession(cust)
		mustCreate(t, s, ss, time.Duration(i+1)*time.Hour)
		sessions = append(sessions, ss)
		secrets = append(secrets, ss.id, ss.rec.AccessToken.Reveal(), ss.rec.RefreshToken.Reveal())
	}
	secrets = append(secrets, "2188000000004711", "2188000000004712")
	// A refresh in flight and one done.
	if _, res, _ := s.Acquire(ctx, sessions[0].k, 1, time.Minute); res != session.LeaseAcquired {
		t.Fatal(res)
	}
	lease, _, _ := s.Acquire(ctx, sessions[1].k, 1, time.Minute)
	next := refreshed(sessions[1].rec)
	secrets = append(secrets, next.AccessToken.Reveal(), next.RefreshToken.Reveal())
	if ok, _ := s.Swap(ctx, sessions[1].k, lease, 1, next, time.Hour); !ok {
		t.Fatal("swap")
	}
	_, _ = s.Load(ctx, sessions[2].k, time.Now(), 0)
	// Logins: one finished, one in flight.
	for i, code := range []string{"AUTHCODE-finished-0123456789", "AUTHCODE-inflight-0123456789"} {
		secrets = append(secrets, code)
		if claimed, _, err := s.ClaimLogin(ctx, rebell.NewSecret(code), time.Minute); !claimed || err != nil {
			t.Fatal(claimed, err)
		}
		if i == 0 {
			if err := s.FinishLogin(ctx, rebell.NewSecret(code), sessions[0].id, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	}

	keys := allKeys(t, raw)
	for _, k := range keys {
		if pttl := raw.PTTL(ctx, k).Val(); pttl <= 0 {
			t.Errorf("key %q has no TTL (%v)", k, pttl)
		}
		var dump []string
		switch typ := raw.Type(ctx, k).Val(); typ {
		case "hash":
			for f, v := range raw.HGetAll(ctx, k).Val() {
				dump = append(dump, f, v)
			}
		case "set":
			dump = raw.SMembers(ctx, k).Val()
		case "string":
			dump = []string{raw.Get(ctx, k).Val()}
		default:
			t.Errorf("key %q of unexpected type %s", k, typ)
		}
		dump = append(dump, k)
		for _, v := range dump {
			for _, secret := range secrets {
				if strings.Contains(v, secret) {
					t.Errorf("key %q holds a secret in plain text", k)
				}
			}
		}
	}
	// 3 records, 1 lease (the other was released by Swap), 2 indexes, 2
	// memos; and the epoch marker once a Store listened.
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == s.keys.epoch })
	if len(keys) != 8 {
		t.Fatalf("%d keys, want 8: %q", len(keys), keys)
	}
}

func TestLeaseContention(t *testing.T) {
	_, s, raw := startedStore(t)
	ctx := context.Background()
	ss := newSession("cust-1")
	mustCreate(t, s, ss, time.Hour)

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results = map[session.LeaseResult]int{}
		winner  string
	)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, res, err := s.Acquire(ctx, ss.k, 1, time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			results[res]++
			if res == session.LeaseAcquired {
				winner = lease
			}
		}()
	}
	wg.Wait()
	if results[session.LeaseAcquired] != 1 || results[session.LeaseHeld] != 49 || len(winner) != 32 {
		t.Fatalf("results %v, winner %q", results, winner)
	}
	if _, res, _ := s.Acquire(ctx, ss.k, 2, time.Minute); res != session.LeaseStale {
		t.Fatalf("Acquire at another version: %v", res)
	}
	if _, res, _ := s.Acquire(ctx, newSession("").k, 1, time.Minute); res != session.LeaseGone {
		t.Fatalf("Acquire of nothing: %v", res)
	}

	if ok, err := s.Renew(ctx, ss.k, winner, 2*time.Minute); !ok || err != nil {
		t.Fatalf("Renew by the holder: %v %v", ok, err)
	}
	if pttl := raw.PTTL(ctx, s.keys.lease(ss.k)).Val(); pttl <= time.Minute {
		t.Fatalf("Renew did not extend: %v", pttl)
	}
	if ok, err := s.Renew(ctx, ss.k, "bogus", time.Minute); ok || err != nil {
		t.Fatalf("Renew by a stranger: %v %v", ok, err)
	}
	if err := s.Release(ctx, ss.k, "bogus"); err != nil {
		t.Fatal(err)
	}
	if _, res, _ := s.Acquire(ctx, ss.k, 1, time.Minute); res != session.LeaseHeld {
		t.Fatalf("a stranger's Release freed the lease: %v", res)
	}

	v2 := refreshed(ss.rec)
	if ok, _ := s.Swap(ctx, ss.k, winner, 2, v2, time.Hour); ok {
		t.Fatal("Swap with a stale version succeeded")
	}
	// The lease expires mid-call: the version alone fences the write.
	raw.Del(ctx, s.keys.lease(ss.k))
	if ok, err := s.Swap(ctx, ss.k, winner, 1, v2, time.Hour); !ok || err != nil {
		t.Fatalf("Swap after the lease expired: %v %v", ok, err)
	}
	if ok, _ := s.Renew(ctx, ss.k, winner, time.Minute); ok {
		t.Fatal("Renew of an expired lease")
	}

	// Holder A's lease expires; B acquires at v2 and swaps to v3, then
	// acquires again for v3. A's late Swap from v1... and from v2 fail and
	// leave B's lease alone.
	leaseA, res, _ := s.Acquire(ctx, ss.k, 2, time.Minute)
	if res != session.LeaseAcquired {
		t.Fatal(res)
	}
	raw.PExpire(ctx, s.keys.lease(ss.k), time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); raw.Exists(ctx, s.keys.lease(ss.k)).Val() == 1; {
		if time.Now().After(deadline) {
			t.Fatalf("lease still there 10s after PEXPIRE 1ms: PTTL %v", raw.PTTL(ctx, s.keys.lease(ss.k)).Val())
		}
		time.Sleep(time.Millisecond)
	}
	leaseB, res, _ := s.Acquire(ctx, ss.k, 2, time.Minute)
	if res != session.LeaseAcquired {
		t.Fatal(res)
	}
	v3 := refreshed(v2)
	if ok, _ := s.Swap(ctx, ss.k, leaseB, 2, v3, time.Hour); !ok {
		t.Fatal("B's Swap failed")
	}
	if raw.Exists(ctx, s.keys.lease(ss.k)).Val() != 0 {
		t.Fatal("Swap did not release the holder's lease")
	}
	leaseB2, res, _ := s.Acquire(ctx, ss.k, 3, time.Minute)
	if res != session.LeaseAcquired {
		t.Fatal(res)
	}
	if ok, _ := s.Swap(ctx, ss.k, leaseA, 2, refreshed(v2), time.Hour); ok {
		t.Fatal("A's late Swap succeeded")
	}
	if err := s.Release(ctx, ss.k, leaseA); err != nil {
		t.Fatal(err)
	}
	if got := raw.Get(ctx, s.keys.lease(ss.k)).Val(); got != leaseB2 {
		t.Fatal("A's late Swap or Release took B's lease")
	}
	rec, _ := s.Load(ctx, ss.k, timeZero, 0)
	sameRecord(t, rec, v3)
	if err := s.Release(ctx, ss.k, leaseB2); err != nil {
		t.Fatal(err)
	}
	if raw.Exists(ctx, s.keys.lease(ss.k)).Val() != 0 {
		t.Fatal("Release by the holder kept the lease")
	}
	// End removes the lease too.
	if _, res, _ := s.Acquire(ctx, ss.k, 3, time.Minute); res != session.LeaseAcquired {
		t.Fatal(res)
	}
	s.End(ctx, ss.k, "cust-1")
	if n := raw.Exists(ctx, s.keys.lease(ss.k), s.keys.record(ss.k)).Val(); n != 0 {
		t.Fatal("End left keys")
	}
}

// roundTrips counts what a client sends: one per command, one per pipeline.
type roundTrips struct {
	mu sync.Mutex
	n  int
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.mu.Lock()
		r.n++
		r.mu.Unlock()
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.mu.Lock()
		r.n++
		r.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (r *roundTrips) take() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.n
	r.n = 0
	return n
}

// TestRoundTrips reports the round trips (and server commands) of a login
// and a refresh, once the scripts are cached on the server.
func TestRoundTrips(t *testing.T) {
	srv, s, _ := startedStore(t)
	ctx := context.Background()
	rt := &roundTrips{}
	s.client.AddHook(rt)

	type cost struct {
		trips, commands int
		names           []string
	}
	flow := func(ss testSession, code rebell.Secret) map[string]cost {
		steps := map[string]cost{}
		step := func(name string, f func()) {
			before := srv.CommandStats(t)
			rt.take()
			f()
			c := cost{trips: rt.take()}
			for cmd, n := range srv.CommandStats(t) {
				if d := n - before[cmd]; d > 0 && cmd != "info" {
					c.names = append(c.names, cmd)
					c.commands += int(d)
				}
			}
			slices.Sort(c.names)
			steps[name] = c
		}
		step("login", func() {
			if claimed, _, err := s.ClaimLogin(ctx, code, time.Minute); !claimed || err != nil {
				t.Fatal(claimed, err)
			}
			mustCreate(t, s, ss, time.Hour)
			if err := s.FinishLogin(ctx, code, ss.id, time.Minute); err != nil {
				t.Fatal(err)
			}
		})
		step("create", func() { mustCreate(t, s, newSession("c"), time.Hour) })
		step("load", func() {
			if _, err := s.Load(ctx, ss.k, time.Now(), 0); err != nil {
				t.Fatal(err)
			}
		})
		step("refresh", func() {
			lease, res, err := s.Acquire(ctx, ss.k, 1, time.Minute)
			if res != session.LeaseAcquired || err != nil {
				t.Fatal(res, err)
			}
			if ok, err := s.Swap(ctx, ss.k, lease, 1, refreshed(ss.rec), time.Hour); !ok || err != nil {
				t.Fatal(ok, err)
			}
		})
		step("end", func() { s.End(ctx, ss.k, ss.rec.CustomerID) })
		return steps
	}
	flow(newSession("c"), rebell.NewSecret("warm-up")) // loads the scripts
	steps := flow(newSession("c"), rebell.NewSecret("code"))
	for _, name := range []string{"login", "create", "load", "refresh", "end"} {
		c := steps[name]
		t.Logf("%-8s %d round trips, %2d server commands (%s)", name, c.trips, c.commands, strings.Join(c.names, " "))
	}
	// An end takes two: the index removal waits for the end script
	// (TestFailedEndKeepsIndexEntry).
	for name, want := range map[string]int{"login": 3, "create": 1, "load": 1, "refresh": 2, "end": 2} {
		if steps[name].trips != want {
			t.Errorf("%s: %d round trips, want %d", name, steps[name].trips, want)
		}
	}
}

// TestEndMark: an ended session cannot be created again (written back after
// a data loss) while its end mark lives; the mark expires.
func TestEndMark(t *testing.T) {
	_, s, raw := startedStore(t)
	ctx := context.Background()
	ss := newSession("cust-1")
	mustCreate(t, s, ss, time.Hour)
	if _, err := s.End(ctx, ss.k, "cust-1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Create(ctx, ss.k, ss.rec, time.Hour); ok || err != nil {
		t.Fatalf("Create after End: %v %v, want false", ok, err)
	}
	pttl := raw.PTTL(ctx, s.keys.ended(ss.k)).Val()
	if pttl <= session.EndMarkLifetime-time.Minute || pttl > session.EndMarkLifetime {
		t.Fatalf("end mark TTL %v, want ~%v", pttl, session.EndMarkLifetime)
	}
	// End of a session that has no record marks it too.
	other := newSession("cust-1")
	if ok, err := s.End(ctx, other.k, ""); ok || err != nil {
		t.Fatalf("End without a record: %v %v", ok, err)
	}
	if ok, _ := s.Create(ctx, other.k, other.rec, time.Hour); ok {
		t.Fatal("Create after End without a record succeeded")
	}
	raw.Del(ctx, s.keys.ended(ss.k)) // as when the mark expires
	if ok, err := s.Create(ctx, ss.k, ss.rec, time.Hour); !ok || err != nil {
		t.Fatalf("Create after the mark expired: %v %v", ok, err)
	}
}

// A customer index that cannot be updated does not turn a stored record (or
// an ended session) into an error: the record's write decides.
func TestIndexFailureDoesNotFailTheWrite(t *testing.T) {
	_, s, c := startedStore(t)
	ctx := context.Background()
	ss := newSession("cust-broken")
	// The index key holds a string: SADD and SREM answer WRONGTYPE.
	if err := c.Set(ctx, s.keys.customer("cust-broken"), "x", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	ok, err := s.Create(ctx, ss.k, ss.rec, time.Hour)
	if err != nil || !ok {
		t.Fatalf("Create with a broken index: %v %v", ok, err)
	}
	next := refreshed(ss.rec)
	if ok, err := s.Swap(ctx, ss.k, "", 1, next, time.Hour); err != nil || !ok {
		t.Fatalf("Swap with a broken index: %v %v", ok, err)
	}
	got, err := s.Load(ctx, ss.k, timeZero, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, got, next)
	if ended, err := s.End(ctx, ss.k, "cust-broken"); err != nil || !ended {
		t.Fatalf("End with a broken index: %v %v", ended, err)
	}
	if got, err := s.Load(ctx, ss.k, timeZero, 0); err != nil || got != nil {
		t.Fatalf("after End: %v %v", got, err)
	}
}

// TestWrongTypeIsCorrupt: a session key overwritten with another type is a
// corrupt record for every operation that reads it, not trouble with Redis.
func TestWrongTypeIsCorrupt(t *testing.T) {
	srv := redistest.Start(t)
	s, raw := newStore(t, newKey(), srv.Addr), srv.Client(t)
	ctx := context.Background()
	a := newSession("cust-1")
	mustCreate(t, s, a, time.Hour)
	name := s.keys.record(a.k)
	raw.Del(ctx, name)
	raw.Set(ctx, name, "x", time.Hour)

	if _, err := s.Load(ctx, a.k, timeZero, 0); !errors.Is(err, session.ErrRecordCorrupt) {
		t.Fatalf("Load: %v, want ErrRecordCorrupt", err)
	}
	if _, _, err := s.Acquire(ctx, a.k, 1, time.Second); !errors.Is(err, session.ErrRecordCorrupt) {
		t.Fatalf("Acquire: %v, want ErrRecordCorrupt", err)
	}
	if _, err := s.Swap(ctx, a.k, "", 1, refreshed(a.rec), time.Hour); !errors.Is(err, session.ErrRecordCorrupt) {
		t.Fatalf("Swap: %v, want ErrRecordCorrupt", err)
	}
	if s.health.down.Load() {
		t.Fatal("a key of the wrong type counted as Redis being down")
	}
	// End deletes it, whatever its type.
	if ok, err := s.End(ctx, a.k, a.rec.CustomerID); !ok || err != nil {
		t.Fatalf("End: %v %v", ok, err)
	}
	if rec, err := s.Load(ctx, a.k, timeZero, 0); rec != nil || err != nil {
		t.Fatalf("Load after End: %v %v", rec, err)
	}
}
