package revoke

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rebell-gateway/caddy-rebell/guard"
	"github.com/rebell-gateway/caddy-rebell/internal/fakeclock"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeRebell answers cancels and refreshes from a script.
type fakeRebell struct {
	mu        sync.Mutex
	cancels   []string // access tokens, in order
	refreshes []string // refresh tokens, in order
	cancelErr func(at string) error
	refresh   func(rt string) (*rebell.Token, error)
}

func (f *fakeRebell) CancelToken(_ context.Context, at rebell.Secret) error {
	f.mu.Lock()
	f.cancels = append(f.cancels, at.Reveal())
	fn := f.cancelErr
	f.mu.Unlock()
	if fn != nil {
		return fn(at.Reveal())
	}
	return nil
}

func (f *fakeRebell) ExchangeAuthCode(context.Context, rebell.Secret) (*rebell.Token, error) {
	return nil, errors.New("not here")
}

func (f *fakeRebell) Refresh(_ context.Context, rt rebell.Secret) (*rebell.Token, error) {
	f.mu.Lock()
	f.refreshes = append(f.refreshes, rt.Reveal())
	fn := f.refresh
	f.mu.Unlock()
	if fn == nil {
		return nil, &rebell.Error{Kind: rebell.KindRetryable}
	}
	return fn(rt.Reveal())
}

func (f *fakeRebell) calls() ([]string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cancels...), append([]string(nil), f.refreshes...)
}

type env struct {
	clock   *fakeclock.Clock
	rebell  *fakeRebell
	r       *Revoker
	logs    *observer.ObservedLogs
	results map[string]int
	pending atomic.Int64
	mu      sync.Mutex
}

