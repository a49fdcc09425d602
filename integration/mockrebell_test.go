package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Modes of the mock Rebell.
const (
	mockOK        = iota // answer applyToken
	mockRefuse           // HTTP 503, as a load balancer in front of a down Rebell
	mockHang             // hold every call until the mode changes or the caller gives up
	mockRateLimit        // signed U REQUEST_TRAFFIC_EXCEED_LIMIT
)

// mockRebell is a minimal applyToken server on 127.0.0.1 that signs its
// answers with the platform key, issues single-use auth codes' tokens with a
// settable access-token lifetime, rotates refresh tokens, and can refuse,
// hang and rate-limit. It records every call: when, whether it succeeded,
// and how many ran at once.
type mockRebell struct {
	t      testing.TB
	srv    *http.Server
	URL    string
	signer *rebell.Signer

	mode       atomic.Int32
	clockAhead atomic.Int64 // ns Rebell's clock (Response-Time) runs ahead
	accessTTL  atomic.Int64 // ns
	changed    chan struct{}

	inFlight, peak atomic.Int64

	mu       sync.Mutex
	changeMu sync.Mutex
	seq      int
	codes    map[string]bool   // used auth codes
	refresh  map[string]string // live refresh token -> customer id
	spent    map[string]bool   // refresh tokens used once
	calls    []mockCall
	reused   int // USED_REFRESH_TOKEN answers
	// access maps a live access token to its refresh token; cancels are
	// the cancelToken calls, kept apart from calls.
	access   map[string]string
	issued   map[string]string // every access token issued → its refresh token
	lastAT   string            // the access token issued last
	cancels  []mockCancel
	firstOK  time.Time
	okSince  time.Time // first success after the last mode change to OK
	modeFrom time.Time
}

// mockCancel is a cancelToken call the mock answered (or refused).
type mockCancel struct {
	at          time.Time
	accessToken string
	signed      bool   // the signature verified with the merchant's key
	result      string // the resultCode sent, "" when refused or hung
}

type mockCall struct {
	at, end time.Time
	grant   string
	ok      bool
}

func newMockRebell(t testing.TB) *mockRebell {
	t.Helper()
	_, platform := testKeys(t)
	signer, err := rebell.NewSigner("MERCHANT_IT", platform, 1, rebell.AlgorithmRSA256)
	if err != nil {
		t.Fatal(err)
	}
	m := &mockRebell{t: t, signer: signer, codes: map[string]bool{}, refresh: map[string]string{}, spent: map[string]bool{},
		changed: make(chan struct{}), access: map[string]string{}, issued: map[string]string{}}
	m.accessTTL.Store(int64(time.Hour))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.URL = "http://" + l.Addr().String()
	m.srv = &http.Server{Handler: http.HandlerFunc(m.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = m.srv.Serve(l) }()
	t.Cleanup(func() {
		m.setMode(mockOK) // release hung calls
		_ = m.srv.Close()
	})
	return m
}

// setMode switches the mode and wakes calls held by mockHang.
func (m *mockRebell) setMode(mode int32) {
	m.changeMu.Lock()
	defer m.changeMu.Unlock()
	m.mu.Lock()
	m.modeFrom = time.Now()
	m.okSince = time.Time{}
	m.mu.Unlock()
	m.mode.Store(mode)
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *mockRebell) changedCh() chan struct{} {
	m.changeMu.Lock()
	defer m.changeMu.Unlock()
	return m.changed
}

// callsBetween returns the calls that started in [from, to).
func (m *mockRebell) callsBetween(from, to time.Time) []mockCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []mockCall
	for _, c := range m.calls {
		if !c.at.Before(from) && c.at.Before(to) {
			out = append(out, c)
		}
	}
	return out
}

func (m *mockRebell) callCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.calls)
}

// firstSuccessSinceMode is when the first successful answer was sent after
// the last mode change.
func (m *mockRebell) firstSuccessSinceMode() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.okSince
}

type applyBody struct {
	GrantType    string `json:"grantType"`
	AuthCode     string `json:"authCode"`
	RefreshToken string `json:"refreshToken"`
}

type applyResult struct {
	ResultStatus  string `json:"resultStatus"`
	ResultCode    string `json:"resultCode"`
	ResultMessage string `json:"resultMessage"`
}

