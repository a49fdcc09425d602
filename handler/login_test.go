package handler

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func loginRequest(contentType, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/rebell/login", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

func jsonLogin(code string) *http.Request {
	b, _ := json.Marshal(map[string]string{"authCode": code})
	return loginRequest("application/json", string(b))
}

func TestLoginSuccess(t *testing.T) {
	const maxAge = "2592000" // 720h
	tests := []struct {
		name       string
		cookie     string
		tls        bool
		req        *http.Request
		wantCookie string // "" = no Set-Cookie
	}{
		{"json", "rebell_session", false, jsonLogin(testAuthCode),
			"rebell_session=ID; Path=/; HttpOnly; SameSite=Lax; Max-Age=" + maxAge},
		{"json tls", "rebell_session", true, jsonLogin(testAuthCode),
			"rebell_session=ID; Path=/; HttpOnly; SameSite=Lax; Max-Age=" + maxAge + "; Secure"},
		{"json charset", "sid", false, loginRequest("application/json; charset=utf-8", `{"authCode":"`+testAuthCode+`"}`),
			"sid=ID; Path=/; HttpOnly; SameSite=Lax; Max-Age=" + maxAge},
		{"json no content type", "", false, loginRequest("", `{"authCode":"`+testAuthCode+`"}`), ""},
		{"json other members", "", false, loginRequest("application/json",
			`{"scopes":["auth_user"],"n":1.5,"authCode":"`+testAuthCode+`","x":{"authCode":1},"y":null}`), ""},
		{"json whitespace", "", false, loginRequest("application/json", " \n{ \"authCode\" : \""+testAuthCode+"\" }\n"), ""},
		{"form", "rebell_session", false, loginRequest("application/x-www-form-urlencoded",
			"authCode="+url.QueryEscape(testAuthCode)+"&other=1"),
			"rebell_session=ID; Path=/; HttpOnly; SameSite=Lax; Max-Age=" + maxAge},
		{"form upper content type", "", false, loginRequest("Application/X-WWW-Form-Urlencoded; charset=UTF-8",
			"authCode="+url.QueryEscape(testAuthCode)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.SessionCookie = tt.cookie })
			if tt.tls {
				tt.req.TLS = &tls.ConnectionState{}
			}
			up := &upstream{}
			w, err := e.serve(tt.req, up)
			if err != nil || w.Code != http.StatusOK {
				t.Fatalf("ServeHTTP = %v, status %d %s", err, w.Code, w.Body.String())
			}
			if up.called {
				t.Error("login reached next")
			}
			if got := e.s.loginCalls(); !slices.Equal(got, []string{testAuthCode}) {
				t.Errorf("Login calls %q", got)
			}
			for k, v := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"} {
				if w.Header().Get(k) != v {
					t.Errorf("%s = %q, want %q", k, w.Header().Get(k), v)
				}
			}
			var body map[string]string
			dec := json.NewDecoder(w.Body)
			if err := dec.Decode(&body); err != nil {
				t.Fatal(err)
			}
			id := body["sessionId"]
			if _, ok := testIDs.Parse(id); !ok || len(body) != 3 ||
				body["customerId"] != testCustomerID ||
				body["expiresAt"] != testNow.Add(720*time.Hour).Format(time.RFC3339) {
				t.Errorf("body %v", body)
			}
			want := strings.Replace(tt.wantCookie, "ID", id, 1)
			if got := strings.Join(w.Header().Values("Set-Cookie"), "|"); got != want {
				t.Errorf("Set-Cookie = %q, want %q", got, want)
			}
			if !slices.Equal(e.cb.outcomes, []string{"login"}) || len(e.cb.rejects) != 0 {
				t.Errorf("outcomes %v rejects %v", e.cb.outcomes, e.cb.rejects)
			}

			// The cookie the browser keeps is one the gateway accepts.
			if tt.cookie != "" {
				res := http.Response{Header: w.Header()}
				c := res.Cookies()[0]
				if c.Value != id || !c.HttpOnly || c.Path != "/" || c.SameSite != http.SameSiteLaxMode || c.Secure != tt.tls {
					t.Errorf("cookie parsed as %+v", c)
				}
			}
		})
	}
}

