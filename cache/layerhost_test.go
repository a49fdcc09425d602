package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// testHost is the host of a replica layer under test, without a Cache: its
// memory is a map of copies, and it records what the layer asks of it.
type testHost struct {
	s settings
	// back is the layer it hosts, told of confirmed ends.
	back layer

	mu        sync.Mutex
	copies    map[Key]*entry
	ends      []string // reasons, in order
	logins    []string // results reported by the layer, in order
	exchanges int      // exchangeCode calls

	wg sync.WaitGroup
}

var _ host = (*testHost)(nil)

func (h *testHost) held(k Key) *entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.copies[k]
}

func (h *testHost) heldKeys() []Key {
	h.mu.Lock()
	defer h.mu.Unlock()
	var all []Key
	for k := range h.copies {
		all = append(all, k)
	}
	return all
}

func (h *testHost) hold(e *entry, _ *tokenState, _ time.Time) (*entry, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if held := h.copies[e.key]; held != nil {
		return held, nil
	}
	h.copies[e.key] = e
	return e, nil
}

// adopt takes st if it is newer, and wakes the refreshes waiting for it, as
// Cache.adopt does (the memory lifetime it also moves is the map's none).
func (h *testHost) adopt(e *entry, st *tokenState) *tokenState {
	e.mu.Lock()
	defer e.mu.Unlock()
	if st.version > e.state.Load().version {
		e.state.Store(st)
	}
	if e.wake != nil {
		close(e.wake)
		e.wake = nil
	}
	return e.state.Load()
}

func (h *testHost) endSession(e *entry, reason string, level zapcore.Level) bool {
	ended := e.ended.CompareAndSwap(false, true)
	if ended {
		h.dropEnded(e, reason, level)
	}
	return ended
}

func (h *testHost) dropEnded(e *entry, reason string, level zapcore.Level) {
	h.mu.Lock()
	if h.copies[e.key] == e {
		delete(h.copies, e.key)
	}
	h.mu.Unlock()
	h.reportEnd(e, reason, level)
	h.back.confirmedEnd(e.key)
}

func (h *testHost) reportEnd(_ *entry, reason string, _ zapcore.Level) {
	h.mu.Lock()
	h.ends = append(h.ends, reason)
	h.mu.Unlock()
}

// exchangeCode exchanges authCode with the fake Rebell and records the new
// session through the layer.
func (h *testHost) exchangeCode(ctx context.Context, authCode rebell.Secret) (string, *entry, error) {
	h.mu.Lock()
	h.exchanges++
	h.mu.Unlock()
	tok, err := h.s.exch.ExchangeAuthCode(ctx, authCode)
	if err != nil {
		return "", nil, err
	}
	now := h.s.now()
	st, err := loginState(tok, now)
	if err != nil {
		return "", nil, err
	}
	id, k := h.s.ids.New()
	if err := h.back.create(ctx, k, st, now); err != nil {
		return "", nil, err
	}
	e, err := h.hold(newEntry(k, st, now), st, now)
	return id, e, err
}

func (h *testHost) reportLogin(result string) {
	h.mu.Lock()
	h.logins = append(h.logins, result)
	h.mu.Unlock()
}

func (h *testHost) spawn(f func(ctx context.Context)) bool {
	if h.s.ctx.Err() != nil {
		return false
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		f(h.s.ctx)
	}()
	return true
}

func (h *testHost) endReasons() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ends)
}

func (h *testHost) loginResults() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.logins)
}

// layerRig is instances of the replica layer alone, each over its own
// testHost, sharing the fake store, the fake Rebell, the fake clock and
// the session key.
type layerRig struct {
	clock *fakeClock
	srv   *fakeServer
	fake  *fakeExchanger
	hosts []*testHost
	rs    []*replica
}

