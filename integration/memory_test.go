package integration

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestFullTierKeepsActiveSession: into a memory tier of 50 sessions, 150
// logins in a row (many within one second), with one request on the first
// session after every login. The first session, always the one used most
// recently, is served after every login; every login succeeds and spends
// its code once.
func TestFullTierKeepsActiveSession(t *testing.T) {
	const logins = 150
	// 150 logins in a row from 127.0.0.1: neither the per-address login
	// limit nor the cap of login calls per second is what this test is about.
	g := startGateway(t, "max_sessions 50\n\t\tlogin_rate off\n\t\tlogin_calls_per_second 100000", "")
	first := g.mustLogin("2188000000000001")
	for i := range logins {
		g.mustLogin("")
		resp, body := g.call(http.MethodGet, "/api/orders", bearer(first.SessionID))
		if resp.StatusCode != http.StatusOK || body["customerId"] != "2188000000000001" {
			t.Fatalf("after login %d: the session used after every login: %d %v", i+1, resp.StatusCode, body)
		}
	}
	st := getStats(t, g.sandbox)
	if n := st.ByGrantType["AUTHORIZATION_CODE"]["SUCCESS"]; n != logins+1 {
		t.Errorf("%d codes exchanged for %d logins (stats %+v)", n, logins+1, st)
	}
}

// TestColdSessionsThroughCaddy: with hot_sessions 2, most of 12 sessions
// are kept without an entry (docs/sessions.md). Each is still served with
// its own customer, refreshed once when its token is due (presenting its
// newest refresh token: no USED_REFRESH_TOKEN), and ended by its logout.
func TestColdSessionsThroughCaddy(t *testing.T) {
	const sessions = 12
	g := startGateway(t, "max_sessions 30\n\t\thot_sessions 2\n\t\tlogin_rate off\n\t\tlogin_calls_per_second 100000", "access_token_ttl 3s")
	var ids []loginResult
	for i := range sessions {
		ids = append(ids, g.mustLogin(fmt.Sprintf("21880000000003%02d", i)))
	}
	time.Sleep(2600 * time.Millisecond) // every access token is due for a refresh
	for i, lr := range ids {
		resp, body := g.call(http.MethodGet, "/api/me", bearer(lr.SessionID))
		if resp.StatusCode != http.StatusOK || body["customerId"] != lr.CustomerID {
			t.Fatalf("session %d: %d %v", i, resp.StatusCode, body)
		}
	}
	// Only 2 of them had an entry: the others were made one again.
	if n := metricValue(t, g.caddy, "caddy_rebell_sessions_thawed_total"); n < sessions-2 {
		t.Errorf("%d sessions thawed, want at least %d", n, sessions-2)
	}
	st := getStats(t, g.sandbox)
	if n := st.ByGrantType["REFRESH_TOKEN"]["SUCCESS"]; n != sessions || st.ByResultCode["USED_REFRESH_TOKEN"] != 0 {
		t.Errorf("%d refreshes for %d sessions due (stats %+v)", n, sessions, st)
	}
	for i, lr := range ids { // served again, with the refreshed tokens
		if resp, body := g.call(http.MethodGet, "/api/me", bearer(lr.SessionID)); resp.StatusCode != http.StatusOK {
			t.Fatalf("session %d after its refresh: %d %v", i, resp.StatusCode, body)
		}
	}
	if st := getStats(t, g.sandbox); st.ByGrantType["REFRESH_TOKEN"]["SUCCESS"] != sessions {
		t.Errorf("a refreshed session was refreshed again: %+v", st)
	}
	// The first session has had no entry for a while: its logout ends it.
	if resp, _ := g.call(http.MethodPost, "/rebell/logout", bearer(ids[0].SessionID)); resp.StatusCode/100 != 2 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, body := g.call(http.MethodGet, "/api/me", bearer(ids[0].SessionID)); resp.StatusCode != http.StatusUnauthorized || body["error"] != "session_invalid" {
		t.Fatalf("after logout: %d %v", resp.StatusCode, body)
	}
}
