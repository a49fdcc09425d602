package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/sandbox"
)

// discardWriter is a ResponseWriter that keeps nothing but its header map.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

var noopNext = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// provisionedAuth returns a provisioned rebell_auth in front of an
// in-process sandbox, and one logged-in session id; edit changes the config
// before it is provisioned.
func provisionedAuth(tb testing.TB, edit ...func(*Auth)) (*Auth, string) {
	tb.Helper()
	merchant := testkeys.RSA(0)
	sb, err := sandbox.New(sandbox.Config{ClientID: "BENCH", MerchantPublicKey: &merchant.PublicKey})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	tb.Cleanup(srv.Close)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	tb.Cleanup(cancel)
	a := &Auth{
		Endpoint:        srv.URL,
		ClientID:        "BENCH",
		PrivateKey:      string(rebell.EncodePrivateKeyPEM(merchant)),
		RebellPublicKey: string(rebell.EncodePublicKeyPEM(sb.PublicKey())),
	}
	for _, e := range edit {
		e(a)
	}
	if err := a.Provision(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = a.Cleanup() })

	code, _ := sb.IssueAuthCode("2188000000000001")
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/rebell/login", strings.NewReader(`{"authCode":"`+code+`"}`))
	r.Header.Set("Content-Type", "application/json")
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
	if err := a.ServeHTTP(w, r, noopNext); err != nil || w.Code != http.StatusOK {
		tb.Fatalf("login: %v %d %s", err, w.Code, w.Body)
	}
	var out struct{ SessionID string }
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	return a, out.SessionID
}

// newAPIRequest builds what Caddy hands a handler: a request with its own
// replacer and vars, carrying the session.
func newAPIRequest(w http.ResponseWriter, sessionID string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/api/orders", nil)
	r.Header.Set("Authorization", "Bearer "+sessionID)
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "bench")
	return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
}

func TestCachedRequestSetsIdentity(t *testing.T) {
	a, sid := provisionedAuth(t)
	w := &discardWriter{h: http.Header{}}
	r := newAPIRequest(w, sid)
	var upstream http.Header
	var user, token string
	next := caddyhttp.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) error {
		upstream = r.Header.Clone()
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		user, _ = repl.GetString("http.auth.user.id")
		token = repl.ReplaceKnown("{http.rebell.access_token}", "")
		return nil
	})
	if err := a.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	if user != "2188000000000001" || upstream.Get("X-Rebell-Customer-Id") != user {
		t.Errorf("user %q, upstream %v", user, upstream)
	}
	if token == "" || token != upstream.Get("X-Rebell-Access-Token") || upstream.Get("Authorization") != "" {
		t.Errorf("token placeholder %q, upstream %v", token, upstream)
	}
	// Rejections clear the user id and name the error.
	r = newAPIRequest(w, "short")
	if err := a.ServeHTTP(w, r, noopNext); err != nil {
		t.Fatal(err)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if v, ok := repl.GetString("http.auth.user.id"); !ok || v != "" {
		t.Errorf("user id after rejection: %q %v", v, ok)
	}
	if v, _ := repl.GetString("http.rebell.error"); v != "session_invalid" {
		t.Errorf("error placeholder %q", v)
	}
}

// BenchmarkCachedRequest measures rebell_auth's ServeHTTP for a cached,
// fresh session with a no-op next: header hygiene, session id parsing,
// SHA-256, the cache lookup, freshness, header injection and placeholders.
// Building each request (Caddy's work, not the handler's) is left out of
// the timing in batches.
func BenchmarkCachedRequest(b *testing.B) {
	a, sid := provisionedAuth(b)
	w := &discardWriter{h: http.Header{}}
	const batch = 512
	reqs := make([]*http.Request, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			for j := range reqs {
				reqs[j] = newAPIRequest(w, sid)
			}
			b.StartTimer()
		}
		if err := a.ServeHTTP(w, reqs[i%batch], noopNext); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCachedRequestParallel is BenchmarkCachedRequest on every core.
// Each iteration also builds its request (a replacer and vars, as Caddy's
// server does); BenchmarkRequestSetup measures that part alone, so the
// handler's share is the difference.
func BenchmarkCachedRequestParallel(b *testing.B) {
	a, sid := provisionedAuth(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		base := httptest.NewRequest(http.MethodGet, "/api/orders", nil)
		for pb.Next() {
			r := cheapRequest(base, w, sid)
			if err := a.ServeHTTP(w, r, noopNext); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRequestSetup measures cheapRequest alone, in parallel.
func BenchmarkRequestSetup(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		base := httptest.NewRequest(http.MethodGet, "/api/orders", nil)
		for pb.Next() {
			_ = cheapRequest(base, w, "x")
		}
	})
}

// cheapRequest gives base a fresh replacer and header, as Caddy's server
// does per request.
func cheapRequest(base *http.Request, w http.ResponseWriter, sid string) *http.Request {
	repl := caddy.NewReplacer()
	r := base.WithContext(context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl))
	r.Header = http.Header{"Authorization": {"Bearer " + sid}}
	return r
}
