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

func TestLoginErrors(t *testing.T) {
	expired := &rebell.Token{
		CustomerID: "c", AccessToken: rebell.NewSecret("a"), RefreshToken: rebell.NewSecret("r"),
		AccessTokenExpiry: t0.Add(-time.Hour), RefreshTokenExpiry: t0,
	}
	inverted := &rebell.Token{
		CustomerID: "c", AccessToken: rebell.NewSecret("a"), RefreshToken: rebell.NewSecret("r"),
		AccessTokenExpiry: t0.Add(2 * time.Hour), RefreshTokenExpiry: t0.Add(time.Hour),
	}
	noCustomer := &rebell.Token{
		AccessToken: rebell.NewSecret("a"), RefreshToken: rebell.NewSecret("r"),
		AccessTokenExpiry: t0.Add(time.Hour), RefreshTokenExpiry: t0.Add(2 * time.Hour),
	}
	noAccess := &rebell.Token{
		CustomerID: "c", RefreshToken: rebell.NewSecret("r"),
		AccessTokenExpiry: t0.Add(time.Hour), RefreshTokenExpiry: t0.Add(2 * time.Hour),
	}
	accessExpired := &rebell.Token{
		CustomerID: "c", AccessToken: rebell.NewSecret("a"), RefreshToken: rebell.NewSecret("r"),
		AccessTokenExpiry: t0, RefreshTokenExpiry: t0.Add(time.Hour),
	}
	for _, tc := range []struct {
		name   string
		r      result
		want   error
		code   string
		result string
	}{
		{"used code", result{err: errUsedCode}, ErrAuthCodeRejected, rebell.CodeUsedCode, rebell.CodeUsedCode},
		{"U", result{err: errUnknown}, ErrRebellUnavailable, rebell.CodeUnknownException, rebell.CodeUnknownException},
		{"transport", result{err: errTransport}, ErrRebellUnavailable, "", "transport_error"},
		{"configuration", result{err: errConfig}, ErrRebellRejected, rebell.CodeInvalidAuthClient, rebell.CodeInvalidAuthClient},
		{"bad signature", result{err: errBadSignature}, ErrRebellRejected, "", "bad_signature"},
		{"bad response", result{err: &rebell.Error{Kind: rebell.KindBadResponse}}, ErrRebellRejected, "", "bad_response"},
		{"refresh expiry not after now", result{tok: expired}, ErrRebellRejected, "", "bad_response"},
		{"access expiry after refresh expiry", result{tok: inverted}, ErrRebellRejected, "", "bad_response"},
		{"access expiry not after now", result{tok: accessExpired}, ErrRebellRejected, "", "bad_response"},
		{"no customer id", result{tok: noCustomer}, ErrRebellRejected, "", "bad_response"},
		{"no access token", result{tok: noAccess}, ErrRebellRejected, "", "bad_response"},
	} {
		for _, dedup := range []time.Duration{0, time.Minute} {
			h := newHarness(t, func(c *Config) { c.LoginDedupWindow = dedup })
			h.fake.scriptExchange(tc.r)
			id, g, err := h.Login(context.Background(), rebell.NewSecret("code"))
			if !errors.Is(err, tc.want) || id != "" || g != nil {
				t.Errorf("%s (dedup %v): Login = %q, %v, %v; want %v", tc.name, dedup, id, g, err, tc.want)
				continue
			}
			if tc.r.err != nil && !errors.Is(err, tc.r.err) {
				t.Errorf("%s: %v does not wrap the rebell error", tc.name, err)
			}
			if got := rebell.ResultCodeOf(err); got != tc.code {
				t.Errorf("%s: resultCode %q, want %q", tc.name, got, tc.code)
			}
			if got := h.loginResults(); !slices.Equal(got, []string{tc.result}) {
				t.Errorf("%s: OnLogin got %v, want %s", tc.name, got, tc.result)
			}
			if h.Len() != 0 {
				t.Errorf("%s: Len = %d", tc.name, h.Len())
			}
		}
	}
}

func TestLoginDedupConcurrent(t *testing.T) {
	h := newHarness(t)
	release := h.fake.holdCalls()
	const n = 50
	ids := make([]string, n)
	grants := make([]*Grant, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			ids[i], grants[i], err = h.Login(context.Background(), rebell.NewSecret("same-code"))
			if err != nil {
				t.Error(err)
			}
		})
	}
	h.fake.awaitEntered(t, "exchange")
	release()
	waitGroup(t, &wg, "concurrent logins with one code")
	if c := h.fake.exchanges.Load(); c != 1 {
		t.Fatalf("%d exchanges, want 1", c)
	}
	for i := range n {
		if ids[i] != ids[0] || grants[i] != grants[0] {
			t.Fatalf("login %d got another session", i)
		}
	}
	res := h.loginResults()
	if len(res) != n || slices.Index(res, "SUCCESS") < 0 ||
		len(slices.DeleteFunc(res, func(s string) bool { return s == "deduplicated" })) != 1 {
		t.Fatalf("OnLogin got %v", h.loginResults())
	}
	if h.Len() != 1 {
		t.Fatalf("Len = %d", h.Len())
	}
}

