package rebell_test

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/sandbox"
)

func key(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	return testkeys.RSA(i)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type env struct {
	sb     *sandbox.Sandbox
	srv    *httptest.Server
	clock  *clock
	prefix string
}

// newEnv serves a strict sandbox (checking the merchant's signatures and
// signing with the platform key) over real HTTP on 127.0.0.1, mounted under
// prefix.
func newEnv(t *testing.T, prefix string) *env {
	t.Helper()
	clk := &clock{now: time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)}
	sb, err := sandbox.New(sandbox.Config{
		ClientID:          "MERCHANT_1",
		MerchantPublicKey: &key(t, 0).PublicKey,
		PrivateKey:        key(t, 1),
		Now:               clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(prefix+"/", sb)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{sb: sb, srv: srv, clock: clk, prefix: prefix}
}

func (e *env) client(t *testing.T, mutate func(*rebell.ClientConfig)) *rebell.Client {
	t.Helper()
	signer, err := rebell.NewSigner("MERCHANT_1", key(t, 0), 1, rebell.AlgorithmSHA256withRSA)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rebell.ClientConfig{
		Endpoint:        e.srv.URL + e.prefix,
		Signer:          signer,
		RebellPublicKey: &key(t, 1).PublicKey,
		Timeout:         2 * time.Second,
		Retries:         2,
		BackoffBase:     time.Millisecond,
		BackoffMax:      5 * time.Millisecond,
		Now:             e.clock.Now,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := rebell.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) fault(t *testing.T, spec string) {
	t.Helper()
	resp, err := http.Post(e.srv.URL+e.prefix+"/sandbox/faults", "application/json", strings.NewReader(spec))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fault %s: %d", spec, resp.StatusCode)
	}
}

func wantKind(t *testing.T, err error, kind rebell.Kind, code string) *rebell.Error {
	t.Helper()
	var e *rebell.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *rebell.Error", err)
	}
	if e.Kind != kind || e.ResultCode != code {
		t.Fatalf("got %v (kind %v, code %q), want kind %v code %q", err, e.Kind, e.ResultCode, kind, code)
	}
	return e
}

func TestClientFlowAgainstSandbox(t *testing.T) {
	for _, tc := range []struct{ name, prefix, version string }{
		{"v2", "", "v2"},
		{"v1", "", "v1"},
		{"v2 under /api/open", "/api/open", "v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.prefix)
			c := e.client(t, func(cfg *rebell.ClientConfig) {
				cfg.APIVersion = tc.version
				cfg.CustomerBelongsTo = "REBELL"
				if tc.version == "v2" {
					cfg.ReferenceClientID = "3333010071465913001"
				}
			})
			if !strings.HasSuffix(c.URL(), tc.prefix+"/"+tc.version+"/authorizations/applyToken") {
				t.Fatalf("URL %s", c.URL())
			}
			ctx := context.Background()
			code, customer := e.sb.IssueAuthCode("2188000000000042")
			tok, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
			if err != nil {
				t.Fatal(err)
			}
			if tok.CustomerID != customer || tok.AccessToken.IsZero() || tok.RefreshToken.IsZero() {
				t.Fatalf("token %+v", tok)
			}
			if want := e.clock.Now().Add(30 * time.Minute); !tok.AccessTokenExpiry.Equal(want) {
				t.Errorf("access expiry %v, want %v", tok.AccessTokenExpiry, want)
			}
			// Single-use code.
			_, err = c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
			wantKind(t, err, rebell.KindAuthCodeRejected, "USED_CODE")
			_, err = c.ExchangeAuthCode(ctx, rebell.NewSecret("NeverIssued123"))
			wantKind(t, err, rebell.KindAuthCodeRejected, "INVALID_CODE")

			// Refresh rotates both tokens; the old refresh token is used.
			e.clock.Advance(time.Minute)
			tok2, err := c.Refresh(ctx, tok.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if tok2.AccessToken.Equal(tok.AccessToken) || tok2.RefreshToken.Equal(tok.RefreshToken) || tok2.RefreshToken.IsZero() {
				t.Fatal("refresh did not rotate both tokens")
			}
			_, err = c.Refresh(ctx, tok.RefreshToken)
			wantKind(t, err, rebell.KindRefreshTokenDead, "USED_REFRESH_TOKEN")
			_, err = c.Refresh(ctx, rebell.NewSecret("rt_never_issued"))
			wantKind(t, err, rebell.KindRefreshTokenDead, "INVALID_REFRESH_TOKEN")

			// Expiry from the sandbox's clock.
			code2, _ := e.sb.IssueAuthCode("")
			e.clock.Advance(6 * time.Minute)
			_, err = c.ExchangeAuthCode(ctx, rebell.NewSecret(code2))
			wantKind(t, err, rebell.KindAuthCodeRejected, "EXPIRED_CODE")
			e.clock.Advance(720 * time.Hour) // six minutes past expiry
			_, err = c.Refresh(ctx, tok2.RefreshToken)
			wantKind(t, err, rebell.KindRefreshTokenDead, "EXPIRED_REFRESH_TOKEN")

			st := e.sb.Stats()
			if st.ByGrantType["AUTHORIZATION_CODE"]["SUCCESS"] != 1 || st.ByGrantType["REFRESH_TOKEN"]["SUCCESS"] != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestClientConfigurationErrors(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()

	wrongID := e.client(t, func(cfg *rebell.ClientConfig) {
		cfg.Signer, _ = rebell.NewSigner("SOMEONE_ELSE", key(t, 0), 1, "")
	})
	code, _ := e.sb.IssueAuthCode("")
	_, err := wrongID.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	wantKind(t, err, rebell.KindConfiguration, "INVALID_AUTH_CLIENT")

	wrongKey := e.client(t, func(cfg *rebell.ClientConfig) {
		cfg.Signer, _ = rebell.NewSigner("MERCHANT_1", key(t, 2), 1, "")
	})
	_, err = wrongKey.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	wantKind(t, err, rebell.KindConfiguration, "INVALID_SIGNATURE")

	// A clock more than five minutes off is a stale signature.
	skewed := e.client(t, func(cfg *rebell.ClientConfig) {
		cfg.Now = func() time.Time { return e.clock.Now().Add(-6 * time.Minute) }
	})
	_, err = skewed.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	wantKind(t, err, rebell.KindConfiguration, "INVALID_SIGNATURE")

	// The code was never consumed by the rejected calls.
	if _, err := e.client(t, nil).ExchangeAuthCode(ctx, rebell.NewSecret(code)); err != nil {
		t.Fatalf("code consumed by rejected calls: %v", err)
	}
}

func TestClientRetriesAndFaults(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	var observed []string
	var mu sync.Mutex
	c := e.client(t, func(cfg *rebell.ClientConfig) {
		cfg.Observe = func(grant, result string, _ time.Duration) {
			mu.Lock()
			observed = append(observed, grant+":"+result)
			mu.Unlock()
		}
	})

	// Two U answers, then success on the third attempt.
	e.fault(t, `{"count":2,"resultStatus":"U","resultCode":"UNKNOWN_EXCEPTION"}`)
	code, _ := e.sb.IssueAuthCode("")
	if _, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code)); err != nil {
		t.Fatalf("after two U faults: %v", err)
	}
	want := "AUTHORIZATION_CODE:UNKNOWN_EXCEPTION AUTHORIZATION_CODE:UNKNOWN_EXCEPTION AUTHORIZATION_CODE:SUCCESS"
	if got := strings.Join(observed, " "); got != want {
		t.Errorf("observed %q, want %q", got, want)
	}

	// Three rate-limit answers exhaust 1 + 2 attempts.
	e.fault(t, `{"count":3,"resultStatus":"U","resultCode":"REQUEST_TRAFFIC_EXCEED_LIMIT"}`)
	code, _ = e.sb.IssueAuthCode("")
	_, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	if ee := wantKind(t, err, rebell.KindRetryable, "REQUEST_TRAFFIC_EXCEED_LIMIT"); ee.Attempts != 3 {
		t.Errorf("attempts = %d, want 3", ee.Attempts)
	}

	// An F answer is not retried.
	e.fault(t, `{"count":1,"resultStatus":"F","resultCode":"ACCESS_DENIED"}`)
	_, err = c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	if ee := wantKind(t, err, rebell.KindConfiguration, "ACCESS_DENIED"); ee.Attempts != 1 {
		t.Errorf("F retried: %d attempts", ee.Attempts)
	}
	// UNKNOWN_EXCEPTION with status F is still retryable.
	e.fault(t, `{"count":1,"resultStatus":"F","resultCode":"UNKNOWN_EXCEPTION"}`)
	if _, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code)); err != nil {
		t.Fatalf("F UNKNOWN_EXCEPTION then success: %v", err)
	}

	// HTTP 503 is retryable whatever the body says.
	e.fault(t, `{"count":3,"httpStatus":503}`)
	code, _ = e.sb.IssueAuthCode("")
	_, err = c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	if ee := wantKind(t, err, rebell.KindRetryable, "UNKNOWN_EXCEPTION"); ee.HTTPStatus != 503 {
		t.Errorf("HTTP status %d", ee.HTTPStatus)
	}

	// A grant-specific fault leaves the other grant alone.
	e.fault(t, `{"count":1,"grantType":"REFRESH_TOKEN","resultStatus":"F","resultCode":"ACCESS_DENIED"}`)
	tok, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Refresh(ctx, tok.RefreshToken)
	wantKind(t, err, rebell.KindConfiguration, "ACCESS_DENIED")
	if _, err := c.Refresh(ctx, tok.RefreshToken); err != nil {
		t.Fatalf("refresh token consumed by a fault: %v", err)
	}
}

// TestClientTimeouts: the per-attempt timeout and the caller's deadline cut
// attempts that Rebell answers late. The bounds are more than 25 times the
// timeouts, so a loaded machine under -race stays well inside them, while a
// client that ignored either fails within seconds.
func TestClientTimeouts(t *testing.T) {
	e := newEnv(t, "")
	c := e.client(t, func(cfg *rebell.ClientConfig) {
		cfg.Timeout = 100 * time.Millisecond
		cfg.Retries = 1
	})
	e.fault(t, `{"count":2,"delay":"60s"}`)
	code, _ := e.sb.IssueAuthCode("")
	// Without the per-attempt timeout, this deadline would end the call.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	ee := wantKind(t, err, rebell.KindRetryable, "")
	if ee.Attempts != 2 || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("attempts %d, error %v", ee.Attempts, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v: per-attempt timeout not applied", took)
	}

	// The caller's deadline bounds the whole call, retries included: without
	// it, the attempt would get Rebell's late U after 5s, and the retry
	// would succeed.
	e.fault(t, `{"count":1,"delay":"5s"}`)
	c = e.client(t, func(cfg *rebell.ClientConfig) { cfg.Timeout = time.Minute; cfg.Retries = 5 })
	ctx, cancel = context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	wantKind(t, err, rebell.KindRetryable, "")
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("took %v past the caller's deadline", took)
	}
}

