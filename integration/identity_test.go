package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	verifier "github.com/rebell-gateway/caddy-rebell/upstream"
)

// writeIdentityKey writes a new identity key, Ed25519 or (ec) P-256.
func writeIdentityKey(t *testing.T, ec bool) string {
	t.Helper()
	return testkeys.WriteIdentityKey(t, t.TempDir(), "identity.pem", ec)
}

// identityGateway is a gateway with identity_assertion whose site also
// answers /debug/token with the session's access token (a placeholder), so
// a test can look for the token in what the upstream received.
type identityGateway struct {
	*gateway
}

func (g *identityGateway) caddyfile() string {
	return sandboxSite(g.kf, g.sbPort, 0, "") + fmt.Sprintf(`
http://127.0.0.1:%d {
	rebell_auth {
		endpoint http://127.0.0.1:%d
		client_id MERCHANT_IT
		private_key_file %s
		rebell_public_key_file %s
		retries 1
		%s
	}
	handle /debug/token {
		respond "{http.rebell.access_token}"
	}
	reverse_proxy %s
}
`, g.gwPort, g.sbPort, g.kf.MerchantPrivate, g.kf.PlatformPublic, g.authOpts, strings.TrimPrefix(g.up.URL, "http://"))
}

func startIdentityGateway(t *testing.T, authOpts string) *identityGateway {
	g := &identityGateway{&gateway{t: t, up: newUpstream(t), kf: writeKeys(t, t.TempDir()), gwPort: freePort(t), sbPort: freePort(t), authOpts: authOpts}}
	g.base = fmt.Sprintf("http://127.0.0.1:%d", g.gwPort)
	g.sandbox = fmt.Sprintf("http://127.0.0.1:%d", g.sbPort)
	g.caddy = startCaddy(t, g.caddyfile(), g.gwPort, g.sbPort)
	return g
}

// fetchJWKS gets a JWKS without any credential.
func fetchJWKS(t *testing.T, url string) (jose.JSONWebKeySet, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("JWKS %s: %v", body, err)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Fatal("the JWKS publishes a private key")
		}
	}
	return set, resp.Header
}

