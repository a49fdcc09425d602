package integration

// Configuration that cannot hurt the process, and tokens out of Caddy's own
// DEBUG logs, through the real Caddy binary.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConfigValidateBounds: `caddy validate` refuses out-of-bounds numbers
// and a clear-text endpoint with a clear message, within seconds, without a
// panic or a large allocation.
func TestConfigValidateBounds(t *testing.T) {
	kf := writeKeys(t, t.TempDir())
	for name, tc := range map[string]struct{ opts, want string }{
		"max_sessions 1e17":  {"max_sessions 99999999999999999", "max_sessions: 99999999999999999 is not between 1 and 100000000"},
		"max_sessions 1e9":   {"max_sessions 1000000000", "max_sessions: 1000000000 is not between 1 and 100000000"},
		"endpoint http":      {"", "must be https://"},
		"retries 11":         {"retries 11", "retries: 11 is more than 10"},
		"timeout 1h":         {"timeout 1h", "timeout: 1h0m0s is not between"},
		"idle_timeout 100y":  {"idle_timeout 876000h", "idle_timeout: 876000h0m0s is not between"},
		"key_version 1e12":   {"key_version 1000000000000", "key_version: 1000000000000 is not between"},
		"login_dedup 1e6h":   {"login_dedup_window 1000000h", "login_dedup_window: 1000000h0m0s is not between"},
		"refresh_ahead 1e5h": {"refresh_ahead 100000h", "refresh_ahead: 100000h0m0s is not between"},
	} {
		t.Run(name, func(t *testing.T) {
			endpoint := "http://127.0.0.1:1"
			if name == "endpoint http" {
				endpoint = "http://api.rebellapp.com"
			}
			cfg := fmt.Sprintf(":0 {\n\trebell_auth {\n\t\tendpoint %s\n\t\tclient_id C\n\t\tprivate_key_file %s\n\t\t%s\n\t}\n\trespond ok\n}\n",
				endpoint, kf.MerchantPrivate, tc.opts)
			path := filepath.Join(t.TempDir(), "Caddyfile")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, caddyBin, "validate", "--config", path, "--adapter", "caddyfile")
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
			start := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			if ctx.Err() != nil {
				t.Fatalf("caddy validate did not return within 30s:\n%s", out)
			}
			if err == nil {
				t.Fatalf("caddy validate accepted it:\n%s", out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output does not say %q:\n%s", tc.want, out)
			}
			if strings.Contains(string(out), "panic") || strings.Contains(string(out), "goroutine ") {
				t.Errorf("panic:\n%s", out)
			}
			// Max RSS in KiB on Linux.
			var rss int64
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				if rss = ru.Maxrss >> 10; rss > 512 {
					t.Errorf("caddy validate used %d MiB", rss)
				}
			}
			t.Logf("refused in %v, max RSS %d MiB", took.Round(time.Millisecond), rss)
		})
	}
}

// TestConfigValidateBoundsJSON: the same through a JSON config, which
// skips the Caddyfile's checks and reaches provisioning.
func TestConfigValidateBoundsJSON(t *testing.T) {
	kf := writeKeys(t, t.TempDir())
	for name, tc := range map[string]struct{ fields, want string }{
		// Caddy reads JSON numbers as float64 on the way: 1e17 it says.
		"max_sessions 1e17": {`"max_sessions":99999999999999999`, "is not between 1 and 100000000 (100 million)"},
		"max_sessions 1e9":  {`"max_sessions":1000000000`, "max_sessions: 1000000000 is not between 1 and 100000000"},
		"retries 1e9":       {`"retries":1000000000`, "retries: 1000000000 is not between 0 and 10"},
		"store db":          {`"store":{"redis":{"address":["127.0.0.1:1"],"db":99999999,"encryption_key":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="}}`, "store: db: 99999999 is not between"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := fmt.Sprintf(`{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[`+
				`{"handler":"rebell_auth","endpoint":"http://127.0.0.1:1","client_id":"C","private_key_file":%q,%s}]}]}}}}}`,
				kf.MerchantPrivate, tc.fields)
			path := filepath.Join(t.TempDir(), "caddy.json")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, caddyBin, "validate", "--config", path)
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("caddy validate did not return within 30s:\n%s", out)
			}
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("err %v, output does not say %q:\n%s", err, tc.want, out)
			}
			if strings.Contains(string(out), "panic") || strings.Contains(string(out), "goroutine ") {
				t.Errorf("panic:\n%s", out)
			}
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 512<<10 {
				t.Errorf("caddy validate used %d MiB", ru.Maxrss>>10)
			}
		})
	}
}

