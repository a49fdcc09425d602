package handler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func TestNewValidates(t *testing.T) {
	s := newFakeSessions()
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" = valid
	}{
		{"defaults", Config{Sessions: s}, ""},
		{"all set", Config{Sessions: s, LoginPath: "/a/login", LogoutPath: "/a/logout", SessionHeader: "x-session",
			SessionCookie: "sid", AccessTokenHeader: "x-at", CustomerIDHeader: "x-cid"}, ""},
		{"no sessions", Config{}, "Sessions"},
		{"relative login", Config{Sessions: s, LoginPath: "login"}, "login_path"},
		{"relative logout", Config{Sessions: s, LogoutPath: "logout"}, "logout_path"},
		{"same paths", Config{Sessions: s, LoginPath: "/x", LogoutPath: "/x"}, "login_path and logout_path"},
		{"default clash", Config{Sessions: s, LogoutPath: "/rebell/login"}, "login_path and logout_path"},
		{"bad session header", Config{Sessions: s, SessionHeader: "X Session"}, "session_header"},
		{"bad access header", Config{Sessions: s, AccessTokenHeader: "X-Token:"}, "access_token_header"},
		{"bad customer header", Config{Sessions: s, CustomerIDHeader: "Kunde-Ä"}, "customer_id_header"},
		{"bad cookie", Config{Sessions: s, SessionCookie: "a;b"}, "session_cookie"},
		{"cookie with space", Config{Sessions: s, SessionCookie: "a b"}, "session_cookie"},
		{"same header", Config{Sessions: s, AccessTokenHeader: "x-id", CustomerIDHeader: "X-ID"}, "same header"},
		{"underscore clash", Config{Sessions: s, SessionHeader: "X_Rebell_Access_Token"}, "same header"},
		{"session is access", Config{Sessions: s, SessionHeader: "X-Id", AccessTokenHeader: "x_id"}, "same header"},
		{"token in the session's Authorization", Config{Sessions: s, AccessTokenHeader: "authorization"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(tt.cfg)
			if tt.want == "" {
				if err != nil || h == nil {
					t.Fatalf("New = %v, %v; want a handler", h, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	h, err := New(Config{Sessions: newFakeSessions()})
	if err != nil {
		t.Fatal(err)
	}
	if h.loginPath != "/rebell/login" || h.logoutPath != "/rebell/logout" ||
		h.sessionHeader != "Authorization" || !h.bearer ||
		h.accessHeader != "X-Rebell-Access-Token" || h.customerHeader != "X-Rebell-Customer-Id" ||
		h.cookie != "" || h.now == nil || h.log == nil {
		t.Errorf("defaults: %+v", h)
	}
}

func TestPassesValidSession(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	r := get("/api/orders?x=1", "Authorization", bearer(id), "Accept", "application/json")
	up := &upstream{serve: func(w http.ResponseWriter, r *http.Request) {
		if len(e.cb.grants) != 1 {
			t.Error("OnGrant not called before next")
		}
		_, _ = io.WriteString(w, "upstream body")
	}}
	w, err := e.serve(r, up)
	if err != nil {
		t.Fatalf("ServeHTTP = %v", err)
	}
	if !up.called || w.Code != http.StatusOK || w.Body.String() != "upstream body" {
		t.Fatalf("upstream called=%v, response %d %q", up.called, w.Code, w.Body.String())
	}
	want := map[string]string{
		"X-Rebell-Access-Token": testToken,
		"X-Rebell-Customer-Id":  testCustomerID,
		"Accept":                "application/json",
	}
	for k, v := range want {
		if got := up.header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
	if _, ok := up.header["Authorization"]; ok {
		t.Error("upstream saw the Authorization header")
	}
	if len(e.cb.grants) != 1 || e.cb.grants[0].CustomerID != testCustomerID {
		t.Errorf("OnGrant calls = %v", e.cb.grants)
	}
	if !slices.Equal(e.cb.outcomes, []string{"ok"}) || len(e.cb.rejects) != 0 {
		t.Errorf("outcomes %v, rejects %v", e.cb.outcomes, e.cb.rejects)
	}
}

func TestReturnsNextError(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	want := errors.New("upstream broke")
	_, err := e.serve(get("/", "Authorization", bearer(id)), &upstream{err: want})
	if err != want {
		t.Fatalf("ServeHTTP = %v, want next's error unchanged", err)
	}
}

// TestErrorTable covers every row of the error table in docs/contract.md reached on a protected path.
func TestErrorTable(t *testing.T) {
	valid, _ := testIDs.New()
	tests := []struct {
		name       string
		auth       string // Authorization value; "" = none
		getErr     error
		nilGrant   bool
		status     int
		code       string
		challenge  string
		resultCode string
	}{
		{"no credential", "", nil, false, 401, "session_required", "Bearer", ""},
		{"malformed id", "Bearer abc", nil, false, 401, "session_invalid", `Bearer error="invalid_token"`, ""},
		{"unknown session", bearer(valid), nil, false, 401, "session_invalid", `Bearer error="invalid_token"`, ""},
		{"session invalid", bearer(valid), fmt.Errorf("idle: %w", cache.ErrSessionInvalid), false,
			401, "session_invalid", `Bearer error="invalid_token"`, ""},
		{"reauth", bearer(valid), fmt.Errorf("%w: %w", cache.ErrReauthRequired,
			&rebell.Error{Kind: rebell.KindRefreshTokenDead, ResultStatus: "F", ResultCode: "USED_REFRESH_TOKEN", Verified: true}),
			false, 401, "reauth_required", `Bearer error="invalid_token"`, "USED_REFRESH_TOKEN"},
		{"reauth expired", bearer(valid), cache.ErrReauthRequired, false, 401, "reauth_required", `Bearer error="invalid_token"`, ""},
		{"rebell unavailable", bearer(valid), fmt.Errorf("%w: %w", cache.ErrRebellUnavailable,
			&rebell.Error{Kind: rebell.KindRetryable, ResultStatus: "U", ResultCode: "UNKNOWN_EXCEPTION", Verified: true}),
			false, 503, "rebell_unavailable", "", "UNKNOWN_EXCEPTION"},
		{"unverified U in an HTTP 503", bearer(valid), fmt.Errorf("%w: %w", cache.ErrRebellUnavailable,
			&rebell.Error{Kind: rebell.KindRetryable, ResultStatus: "U", ResultCode: "ATTACKER_CODE_XYZ", HTTPStatus: 503}),
			false, 503, "rebell_unavailable", "", ""},
		{"rebell unreachable", bearer(valid), fmt.Errorf("%w: %w", cache.ErrRebellUnavailable,
			&rebell.Error{Kind: rebell.KindRetryable, Err: context.DeadlineExceeded}),
			false, 503, "rebell_unavailable", "", ""},
		{"rebell rejected", bearer(valid), rebellRejected(), false, 502, "rebell_rejected", "", "ACCESS_DENIED"},
		{"bad signature", bearer(valid), fmt.Errorf("%w: %w", cache.ErrRebellRejected,
			&rebell.Error{Kind: rebell.KindBadSignature}), false, 502, "rebell_rejected", "", ""},
		{"forged answer's resultCode", bearer(valid), fmt.Errorf("%w: %w", cache.ErrRebellRejected,
			&rebell.Error{Kind: rebell.KindBadSignature, ResultStatus: "F", ResultCode: "ATTACKER_CODE_XYZ"}), false, 502, "rebell_rejected", "", ""},
		{"store unavailable", bearer(valid), fmt.Errorf("redis: %w", cache.ErrStoreUnavailable), false,
			503, "store_unavailable", "", ""},
		{"unexpected error", bearer(valid), errors.New("boom"), false, 503, "rebell_unavailable", "", ""},
		{"nil grant", bearer(valid), nil, true, 503, "rebell_unavailable", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.s.getErr, e.s.nilGrant = tt.getErr, tt.nilGrant
			r := get("/api", "Authorization", tt.auth)
			if tt.auth == "" {
				r.Header.Del("Authorization")
			}
			up := &upstream{}
			w, err := e.serve(r, up)
			if err != nil {
				t.Fatalf("ServeHTTP = %v, want nil for an error it wrote", err)
			}
			if up.called {
				t.Fatal("a rejected request reached next")
			}
			m := wantError(t, w, tt.status, tt.code)
			if got := w.Header().Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.challenge)
			}
			if got, ok := m["resultCode"]; got != tt.resultCode || ok != (tt.resultCode != "") {
				t.Errorf("resultCode = %q (present %v), want %q", got, ok, tt.resultCode)
			}
			if tt.status == 503 && w.Header().Get("Retry-After") != retryAfter {
				t.Errorf("Retry-After = %q", w.Header().Get("Retry-After"))
			}
			if tt.status != 503 && w.Header().Get("Retry-After") != "" {
				t.Errorf("Retry-After on %d", tt.status)
			}
			if !slices.Equal(e.cb.rejects, []string{tt.code}) || !slices.Equal(e.cb.outcomes, []string{tt.code}) {
				t.Errorf("OnReject %v, OnOutcome %v; want [%s]", e.cb.rejects, e.cb.outcomes, tt.code)
			}
			if len(e.cb.grants) != 0 {
				t.Error("OnGrant called on a rejected request")
			}
		})
	}
}

// TestErrorMessagesFixed: every code has one fixed sentence, and the JSON
// body is exactly {"error","message"}.
func TestErrorMessagesFixed(t *testing.T) {
	all := []*apiError{errInvalidAuthCode, errSessionRequired, errSessionInvalid, errReauthRequired,
		errAuthCodeRejected, errMethodNotAllowed, errRequestTooLarge, errRebellRejected,
		errRebellUnavailable, errStoreUnavailable}
	seen := map[string]bool{}
	for _, e := range all {
		if seen[e.code] {
			t.Errorf("code %s twice", e.code)
		}
		seen[e.code] = true
		want := `{"error":"` + e.code + `","message":"` + e.message + `"}`
		if string(e.body) != want {
			t.Errorf("body %s, want %s", e.body, want)
		}
		if !strings.HasSuffix(e.message, ".") || strings.Count(e.message, ". ") > 0 {
			t.Errorf("message %q is not one sentence", e.message)
		}
		if (e.status == 401) != (e.challenge != "") {
			t.Errorf("%s: challenge %q for status %d", e.code, e.challenge, e.status)
		}
	}
}

func TestBearerParsing(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	tests := []struct {
		name   string
		values []string // Authorization values
		cookie string   // Cookie value, "" = none
		status int
		code   string
	}{
		{"canonical", []string{"Bearer " + id}, "", 200, ""},
		{"lower scheme", []string{"bearer " + id}, "", 200, ""},
		{"upper scheme", []string{"BEARER " + id}, "", 200, ""},
		{"many spaces", []string{"Bearer    " + id}, "", 200, ""},
		{"tab", []string{"Bearer\t" + id}, "", 200, ""},
		{"trailing blanks", []string{"Bearer " + id + "  "}, "", 200, ""},
		{"repeated same", []string{"Bearer " + id, "Bearer " + id}, "", 200, ""},
		{"no space", []string{"Bearer" + id}, "", 401, "session_required"},
		{"scheme only", []string{"Bearer"}, "", 401, "session_required"},
		{"scheme and space", []string{"Bearer "}, "", 401, "session_required"},
		{"bare id", []string{id}, "", 401, "session_required"},
		{"short value", []string{"Bea"}, "", 401, "session_required"},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", 401, "session_required"},
		{"basic then cookie", []string{"Basic dXNlcjpwYXNz"}, "rebell_session=" + id, 200, ""},
		{"basic and bearer", []string{"Basic dXNlcjpwYXNz", "Bearer " + id}, "", 200, ""},
		{"short id", []string{"Bearer " + id[:42]}, "", 401, "session_invalid"},
		{"long id", []string{"Bearer " + id + "A"}, "", 401, "session_invalid"},
		{"bad char", []string{"Bearer " + id[:42] + "="}, "", 401, "session_invalid"},
		{"two tokens", []string{"Bearer " + id + " " + id}, "", 401, "session_invalid"},
		{"comma list", []string{"Bearer " + id + ", Bearer " + id}, "", 401, "session_invalid"},
		{"disagreeing values", []string{"Bearer " + id, "Bearer " + strings.Repeat("A", 43)}, "", 401, "session_invalid"},
		{"malformed header beats cookie", []string{"Bearer nope"}, "rebell_session=" + id, 401, "session_invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get("/")
			for _, v := range tt.values {
				r.Header.Add("Authorization", v)
			}
			if tt.cookie != "" {
				r.Header.Set("Cookie", tt.cookie)
			}
			w, _ := e.serve(r, nil)
			if tt.status == 200 {
				if w.Code != 200 {
					t.Fatalf("status %d %s, want the request passed", w.Code, w.Body.String())
				}
				return
			}
			wantError(t, w, tt.status, tt.code)
		})
	}
}

func TestCustomSessionHeader(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionHeader = "x-rebell-session" })
	id := e.s.add()
	tests := []struct {
		name   string
		header []string
		status int
		code   string
	}{
		{"bare id", []string{"X-Rebell-Session", id}, 200, ""},
		{"bearer is not stripped", []string{"X-Rebell-Session", "Bearer " + id}, 401, "session_invalid"},
		{"empty", []string{"X-Rebell-Session", ""}, 401, "session_required"},
		{"authorization ignored", []string{"Authorization", "Bearer " + id}, 401, "session_required"},
		{"underscore variant not read", []string{"X_Rebell_Session", id}, 401, "session_required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get("/")
			r.Header[tt.header[0]] = []string{tt.header[1]}
			up := &upstream{}
			w, _ := e.serve(r, up)
			if tt.status == 200 {
				if w.Code != 200 {
					t.Fatalf("status %d %s", w.Code, w.Body.String())
				}
				if len(up.header.Values("X-Rebell-Session")) != 0 {
					t.Error("upstream saw the session header")
				}
				return
			}
			wantError(t, w, tt.status, tt.code)
			if _, ok := r.Header[tt.header[0]]; ok && tt.header[0] != "Authorization" {
				t.Errorf("%s left on a rejected request", tt.header[0])
			}
		})
	}
}

