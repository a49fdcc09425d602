package integration

// End-to-end tests of the edges of header hygiene (request trailers,
// Connection), public paths against the matcher form, verified result codes
// and key rotation, through a real Caddy with an upstream that records every
// header and trailer it receives. Each attack is first shown to work where
// rebell_auth does not run (a control site, or the matcher form), so that
// its absence behind rebell_auth is not an accident of the test.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// seen is one request as the recording upstream received it.
type seen struct {
	Path     string
	Header   http.Header
	Trailer  http.Header
	Body     string
	Protocol string
}

// recUpstream records every request's headers, body and trailers (read
// after the body, when net/http has filled them in).
type recUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newRecUpstream(t testing.TB) *recUpstream {
	u := &recUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{Path: r.URL.RawPath + "|" + r.URL.Path, Header: r.Header.Clone(), Trailer: r.Trailer.Clone(), Body: string(body), Protocol: r.Proto})
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"upstream":true}`)
	}))
	t.Cleanup(u.Close)
	return u
}

// last returns the last request received, failing if there is none.
func (u *recUpstream) last(t testing.TB) seen {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *recUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// edge is a Caddy with the sandbox, a gateway site and a control site
// (plain reverse_proxy to the same upstream, no rebell_auth).
type edge struct {
	t                       *testing.T
	caddy                   *caddyProc
	kf                      keyFiles
	up                      *recUpstream
	gwPort, sbPort, ctlPort int
	gw, sandbox, ctl        string
}

// gatewaySite is the gateway's site: rebell_auth (with matcher and extra
// options) then reverse_proxy.
func (e *edge) gatewaySite(matcher, opts string) string {
	return fmt.Sprintf(`http://127.0.0.1:%d {
	rebell_auth %s {
		endpoint http://127.0.0.1:%d
		client_id MERCHANT_IT
		private_key_file %s
		retries 0
		%s
	}
	reverse_proxy %s
}
`, e.gwPort, matcher, e.sbPort, e.kf.MerchantPrivate, opts, strings.TrimPrefix(e.up.URL, "http://"))
}

func (e *edge) caddyfile(matcher, opts string) string {
	return sandboxSite(e.kf, e.sbPort, 0, "") + e.gatewaySite(matcher, opts) +
		fmt.Sprintf("http://127.0.0.1:%d {\n\treverse_proxy %s\n}\n", e.ctlPort, strings.TrimPrefix(e.up.URL, "http://"))
}

// startEdge starts the topology. opts go in rebell_auth; without a
// rebell_public_key_file line among them, the sandbox's key is used.
func startEdge(t *testing.T, global, matcher, opts string) *edge {
	t.Helper()
	e := &edge{t: t, kf: writeKeys(t, t.TempDir()), up: newRecUpstream(t), gwPort: freePort(t), sbPort: freePort(t), ctlPort: freePort(t)}
	if !strings.Contains(opts, "rebell_public_key") {
		opts = "rebell_public_key_file " + e.kf.PlatformPublic + "\n\t\t" + opts
	}
	e.gw = fmt.Sprintf("http://127.0.0.1:%d", e.gwPort)
	e.sandbox = fmt.Sprintf("http://127.0.0.1:%d", e.sbPort)
	e.ctl = fmt.Sprintf("http://127.0.0.1:%d", e.ctlPort)
	e.caddy = startCaddyGlobal(t, global, e.caddyfile(matcher, opts), e.gwPort, e.sbPort, e.ctlPort)
	return e
}

// mustGet sends GET path with session sid and fails t unless it is
// answered 200.
func (e *edge) mustGet(t *testing.T, path, sid string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.gw+path, nil)
	req.Header.Set("Authorization", "Bearer "+sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
}

func (e *edge) login(customerID string) string {
	e.t.Helper()
	code := issueCode(e.t, e.sandbox, customerID)
	status, body := postJSON(e.t, e.gw+"/rebell/login", fmt.Sprintf(`{"authCode":%q}`, code))
	var lr loginResult
	_ = json.Unmarshal(body, &lr)
	if status != 200 || len(lr.SessionID) != 43 {
		e.t.Fatalf("login: %d %s", status, body)
	}
	return lr.SessionID
}

// rawHTTP1 sends a raw HTTP/1.1 request (names exactly as written) to addr
// and returns the response status.
func rawHTTP1(t *testing.T, base, raw string) int {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// identityLike lists the header or trailer names of hd that name an
// identity header or Authorization, in any spelling.
func identityLike(hd http.Header) []string {
	var out []string
	for k := range hd {
		n := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(k), "_", "-"))
		if n == "x-rebell-access-token" || n == "x-rebell-customer-id" || n == "authorization" {
			out = append(out, k)
		}
	}
	return out
}

func chunkedWithTrailers(host, path, extraHeaders, trailers string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + extraHeaders +
		"Transfer-Encoding: chunked\r\nTrailer: X-Rebell-Customer-Id, X-Rebell-Access-Token, Authorization, X-Checksum\r\n" +
		"Connection: close\r\n\r\n4\r\nbody\r\n0\r\n" + trailers + "\r\n"
}

// TestEdgeTrailers: identity and session credential sent as request
// trailers, over HTTP/1.1 (raw, with '_' spellings) and h2c, reach the
// upstream through a plain reverse_proxy, and never through rebell_auth.
func TestEdgeTrailers(t *testing.T) {
	e := startEdge(t, "servers {\n\t\tprotocols h1 h2c\n\t}", "", "")
	sid := e.login("2188000000000901")
	trailers := "X-Rebell-Customer-Id: spoof-c\r\nX_rebell_customer_id: spoof-u\r\nX-Rebell-Access-Token: spoof-a\r\n" +
		"Authorization: Bearer " + sid + "\r\nX-Checksum: abc\r\n"

	t.Run("HTTP/1.1 control", func(t *testing.T) {
		if status := rawHTTP1(t, e.ctl, chunkedWithTrailers("127.0.0.1", "/ctl", "", trailers)); status != 200 {
			t.Fatalf("status %d", status)
		}
		got := e.up.last(t)
		if got.Trailer.Get("X-Rebell-Customer-Id") != "spoof-c" || got.Trailer.Get("X-Checksum") != "abc" {
			t.Fatalf("the control did not forward the trailers (the test would prove nothing): %v", got.Trailer)
		}
	})
	t.Run("HTTP/1.1", func(t *testing.T) {
		status := rawHTTP1(t, e.gw, chunkedWithTrailers("127.0.0.1", "/api/h1", "Authorization: Bearer "+sid+"\r\n", trailers))
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		checkTrailersClosed(t, e.up.last(t), sid, "2188000000000901")
	})

	h2c := func(t *testing.T, base string, withSession bool) seen {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/h2c", pr)
		if withSession {
			req.Header.Set("Authorization", "Bearer "+sid)
		}
		req.Trailer = http.Header{"X-Rebell-Customer-Id": nil, "X-Rebell-Access-Token": nil, "X-Checksum": nil}
		go func() {
			_, _ = pw.Write([]byte("body"))
			req.Trailer.Set("X-Rebell-Customer-Id", "spoof-c")
			req.Trailer.Set("X-Rebell-Access-Token", "spoof-a")
			req.Trailer.Set("X-Checksum", "abc")
			pw.Close()
		}()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
		}
		return e.up.last(t)
	}
	t.Run("h2c control", func(t *testing.T) {
		if got := h2c(t, e.ctl, false); got.Trailer.Get("X-Rebell-Customer-Id") != "spoof-c" {
			t.Fatalf("the control did not forward the h2c trailers: %v", got.Trailer)
		}
	})
	t.Run("h2c", func(t *testing.T) {
		checkTrailersClosed(t, h2c(t, e.gw, true), sid, "2188000000000901")
	})
}

func checkTrailersClosed(t *testing.T, got seen, sid, customer string) {
	t.Helper()
	if names := identityLike(got.Trailer); len(names) != 0 {
		t.Errorf("trailers %v reached the upstream: %v", names, got.Trailer)
	}
	if got.Trailer.Get("X-Checksum") != "abc" || got.Body != "body" {
		t.Errorf("other trailer or body lost: %v %q", got.Trailer, got.Body)
	}
	if got.Header.Get("X-Rebell-Customer-Id") != customer || got.Header.Get("X-Rebell-Access-Token") == "" {
		t.Errorf("identity not injected: %v", got.Header)
	}
	for _, hd := range []http.Header{got.Header, got.Trailer} {
		for k, vs := range hd {
			for _, v := range vs {
				if strings.Contains(v, sid) || strings.HasPrefix(v, "spoof") {
					t.Errorf("%s: %q reached the upstream", k, v)
				}
			}
		}
	}
}

// TestEdgeConnection: a Connection header naming the identity headers makes
// reverse_proxy drop them as hop-by-hop (shown on the control site with
// another header), but not behind rebell_auth.
func TestEdgeConnection(t *testing.T) {
	e := startEdge(t, "", "", "")
	sid := e.login("2188000000000902")
	if status := rawHTTP1(t, e.ctl, "GET /ctl HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Hop: 1\r\nX-Stay: 1\r\nConnection: X-Hop, close\r\n\r\n"); status != 200 {
		t.Fatalf("control: %d", status)
	}
	if got := e.up.last(t); got.Header.Get("X-Hop") != "" || got.Header.Get("X-Stay") != "1" {
		t.Fatalf("the control did not drop the Connection-named header (the test would prove nothing): %v", got.Header)
	}
	for _, conn := range []string{
		"X-Rebell-Access-Token, X-Rebell-Customer-Id",
		"keep-alive, x-rebell-access-token",
		"X_REBELL_CUSTOMER_ID, X-Rebell-Customer-Id , Authorization",
	} {
		status := rawHTTP1(t, e.gw, "GET /api/conn HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "+sid+"\r\nConnection: "+conn+"\r\nConnection: close\r\n\r\n")
		if status != 200 {
			t.Fatalf("%q: status %d", conn, status)
		}
		got := e.up.last(t)
		if got.Header.Get("X-Rebell-Customer-Id") != "2188000000000902" || got.Header.Get("X-Rebell-Access-Token") == "" {
			t.Errorf("Connection: %s: identity missing upstream: %v", conn, got.Header)
		}
	}
}

// TestEdgeForgedResultCode: an answer whose signature does not verify puts
// no resultCode in the Mini App's error, and is logged at ERROR as
// unverified; a verified failure's resultCode is shown (the control).
func TestEdgeForgedResultCode(t *testing.T) {
	e := startEdge(t, "", "", "")
	if status, _ := postJSON(t, e.sandbox+"/sandbox/faults", `{"count":1,"resultStatus":"F","resultCode":"ACCESS_DENIED"}`); status != 200 {
		t.Fatal("fault")
	}
	status, body := postJSON(t, e.gw+"/rebell/login", fmt.Sprintf(`{"authCode":%q}`, issueCode(t, e.sandbox, "")))
	if status != 502 || !strings.Contains(string(body), `"resultCode":"ACCESS_DENIED"`) {
		t.Fatalf("verified failure: %d %s", status, body)
	}
	for _, fault := range []string{
		`{"count":1,"resultStatus":"F","resultCode":"ATTACKER_CODE_XYZ","forgeSignature":true}`,
		`{"count":1,"resultStatus":"F","resultCode":"ATTACKER_CODE_XYZ","unsigned":true}`,
	} {
		if status, _ := postJSON(t, e.sandbox+"/sandbox/faults", fault); status != 200 {
			t.Fatal("fault")
		}
		status, body := postJSON(t, e.gw+"/rebell/login", fmt.Sprintf(`{"authCode":%q}`, issueCode(t, e.sandbox, "")))
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		if status != 502 || m["error"] != "rebell_rejected" {
			t.Fatalf("forged answer: %d %s", status, body)
		}
		if _, ok := m["resultCode"]; ok || strings.Contains(string(body), "ATTACKER") {
			t.Errorf("forged answer's words reached the client: %s", body)
		}
	}
	// The log line may reach Caddy's output just after the answer does.
	var logs string
	var found int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		logs, found = e.caddy.logs.String(), 0
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, "ATTACKER_CODE_XYZ") && strings.Contains(line, "unverified") && strings.Contains(line, `"level":"error"`) {
				found++
			}
		}
		if found >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if found != 2 {
		t.Errorf("%d ERROR lines name the answer unverified, want 2:\n%s", found, logs)
	}
}

// TestEdgeMatcherVsPublic: with the matcher form, requests outside the
// matcher reach the upstream with a client's identity headers; with one
// rebell_auth and public paths, they never do.
func TestEdgeMatcherVsPublic(t *testing.T) {
	spoof := map[string]string{"X-Rebell-Customer-Id": "spoof-c", "X_rebell_access_token": "spoof-a"}
	send := func(base, path string, header map[string]string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		for k, v := range header {
			req.Header[k] = []string{v}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	paths := []string{"/api", "/other/x", "/api/%2e%2e/x", "/rebell/login"}

	t.Run("matcher form (reproduced)", func(t *testing.T) {
		e := startEdge(t, "", "/api/*", "")
		for _, p := range paths {
			before := e.up.count()
			if status := send(e.gw, p, spoof); status != 200 || e.up.count() != before+1 {
				t.Fatalf("%s: %d: the matcher form did not let the request through", p, status)
			}
			if got := e.up.last(t); got.Header.Get("X-Rebell-Customer-Id") != "spoof-c" {
				t.Fatalf("%s: spoofed header did not reach the upstream in the matcher form: %v", p, got.Header)
			}
		}
	})

	t.Run("public paths", func(t *testing.T) {
		e := startEdge(t, "", "", "public /other/* /health")
		sid := e.login("2188000000000903")
		for _, tc := range []struct {
			path     string
			status   int
			identity bool
		}{
			{"/api", 401, false},
			{"/api/orders", 401, false},
			{"/api/%2e%2e/x", 401, false},
			{"/rebell/login", 405, false},
			{"/other/x", 200, false},
			{"/health", 200, false},
			{"/other/%2e%2e/api/x", 401, false},
		} {
			before := e.up.count()
			status := send(e.gw, tc.path, spoof)
			if status != tc.status {
				t.Errorf("%s: status %d, want %d", tc.path, status, tc.status)
				continue
			}
			if status != 200 {
				if e.up.count() != before {
					t.Errorf("%s: a %d reached the upstream", tc.path, status)
				}
				continue
			}
			got := e.up.last(t)
			if names := identityLike(got.Header); len(names) != 0 {
				t.Errorf("%s: %v reached the upstream without a session: %v", tc.path, names, got.Header)
			}
		}
		// A public path with a valid session gets the identity; with an
		// invalid one, it goes on without it and without the credential.
		h := map[string]string{"Authorization": "Bearer " + sid, "X-Rebell-Customer-Id": "spoof-c"}
		if status := send(e.gw, "/other/me", h); status != 200 {
			t.Fatalf("public with session: %d", status)
		}
		if got := e.up.last(t); got.Header.Get("X-Rebell-Customer-Id") != "2188000000000903" || got.Header.Get("Authorization") != "" {
			t.Errorf("public with session: %v", got.Header)
		}
		h["Authorization"] = "Bearer " + strings.Repeat("A", 43)
		if status := send(e.gw, "/other/me", h); status != 200 {
			t.Fatalf("public with an unknown session: %d", status)
		}
		if got := e.up.last(t); len(identityLike(got.Header)) != 0 {
			t.Errorf("public with an unknown session: %v", got.Header)
		}
	})
}

// TestEdgeSecondRebellKey: a login whose response is signed with the second
// configured Rebell key succeeds; with only the other key, it is refused.
func TestEdgeSecondRebellKey(t *testing.T) {
	other := filepath.Join(t.TempDir(), "other.pub")
	if err := os.WriteFile(other, rebell.EncodePublicKeyPEM(&testkeys.RSA(2).PublicKey), 0o600); err != nil {
		t.Fatal(err)
	}
	kf := writeKeys(t, t.TempDir())
	e := startEdge(t, "", "", "rebell_public_key_file "+other+"\n\t\trebell_public_key_file "+kf.PlatformPublic)
	sid := e.login("2188000000000904")
	e.mustGet(t, "/api/x", sid)

	only := startEdge(t, "", "", "rebell_public_key_file "+other)
	status, body := postJSON(t, only.gw+"/rebell/login", fmt.Sprintf(`{"authCode":%q}`, issueCode(t, only.sandbox, "")))
	if status != 502 || strings.Contains(string(body), "resultCode") {
		t.Fatalf("login with only the other key: %d %s", status, body)
	}
}
