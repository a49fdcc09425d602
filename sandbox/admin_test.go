package sandbox

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func TestRouting(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/v2/authorizations/applyToken", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPut, "/v1/authorizations/applyToken", http.StatusMethodNotAllowed, "POST"},
		{http.MethodGet, "/sandbox/authcode", http.StatusMethodNotAllowed, "POST"},
		{http.MethodGet, "/sandbox/faults", http.StatusMethodNotAllowed, "POST, DELETE"},
		{http.MethodPost, "/sandbox/stats", http.StatusMethodNotAllowed, "GET, DELETE"},
		{http.MethodPost, "/sandbox/public-key", http.StatusMethodNotAllowed, "GET"},
		{http.MethodPost, "/v3/authorizations/applyToken", http.StatusNotFound, ""},
		{http.MethodPost, "/v2/authorizations/applyToken/", http.StatusNotFound, ""},
		{http.MethodPost, "/xv2/authorizations/applyToken", http.StatusNotFound, ""},
		{http.MethodGet, "/", http.StatusNotFound, ""},
		{http.MethodGet, "/sandbox", http.StatusNotFound, ""},
		{http.MethodGet, "/any/prefix/sandbox/stats", http.StatusOK, ""},
	}
	for _, tt := range tests {
		resp, raw := e.do(t, tt.method, tt.path, "")
		if resp.StatusCode != tt.status || resp.Header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d Allow %q, want %d Allow %q", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"), tt.status, tt.allow)
		}
		if tt.status >= 400 {
			var er errorResponse
			if json.Unmarshal(raw, &er) != nil || er.Error == "" || er.Message == "" {
				t.Errorf("%s %s: error body %s", tt.method, tt.path, raw)
			}
		}
	}
}

func TestAuthCodeEndpoint(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{``, `{}`, `{"scopes":["auth_base","auth_user"]}`, `{"customerId":null}`} {
		resp, raw := e.do(t, http.MethodPost, "/sandbox/authcode", body)
		var out map[string]string
		if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &out) != nil ||
			!authCodeRE.MatchString(out["authCode"]) || !customerRE.MatchString(out["customerId"]) || len(out) != 2 {
			t.Errorf("POST /sandbox/authcode %s: %d %s", body, resp.StatusCode, raw)
		}
	}
	for _, body := range []string{
		`{"customerId":""}`,
		`{"customerId":"` + strings.Repeat("1", 65) + `"}`,
		`{"customerId":"a b"}`,
		`{"customerId":"a\nb"}`,
		`{"customerId":42}`,
		`{"scopes":"auth_user"}`,
		`{"scopes":[""]}`,
		`{"scopes":[` + strings.Repeat(`"s",`, 16) + `"s"]}`,
		`{"customer":"1"}`,
		`{}{}`,
		`[]`,
		`{"customerId":"` + strings.Repeat("1", 5000) + `"}`,
	} {
		resp, raw := e.do(t, http.MethodPost, "/sandbox/authcode", body)
		var er errorResponse
		if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(raw, &er) != nil || er.Error != "bad_request" {
			t.Errorf("POST /sandbox/authcode %.60s: %d %s", body, resp.StatusCode, raw)
		}
	}
	if st := e.sb.Stats(); st.AuthCodesIssued != 4 || st.LiveAuthCodes != 4 {
		t.Errorf("issued %d, live %d; want 4, 4", st.AuthCodesIssued, st.LiveAuthCodes)
	}
}

