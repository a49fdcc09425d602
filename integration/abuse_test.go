package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// abuseRebell is the mock Rebell of abuse tests: auth codes starting with
// "bogus-" are made up, and Rebell takes refuseAfter to refuse them with
// INVALID_CODE; everything else is mockRebell's.
type abuseRebell struct {
	*mockRebell
	URL                 string
	refuseAfter         time.Duration
	bogus, bogusFlight  atomic.Int64
	bogusPeak, refreshN atomic.Int64
}

func newAbuseRebell(t *testing.T, refuseAfter time.Duration) *abuseRebell {
	t.Helper()
	a := &abuseRebell{mockRebell: newMockRebell(t), refuseAfter: refuseAfter}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.URL = "http://" + l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(a.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

func (a *abuseRebell) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 8192))
	var req applyBody
	_ = json.Unmarshal(raw, &req)
	if req.GrantType == rebell.GrantRefreshToken {
		a.refreshN.Add(1)
	}
	if req.GrantType == rebell.GrantAuthorizationCode && strings.HasPrefix(req.AuthCode, "bogus-") {
		a.bogus.Add(1)
		n := a.bogusFlight.Add(1)
		defer a.bogusFlight.Add(-1)
		for p := a.bogusPeak.Load(); n > p && !a.bogusPeak.CompareAndSwap(p, n); p = a.bogusPeak.Load() {
		}
		select {
		case <-time.After(a.refuseAfter):
		case <-r.Context().Done():
			return
		}
		a.write(w, r, map[string]any{"result": applyResult{"F", rebell.CodeInvalidCode, "Invalid code."}})
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	a.mockRebell.serve(w, r)
}

// spent reports whether Rebell was asked about code.
func (a *abuseRebell) spent(code string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.codes[code]
}

// abuseGateway is a Caddy with rebell_auth (authOpts added) in front of an
// abuseRebell and an upstream; global adds global options.
type abuseGateway struct {
	t     *testing.T
	caddy *caddyProc
	base  string
	port  int
	rb    *abuseRebell
	up    *upstream
	codes atomic.Int64
}

func startAbuseGateway(t *testing.T, rb *abuseRebell, global, authOpts string) *abuseGateway {
	t.Helper()
	kf := writeKeys(t, t.TempDir())
	g := &abuseGateway{t: t, rb: rb, up: newUpstream(t), port: freePort(t)}
	cf := fmt.Sprintf(`
http://127.0.0.1:%d {
	rebell_auth {
		endpoint %s
		client_id MERCHANT_IT
		private_key_file %s
		rebell_public_key_file %s
		retries 0
		%s
	}
	reverse_proxy %s
}
`, g.port, rb.URL, kf.MerchantPrivate, kf.PlatformPublic, authOpts, strings.TrimPrefix(g.up.URL, "http://"))
	g.base = fmt.Sprintf("http://127.0.0.1:%d", g.port)
	g.caddy = startCaddyGlobal(t, global, cf, g.port)
	return g
}

// clientFrom is an HTTP client whose connections come from the loopback
// address ip (127.0.0.2 is another client address than 127.0.0.1).
func clientFrom(ip string, conns int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConns: conns, MaxIdleConnsPerHost: conns},
		Timeout:   45 * time.Second,
	}
}

// post posts a login with code and headers; it returns the response with
// its body read into body.
func (g *abuseGateway) post(c *http.Client, code string, header ...string) (resp *http.Response, body string, err error) {
	req, _ := http.NewRequest(http.MethodPost, g.base+"/rebell/login", strings.NewReader(`{"authCode":"`+code+`"}`))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err = c.Do(req)
	if err != nil {
		return nil, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), nil
}

func (g *abuseGateway) mustLogin(c *http.Client) string {
	g.t.Helper()
	resp, body, err := g.post(c, fmt.Sprintf("good-%d", g.codes.Add(1)))
	if err != nil || resp.StatusCode != http.StatusOK {
		g.t.Fatalf("login: %v %v %s", err, resp, body)
	}
	var out struct{ SessionID string }
	_ = json.Unmarshal([]byte(body), &out)
	return out.SessionID
}

type hit struct {
	sent, at time.Time
	status   int
}