func TestLoginCookieMaxAge(t *testing.T) {
	e := newEnv(t, nil)
	for _, tt := range []struct {
		expiry time.Time
		want   string
	}{
		{testNow.Add(90*time.Second + 900*time.Millisecond), "; Max-Age=90"},
		{testNow.Add(time.Millisecond), "; Max-Age=1"},
		{testNow.Add(-time.Hour), "; Max-Age=1"},
		{time.Time{}, ""},
	} {
		got := e.h.sessionCookie("id", tt.expiry, false)
		if want := "rebell_session=id; Path=/; HttpOnly; SameSite=Lax" + tt.want; got != want {
			t.Errorf("expiry %v: %q, want %q", tt.expiry, got, want)
		}
	}
}

func TestLoginBodyLimit(t *testing.T) {
	pad := func(n int) string {
		// {"authCode":"...","p":"xxx"} padded to n bytes
		base := `{"authCode":"` + testAuthCode + `","p":""}`
		return base[:len(base)-2] + strings.Repeat("x", n-len(base)) + `"}`
	}
	tests := []struct {
		name    string
		body    string
		chunked bool // no Content-Length
		status  int
	}{
		{"exactly 8 KiB", pad(8192), false, 200},
		{"exactly 8 KiB chunked", pad(8192), true, 200},
		{"8 KiB + 1", pad(8193), false, 413},
		{"8 KiB + 1 chunked", pad(8193), true, 413},
		{"1 MiB chunked", pad(1 << 20), true, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.body) != 8192 && len(tt.body) != 8193 && len(tt.body) != 1<<20 {
				t.Fatalf("pad: %d bytes", len(tt.body))
			}
			e := newEnv(t, nil)
			r := loginRequest("application/json", tt.body)
			if tt.chunked {
				r.ContentLength = -1
				r.Body = io.NopCloser(strings.NewReader(tt.body))
			}
			w, _ := e.serve(r, nil)
			if tt.status == 200 {
				if w.Code != 200 {
					t.Fatalf("status %d %s", w.Code, w.Body.String())
				}
				return
			}
			wantError(t, w, tt.status, "request_too_large")
			if n := len(e.s.loginCalls()); n != 0 {
				t.Errorf("Login called %d times", n)
			}
		})
	}
}

// TestLoginLimitFromBefore: a body limit set by an earlier handler (Caddy's
// request_body) answers 413 too.
func TestLoginLimitFromBefore(t *testing.T) {
	e := newEnv(t, nil)
	r := jsonLogin(testAuthCode)
	w := httptest.NewRecorder()
	r.Body = http.MaxBytesReader(w, r.Body, 5)
	r.ContentLength = -1
	if err := e.h.ServeHTTP(w, r, &upstream{}); err != nil {
		t.Fatal(err)
	}
	wantError(t, w, 413, "request_too_large")
}

