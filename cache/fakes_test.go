package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rebell-gateway/caddy-rebell/internal/fakeclock"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// t0 is where every fake clock starts.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// Token lifetimes the fake issues by default.
const (
	accessTTL  = 30 * time.Minute
	refreshTTL = 720 * time.Hour
)

// fakeClock is a clock tests move by hand.
// fakeClock is the clock of the cache's tests: it moves only when told to.
type fakeClock = fakeclock.Clock

func newFakeClock() *fakeClock { return fakeclock.New(t0) }

// result is one scripted answer of the fake exchanger.
type result struct {
	tok *rebell.Token
	err error
}

// fakeExchanger is a rebell.TokenExchanger that counts calls, can hold them
// until released, and answers from a script, falling back to fresh tokens.
type fakeExchanger struct {
	clock *fakeClock

	exchanges atomic.Int64
	refreshes atomic.Int64
	// accessTTL, if set, is the lifetime of the access tokens issued (ns).
	accessTTL atomic.Int64

	mu              sync.Mutex
	exchangeScript  []result
	refreshScript   []result
	hold            chan struct{} // non-nil: calls wait for it to close, or for ctx
	entered         chan string   // receives "exchange" or "refresh" as a call starts
	refreshTokens   []string      // refresh tokens presented, in order
	cancelled       atomic.Int64  // calls that ended because ctx ended
	seq             int
	customerForCode map[string]string
}

func newFakeExchanger(clock *fakeClock) *fakeExchanger {
	return &fakeExchanger{clock: clock, entered: make(chan string, 4096), customerForCode: map[string]string{}}
}

// holdCalls makes calls wait until the returned function is called.
func (f *fakeExchanger) holdCalls() (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.hold = ch
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.hold = nil
			f.mu.Unlock()
			close(ch)
		})
	}
}

func (f *fakeExchanger) scriptExchange(rs ...result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exchangeScript = append(f.exchangeScript, rs...)
}

func (f *fakeExchanger) scriptRefresh(rs ...result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshScript = append(f.refreshScript, rs...)
}

func (f *fakeExchanger) presented() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.refreshTokens...)
}

// token issues a new token pair valid from the clock's now.
func (f *fakeExchanger) token(customer string) *rebell.Token {
	f.mu.Lock()
	f.seq++
	n := f.seq
	f.mu.Unlock()
	now := f.clock.Now()
	ttl := accessTTL
	if d := f.accessTTL.Load(); d != 0 {
		ttl = time.Duration(d)
	}
	return &rebell.Token{
		CustomerID:         customer,
		AccessToken:        rebell.NewSecret(fmt.Sprintf("access-%d", n)),
		AccessTokenExpiry:  now.Add(ttl),
		RefreshToken:       rebell.NewSecret(fmt.Sprintf("refresh-%d", n)),
		RefreshTokenExpiry: now.Add(refreshTTL),
	}
}

func (f *fakeExchanger) wait(ctx context.Context, kind string) error {
	f.entered <- kind
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold == nil {
		return nil
	}
	select {
	case <-hold:
		return nil
	case <-ctx.Done():
		f.cancelled.Add(1)
		return &rebell.Error{Kind: rebell.KindRetryable, Err: ctx.Err()}
	}
}

