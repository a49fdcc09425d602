package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rebell-gateway/caddy-rebell/internal/fakeclock"
)

func pemPrivate(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func pemPublic(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func newEd25519(t testing.TB) (*Key, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(pemPrivate(t, priv))
	if err != nil {
		t.Fatal(err)
	}
	return k, priv
}

func newP256(t testing.TB) (*Key, *ecdsa.PrivateKey) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(pemPrivate(t, priv))
	if err != nil {
		t.Fatal(err)
	}
	return k, priv
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestKIDIsRFC7638Thumbprint(t *testing.T) {
	k, priv := newEd25519(t)
	// RFC 7638 §3 / RFC 8037 §2: the required members in lexical order.
	want := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + b64(priv.Public().(ed25519.PublicKey)) + `"}`))
	if k.KID() != b64(want[:]) || k.Alg() != "EdDSA" || !k.CanSign() {
		t.Errorf("Ed25519 key: kid %s alg %s", k.KID(), k.Alg())
	}
	pk, ecPriv := newP256(t)
	x, y := make([]byte, 32), make([]byte, 32)
	ecPriv.X.FillBytes(x)
	ecPriv.Y.FillBytes(y)
	want = sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + b64(x) + `","y":"` + b64(y) + `"}`))
	if pk.KID() != b64(want[:]) || pk.Alg() != "ES256" {
		t.Errorf("P-256 key: kid %s alg %s", pk.KID(), pk.Alg())
	}
	// The public half has the same kid and cannot sign.
	pub, err := ParseKey(pemPublic(t, &ecPriv.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if pub.KID() != pk.KID() || pub.CanSign() {
		t.Errorf("public key: kid %s, can sign %v", pub.KID(), pub.CanSign())
	}
}

func TestParseKeyRejects(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // only its type matters
	sec1, _ := x509.MarshalECPrivateKey(p384)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	two := append(pemPrivate(t, ed), pemPrivate(t, ed)...)
	cases := map[string]struct {
		data []byte
		want string
	}{
		"empty":     {nil, "not a PEM key"},
		"garbage":   {[]byte("hello"), "not a PEM key"},
		"P-384":     {pemPrivate(t, p384), "only P-256"},
		"P-384 pub": {pemPublic(t, &p384.PublicKey), "only P-256"},
		"RSA":       {pemPrivate(t, rsaKey), "not supported"},
		"SEC1":      {pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), "openssl pkcs8"},
		"bad DER":   {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "not a valid PKCS#8"},
		"cert":      {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), "is not a PRIVATE KEY"},
		"two keys":  {two, "more than one PEM block"},
	}
	for name, c := range cases {
		_, err := ParseKey(c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
	// A file's errors name the file.
	dir := t.TempDir()
	path := filepath.Join(dir, "id.pem")
	if err := os.WriteFile(path, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadKeyFile: %v", err)
	}
	if _, err := ReadKeyFile(filepath.Join(dir, "missing.pem")); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("ReadKeyFile of a missing file: %v", err)
	}
}

// TestKeyNeverPrints: no fmt verb prints key material.
func TestKeyNeverPrints(t *testing.T) {
	k, priv := newEd25519(t)
	secrets := []string{b64(priv.Seed()), fmt.Sprintf("%x", priv.Seed()), fmt.Sprint([]byte(priv.Seed()))}
	for _, v := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q", "%d"} {
		for _, arg := range []any{k, *k, struct{ K *Key }{k}} {
			out := fmt.Sprintf(v, arg)
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Fatalf("%s of %T prints the key: %s", v, arg, out)
				}
			}
		}
	}
}

// grantMemo is a Memo like *cache.Grant.
type grantMemo struct{ v any }

func (g *grantMemo) Memo() any     { return g.v }
func (g *grantMemo) SetMemo(v any) { g.v = v }

func verify(t *testing.T, s *Signer, tok string) (jose.Header, Claims) {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	h := parsed.Headers[0]
	keys := set.Key(h.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %s: %d keys in the JWKS", h.KeyID, len(keys))
	}
	var c Claims
	if err := parsed.Claims(keys[0].Key, &c); err != nil {
		t.Fatal(err)
	}
	return h, c
}