// tryLoad posts caddyfile (with p's global options) to the admin API and
// returns the status and body; an error if there was no answer within 30s.
func (p *caddyProc) tryLoad(caddyfile string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.AdminAddr+"/load", strings.NewReader(p.config(caddyfile)))
	req.Header.Set("Content-Type", "text/caddyfile")
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// TestBadReloadKeepsServing: a reload with out-of-bounds numbers is refused
// with an answer (not a dropped connection); the running config keeps
// serving its sessions, the admin API answers, and the next good reload
// works.
func TestBadReloadKeepsServing(t *testing.T) {
	g := startGateway(t, "", "")
	lr := g.mustLogin("2188000000000911")
	for _, bad := range []string{"max_sessions 99999999999999999", "max_sessions 1000000000", "idle_timeout 1ns"} {
		g.authOpts = bad
		start := time.Now()
		status, body, err := g.caddy.tryLoad(g.caddyfile())
		if err != nil {
			t.Fatalf("%s: reload got no answer: %v", bad, err)
		}
		if status == http.StatusOK || !strings.Contains(body, strings.Fields(bad)[0]) {
			t.Fatalf("%s: reload %d %s", bad, status, body)
		}
		t.Logf("%s refused in %v: %s", bad, time.Since(start).Round(time.Millisecond), strings.TrimSpace(body))
		if resp, _ := g.call(http.MethodGet, "/api/still", bearer(lr.SessionID)); resp.StatusCode != 200 {
			t.Fatalf("after the bad reload %q: %d", bad, resp.StatusCode)
		}
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + g.caddy.AdminAddr + "/config/")
		if err != nil {
			t.Fatalf("admin API after the bad reload: %v", err)
		}
		resp.Body.Close()
	}
	// The same through a JSON config, which skips the Caddyfile's checks.
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + g.caddy.AdminAddr + "/config/")
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	bad := strings.Replace(string(cur), `"handler":"rebell_auth",`, `"handler":"rebell_auth","max_sessions":99999999999999999,`, 1)
	if bad == string(cur) {
		t.Fatalf("no rebell_auth handler in the running config: %s", cur)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+g.caddy.AdminAddr+"/load", strings.NewReader(bad))
	req.Header.Set("Content-Type", "application/json")
	c.Timeout = 30 * time.Second
	resp, err = c.Do(req)
	if err != nil {
		t.Fatalf("JSON reload got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == 200 || !strings.Contains(string(body), "is not between 1 and 100000000 (100 million)") {
		t.Fatalf("JSON reload: %d %s", resp.StatusCode, body)
	}
	if resp, _ := g.call(http.MethodGet, "/api/still-json", bearer(lr.SessionID)); resp.StatusCode != 200 {
		t.Fatalf("after the bad JSON reload: %d", resp.StatusCode)
	}

	g.authOpts = "timeout 4s"
	if status, body, err := g.caddy.tryLoad(g.caddyfile()); err != nil || status != 200 {
		t.Fatalf("good reload: %d %s %v", status, body, err)
	}
	if resp, _ := g.call(http.MethodGet, "/api/after", bearer(lr.SessionID)); resp.StatusCode != 200 {
		t.Fatalf("after the good reload: %d", resp.StatusCode)
	}
}

// debugRun starts the edge topology with global options, logs in and makes
// a few API calls. It returns the access tokens the upstream received (in
// whichever header), the session id and Caddy's output.
func debugRun(t *testing.T, global, opts string) (tokens []string, sid, logs string) {
	e := startEdge(t, global, "", opts)
	sid = e.login("2188000000000921")
	for i := range 3 {
		e.mustGet(t, fmt.Sprintf("/api/debug/%d", i), sid)
		got := e.up.last(t)
		tok := got.Header.Get("X-Rebell-Access-Token")
		if tok == "" {
			tok = strings.TrimPrefix(got.Header.Get("Authorization"), "Bearer ")
		}
		if tok == "" {
			t.Fatalf("no access token upstream: %v", got.Header)
		}
		tokens = append(tokens, tok)
	}
	// The DEBUG lines are written as the requests finish; stop Caddy so
	// that everything is flushed.
	e.caddy.stop()
	return tokens, sid, e.caddy.logs.String()
}

var debugWarning = regexp.MustCompile(`(?m)^.*"level":"warn".*default logger is at DEBUG.*$`)

// TestDebugLogsNoAccessToken: Caddy at DEBUG writes the upstream request
// headers ("upstream roundtrip"). With access_token_header Authorization
// (which Caddy redacts) no access token appears anywhere in its output;
// with the default header it does (the control), and a WARN says so once.
func TestDebugLogsNoAccessToken(t *testing.T) {
	t.Run("Authorization", func(t *testing.T) {
		tokens, sid, logs := debugRun(t, "debug", "access_token_header Authorization")
		if !strings.Contains(logs, "upstream roundtrip") {
			t.Fatalf("Caddy did not log at DEBUG (the test would prove nothing):\n%s", logs)
		}
		for _, tok := range append(tokens, sid) {
			if strings.Contains(logs, tok) {
				t.Errorf("a secret appears in Caddy's output")
			}
		}
		if debugWarning.MatchString(logs) {
			t.Error("the DEBUG warning was logged with access_token_header Authorization")
		}
	})
	t.Run("default header (control)", func(t *testing.T) {
		tokens, _, logs := debugRun(t, "debug", "")
		if !strings.Contains(logs, tokens[0]) {
			t.Error("the access token does not appear at DEBUG with the default header: the Authorization case proves nothing")
		}
		if n := len(debugWarning.FindAllString(logs, -1)); n != 1 {
			t.Errorf("%d DEBUG warnings, want 1", n)
		}
	})
}

// readmeLogFilter is the global log filter the README gives for the default
// access-token header (README.md, Operations); keep them the same.
const readmeLogFilter = `log {
		level DEBUG
		format filter {
			wrap json
			request>headers>X-Rebell-Access-Token delete
		}
	}`

// TestReadmeLogFilter: with the README's filter, Caddy at DEBUG writes no
// access token in the default header.
func TestReadmeLogFilter(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	words := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	if !strings.Contains(words(string(readme)), words(readmeLogFilter)) {
		t.Fatalf("README.md does not show the filter tested here:\n%s", readmeLogFilter)
	}
	tokens, sid, logs := debugRun(t, readmeLogFilter, "")
	if !strings.Contains(logs, "upstream roundtrip") {
		t.Fatalf("Caddy did not log at DEBUG:\n%s", logs)
	}
	for _, tok := range append(tokens, sid) {
		if strings.Contains(logs, tok) {
			t.Errorf("a secret appears in Caddy's output despite the filter")
		}
	}
}
