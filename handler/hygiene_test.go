package handler

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// spoofed are header keys as net/http may hold them (it canonicalizes
// "x_rebell_access_token" to "X_rebell_access_token", and keeps a name
// with a blank before the colon as is) that must never survive.
var spoofed = []string{
	"X-Rebell-Access-Token",
	"X_rebell_access_token",
	"X_REBELL_ACCESS_TOKEN",
	"x-rebell-access_token",
	"X-Rebell-Access-Token ",
	"X-Rebell-Customer-Id",
	"X-REBELL-CUSTOMER-ID",
	"x-rebell-customer_id",
	"X_Rebell_Customer_Id\t",
}

// kept are header keys that look alike but are other headers.
var kept = []string{
	"X-Rebell-Access-Tokens",
	"X-Rebell-Access",
	"Rebell-Access-Token",
	"X-Rebell-Access-Token-Expiry",
	"X.Rebell.Access.Token",
}

func spoofRequest(r *http.Request) {
	for _, k := range spoofed {
		r.Header[k] = []string{"spoof"}
	}
	for _, k := range kept {
		r.Header[k] = []string{"keep"}
	}
}

func checkHygiene(t *testing.T, where string, hd http.Header, injected bool) {
	t.Helper()
	for k, v := range hd {
		if sameHeader(k, "x-rebell-access-token") || sameHeader(k, "x-rebell-customer-id") {
			if !injected || slices.Contains(v, "spoof") {
				t.Errorf("%s: spoofed header %q = %q survived", where, k, v)
			}
		}
	}
	for _, k := range kept {
		if got := hd[k]; len(got) != 1 || got[0] != "keep" {
			t.Errorf("%s: unrelated header %q = %q, want kept", where, k, got)
		}
	}
}

// TestHygieneEveryPath: spoofed identity headers go on every kind of
// request: passed, rejected, login, logout.
func TestHygieneEveryPath(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	tests := []struct {
		name   string
		req    func() *http.Request
		passed bool
	}{
		{"passed", func() *http.Request { return get("/api", "Authorization", bearer(id)) }, true},
		{"no session", func() *http.Request { return get("/api") }, false},
		{"bad session", func() *http.Request { return get("/api", "Authorization", "Bearer x") }, false},
		{"unknown session", func() *http.Request {
			return get("/api", "Authorization", bearer(strings.Repeat("A", 43)))
		}, false},
		{"login", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/rebell/login", strings.NewReader(`{"authCode":"abc"}`))
			r.Header.Set("Content-Type", "application/json")
			return r
		}, false},
		{"login 405", func() *http.Request { return get("/rebell/login") }, false},
		{"logout", func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "/rebell/logout", nil)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req()
			spoofRequest(r)
			up := &upstream{}
			w, _ := e.serve(r, up)
			if up.called != tt.passed {
				t.Fatalf("next called = %v, want %v (status %d %s)", up.called, tt.passed, w.Code, w.Body.String())
			}
			checkHygiene(t, "request after ServeHTTP", r.Header, tt.passed)
			if tt.passed {
				checkHygiene(t, "upstream", up.header, true)
				if got := up.header["X-Rebell-Access-Token"]; !slices.Equal(got, []string{testToken}) {
					t.Errorf("upstream access token = %q", got)
				}
				if got := up.header["X-Rebell-Customer-Id"]; !slices.Equal(got, []string{testCustomerID}) {
					t.Errorf("upstream customer id = %q", got)
				}
			}
		})
	}
}

func TestHygieneCustomNames(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.AccessTokenHeader = "x-upstream-token"
		c.CustomerIDHeader = "X_User"
	})
	id := e.s.add()
	r := get("/", "Authorization", bearer(id))
	for _, k := range []string{"X-Upstream-Token", "X_upstream_token", "X-User", "X_user", "x_USER ",
		"X-Rebell-Access-Token"} {
		r.Header[k] = []string{"spoof"}
	}
	up := &upstream{}
	if w, _ := e.serve(r, up); w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	want := http.Header{
		"X-Upstream-Token":      {testToken},
		"X_user":                {testCustomerID},
		"X-Rebell-Access-Token": {"spoof"}, // not a name this handler owns
	}
	if !headersEqual(up.header, want) {
		t.Errorf("upstream headers %v, want %v", up.header, want)
	}
}

func headersEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestCredentialRemoved: neither the session header nor the session cookie
// reaches the upstream, or stays on a rejected request; other cookies stay
// in order.
func TestCredentialRemoved(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	tests := []struct {
		name       string
		auth       string
		cookies    []string
		passed     bool
		wantCookie []string // Cookie values left; nil = header deleted
	}{
		{"header only", bearer(id), nil, true, nil},
		{"header and other cookies", bearer(id), []string{"a=1; b=2"}, true, []string{"a=1; b=2"}},
		{"header and session cookie", bearer(id), []string{"a=1; rebell_session=" + id + "; b=2"}, true, []string{"a=1; b=2"}},
		{"cookie only", "", []string{"rebell_session=" + id}, true, nil},
		{"cookie first", "", []string{"rebell_session=" + id + "; z=9; a=1"}, true, []string{"z=9; a=1"}},
		{"cookie last", "", []string{"z=9;a=1;rebell_session=" + id}, true, []string{"z=9; a=1"}},
		{"two lines", "", []string{"rebell_session=" + id, "x=1"}, true, []string{"x=1"}},
		{"duplicates", "", []string{"rebell_session=old; q=1; rebell_session=" + id}, true, []string{"q=1"}},
		{"lookalikes kept", "", []string{"rebell_session=" + id + "; rebell_session_x=1; xrebell_session=2"}, true,
			[]string{"rebell_session_x=1; xrebell_session=2"}},
		{"rejected header", "Bearer nope", []string{"a=1; rebell_session=zz"}, false, []string{"a=1"}},
		{"rejected cookie", "", []string{"rebell_session=zz; a=1"}, false, []string{"a=1"}},
		{"rejected basic", "Basic abc", nil, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get("/")
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			if tt.cookies != nil {
				r.Header["Cookie"] = slices.Clone(tt.cookies)
			}
			up := &upstream{}
			w, _ := e.serve(r, up)
			if up.called != tt.passed {
				t.Fatalf("passed = %v, want %v (%d %s)", up.called, tt.passed, w.Code, w.Body.String())
			}
			seen := r.Header
			if tt.passed {
				seen = up.header
			}
			if v, ok := seen["Authorization"]; ok {
				t.Errorf("Authorization %q left", v)
			}
			got, ok := seen["Cookie"]
			if tt.wantCookie == nil && ok || !slices.Equal(got, tt.wantCookie) {
				t.Errorf("Cookie = %q (present %v), want %q", got, ok, tt.wantCookie)
			}
		})
	}
}

func TestSameHeader(t *testing.T) {
	const norm = "x-rebell-access-token"
	for _, k := range []string{"X-Rebell-Access-Token", "x_rebell_access_token", "X_REBELL-ACCESS_TOKEN",
		"X-Rebell-Access-Token ", "X-Rebell-Access-Token\t \t"} {
		if !sameHeader(k, norm) {
			t.Errorf("sameHeader(%q) = false", k)
		}
	}
	for _, k := range []string{"", "X-Rebell-Access-Toke", "X-Rebell-Access-Tokens", " X-Rebell-Access-Token",
		"X-Rebell-Access-Token x", "X.Rebell.Access.Token", "X-Rebell-Access-Tok\u00e9n"} {
		if sameHeader(k, norm) {
			t.Errorf("sameHeader(%q) = true", k)
		}
	}
}

func TestRemoveCookie(t *testing.T) {
	tests := []struct {
		in   []string
		want []string // nil = header deleted
	}{
		{[]string{"s=1"}, nil},
		{[]string{"s=1; s=2"}, nil},
		{[]string{" s=1 ; "}, nil},
		{[]string{"a=1"}, []string{"a=1"}},
		{[]string{"a=1;  s=1;b=2"}, []string{"a=1; b=2"}},
		{[]string{"a=1", "s=1", "b=2"}, []string{"a=1", "b=2"}},
		{[]string{"s=1", "a=1; s=2"}, []string{"a=1"}},
		{[]string{"a=1; flag; s=1"}, []string{"a=1; flag"}},
		{[]string{"sx=1; xs=2"}, []string{"sx=1; xs=2"}},
	}
	for _, tt := range tests {
		hd := http.Header{"Cookie": slices.Clone(tt.in)}
		removeCookie(hd, "s")
		got, ok := hd["Cookie"]
		if tt.want == nil && ok || !slices.Equal(got, tt.want) {
			t.Errorf("removeCookie(%q) = %q (present %v), want %q", tt.in, got, ok, tt.want)
		}
	}
}

// TestHygieneNoAllocs: with no spoofed header and no cookie to remove,
// hygiene allocates nothing.
func TestHygieneNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	e := newEnv(t, nil)
	hd := http.Header{
		"Accept":          {"*/*"},
		"User-Agent":      {"MiniApp/1.0"},
		"Cookie":          {"a=1; b=2"},
		"X-Forwarded-For": {"203.0.113.9"},
	}
	allocs := testing.AllocsPerRun(100, func() {
		e.h.stripSpoofed(hd)
		removeCookie(hd, e.h.cookie)
	})
	if allocs != 0 {
		t.Errorf("hygiene allocates %v times per request", allocs)
	}
}