func TestLoginInvalid(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	tests := []struct {
		name, contentType, body string
	}{
		{"empty body", "application/json", ""},
		{"empty code", "application/json", `{"authCode":""}`},
		{"65 chars", "application/json", `{"authCode":"` + strings.Repeat("a", 65) + `"}`},
		{"at sign", "application/json", `{"authCode":"abc@def"}`},
		{"hash", "application/json", `{"authCode":"abc#def"}`},
		{"space", "application/json", `{"authCode":"abc def"}`},
		{"percent", "application/json", `{"authCode":"abc%20def"}`},
		{"unicode", "application/json", `{"authCode":"abcé"}`},
		{"escaped nul", "application/json", `{"authCode":"abc\u0000"}`},
		{"quote", "application/json", `{"authCode":"abc\"def"}`},
		{"number", "application/json", `{"authCode":123}`},
		{"null", "application/json", `{"authCode":null}`},
		{"object", "application/json", `{"authCode":{"a":"b"}}`},
		{"array value", "application/json", `{"authCode":["abc"]}`},
		{"array", "application/json", `["abc"]`},
		{"string", "application/json", `"abc"`},
		{"missing", "application/json", `{"code":"abc"}`},
		{"wrong case", "application/json", `{"authcode":"abc"}`},
		{"duplicate", "application/json", `{"authCode":"abc","authCode":"def"}`},
		{"trailing data", "application/json", `{"authCode":"abc"}{}`},
		{"trailing garbage", "application/json", `{"authCode":"abc"} x`},
		{"truncated", "application/json", `{"authCode":"abc"`},
		{"bad member", "application/json", `{"authCode":"abc","x":tru}`},
		{"not json", "text/plain", `authCode=abc`},
		{"form empty", form, "authCode="},
		{"form missing", form, "code=abc"},
		{"form twice", form, "authCode=abc&authCode=abc"},
		{"form bad escape", form, "authCode=abc%zz"},
		{"form plus is space", form, "authCode=abc+def"},
		{"form 65", form, "authCode=" + strings.Repeat("a", 65)},
		{"form json", form, `{"authCode":"abc"}`},
		{"form semicolon", form, "authCode=abc;x=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			w, _ := e.serve(loginRequest(tt.contentType, tt.body), nil)
			m := wantError(t, w, 400, "invalid_auth_code")
			if strings.Contains(m["message"], "abc") {
				t.Error("message echoes input")
			}
			if n := len(e.s.loginCalls()); n != 0 {
				t.Errorf("Login called %d times on invalid input", n)
			}
			if w.Header().Get("Set-Cookie") != "" {
				t.Error("Set-Cookie on a failed login")
			}
		})
	}
}

func TestLoginValidCodes(t *testing.T) {
	for _, code := range []string{
		"a",
		strings.Repeat("Z", 64),
		"ABCxyz0189._~+/=-",
		"281ea5b8f6ae4b61b2cc5d7c5ff6e0b2",
	} {
		for _, r := range []*http.Request{
			jsonLogin(code),
			loginRequest("application/x-www-form-urlencoded", "authCode="+url.QueryEscape(code)),
		} {
			e := newEnv(t, nil)
			if w, _ := e.serve(r, nil); w.Code != 200 {
				t.Errorf("%q (%s): status %d %s", code, r.Header.Get("Content-Type"), w.Code, w.Body.String())
			}
			if got := e.s.loginCalls(); !slices.Equal(got, []string{code}) {
				t.Errorf("Login got %q, want %q", got, code)
			}
		}
	}
}