// floodConn posts logins on one kept-alive connection from 127.0.0.2,
// reconnecting when the gateway closes it.
type floodConn struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
}

func (f *floodConn) post(code string) int {
	if f.conn == nil {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", f.addr)
		if err != nil {
			return 0
		}
		f.conn, f.br = c, bufio.NewReader(c)
	}
	body := `{"authCode":"` + code + `"}`
	_ = f.conn.SetDeadline(time.Now().Add(45 * time.Second))
	_, err := fmt.Fprintf(f.conn, "POST /rebell/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", f.addr, len(body), body)
	if err != nil {
		f.close()
		return 0
	}
	resp, err := http.ReadResponse(f.br, nil)
	if err != nil {
		f.close()
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		f.close()
	}
	return resp.StatusCode
}

func (f *floodConn) close() {
	if f.conn != nil {
		f.conn.Close()
		f.conn = nil
	}
}

// TestAbuseLoginFloodKeepsSessionsServed: with max_concurrent_calls 8, a
// Rebell that takes 400 ms to refuse a made-up code, and 160 clients from
// one address posting made-up codes (at most 10 a second each) for 9 s,
// five signed-in sessions whose access tokens expire (every 3 s) during the
// flood are each served within 2 s of any moment, and at least 80 % of
// their requests are 200. With the defaults (login_rate), logins from
// another address still work during the flood. With login_rate off (a
// flood from many addresses, as far as the per-address limit is
// concerned), the guard alone keeps the refreshes going: logins may hold at
// most 6 of the 8 slots, and refreshes go first.
func TestAbuseLoginFloodKeepsSessionsServed(t *testing.T) {
	for _, tc := range []struct {
		name, opts  string
		otherLogins bool // logins from another address must all succeed
	}{
		{"defaults", "", true},
		{"login_rate off", "login_rate off", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rb := newAbuseRebell(t, 400*time.Millisecond)
			rb.accessTTL.Store(int64(3 * time.Second))
			g := startAbuseGateway(t, rb, "", "max_concurrent_calls 8\n\t\t"+tc.opts)
			floodAndMeasure(t, g, tc.otherLogins)
		})
	}
}

