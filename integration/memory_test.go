package integration

import (
	"net/http"
	"testing"
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
