package sandbox

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

const testClientID = "TEST_5Y0000000000REBELL"

// Keys are generated once per test binary: keygen is slow.
var (
	keysOnce    sync.Once
	merchantKey *rsa.PrivateKey // signs the test client's requests
	otherKey    *rsa.PrivateKey // a key nobody registered; also the forge key
	sandboxKey  *rsa.PrivateKey // signs the sandbox's responses
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		merchantKey, otherKey, sandboxKey = testkeys.RSA(0), testkeys.RSA(1), testkeys.RSA(2)
	})
}

// fakeClock is the injected clock; it never moves by itself.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a sandbox behind a real HTTP server on 127.0.0.1.
type env struct {
	sb     *Sandbox
	srv    *httptest.Server
	clock  *fakeClock
	prefix string // the path prefix the sandbox is mounted under
	signer *rebell.Signer
}

// newEnv starts a sandbox that checks signatures by merchantKey and signs
// with sandboxKey; opts adjust the Config.
func newEnv(t *testing.T, opts ...func(*Config)) *env {
	t.Helper()
	return newEnvAt(t, "", opts...)
}

// newEnvAt mounts the sandbox under prefix ("/api/open") with a mux that
// passes the path on unchanged, as a reverse proxy with a base path would.
func newEnvAt(t *testing.T, prefix string, opts ...func(*Config)) *env {
	t.Helper()
	testKeys(t)
	clock := newFakeClock()
	cfg := Config{
		ClientID:          testClientID,
		MerchantPublicKey: &merchantKey.PublicKey,
		PrivateKey:        sandboxKey,
		Now:               clock.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	sb, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	useForgeKey(t, sb)
	var h http.Handler = sb
	if prefix != "" {
		mux := http.NewServeMux()
		mux.Handle(prefix+"/", sb)
		h = mux
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	signer, err := rebell.NewSigner(testClientID, merchantKey, 1, rebell.AlgorithmRSA256)
	if err != nil {
		t.Fatal(err)
	}
	return &env{sb: sb, srv: srv, clock: clock, prefix: prefix, signer: signer}
}

// useForgeKey makes forgeSignature faults sign with otherKey instead of
// generating a key.
func useForgeKey(t testing.TB, sb *Sandbox) {
	t.Helper()
	sb.forgeOnce.Do(func() {
		sb.forger, sb.forgeErr = rebell.NewSigner(sb.clientID, otherKey, 1, rebell.AlgorithmRSA256)
	})
}

// call describes one applyToken request of the test client.
type call struct {
	version   string                         // "v1" or "v2" (default)
	path      string                         // path sent; default <prefix>/<version>/authorizations/applyToken
	signURI   string                         // URI signed; default path
	signer    *rebell.Signer                 // default the merchant's; see unsigned
	unsigned  bool                           // set Client-Id, Request-Time, Content-Type but no Signature
	at        time.Time                      // Request-Time; default the sandbox clock
	header    func(h http.Header)            // edits the headers after signing
	body      string                         // sent as is
	ctx       context.Context                // default context.Background()
	skipCheck bool                           // do not require a verifying, well-formed response
	mutate    func(req *http.Request) []byte // last-minute change; may return a new body
}

// reply is an applyToken response as the test client saw it.
type reply struct {
	status int
	header http.Header
	raw    []byte
	body   wireResponse
	sigErr error // response signature check against the sandbox's key
}

// wireResponse is the applyToken body shape the tests expect, decoded
// strictly.
type wireResponse struct {
	Result struct {
		ResultCode    string `json:"resultCode"`
		ResultStatus  string `json:"resultStatus"`
		ResultMessage string `json:"resultMessage"`
	} `json:"result"`
	AccessToken            string `json:"accessToken"`
	AccessTokenExpiryTime  string `json:"accessTokenExpiryTime"`
	RefreshToken           string `json:"refreshToken"`
	RefreshTokenExpiryTime string `json:"refreshTokenExpiryTime"`
	CustomerID             string `json:"customerId"`
}

func (e *env) path(version string) string {
	if version == "" {
		version = "v2"
	}
	return e.prefix + "/" + version + "/authorizations/applyToken"
}

// apply sends c and, unless c.skipCheck, requires a well-formed response
// whose signature verifies with the sandbox's public key.
func (e *env) apply(t *testing.T, c call) reply {
	t.Helper()
	if c.path == "" {
		c.path = e.path(c.version)
	}
	if c.signURI == "" {
		c.signURI = c.path
	}
	if c.signer == nil {
		c.signer = e.signer
	}
	if c.at.IsZero() {
		c.at = e.clock.Now()
	}
	if c.ctx == nil {
		c.ctx = context.Background()
	}
	body := []byte(c.body)
	h := http.Header{}
	if c.unsigned {
		h.Set(rebell.HeaderClientID, c.signer.ClientID())
		h.Set(rebell.HeaderRequestTime, rebell.FormatTime(c.at))
		h.Set(rebell.HeaderContentType, rebell.ContentType)
	} else if err := c.signer.Sign(h, rebell.HeaderRequestTime, http.MethodPost, c.signURI, body, c.at); err != nil {
		t.Fatalf("sign: %v", err)
	}
	if c.header != nil {
		c.header(h)
	}
	req, err := http.NewRequestWithContext(c.ctx, http.MethodPost, e.srv.URL+c.path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	if c.mutate != nil {
		if nb := c.mutate(req); nb != nil {
			req.Body = io.NopCloser(bytes.NewReader(nb))
			req.ContentLength = int64(len(nb))
		}
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("applyToken: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	// The response is signed over the URI the request was sent to.
	_, r.sigErr = rebell.VerifyMessage(e.sb.PublicKey(), resp.Header, rebell.HeaderResponseTime, http.MethodPost, c.path, raw)
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r.body); err != nil && !c.skipCheck {
			t.Fatalf("response body %s: %v", raw, err)
		}
	}
	if !c.skipCheck {
		r.requireWellFormed(t, e)
	}
	return r
}

// requireWellFormed checks what every applyToken response must have.
func (r reply) requireWellFormed(t *testing.T, e *env) {
	t.Helper()
	if r.sigErr != nil {
		t.Errorf("response signature does not verify: %v (body %s)", r.sigErr, r.raw)
	}
	if got := r.header.Get(rebell.HeaderClientID); got != testClientID {
		t.Errorf("response Client-Id = %q, want %q", got, testClientID)
	}
	if got, want := r.header.Get(rebell.HeaderResponseTime), rebell.FormatTime(e.clock.Now()); got != want {
		t.Errorf("Response-Time = %q, want %q", got, want)
	}
	if got := r.header.Get("Content-Type"); got != rebell.ContentType {
		t.Errorf("Content-Type = %q, want %q", got, rebell.ContentType)
	}
	if r.body.Result.ResultCode == "" || r.body.Result.ResultStatus == "" || r.body.Result.ResultMessage == "" {
		t.Errorf("incomplete result in %s", r.raw)
	}
	if r.body.Result.ResultCode != rebell.CodeSuccess && r.body.AccessToken != "" {
		t.Errorf("tokens in a failure response: %s", r.raw)
	}
}

// expect checks the HTTP status, resultStatus and resultCode.
func (r reply) expect(t *testing.T, httpStatus int, status, code string) {
	t.Helper()
	if r.status != httpStatus || r.body.Result.ResultStatus != status || r.body.Result.ResultCode != code {
		t.Errorf("got HTTP %d %s %s (%q), want HTTP %d %s %s",
			r.status, r.body.Result.ResultStatus, r.body.Result.ResultCode, r.body.Result.ResultMessage,
			httpStatus, status, code)
	}
}

// exchange redeems authCode with v and requires SUCCESS.
func (e *env) exchange(t *testing.T, version, authCode string) reply {
	t.Helper()
	r := e.apply(t, call{version: version, body: acBody(authCode)})
	r.expect(t, http.StatusOK, rebell.StatusSuccess, rebell.CodeSuccess)
	return r
}

func acBody(code string) string {
	return `{"grantType":"AUTHORIZATION_CODE","authCode":` + jsonString(code) + `}`
}

func rtBody(token string) string {
	return `{"grantType":"REFRESH_TOKEN","refreshToken":` + jsonString(token) + `}`
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// do sends a request to a /sandbox/* endpoint (path without the prefix).
func (e *env) do(t *testing.T, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+e.prefix+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, raw
}

// authCode issues a code over HTTP for customerID ("" = generated).
func (e *env) authCode(t *testing.T, customerID string) (code, cid string) {
	t.Helper()
	body := `{"scopes":["auth_user"]}`
	if customerID != "" {
		body = `{"customerId":` + jsonString(customerID) + `,"scopes":["auth_user"]}`
	}
	resp, raw := e.do(t, http.MethodPost, "/sandbox/authcode", body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /sandbox/authcode: %d %s", resp.StatusCode, raw)
	}
	var out struct {
		AuthCode   string `json:"authCode"`
		CustomerID string `json:"customerId"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out.AuthCode, out.CustomerID
}

// fault queues a fault and returns the pending count.
func (e *env) fault(t *testing.T, spec string) int {
	t.Helper()
	resp, raw := e.do(t, http.MethodPost, "/sandbox/faults", spec)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /sandbox/faults %s: %d %s", spec, resp.StatusCode, raw)
	}
	var out struct {
		Queued int `json:"queued"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out.Queued
}

// stats reads GET /sandbox/stats strictly.
func (e *env) stats(t *testing.T) Stats {
	t.Helper()
	resp, raw := e.do(t, http.MethodGet, "/sandbox/stats", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /sandbox/stats: %d %s", resp.StatusCode, raw)
	}
	var st Stats
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("stats %s: %v", raw, err)
	}
	return st
}