func (f *fakeExchanger) ExchangeAuthCode(ctx context.Context, code rebell.Secret) (*rebell.Token, error) {
	f.exchanges.Add(1)
	if err := f.wait(ctx, "exchange"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	var r *result
	if len(f.exchangeScript) > 0 {
		r = &f.exchangeScript[0]
		f.exchangeScript = f.exchangeScript[1:]
	}
	customer := f.customerForCode[code.Reveal()]
	f.mu.Unlock()
	if r != nil {
		return r.tok, r.err
	}
	if customer == "" {
		customer = "customer-1"
	}
	return f.token(customer), nil
}

func (f *fakeExchanger) Refresh(ctx context.Context, rt rebell.Secret) (*rebell.Token, error) {
	f.refreshes.Add(1)
	f.mu.Lock()
	f.refreshTokens = append(f.refreshTokens, rt.Reveal())
	f.mu.Unlock()
	if err := f.wait(ctx, "refresh"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	var r *result
	if len(f.refreshScript) > 0 {
		r = &f.refreshScript[0]
		f.refreshScript = f.refreshScript[1:]
	}
	f.mu.Unlock()
	if r != nil {
		return r.tok, r.err
	}
	return f.token(""), nil
}

// rebellErr is a failure of the given kind as the rebell client reports it.
func rebellErr(kind rebell.Kind, status, code string) error {
	return &rebell.Error{Kind: kind, ResultStatus: status, ResultCode: code, Attempts: 1}
}

var (
	errUnknown      = rebellErr(rebell.KindRetryable, rebell.StatusUnknown, rebell.CodeUnknownException)
	errTransport    = &rebell.Error{Kind: rebell.KindRetryable, Err: errors.New("connection refused"), Attempts: 3}
	errConfig       = rebellErr(rebell.KindConfiguration, rebell.StatusFail, rebell.CodeInvalidAuthClient)
	errBadSignature = &rebell.Error{Kind: rebell.KindBadSignature, Err: errors.New("signature does not verify")}
	errUsedRefresh  = rebellErr(rebell.KindRefreshTokenDead, rebell.StatusFail, rebell.CodeUsedRefreshToken)
	errUsedCode     = rebellErr(rebell.KindAuthCodeRejected, rebell.StatusFail, rebell.CodeUsedCode)
)

// harness is a Cache on a fake clock and a fake Rebell.
type harness struct {
	*Cache
	clock *fakeClock
	fake  *fakeExchanger

	mu         sync.Mutex
	loginRes   []string
	refreshRes []string
}

func newHarness(t testing.TB, mutate ...func(*Config)) *harness {
	t.Helper()
	clock := newFakeClock()
	h := &harness{clock: clock, fake: newFakeExchanger(clock)}
	cfg := Config{
		Exchanger:        h.fake,
		MaxSessions:      1000,
		LoginDedupWindow: time.Minute,
		Now:              clock.Now,
		OnLogin: func(r string) {
			h.mu.Lock()
			h.loginRes = append(h.loginRes, r)
			h.mu.Unlock()
		},
		OnRefresh: func(r string) {
			h.mu.Lock()
			h.refreshRes = append(h.refreshRes, r)
			h.mu.Unlock()
		},
	}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Cache = c
	t.Cleanup(c.Close)
	return h
}

func (h *harness) loginResults() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.loginRes...)
}

func (h *harness) refreshResults() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.refreshRes...)
}

// login creates a session and returns its key and first grant.
func (h *harness) login(t testing.TB, code string) (Key, *Grant) {
	t.Helper()
	id, g, err := h.Login(context.Background(), rebell.NewSecret(code))
	if err != nil {
		t.Fatalf("Login(%q): %v", code, err)
	}
	k, ok := h.ParseSessionID(id)
	if !ok {
		t.Fatalf("Login returned a malformed session id")
	}
	return k, g
}

// entryOf returns the memory tier's entry for k.
func (h *harness) entryOf(t testing.TB, k Key) *entry {
	t.Helper()
	e := h.mem.get(&k)
	if e == nil {
		t.Fatalf("session %v not in memory", k)
	}
	return e
}

// settle waits for the refresh in flight for k, if any, to finish.
func (h *harness) settle(t testing.TB, k Key) {
	t.Helper()
	if e := h.mem.get(&k); e != nil {
		if call := e.flight.Load(); call != nil {
			receive(t, call.done, "the refresh in flight")
		}
	}
}

// at sets the clock relative to the access token expiry A of g.
func (h *harness) atAccessExpiry(g *Grant, d time.Duration) { h.clock.Set(g.AccessTokenExpiry.Add(d)) }

// get calls Get and waits for the comparison with the store it may have
// started in the background.
func (h *harness) get(t testing.TB, k Key) (*Grant, error) {
	t.Helper()
	e := h.mem.get(&k)
	g, err := h.Get(context.Background(), k)
	if e == nil {
		e = h.mem.get(&k)
	}
	if e != nil {
		awaitCheck(t, e)
	}
	return g, err
}

// awaitCheck waits for the background comparison of e with the store, if
// one runs.
func awaitCheck(t testing.TB, e *entry) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.checking.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the comparison with the store did not finish in 10s")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func mustGet(t testing.TB, h *harness, k Key) *Grant {
	t.Helper()
	g, err := h.get(t, k)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return g
}

// awaitEntered waits for the fake to report a call of kind, skipping others.
func (f *fakeExchanger) awaitEntered(t testing.TB, kind string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-f.entered:
			if got == kind {
				return
			}
		case <-timeout:
			t.Fatalf("no %s call reached the fake Rebell", kind)
		}
	}
}

// observedLogs is a logger whose lines a test can count.
type observedLogs struct {
	logger *zap.Logger
	logs   *observer.ObservedLogs
}

func observe(t testing.TB) *observedLogs {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	return &observedLogs{logger: zap.New(core), logs: logs}
}

// count is the number of lines with message msg.
func (o *observedLogs) count(msg string) int { return o.logs.FilterMessage(msg).Len() }
