package cache

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func TestExpiredSessionStampedeMakesOneRefresh(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.atAccessExpiry(g, -10*time.Second) // now = A − m

	release := h.fake.holdCalls()
	const n = 1000
	var ready, done sync.WaitGroup
	ready.Add(n)
	grants := make([]*Grant, n)
	errs := make([]error, n)
	for i := range n {
		done.Go(func() {
			ready.Done()
			grants[i], errs[i] = h.Get(context.Background(), k)
		})
	}
	waitGroup(t, &ready, "the requests starting")
	h.fake.awaitEntered(t, "refresh")
	release()
	waitGroup(t, &done, "1000 requests for a refreshing session")

	if c := h.fake.refreshes.Load(); c != 1 {
		t.Fatalf("%d Refresh calls, want 1", c)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if grants[i].AccessToken.Reveal() != "access-2" {
			t.Fatalf("request %d got %q, want the refreshed token", i, grants[i].AccessToken.Reveal())
		}
	}
	if got := h.fake.presented(); !slices.Equal(got, []string{"refresh-1"}) {
		t.Fatalf("refresh tokens presented: %v", got)
	}
	if got := h.refreshResults(); !slices.Equal(got, []string{"SUCCESS"}) {
		t.Fatalf("OnRefresh got %v", got)
	}
}

func TestRefreshAheadServesCachedAndRefreshesOnceInBackground(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.atAccessExpiry(g, -DefaultRefreshAhead) // start of the refresh-ahead window

	release := h.fake.holdCalls()
	for range 5 { // served at once with the old token while the refresh is held
		if got := mustGet(t, h, k); got != g {
			t.Fatal("refresh-ahead request not served with the cached grant")
		}
	}
	h.fake.awaitEntered(t, "refresh")
	h.clock.Advance(time.Minute)
	if got := mustGet(t, h, k); got != g {
		t.Fatal("request during the background refresh not served with the cached grant")
	}
	release()
	h.settle(t, k)

	got := mustGet(t, h, k)
	if got.AccessToken.Reveal() != "access-2" || !got.AccessTokenExpiry.Equal(h.clock.Now().Add(accessTTL)) {
		t.Fatalf("after the refresh: %q expiring %v", got.AccessToken.Reveal(), got.AccessTokenExpiry)
	}
	if c := h.fake.refreshes.Load(); c != 1 {
		t.Fatalf("%d Refresh calls, want 1", c)
	}
}

func TestDeadRefreshTokenEndsSession(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.fake.scriptRefresh(result{err: errUsedRefresh})
	h.atAccessExpiry(g, time.Second)

	_, err := h.get(t, k)
	if !errors.Is(err, ErrReauthRequired) || rebell.ResultCodeOf(err) != rebell.CodeUsedRefreshToken {
		t.Fatalf("Get = %v; want ErrReauthRequired with USED_REFRESH_TOKEN", err)
	}
	// Documented choice: the session is ended like a logout, so later
	// requests hear ErrSessionInvalid.
	if _, err := h.get(t, k); err != ErrSessionInvalid {
		t.Fatalf("next Get = %v; want ErrSessionInvalid", err)
	}
	if h.Len() != 0 || h.fake.refreshes.Load() != 1 {
		t.Fatalf("Len %d, refreshes %d", h.Len(), h.fake.refreshes.Load())
	}
	if got := h.refreshResults(); !slices.Equal(got, []string{rebell.CodeUsedRefreshToken}) {
		t.Fatalf("OnRefresh got %v", got)
	}
}

func TestDeadRefreshTokenInBackgroundEndsSession(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.fake.scriptRefresh(result{err: errUsedRefresh})
	h.atAccessExpiry(g, -time.Minute)
	if got := mustGet(t, h, k); got != g {
		t.Fatal("refresh-ahead not served cached")
	}
	h.settle(t, k)
	if _, err := h.get(t, k); err != ErrSessionInvalid {
		t.Fatalf("after a dead refresh token: %v", err)
	}
}

func TestRetryableFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code string
	}{
		{"U", errUnknown, rebell.CodeUnknownException},
		{"transport", errTransport, ""},
		{"not a rebell error", errors.New("boom"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			k1, g1 := h.login(t, "code-1")
			k2, _ := h.login(t, "code-2")
			h.fake.scriptRefresh(result{err: tc.err}, result{err: tc.err})

			// Token still valid (A − m ≤ now < A): served cached.
			h.atAccessExpiry(g1, -time.Second)
			if got := mustGet(t, h, k1); got != g1 {
				t.Fatal("not served with the cached grant")
			}
			// Token expired: ErrRebellUnavailable carrying the resultCode.
			h.atAccessExpiry(g1, 0)
			_, err := h.get(t, k2)
			if !errors.Is(err, ErrRebellUnavailable) || rebell.ResultCodeOf(err) != tc.code {
				t.Fatalf("expired: %v (code %q); want ErrRebellUnavailable, %q", err, rebell.ResultCodeOf(err), tc.code)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("error does not wrap the exchanger's: %v", err)
			}
			// The sessions are kept.
			if h.Len() != 2 {
				t.Fatalf("Len = %d", h.Len())
			}
			want := "transport_error"
			if tc.code != "" {
				want = tc.code
			}
			if got := h.refreshResults(); !slices.Equal(got, []string{want, want}) {
				t.Fatalf("OnRefresh got %v", got)
			}
		})
	}
}

func TestRejectedRefresh(t *testing.T) {
	badToken := &rebell.Token{AccessToken: rebell.NewSecret("x"), AccessTokenExpiry: t0.Add(time.Hour), CustomerID: "someone-else"}
	for _, tc := range []struct {
		name   string
		r      result
		result string
	}{
		{"configuration", result{err: errConfig}, rebell.CodeInvalidAuthClient},
		{"bad signature", result{err: errBadSignature}, "bad_signature"},
		{"bad response", result{err: &rebell.Error{Kind: rebell.KindBadResponse}}, "bad_response"},
		{"customer changed", result{tok: badToken}, "bad_response"},
		{"empty access token", result{tok: &rebell.Token{}}, "bad_response"},
		{"nil token", result{}, "bad_response"},
		{"expired access token", result{tok: &rebell.Token{AccessToken: rebell.NewSecret("x"), AccessTokenExpiry: t0}}, "bad_response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			k1, g1 := h.login(t, "code-1")
			k2, g2 := h.login(t, "code-2")
			h.fake.scriptRefresh(tc.r, tc.r)

			h.atAccessExpiry(g1, -time.Second)
			if got := mustGet(t, h, k1); got != g1 {
				t.Fatal("valid token not served cached")
			}
			h.atAccessExpiry(g2, time.Second)
			_, err := h.get(t, k2)
			if !errors.Is(err, ErrRebellRejected) {
				t.Fatalf("expired: %v; want ErrRebellRejected", err)
			}
			if tc.result == rebell.CodeInvalidAuthClient && rebell.ResultCodeOf(err) != tc.result {
				t.Fatalf("resultCode %q", rebell.ResultCodeOf(err))
			}
			if h.Len() != 2 {
				t.Fatalf("Len = %d: the sessions must be kept", h.Len())
			}
			if got := h.refreshResults(); !slices.Equal(got, []string{tc.result, tc.result}) {
				t.Fatalf("OnRefresh got %v", got)
			}
		})
	}
}

