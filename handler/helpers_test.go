package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// Test fixtures.
const (
	testToken      = "AT-7f3c9e-the-access-token-nobody-may-see"
	testCustomerID = "cust-20881234"
	testAuthCode   = "AC_valid.code~+/=-123"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testGrant() *cache.Grant {
	return &cache.Grant{
		CustomerID:        testCustomerID,
		AccessToken:       rebell.NewSecret(testToken),
		AccessTokenExpiry: testNow.Add(30 * time.Minute),
		SessionExpiry:     testNow.Add(720 * time.Hour),
	}
}

// testIDs makes and checks the session ids of the tests' fake caches.
var testIDs = session.RandomIDs()

// fakeSessions is a Sessions the test controls.
type fakeSessions struct {
	mu       sync.Mutex
	sessions map[cache.Key]*cache.Grant // what Get finds
	getErr   error                      // when set, Get fails with it
	nilGrant bool                       // when set, Get and Login return (nil, nil)

	loginID    string // when set, Login returns it instead of a new id
	loginErr   error
	loginCodes []string // codes Login was called with
	getCalls   int
	logouts    []cache.Key
	logoutErr  error
}

func newFakeSessions() *fakeSessions {
	return &fakeSessions{sessions: make(map[cache.Key]*cache.Grant)}
}

// add stores a session with the test grant and returns its id.
func (f *fakeSessions) add() string {
	id, k := testIDs.New()
	f.mu.Lock()
	f.sessions[k] = testGrant()
	f.mu.Unlock()
	return id
}

func (f *fakeSessions) Login(_ context.Context, code rebell.Secret) (string, *cache.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loginCodes = append(f.loginCodes, code.Reveal())
	if f.loginErr != nil {
		return "", nil, f.loginErr
	}
	if f.nilGrant {
		return f.loginID, nil, nil
	}
	id, k := testIDs.New()
	if f.loginID != "" {
		id = f.loginID
	}
	f.sessions[k] = testGrant()
	return id, testGrant(), nil
}

func (f *fakeSessions) Get(_ context.Context, k cache.Key) (*cache.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.getCalls++
	if f.getErr != nil {
		return nil, f.getErr
	}
	if f.nilGrant {
		return nil, nil
	}
	g, ok := f.sessions[k]
	if !ok {
		return nil, cache.ErrSessionInvalid
	}
	return g, nil
}

func (f *fakeSessions) Logout(_ context.Context, k cache.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logouts = append(f.logouts, k)
	delete(f.sessions, k)
	return f.logoutErr
}

func (f *fakeSessions) ParseSessionID(id string) (cache.Key, bool) { return testIDs.Parse(id) }

func (f *fakeSessions) loginCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.loginCodes...)
}

func (f *fakeSessions) logoutKeys() []cache.Key {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]cache.Key(nil), f.logouts...)
}

// upstream is a Next that records what it was given. When echo is set it
// copies every request header into the response headers, as a careless
// upstream might.
type upstream struct {
	called bool
	header http.Header // the request headers it saw
	echo   bool
	err    error
	serve  func(w http.ResponseWriter, r *http.Request) // runs after recording, if set
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	u.called = true
	u.header = r.Header.Clone()
	if u.echo {
		for k, v := range r.Header {
			w.Header()[k] = v
		}
	}
	if u.serve != nil {
		u.serve(w, r)
	} else {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "upstream body")
	}
	return u.err
}

// recorder collects the callbacks' calls.
type recorder struct {
	mu       sync.Mutex
	grants   []*cache.Grant
	rejects  []string
	outcomes []string
}

func (c *recorder) install(cfg *Config) {
	cfg.OnGrant = func(_ *http.Request, g *cache.Grant) {
		c.mu.Lock()
		c.grants = append(c.grants, g)
		c.mu.Unlock()
	}
	cfg.OnReject = func(_ *http.Request, code string) {
		c.mu.Lock()
		c.rejects = append(c.rejects, code)
		c.mu.Unlock()
	}
	cfg.OnOutcome = func(o string) {
		c.mu.Lock()
		c.outcomes = append(c.outcomes, o)
		c.mu.Unlock()
	}
}

// env is a handler under test with its fakes.
type env struct {
	h   *Handler
	s   *fakeSessions
	cb  *recorder
	cfg Config
}

// newEnv builds a handler with cookies on (rebell_session) and a fixed
// clock; edit changes the config first.
func newEnv(t testing.TB, edit func(*Config)) *env {
	t.Helper()
	e := &env{s: newFakeSessions(), cb: &recorder{}}
	e.cfg = Config{
		Sessions:      e.s,
		SessionCookie: "rebell_session",
		Now:           func() time.Time { return testNow },
	}
	e.cb.install(&e.cfg)
	if edit != nil {
		edit(&e.cfg)
	}
	h, err := New(e.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.h = h
	return e
}

// serve runs one request through the handler and returns the response and
// the error ServeHTTP returned.
func (e *env) serve(r *http.Request, next Next) (*httptest.ResponseRecorder, error) {
	if next == nil {
		next = &upstream{}
	}
	w := httptest.NewRecorder()
	err := e.h.ServeHTTP(w, r, next)
	return w, err
}

func get(target string, header ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

func bearer(id string) string { return "Bearer " + id }

// decodeError checks that w is a well-formed error response of the
// handler's and returns its body's members.
func decodeError(t *testing.T, w *httptest.ResponseRecorder) map[string]string {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	var m map[string]string
	dec := json.NewDecoder(strings.NewReader(w.Body.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	for k := range m {
		if k != "error" && k != "message" && k != "resultCode" {
			t.Errorf("error body has member %q: %s", k, w.Body.String())
		}
	}
	if m["error"] == "" || m["message"] == "" {
		t.Errorf("error body lacks error or message: %s", w.Body.String())
	}
	return m
}

// wantError checks status and error code of an error response.
func wantError(t *testing.T, w *httptest.ResponseRecorder, status int, code string) map[string]string {
	t.Helper()
	if w.Code != status {
		t.Errorf("status = %d, want %d (body %s)", w.Code, status, w.Body.String())
	}
	m := decodeError(t, w)
	if m["error"] != code {
		t.Errorf("error = %q, want %q", m["error"], code)
	}
	if status == http.StatusUnauthorized {
		if wa := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
			t.Errorf("WWW-Authenticate = %q, want Bearer…", wa)
		}
	}
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	return m
}

// rebellRejected is an error as the cache returns it for a configuration
// failure with a resultCode.
func rebellRejected() error {
	return fmt.Errorf("%w: %w", cache.ErrRebellRejected, &rebell.Error{
		Kind: rebell.KindConfiguration, ResultStatus: "F", ResultCode: "ACCESS_DENIED", Verified: true,
	})
}