func floodAndMeasure(t *testing.T, g *abuseGateway, otherLogins bool) {
	const (
		sessions = 5
		clients  = 160
		flood    = 9 * time.Second
	)
	local := clientFrom("127.0.0.1", 2*sessions)
	sids := make([]string, sessions)
	for i := range sids {
		sids[i] = g.mustLogin(local)
	}
	start := time.Now()
	end := start.Add(flood)
	var wg sync.WaitGroup

	// The flood: 160 clients at 127.0.0.2, each at most 10 made-up codes
	// a second, on a kept-alive connection with a minimal client (the
	// test's own CPU must not be what slows the gateway down).
	var floodStatus sync.Map // status -> *atomic.Int64
	var seq atomic.Int64
	for range clients {
		wg.Go(func() {
			fc := &floodConn{addr: fmt.Sprintf("127.0.0.1:%d", g.port)}
			defer fc.close()
			for tick := time.Now(); time.Now().Before(end); tick = tick.Add(100 * time.Millisecond) {
				status := fc.post(fmt.Sprintf("bogus-%d", seq.Add(1)))
				n, _ := floodStatus.LoadOrStore(status, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
				time.Sleep(time.Until(tick.Add(100 * time.Millisecond)))
			}
		})
	}

	// The signed-in users: a request every 100 ms each.
	hits := make([][]hit, sessions)
	for i := range sids {
		wg.Go(func() {
			for time.Now().Before(end) {
				req, _ := http.NewRequest(http.MethodGet, g.base+"/api/orders", nil)
				req.Header.Set("Authorization", "Bearer "+sids[i])
				status, sent := 0, time.Now()
				if resp, err := local.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				hits[i] = append(hits[i], hit{sent, time.Now(), status})
				time.Sleep(100 * time.Millisecond)
			}
		})
	}

	// Another user logs in from 127.0.0.1 once a second.
	var loginStatuses []int
	wg.Go(func() {
		for time.Sleep(500 * time.Millisecond); time.Now().Before(end.Add(-500 * time.Millisecond)); time.Sleep(time.Second) {
			status := 0
			if resp, _, err := g.post(local, fmt.Sprintf("good-%d", g.codes.Add(1))); err == nil {
				status = resp.StatusCode
			}
			loginStatuses = append(loginStatuses, status)
		}
	})
	wg.Wait()

	var summary []string
	floodStatus.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%v:%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	sort.Strings(summary)
	t.Logf("flood answers %v; made-up codes at Rebell %d (peak %d at once); refreshes at Rebell %d; logins from 127.0.0.1 %v",
		summary, g.rb.bogus.Load(), g.rb.bogusPeak.Load(), g.rb.refreshN.Load(), loginStatuses)

	for i, hs := range hits {
		ok := 0
		var statuses []string
		var slowest, unserved time.Duration
		for j, h := range hs {
			if h.status == http.StatusOK {
				ok++
				slowest = max(slowest, h.at.Sub(h.sent))
				continue
			}
			statuses = append(statuses, fmt.Sprint(h.status))
			// How long from this failed request until the session was
			// served again (or the flood ended).
			servedAt := end
			for _, later := range hs[j+1:] {
				if later.status == http.StatusOK {
					servedAt = later.at
					break
				}
			}
			unserved = max(unserved, servedAt.Sub(h.sent))
		}
		ratio := float64(ok) / float64(len(hs))
		t.Logf("session %d: %d/%d requests 200 (%.0f%%), slowest 200 %v, longest unserved after a failure %v, failures %v",
			i, ok, len(hs), 100*ratio, slowest.Round(time.Millisecond), unserved.Round(time.Millisecond), statuses)
		if ratio < 0.8 {
			t.Errorf("session %d: only %.0f%% of its requests were 200", i, 100*ratio)
		}
		if slowest > 2*time.Second || unserved > 2*time.Second {
			t.Errorf("session %d: not served within 2 s (slowest 200 %v, unserved %v)", i, slowest.Round(time.Millisecond), unserved.Round(time.Millisecond))
		}
	}
	if g.rb.refreshN.Load() < sessions {
		t.Errorf("only %d refreshes reached Rebell: the tokens did not expire during the flood", g.rb.refreshN.Load())
	}
	if otherLogins {
		if len(loginStatuses) < 3 {
			t.Errorf("only %d logins from the other address were tried", len(loginStatuses))
		}
		for _, s := range loginStatuses {
			if s != http.StatusOK {
				t.Errorf("a login from another address got %d during the flood: %v", s, loginStatuses)
				break
			}
		}
	}
}

// TestAbuseCrossSiteLogin: with the cookie on, a cross-site login is
// refused before Rebell sees its code; the same code without those headers
// then logs in, and a same-origin browser login works.
func TestAbuseCrossSiteLogin(t *testing.T) {
	rb := newAbuseRebell(t, 0)
	g := startAbuseGateway(t, rb, "", "")
	c := clientFrom("127.0.0.1", 2)
	resp, body, err := g.post(c, "xs-code-1", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
	if err != nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"error":"cross_site_request"`) {
		t.Fatalf("cross-site login: %v %v %s", err, resp, body)
	}
	if resp.Header.Get("Set-Cookie") != "" || rb.spent("xs-code-1") {
		t.Fatal("a cross-site login set a cookie or reached Rebell")
	}
	if resp, body, err = g.post(c, "xs-code-1"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the same code without the headers: %v %v %s", err, resp, body)
	}
	resp, body, err = g.post(c, "xs-code-2", "Origin", g.base, "Sec-Fetch-Site", "same-origin")
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Set-Cookie"), "rebell_session=") {
		t.Fatalf("same-origin browser login: %v %v %s", err, resp, body)
	}
	// A cross-site logout ends nothing.
	var out struct{ SessionID string }
	_ = json.Unmarshal([]byte(body), &out)
	req, _ := http.NewRequest(http.MethodPost, g.base+"/rebell/logout", nil)
	req.Header.Set("Cookie", "rebell_session="+out.SessionID)
	req.Header.Set("Origin", "https://evil.example")
	lo, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	lo.Body.Close()
	if lo.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site logout: %d", lo.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, g.base+"/api", nil)
	req.Header.Set("Authorization", "Bearer "+out.SessionID)
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the session after a cross-site logout: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
}

// TestAbuseTrustedProxies: behind trusted_proxies, a proxy's
// X-Forwarded-Proto: https makes the cookie Secure and X-Forwarded-For
// names the client the login limit counts; without trusted_proxies the
// same headers change nothing.
func TestAbuseTrustedProxies(t *testing.T) {
	const global = "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/8\n\t}"
	for _, tc := range []struct {
		name, global string
		trusted      bool
	}{{"trusted", global, true}, {"untrusted", "", false}} {
		t.Run(tc.name, func(t *testing.T) {
			rb := newAbuseRebell(t, 0)
			g := startAbuseGateway(t, rb, tc.global, "login_rate 2/1h burst 2")
			c := clientFrom("127.0.0.1", 2)
			resp, body, err := g.post(c, "good-proto", "X-Forwarded-Proto", "https", "X-Forwarded-For", "203.0.113.9")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("login: %v %v %s", err, resp, body)
			}
			if secure := strings.Contains(resp.Header.Get("Set-Cookie"), "; Secure"); secure != tc.trusted {
				t.Errorf("Set-Cookie %q: Secure %v, want %v", resp.Header.Get("Set-Cookie"), secure, tc.trusted)
			}
			// A second login from 203.0.113.9 uses its bucket up; a third
			// is refused. Another forwarded client is counted apart only
			// when the proxy is trusted.
			if resp, _, _ := g.post(c, "good-2", "X-Forwarded-For", "203.0.113.9"); resp == nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("second login: %v", resp)
			}
			resp, body, _ = g.post(c, "good-3", "X-Forwarded-For", "203.0.113.9")
			if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
				!strings.Contains(body, `"error":"too_many_logins"`) {
				t.Fatalf("third login: %v %s", resp, body)
			}
			if rb.spent("good-3") {
				t.Fatal("a login over the limit reached Rebell")
			}
			resp, _, _ = g.post(c, "good-4", "X-Forwarded-For", "203.0.113.10")
			want := http.StatusTooManyRequests // the peer, 127.0.0.1, is the client
			if tc.trusted {
				want = http.StatusOK
			}
			if resp == nil || resp.StatusCode != want {
				t.Fatalf("login of another forwarded client: %v, want %d", resp, want)
			}
		})
	}
}

// TestConfigRefusesUnusableHeaderNames: caddy validate refuses every header
// name that cannot carry a session or an identity, naming the option.
func TestConfigRefusesUnusableHeaderNames(t *testing.T) {
	kf := writeKeys(t, t.TempDir())
	fields := []string{"access_token_header", "customer_id_header", "session_header"}
	for i, name := range []string{
		"Connection", "Keep-Alive", "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
		"Content-Length", "Host", "Cookie", "Set-Cookie", "Forwarded", "X-Forwarded-For", "X-Forwarded-Proto",
	} {
		field := fields[i%len(fields)]
		out, err := caddyValidate(t, kf, field+" "+name)
		// The error is inside a JSON log line: its quotes are escaped.
		if err == nil || !strings.Contains(out, field+` \"`+name+`\" cannot be used`) {
			t.Errorf("%s %s: err %v, output:\n%s", field, name, err, out)
		}
	}
	if out, err := caddyValidate(t, kf, "session_header Authorization\n\t\taccess_token_header Authorization"); err != nil {
		t.Errorf("Authorization refused:\n%s", out)
	}
}

