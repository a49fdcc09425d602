package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rebell-gateway/caddy-rebell/handler"
	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
)

// writeIdentityKey writes a new identity key (Ed25519, or P-256 when ec)
// to the file name in dir and returns its path.
func writeIdentityKey(tb testing.TB, dir, name string, ec bool) string {
	tb.Helper()
	return testkeys.WriteIdentityKey(tb, dir, name, ec)
}

func TestIdentityCaddyfile(t *testing.T) {
	input := `rebell_auth {
		access_token_header off
		identity_assertion {
			signing_key_file /keys/{env.NOPE}/id.pem
			previous_key_file /keys/old1.pem /keys/old2.pem
			previous_key_file /keys/old3.pem
			header X-Id
			audience api.example
			issuer gw
			ttl 90s
			jwks_path /keys.json
		}
	}`
	var a Auth
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(a)
	want := `{"access_token_header":"off","identity_assertion":{"signing_key_file":"/keys/{env.NOPE}/id.pem",` +
		`"previous_key_files":["/keys/old1.pem","/keys/old2.pem","/keys/old3.pem"],"header":"X-Id","audience":"api.example",` +
		`"issuer":"gw","ttl":90000000000,"jwks_path":"/keys.json"}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	bad := map[string]string{
		"no key":       "header X",
		"both keys":    "signing_key_file /a\nsigning_key b",
		"ttl short":    "signing_key_file /a\nttl 5s",
		"ttl long":     "signing_key_file /a\nttl 2h",
		"ttl fraction": "signing_key_file /a\nttl 10500ms",
		"twice":        "signing_key_file /a\nheader X\nheader Y",
		"unknown":      "signing_key_file /a\nnope 1",
		"prev empty":   "signing_key_file /a\nprevious_key_file",
	}
	for name, body := range bad {
		var a Auth
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\nidentity_assertion {\n" + body + "\n}\n}"))
		if err == nil || !strings.Contains(err.Error(), "identity_assertion") {
			t.Errorf("%s: %v", name, err)
		}
	}
	var a2 Auth
	if err := a2.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\nidentity_assertion /a\n}")); err == nil {
		t.Error("identity_assertion with an argument accepted")
	}
}

// TestIdentityProvisionErrors: key files are read at provisioning, and the
// errors name the option and the file, never key material.
func TestIdentityProvisionErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeIdentityKey(t, dir, "good.pem", false)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	goodPEM, _ := os.ReadFile(good)
	cases := []struct {
		ia   IdentityAssertion
		want []string
	}{
		{IdentityAssertion{SigningKeyFile: filepath.Join(dir, "missing.pem")}, []string{"signing_key_file", "missing.pem"}},
		{IdentityAssertion{SigningKeyFile: garbage}, []string{"signing_key_file", "garbage.pem"}},
		{IdentityAssertion{SigningKey: "nope"}, []string{"signing_key:"}},
		{IdentityAssertion{}, []string{"one is required"}},
		{IdentityAssertion{SigningKeyFile: good, PreviousKeyFiles: []string{garbage}}, []string{"previous_key_file", "garbage.pem"}},
		{IdentityAssertion{SigningKeyFile: good, TTL: caddy.Duration(2 * 3600e9)}, []string{"ttl"}},
	}
	for _, c := range cases {
		ia := c.ia
		a := &Auth{IdentityAssertion: &ia}
		err := a.provisionIdentity(caddy.NewReplacer(), &handler.Config{})
		a.releaseIdentity()
		if err == nil {
			t.Errorf("%+v: accepted", c.ia)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q does not contain %q", c.ia, err, w)
			}
		}
		if strings.Contains(err.Error(), string(goodPEM[40:80])) {
			t.Errorf("error prints the key: %v", err)
		}
	}
}

// fakeSessionsForConfig satisfies handler.Sessions for config checks.
type fakeSessionsForConfig struct{ handler.Sessions }

// TestIdentityHeaderCollision: the assertion header must differ from the
// other identity headers.
func TestIdentityHeaderCollision(t *testing.T) {
	good := writeIdentityKey(t, t.TempDir(), "good.pem", false)
	a := &Auth{IdentityAssertion: &IdentityAssertion{SigningKeyFile: good, Header: "x_rebell_customer_id"}}
	cfg := handler.Config{Sessions: fakeSessionsForConfig{}}
	if err := a.provisionIdentity(caddy.NewReplacer(), &cfg); err != nil {
		t.Fatal(err)
	}
	defer a.releaseIdentity()
	if _, err := handler.New(cfg); err == nil || !strings.Contains(err.Error(), "identity_assertion header") {
		t.Errorf("New: %v", err)
	}
}

func TestCachedRequestIdentity(t *testing.T) {
	dir := t.TempDir()
	key := writeIdentityKey(t, dir, "id.pem", true)
	a, sid := provisionedAuth(t, func(a *Auth) {
		a.AccessTokenHeader = "off"
		a.IdentityAssertion = &IdentityAssertion{SigningKeyFile: key, Audience: "api.example"}
	})
	w := &discardWriter{h: http.Header{}}
	var upstream http.Header
	next := caddyhttp.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) error {
		upstream = r.Header.Clone()
		return nil
	})
	if err := a.ServeHTTP(w, newAPIRequest(w, sid), next); err != nil {
		t.Fatal(err)
	}
	if upstream.Get("X-Rebell-Identity") == "" || upstream.Get("X-Rebell-Access-Token") != "" ||
		upstream.Get("X-Rebell-Customer-Id") != "2188000000000001" {
		t.Errorf("upstream headers %v", upstream)
	}
	// The admin API lists the key while the config is loaded.
	rec := httptest.NewRecorder()
	if err := handleJWKS(rec, httptest.NewRequest(http.MethodGet, "/rebell/jwks", nil)); err != nil {
		t.Fatal(err)
	}
	var doc struct{ Keys []struct{ Kid, Alg string } }
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	kid := a.signerKID()
	found := false
	for _, k := range doc.Keys {
		found = found || k.Alg == "ES256" && k.Kid == kid
	}
	if !found || rec.Header().Get("Cache-Control") == "" {
		t.Errorf("admin JWKS %s", rec.Body)
	}
	if err := handleJWKS(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/rebell/jwks", nil)); err == nil {
		t.Error("POST /rebell/jwks accepted")
	}
	_ = a.Cleanup()
	rec = httptest.NewRecorder()
	_ = handleJWKS(rec, httptest.NewRequest(http.MethodGet, "/rebell/jwks", nil))
	if kid == "" || strings.Contains(rec.Body.String(), kid) {
		t.Error("the admin JWKS still lists the key of an unloaded config")
	}
}

// signerKID returns the kid this config signs with, "" when it has none.
func (a *Auth) signerKID() string {
	identitySigners.mu.Lock()
	defer identitySigners.mu.Unlock()
	if s := identitySigners.m[a]; s != nil {
		return s.KID()
	}
	return ""
}

// TestCachedRequestIdentityAllocs: with identity_assertion on, a cached
// request through rebell_auth still allocates at most once.
func TestCachedRequestIdentityAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	key := writeIdentityKey(t, t.TempDir(), "id.pem", false)
	a, sid := provisionedAuth(t, func(a *Auth) {
		a.IdentityAssertion = &IdentityAssertion{SigningKeyFile: key}
	})
	w := &discardWriter{h: http.Header{}}
	const runs = 1000
	reqs := make([]*http.Request, runs+1)
	for i := range reqs {
		reqs[i] = newAPIRequest(w, sid)
	}
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		if err := a.ServeHTTP(w, reqs[i], noopNext); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs > 1 {
		t.Errorf("a cached request with identity_assertion allocates %v times, want at most 1", allocs)
	}
}

// BenchmarkCachedRequestIdentity is BenchmarkCachedRequest with
// identity_assertion on (Ed25519, audience from the request's host).
func BenchmarkCachedRequestIdentity(b *testing.B) {
	key := writeIdentityKey(b, b.TempDir(), "id.pem", false)
	a, sid := provisionedAuth(b, func(a *Auth) {
		a.IdentityAssertion = &IdentityAssertion{SigningKeyFile: key}
	})
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
