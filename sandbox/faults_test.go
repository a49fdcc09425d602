package sandbox

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func TestFaults(t *testing.T) {
	e := newEnv(t)
	code := e.mustCode(t)

	// Defaults: once, U UNKNOWN_EXCEPTION, HTTP 200. Faults queue up.
	if n := e.fault(t, ``); n != 1 {
		t.Errorf("queued = %d, want 1", n)
	}
	if n := e.fault(t, `{"count":2,"resultStatus":"U","resultCode":"REQUEST_TRAFFIC_EXCEED_LIMIT","resultMessage":"Slow down.","httpStatus":429}`); n != 3 {
		t.Errorf("queued = %d, want 3", n)
	}
	r := e.apply(t, call{body: acBody(code)})
	r.expect(t, http.StatusOK, rebell.StatusUnknown, rebell.CodeUnknownException)
	if r.body.Result.ResultMessage != results[rebell.CodeUnknownException].message {
		t.Errorf("default fault message = %q", r.body.Result.ResultMessage)
	}
	for range 2 {
		r := e.apply(t, call{body: acBody(code)})
		r.expect(t, http.StatusTooManyRequests, rebell.StatusUnknown, rebell.CodeRequestTrafficExceedLimit)
		if r.body.Result.ResultMessage != "Slow down." {
			t.Errorf("fault message = %q", r.body.Result.ResultMessage)
		}
	}
	// The faulted calls did not consume the code.
	rt := e.exchange(t, "v2", code).body.RefreshToken

	// A grantType filter lets the other grant through.
	e.fault(t, `{"grantType":"REFRESH_TOKEN","resultStatus":"F","resultCode":"PROCESS_FAIL","httpStatus":503}`)
	e.exchange(t, "v1", e.mustCode(t))
	e.apply(t, call{body: rtBody(rt)}).expect(t, http.StatusServiceUnavailable, rebell.StatusFail, rebell.CodeProcessFail)
	rt = e.apply(t, call{body: rtBody(rt)}).body.RefreshToken // not consumed by the fault
	if rt == "" {
		t.Fatal("refresh after the fault failed")
	}

	// An unknown status letter and SUCCESS without tokens are served as given.
	e.fault(t, `{"resultStatus":"X","resultCode":"SOMETHING_NEW"}`)
	e.apply(t, call{body: rtBody(rt)}).expect(t, http.StatusOK, "X", "SOMETHING_NEW")
	e.fault(t, `{"resultStatus":"S","resultCode":"SUCCESS"}`)
	if r := e.apply(t, call{body: rtBody(rt)}); r.body.Result.ResultCode != rebell.CodeSuccess || r.body.AccessToken != "" {
		t.Errorf("SUCCESS fault: %s", r.raw)
	}

	// Faults come after authentication: a bad client does not use one up.
	e.fault(t, `{"count":5}`)
	wrong, _ := rebell.NewSigner("NOT_THE_CLIENT", merchantKey, 1, "")
	e.apply(t, call{signer: wrong, body: rtBody(rt)}).expect(t, http.StatusUnauthorized, rebell.StatusFail, rebell.CodeInvalidAuthClient)
	e.apply(t, call{at: e.clock.Now().Add(-time.Hour), body: rtBody(rt)}).expect(t, http.StatusUnauthorized, rebell.StatusFail, rebell.CodeInvalidSignature)
	if st := e.sb.Stats(); st.PendingFaults != 5 {
		t.Errorf("pending faults = %d, want 5", st.PendingFaults)
	}
	// ...but they come before the body is looked at.
	e.apply(t, call{body: `{`}).expect(t, http.StatusOK, rebell.StatusUnknown, rebell.CodeUnknownException)

	// DELETE clears them.
	if resp, _ := e.do(t, http.MethodDelete, "/sandbox/faults", ""); resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE /sandbox/faults = %d", resp.StatusCode)
	}
	e.apply(t, call{body: rtBody(rt)}).expect(t, http.StatusOK, rebell.StatusSuccess, rebell.CodeSuccess)
}

func TestFaultSignatures(t *testing.T) {
	e := newEnv(t)
	body := acBody("NOSUCHCODE")

	e.fault(t, `{"forgeSignature":true}`)
	r := e.apply(t, call{body: body, skipCheck: true})
	if r.body.Result.ResultCode != rebell.CodeUnknownException {
		t.Errorf("forged fault result = %s", r.raw)
	}
	if r.sigErr == nil {
		t.Error("a forged signature verifies with the sandbox key")
	}
	if _, err := rebell.ParseSignatureHeader(r.header.Get(rebell.HeaderSignature)); err != nil {
		t.Errorf("forged Signature header is not well-formed: %v", err)
	}
	// It is a real signature, by another key.
	if _, err := rebell.VerifyMessage(&otherKey.PublicKey, r.header, rebell.HeaderResponseTime, http.MethodPost, e.path("v2"), r.raw); err != nil {
		t.Errorf("forged signature: %v", err)
	}

	e.fault(t, `{"unsigned":true,"httpStatus":500}`)
	r = e.apply(t, call{body: body, skipCheck: true})
	if r.status != http.StatusInternalServerError || r.body.Result.ResultCode != rebell.CodeUnknownException {
		t.Errorf("unsigned fault: %d %s", r.status, r.raw)
	}
	if v := r.header.Values(rebell.HeaderSignature); len(v) != 0 {
		t.Errorf("unsigned fault has Signature %q", v)
	}
	if r.header.Get(rebell.HeaderClientID) != testClientID || r.header.Get(rebell.HeaderResponseTime) == "" {
		t.Errorf("unsigned fault lacks Client-Id or Response-Time: %v", r.header)
	}

	// A status without a body: the signature covers the empty body.
	e.fault(t, `{"httpStatus":204}`)
	r = e.apply(t, call{body: body, skipCheck: true})
	if r.status != http.StatusNoContent || len(r.raw) != 0 || r.sigErr != nil {
		t.Errorf("204 fault: status %d, body %q, signature %v", r.status, r.raw, r.sigErr)
	}

	// Afterwards, responses verify again.
	e.apply(t, call{body: body}).expect(t, http.StatusOK, rebell.StatusFail, rebell.CodeInvalidCode)
}

