package handler

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/identity"
	"github.com/rebell-gateway/caddy-rebell/internal/fakeclock"
)

// testSigner returns an identity.Signer with a new Ed25519 key and the
// handler's fixed clock.
func testSigner(tb testing.TB, audience string) *identity.Signer {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	k, err := identity.ParseKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		tb.Fatal(err)
	}
	s, err := identity.New(identity.Config{Key: k, Audience: audience, Now: func() time.Time { return testNow }})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// verifyAssertion checks tok against s's JWKS and returns its claims.
func verifyAssertion(t *testing.T, s *identity.Signer, tok string) identity.Claims {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(parsed.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in the JWKS", parsed.Headers[0].KeyID)
	}
	var c identity.Claims
	if err := parsed.Claims(keys[0].Key, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIdentityAssertionInjected(t *testing.T) {
	s := testSigner(t, "")
	e := newEnv(t, func(c *Config) { c.Identity = s })
	id := e.s.add()
	k, _ := testIDs.Parse(id)
	r := get("https://API.example:8443/api", "Authorization", bearer(id),
		"X-Rebell-Identity", "forged", "X_Rebell_Identity", "forged", "x-rebell-identity ", "forged")
	r.Header["x-rebell-identity"] = []string{"forged"}
	up := &upstream{echo: true}
	w, err := e.serve(r, up)
	if err != nil || w.Code != 200 {
		t.Fatalf("%v %d", err, w.Code)
	}
	var got []string
	for name, v := range up.header {
		if strings.EqualFold(strings.TrimSpace(strings.ReplaceAll(name, "_", "-")), "x-rebell-identity") {
			got = append(got, v...)
		}
	}
	if len(got) != 1 || got[0] == "forged" {
		t.Fatalf("upstream identity headers %q, want exactly one assertion", got)
	}
	c := verifyAssertion(t, s, got[0])
	if c.Subject != testCustomerID || c.Audience != "api.example" || c.Issuer != "caddy-rebell" ||
		c.Expiry-c.IssuedAt != 300 || c.SID != s.SID(k) {
		t.Errorf("claims %+v", c)
	}
	if strings.Contains(got[0], testToken) || strings.Contains(got[0], id) {
		t.Error("the assertion carries the token or the session id")
	}
	if up.header.Get("X-Rebell-Access-Token") != testToken {
		t.Error("the access token is no longer sent by default")
	}
	// The echoing upstream does not hand the assertion to the client.
	for name := range w.Header() {
		if strings.EqualFold(name, "X-Rebell-Identity") {
			t.Errorf("response header %s leaked", name)
		}
	}
	// The same session's next request reuses the assertion.
	up2 := &upstream{}
	if _, err := e.serve(get("https://api.example:8443/api", "Authorization", bearer(id)), up2); err != nil {
		t.Fatal(err)
	}
	if up2.header.Get("X-Rebell-Identity") != got[0] {
		t.Error("the assertion was signed again within half its ttl")
	}
}

func TestIdentityAssertionEdges(t *testing.T) {
	s := testSigner(t, "api")
	e := newEnv(t, func(c *Config) { c.Identity = s; c.IdentityHeader = "X-Id" })
	id := e.s.add()
	// Trailers and Connection: the assertion header is removed from both.
	r := httptest.NewRequest(http.MethodPost, "/api", nil)
	r.Header.Set("Authorization", bearer(id))
	r.Header["Connection"] = []string{"keep-alive, x-id, X_ID"}
	r.ContentLength = -1
	r.Trailer = http.Header{"X-Id": nil, "X_id": nil}
	r.Body = &trailerBody{r: r, body: strings.NewReader("b"), values: http.Header{"X-Id": {"forged"}, "X_id": {"forged"}}}
	next := &bodyReader{}
	if w, err := e.serve(r, next); err != nil || w.Code != 200 {
		t.Fatalf("%v %d", err, w.Code)
	}
	if len(next.announced) != 0 || len(next.trailers) != 0 {
		t.Errorf("trailers %v %v", next.announced, next.trailers)
	}
	if !slices.Equal(next.connection, []string{"keep-alive"}) {
		t.Errorf("Connection %q", next.connection)
	}
	if v := next.header.Values("X-Id"); len(v) != 1 || verifyAssertion(t, s, v[0]).Audience != "api" {
		t.Errorf("X-Id %q", v)
	}
	// A response trailer of that name is removed too.
	up := &upstream{serve: func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(200)
		w.Header().Set(http.TrailerPrefix+"X-Id", "leak")
	}}
	w, _ := e.serve(get("/api", "Authorization", bearer(id)), up)
	if _, ok := w.Header()[http.TrailerPrefix+"X-Id"]; ok {
		t.Error("response trailer X-Id survived")
	}
}

func TestOmitAccessToken(t *testing.T) {
	s := testSigner(t, "api")
	// The header that would carry the token is still removed from requests.
	for header, spoof := range map[string]string{"": "X-Rebell-Access-Token", "X-Token": "X_token"} {
		e := newEnv(t, func(c *Config) { c.Identity = s; c.OmitAccessToken = true; c.AccessTokenHeader = header })
		id := e.s.add()
		up := &upstream{echo: true}
		r := get("/api", "Authorization", bearer(id), spoof, "forged")
		w, err := e.serve(r, up)
		if err != nil || w.Code != 200 {
			t.Fatalf("%v %d", err, w.Code)
		}
		for name, vals := range up.header {
			for _, v := range vals {
				if strings.Contains(v, testToken) || v == "forged" {
					t.Errorf("access_token_header %q off: upstream header %s = %q", header, name, v)
				}
			}
		}
		if up.header.Get("X-Rebell-Customer-Id") != testCustomerID || up.header.Get("X-Rebell-Identity") == "" {
			t.Errorf("identity missing: %v", up.header)
		}
	}
}

func TestJWKSPath(t *testing.T) {
	s := testSigner(t, "api")
	e := newEnv(t, func(c *Config) { c.Identity = s })
	r := get("/.well-known/rebell-jwks.json", "Cookie", "rebell_session=x; a=1")
	up := &upstream{}
	w, err := e.serve(r, up)
	if err != nil || w.Code != 200 || up.called {
		t.Fatalf("%v %d, upstream called %v", err, w.Code, up.called)
	}
	if w.Body.String() != string(s.JWKS()) || w.Header().Get("Cache-Control") != identity.JWKSCacheControl {
		t.Errorf("JWKS response %v %s", w.Header(), w.Body)
	}
	if got := e.cb.outcomes; !slices.Equal(got, []string{"jwks"}) {
		t.Errorf("outcomes %q", got)
	}
	w, _ = e.serve(httptest.NewRequest(http.MethodPost, "/.well-known/rebell-jwks.json", nil), up)
	if w.Code != http.StatusMethodNotAllowed || up.called {
		t.Errorf("POST: %d", w.Code)
	}
	// Without an identity assertion the path is an ordinary one.
	plain := newEnv(t, nil)
	w, _ = plain.serve(get("/.well-known/rebell-jwks.json"), up)
	wantError(t, w, http.StatusUnauthorized, "session_required")
	// Configured path.
	custom := newEnv(t, func(c *Config) { c.Identity = s; c.JWKSPath = "/keys" })
	if w, _ = custom.serve(get("/keys"), up); w.Code != 200 || up.called {
		t.Errorf("custom jwks_path: %d", w.Code)
	}
}

func TestIdentityConfigErrors(t *testing.T) {
	s := testSigner(t, "api")
	for name, cfg := range map[string]Config{
		"header is customer":  {Identity: s, IdentityHeader: "x-rebell-customer-id"},
		"header is session":   {Identity: s, IdentityHeader: "Authorization"},
		"header invalid":      {Identity: s, IdentityHeader: "X Id"},
		"jwks is login":       {Identity: s, JWKSPath: "/rebell/login"},
		"jwks without slash":  {Identity: s, JWKSPath: "keys"},
		"header is the token": {Identity: s, IdentityHeader: "X_Rebell_Access_Token"},
	} {
		cfg.Sessions = newFakeSessions()
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestIdentityCachedAllocs: with the identity assertion on (and with the
// access token off) a cached request still allocates at most once.
func TestIdentityCachedAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	s := testSigner(t, "")
	for _, omit := range []bool{false, true} {
		h, r, reset := cachedRequest(t, func(c *Config) { c.Identity = s; c.OmitAccessToken = omit })
		w := &nopWriter{h: http.Header{}}
		allocs := testing.AllocsPerRun(1000, func() {
			reset()
			_ = h.ServeHTTP(w, r, nopNext{})
		})
		if allocs > 1 {
			t.Errorf("omit %v: a cached request with the identity assertion allocates %v times, want at most 1", omit, allocs)
		}
	}
}

// BenchmarkServeHTTPCachedIdentity is BenchmarkServeHTTPCached with the
// identity assertion on.
func BenchmarkServeHTTPCachedIdentity(b *testing.B) {
	h, r, reset := cachedRequest(b, func(c *Config) { c.Identity = testSigner(b, "") })
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		reset()
		if err := h.ServeHTTP(w, r, nopNext{}); err != nil {
			b.Fatal(err)
		}
	}
}

var _ identity.Memo = (*cache.Grant)(nil)

// TestIdentityReSignedAfterRefresh: a refresh makes a new grant, and the
// first request with it gets a new assertion, although the old one had
// time left.
func TestIdentityReSignedAfterRefresh(t *testing.T) {
	k := testSigner(t, "api").Keys()[0]
	clock := fakeclock.New(testNow)
	s, err := identity.New(identity.Config{Key: k, Audience: "api", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Identity = s })
	id := e.s.add()
	key, _ := testIDs.Parse(id)
	assertion := func() string {
		up := &upstream{}
		if w, err := e.serve(get("/api", "Authorization", bearer(id)), up); err != nil || w.Code != 200 {
			t.Fatalf("%v %d", err, w.Code)
		}
		return up.header.Get("X-Rebell-Identity")
	}
	first := assertion()
	clock.Advance(10 * time.Second)
	if assertion() != first {
		t.Fatal("re-signed within half the ttl without a refresh")
	}
	e.s.mu.Lock()
	e.s.sessions[key] = testGrant() // what a refresh does: a new grant
	e.s.mu.Unlock()
	renewed := assertion()
	if renewed == first {
		t.Fatal("the new grant reused the old grant's assertion")
	}
	if c := verifyAssertion(t, s, renewed); c.IssuedAt != testNow.Unix()+10 {
		t.Errorf("iat %d", c.IssuedAt)
	}
}