func TestCookieFallback(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	other := e.s.add()
	tests := []struct {
		name    string
		auth    string
		cookies []string // Cookie header values
		status  int
		code    string
		wantGet int // Get calls
	}{
		{"cookie only", "", []string{"rebell_session=" + id}, 200, "", 1},
		{"among others", "", []string{"a=1; rebell_session=" + id + "; b=2"}, 200, "", 1},
		{"quoted", "", []string{`rebell_session="` + id + `"`}, 200, "", 1},
		{"second line", "", []string{"a=1", "rebell_session=" + id}, 200, "", 1},
		{"first well-formed wins", "", []string{"rebell_session=stale; rebell_session=" + id}, 200, "", 1},
		{"header first", bearer(other), []string{"rebell_session=garbage"}, 200, "", 1},
		{"empty cookie", "", []string{"rebell_session="}, 401, "session_required", 0},
		{"other cookie name", "", []string{"rebell_session2=" + id}, 401, "session_required", 0},
		{"case matters", "", []string{"Rebell_Session=" + id}, 401, "session_required", 0},
		{"malformed", "", []string{"rebell_session=short"}, 401, "session_invalid", 0},
		{"no cookie", "", nil, 401, "session_required", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.s.getCalls = 0
			r := get("/")
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			r.Header["Cookie"] = slices.Clone(tt.cookies)
			w, _ := e.serve(r, nil)
			if tt.status == 200 {
				if w.Code != 200 {
					t.Fatalf("status %d %s", w.Code, w.Body.String())
				}
			} else {
				wantError(t, w, tt.status, tt.code)
			}
			if e.s.getCalls != tt.wantGet {
				t.Errorf("Get calls = %d, want %d", e.s.getCalls, tt.wantGet)
			}
		})
	}
}

