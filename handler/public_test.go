package handler

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestPublicPaths: on a public path a valid session still gets its
// identity; anything else goes on without identity headers or session
// credential; other paths still require a session.
func TestPublicPaths(t *testing.T) {
	var anonymous int
	e := newEnv(t, func(c *Config) {
		c.Public = func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/public/") }
		c.OnPublic = func(*http.Request) { anonymous++ }
	})
	id := e.s.add()
	unknown, _ := testIDs.New()
	failing := e.s.add()
	k, _ := testIDs.Parse(failing)
	delete(e.s.sessions, k)
	tests := []struct {
		name, path, auth, cookie string
		status                   int
		identity, anon           bool
	}{
		{"valid session", "/public/x", bearer(id), "", 200, true, false},
		{"valid cookie", "/public/x", "", "rebell_session=" + id + "; a=1", 200, true, false},
		{"no session", "/public/x", "", "", 200, false, true},
		{"malformed session", "/public/x", "Bearer nope", "rebell_session=nope", 200, false, true},
		{"unknown session", "/public/x", bearer(unknown), "", 200, false, true},
		{"ended session", "/public/x", bearer(failing), "", 200, false, true},
		{"private path", "/private/x", "", "", 401, false, false},
		{"private path, valid", "/private/x", bearer(id), "", 200, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			anonymous = 0
			r := get(tt.path, "X-Rebell-Customer-Id", "spoof", "X_rebell_access_token", "spoof")
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			if tt.cookie != "" {
				r.Header.Set("Cookie", tt.cookie)
			}
			up := &upstream{echo: true}
			w, err := e.serve(r, up)
			if err != nil || w.Code != tt.status {
				t.Fatalf("status %d, err %v", w.Code, err)
			}
			if (anonymous == 1) != tt.anon {
				t.Errorf("OnPublic called %d times", anonymous)
			}
			if tt.status != 200 {
				return
			}
			checkNoCredential(t, up.header)
			if got := up.header.Get("X-Rebell-Access-Token"); (got == testToken) != tt.identity || got != "" && got != testToken {
				t.Errorf("access token %q", got)
			}
			for k, v := range up.header {
				if fmt.Sprint(v) == "[spoof]" {
					t.Errorf("spoofed %s reached the upstream", k)
				}
			}
			if w.Header().Get("X-Rebell-Access-Token") != "" {
				t.Error("access token echoed to the client")
			}
		})
	}
}

func checkNoCredential(t *testing.T, hd http.Header) {
	t.Helper()
	if _, ok := hd["Authorization"]; ok {
		t.Errorf("Authorization %q reached the upstream", hd["Authorization"])
	}
	for _, line := range hd["Cookie"] {
		if hasCookie(line, "rebell_session") {
			t.Errorf("session cookie reached the upstream: %q", line)
		}
	}
}