func TestLoginDedupWindow(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.LoginDedupWindow = time.Minute })
	ctx := context.Background()
	id1, g1, err := h.Login(ctx, rebell.NewSecret("code-1"))
	if err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute - time.Nanosecond)
	id2, g2, err := h.Login(ctx, rebell.NewSecret("code-1"))
	if err != nil || id2 != id1 || g2 != g1 {
		t.Fatalf("within the window: %v, same id %v", err, id2 == id1)
	}
	// Another code is another session.
	id3, _, err := h.Login(ctx, rebell.NewSecret("code-2"))
	if err != nil || id3 == id1 {
		t.Fatalf("other code: %v, same id %v", err, id3 == id1)
	}
	h.clock.Advance(time.Nanosecond)
	id4, _, err := h.Login(ctx, rebell.NewSecret("code-1"))
	if err != nil || id4 == id1 {
		t.Fatalf("after the window: %v, same id %v", err, id4 == id1)
	}
	if c := h.fake.exchanges.Load(); c != 3 {
		t.Fatalf("%d exchanges, want 3", c)
	}
}

func TestLoginDedupReturnsCurrentGrant(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id1, g1, _ := h.Login(ctx, rebell.NewSecret("code-1"))
	k, _ := h.ParseSessionID(id1)
	h.atAccessExpiry(g1, 0)
	refreshed := mustGet(t, h, k)
	h.clock.Set(t0.Add(30 * time.Second))
	id2, g2, err := h.Login(ctx, rebell.NewSecret("code-1"))
	if err != nil || id2 != id1 || g2 != refreshed {
		t.Fatalf("dedup after a refresh: %v, same id %v, current grant %v", err, id2 == id1, g2 == refreshed)
	}
}

func TestLoginDedupForgetsEndedSession(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id1, _, _ := h.Login(ctx, rebell.NewSecret("code-1"))
	k, _ := h.ParseSessionID(id1)
	if err := h.Logout(ctx, k); err != nil {
		t.Fatal(err)
	}
	h.fake.scriptExchange(result{err: errUsedCode})
	if _, _, err := h.Login(ctx, rebell.NewSecret("code-1")); !errors.Is(err, ErrAuthCodeRejected) {
		t.Fatalf("relogin with a used code after logout: %v", err)
	}
}

func TestLoginFailureIsNotMemoised(t *testing.T) {
	h := newHarness(t)
	h.fake.scriptExchange(result{err: errUnknown})
	ctx := context.Background()
	if _, _, err := h.Login(ctx, rebell.NewSecret("code-1")); !errors.Is(err, ErrRebellUnavailable) {
		t.Fatalf("first: %v", err)
	}
	if _, _, err := h.Login(ctx, rebell.NewSecret("code-1")); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if c := h.fake.exchanges.Load(); c != 2 {
		t.Fatalf("%d exchanges, want 2", c)
	}
	if len(h.logins.m) != 1 {
		t.Fatalf("memo holds %d entries, want 1", len(h.logins.m))
	}
}

func TestLoginRetryAfterClientGaveUp(t *testing.T) {
	h := newHarness(t)
	release := h.fake.holdCalls()
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, _, err := h.Login(ctx, rebell.NewSecret("code-1"))
		first <- err
	}()
	h.fake.awaitEntered(t, "exchange")
	cancel() // the Mini App's request timed out
	if err := receive(t, first, "the abandoned login"); !errors.Is(err, ErrRebellUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned login: %v", err)
	}
	retry := make(chan string, 1)
	go func() {
		id, _, err := h.Login(context.Background(), rebell.NewSecret("code-1"))
		if err != nil {
			t.Error(err)
		}
		retry <- id
	}()
	release()
	if id := receive(t, retry, "the retried login"); id == "" {
		t.Fatal("the retry got no session")
	}
	if c := h.fake.exchanges.Load(); c != 1 || h.fake.cancelled.Load() != 0 {
		t.Fatalf("%d exchanges (%d cancelled), want 1 not cancelled", c, h.fake.cancelled.Load())
	}
}

func TestLoginMemoIsSwept(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for i := range 100 {
		if _, _, err := h.Login(ctx, rebell.NewSecret("code-"+string(rune('a'+i%26))+string(rune('a'+i/26)))); err != nil {
			t.Fatal(err)
		}
		h.clock.Advance(time.Second)
	}
	if n := len(h.logins.m); n != 60 {
		t.Fatalf("memo holds %d entries after 100s of logins with a 60s window, want 60", n)
	}
	h.clock.Advance(time.Hour)
	if _, _, err := h.Login(ctx, rebell.NewSecret("last")); err != nil {
		t.Fatal(err)
	}
	if n, q := len(h.logins.m), len(h.logins.succeeded); n != 1 || q != 1 {
		t.Fatalf("memo holds %d entries (%d queued), want 1", n, q)
	}
}

func TestLoginWithoutDedup(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.LoginDedupWindow = 0 })
	ctx := context.Background()
	id1, _, err1 := h.Login(ctx, rebell.NewSecret("code-1"))
	id2, _, err2 := h.Login(ctx, rebell.NewSecret("code-1"))
	if err1 != nil || err2 != nil || id1 == id2 || h.fake.exchanges.Load() != 2 {
		t.Fatalf("dedup off: %v %v, same id %v, %d exchanges", err1, err2, id1 == id2, h.fake.exchanges.Load())
	}
	if len(h.logins.m) != 0 {
		t.Fatal("memo used with dedup off")
	}
}
