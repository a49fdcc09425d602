package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// loginAs logs in as customer (a code the mock maps to it) and returns the
// session id.
func (g *guardGateway) loginAs(customer string) string {
	g.t.Helper()
	code := fmt.Sprintf("customer-%s-%d", customer, g.codes.Add(1))
	resp, err := http.Post(g.base+"/rebell/login", "application/json", strings.NewReader(`{"authCode":"`+code+`"}`))
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ SessionID string }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("login: %d", resp.StatusCode)
	}
	return out.SessionID
}

// accessToken checks that sid is served and returns the access token the
// mock issued last: the session's, right after its login.
func (g *guardGateway) accessToken(sid string) string {
	g.t.Helper()
	if status, _ := g.get(sid); status != http.StatusOK {
		g.t.Fatalf("GET /api: %d", status)
	}
	return g.mock.lastAccessToken()
}

// logout posts a logout for sid, requires 204 and returns how long it took.
func (g *guardGateway) logout(sid string) time.Duration {
	g.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.base+"/rebell/logout", nil)
	req.Header.Set("Authorization", "Bearer "+sid)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	took := time.Since(start)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		g.t.Fatalf("logout: %d", resp.StatusCode)
	}
	return took
}

// successfulCancels returns the access tokens the mock cancelled.
func successfulCancels(m *mockRebell) []string {
	var out []string
	for _, c := range m.cancelCalls() {
		if c.result == rebell.CodeSuccess {
			out = append(out, c.accessToken)
		}
	}
	return out
}