func caddyValidate(t *testing.T, kf keyFiles, opts string) (string, error) {
	t.Helper()
	cfg := fmt.Sprintf(":0 {\n\trebell_auth {\n\t\tendpoint http://127.0.0.1:1\n\t\tclient_id C\n\t\tprivate_key_file %s\n\t\t%s\n\t}\n\trespond ok\n}\n",
		kf.MerchantPrivate, opts)
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, "validate", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestAbuseTwoDirectivesOneRoute: a site-wide rebell_auth plus
// `rebell_auth /api/*` serves /api with the identity (the second is a
// no-op), and both the matcher and the second directive are warned about;
// a rebell_auth inside `handle /api/*` is warned about too.
func TestAbuseTwoDirectivesOneRoute(t *testing.T) {
	rb := newAbuseRebell(t, 0)
	kf := writeKeys(t, t.TempDir())
	up := newUpstream(t)
	port := freePort(t)
	auth := fmt.Sprintf(`{
		endpoint %s
		client_id MERCHANT_IT
		private_key_file %s
		rebell_public_key_file %s
	}`, rb.URL, kf.MerchantPrivate, kf.PlatformPublic)
	cf := fmt.Sprintf(`
http://127.0.0.1:%d {
	rebell_auth %s
	rebell_auth /api/* %s
	handle /other/* {
		rebell_auth %s
	}
	reverse_proxy %s
}
`, port, auth, auth, auth, strings.TrimPrefix(up.URL, "http://"))
	p := startCaddy(t, cf, port)
	g := &abuseGateway{t: t, caddy: p, base: fmt.Sprintf("http://127.0.0.1:%d", port), rb: rb, up: up}
	sid := g.mustLogin(http.DefaultClient)
	for _, path := range []string{"/api/orders", "/elsewhere"} {
		req, _ := http.NewRequest(http.MethodGet, g.base+path, nil)
		req.Header.Set("Authorization", "Bearer "+sid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || up.lastHeader().Get("X-Rebell-Customer-Id") == "" {
			t.Fatalf("%s: %d %s, upstream saw customer id %q", path, resp.StatusCode, body, up.lastHeader().Get("X-Rebell-Customer-Id"))
		}
		if up.lastHeader().Get("X-Rebell-Access-Token") == "" || up.lastHeader().Get("Authorization") != "" {
			t.Fatalf("%s: the upstream saw %v", path, up.lastHeader())
		}
	}
	logs := p.logs.String()
	if n := strings.Count(logs, "rebell_auth runs behind a matcher"); n != 2 {
		t.Errorf("%d matcher warnings, want 2 (rebell_auth /api/* and the one in handle):\n%s", n, logs)
	}
	if n := strings.Count(logs, "passed two rebell_auth handlers"); n != 1 {
		t.Errorf("%d warnings of the second directive, want 1:\n%s", n, logs)
	}
}

// TestAbuseLoginCallsPerSecond: logins over login_calls_per_second (all
// addresses together) get 503 rebell_unavailable with Retry-After before
// Rebell sees their code, which stays good for a later login.
func TestAbuseLoginCallsPerSecond(t *testing.T) {
	rb := newAbuseRebell(t, 0)
	g := startAbuseGateway(t, rb, "", "login_rate off\n\t\tlogin_calls_per_second 2")
	c := clientFrom("127.0.0.1", 4)
	statuses := map[int]int{}
	var refused string
	for i := range 6 {
		code := fmt.Sprintf("cap-%d", i)
		resp, body, err := g.post(c, code)
		if err != nil {
			t.Fatal(err)
		}
		statuses[resp.StatusCode]++
		if resp.StatusCode == http.StatusServiceUnavailable {
			if resp.Header.Get("Retry-After") == "" || !strings.Contains(body, `"error":"rebell_unavailable"`) || rb.spent(code) {
				t.Fatalf("refused login: %v %s, code spent %v", resp.Header, body, rb.spent(code))
			}
			refused = code
		}
	}
	// The bucket holds one second's worth: 2 go through at once.
	if statuses[http.StatusOK] != 2 || statuses[http.StatusServiceUnavailable] != 4 {
		t.Fatalf("answers %v, want 2 × 200 and 4 × 503", statuses)
	}
	if n := g.metricValue("caddy_rebell_calls_refused_total", `reason="login_rate"`); n != 4 {
		t.Errorf("calls refused for the login rate: %v, want 4", n)
	}
	time.Sleep(600 * time.Millisecond) // one token back
	if resp, body, err := g.post(c, refused); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the refused code later: %v %v %s", err, resp, body)
	}
}

// metricValue returns the value of the first series of name whose labels
// contain label, -1 if none.
func (g *abuseGateway) metricValue(name, label string) float64 {
	resp, err := http.Get("http://" + g.caddy.AdminAddr + "/metrics")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			f := strings.Fields(line)
			var v float64
			fmt.Sscan(f[len(f)-1], &v)
			return v
		}
	}
	return -1
}