func TestAuthCodeCap(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AuthCodeTTL = time.Minute })
	e.sb.store.maxLiveCodes = 3
	var codes []string
	for range 3 {
		code, _ := e.authCode(t, "")
		codes = append(codes, code)
	}
	full := func() {
		t.Helper()
		resp, raw := e.do(t, http.MethodPost, "/sandbox/authcode", `{}`)
		var er errorResponse
		if resp.StatusCode != http.StatusTooManyRequests || json.Unmarshal(raw, &er) != nil || er.Error != "too_many_auth_codes" {
			t.Errorf("beyond the cap: %d %s", resp.StatusCode, raw)
		}
		if c, id := e.sb.IssueAuthCode(""); c != "" || id != "" {
			t.Errorf("IssueAuthCode beyond the cap = %q, %q", c, id)
		}
	}
	full()
	// Using a code frees its place.
	e.exchange(t, "v2", codes[0])
	e.authCode(t, "")
	full()
	// So does expiry, once the expired codes are swept.
	e.clock.Advance(time.Minute + markerGrace)
	e.authCode(t, "")
	if st := e.sb.Stats(); st.LiveAuthCodes != 1 || st.StoredAuthCodes != 1 {
		t.Errorf("after expiry: live %d stored %d, want 1 1", st.LiveAuthCodes, st.StoredAuthCodes)
	}

	// The store of codes, markers included, is bounded too.
	e.sb.store.maxLiveCodes, e.sb.store.maxStoredCodes = 100, 2
	e.exchange(t, "v1", e.mustCode(t))
	full()
}

func TestRefreshTokenCap(t *testing.T) {
	e := newEnv(t)
	e.sb.store.maxStoredRefresh = 2
	rt := e.exchange(t, "v2", e.mustCode(t)).body.RefreshToken
	rt = e.apply(t, call{body: rtBody(rt)}).body.RefreshToken // 2 held: used marker + new
	code := e.mustCode(t)
	e.apply(t, call{body: acBody(code)}).expect(t, http.StatusTooManyRequests, rebell.StatusUnknown, rebell.CodeRequestTrafficExceedLimit)
	e.apply(t, call{body: rtBody(rt)}).expect(t, http.StatusTooManyRequests, rebell.StatusUnknown, rebell.CodeRequestTrafficExceedLimit)
	// Neither was consumed.
	e.sb.store.maxStoredRefresh = 10
	e.exchange(t, "v2", code)
	e.apply(t, call{body: rtBody(rt)}).expect(t, http.StatusOK, rebell.StatusSuccess, rebell.CodeSuccess)
}

