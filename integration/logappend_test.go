package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLogAppendRebellError: the recipe of docs/operations.md ("The
// rejection reason in access logs"): `log_append rebell_error
// {http.rebell.error}` puts the error code of a rejected request in its
// access log line, and nothing for a request that passed.
func TestLogAppendRebellError(t *testing.T) {
	mock := newMockRebell(t)
	kf := writeKeys(t, t.TempDir())
	up := newUpstream(t)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	log
	log_append rebell_error {http.rebell.error}
	rebell_auth {
		endpoint %s
		client_id MERCHANT_IT
		private_key_file %s
		rebell_public_key_file %s
	}
	reverse_proxy %s
}
`, port, mock.URL, kf.MerchantPrivate, kf.PlatformPublic, strings.TrimPrefix(up.URL, "http://")), port)

	resp, err := http.Get(base + "/api/rejected")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a session: %d", resp.StatusCode)
	}
	resp, err = http.Post(base+"/rebell/login", "application/json", strings.NewReader(`{"authCode":"code-log-append"}`))
	if err != nil {
		t.Fatal(err)
	}
	var lr loginResult
	_ = json.NewDecoder(resp.Body).Decode(&lr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/api/passed", nil)
	req.Header.Set("Authorization", "Bearer "+lr.SessionID)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with the session: %d", resp.StatusCode)
	}

	// The access log line is written after the response: wait for both.
	lines := map[string]map[string]any{}
	deadline := time.Now().Add(10 * time.Second)
	for len(lines) < 2 && time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(c.logs.String()))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var entry map[string]any
			if json.Unmarshal(sc.Bytes(), &entry) != nil || entry["msg"] != "handled request" {
				continue
			}
			r, _ := entry["request"].(map[string]any)
			if uri, _ := r["uri"].(string); uri == "/api/rejected" || uri == "/api/passed" {
				lines[uri] = entry
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := lines["/api/rejected"]["rebell_error"]; got != "session_required" {
		t.Errorf("rejected request: rebell_error %v, want session_required\n%s", got, c.logs.String())
	}
	passed, ok := lines["/api/passed"]
	if !ok {
		t.Fatalf("no access log line for the request that passed:\n%s", c.logs.String())
	}
	if v := passed["rebell_error"]; v != nil && v != "" {
		t.Errorf("request that passed: rebell_error %v", v)
	}
	t.Logf("passed: rebell_error %#v", passed["rebell_error"])
	if strings.Contains(c.logs.String(), lr.SessionID) {
		t.Error("the session id reached the logs")
	}
}