func newLayerRig(t testing.TB, n int, idle time.Duration) *layerRig {
	t.Helper()
	clock := newFakeClock()
	rig := &layerRig{clock: clock, srv: newFakeServer(clock), fake: newFakeExchanger(clock)}
	ids, err := session.NewIDs([]byte("a session key shared by the instances"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		s := settings{
			exch:           rig.fake,
			pol:            newPolicy(DefaultRefreshAhead, idle),
			idleTimeout:    int64(idle),
			dedupWindow:    time.Minute,
			refreshTimeout: DefaultRefreshTimeout,
			retryCooldown:  DefaultRetryCooldown,
			now:            clock.Now,
			log:            zap.NewNop(),
			ids:            ids,
			ctx:            ctx,
		}
		h := &testHost{s: s, copies: map[Key]*entry{}}
		r := newReplica(s, h, rig.srv.store())
		r.leaseTTL = time.Hour // lease expiry is driven by the fake clock alone
		h.back = r
		r.listen()
		t.Cleanup(func() {
			cancel()
			h.wg.Wait()
			r.close()
		})
		rig.hosts = append(rig.hosts, h)
		rig.rs = append(rig.rs, r)
	}
	return rig
}

// login logs in with code on instance i through the layer.
func (rig *layerRig) login(t testing.TB, i int, code string) (string, *entry) {
	t.Helper()
	id, e, err := rig.rs[i].login(context.Background(), rebell.NewSecret(code))
	if err != nil {
		t.Fatalf("login on %d: %v", i, err)
	}
	return id, e
}

// invalidMisses misses session k on instance i n times, each answered
// ErrSessionInvalid, and returns the store calls they made.
func (rig *layerRig) invalidMisses(t testing.TB, i int, k Key, n int) int64 {
	t.Helper()
	before := rig.srv.calls.Load()
	for range n {
		if _, err := rig.rs[i].miss(k); !errors.Is(err, ErrSessionInvalid) {
			t.Fatalf("miss on %d: %v, want ErrSessionInvalid", i, err)
		}
	}
	return rig.srv.calls.Load() - before
}

// TestLayerMissReadsTheStore: a session created through one instance's
// layer is read from the store by another's on a miss and held by its
// host; an unknown session costs one store call, then none.
func TestLayerMissReadsTheStore(t *testing.T) {
	rig := newLayerRig(t, 2, 0)
	_, e0 := rig.login(t, 0, "code-1")
	if v := rig.srv.version(e0.key); v != 1 {
		t.Fatalf("record version after login = %d, want 1", v)
	}
	e1, err := rig.rs[1].miss(e0.key)
	if err != nil {
		t.Fatal(err)
	}
	g0, g1 := &e0.state.Load().grant, &e1.state.Load().grant
	if e1 == e0 || g1.CustomerID != g0.CustomerID || !g1.AccessToken.Equal(g0.AccessToken) {
		t.Fatal("instance 1 did not read instance 0's session")
	}
	if rig.hosts[1].held(e0.key) != e1 {
		t.Fatal("the copy read is not held by the host")
	}

	_, unknown := session.RandomIDs().New()
	if d := rig.invalidMisses(t, 1, unknown, 3); d != 1 {
		t.Fatalf("three misses of an unknown session made %d store calls, want 1", d)
	}
}

// TestLayerLogoutEndsEveryCopy: a logout through one instance's layer ends
// the session in the store, and the announcement makes the other
// instance's host end its copy, which is then remembered as unknown.
func TestLayerLogoutEndsEveryCopy(t *testing.T) {
	rig := newLayerRig(t, 2, 0)
	_, e0 := rig.login(t, 0, "code-1")
	e1, err := rig.rs[1].miss(e0.key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Instance 0's own copy ends as Cache.Logout ends it, before the layer
	// is called.
	e0.ended.Store(true)
	if err := rig.rs[0].logout(ctx, e0.key, true, e0.state.Load().grant.CustomerID); err != nil {
		t.Fatal(err)
	}
	if rec, err := rig.rs[0].store.Load(ctx, e0.key, time.Time{}, 0); err != nil || rec != nil {
		t.Fatalf("record after logout: %v, %v; want none", rec, err)
	}
	if !e1.ended.Load() || rig.hosts[1].held(e0.key) != nil {
		t.Fatal("instance 1's copy outlived the logout")
	}
	if got := rig.hosts[1].endReasons(); !slices.Equal(got, []string{"ended_elsewhere"}) {
		t.Fatalf("instance 1's ends = %v, want [ended_elsewhere]", got)
	}
	if d := rig.invalidMisses(t, 1, e0.key, 1); d != 0 {
		t.Fatalf("a miss of a session ended here made %d store calls", d)
	}
}

// TestLayerLoginDeduplicated: the same auth code logged in through two
// instances' layers is exchanged once; the second returns the first's
// session and reports "deduplicated".
func TestLayerLoginDeduplicated(t *testing.T) {
	rig := newLayerRig(t, 2, 0)
	id0, e0 := rig.login(t, 0, "code-1")
	id1, e1 := rig.login(t, 1, "code-1")
	if id1 != id0 || e1.key != e0.key {
		t.Fatal("the second login got another session")
	}
	if n := rig.fake.exchanges.Load(); n != 1 {
		t.Fatalf("applyToken exchanges = %d, want 1", n)
	}
	if rig.hosts[1].exchanges != 0 || !slices.Equal(rig.hosts[1].loginResults(), []string{resultDeduplicated}) {
		t.Fatalf("instance 1: %d exchanges, logins %v; want none and [deduplicated]", rig.hosts[1].exchanges, rig.hosts[1].loginResults())
	}
}

// TestLayerIdle: a session unused here for the idle timeout lives on while
// another instance reported a use to the store, and ends everywhere once no
// instance did.
func TestLayerIdle(t *testing.T) {
	const idle = 10 * time.Minute
	rig := newLayerRig(t, 2, idle)
	_, e0 := rig.login(t, 0, "code-1")
	ctx := context.Background()

	rig.clock.Advance(idle / 2)
	// Instance 1 reports a use, as its comparison with the store does.
	if _, err := rig.rs[1].store.Load(ctx, e0.key, rig.clock.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	rig.clock.Advance(idle / 2)
	ok, err := rig.rs[0].idle(ctx, e0, rig.clock.Now().UnixNano())
	if !ok || err != nil || e0.ended.Load() {
		t.Fatalf("idle = %v, %v; want the session kept: another instance used it", ok, err)
	}
	if e0.lastUsed.Load() != rig.clock.Now().Add(-idle/2).UnixNano() {
		t.Fatal("the other instance's use was not taken over")
	}

	rig.clock.Advance(idle)
	ok, err = rig.rs[0].idle(ctx, e0, rig.clock.Now().UnixNano())
	if ok || !errors.Is(err, ErrSessionInvalid) || !e0.ended.Load() {
		t.Fatalf("idle = %v, %v (ended %v); want the session ended", ok, err, e0.ended.Load())
	}
	if got := rig.hosts[0].endReasons(); !slices.Equal(got, []string{"idle"}) {
		t.Fatalf("ends = %v, want [idle]", got)
	}
	if rec, err := rig.rs[0].store.Load(ctx, e0.key, time.Time{}, 0); err != nil || rec != nil {
		t.Fatalf("record after the idle end: %v, %v; want none", rec, err)
	}
}

// TestReconcile drives the one rule that brings a copy and its record
// together (replica.reconcile) through each case: a newer record, the same
// version, a record behind the copy (written over or left), and a missing
// record under each onMissing, on the replica layer alone (layerRig).
func TestReconcile(t *testing.T) {
	ctx := context.Background()
	next := func(cur *tokenState, v uint64) *tokenState {
		return &tokenState{
			grant: Grant{
				CustomerID:        cur.grant.CustomerID,
				AccessToken:       rebell.NewSecret(fmt.Sprintf("access-v%d", v)),
				AccessTokenExpiry: cur.grant.AccessTokenExpiry,
				SessionExpiry:     cur.grant.SessionExpiry,
			},
			refreshToken: rebell.NewSecret(fmt.Sprintf("refresh-v%d", v)),
			version:      v,
			lifetime:     cur.lifetime,
		}
	}
	type setup struct {
		rig *layerRig
		r   *replica
		e   *entry
		k   Key
		cur *tokenState
	}
	start := func(t *testing.T) setup {
		rig := newLayerRig(t, 1, 0)
		_, e := rig.login(t, 0, "code-1")
		if rig.hosts[0].held(e.key) != e {
			t.Fatal("no copy held after login")
		}
		return setup{rig: rig, r: rig.rs[0], e: e, k: e.key, cur: e.state.Load()}
	}
	stored := func(t *testing.T, s setup) *session.Record {
		t.Helper()
		rec, err := s.r.store.Load(ctx, s.k, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}

	t.Run("newer record adopted", func(t *testing.T) {
		s := start(t)
		s.rig.clock.Advance(time.Minute)
		used := s.rig.clock.Now()
		rec := recordOf(next(s.cur, 2), time.Unix(0, s.e.created), used)
		st, err := s.r.reconcile(ctx, s.e, s.cur, rec, endCopy, false)
		if err != nil || st.version != 2 || s.e.state.Load() != st || st.grant.AccessToken.Reveal() != "access-v2" {
			t.Fatalf("got %+v, %v; want version 2 adopted", st, err)
		}
		if s.e.lastUsed.Load() != used.UnixNano() || s.e.checked.Load() != used.UnixNano() {
			t.Fatal("the record's later use, or the comparison, not noted")
		}
	})
	t.Run("same version agrees", func(t *testing.T) {
		s := start(t)
		s.rig.clock.Advance(time.Minute)
		st, err := s.r.reconcile(ctx, s.e, s.cur, stored(t, s), endCopy, false)
		if err != nil || st != s.cur || s.e.checked.Load() != s.rig.clock.Now().UnixNano() {
			t.Fatalf("got %v, %v; want the copy kept and marked compared", st, err)
		}
	})
	for _, writeBack := range []bool{true, false} {
		t.Run(fmt.Sprintf("record behind the copy, writeBack=%v", writeBack), func(t *testing.T) {
			s := start(t)
			v2 := next(s.cur, 2)
			s.e.state.Store(v2) // refreshed here while the store failed
			st, err := s.r.reconcile(ctx, s.e, v2, stored(t, s), endCopy, writeBack)
			if err != nil || st != v2 {
				t.Fatalf("got %v, %v; want the copy kept", st, err)
			}
			want := uint64(1)
			if writeBack {
				want = 2
			}
			rec := stored(t, s)
			if rec.Version != want {
				t.Fatalf("stored version %d, want %d", rec.Version, want)
			}
			if writeBack && rec.RefreshToken.Reveal() != "refresh-v2" {
				t.Fatal("the copy's refresh token was not written back")
			}
		})
	}
	missing := []struct {
		name     string
		rule     onMissing
		lost     bool // the store lost its data since the copy was compared
		endMark  bool // the session was ended (the store keeps its end mark)
		restored bool
		ended    bool
	}{
		{name: "endCopy", rule: endCopy, ended: true},
		{name: "restoreIfLost, not lost", rule: restoreIfLost, ended: true},
		{name: "restoreIfLost, lost", rule: restoreIfLost, lost: true, restored: true},
		{name: "restoreCopy", rule: restoreCopy, restored: true},
		{name: "restoreCopy, ended", rule: restoreCopy, endMark: true, ended: true},
		{name: "keepCopy", rule: keepCopy},
	}
	for _, tc := range missing {
		t.Run("missing record, "+tc.name, func(t *testing.T) {
			s := start(t)
			if tc.endMark {
				s.r.store.(*fakeStore).disconnect() // the end's announcement is lost
				if _, err := s.r.store.End(ctx, s.k, s.cur.grant.CustomerID); err != nil {
					t.Fatal(err)
				}
			} else {
				s.rig.srv.dropSilently(s.k)
			}
			s.rig.clock.Advance(time.Second)
			if tc.lost {
				s.r.lostAt.Store(s.rig.clock.Now().UnixNano())
			}
			st, err := s.r.reconcile(ctx, s.e, s.cur, nil, tc.rule, true)
			if tc.ended {
				if !errors.Is(err, ErrSessionInvalid) || !s.e.ended.Load() {
					t.Fatalf("got %v (ended %v); want the copy ended", err, s.e.ended.Load())
				}
				if rec := stored(t, s); rec != nil {
					t.Fatalf("an ended session's record came back: version %d", rec.Version)
				}
				return
			}
			if err != nil || st != s.cur || s.e.ended.Load() {
				t.Fatalf("got %v, %v (ended %v); want the copy kept", st, err, s.e.ended.Load())
			}
			rec := stored(t, s)
			if tc.restored != (rec != nil) {
				t.Fatalf("record written back: %v, want %v", rec != nil, tc.restored)
			}
		})
	}
}