func TestPurge(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.AuthCodeTTL = time.Minute
		c.RefreshTokenTTL = time.Hour
	})
	const n = 20
	for i := range n {
		r := e.exchange(t, "v2", e.mustCode(t))
		if i%2 == 0 {
			e.apply(t, call{body: rtBody(r.body.RefreshToken)}).expect(t, 200, rebell.StatusSuccess, rebell.CodeSuccess)
		}
		e.mustCode(t) // never used
	}
	st := e.stats(t)
	if st.StoredAuthCodes != 2*n || st.LiveAuthCodes != n || st.StoredRefreshTokens != n+n/2 || st.LiveRefreshTokens != n {
		t.Fatalf("before: %+v", st)
	}
	// Codes past expiry, within the grace period: none live, markers kept.
	e.clock.Advance(2 * time.Minute)
	e.mustCode(t)
	st = e.stats(t)
	if st.LiveAuthCodes != 1 || st.StoredAuthCodes != 2*n+1 || st.LiveRefreshTokens != n || st.StoredRefreshTokens != n+n/2 {
		t.Fatalf("codes expired: %+v", st)
	}
	// An hour later the codes are swept; the refresh tokens just expired,
	// their markers are kept.
	e.clock.Advance(time.Hour - 2*time.Minute)
	e.mustCode(t)
	st = e.stats(t)
	if st.LiveAuthCodes != 1 || st.StoredAuthCodes != 1 || st.LiveRefreshTokens != 0 || st.StoredRefreshTokens != n+n/2 {
		t.Fatalf("codes swept, tokens expired: %+v", st)
	}
	// Far past: more traffic sweeps everything dead.
	e.clock.Advance(24 * time.Hour)
	e.exchange(t, "v1", e.mustCode(t))
	st = e.stats(t)
	if st.StoredAuthCodes != 1 || st.LiveAuthCodes != 0 || st.StoredRefreshTokens != 1 || st.LiveRefreshTokens != 1 {
		t.Fatalf("after the sweep: %+v", st)
	}
	if len(e.sb.store.codes) != 1 || len(e.sb.store.refresh) != 1 || e.sb.store.unusedCodes != 0 {
		t.Errorf("store holds %d codes (%d unused), %d refresh tokens", len(e.sb.store.codes), e.sb.store.unusedCodes, len(e.sb.store.refresh))
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t)
	code := e.mustCode(t)
	rt := e.exchange(t, "v2", code).body.RefreshToken
	e.apply(t, call{body: acBody(code)})                                   // USED_CODE
	e.apply(t, call{body: acBody("NOPE"), version: "v1"})                  // INVALID_CODE
	rt2 := e.apply(t, call{body: rtBody(rt)}).body.RefreshToken            // SUCCESS
	e.apply(t, call{body: rtBody(rt)})                                     // USED_REFRESH_TOKEN
	e.apply(t, call{body: `{"grantType":"PASSWORD"}`})                     // UNKNOWN / unsupported
	e.apply(t, call{body: `{`})                                            // UNKNOWN / PARAM_ILLEGAL
	e.apply(t, call{body: rtBody(rt2), at: e.clock.Now().Add(-time.Hour)}) // stale
	e.fault(t, `{"resultCode":"PROCESS_FAIL","resultStatus":"F"}`)
	e.apply(t, call{body: rtBody(rt2)}) // fault
	e.mustCode(t)

	want := Stats{
		ApplyTokenCalls: 9,
		ByGrantType: map[string]map[string]int64{
			rebell.GrantAuthorizationCode: {rebell.CodeSuccess: 1, rebell.CodeUsedCode: 1, rebell.CodeInvalidCode: 1},
			rebell.GrantRefreshToken: {rebell.CodeSuccess: 1, rebell.CodeUsedRefreshToken: 1,
				rebell.CodeInvalidSignature: 1, rebell.CodeProcessFail: 1},
			"UNKNOWN": {rebell.CodeAuthClientUnsupportedGrantType: 1, rebell.CodeParamIllegal: 1},
		},
		ByResultCode: map[string]int64{
			rebell.CodeSuccess: 2, rebell.CodeUsedCode: 1, rebell.CodeInvalidCode: 1, rebell.CodeUsedRefreshToken: 1,
			rebell.CodeAuthClientUnsupportedGrantType: 1, rebell.CodeParamIllegal: 1, rebell.CodeInvalidSignature: 1,
			rebell.CodeProcessFail: 1,
		},
		AuthCodesIssued:     2,
		LiveAuthCodes:       1,
		LiveRefreshTokens:   1,
		StoredAuthCodes:     2,
		StoredRefreshTokens: 2,
	}
	if got := e.stats(t); !reflect.DeepEqual(got, want) {
		t.Errorf("stats:\n got %+v\nwant %+v", got, want)
	}
	if got := e.sb.Stats(); !reflect.DeepEqual(got, want) {
		t.Errorf("Stats():\n got %+v\nwant %+v", got, want)
	}

	// The JSON shape.
	_, raw := e.do(t, http.MethodGet, "/sandbox/stats", "")
	var shape map[string]json.RawMessage
	if err := json.Unmarshal(raw, &shape); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"applyTokenCalls", "byGrantType", "byResultCode", "authCodesIssued", "liveAuthCodes", "liveRefreshTokens"} {
		if _, ok := shape[k]; !ok {
			t.Errorf("stats lack %q: %s", k, raw)
		}
	}

	// DELETE resets the counters, not the state.
	if resp, _ := e.do(t, http.MethodDelete, "/sandbox/stats", ""); resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE /sandbox/stats: %d", resp.StatusCode)
	}
	_, raw = e.do(t, http.MethodGet, "/sandbox/stats", "")
	const reset = `{"applyTokenCalls":0,"byGrantType":{},"byResultCode":{},"authCodesIssued":0,"liveAuthCodes":1,"liveRefreshTokens":1,"storedAuthCodes":2,"storedRefreshTokens":2,"pendingFaults":0}`
	if string(raw) != reset {
		t.Errorf("after reset: %s\nwant %s", raw, reset)
	}
	// A snapshot is the caller's.
	st := e.sb.Stats()
	st.ByResultCode["X"] = 1
	if e.sb.Stats().ByResultCode["X"] != 0 {
		t.Error("Stats shares its maps")
	}
}