// assertionClaims are the claims of an assertion as the upstream reads them.
type assertionClaims struct {
	Iss string `json:"iss"`
	Aud string `json:"aud"`
	Sub string `json:"sub"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
	Sid string `json:"sid"`
}

// verifyAssertion verifies tok against set and returns its header and
// claims.
func verifyAssertion(t *testing.T, set jose.JSONWebKeySet, tok string) (jose.Header, assertionClaims) {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	h := parsed.Headers[0]
	keys := set.Key(h.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %s: %d keys in the JWKS", h.KeyID, len(keys))
	}
	var c assertionClaims
	if err := parsed.Claims(keys[0].Key, &c); err != nil {
		t.Fatalf("assertion does not verify: %v", err)
	}
	return h, c
}

// identityValues returns every value of every spelling of the assertion
// header in hd.
func identityValues(hd http.Header) []string {
	var vals []string
	for k, v := range hd {
		if strings.EqualFold(strings.ReplaceAll(strings.TrimSpace(k), "_", "-"), "x-rebell-identity") {
			vals = append(vals, v...)
		}
	}
	return vals
}

func TestIdentityAssertion(t *testing.T) {
	for _, tc := range []struct {
		name, alg string
		ec, off   bool
	}{
		{"Ed25519", "EdDSA", false, false},
		{"P-256 access_token_header off", "ES256", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := fmt.Sprintf("identity_assertion {\n\t\t\tsigning_key_file %s\n\t\t\tttl 2m\n\t\t}", writeIdentityKey(t, tc.ec))
			if tc.off {
				opts += "\n\t\taccess_token_header off"
			}
			g := startIdentityGateway(t, opts)
			jwksURL := g.base + "/.well-known/rebell-jwks.json"
			set, hd := fetchJWKS(t, jwksURL)
			if len(set.Keys) != 1 || set.Keys[0].Algorithm != tc.alg || hd.Get("Cache-Control") != "public, max-age=300" {
				t.Fatalf("JWKS %+v %v", set.Keys, hd)
			}

			lr := g.mustLogin("2188000000000901")
			h := bearer(lr.SessionID)
			h["X-Rebell-Identity"] = "forged-1"
			h["x_rebell_identity"] = "forged-2"
			h["Connection"] = "X-Rebell-Identity"
			resp, body := g.call(http.MethodGet, "/api/orders", h)
			if resp.StatusCode != http.StatusOK || body["customerId"] != "2188000000000901" {
				t.Fatalf("API call: %d %v", resp.StatusCode, body)
			}
			up := g.up.lastHeader()
			got := identityValues(up)
			if len(got) != 1 || strings.HasPrefix(got[0], "forged") {
				t.Fatalf("upstream assertions %q, want exactly one of the gateway's", got)
			}
			assertion := got[0]
			head, c := verifyAssertion(t, set, assertion)
			if head.Algorithm != tc.alg || head.KeyID != set.Keys[0].KeyID || head.ExtraHeaders[jose.HeaderType] != "JWT" {
				t.Errorf("header %+v", head)
			}
			if c.Sub != "2188000000000901" || c.Aud != "127.0.0.1" || c.Iss != "caddy-rebell" || c.Exp-c.Iat != 120 || len(c.Sid) != 22 {
				t.Errorf("claims %+v", c)
			}

			// The session's access token, from the placeholder.
			tresp, err := http.DefaultClient.Do(mustRequest(t, g.base+"/debug/token", lr.SessionID))
			if err != nil {
				t.Fatal(err)
			}
			tok, _ := io.ReadAll(tresp.Body)
			tresp.Body.Close()
			if len(tok) < 8 {
				t.Fatalf("debug token %q", tok)
			}
			if strings.Contains(assertion, string(tok)) || strings.Contains(assertion, lr.SessionID) {
				t.Error("the assertion carries the access token or the session id")
			}
			payload, _ := jwtPayload(assertion)
			if strings.Contains(payload, string(tok)) || strings.Contains(payload, lr.SessionID) || strings.Contains(payload, lr.SessionID[:20]) {
				t.Error("the assertion's claims carry the access token or the session id")
			}
			carries := false
			for _, vals := range up {
				for _, v := range vals {
					carries = carries || strings.Contains(v, string(tok))
				}
			}
			if carries == tc.off {
				t.Errorf("access_token_header off=%v, but the upstream received the token: %v", tc.off, carries)
			}

			// The Go example (package upstream) accepts it, fetching the
			// JWKS from the site.
			v, err := verifier.New(verifier.Config{JWKSURL: jwksURL, Audience: "127.0.0.1"})
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(context.Background(), assertion)
			if err != nil || id.CustomerID != "2188000000000901" || id.SessionHandle != c.Sid {
				t.Errorf("upstream.Verifier: %+v %v", id, err)
			}

			// The admin API lists the key too.
			adminSet, _ := fetchJWKS(t, "http://"+g.caddy.AdminAddr+"/rebell/jwks")
			if len(adminSet.Key(head.KeyID)) != 1 {
				t.Errorf("admin JWKS %+v lacks kid %s", adminSet.Keys, head.KeyID)
			}

			// After logout nothing is proxied.
			hits := g.up.hitCount()
			if resp, _ := g.call(http.MethodPost, "/rebell/logout", bearer(lr.SessionID)); resp.StatusCode != http.StatusNoContent {
				t.Fatalf("logout: %d", resp.StatusCode)
			}
			if resp, _ := g.call(http.MethodGet, "/api/orders", bearer(lr.SessionID)); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("after logout: %d", resp.StatusCode)
			}
			if g.up.hitCount() != hits {
				t.Error("a request was proxied after logout")
			}
		})
	}
}

// TestIdentityKeyRotation: after a reload that signs with a new key and
// keeps the old one as previous_key_file, an assertion signed before the
// change verifies against the new JWKS, and new ones carry the new kid.
func TestIdentityKeyRotation(t *testing.T) {
	oldKey, newKey := writeIdentityKey(t, false), writeIdentityKey(t, true)
	g := startIdentityGateway(t, fmt.Sprintf("identity_assertion {\n\t\t\tsigning_key_file %s\n\t\t\taudience api.example\n\t\t}", oldKey))
	jwksURL := g.base + "/.well-known/rebell-jwks.json"
	oldSet, _ := fetchJWKS(t, jwksURL)
	lr := g.mustLogin("2188000000000902")
	if resp, _ := g.call(http.MethodGet, "/api/a", bearer(lr.SessionID)); resp.StatusCode != http.StatusOK {
		t.Fatalf("API call: %d", resp.StatusCode)
	}
	before := identityValues(g.up.lastHeader())
	if len(before) != 1 {
		t.Fatalf("assertions %q", before)
	}

	g.authOpts = fmt.Sprintf("identity_assertion {\n\t\t\tsigning_key_file %s\n\t\t\tprevious_key_file %s\n\t\t\taudience api.example\n\t\t}", newKey, oldKey)
	g.caddy.reload(g.caddyfile())

	newSet, _ := fetchJWKS(t, jwksURL)
	if len(newSet.Keys) != 2 || newSet.Keys[0].Algorithm != "ES256" || newSet.Keys[1].KeyID != oldSet.Keys[0].KeyID {
		t.Fatalf("JWKS after rotation: %+v", newSet.Keys)
	}
	if h, c := verifyAssertion(t, newSet, before[0]); h.KeyID != oldSet.Keys[0].KeyID || c.Sub != "2188000000000902" {
		t.Errorf("old assertion against the new JWKS: %+v %+v", h, c)
	}
	v, _ := verifier.New(verifier.Config{JWKSURL: jwksURL, Audience: "api.example"})
	if _, err := v.Verify(context.Background(), before[0]); err != nil {
		t.Errorf("upstream.Verifier, old assertion after rotation: %v", err)
	}

	// The session lives on (the reload kept it) and its next request is
	// signed with the new key.
	if resp, _ := g.call(http.MethodGet, "/api/b", bearer(lr.SessionID)); resp.StatusCode != http.StatusOK {
		t.Fatalf("API call after reload: %d", resp.StatusCode)
	}
	after := identityValues(g.up.lastHeader())
	if len(after) != 1 {
		t.Fatalf("assertions %q", after)
	}
	h, c := verifyAssertion(t, newSet, after[0])
	if h.KeyID != newSet.Keys[0].KeyID || h.Algorithm != "ES256" || c.Sub != "2188000000000902" {
		t.Errorf("new assertion: %+v %+v", h, c)
	}
	if _, err := v.Verify(context.Background(), after[0]); err != nil {
		t.Errorf("upstream.Verifier, new assertion: %v", err)
	}
	adminSet, _ := fetchJWKS(t, "http://"+g.caddy.AdminAddr+"/rebell/jwks")
	if len(adminSet.Keys) != 2 {
		t.Errorf("admin JWKS after rotation: %+v", adminSet.Keys)
	}
}

func mustRequest(t *testing.T, url, sessionID string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+sessionID)
	return req
}

// jwtPayload returns the decoded claims of a compact JWS.
func jwtPayload(tok string) (string, error) {
	parsed, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		return "", err
	}
	return string(parsed.UnsafePayloadWithoutVerification()), nil
}

// hitCount returns how many requests the upstream received.
func (u *upstream) hitCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits
}