func TestClientRejectsBadSignatures(t *testing.T) {
	e := newEnv(t, "")
	c := e.client(t, nil)
	ctx := context.Background()
	code, _ := e.sb.IssueAuthCode("")

	e.fault(t, `{"count":1,"resultStatus":"S","resultCode":"SUCCESS","forgeSignature":true}`)
	_, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	wantKind(t, err, rebell.KindBadSignature, "SUCCESS")
	if rebell.MetricResult(err) != "bad_signature" {
		t.Errorf("metric result %q", rebell.MetricResult(err))
	}

	e.fault(t, `{"count":1,"resultStatus":"F","resultCode":"INVALID_SIGNATURE","unsigned":true}`)
	_, err = c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	if be := wantKind(t, err, rebell.KindBadSignature, "INVALID_SIGNATURE"); be.Verified {
		t.Error("an unsigned answer counts as verified")
	}
	if got := rebell.VerifiedResultCode(err); got != "" {
		t.Errorf("VerifiedResultCode of an unsigned answer = %q", got)
	}
	if !strings.Contains(err.Error(), "unverified") {
		t.Errorf("error %q does not say the answer is unverified", err)
	}

	// A forged signature claiming an arbitrary resultCode.
	e.fault(t, `{"count":1,"resultStatus":"F","resultCode":"ATTACKER_CODE_XYZ","forgeSignature":true}`)
	_, err = c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	wantKind(t, err, rebell.KindBadSignature, "ATTACKER_CODE_XYZ")
	if got := rebell.VerifiedResultCode(err); got != "" {
		t.Errorf("VerifiedResultCode of a forged answer = %q", got)
	}

	// A verified failure carries its resultCode for the client.
	e.fault(t, `{"count":1,"resultStatus":"F","resultCode":"ACCESS_DENIED"}`)
	_, err = c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	if be := wantKind(t, err, rebell.KindConfiguration, "ACCESS_DENIED"); !be.Verified || rebell.VerifiedResultCode(err) != "ACCESS_DENIED" {
		t.Errorf("verified failure: Verified %v, VerifiedResultCode %q", be.Verified, rebell.VerifiedResultCode(err))
	}

	// A real success verified with the wrong platform key is not a success.
	wrongPub := e.client(t, func(cfg *rebell.ClientConfig) { cfg.RebellPublicKey = &key(t, 2).PublicKey })
	_, err = wrongPub.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	wantKind(t, err, rebell.KindBadSignature, "SUCCESS")

	// Without a platform key, responses are taken as they come.
	code2, _ := e.sb.IssueAuthCode("")
	e.fault(t, `{"count":1,"resultStatus":"F","resultCode":"ACCESS_DENIED","unsigned":true}`)
	noVerify := e.client(t, func(cfg *rebell.ClientConfig) { cfg.RebellPublicKey = nil })
	_, err = noVerify.ExchangeAuthCode(ctx, rebell.NewSecret(code2))
	if be := wantKind(t, err, rebell.KindConfiguration, "ACCESS_DENIED"); be.Verified {
		t.Error("an answer checked by no key counts as verified")
	}
}

