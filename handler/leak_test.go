package handler

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rebell-gateway/caddy-rebell/cache"
)

// TestSecretsNeverLeak runs every path with a grant whose access token is a
// known string. The token may appear only in the upstream request's
// access-token header: never in a response header or body, never in a log
// line. Auth codes and session ids never reach a log either.
func TestSecretsNeverLeak(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	e := newEnv(t, func(c *Config) { c.Logger = zap.New(core) })
	id := e.s.add()
	sessionKey, _ := testIDs.Parse(id)
	e.s.logoutErr = errors.New("store down")

	var upstreamTokens int
	echo := &upstream{echo: true}
	cases := []struct {
		name  string
		req   func() *http.Request
		setup func()
	}{
		{"passed", func() *http.Request { return get("/api", "Authorization", bearer(id)) }, nil},
		{"passed cookie", func() *http.Request { return get("/api", "Cookie", "rebell_session="+id) }, nil},
		{"passed tls", func() *http.Request {
			r := get("/api", "Authorization", bearer(id))
			r.TLS = &tls.ConnectionState{}
			return r
		}, nil},
		{"no session", func() *http.Request { return get("/api") }, nil},
		{"bad session", func() *http.Request { return get("/api", "Authorization", "Bearer "+id[:40]) }, nil},
		{"login json", func() *http.Request { return jsonLogin(testAuthCode) }, nil},
		{"login form", func() *http.Request {
			return loginRequest("application/x-www-form-urlencoded", "authCode="+testAuthCode)
		}, nil},
		{"login bad code", func() *http.Request { return jsonLogin(testAuthCode + "@") }, nil},
		{"login 405", func() *http.Request { return get("/rebell/login", "Authorization", bearer(id)) }, nil},
		{"login rejected", func() *http.Request { return jsonLogin(testAuthCode) },
			func() { e.s.loginErr = fmt.Errorf("%w: boom", cache.ErrAuthCodeRejected) }},
		{"login unexpected", func() *http.Request { return jsonLogin(testAuthCode) },
			func() { e.s.loginErr = errors.New("boom") }},
		{"logout", func() *http.Request {
			return logoutRequest("Authorization", bearer(id), "Cookie", "rebell_session="+id)
		}, nil},
		{"logout 405", func() *http.Request { return get("/rebell/logout", "Authorization", bearer(id)) }, nil},
	}
	for _, getErr := range []error{cache.ErrSessionInvalid, cache.ErrReauthRequired, cache.ErrRebellUnavailable,
		rebellRejected(), cache.ErrStoreUnavailable, errors.New("unexpected")} {
		cases = append(cases, struct {
			name  string
			req   func() *http.Request
			setup func()
		}{"get " + getErr.Error(), func() *http.Request { return get("/api", "Authorization", bearer(id)) },
			func() { e.s.getErr = getErr }})
	}

	for _, c := range cases {
		e.s.getErr, e.s.loginErr = nil, nil
		e.s.sessions[sessionKey] = testGrant() // logout removed it
		if c.setup != nil {
			c.setup()
		}
		echo.header = nil
		w := httptest.NewRecorder()
		if err := e.h.ServeHTTP(w, c.req(), echo); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var resp strings.Builder
		for k, v := range w.Result().Header {
			fmt.Fprintf(&resp, "%s: %s\n", k, strings.Join(v, ", "))
		}
		resp.WriteString(w.Body.String())
		if strings.Contains(resp.String(), testToken) {
			t.Errorf("%s: the access token reached the client:\n%s", c.name, resp.String())
		}
		if strings.Contains(resp.String(), testAuthCode) {
			t.Errorf("%s: the auth code was echoed:\n%s", c.name, resp.String())
		}
		if echo.header != nil {
			for k, v := range echo.header {
				if strings.Contains(strings.Join(v, ","), testToken) {
					if k != "X-Rebell-Access-Token" {
						t.Errorf("%s: token in upstream header %s", c.name, k)
					}
					upstreamTokens++
				}
				if strings.Contains(strings.Join(v, ","), id) {
					t.Errorf("%s: session id in upstream header %s", c.name, k)
				}
			}
		}
	}
	if upstreamTokens != 3 {
		t.Errorf("the token reached the upstream %d times, want 3 (the passed requests)", upstreamTokens)
	}

	if logs.Len() == 0 {
		t.Fatal("no log lines: the log check checks nothing")
	}
	for _, entry := range logs.All() {
		line := entry.Message + " " + fmt.Sprint(entry.ContextMap())
		for what, secret := range map[string]string{"access token": testToken, "auth code": testAuthCode, "session id": id} {
			if strings.Contains(line, secret) {
				t.Errorf("log line carries the %s: %s", what, line)
			}
		}
	}
}