func newEnv(t *testing.T, queue session.PendingCancels) *env {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	e := &env{clock: fakeclock.New(t0), rebell: &fakeRebell{}, logs: logs, results: map[string]int{}}
	r, err := New(Config{
		Queue: queue, Canceller: e.rebell, Refresher: e.rebell, Now: e.clock.Now, Logger: zap.New(core),
		OnResult: func(res string) {
			e.mu.Lock()
			e.results[res]++
			e.mu.Unlock()
		},
		OnPending: func(n int) { e.pending.Store(int64(n)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	e.r = r
	return e
}

func (e *env) tokens(n int) session.Cancel {
	now := e.clock.Now()
	return session.Cancel{
		AccessToken:        rebell.NewSecret(fmt.Sprintf("AT%d", n)),
		AccessTokenExpiry:  now.Add(15 * time.Minute),
		RefreshToken:       rebell.NewSecret(fmt.Sprintf("RT%d", n)),
		RefreshTokenExpiry: now.Add(24 * time.Hour),
	}
}

func (e *env) result(res string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.results[res]
}

func (e *env) wantCancels(t *testing.T, want ...string) {
	t.Helper()
	got, _ := e.rebell.calls()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("cancels %v, want %v", got, want)
	}
}

// TestCancelConfirmed: one call, removed, one INFO line without the token.
func TestCancelConfirmed(t *testing.T) {
	e := newEnv(t, nil)
	e.r.Enqueue(context.Background(), e.tokens(1), "logout")
	e.wantCancels(t) // nothing before the worker runs
	e.r.Drain(context.Background())
	e.r.Drain(context.Background())
	e.wantCancels(t, "AT1")
	if e.pending.Load() != 0 || e.result(rebell.CodeSuccess) != 1 {
		t.Fatalf("pending %d results %v", e.pending.Load(), e.results)
	}
	infos := e.logs.FilterMessage("rebell authorization cancelled").All()
	if len(infos) != 1 || infos[0].ContextMap()["end"] != "logout" {
		t.Fatalf("INFO lines %v", infos)
	}
	for _, l := range e.logs.All() {
		if s := fmt.Sprint(l.Message, l.ContextMap()); containsAny(s, "AT1", "RT1") {
			t.Fatalf("a log line holds a token: %s", s)
		}
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		for i := 0; i+len(sub) <= len(s); i++ {
			if s[i:i+len(sub)] == sub {
				return true
			}
		}
	}
	return false
}

// TestBackoffIsCappedAndUsesTheClock: retryable failures back off on the
// injected clock, doubling up to 30 s, until Rebell answers.
func TestBackoffIsCappedAndUsesTheClock(t *testing.T) {
	e := newEnv(t, nil)
	var down atomic.Bool
	down.Store(true)
	e.rebell.cancelErr = func(string) error {
		if down.Load() {
			return &rebell.Error{Op: rebell.OpCancelToken, Kind: rebell.KindRetryable, Err: errors.New("connection refused")}
		}
		return nil
	}
	e.r.Enqueue(context.Background(), e.tokens(1), "logout")
	calls := func() int { c, _ := e.rebell.calls(); return len(c) }
	e.r.Drain(context.Background())
	if calls() != 1 || e.pending.Load() != 1 {
		t.Fatalf("calls %d pending %d", calls(), e.pending.Load())
	}
	// The n-th wait lies in [d/2, d] with d = 1s·2^(n-1), capped at 30 s.
	for n := 1; n <= 8; n++ {
		d := min(time.Second<<(n-1), 30*time.Second)
		e.clock.Advance(d/2 - time.Millisecond)
		e.r.Drain(context.Background())
		if calls() != n {
			t.Fatalf("try %d came before half its backoff %v", n+1, d)
		}
		e.clock.Advance(d/2 + time.Millisecond)
		e.r.Drain(context.Background())
		if calls() != n+1 {
			t.Fatalf("try %d did not come within its backoff %v", n+1, d)
		}
	}
	down.Store(false)
	e.clock.Advance(30 * time.Second)
	e.r.Drain(context.Background())
	if calls() != 10 || e.pending.Load() != 0 || e.result("transport_error") != 9 || e.result(rebell.CodeSuccess) != 1 {
		t.Fatalf("calls %d pending %d results %v", calls(), e.pending.Load(), e.results)
	}
}

// TestRefreshFirst: an expired access token is refreshed first, the new
// one cancelled; a refresh token Rebell says is dead leaves nothing to do.
func TestRefreshFirst(t *testing.T) {
	e := newEnv(t, nil)
	e.rebell.refresh = func(rt string) (*rebell.Token, error) {
		if rt == "RT2" {
			return nil, &rebell.Error{Kind: rebell.KindRefreshTokenDead, ResultCode: rebell.CodeInvalidRefreshToken}
		}
		now := e.clock.Now()
		return &rebell.Token{AccessToken: rebell.NewSecret("NEW-" + rt), AccessTokenExpiry: now.Add(time.Hour),
			RefreshToken: rebell.NewSecret("NEWRT"), RefreshTokenExpiry: now.Add(48 * time.Hour)}, nil
	}
	e.r.Enqueue(context.Background(), e.tokens(1), "logout")
	e.r.Enqueue(context.Background(), e.tokens(2), "customer")
	e.clock.Advance(16 * time.Minute) // both access tokens expired
	e.r.Drain(context.Background())
	cancels, refreshes := e.rebell.calls()
	if fmt.Sprint(cancels) != "[NEW-RT1]" || len(refreshes) != 2 {
		t.Fatalf("cancels %v refreshes %v", cancels, refreshes)
	}
	if e.pending.Load() != 0 || len(e.logs.FilterMessage("rebell authorization cancelled: nothing was left to cancel").All()) != 1 {
		t.Fatalf("pending %d", e.pending.Load())
	}

	// Rebell's clock says expired while ours does not: refresh, cancel.
	e.rebell.cancelErr = func(at string) error {
		if at == "AT3" {
			return &rebell.Error{Kind: rebell.KindNothingToCancel, ResultStatus: "F", ResultCode: rebell.CodeExpiredAccessToken}
		}
		return nil
	}
	e.r.Enqueue(context.Background(), e.tokens(3), "logout")
	e.r.Drain(context.Background())
	cancels, _ = e.rebell.calls()
	if fmt.Sprint(cancels[1:]) != "[AT3 NEW-RT3]" {
		t.Fatalf("cancels %v", cancels)
	}
	// INVALID_ACCESS_TOKEN: nothing left, no refresh.
	e.rebell.cancelErr = func(string) error {
		return &rebell.Error{Kind: rebell.KindNothingToCancel, ResultStatus: "F", ResultCode: rebell.CodeInvalidAccessToken}
	}
	e.r.Enqueue(context.Background(), e.tokens(4), "logout")
	e.r.Drain(context.Background())
	if _, refreshes := e.rebell.calls(); len(refreshes) != 3 || e.pending.Load() != 0 {
		t.Fatalf("refreshes %v pending %d", refreshes, e.pending.Load())
	}
}

// TestGiveUp: a final failure and tokens expiring while Rebell is down are
// given up with a WARN; tokens expired already are not queued.
func TestGiveUp(t *testing.T) {
	e := newEnv(t, nil)
	e.rebell.cancelErr = func(at string) error {
		if at == "AT1" {
			return &rebell.Error{Kind: rebell.KindConfiguration, ResultStatus: "F", ResultCode: rebell.CodeAccessDenied}
		}
		return &rebell.Error{Kind: rebell.KindRetryable, ResultStatus: "U", ResultCode: rebell.CodeUnknownException}
	}
	e.r.Enqueue(context.Background(), e.tokens(1), "logout")
	short := e.tokens(2)
	short.RefreshTokenExpiry = e.clock.Now().Add(20 * time.Minute)
	e.r.Enqueue(context.Background(), short, "evicted")
	gone := e.tokens(3)
	gone.AccessTokenExpiry, gone.RefreshTokenExpiry = e.clock.Now(), e.clock.Now()
	e.r.Enqueue(context.Background(), gone, "logout")
	e.r.Drain(context.Background())
	if e.pending.Load() != 1 {
		t.Fatalf("pending %d", e.pending.Load())
	}
	for range 60 {
		e.clock.Advance(30 * time.Second)
		e.r.Drain(context.Background())
	}
	warns := e.logs.FilterLevelExact(zap.WarnLevel).All()
	if len(warns) != 2 || e.result(ResultGivenUp) != 2 || e.pending.Load() != 0 {
		t.Fatalf("warns %v results %v pending %d", warns, e.results, e.pending.Load())
	}
	if c, _ := e.rebell.calls(); containsAny(fmt.Sprint(c), "AT3") {
		t.Fatal("an expired token was sent")
	}
}

// TestRefusalWaitsForRetryAfter: a guard refusal sends nothing and is
// tried again after its Retry-After.
func TestRefusalWaitsForRetryAfter(t *testing.T) {
	e := newEnv(t, nil)
	var refuse atomic.Bool
	refuse.Store(true)
	e.rebell.cancelErr = func(string) error {
		if refuse.Load() {
			return &guard.Refusal{Reason: guard.ReasonBreakerOpen, After: 20 * time.Second}
		}
		return nil
	}
	e.r.Enqueue(context.Background(), e.tokens(1), "logout")
	e.r.Drain(context.Background())
	refuse.Store(false)
	e.clock.Advance(19 * time.Second)
	e.r.Drain(context.Background())
	e.clock.Advance(time.Second)
	e.r.Drain(context.Background())
	if e.result(ResultRefused) != 1 || e.result(rebell.CodeSuccess) != 1 {
		t.Fatalf("results %v", e.results)
	}
}

// failingQueue is a durable queue that is down.
type failingQueue struct{ *MemoryQueue }

func (failingQueue) AddCancel(context.Context, *session.Cancel) error {
	return errors.New("store down")
}

// TestStoreDownKeepsInMemory: a cancel the store cannot take is kept in
// memory and still made.
func TestStoreDownKeepsInMemory(t *testing.T) {
	e := newEnv(t, failingQueue{NewMemoryQueue()})
	e.r.Enqueue(context.Background(), e.tokens(1), "logout")
	e.r.Drain(context.Background())
	e.wantCancels(t, "AT1")
	if len(e.logs.FilterMessageSnippet("memory only").All()) != 1 {
		t.Fatal("no WARN for the fallback")
	}
}

// TestSharedQueueOneCaller: two Revokers on one queue, the first cut
// short mid-call (its instance stops): it puts the cancel back and the
// second finishes it when it is due.
func TestSharedQueueOneCaller(t *testing.T) {
	q := NewMemoryQueue()
	a, b := newEnv(t, q), newEnv(t, q)
	b.clock = a.clock
	b.r.now = a.clock.Now
	a.r.Enqueue(context.Background(), a.tokens(1), "logout")
	// a takes it and stops before an answer: the call is cut short.
	ctx, cancel := context.WithCancel(context.Background())
	a.rebell.cancelErr = func(string) error { cancel(); return &rebell.Error{Kind: rebell.KindRetryable, Err: context.Canceled} }
	a.r.Drain(ctx)
	a.r.Close()
	// b finds it due after a's backoff.
	b.r.Drain(context.Background())
	a.clock.Advance(time.Second)
	b.r.Drain(context.Background())
	b.wantCancels(t, "AT1")
	if n, _ := q.CountCancels(context.Background()); n != 0 {
		t.Fatalf("%d pending", n)
	}
}

// TestQueueRace: many Revokers and producers on one queue: every cancel
// is made exactly once (run with -race).
func TestQueueRace(t *testing.T) {
	q := NewMemoryQueue()
	const workers, perProducer, producers = 4, 50, 4
	var mu sync.Mutex
	seen := map[string]int{}
	envs := make([]*env, workers)
	for i := range envs {
		envs[i] = newEnv(t, q)
		envs[i].rebell.cancelErr = func(at string) error {
			mu.Lock()
			seen[at]++
			mu.Unlock()
			return nil
		}
	}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				envs[p%workers].r.Enqueue(context.Background(), envs[0].tokens(p*1000+i), "logout")
			}
		})
	}
	stop := make(chan struct{})
	var ww sync.WaitGroup
	for _, e := range envs {
		ww.Go(func() {
			for {
				e.r.Drain(context.Background())
				select {
				case <-stop:
					e.r.Drain(context.Background())
					return
				default:
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	ww.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != producers*perProducer {
		t.Fatalf("%d tokens cancelled, want %d", len(seen), producers*perProducer)
	}
	for at, n := range seen {
		if n != 1 {
			t.Fatalf("%s cancelled %d times", at, n)
		}
	}
}

// countingQueue counts the calls a queue gets.
type countingQueue struct {
	*MemoryQueue
	calls atomic.Int64
}

func (q *countingQueue) LeaseCancel(ctx context.Context, now time.Time, ttl time.Duration) (*session.Cancel, string, error) {
	q.calls.Add(1)
	return q.MemoryQueue.LeaseCancel(ctx, now, ttl)
}

func (q *countingQueue) CountCancels(ctx context.Context) (int, error) {
	q.calls.Add(1)
	return q.MemoryQueue.CountCancels(ctx)
}

// TestIdleRevokerIsQuiet: a Revoker with nothing pending sends nothing to
// the store between polls; a queued or announced cancel wakes it.
func TestIdleRevokerIsQuiet(t *testing.T) {
	q := &countingQueue{MemoryQueue: NewMemoryQueue()}
	e := &env{clock: fakeclock.New(t0), rebell: &fakeRebell{}, results: map[string]int{}}
	r, err := New(Config{Queue: q, Canceller: e.rebell, Refresher: e.rebell, Now: e.clock.Now, Poll: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	r.Start()
	deadline := time.Now().Add(5 * time.Second)
	for q.calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the first look ends
	idle := q.calls.Load()
	time.Sleep(100 * time.Millisecond) // twenty polls
	if n := q.calls.Load(); n != idle || idle == 0 {
		t.Fatalf("%d calls at start, %d after idle polls", idle, n)
	}
	// Another instance queued one, and the store announced it.
	_ = q.AddCancel(context.Background(), &session.Cancel{AccessToken: rebell.NewSecret("AT9"),
		AccessTokenExpiry: t0.Add(time.Hour), RefreshTokenExpiry: t0.Add(time.Hour)})
	watched := r.Watch(fakeListener{})
	watched.Listen(func(session.Event) { t.Error("the cache heard a cancel announcement") })
	for time.Now().Before(deadline) {
		if c, _ := e.rebell.calls(); len(c) == 1 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the announced cancel was not made")
}

// fakeListener is a store whose Listen announces one queued cancel.
type fakeListener struct{ session.Store }

func (fakeListener) Listen(fn func(session.Event)) {
	fn(session.Event{Kind: session.EventCancelQueued})
}

// carryKey marks a queuing context as traced in TestCarry.
type carryKey struct{}

// carryMarker is Config.Carry for the tests: it takes the marker of a
// traced queuing context (or of what it kept) into the work, and leaves an
// untraced one's work unchanged.
func carryMarker(from, work context.Context) context.Context {
	if v, ok := from.Value(carryKey{}).(string); ok {
		return context.WithValue(work, carryKey{}, v)
	}
	return work
}

// ctxCanceller records what each cancelToken call's context carried.
type ctxCanceller struct {
	fakeRebell
	mu   sync.Mutex
	seen []string // the marker of each call, "" for none; "!" if cut short
	fail int      // the first fail calls fail retryably
}

func (c *ctxCanceller) CancelToken(ctx context.Context, at rebell.Secret) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, _ := ctx.Value(carryKey{}).(string)
	if ctx.Err() != nil {
		v = "!"
	}
	c.seen = append(c.seen, at.Reveal()+":"+v)
	if c.fail > 0 {
		c.fail--
		return &rebell.Error{Kind: rebell.KindRetryable, ResultStatus: "U", ResultCode: rebell.CodeUnknownException}
	}
	if at.Reveal() == "AT3" {
		return &rebell.Error{Kind: rebell.KindConfiguration, ResultStatus: "F", ResultCode: rebell.CodeAccessDenied}
	}
	return nil
}

// TestCarry: what Carry takes of a queuing context reaches every try of its
// cancel, also after that context was cancelled (the request is over), and
// is dropped once the cancel is confirmed or given up; an untraced queuing
// context keeps nothing; what is kept is bounded.
func TestCarry(t *testing.T) {
	clock := fakeclock.New(t0)
	cc := &ctxCanceller{fail: 1}
	r, err := New(Config{Canceller: cc, Refresher: cc, Now: clock.Now, Carry: carryMarker})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	e := &env{clock: clock}
	req, cancel := context.WithCancel(context.WithValue(context.Background(), carryKey{}, "span1"))
	r.Enqueue(req, e.tokens(1), "logout")
	cancel()
	r.Enqueue(context.Background(), e.tokens(2), "logout")
	r.Enqueue(context.WithValue(context.Background(), carryKey{}, "span3"), e.tokens(3), "customer")
	if n := r.carriedLen(); n != 2 {
		t.Fatalf("%d kept, want 2 (the untraced cancel keeps nothing)", n)
	}
	for range 5 {
		r.Drain(context.Background())
		clock.Advance(time.Minute)
	}
	cc.mu.Lock()
	seen := fmt.Sprint(cc.seen)
	cc.mu.Unlock()
	// The first try (AT1's) fails and is tried again with the same marker.
	if !containsAll(seen, "AT1:span1 ", "AT2: ", "AT3:span3") || strings.Count(seen, "AT1:span1") != 2 || strings.Contains(seen, "!") {
		t.Fatalf("tries saw %s", seen)
	}
	if n, _ := r.Pending(context.Background()); n != 0 {
		t.Fatalf("%d pending", n)
	}
	if n := r.carriedLen(); n != 0 {
		t.Fatalf("%d kept after every cancel settled or was given up", n)
	}

	// Bounded: beyond MaxCarried nothing more is kept, until those whose
	// tokens expired are dropped.
	traced := context.WithValue(context.Background(), carryKey{}, "x")
	for range MaxCarried + 1 {
		c := e.tokens(9)
		r.keep(traced, &c)
	}
	if n := r.carriedLen(); n != MaxCarried {
		t.Fatalf("%d kept, want at most %d", n, MaxCarried)
	}
	clock.Advance(25 * time.Hour)
	c := e.tokens(9)
	r.keep(traced, &c)
	if n := r.carriedLen(); n != 1 {
		t.Fatalf("%d kept after the expired ones were dropped, want 1", n)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// nopQueue takes every cancel and holds none.
type nopQueue struct{ session.PendingCancels }

func (nopQueue) AddCancel(context.Context, *session.Cancel) error { return nil }

// TestCarryUntracedCostsNothing: an untraced queuing context allocates
// nothing more in Enqueue than without Carry.
func TestCarryUntracedCostsNothing(t *testing.T) {
	clock := fakeclock.New(t0)
	with, err := New(Config{Queue: nopQueue{}, Canceller: &fakeRebell{}, Refresher: &fakeRebell{}, Now: clock.Now, Carry: carryMarker})
	if err != nil {
		t.Fatal(err)
	}
	without, err := New(Config{Queue: nopQueue{}, Canceller: &fakeRebell{}, Refresher: &fakeRebell{}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{clock: clock}
	tok := e.tokens(1)
	ctx := context.Background()
	a := testing.AllocsPerRun(100, func() { with.Enqueue(ctx, tok, "logout") })
	b := testing.AllocsPerRun(100, func() { without.Enqueue(ctx, tok, "logout") })
	t.Logf("Enqueue of an untraced cancel: %v allocations with Carry, %v without", a, b)
	if a != b {
		t.Errorf("Enqueue: %v allocations with Carry, %v without", a, b)
	}
}

// TestCarryStoreDown: a traced cancel the store cannot take, kept in
// memory, still carries what was kept to its try.
func TestCarryStoreDown(t *testing.T) {
	clock := fakeclock.New(t0)
	cc := &ctxCanceller{}
	r, err := New(Config{Queue: failingQueue{NewMemoryQueue()}, Canceller: cc, Refresher: cc, Now: clock.Now, Carry: carryMarker, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	e := &env{clock: clock}
	r.Enqueue(context.WithValue(context.Background(), carryKey{}, "span1"), e.tokens(1), "logout")
	r.Drain(context.Background())
	cc.mu.Lock()
	seen := fmt.Sprint(cc.seen)
	cc.mu.Unlock()
	if seen != "[AT1:span1]" || r.carriedLen() != 0 {
		t.Fatalf("tries saw %s, %d kept", seen, r.carriedLen())
	}
}
