package upstream

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/identity"
	"github.com/rebell-gateway/caddy-rebell/internal/fakeclock"
)

func newKey(t *testing.T) *identity.Key {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	k, err := identity.ParseKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type memo struct{ v any }

func (m *memo) Memo() any     { return m.v }
func (m *memo) SetMemo(v any) { m.v = v }

// TestMiddleware runs the middleware against a JWKS served by the gateway's
// own signer over real HTTP on 127.0.0.1 (the integration tests run it
// against a real gateway).
func TestMiddleware(t *testing.T) {
	clock := fakeclock.New(time.Unix(1_800_000_000, 0))
	k1 := newKey(t)
	signer, _ := identity.New(identity.Config{Key: k1, Audience: "api.example", Now: clock.Now})
	var current atomic.Pointer[identity.Signer]
	current.Store(signer)
	var fetches atomic.Int32
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		current.Load().ServeHTTP(w, r)
	}))
	defer jwks.Close()
	v, err := New(Config{JWKSURL: jwks.URL, Audience: "api.example", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	app := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := FromContext(r.Context())
		_, _ = io.WriteString(w, id.CustomerID+" "+id.SessionHandle)
	})))
	defer app.Close()
	call := func(assertions ...string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, app.URL, nil)
		for _, a := range assertions {
			req.Header.Add("X-Rebell-Identity", a)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var sk [32]byte
	good, _ := signer.Assertion(&memo{}, sk, "2188000000000001", "ignored")
	if code, body := call(good); code != 200 || body != "2188000000000001 "+signer.SID(sk) {
		t.Fatalf("good assertion: %d %q", code, body)
	}
	other, _ := identity.New(identity.Config{Key: k1, Audience: "other.example", Now: clock.Now})
	wrongAud, _ := other.Assertion(&memo{}, sk, "c", "")
	forger, _ := identity.New(identity.Config{Key: newKey(t), Audience: "api.example", Now: clock.Now})
	forged, _ := forger.Assertion(&memo{}, sk, "c", "")
	for name, as := range map[string][]string{
		"none": nil, "two": {good, good}, "garbage": {"a.b.c"}, "tampered": {good[:len(good)-3] + "AAA"},
		"wrong aud": {wrongAud}, "unknown key": {forged},
	} {
		if code, _ := call(as...); code != http.StatusUnauthorized {
			t.Errorf("%s: %d", name, code)
		}
	}
	// Expired, past the leeway.
	clock.Advance(5*time.Minute + DefaultLeeway + time.Second)
	if code, _ := call(good); code != http.StatusUnauthorized {
		t.Errorf("expired: %d", code)
	}
	// Rotation: the gateway signs with k2 and publishes k1 as previous; an
	// unknown kid makes the verifier fetch the JWKS again.
	k2 := newKey(t)
	rotated, _ := identity.New(identity.Config{Key: k2, Previous: []*identity.Key{k1}, Audience: "api.example", Now: clock.Now})
	current.Store(rotated)
	clock.Advance(refetchEvery)
	fresh, _ := rotated.Assertion(&memo{}, sk, "2188000000000002", "")
	before := fetches.Load()
	if code, _ := call(fresh); code != 200 || fetches.Load() != before+1 {
		t.Errorf("after rotation: %d, fetches %d→%d", code, before, fetches.Load())
	}
	oldStill, _ := signer.Assertion(&memo{}, sk, "2188000000000001", "")
	if code, _ := call(oldStill); code != 200 {
		t.Errorf("assertion of the previous key: %d", code)
	}
	if _, err := New(Config{Audience: "x"}); err == nil {
		t.Error("New without JWKSURL")
	}
}
