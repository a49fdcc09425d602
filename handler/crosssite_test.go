package handler

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
)

func browserLogin(host string, header ...string) *http.Request {
	r := loginFrom("192.0.2.1:1")
	r.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	return r
}

func TestCrossSiteLoginRefusedWithCookies(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AllowedOrigins = []string{"https://shop.example", "http://localhost:3000"} })
	for _, tc := range []struct {
		name   string
		host   string
		header []string
		want   int
	}{
		{"no headers (my.request)", "api.example", nil, http.StatusOK},
		{"cross-site fetch", "api.example", []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"evil origin", "api.example", []string{"Origin", "https://evil.example"}, http.StatusForbidden},
		{"evil origin and cross-site", "api.example", []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"same origin", "api.example", []string{"Origin", "https://api.example", "Sec-Fetch-Site", "same-origin"}, http.StatusOK},
		{"same origin, default port in Host", "API.example:443", []string{"Origin", "https://api.example"}, http.StatusOK},
		{"same origin, other port", "api.example:8443", []string{"Origin", "https://api.example:8443"}, http.StatusOK},
		{"own host, other port", "api.example:8443", []string{"Origin", "https://api.example"}, http.StatusForbidden},
		{"allowed origin", "api.example", []string{"Origin", "https://SHOP.example:443", "Sec-Fetch-Site", "same-site"}, http.StatusOK},
		{"allowed origin, other scheme", "api.example", []string{"Origin", "http://shop.example"}, http.StatusForbidden},
		{"allowed dev origin", "api.example", []string{"Origin", "http://localhost:3000"}, http.StatusOK},
		{"sibling subdomain", "api.example", []string{"Origin", "https://evil.api.example", "Sec-Fetch-Site", "same-site"}, http.StatusForbidden},
		{"opaque origin alone", "api.example", []string{"Origin", "null"}, http.StatusOK},
		{"opaque origin, cross-site", "api.example", []string{"Origin", "null", "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"allowed origin but cross-site fetch", "api.example", []string{"Origin", "https://shop.example", "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
	} {
		before := len(e.s.loginCalls())
		w, _ := e.serve(browserLogin(tc.host, tc.header...), nil)
		if w.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, w.Code, w.Body, tc.want)
			continue
		}
		if tc.want == http.StatusForbidden {
			wantError(t, w, http.StatusForbidden, "cross_site_request")
			if len(e.s.loginCalls()) != before {
				t.Errorf("%s: the code reached the cache", tc.name)
			}
			if w.Header().Get("Set-Cookie") != "" {
				t.Errorf("%s: a cookie was set", tc.name)
			}
		}
	}
}

func TestCrossSiteLogout(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	r := logoutRequest()
	r.Header.Set("Cookie", "rebell_session="+id)
	r.Header.Set("Origin", "https://evil.example")
	w, _ := e.serve(r, nil)
	wantError(t, w, http.StatusForbidden, "cross_site_request")
	if len(e.s.logoutKeys()) != 0 || w.Header().Get("Set-Cookie") != "" {
		t.Fatal("a cross-site logout ended the session or cleared the cookie")
	}
	r = logoutRequest()
	r.Header.Set("Cookie", "rebell_session="+id)
	if w, _ := e.serve(r, nil); w.Code != http.StatusNoContent || len(e.s.logoutKeys()) != 1 {
		t.Fatalf("logout without the headers: %d", w.Code)
	}
}

func TestCrossSiteIgnoredWithCookiesOff(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionCookie = "" })
	w, _ := e.serve(browserLogin("api.example", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"), nil)
	if w.Code != http.StatusOK {
		t.Fatalf("cookies off: %d %s", w.Code, w.Body)
	}
}

func TestCookieSecureBehindProxies(t *testing.T) {
	trusted := false
	e := newEnv(t, func(c *Config) { c.TrustedProxy = func(*http.Request) bool { return trusted } })
	secure := func(r *http.Request) bool {
		t.Helper()
		w, _ := e.serve(r, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("login: %d", w.Code)
		}
		return strings.Contains(w.Header().Get("Set-Cookie"), "; Secure")
	}
	if secure(browserLogin("api.example", "X-Forwarded-Proto", "https")) {
		t.Error("an untrusted client's X-Forwarded-Proto made the cookie Secure")
	}
	trusted = true
	if !secure(browserLogin("api.example", "X-Forwarded-Proto", "https")) {
		t.Error("a trusted proxy's X-Forwarded-Proto: https did not make the cookie Secure")
	}
	if secure(browserLogin("api.example", "X-Forwarded-Proto", "http")) {
		t.Error("X-Forwarded-Proto: http made the cookie Secure")
	}
	if secure(browserLogin("api.example")) {
		t.Error("Secure without TLS or a forwarded https")
	}
	trusted = false
	r := browserLogin("api.example")
	r.TLS = &tls.ConnectionState{}
	if !secure(r) {
		t.Error("TLS did not make the cookie Secure")
	}
}

func TestCookieBlock(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.CookieSecure, c.CookieSameSite, c.CookieDomain = "always", "none", "example.com"
	})
	w, _ := e.serve(browserLogin("api.example.com"), nil)
	c := w.Header().Get("Set-Cookie")
	for _, want := range []string{"; HttpOnly", "; SameSite=None", "; Domain=example.com", "; Secure"} {
		if !strings.Contains(c, want) {
			t.Errorf("Set-Cookie %q lacks %q", c, want)
		}
	}
	e = newEnv(t, func(c *Config) { c.CookieSameSite = "strict" })
	w, _ = e.serve(browserLogin("api.example.com"), nil)
	if c := w.Header().Get("Set-Cookie"); !strings.Contains(c, "; SameSite=Strict") || strings.Contains(c, "Secure") {
		t.Errorf("strict: %q", c)
	}
	for _, cfg := range []Config{
		{CookieSameSite: "none"}, // needs secure always
		{CookieSameSite: "none", CookieSecure: "auto"},
		{CookieSameSite: "sometimes"},
		{CookieSecure: "never"},
		{CookieDomain: "evil.example; Secure"},
		{CookieDomain: "a..b"},
		{AllowedOrigins: []string{"evil.example"}},
		{AllowedOrigins: []string{"https://evil.example/"}},
		{AllowedOrigins: []string{"https://evil.example/path"}},
		{AllowedOrigins: []string{"null"}},
		{AllowedOrigins: []string{"ftp://evil.example"}},
	} {
		cfg.Sessions = newFakeSessions()
		cfg.SessionCookie = "rebell_session"
		if _, err := New(cfg); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}
