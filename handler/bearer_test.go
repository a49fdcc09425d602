package handler

import (
	"net/http"
	"strings"
	"testing"
)

// TestAccessTokenInAuthorization: access_token_header Authorization sends
// "Bearer <token>" upstream, whether the session comes in Authorization too
// (read and removed first) or in another header; a client's own
// Authorization never goes through.
func TestAccessTokenInAuthorization(t *testing.T) {
	for _, sessionHeader := range []string{"", "X-Session-Id"} {
		t.Run("session header "+orDefault(sessionHeader, "Authorization"), func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.AccessTokenHeader = "Authorization"; c.SessionHeader = sessionHeader })
			id := e.s.add()
			send := func(path string, header ...string) (*upstream, int) {
				r := get(path, header...)
				r.Header["authorization "] = []string{"Bearer spoof"}
				up := &upstream{echo: true}
				w, err := e.serve(r, up)
				if err != nil {
					t.Fatal(err)
				}
				if w.Header().Get("Authorization") != "" {
					t.Errorf("%s: Authorization echoed to the client", path)
				}
				return up, w.Code
			}
			cred := []string{"Authorization", bearer(id)}
			if sessionHeader != "" {
				cred = []string{sessionHeader, id, "Authorization", "Bearer spoof"}
			}
			up, code := send("/api", cred...)
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			if got := up.header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+testToken {
				t.Errorf("upstream Authorization %q", got)
			}
			for k, v := range up.header {
				for _, s := range v {
					if strings.Contains(s, id) || strings.Contains(s, "spoof") {
						t.Errorf("upstream %s = %q", k, s)
					}
				}
			}
			// Without a session: 401, nothing forwarded.
			if _, code := send("/api"); code != 401 {
				t.Errorf("no session: %d", code)
			}
			// Logout still reads the session.
			r := get("/rebell/logout", cred...)
			r.Method = http.MethodPost
			if w, _ := e.serve(r, nil); w.Code != 204 || len(e.s.logoutKeys()) != 1 {
				t.Errorf("logout: %d, %d logouts", w.Code, len(e.s.logoutKeys()))
			}
		})
	}
	// The session and the token cannot share another header.
	if _, err := New(Config{Sessions: newFakeSessions(), SessionHeader: "X-Id", AccessTokenHeader: "x_id"}); err == nil {
		t.Error("session and access token in X-Id accepted")
	}
	if _, err := New(Config{Sessions: newFakeSessions(), AccessTokenHeader: "Authorization", CustomerIDHeader: "authorization"}); err == nil {
		t.Error("token and customer id in Authorization accepted")
	}
}