func TestLoginErrors(t *testing.T) {
	codeErr := func(kind rebell.Kind, status, code string) error {
		return &rebell.Error{Kind: kind, ResultStatus: status, ResultCode: code, Verified: true}
	}
	tests := []struct {
		name       string
		err        error
		loginID    string
		nilGrant   bool
		status     int
		code       string
		resultCode string
	}{
		{"used code", fmt.Errorf("%w: %w", cache.ErrAuthCodeRejected, codeErr(rebell.KindAuthCodeRejected, "F", "USED_CODE")),
			"", false, 401, "auth_code_rejected", "USED_CODE"},
		{"expired code", fmt.Errorf("%w: %w", cache.ErrAuthCodeRejected, codeErr(rebell.KindAuthCodeRejected, "F", "EXPIRED_CODE")),
			"", false, 401, "auth_code_rejected", "EXPIRED_CODE"},
		{"rejected", rebellRejected(), "", false, 502, "rebell_rejected", "ACCESS_DENIED"},
		{"unavailable", fmt.Errorf("%w: %w", cache.ErrRebellUnavailable, codeErr(rebell.KindRetryable, "U", "UNKNOWN_EXCEPTION")),
			"", false, 503, "rebell_unavailable", "UNKNOWN_EXCEPTION"},
		{"forged answer", fmt.Errorf("%w: %w", cache.ErrRebellRejected, &rebell.Error{Kind: rebell.KindBadSignature, ResultStatus: "F", ResultCode: "ATTACKER_CODE_XYZ"}),
			"", false, 502, "rebell_rejected", ""},
		{"unverified code", fmt.Errorf("%w: %w", cache.ErrAuthCodeRejected, &rebell.Error{Kind: rebell.KindAuthCodeRejected, ResultStatus: "F", ResultCode: "USED_CODE"}),
			"", false, 401, "auth_code_rejected", ""},
		{"store", cache.ErrStoreUnavailable, "", false, 503, "store_unavailable", ""},
		{"unexpected", errors.New("boom"), "", false, 503, "rebell_unavailable", ""},
		{"malformed id", nil, "short", false, 503, "rebell_unavailable", ""},
		{"nil grant", nil, strings.Repeat("A", 43), true, 503, "rebell_unavailable", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.s.loginErr, e.s.loginID, e.s.nilGrant = tt.err, tt.loginID, tt.nilGrant
			w, err := e.serve(jsonLogin(testAuthCode), nil)
			if err != nil {
				t.Fatal(err)
			}
			m := wantError(t, w, tt.status, tt.code)
			if m["resultCode"] != tt.resultCode {
				t.Errorf("resultCode %q, want %q", m["resultCode"], tt.resultCode)
			}
			if w.Header().Get("Set-Cookie") != "" || strings.Contains(w.Body.String(), "sessionId") {
				t.Error("a failed login handed out a session")
			}
			if !slices.Equal(e.cb.rejects, []string{tt.code}) || !slices.Equal(e.cb.outcomes, []string{tt.code}) {
				t.Errorf("rejects %v outcomes %v", e.cb.rejects, e.cb.outcomes)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	for _, path := range []string{"/rebell/login", "/rebell/logout"} {
		for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodOptions, http.MethodDelete} {
			e := newEnv(t, nil)
			id := e.s.add()
			r := httptest.NewRequest(method, path, strings.NewReader(`{"authCode":"abc"}`))
			r.Header.Set("Authorization", bearer(id))
			up := &upstream{}
			w, _ := e.serve(r, up)
			wantError(t, w, 405, "method_not_allowed")
			if w.Header().Get("Allow") != "POST" {
				t.Errorf("%s %s: Allow = %q", method, path, w.Header().Get("Allow"))
			}
			if up.called || len(e.s.loginCalls()) != 0 || len(e.s.logoutKeys()) != 0 {
				t.Errorf("%s %s had an effect", method, path)
			}
			if r.Header.Get("Authorization") != "" {
				t.Errorf("%s %s: credential left on the request", method, path)
			}
		}
	}
}

// TestPathsExact: only the exact paths are login and logout.
func TestPathsExact(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LoginPath, c.LogoutPath = "/auth/in", "/auth/out" })
	for _, p := range []string{"/auth/in/", "/auth/IN", "/auth/in2", "/rebell/login", "/auth/out/x"} {
		w, _ := e.serve(httptest.NewRequest(http.MethodPost, p, strings.NewReader(`{"authCode":"abc"}`)), nil)
		wantError(t, w, 401, "session_required")
	}
	w, _ := e.serve(httptest.NewRequest(http.MethodPost, "/auth/in", strings.NewReader(`{"authCode":"abc"}`)), nil)
	if w.Code != 200 {
		t.Errorf("custom login path: %d", w.Code)
	}
	w, _ = e.serve(httptest.NewRequest(http.MethodPost, "/auth/out", nil), nil)
	if w.Code != 204 {
		t.Errorf("custom logout path: %d", w.Code)
	}
}