func (m *mockRebell) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, rebell.CancelTokenPath) {
		m.serveCancel(w, r)
		return
	}
	call := mockCall{at: time.Now()}
	n := m.inFlight.Add(1)
	for p := m.peak.Load(); n > p && !m.peak.CompareAndSwap(p, n); p = m.peak.Load() {
	}
	defer func() {
		m.inFlight.Add(-1)
		call.end = time.Now()
		m.mu.Lock()
		m.calls = append(m.calls, call)
		if call.ok {
			if m.firstOK.IsZero() {
				m.firstOK = call.end
			}
			if m.okSince.IsZero() && call.at.After(m.modeFrom) {
				m.okSince = call.end
			}
		}
		m.mu.Unlock()
	}()
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 8192))
	var req applyBody
	_ = json.Unmarshal(raw, &req)
	call.grant = req.GrantType

	switch m.mode.Load() {
	case mockRefuse:
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case mockHang:
		select {
		case <-m.changedCh():
		case <-r.Context().Done():
			return
		}
		if m.mode.Load() != mockOK {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	case mockRateLimit:
		m.write(w, r, map[string]any{"result": applyResult{"U", rebell.CodeRequestTrafficExceedLimit, "Too many requests."}})
		return
	}

	now := time.Now()
	m.mu.Lock()
	var customer string
	fail := ""
	switch req.GrantType {
	case rebell.GrantAuthorizationCode:
		if m.codes[req.AuthCode] {
			fail = rebell.CodeUsedCode
		}
		m.codes[req.AuthCode] = true
		customer = "2188" + fmt.Sprintf("%012d", len(m.codes))
		// A code "customer-<id>-<n>" logs in as customer <id>.
		if parts := strings.SplitN(req.AuthCode, "-", 3); len(parts) == 3 && parts[0] == "customer" {
			customer = parts[1]
		}
	case rebell.GrantRefreshToken:
		var ok bool
		if customer, ok = m.refresh[req.RefreshToken]; !ok {
			fail = rebell.CodeInvalidRefreshToken
			if m.spent[req.RefreshToken] {
				fail = rebell.CodeUsedRefreshToken
				m.reused++
			}
		}
		delete(m.refresh, req.RefreshToken)
		m.spent[req.RefreshToken] = true
	}
	m.seq++
	seq := m.seq
	at, rt := fmt.Sprintf("AT%040d", seq), fmt.Sprintf("RT%040d", seq)
	if fail == "" {
		m.refresh[rt] = customer
		m.access[at] = rt
		m.issued[at] = rt
		m.lastAT = at
	}
	m.mu.Unlock()
	if fail != "" {
		m.write(w, r, map[string]any{"result": applyResult{"F", fail, "Rejected."}})
		return
	}
	call.ok = true
	m.write(w, r, map[string]any{
		"result":                 applyResult{"S", rebell.CodeSuccess, "Success."},
		"accessToken":            at,
		"accessTokenExpiryTime":  now.Add(time.Duration(m.accessTTL.Load())).Format(time.RFC3339),
		"refreshToken":           rt,
		"refreshTokenExpiryTime": now.Add(time.Hour).Format(time.RFC3339),
		"customerId":             customer,
	})
}

func (m *mockRebell) write(w http.ResponseWriter, r *http.Request, v any) {
	body, _ := json.Marshal(v)
	if err := m.signer.Sign(w.Header(), rebell.HeaderResponseTime, http.MethodPost, r.URL.RequestURI(), body,
		time.Now().Add(time.Duration(m.clockAhead.Load()))); err != nil {
		m.t.Error(err)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// serveCancel answers cancelToken: it checks the merchant's signature, and
// a live access token revokes its refresh token. Refuse and hang modes
// apply as to applyToken.
func (m *mockRebell) serveCancel(w http.ResponseWriter, r *http.Request) {
	c := mockCancel{at: time.Now()}
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 8192))
	var req struct {
		AccessToken string `json:"accessToken"`
	}
	_ = json.Unmarshal(raw, &req)
	c.accessToken = req.AccessToken
	merchant, _ := testKeys(m.t)
	_, err := rebell.VerifyMessage(&merchant.PublicKey, r.Header, rebell.HeaderRequestTime, http.MethodPost, r.URL.RequestURI(), raw)
	c.signed = err == nil
	defer func() {
		m.mu.Lock()
		m.cancels = append(m.cancels, c)
		m.mu.Unlock()
	}()
	switch m.mode.Load() {
	case mockRefuse, mockHang: // a down Rebell, answered at once
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case mockRateLimit:
		m.write(w, r, map[string]any{"result": applyResult{"U", rebell.CodeRequestTrafficExceedLimit, "Too many requests."}})
		return
	}
	m.mu.Lock()
	rt, live := m.access[req.AccessToken]
	if live && c.signed {
		delete(m.access, req.AccessToken)
		delete(m.refresh, rt)
	}
	m.mu.Unlock()
	switch {
	case !c.signed:
		c.result = rebell.CodeInvalidSignature
		m.write(w, r, map[string]any{"result": applyResult{"F", c.result, "Bad signature."}})
	case !live:
		c.result = rebell.CodeInvalidAccessToken
		m.write(w, r, map[string]any{"result": applyResult{"F", c.result, "Invalid access token."}})
	default:
		c.result = rebell.CodeSuccess
		m.write(w, r, map[string]any{"result": applyResult{"S", c.result, "Success."}})
	}
}

// lastAccessToken returns the access token issued last.
func (m *mockRebell) lastAccessToken() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastAT
}

// cancelCalls returns the cancelToken calls so far.
func (m *mockRebell) cancelCalls() []mockCancel {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]mockCancel(nil), m.cancels...)
}

// refreshLiveFor reports whether the refresh token issued with access
// token at can still be redeemed.
func (m *mockRebell) refreshLiveFor(at string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	rt, ok := m.issued[at]
	if !ok {
		m.t.Errorf("the mock never issued access token %.8s…", at)
		return false
	}
	_, ok = m.refresh[rt]
	return ok
}
