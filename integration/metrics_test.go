package integration

import (
	"bufio"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrapeRebellMetrics reads Caddy's admin /metrics and returns every
// caddy_rebell_* sample (histogram buckets and sums left out) by its series,
// as Prometheus writes it: name{label="value"}.
func scrapeRebellMetrics(t *testing.T, adminAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin /metrics: %d", resp.StatusCode)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_rebell_") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("metrics line %q", line)
		}
		if strings.Contains(series, "_bucket{") || strings.Contains(series, "_sum{") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		samples[series] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return samples
}

// TestMetricsThroughCaddy drives logins (new, deduplicated, rejected, bad
// signature, Rebell unreachable), refreshes (successful and a dead refresh
// token) and requests through a fresh Caddy, then scrapes the admin
// /metrics and compares every caddy_rebell_* series README.md documents
// ("Operations") with what happened.
func TestMetricsThroughCaddy(t *testing.T) {
	// Access tokens live 3 s (2 to 3 s as the gateway sees them: Rebell's
	// expiry has whole seconds), so their refresh window is at most 1.5 s
	// and the margin m, where a request waits for a refresh, starts at most
	// 2.5 s after a token was obtained (docs/freshness.md). due waits for
	// that, so the next request refreshes, in the foreground, exactly once.
	g := startGateway(t, "", "access_token_ttl 3s")
	var obtained time.Time
	due := func() { time.Sleep(time.Until(obtained.Add(2600 * time.Millisecond))) }
	fault := func(spec string) {
		t.Helper()
		if status, body := postJSON(t, g.sandbox+"/sandbox/faults", spec); status != http.StatusOK {
			t.Fatalf("fault %s: %d %s", spec, status, body)
		}
	}
	login := func(code string, wantStatus int, wantError string) loginResult {
		t.Helper()
		resp, lr := g.login(code)
		if resp.StatusCode != wantStatus || lr.Error != wantError {
			t.Fatalf("login: %d %+v, want %d %q", resp.StatusCode, lr, wantStatus, wantError)
		}
		return lr
	}
	get := func(h map[string]string, wantStatus int) {
		t.Helper()
		if resp, body := g.call(http.MethodGet, "/api/m", h); resp.StatusCode != wantStatus {
			t.Fatalf("request: %d %v, want %d", resp.StatusCode, body, wantStatus)
		}
	}

	code := issueCode(t, g.sandbox, "2188000000000901")
	obtained = time.Now()
	a := login(code, 200, "")
	if b := login(code, 200, ""); b.SessionID != a.SessionID { // a retried login
		t.Fatalf("the retried login got another session")
	}
	login("not-a-code-rebell-issued", 401, "auth_code_rejected") // INVALID_CODE
	fault(`{"count":1,"grantType":"AUTHORIZATION_CODE","forgeSignature":true,"resultStatus":"S","resultCode":"SUCCESS"}`)
	login(issueCode(t, g.sandbox, ""), 502, "rebell_rejected") // bad_signature
	fault(`{"count":2,"grantType":"AUTHORIZATION_CODE","httpStatus":503}`)
	login(issueCode(t, g.sandbox, ""), 503, "rebell_unavailable") // HTTP 503 with UNKNOWN_EXCEPTION, after 1 retry
	// A short timeout only for this login, so that no attempt of another
	// one times out on a loaded machine (and is processed late, after a
	// fault meant for the next). timeout is outside the pool's identity:
	// the reload keeps the sessions, and the counters count on.
	g.authOpts = "timeout 300ms"
	g.caddy.reload(g.caddyfile())
	fault(`{"count":2,"grantType":"AUTHORIZATION_CODE","delay":"10s"}`)
	login(issueCode(t, g.sandbox, ""), 503, "rebell_unavailable") // transport_error: both attempts time out
	g.authOpts = ""
	g.caddy.reload(g.caddyfile())
	due()
	obtained = time.Now()
	get(bearer(a.SessionID), 200) // refreshes: SUCCESS
	due()
	obtained = time.Now()
	get(bearer(a.SessionID), 200) // and again
	fault(`{"count":1,"grantType":"REFRESH_TOKEN","resultStatus":"F","resultCode":"USED_REFRESH_TOKEN"}`)
	due()
	get(bearer(a.SessionID), 401) // reauth_required: the session ends
	get(nil, 401)                 // session_required
	c := login(issueCode(t, g.sandbox, "2188000000000902"), 200, "")
	if resp, _ := g.call(http.MethodPost, "/rebell/logout", bearer(c.SessionID)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	// The logout's cancel at Rebell (revoke on) runs in the background.
	waitUntil(t, 5*time.Second, "the logout's cancel", func() (bool, string) {
		st := getStats(t, g.sandbox)
		return st.AuthorizationsCancelled == 1, fmt.Sprintf("%+v", st)
	})
	login(issueCode(t, g.sandbox, "2188000000000903"), 200, "")

	st := getStats(t, g.sandbox)
	calls := func(grant string) float64 {
		var n int64
		for _, c := range st.ByGrantType[grant] {
			n += c
		}
		return float64(n)
	}
	want := map[string]float64{
		`caddy_rebell_logins_total{result="SUCCESS"}`:                    3,
		`caddy_rebell_logins_total{result="deduplicated"}`:               1,
		`caddy_rebell_logins_total{result="INVALID_CODE"}`:               1,
		`caddy_rebell_logins_total{result="bad_signature"}`:              1,
		`caddy_rebell_logins_total{result="transport_error"}`:            1,
		`caddy_rebell_logins_total{result="UNKNOWN_EXCEPTION"}`:          1,
		`caddy_rebell_refreshes_total{result="SUCCESS"}`:                 2,
		`caddy_rebell_refreshes_total{result="USED_REFRESH_TOKEN"}`:      1,
		`caddy_rebell_requests_total{outcome="login"}`:                   4,
		`caddy_rebell_requests_total{outcome="auth_code_rejected"}`:      1,
		`caddy_rebell_requests_total{outcome="rebell_rejected"}`:         1,
		`caddy_rebell_requests_total{outcome="rebell_unavailable"}`:      2,
		`caddy_rebell_requests_total{outcome="ok"}`:                      2,
		`caddy_rebell_requests_total{outcome="reauth_required"}`:         1,
		`caddy_rebell_requests_total{outcome="session_required"}`:        1,
		`caddy_rebell_requests_total{outcome="logout"}`:                  1,
		`caddy_rebell_cancels_total{result="SUCCESS"}`:                   1,
		`caddy_rebell_sessions_ended_total{reason="refresh_token_dead"}`: 1,
		`caddy_rebell_sessions_ended_total{reason="logout"}`:             1,
		// One observation per applyToken attempt, as many as the sandbox saw.
		`caddy_rebell_apply_token_duration_seconds_count{grant_type="AUTHORIZATION_CODE"}`: calls("AUTHORIZATION_CODE"),
		`caddy_rebell_apply_token_duration_seconds_count{grant_type="REFRESH_TOKEN"}`:      calls("REFRESH_TOKEN"),
		// In memory: the session of customer 903 (901's ended, 902's logged out).
		`caddy_rebell_sessions`: 1,
	}
	if calls("AUTHORIZATION_CODE") != 9 || calls("REFRESH_TOKEN") != 3 {
		t.Errorf("the sandbox saw %v AUTHORIZATION_CODE and %v REFRESH_TOKEN calls, want 9 and 3", calls("AUTHORIZATION_CODE"), calls("REFRESH_TOKEN"))
	}
	got := scrapeRebellMetrics(t, g.caddy.AdminAddr)
	var diffs []string
	for series, w := range want {
		if v, ok := got[series]; !ok || v != w {
			diffs = append(diffs, fmt.Sprintf("%s = %v (present %v), want %v", series, v, ok, w))
		}
	}
	for series, v := range got {
		// The breaker toward Rebell may have opened on the failures above
		// and closed on the next refresh (its probe): its series are
		// checked below, not counted here.
		if strings.HasPrefix(series, "caddy_rebell_breaker_") || strings.HasPrefix(series, "caddy_rebell_calls_") {
			if strings.HasPrefix(series, "caddy_rebell_breaker_state{") && v != 0 {
				diffs = append(diffs, fmt.Sprintf("%s = %v, want 0 (closed) at the end", series, v))
			}
			continue
		}
		// The sandbox runs on this machine's clock: the skew measured from
		// its verified answers is within the second Response-Time rounds to.
		if strings.HasPrefix(series, "caddy_rebell_clock_skew_seconds{") {
			if v < -2 || v > 2 {
				diffs = append(diffs, fmt.Sprintf("%s = %v, want about 0", series, v))
			}
			continue
		}
		if _, ok := want[series]; !ok && v != 0 {
			diffs = append(diffs, fmt.Sprintf("unexpected %s = %v", series, v))
		}
	}
	sort.Strings(diffs)
	for _, d := range diffs {
		t.Error(d)
	}
	// Labels never carry a session id or a customer id.
	for series := range got {
		for _, secret := range []string{a.SessionID, c.SessionID, "2188000000000901", "2188000000000902", "2188000000000903"} {
			if strings.Contains(series, secret) {
				t.Errorf("metric series %s holds an id", series)
			}
		}
	}
}

// TestMetricsStoreError: Rebell accepts the auth code but the shared store
// cannot keep the session (its address is a socket that never answers):
// the login counts as store_error and the Mini App gets 503
// store_unavailable.
func TestMetricsStoreError(t *testing.T) {
	silent := freePort(t) // held by this process and never accepted from
	g := startGateway(t, fmt.Sprintf(`login_dedup_window 0
		store redis {
			address 127.0.0.1:%d
			encryption_key MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
		}`, silent), "")
	if resp, lr := g.login(issueCode(t, g.sandbox, "2188000000000911")); resp.StatusCode != http.StatusServiceUnavailable || lr.Error != "store_unavailable" {
		t.Fatalf("login with the store silent: %d %+v", resp.StatusCode, lr)
	}
	if st := getStats(t, g.sandbox); st.ByGrantType["AUTHORIZATION_CODE"]["SUCCESS"] != 1 {
		t.Fatalf("Rebell did not accept the code: %+v", st)
	}
	got := scrapeRebellMetrics(t, g.caddy.AdminAddr)
	for series, want := range map[string]float64{
		`caddy_rebell_logins_total{result="store_error"}`:          1,
		`caddy_rebell_requests_total{outcome="store_unavailable"}`: 1,
		`caddy_rebell_sessions`:                                    0,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
}