func TestPublicKeyEndpoint(t *testing.T) {
	e := newEnv(t)
	resp, raw := e.do(t, http.MethodGet, "/sandbox/public-key", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-pem-file" {
		t.Fatalf("GET /sandbox/public-key: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	pub, err := rebell.ParsePublicKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(e.sb.PublicKey()) || !pub.Equal(&sandboxKey.PublicKey) {
		t.Error("served key is not the response-signing key")
	}
	// PublicKey returns a copy.
	k := e.sb.PublicKey()
	k.E = 3
	if e.sb.PublicKey().E == 3 {
		t.Error("PublicKey exposes the sandbox's key")
	}
}

func TestNew(t *testing.T) {
	testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	bad := []Config{
		{AccessTokenTTL: -time.Second},
		{RefreshTokenTTL: -time.Second},
		{AuthCodeTTL: -time.Second},
		{PrivateKey: small},
		{PrivateKey: sandboxKey, MerchantPublicKey: &small.PublicKey},
		{PrivateKey: sandboxKey, MerchantPublicKey: &rsa.PublicKey{}},
		{PrivateKey: sandboxKey, ClientID: "has space"},
		{PrivateKey: sandboxKey, ClientID: strings.Repeat("C", 129)},
	}
	for i, cfg := range bad {
		if _, err := New(cfg); err == nil {
			t.Errorf("config %d: no error", i)
		}
	}

	// The zero Config: defaults, an ephemeral key, and a warning that
	// signatures are not checked.
	core, logs := observer.New(zapcore.DebugLevel)
	sb, err := New(Config{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	if sb.clientID != "SANDBOX_CLIENT" || sb.store.codeTTL != 5*time.Minute ||
		sb.store.accessTTL != 30*time.Minute || sb.store.refreshTTL != 720*time.Hour {
		t.Errorf("defaults: %q %v %v %v", sb.clientID, sb.store.codeTTL, sb.store.accessTTL, sb.store.refreshTTL)
	}
	if sb.PublicKey().N.BitLen() != 2048 {
		t.Errorf("ephemeral key of %d bits", sb.PublicKey().N.BitLen())
	}
	if warn := logs.FilterLevelExact(zapcore.WarnLevel).Len(); warn != 1 {
		t.Errorf("%d warnings, want 1", warn)
	}
	if _, err := New(Config{PrivateKey: sandboxKey, MerchantPublicKey: &merchantKey.PublicKey, Logger: zap.New(core)}); err != nil {
		t.Fatal(err)
	}
	if warn := logs.FilterLevelExact(zapcore.WarnLevel).Len(); warn != 1 {
		t.Errorf("a merchant key still warns (%d warnings)", warn)
	}
}

// Nothing the sandbox logs, at any level, contains a code or a token.
func TestLogsHoldNoSecrets(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	e := newEnv(t, func(c *Config) { c.Logger = zap.New(core) })
	code, cid := e.authCode(t, "")
	r := e.exchange(t, "v2", code)
	e.apply(t, call{body: acBody(code)})
	r2 := e.apply(t, call{body: rtBody(r.body.RefreshToken)})
	e.apply(t, call{body: rtBody(r.body.RefreshToken)})
	e.fault(t, `{}`)
	e.apply(t, call{body: rtBody(r2.body.RefreshToken)})
	secrets := []string{code, cid, r.body.AccessToken, r.body.RefreshToken, r2.body.AccessToken, r2.body.RefreshToken}
	if logs.Len() == 0 {
		t.Fatal("no debug logs at all")
	}
	for _, entry := range logs.All() {
		line := entry.Message
		for k, v := range entry.ContextMap() {
			line += " " + k + "=" + strings.TrimSpace(strings.ReplaceAll(toString(v), "\n", " "))
		}
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("log line holds a secret: %s", line)
			}
		}
	}
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