// TestClientKeyRotation: with several Rebell keys configured, a response
// verifies if any of them verifies it, in any order; with none of them, it
// does not.
func TestClientKeyRotation(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	platform, other, third := &key(t, 1).PublicKey, &key(t, 2).PublicKey, &key(t, 3).PublicKey
	for name, keys := range map[string]struct {
		first *rsa.PublicKey
		more  []*rsa.PublicKey
		ok    bool
	}{
		"signing key second":      {other, []*rsa.PublicKey{platform}, true},
		"signing key last of 3":   {nil, []*rsa.PublicKey{other, third, platform}, true},
		"signing key first":       {platform, []*rsa.PublicKey{other}, true},
		"signing key not present": {other, []*rsa.PublicKey{third}, false},
	} {
		t.Run(name, func(t *testing.T) {
			c := e.client(t, func(cfg *rebell.ClientConfig) { cfg.RebellPublicKey, cfg.RebellPublicKeys = keys.first, keys.more })
			code, _ := e.sb.IssueAuthCode("")
			_, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
			if keys.ok && err != nil {
				t.Fatalf("login: %v", err)
			}
			if !keys.ok {
				wantKind(t, err, rebell.KindBadSignature, "SUCCESS")
			}
		})
	}
	if _, err := rebell.NewClient(rebell.ClientConfig{Endpoint: e.srv.URL, Signer: mustSigner(t), RebellPublicKeys: []*rsa.PublicKey{nil}}); err == nil {
		t.Error("a nil key was accepted")
	}
}