func TestFaultDelay(t *testing.T) {
	e := newEnv(t)
	body := acBody("NOSUCHCODE")

	// The delay is honoured in real time; the fake clock does not move.
	e.fault(t, `{"delay":"50ms","resultCode":"UNKNOWN_EXCEPTION"}`)
	start := time.Now()
	e.apply(t, call{body: body}).expect(t, http.StatusOK, rebell.StatusUnknown, rebell.CodeUnknownException)
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("delayed fault answered after %v", d)
	}

	// A client that gives up ends the wait.
	e.fault(t, `{"delay":"60s"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+e.path("v2"), strings.NewReader(body))
	if err := e.signer.Sign(req.Header, rebell.HeaderRequestTime, http.MethodPost, e.path("v2"), []byte(body), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if resp, err := e.srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("request with a 60s fault delay did not time out")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("client waited %v", d)
	}
	// srv.Close (cleanup) waits for the handler; it must not take 60s.

	// The same, directly on the handler: ServeHTTP returns when the context ends.
	e.fault(t, `{"delay":"60s"}`)
	ctx2, cancel2 := context.WithCancel(context.Background())
	r := httptest.NewRequestWithContext(ctx2, http.MethodPost, e.path("v2"), strings.NewReader(body))
	if err := e.signer.Sign(r.Header, rebell.HeaderRequestTime, http.MethodPost, e.path("v2"), []byte(body), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	w := httptest.NewRecorder()
	go func() {
		e.sb.ServeHTTP(w, r)
		close(done)
	}()
	cancel2()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeHTTP still waiting 10s after its context ended")
	}
	// The cut-short call is still answered and counted.
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), rebell.CodeUnknownException) {
		t.Errorf("cut-short fault: %d %s", w.Code, w.Body)
	}
}

func TestFaultValidation(t *testing.T) {
	e := newEnv(t)
	for _, spec := range []string{
		`{"count":0}`,
		`{"count":-1}`,
		`{"count":10001}`,
		`{"count":1.5}`,
		`{"count":"2"}`,
		`{"count":99999999999999999999}`,
		`{"delay":"soon"}`,
		`{"delay":"61s"}`,
		`{"delay":"-1s"}`,
		`{"httpStatus":0}`,
		`{"httpStatus":100}`,
		`{"httpStatus":600}`,
		`{"grantType":"PASSWORD"}`,
		`{"resultStatus":"s"}`,
		`{"resultCode":"bad code"}`,
		`{"resultCode":"` + strings.Repeat("A", 65) + `"}`,
		`{"resultMessage":"` + strings.Repeat("m", 257) + `"}`,
		`{"forgeSignature":true,"unsigned":true}`,
		`{"cnt":2}`,
		`{} {}`,
		`[]`,
		`null`,
		`{`,
		`{"resultMessage":"` + strings.Repeat("m", 5000) + `"}`,
	} {
		resp, raw := e.do(t, http.MethodPost, "/sandbox/faults", spec)
		var er errorResponse
		if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(raw, &er) != nil || er.Error == "" || er.Message == "" {
			t.Errorf("POST /sandbox/faults %.60s: %d %s", spec, resp.StatusCode, raw)
		}
	}
	if st := e.sb.Stats(); st.PendingFaults != 0 {
		t.Errorf("invalid specs queued %d faults", st.PendingFaults)
	}
	if n := e.fault(t, `{"count":10000,"delay":"60s","httpStatus":599,"grantType":"AUTHORIZATION_CODE","resultStatus":"A","resultCode":"X_1"}`); n != 10000 {
		t.Errorf("queued = %d", n)
	}
}

func TestFaultQueueCap(t *testing.T) {
	e := newEnv(t)
	post := func() int {
		w := httptest.NewRecorder()
		e.sb.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/sandbox/faults", strings.NewReader(`{}`)))
		return w.Code
	}
	for i := range maxQueuedFaults {
		if c := post(); c != http.StatusOK {
			t.Fatalf("fault %d: %d", i, c)
		}
	}
	if c := post(); c != http.StatusTooManyRequests {
		t.Errorf("fault beyond the cap: %d", c)
	}
}