func TestCookiesOff(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionCookie = "" })
	id := e.s.add()
	r := get("/", "Cookie", "rebell_session="+id)
	up := &upstream{}
	w, _ := e.serve(r, up)
	wantError(t, w, 401, "session_required")

	// With cookies off the handler leaves the Cookie header alone.
	r = get("/", "Authorization", bearer(id), "Cookie", "rebell_session=x; a=1")
	w, _ = e.serve(r, up)
	if w.Code != 200 || up.header.Get("Cookie") != "rebell_session=x; a=1" {
		t.Errorf("status %d, upstream Cookie %q", w.Code, up.header.Get("Cookie"))
	}
}

func TestGetGetsRequestContext(t *testing.T) {
	type ctxKey struct{}
	var got any
	e := newEnv(t, nil)
	id := e.s.add()
	e.h.sessions = sessionsFunc(func(ctx context.Context, k cache.Key) (*cache.Grant, error) {
		got = ctx.Value(ctxKey{})
		return testGrant(), nil
	})
	r := get("/", "Authorization", bearer(id))
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, "v"))
	if w, _ := e.serve(r, nil); w.Code != 200 || got != "v" {
		t.Fatalf("status %d, context value %v", w.Code, got)
	}
}

// sessionsFunc is a Sessions whose Get is a function.
type sessionsFunc func(context.Context, cache.Key) (*cache.Grant, error)

func (f sessionsFunc) Get(ctx context.Context, k cache.Key) (*cache.Grant, error) { return f(ctx, k) }
func (sessionsFunc) Login(context.Context, rebell.Secret) (string, *cache.Grant, error) {
	return "", nil, cache.ErrStoreUnavailable
}
func (sessionsFunc) Logout(context.Context, cache.Key) error { return nil }
func (sessionsFunc) ParseSessionID(id string) (cache.Key, bool) {
	return testIDs.Parse(id)
}