// TestForegroundRefreshHasNoCooldown: a request whose token must be
// refreshed now calls the exchanger again right after a failure; keeping a
// failing Rebell from being called is the exchanger's circuit breaker's job
// (docs/rebell-calls.md), so a session recovers as soon as Rebell does.
func TestForegroundRefreshHasNoCooldown(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RetryCooldown = 5 * time.Second })
	k, g := h.login(t, "code-1")
	h.fake.scriptRefresh(result{err: errUnknown}, result{err: errUnknown})
	h.atAccessExpiry(g, time.Second)

	for i := range 2 {
		_, err := h.get(t, k)
		if !errors.Is(err, ErrRebellUnavailable) || rebell.ResultCodeOf(err) != rebell.CodeUnknownException {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	got := mustGet(t, h, k) // no time has passed
	if got.AccessToken.Reveal() != "access-2" || h.fake.refreshes.Load() != 3 {
		t.Fatalf("third request: %q after %d calls", got.AccessToken.Reveal(), h.fake.refreshes.Load())
	}
}

func TestRetryCooldownInRefreshAheadWindow(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.fake.scriptRefresh(result{err: errUnknown})
	h.atAccessExpiry(g, -time.Minute)
	mustGet(t, h, k)
	h.settle(t, k)
	for range 3 {
		h.clock.Advance(time.Second)
		if got := mustGet(t, h, k); got != g {
			t.Fatal("not served cached during the cooldown")
		}
	}
	if c := h.fake.refreshes.Load(); c != 1 {
		t.Fatalf("%d Refresh calls in cooldown", c)
	}
	h.clock.Advance(2 * time.Second) // 5s after the failure
	mustGet(t, h, k)
	h.settle(t, k)
	if got := mustGet(t, h, k); got.AccessToken.Reveal() != "access-2" {
		t.Fatalf("after the cooldown: %q", got.AccessToken.Reveal())
	}
}

func TestRefreshWithoutRefreshTokenKeepsTheOldOne(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.atAccessExpiry(g, 0)
	h.fake.scriptRefresh(result{tok: &rebell.Token{
		AccessToken:       rebell.NewSecret("access-only"),
		AccessTokenExpiry: h.clock.Now().Add(accessTTL),
	}})
	got := mustGet(t, h, k)
	if got.AccessToken.Reveal() != "access-only" || !got.SessionExpiry.Equal(g.SessionExpiry) || got.CustomerID != g.CustomerID {
		t.Fatalf("grant after refresh: %+v", got)
	}
	h.clock.Advance(accessTTL)
	mustGet(t, h, k)
	if got := h.fake.presented(); !slices.Equal(got, []string{"refresh-1", "refresh-1"}) {
		t.Fatalf("refresh tokens presented: %v", got)
	}
}

func TestRefreshRotatesRefreshToken(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	for i := range 3 {
		h.clock.Set(g.AccessTokenExpiry)
		g = mustGet(t, h, k)
		_ = i
	}
	if got := h.fake.presented(); !slices.Equal(got, []string{"refresh-1", "refresh-2", "refresh-3"}) {
		t.Fatalf("refresh tokens presented: %v", got)
	}
}

func TestWaiterContextEndsButRefreshContinues(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.atAccessExpiry(g, time.Second)
	release := h.fake.holdCalls()

	ctx, cancel := context.WithCancel(context.Background())
	other := make(chan error, 1)
	go func() {
		_, err := h.Get(ctx, k)
		other <- err
	}()
	h.fake.awaitEntered(t, "refresh")
	waiter := make(chan *Grant, 1)
	go func() {
		g, err := h.Get(context.Background(), k)
		if err != nil {
			t.Error(err)
		}
		waiter <- g
	}()
	cancel()
	if err := receive(t, other, "the cancelled waiter"); !errors.Is(err, ErrRebellUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	release()
	if g := receive(t, waiter, "the other waiter"); g == nil || g.AccessToken.Reveal() != "access-2" {
		t.Fatal("the other waiter did not get the refreshed token")
	}
	if h.fake.cancelled.Load() != 0 {
		t.Fatal("the refresh was cancelled with the request")
	}
}

func TestRefreshTimeoutBoundsTheCall(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RefreshTimeout = time.Millisecond })
	k, g := h.login(t, "code-1")
	h.atAccessExpiry(g, 0)
	release := h.fake.holdCalls()
	defer release()
	_, err := h.get(t, k)
	if !errors.Is(err, ErrRebellUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get = %v; want ErrRebellUnavailable wrapping the deadline", err)
	}
}

func TestCloseStopsBackgroundRefresh(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.atAccessExpiry(g, -time.Minute)
	release := h.fake.holdCalls()
	defer release()
	mustGet(t, h, k)
	h.fake.awaitEntered(t, "refresh")

	closed := make(chan struct{})
	go func() {
		h.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a refresh was in flight")
	}
	if h.fake.cancelled.Load() != 1 {
		t.Fatal("the refresh's context was not cancelled")
	}
	if got := h.refreshResults(); len(got) != 0 {
		t.Fatalf("a refresh cancelled by Close was reported: %v", got)
	}
}

