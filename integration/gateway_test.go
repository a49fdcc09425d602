package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// upstream records what the gateway forwards and echoes the access-token
// header back, as a careless upstream might.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	last http.Header
	hits int
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.last = r.Header.Clone()
		u.hits++
		u.mu.Unlock()
		w.Header().Set("X-Rebell-Access-Token", r.Header.Get("X-Rebell-Access-Token"))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"customerId":%q}`, r.Header.Get("X-Rebell-Customer-Id"))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

type gateway struct {
	t        *testing.T
	caddy    *caddyProc
	base     string // gateway
	sandbox  string // sandbox base URL
	up       *upstream
	kf       keyFiles
	gwPort   int
	sbPort   int
	authOpts string
	sbOpts   string
}

func (g *gateway) caddyfile() string {
	return sandboxSite(g.kf, g.sbPort, 0, g.sbOpts) + fmt.Sprintf(`
http://127.0.0.1:%d {
	rebell_auth {
		endpoint http://127.0.0.1:%d
		client_id MERCHANT_IT
		private_key_file %s
		rebell_public_key_file %s
		retries 1
		%s
	}
	reverse_proxy %s
}
`, g.gwPort, g.sbPort, g.kf.MerchantPrivate, g.kf.PlatformPublic, g.authOpts, strings.TrimPrefix(g.up.URL, "http://"))
}

func startGateway(t *testing.T, authOpts, sbOpts string) *gateway {
	g := &gateway{t: t, up: newUpstream(t), kf: writeKeys(t, t.TempDir()), gwPort: freePort(t), sbPort: freePort(t), authOpts: authOpts, sbOpts: sbOpts}
	g.base = fmt.Sprintf("http://127.0.0.1:%d", g.gwPort)
	g.sandbox = fmt.Sprintf("http://127.0.0.1:%d", g.sbPort)
	g.caddy = startCaddy(t, g.caddyfile(), g.gwPort, g.sbPort)
	return g
}

type loginResult struct {
	SessionID  string `json:"sessionId"`
	CustomerID string `json:"customerId"`
	ExpiresAt  string `json:"expiresAt"`
	Error      string `json:"error"`
	ResultCode string `json:"resultCode"`
}

func (g *gateway) login(code string) (*http.Response, loginResult) {
	g.t.Helper()
	resp, err := http.Post(g.base+"/rebell/login", "application/json", strings.NewReader(fmt.Sprintf(`{"authCode":%q}`, code)))
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var lr loginResult
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &lr); err != nil {
		g.t.Fatalf("login body %q: %v", body, err)
	}
	return resp, lr
}

func (g *gateway) mustLogin(customerID string) loginResult {
	g.t.Helper()
	resp, lr := g.login(issueCode(g.t, g.sandbox, customerID))
	if resp.StatusCode != http.StatusOK || len(lr.SessionID) != 43 {
		g.t.Fatalf("login: %d %+v", resp.StatusCode, lr)
	}
	return lr
}

// call sends a request through the gateway with the given headers.
func (g *gateway) call(method, path string, headers map[string]string) (*http.Response, map[string]any) {
	g.t.Helper()
	req, _ := http.NewRequest(method, g.base+path, nil)
	for k, v := range headers {
		req.Header[k] = []string{v} // as sent, not canonicalised
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp, body
}

func bearer(id string) map[string]string { return map[string]string{"Authorization": "Bearer " + id} }

func TestGatewayEndToEnd(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			g := startGateway(t, "api_version "+version, "")
			lr := g.mustLogin("2188000000000101")
			if lr.CustomerID != "2188000000000101" {
				t.Errorf("customer %q", lr.CustomerID)
			}
			if exp, err := time.Parse(time.RFC3339, lr.ExpiresAt); err != nil || time.Until(exp) < 700*time.Hour {
				t.Errorf("expiresAt %q: %v", lr.ExpiresAt, err)
			}

			// An API call, with spoofed identity headers in every spelling.
			h := bearer(lr.SessionID)
			h["X-Rebell-Access-Token"] = "spoofed-1"
			h["x_rebell_access_token"] = "spoofed-2"
			h["X-REBELL-CUSTOMER-ID"] = "spoofed-3"
			h["X_Rebell_Customer_Id"] = "spoofed-4"
			resp, body := g.call(http.MethodGet, "/api/orders?x=1", h)
			if resp.StatusCode != http.StatusOK || body["customerId"] != "2188000000000101" {
				t.Fatalf("API call: %d %v", resp.StatusCode, body)
			}
			up := g.up.lastHeader()
			if got := up.Values("X-Rebell-Access-Token"); len(got) != 1 || strings.HasPrefix(got[0], "spoofed") || got[0] == "" {
				t.Errorf("upstream access token %q", got)
			}
			if got := up.Values("X-Rebell-Customer-Id"); len(got) != 1 || got[0] != "2188000000000101" {
				t.Errorf("upstream customer id %q", got)
			}
			for name, vals := range up {
				for _, v := range vals {
					if strings.HasPrefix(v, "spoofed") {
						t.Errorf("spoofed header reached upstream: %s: %s", name, v)
					}
					if strings.Contains(v, lr.SessionID) {
						t.Errorf("session id reached upstream in %s", name)
					}
				}
			}
			if resp.Header.Get("X-Rebell-Access-Token") != "" {
				t.Error("access token echoed to the Mini App")
			}

			// No session → session_required; garbage → session_invalid.
			resp, body = g.call(http.MethodGet, "/api/orders", nil)
			if resp.StatusCode != 401 || body["error"] != "session_required" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("no session: %d %v", resp.StatusCode, body)
			}
			resp, body = g.call(http.MethodGet, "/api/orders", bearer("not-a-session"))
			if resp.StatusCode != 401 || body["error"] != "session_invalid" {
				t.Errorf("bad session: %d %v", resp.StatusCode, body)
			}

			// Logout, then the session is gone.
			resp, _ = g.call(http.MethodPost, "/rebell/logout", bearer(lr.SessionID))
			if resp.StatusCode != http.StatusNoContent {
				t.Errorf("logout: %d", resp.StatusCode)
			}
			resp, body = g.call(http.MethodGet, "/api/orders", bearer(lr.SessionID))
			if resp.StatusCode != 401 || body["error"] != "session_invalid" {
				t.Errorf("after logout: %d %v", resp.StatusCode, body)
			}

			// A used code is rejected with Rebell's reason.
			code := issueCode(t, g.sandbox, "")
			if resp, _ := g.login(code); resp.StatusCode != 200 {
				t.Fatal("login")
			}
			st := getStats(t, g.sandbox)
			if st.ByGrantType["AUTHORIZATION_CODE"]["SUCCESS"] != 2 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestGatewayRefreshAndRotation uses access tokens that live three seconds
// (two to three, as the sandbox's expiries have whole seconds): their
// refresh-ahead window is half that, and requests wait for a refresh from
// A − m, m = window/2 ≤ 0.75 s, so a request 2.6 s after the token was
// obtained refreshes it, and each refresh must present the newest refresh
// token.
func TestGatewayRefreshAndRotation(t *testing.T) {
	g := startGateway(t, "", "access_token_ttl 3s")
	lr := g.mustLogin("2188000000000202")
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		time.Sleep(2600 * time.Millisecond)
		resp, body := g.call(http.MethodGet, "/api/me", bearer(lr.SessionID))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %v", i, resp.StatusCode, body)
		}
		tok := g.up.lastHeader().Get("X-Rebell-Access-Token")
		if seen[tok] {
			t.Fatalf("request %d reused an access token that should have been refreshed", i)
		}
		seen[tok] = true
	}
	st := getStats(t, g.sandbox)
	if st.ByGrantType["REFRESH_TOKEN"]["SUCCESS"] != 4 || st.ByResultCode["USED_REFRESH_TOKEN"] != 0 {
		t.Errorf("stats %+v", st)
	}

	// Rebell down (U) while the access token is still valid: the request,
	// due for a refresh, is served with the cached token (docs/freshness.md).
	last := g.up.lastHeader().Get("X-Rebell-Access-Token")
	if status, _ := postJSON(t, g.sandbox+"/sandbox/faults", `{"count":10,"resultStatus":"U","resultCode":"UNKNOWN_EXCEPTION"}`); status != 200 {
		t.Fatal("fault")
	}
	time.Sleep(1500 * time.Millisecond)
	resp, body := g.call(http.MethodGet, "/api/me", bearer(lr.SessionID))
	if resp.StatusCode != 200 || g.up.lastHeader().Get("X-Rebell-Access-Token") != last {
		t.Errorf("Rebell down, token valid: %d %v", resp.StatusCode, body)
	}
	// The refresh it started (perhaps in the background) tries twice
	// (retries 1): let it finish before the faults change.
	for deadline := time.Now().Add(10 * time.Second); getStats(t, g.sandbox).ByResultCode["UNKNOWN_EXCEPTION"] < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the refresh with Rebell down did not try twice: %+v", getStats(t, g.sandbox))
		}
		time.Sleep(20 * time.Millisecond)
	}
	req, _ := http.NewRequest(http.MethodDelete, g.sandbox+"/sandbox/faults", nil)
	if _, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}

	// A dead refresh token ends the session: reauth_required.
	lr2 := g.mustLogin("2188000000000203")
	if status, _ := postJSON(t, g.sandbox+"/sandbox/faults", `{"count":1,"resultStatus":"F","resultCode":"USED_REFRESH_TOKEN"}`); status != 200 {
		t.Fatal("fault")
	}
	time.Sleep(2600 * time.Millisecond) // due for a refresh
	resp, body = g.call(http.MethodGet, "/api/me", bearer(lr2.SessionID))
	if resp.StatusCode != 401 || body["error"] != "reauth_required" || body["resultCode"] != "USED_REFRESH_TOKEN" {
		t.Errorf("dead refresh token: %d %v", resp.StatusCode, body)
	}
	resp, _ = g.call(http.MethodGet, "/api/me", bearer(lr2.SessionID))
	if resp.StatusCode != 401 {
		t.Errorf("ended session still served: %d", resp.StatusCode)
	}
}

func TestGatewayCookieMode(t *testing.T) {
	g := startGateway(t, "session_cookie rebell_sid", "")
	resp, lr := g.login(issueCode(t, g.sandbox, ""))
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "rebell_sid" {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value != lr.SessionID || !cookie.HttpOnly || cookie.Path != "/" || cookie.SameSite != http.SameSiteLaxMode || cookie.MaxAge <= 0 || cookie.Secure {
		t.Fatalf("cookie %+v", cookie)
	}
	resp, _ = g.call(http.MethodGet, "/api/cart", map[string]string{"Cookie": "theme=dark; rebell_sid=" + lr.SessionID + "; lang=it"})
	if resp.StatusCode != 200 {
		t.Fatalf("cookie request: %d", resp.StatusCode)
	}
	up := g.up.lastHeader()
	if got := strings.Join(up.Values("Cookie"), "; "); strings.Contains(got, lr.SessionID) || !strings.Contains(got, "theme=dark") || !strings.Contains(got, "lang=it") {
		t.Errorf("upstream Cookie %q", got)
	}
	resp, _ = g.call(http.MethodPost, "/rebell/logout", map[string]string{"Cookie": "rebell_sid=" + lr.SessionID})
	if resp.StatusCode != 204 {
		t.Fatalf("logout %d", resp.StatusCode)
	}
	cleared := false
	for _, c := range resp.Cookies() {
		cleared = cleared || (c.Name == "rebell_sid" && c.MaxAge < 0)
	}
	if !cleared {
		t.Errorf("logout did not clear the cookie: %v", resp.Header.Values("Set-Cookie"))
	}
}

// TestGatewayReloadKeepsSessions reloads Caddy's config (as `caddy reload`
// does) with a changed timeout: sessions survive.
func TestGatewayReloadKeepsSessions(t *testing.T) {
	g := startGateway(t, "timeout 5s", "")
	lr := g.mustLogin("2188000000000303")
	g.authOpts = "timeout 4s"
	g.caddy.reload(g.caddyfile())
	resp, body := g.call(http.MethodGet, "/api/after-reload", bearer(lr.SessionID))
	if resp.StatusCode != 200 || body["customerId"] != "2188000000000303" {
		t.Fatalf("after reload: %d %v", resp.StatusCode, body)
	}
	// Reloading the same config again keeps it too.
	g.caddy.reload(g.caddyfile())
	resp, _ = g.call(http.MethodGet, "/api/after-second-reload", bearer(lr.SessionID))
	if resp.StatusCode != 200 {
		t.Fatalf("after second reload: %d", resp.StatusCode)
	}
	// Admin API sees the session.
	r, err := http.Get("http://" + g.caddy.AdminAddr + "/rebell/sessions")
	if err != nil {
		t.Fatal(err)
	}
	var n struct{ Sessions int }
	_ = json.NewDecoder(r.Body).Decode(&n)
	r.Body.Close()
	if n.Sessions < 1 {
		t.Errorf("admin sessions = %d", n.Sessions)
	}
	// Ending the customer's sessions through the admin API.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+g.caddy.AdminAddr+"/rebell/customers/2188000000000303/sessions", nil)
	r, err = http.DefaultClient.Do(req)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("admin delete: %v %v", err, r)
	}
	resp, body = g.call(http.MethodGet, "/api/x", bearer(lr.SessionID))
	if resp.StatusCode != 401 {
		t.Errorf("after admin delete: %d %v", resp.StatusCode, body)
	}
}
