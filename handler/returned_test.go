package handler

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/cache"
)

// TestReturnErrors: with ReturnErrors every error response comes back as an
// *Error with its status, code and message, the headers set and nothing
// written; the callbacks run as for a written error, and a request that
// passes is not affected.
func TestReturnErrors(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ReturnErrors = true })
	cases := []struct {
		name   string
		req    *http.Request
		setup  func()
		status int
		code   string
		header string // a header the response must carry
	}{
		{"no session", get("/api"), nil, 401, "session_required", "WWW-Authenticate"},
		{"malformed session", get("/api", "Authorization", "Bearer x"), nil, 401, "session_invalid", "WWW-Authenticate"},
		{"login GET", get("/rebell/login"), nil, 405, "method_not_allowed", "Allow"},
		{"bad auth code", httptest.NewRequest(http.MethodPost, "/rebell/login", strings.NewReader(`{"authCode":""}`)), nil, 400, "invalid_auth_code", ""},
		{"store down", get("/api", "Authorization", bearer(e.s.add())), func() {
			e.s.getErr = fmt.Errorf("%w: down", cache.ErrStoreUnavailable)
		}, 503, "store_unavailable", "Retry-After"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				c.setup()
			}
			next := &upstream{}
			w, err := e.serve(c.req, next)
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("ServeHTTP returned %v, want an *Error", err)
			}
			if he.Status != c.status || he.Code != c.code || he.Message == "" {
				t.Errorf("got %+v, want %d %s with a message", he, c.status, c.code)
			}
			if w.Body.Len() != 0 || w.Code != http.StatusOK || w.Header().Get("Content-Type") != "" {
				t.Errorf("something was written: %d %q %v", w.Code, w.Body.String(), w.Header())
			}
			if c.header != "" && w.Header().Get(c.header) == "" {
				t.Errorf("%s not set", c.header)
			}
			if next.called {
				t.Error("the request went on")
			}
			if got := e.cb.rejects[len(e.cb.rejects)-1]; got != c.code {
				t.Errorf("OnReject saw %q", got)
			}
		})
	}

	// The resultCode the JSON body would carry is on the Error.
	e.s.getErr = rebellRejected()
	_, err := e.serve(get("/api", "Authorization", bearer(e.s.add())), nil)
	var he *Error
	if !errors.As(err, &he) || he.Status != http.StatusBadGateway || he.ResultCode != "ACCESS_DENIED" {
		t.Errorf("rebell_rejected: %v", err)
	}

	// A session that works goes on, and next's error comes back unchanged.
	e.s.getErr = nil
	boom := errors.New("upstream failed")
	next := &upstream{err: boom}
	if _, err := e.serve(get("/api", "Authorization", bearer(e.s.add())), next); err != boom || !next.called {
		t.Errorf("passing request: err %v, called %v", err, next.called)
	}
}