// quietFor checks that the mock gets no cancelToken call beyond want over
// d: three polls of the gateway's pending cancels, as no clock can be
// injected into a Caddy process.
func quietFor(t *testing.T, m *mockRebell, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if n := len(m.cancelCalls()); n != want {
			t.Fatalf("%d cancelToken calls, want %d", n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRevokeOnLogout: a logout sends exactly one signed cancelToken with
// the session's current access token within seconds, and the refresh token
// is dead at Rebell afterwards; a second logout of the ended session calls
// nothing. One INFO line says so, without the token.
func TestRevokeOnLogout(t *testing.T) {
	g := startGuardGateway(t, "")
	sid := g.mustLogin()
	at := g.accessToken(sid)
	if !g.mock.refreshLiveFor(at) {
		t.Fatal("the refresh token is dead before the logout")
	}
	took := g.logout(sid)
	answered := time.Now()
	if took > time.Second {
		t.Errorf("logout took %v", took)
	}
	waitUntil(t, 5*time.Second, "one cancelToken", func() (bool, string) {
		c := g.mock.cancelCalls()
		return len(c) == 1 && c[0].result != "", fmt.Sprint(len(c))
	})
	c := g.mock.cancelCalls()[0]
	t.Logf("logout answered in %v; the cancel reached Rebell %v after the answer", took.Round(time.Microsecond), c.at.Sub(answered).Round(time.Microsecond))
	if !c.signed || c.accessToken != at || c.result != rebell.CodeSuccess {
		t.Fatalf("cancel: signed %v, token matches %v, result %s", c.signed, c.accessToken == at, c.result)
	}
	if g.mock.refreshLiveFor(at) {
		t.Fatal("the refresh token still works at Rebell after the cancel")
	}
	g.logout(sid) // ended already: nothing to cancel
	quietFor(t, g.mock, 1, 2500*time.Millisecond)
	if got := g.metric(`caddy_rebell_cancels_total{result="SUCCESS"}`); got != 1 {
		t.Errorf("cancels_total{SUCCESS} = %v", got)
	}
	waitUntil(t, 3*time.Second, "no pending cancel in the gauge", func() (bool, string) {
		v := g.metric("caddy_rebell_pending_cancels")
		return v == 0, fmt.Sprint(v)
	})
	logs := g.caddy.logs.String()
	if strings.Count(logs, "rebell authorization cancelled") != 1 {
		t.Errorf("want one INFO line for the cancel:\n%s", logs)
	}
	if strings.Contains(logs, at) {
		t.Error("the access token reached the logs")
	}
}

// TestRevokeWhileRebellDown: with Rebell down, the logout answers 204 at
// once; the cancel arrives after Rebell is back.
func TestRevokeWhileRebellDown(t *testing.T) {
	g := startGuardGateway(t, "retries 0")
	sid := g.mustLogin()
	at := g.accessToken(sid)
	g.mock.setMode(mockRefuse)
	if took := g.logout(sid); took > time.Second {
		t.Errorf("logout with Rebell down took %v", took)
	} else {
		t.Logf("logout with Rebell down answered in %v", took.Round(time.Microsecond))
	}
	waitUntil(t, 5*time.Second, "a refused cancel", func() (bool, string) {
		n := len(g.mock.cancelCalls())
		return n >= 1, fmt.Sprint(n)
	})
	waitUntil(t, 3*time.Second, "one pending cancel in the gauge", func() (bool, string) {
		v := g.metric("caddy_rebell_pending_cancels")
		return v == 1, fmt.Sprint(v)
	})
	time.Sleep(2 * time.Second) // a few more tries fail
	g.mock.setMode(mockOK)
	back := time.Now()
	waitUntil(t, 20*time.Second, "the cancel after Rebell is back", func() (bool, string) {
		ok := successfulCancels(g.mock)
		return len(ok) == 1 && ok[0] == at, fmt.Sprint(len(ok))
	})
	t.Logf("cancelled %v after Rebell came back; %d calls in all", time.Since(back).Round(time.Millisecond), len(g.mock.cancelCalls()))
	if g.mock.refreshLiveFor(at) {
		t.Fatal("the refresh token still works at Rebell")
	}
	if got := g.metric(`caddy_rebell_cancels_total{result="http_error"}`); got < 1 {
		t.Errorf("cancels_total{http_error} = %v", got)
	}
}

// TestRevokeAdminCustomer: an admin end of a customer with two sessions
// cancels both, and no other.
func TestRevokeAdminCustomer(t *testing.T) {
	g := startGuardGateway(t, "")
	a1 := g.loginAs("2188000000000901")
	at1 := g.accessToken(a1)
	a2 := g.loginAs("2188000000000901")
	at2 := g.accessToken(a2)
	other := g.loginAs("2188000000000902")
	atOther := g.accessToken(other)
	req, _ := http.NewRequest(http.MethodDelete, "http://"+g.caddy.AdminAddr+"/rebell/customers/2188000000000901/sessions", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ended":2`) {
		t.Fatalf("admin DELETE: %d %s", resp.StatusCode, body)
	}
	waitUntil(t, 5*time.Second, "two cancels", func() (bool, string) {
		n := len(successfulCancels(g.mock))
		return n == 2, fmt.Sprint(n)
	})
	got := strings.Join(successfulCancels(g.mock), " ")
	if !strings.Contains(got, at1) || !strings.Contains(got, at2) || strings.Contains(got, atOther) {
		t.Fatal("the cancels are not the customer's two access tokens")
	}
	if g.mock.refreshLiveFor(at1) || g.mock.refreshLiveFor(at2) || !g.mock.refreshLiveFor(atOther) {
		t.Fatal("refresh tokens: the customer's must be dead, the other's alive")
	}
	quietFor(t, g.mock, 2, time.Second)
}

// TestRevokeOff: with revoke off, a logout and an admin end call nothing.
func TestRevokeOff(t *testing.T) {
	g := startGuardGateway(t, "revoke off")
	sid := g.loginAs("2188000000000903")
	at := g.accessToken(sid)
	g.logout(sid)
	g.loginAs("2188000000000903")
	req, _ := http.NewRequest(http.MethodDelete, "http://"+g.caddy.AdminAddr+"/rebell/customers/2188000000000903/sessions", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	quietFor(t, g.mock, 0, 2500*time.Millisecond)
	if !g.mock.refreshLiveFor(at) {
		t.Fatal("the refresh token died with revoke off")
	}
}

// TestClusterRevokeSurvivesTheInstance: three instances on one Redis; one
// takes a logout while Rebell fails every cancel, and is stopped: the
// pending cancel is not lost, another instance makes it once Rebell is
// back.
func TestClusterRevokeSurvivesTheInstance(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	const customer = "2188000000000904"
	s := m.mustLogin(m.nodes[0], customer)
	m.mustGet(m.nodes[1], s.SessionID, customer)
	live := getStats(t, m.sandbox).LiveRefreshTokens
	if status, body := postJSON(t, m.sandbox+"/sandbox/faults",
		`{"call":"cancelToken","count":10000,"resultStatus":"U","resultCode":"UNKNOWN_EXCEPTION","httpStatus":503}`); status != http.StatusOK {
		t.Fatalf("fault: %d %s", status, body)
	}
	start := time.Now()
	m.logout(m.nodes[0], s.SessionID)
	if took := time.Since(start); took > time.Second {
		t.Errorf("logout took %v", took)
	} else {
		t.Logf("logout with store redis, Rebell failing, answered in %v", took.Round(time.Microsecond))
	}
	waitUntil(t, 5*time.Second, "a failed cancel", func() (bool, string) {
		st := getStats(t, m.sandbox)
		return st.CancelTokenCalls >= 1, fmt.Sprint(st.CancelTokenCalls)
	})
	m.nodes[0].caddy.stop()
	// Rebell is back once the instance that took the logout is gone.
	req, _ := http.NewRequest(http.MethodDelete, m.sandbox+"/sandbox/faults", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	back := time.Now()
	waitUntil(t, 40*time.Second, "the cancel made by another instance", func() (bool, string) {
		st := getStats(t, m.sandbox)
		return st.AuthorizationsCancelled == 1, fmt.Sprintf("%+v", st)
	})
	t.Logf("cancelled %v after Rebell came back", time.Since(back).Round(time.Millisecond))
	if st := getStats(t, m.sandbox); st.LiveRefreshTokens != live-1 {
		t.Errorf("live refresh tokens %d, want %d", st.LiveRefreshTokens, live-1)
	}
	// Removed once the answer is back at the instance.
	waitUntil(t, 5*time.Second, "no pending cancel left in Redis", func() (bool, string) {
		n, err := rs.Client(t).ZCard(testCtx(t), "it:{cancels}:due").Result()
		return n == 0 && err == nil, fmt.Sprint(n, err)
	})
	m.assertLogsClean()
}

// TestRevokeExpiredAccessTokenRefreshesFirst: a logout after the access
// token expired (the refresh token lives) refreshes first, then cancels
// the new access token; the refresh token is dead afterwards.
func TestRevokeExpiredAccessTokenRefreshesFirst(t *testing.T) {
	g := startGuardGateway(t, "")
	g.mock.accessTTL.Store(int64(2 * time.Second))
	sid := g.mustLogin()
	at := g.accessToken(sid)
	// Past the access token's expiry (RFC 3339 seconds: up to 1 s more),
	// without a request that would refresh it.
	time.Sleep(3100 * time.Millisecond)
	g.logout(sid)
	waitUntil(t, 5*time.Second, "a cancel", func() (bool, string) {
		ok := successfulCancels(g.mock)
		return len(ok) == 1, fmt.Sprint(len(g.mock.cancelCalls()))
	})
	fresh := successfulCancels(g.mock)[0]
	if fresh == at {
		t.Fatal("the expired access token was cancelled instead of a refreshed one")
	}
	for _, c := range g.mock.cancelCalls() {
		if c.accessToken == at {
			t.Fatal("the expired access token was sent")
		}
	}
	if g.mock.refreshLiveFor(fresh) {
		t.Fatal("the refreshed pair's refresh token still works at Rebell")
	}
}

// TestRevokeWalkthrough is the README's walkthrough against the sandbox:
// after a logout the sandbox's stats count one cancelToken that revoked
// the authorization, and no refresh token is left alive.
func TestRevokeWalkthrough(t *testing.T) {
	g := startGateway(t, "", "")
	resp, lr := g.login(issueCode(t, g.sandbox, "2188000000000001"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	if st := getStats(t, g.sandbox); st.LiveRefreshTokens != 1 || st.CancelTokenCalls != 0 {
		t.Fatalf("before the logout: %+v", st)
	}
	if resp, _ := g.call(http.MethodPost, "/rebell/logout", bearer(lr.SessionID)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	waitUntil(t, 5*time.Second, "the sandbox counting the cancel", func() (bool, string) {
		st := getStats(t, g.sandbox)
		return st.CancelTokenCalls == 1 && st.AuthorizationsCancelled == 1 && st.CancelByResultCode[rebell.CodeSuccess] == 1 &&
			st.LiveRefreshTokens == 0, fmt.Sprintf("%+v", st)
	})
}