func TestAssertionVerifies(t *testing.T) {
	for _, kind := range []string{"Ed25519", "P-256"} {
		t.Run(kind, func(t *testing.T) {
			k, _ := newEd25519(t)
			if kind == "P-256" {
				k, _ = newP256(t)
			}
			clock := fakeclock.New(time.Unix(1_800_000_000, 0))
			s, err := New(Config{Key: k, TTL: time.Minute, Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			sessionKey := sha256.Sum256([]byte("a session id"))
			tok, err := s.Assertion(&grantMemo{}, sessionKey, "2188000000000001", "Gw.Example:8443")
			if err != nil {
				t.Fatal(err)
			}
			h, c := verify(t, s, tok)
			if h.Algorithm != k.Alg() || h.KeyID != k.KID() || h.ExtraHeaders[jose.HeaderType] != "JWT" {
				t.Errorf("header %+v", h)
			}
			want := Claims{Issuer: "caddy-rebell", Audience: "gw.example", Subject: "2188000000000001",
				IssuedAt: 1_800_000_000, Expiry: 1_800_000_060, SID: s.SID(sessionKey)}
			if c != want {
				t.Errorf("claims %+v, want %+v", c, want)
			}
			if len(c.SID) != 22 || strings.Contains(tok, b64(sessionKey[:])) {
				t.Errorf("sid %q", c.SID)
			}
		})
	}
}

func TestAssertionReusedUntilHalfTTL(t *testing.T) {
	k, _ := newEd25519(t)
	clock := fakeclock.New(time.Unix(1_800_000_000, 0))
	s, err := New(Config{Key: k, TTL: time.Minute, Audience: "api.example", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	m := &grantMemo{}
	var sk [32]byte
	first, _ := s.Assertion(m, sk, "c1", "a.example")
	clock.Advance(29 * time.Second)
	if again, _ := s.Assertion(m, sk, "c1", "b.example"); again != first {
		t.Error("re-signed before half the ttl (with a configured audience the host does not matter)")
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _ = s.Assertion(m, sk, "c1", "a.example") }); allocs != 0 {
		t.Errorf("reuse allocates %v times", allocs)
	}
	clock.Advance(time.Second)
	renewed, _ := s.Assertion(m, sk, "c1", "a.example")
	if renewed == first {
		t.Fatal("not re-signed after half the ttl")
	}
	if _, c := verify(t, s, renewed); c.IssuedAt != 1_800_000_030 || c.Expiry-c.IssuedAt != 60 || c.Audience != "api.example" {
		t.Errorf("renewed claims %+v", c)
	}
	// A new grant (an empty memo) gets its own; another Signer (a reload)
	// does not reuse this one's.
	if other, _ := s.Assertion(&grantMemo{}, sk, "c1", "a.example"); other == "" {
		t.Error("no assertion for a new grant")
	}
	s2, _ := New(Config{Key: k, TTL: time.Minute, Audience: "api.example", Now: clock.Now, Issuer: "other"})
	if tok, _ := s2.Assertion(m, sk, "c1", "a.example"); tok == renewed {
		t.Error("another Signer reused the memo")
	}
}

func TestAssertionPerHostWithoutAudience(t *testing.T) {
	k, _ := newP256(t)
	s, _ := New(Config{Key: k})
	m := &grantMemo{}
	var sk [32]byte
	a, _ := s.Assertion(m, sk, "c1", "a.example")
	b, _ := s.Assertion(m, sk, "c1", "b.example")
	if a == b {
		t.Fatal("one assertion for two hosts")
	}
	if _, c := verify(t, s, b); c.Audience != "b.example" {
		t.Errorf("aud %q", c.Audience)
	}
	if again, _ := s.Assertion(m, sk, "c1", "b.example"); again != b {
		t.Error("not reused for the same host")
	}
	for in, want := range map[string]string{"[::1]:443": "::1", "EXAMPLE.com": "example.com", "x.example:80": "x.example"} {
		if got := hostName(in); got != want {
			t.Errorf("hostName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSID(t *testing.T) {
	k1, _ := newEd25519(t)
	k2, _ := newEd25519(t)
	s1, _ := New(Config{Key: k1})
	s1b, _ := New(Config{Key: k1, Issuer: "x"})
	s2, _ := New(Config{Key: k2})
	a, b := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	if s1.SID(a) != s1b.SID(a) {
		t.Error("sid differs between Signers with the same key")
	}
	if s1.SID(a) == s1.SID(b) || s1.SID(a) == s2.SID(a) {
		t.Error("sid collides")
	}
}

func TestNewRejects(t *testing.T) {
	k, priv := newEd25519(t)
	pub, _ := ParseKey(pemPublic(t, priv.Public()))
	for name, cfg := range map[string]Config{
		"no key":      {},
		"public key":  {Key: pub},
		"ttl short":   {Key: k, TTL: 9 * time.Second},
		"ttl long":    {Key: k, TTL: time.Hour + time.Second},
		"ttl partial": {Key: k, TTL: 10500 * time.Millisecond},
		"audience":    {Key: k, Audience: " a"},
		"issuer":      {Key: k, Issuer: "a\nb"},
		"nil prev":    {Key: k, Previous: []*Key{nil}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestJWKS(t *testing.T) {
	k, _ := newEd25519(t)
	old, oldPriv := newP256(t)
	oldPub, _ := ParseKey(pemPublic(t, &oldPriv.PublicKey))
	s, err := New(Config{Key: k, Previous: []*Key{old, oldPub, k}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Cache-Control") != JWKSCacheControl || resp.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Errorf("headers %v", resp.Header)
	}
	if len(doc.Keys) != 2 || doc.Keys[0]["kid"] != k.KID() || doc.Keys[1]["kid"] != old.KID() ||
		doc.Keys[0]["alg"] != "EdDSA" || doc.Keys[1]["alg"] != "ES256" || doc.Keys[0]["use"] != "sig" {
		t.Errorf("keys %v", doc.Keys)
	}
	for _, key := range doc.Keys {
		if _, ok := key["d"]; ok {
			t.Fatal("the JWKS publishes a private key")
		}
	}
	// An assertion of the previous key (signed before a rotation) verifies
	// against the new JWKS.
	before, _ := New(Config{Key: old})
	tok, _ := before.Assertion(&grantMemo{}, [32]byte{}, "c1", "h")
	if h, _ := verify(t, s, tok); h.KeyID != old.KID() {
		t.Errorf("kid %s", h.KeyID)
	}
	post, _ := http.Post(srv.URL, "text/plain", nil)
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed || post.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d %v", post.StatusCode, post.Header)
	}
}