func mustSigner(t *testing.T) *rebell.Signer {
	t.Helper()
	s, err := rebell.NewSigner("MERCHANT_1", key(t, 0), 1, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestClientResponseLimits uses a hand-written server: the sandbox never
// misbehaves this way.
func TestClientResponseLimits(t *testing.T) {
	platform := key(t, 1)
	signer, _ := rebell.NewSigner("REBELL", platform, 1, "")
	var hits atomic.Int32
	var body []byte
	var sign bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if sign {
			_ = signer.Sign(w.Header(), rebell.HeaderResponseTime, "POST", r.URL.RequestURI(), body, time.Now())
		}
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	ms, _ := rebell.NewSigner("M", key(t, 0), 1, "")
	c, err := rebell.NewClient(rebell.ClientConfig{Endpoint: srv.URL, Signer: ms, RebellPublicKey: &platform.PublicKey, Retries: 2, BackoffBase: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ok := map[string]any{
		"result":                 map[string]string{"resultStatus": "S", "resultCode": "SUCCESS"},
		"accessToken":            "at",
		"accessTokenExpiryTime":  "2030-01-01T00:00:00Z",
		"refreshToken":           "rt",
		"refreshTokenExpiryTime": "2030-02-01T00:00:00Z",
		"customerId":             "c1",
		"padding":                strings.Repeat("x", rebell.MaxResponseBytes),
	}
	body, _ = json.Marshal(ok)
	sign = true
	_, err = c.ExchangeAuthCode(context.Background(), rebell.NewSecret("code"))
	wantKind(t, err, rebell.KindBadResponse, "")
	if hits.Load() != 1 {
		t.Errorf("a bad response was retried: %d hits", hits.Load())
	}
	// Unknown fields are tolerated within the limit.
	ok["padding"] = "short"
	body, _ = json.Marshal(ok)
	if _, err := c.ExchangeAuthCode(context.Background(), rebell.NewSecret("code")); err != nil {
		t.Fatal(err)
	}
}

func TestNewClientRejects(t *testing.T) {
	s, _ := rebell.NewSigner("M", key(t, 0), 1, "")
	for name, cfg := range map[string]rebell.ClientConfig{
		"no signer":                   {Endpoint: "https://api.rebellapp.com"},
		"relative":                    {Endpoint: "/v2", Signer: s},
		"ftp":                         {Endpoint: "ftp://host", Signer: s},
		"query":                       {Endpoint: "https://host?x=1", Signer: s},
		"version":                     {Endpoint: "https://host", Signer: s, APIVersion: "v3"},
		"reference in v1":             {Endpoint: "https://host", Signer: s, APIVersion: "v1", ReferenceClientID: "x"},
		"negative retries":            {Endpoint: "https://host", Signer: s, Retries: -1},
		"plain http":                  {Endpoint: "http://api.rebellapp.com", Signer: s},
		"http to a LAN IP":            {Endpoint: "http://10.0.0.5:8081", Signer: s},
		"http, loopback-looking name": {Endpoint: "http://127.0.0.1.example.com", Signer: s},
		"http to ::ffff:10.0.0.1":     {Endpoint: "http://[::ffff:10.0.0.1]", Signer: s},
	} {
		if _, err := rebell.NewClient(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for _, ep := range []string{"https://api.rebellapp.com", "http://localhost:8081", "http://LOCALHOST", "http://127.0.0.1:8081/api/open",
		"http://127.200.3.4", "http://[::1]:8081", "http://[::ffff:127.0.0.1]:1"} {
		if _, err := rebell.NewClient(rebell.ClientConfig{Endpoint: ep, Signer: s}); err != nil {
			t.Errorf("%s: %v", ep, err)
		}
	}
	_, err := rebell.NewClient(rebell.ClientConfig{Endpoint: "http://api.rebellapp.com", Signer: s})
	if err == nil || !strings.Contains(err.Error(), "https://") {
		t.Errorf("plain http: error %v does not ask for https://", err)
	}
}

// BenchmarkApplyTokenRoundTrip measures sign + verify + one applyToken
// round trip (auth code exchange) against the in-process sandbox over
// loopback HTTP.
func BenchmarkApplyTokenRoundTrip(b *testing.B) {
	clk := &clock{now: time.Now()}
	sb, err := sandbox.New(sandbox.Config{ClientID: "MERCHANT_1", MerchantPublicKey: &key(b, 0).PublicKey, PrivateKey: key(b, 1), Now: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	defer srv.Close()
	signer, _ := rebell.NewSigner("MERCHANT_1", key(b, 0), 1, "")
	c, _ := rebell.NewClient(rebell.ClientConfig{Endpoint: srv.URL, Signer: signer, RebellPublicKey: &key(b, 1).PublicKey})
	codes := make([]string, b.N)
	for i := range codes {
		codes[i], _ = sb.IssueAuthCode("")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.ExchangeAuthCode(context.Background(), rebell.NewSecret(codes[i])); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignVerify measures signing a request and verifying it.
func BenchmarkSignVerify(b *testing.B) {
	k := key(b, 0)
	signer, _ := rebell.NewSigner("MERCHANT_1", k, 1, "")
	body := []byte(`{"grantType":"REFRESH_TOKEN","refreshToken":"rt_0123456789abcdef0123456789abcdef"}`)
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		h := http.Header{}
		if err := signer.Sign(h, rebell.HeaderRequestTime, "POST", "/v2/authorizations/applyToken", body, now); err != nil {
			b.Fatal(err)
		}
		if _, err := rebell.VerifyMessage(&k.PublicKey, h, rebell.HeaderRequestTime, "POST", "/v2/authorizations/applyToken", body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestClientMayRetry: a retryable failure is not tried again once MayRetry
// answers false (the gateway's breaker has opened), whether it does so
// before the backoff or during it.
func TestClientMayRetry(t *testing.T) {
	e := newEnv(t, "")
	var asked atomic.Int32
	allow := func(n int32) func() bool {
		return func() bool { return asked.Add(1) <= n }
	}
	for _, tc := range []struct {
		name     string
		allowed  int32
		attempts int
	}{
		{"refused before the backoff", 0, 1},
		{"refused after the backoff", 1, 1},
		{"allowed once", 2, 2},
	} {
		asked.Store(0)
		c := e.client(t, func(cfg *rebell.ClientConfig) { cfg.Retries = 2; cfg.MayRetry = allow(tc.allowed) })
		e.fault(t, `{"count":3,"resultStatus":"U","resultCode":"UNKNOWN_EXCEPTION"}`)
		code, _ := e.sb.IssueAuthCode("")
		_, err := c.ExchangeAuthCode(context.Background(), rebell.NewSecret(code))
		if ee := wantKind(t, err, rebell.KindRetryable, "UNKNOWN_EXCEPTION"); ee.Attempts != tc.attempts {
			t.Errorf("%s: %d attempts, want %d", tc.name, ee.Attempts, tc.attempts)
		}
		req, _ := http.NewRequest(http.MethodDelete, e.srv.URL+"/sandbox/faults", nil)
		if resp, err := http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		} else {
			resp.Body.Close()
		}
	}
}

// TestClientReusesConnections: calls made a few at a time, over and over,
// reuse the connections of earlier calls instead of opening new ones (Go's
// default transport would keep only 2 of them idle).
func TestClientReusesConnections(t *testing.T) {
	const conc, rounds = 8, 5
	e := newEnv(t, "")
	var opened atomic.Int64
	srv := httptest.NewUnstartedServer(e.srv.Config.Handler)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	e.srv = srv
	c := e.client(t, nil)
	for range rounds {
		var wg sync.WaitGroup
		for range conc {
			code, _ := e.sb.IssueAuthCode("")
			wg.Go(func() {
				if _, err := c.ExchangeAuthCode(context.Background(), rebell.NewSecret(code)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	if n := opened.Load(); n > conc {
		t.Fatalf("%d connections opened for %d calls, %d at a time", n, conc*rounds, conc)
	}
}