func TestLogoutDuringRefreshDiscardsResult(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.atAccessExpiry(g, time.Second)
	release := h.fake.holdCalls()
	errc := make(chan error, 1)
	go func() {
		_, err := h.Get(context.Background(), k)
		errc <- err
	}()
	h.fake.awaitEntered(t, "refresh")
	if err := h.Logout(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	release()
	if err := receive(t, errc, "the waiter"); err != ErrSessionInvalid {
		t.Fatalf("waiter: %v", err)
	}
	if _, err := h.get(t, k); err != ErrSessionInvalid {
		t.Fatalf("after logout: %v", err)
	}
}

func TestJoinRefreshSeesStateChangedMeanwhile(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	e := h.entryOf(t, k)
	stale := e.state.Load()
	h.atAccessExpiry(g, 0)
	fresh := mustGet(t, h, k)

	call, cur := h.joinRefresh(context.Background(), e, stale, h.clock.Now(), false)
	if call != nil || &cur.grant != fresh {
		t.Fatalf("joinRefresh with a stale state = %v, %v; want the current state", call, cur)
	}
	// awaitRefresh judges the current state instead of refreshing again.
	got, err := h.awaitRefresh(context.Background(), e, stale, h.clock.Now())
	if err != nil || got != fresh || h.fake.refreshes.Load() != 1 {
		t.Fatalf("awaitRefresh(stale) = %v, %v after %d refreshes", got, err, h.fake.refreshes.Load())
	}
}

func TestNoRefreshStartsOnceClosing(t *testing.T) {
	h := newHarness(t)
	k, g := h.login(t, "code-1")
	h.lifeMu.Lock()
	h.closed = true // Close has begun; the memory tier still answers
	h.lifeMu.Unlock()

	h.atAccessExpiry(g, -time.Second)
	if got := mustGet(t, h, k); got != g {
		t.Fatal("valid token not served while closing")
	}
	h.atAccessExpiry(g, 0)
	if _, err := h.get(t, k); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("expired token while closing: %v", err)
	}
	if n := h.fake.refreshes.Load(); n != 0 {
		t.Fatalf("%d refreshes started while closing", n)
	}
}

// TestRefreshWindowOfShortTokens: the refresh-ahead window of a token is
// min(refresh_ahead, lifetime/2), and m = min(10s, window/2).
func TestRefreshWindowOfShortTokens(t *testing.T) {
	p := newPolicy(5*time.Minute, 0)
	for _, tc := range []struct {
		lifetime, window time.Duration
	}{
		{time.Hour, 5 * time.Minute},
		{10 * time.Minute, 5 * time.Minute},
		{4 * time.Minute, 2 * time.Minute},
		{10 * time.Second, 5 * time.Second},
	} {
		st := &tokenState{grant: Grant{AccessTokenExpiry: t0.Add(tc.lifetime), SessionExpiry: t0.Add(refreshTTL)}, lifetime: tc.lifetime}
		if got := p.window(st); got != tc.window {
			t.Errorf("lifetime %v: window %v, want %v", tc.lifetime, got, tc.window)
		}
		m := min(10*time.Second, tc.window/2)
		a := st.grant.AccessTokenExpiry
		for _, c := range []struct {
			at   time.Time
			want freshness
		}{
			{t0, fresh},
			{a.Add(-tc.window - time.Nanosecond), fresh},
			{a.Add(-tc.window), refreshAhead},
			{a.Add(-m - time.Nanosecond), refreshAhead},
			{a.Add(-m), mustRefresh},
		} {
			if got := p.classify(st, c.at); got != c.want {
				t.Errorf("lifetime %v at A%v: %v, want %v", tc.lifetime, c.at.Sub(a), got, c.want)
			}
		}
	}
}

// TestShortTokenRefreshedOnce: an access token living less than
// refresh_ahead is refreshed once, half-way through its life, however many
// requests use it; the shortened window is logged once per session.
func TestShortTokenRefreshedOnce(t *testing.T) {
	logs := observe(t)
	h := newHarness(t, func(c *Config) { c.RefreshAhead = 5 * time.Minute; c.Logger = logs.logger })
	h.fake.accessTTL.Store(int64(4 * time.Minute))
	k, _ := h.login(t, "code-1")
	for range 12 * 60 {
		h.clock.Advance(time.Second)
		for range 5 {
			mustGet(t, h, k)
		}
		h.settle(t, k)
	}
	// 12 minutes of 4-minute tokens, each refreshed 2 minutes in.
	if n := h.fake.refreshes.Load(); n != 6 {
		t.Fatalf("%d refreshes in 12 minutes of 4-minute tokens, want 6", n)
	}
	if n := logs.count("rebell refresh_ahead shortened to half the access token's lifetime"); n != 1 {
		t.Fatalf("shortened window logged %d times, want once", n)
	}
}