func logoutRequest(header ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/rebell/logout", nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

func TestLogout(t *testing.T) {
	key := func(id string) cache.Key { k, _ := testIDs.Parse(id); return k }
	id1, _ := testIDs.New()
	id2, _ := testIDs.New()
	tests := []struct {
		name   string
		cookie string // SessionCookie config
		tls    bool
		header []string
		want   []cache.Key // Logout calls
	}{
		{"bearer", "rebell_session", false, []string{"Authorization", bearer(id1)}, []cache.Key{key(id1)}},
		{"cookie", "rebell_session", false, []string{"Cookie", "a=1; rebell_session=" + id1}, []cache.Key{key(id1)}},
		{"both same", "rebell_session", false, []string{"Authorization", bearer(id1), "Cookie", "rebell_session=" + id1},
			[]cache.Key{key(id1)}},
		{"both differ", "rebell_session", true, []string{"Authorization", bearer(id1), "Cookie", "rebell_session=" + id2},
			[]cache.Key{key(id1), key(id2)}},
		{"none", "rebell_session", false, nil, nil},
		{"malformed", "rebell_session", false, []string{"Authorization", "Bearer nope", "Cookie", "rebell_session=zz"}, nil},
		{"basic", "rebell_session", false, []string{"Authorization", "Basic abc"}, nil},
		{"cookies off", "", false, []string{"Cookie", "rebell_session=" + id1}, nil},
		{"cookies off bearer", "", false, []string{"Authorization", bearer(id1)}, []cache.Key{key(id1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.SessionCookie = tt.cookie })
			// Twice: logout is idempotent.
			for range 2 {
				r := logoutRequest(tt.header...)
				if tt.tls {
					r.TLS = &tls.ConnectionState{}
				}
				up := &upstream{}
				w, err := e.serve(r, up)
				if err != nil || w.Code != http.StatusNoContent || w.Body.Len() != 0 || up.called {
					t.Fatalf("ServeHTTP = %v, %d %q, next called %v", err, w.Code, w.Body.String(), up.called)
				}
				want := ""
				if tt.cookie != "" {
					want = tt.cookie + "=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
					if tt.tls {
						want += "; Secure"
					}
				}
				if got := strings.Join(w.Header().Values("Set-Cookie"), "|"); got != want {
					t.Errorf("Set-Cookie %q, want %q", got, want)
				}
				if w.Header().Get("Cache-Control") != "no-store" {
					t.Error("no Cache-Control: no-store")
				}
			}
			got := e.s.logoutKeys()
			want := append(slices.Clone(tt.want), tt.want...)
			if !slices.Equal(got, want) {
				t.Errorf("Logout calls %v, want %v", got, want)
			}
			if !slices.Equal(e.cb.outcomes, []string{"logout", "logout"}) {
				t.Errorf("outcomes %v", e.cb.outcomes)
			}
		})
	}
}

// TestLogoutStoreUnavailable: an end that cannot be stored is a 503, and
// the cookie is kept so that the Mini App can try again.
func TestLogoutStoreUnavailable(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	e.s.logoutErr = fmt.Errorf("%w: connection refused", cache.ErrStoreUnavailable)
	w, _ := e.serve(logoutRequest("Authorization", bearer(id), "Cookie", "rebell_session="+id), nil)
	wantError(t, w, http.StatusServiceUnavailable, "store_unavailable")
	if w.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if got := w.Header().Values("Set-Cookie"); len(got) != 0 {
		t.Errorf("cookie cleared although the logout failed: %q", got)
	}
}

// TestLogoutEndsSession: after logout the session no longer passes.
func TestLogoutEndsSession(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	if w, _ := e.serve(get("/", "Authorization", bearer(id)), nil); w.Code != 200 {
		t.Fatalf("before logout: %d", w.Code)
	}
	if w, _ := e.serve(logoutRequest("Authorization", bearer(id)), nil); w.Code != 204 {
		t.Fatalf("logout: %d", w.Code)
	}
	w, _ := e.serve(get("/", "Authorization", bearer(id)), nil)
	wantError(t, w, 401, "session_invalid")
}
