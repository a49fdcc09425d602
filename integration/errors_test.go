package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestErrorsThroughHandleErrors runs one Caddy with three gateways on the
// same sandbox: `errors caddy` with a handle_errors block that renders the
// placeholders, `errors caddy` without one, and the default (json) with a
// handle_errors block that must not fire.
func TestErrorsThroughHandleErrors(t *testing.T) {
	kf := writeKeys(t, t.TempDir())
	up := newUpstream(t)
	sbPort, caddyPort, barePort, jsonPort := freePort(t), freePort(t), freePort(t), freePort(t)
	site := func(port int, opts, extra string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	rebell_auth {
		endpoint http://127.0.0.1:%d
		client_id MERCHANT_IT
		private_key_file %s
		rebell_public_key_file %s
		retries 0
		%s
	}
	reverse_proxy %s
	%s
}
`, port, sbPort, kf.MerchantPrivate, kf.PlatformPublic, opts, strings.TrimPrefix(up.URL, "http://"), extra)
	}
	shaped := `handle_errors {
		header Content-Type text/plain
		respond "shaped {http.error.status_code} {http.rebell.error} [{http.rebell.result_code}] {http.rebell.error_message}"
	}`
	cfg := sandboxSite(kf, sbPort, 0, "") +
		site(caddyPort, "errors caddy", shaped) +
		site(barePort, "errors caddy", "") +
		site(jsonPort, "", shaped)
	startCaddy(t, cfg, sbPort, caddyPort, barePort, jsonPort)
	sandbox := fmt.Sprintf("http://127.0.0.1:%d", sbPort)

	do := func(port int, method, path, body, auth string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	type want struct {
		status int
		code   string
		header string // a header that must be set
	}
	cases := []struct {
		name                    string
		method, path, body, aut string
		want                    want
	}{
		{"no session", "GET", "/api/x", "", "", want{401, "session_required", "WWW-Authenticate"}},
		{"malformed session", "GET", "/api/x", "", "Bearer nope", want{401, "session_invalid", "WWW-Authenticate"}},
		{"login GET", "GET", "/rebell/login", "", "", want{405, "method_not_allowed", "Allow"}},
		{"bad login body", "POST", "/rebell/login", `{"authCode":"no spaces allowed"}`, "", want{400, "invalid_auth_code", ""}},
		{"code Rebell rejects", "POST", "/rebell/login", `{"authCode":"NeverIssued"}`, "", want{401, "auth_code_rejected", "WWW-Authenticate"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// errors caddy + handle_errors: the site's page, with the placeholders.
			resp, body := do(caddyPort, c.method, c.path, c.body, c.aut)
			if resp.StatusCode != c.want.status {
				t.Errorf("caddy: status %d, want %d", resp.StatusCode, c.want.status)
			}
			if !strings.HasPrefix(body, fmt.Sprintf("shaped %d %s [", c.want.status, c.want.code)) || strings.Contains(body, "{") {
				t.Errorf("caddy: body %q", body)
			}
			if c.want.code == "auth_code_rejected" && !strings.Contains(body, "[INVALID_CODE]") {
				t.Errorf("caddy: resultCode not in %q", body)
			}
			if !strings.HasSuffix(strings.TrimSpace(body), ".") {
				t.Errorf("caddy: no message sentence in %q", body)
			}
			if c.want.header != "" && resp.Header.Get(c.want.header) == "" {
				t.Errorf("caddy: %s missing", c.want.header)
			}

			// errors caddy without handle_errors: Caddy's bare status.
			resp, body = do(barePort, c.method, c.path, c.body, c.aut)
			if resp.StatusCode != c.want.status || body != "" {
				t.Errorf("bare: %d %q, want %d and no body", resp.StatusCode, body, c.want.status)
			}
			if c.want.header != "" && resp.Header.Get(c.want.header) == "" {
				t.Errorf("bare: %s missing", c.want.header)
			}

			// The default writes the JSON itself; handle_errors never runs.
			resp, body = do(jsonPort, c.method, c.path, c.body, c.aut)
			var m map[string]string
			if resp.StatusCode != c.want.status || json.Unmarshal([]byte(body), &m) != nil || m["error"] != c.want.code {
				t.Errorf("json: %d %q", resp.StatusCode, body)
			}
		})
	}

	// A request with a session still reaches the upstream in caddy mode.
	code := issueCode(t, sandbox, "")
	resp, body := do(caddyPort, "POST", "/rebell/login", fmt.Sprintf(`{"authCode":%q}`, code), "")
	var login struct{ SessionID string }
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &login) != nil {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	resp, body = do(caddyPort, "GET", "/api/x", "", "Bearer "+login.SessionID)
	if resp.StatusCode != 200 || !strings.Contains(body, "customerId") {
		t.Errorf("with a session: %d %s", resp.StatusCode, body)
	}
}
