package sandbox

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func (e *env) cancelPath() string { return e.prefix + "/v1/authorizations/cancelToken" }

func atBody(token string) string { return `{"accessToken":` + jsonString(token) + `}` }

// TestCancelTokenRevokes: SUCCESS revokes the authorization (its refresh
// token answers INVALID_REFRESH_TOKEN), a second cancel is
// INVALID_ACCESS_TOKEN, an expired access token EXPIRED_ACCESS_TOKEN, and
// the stats count them.
func TestCancelTokenRevokes(t *testing.T) {
	e := newEnv(t)
	r := e.exchange(t, "v2", e.mustCode(t))
	other := e.exchange(t, "v1", e.mustCode(t)) // another authorization lives on
	e.apply(t, call{path: e.cancelPath(), body: atBody(r.body.AccessToken)}).expect(t, http.StatusOK, "S", rebell.CodeSuccess)
	e.apply(t, call{body: rtBody(r.body.RefreshToken)}).expect(t, http.StatusOK, "F", rebell.CodeInvalidRefreshToken)
	e.apply(t, call{path: e.cancelPath(), body: atBody(r.body.AccessToken)}).expect(t, http.StatusOK, "F", rebell.CodeInvalidAccessToken)
	e.apply(t, call{path: e.cancelPath(), body: atBody("SBXATnever")}).expect(t, http.StatusOK, "F", rebell.CodeInvalidAccessToken)
	if st := e.stats(t); st.LiveRefreshTokens != 1 {
		t.Errorf("live refresh tokens %d, want 1", st.LiveRefreshTokens)
	}

	// Refreshed tokens belong to the same authorization: cancelling the
	// access token issued by a refresh kills its refresh token too.
	r2 := e.apply(t, call{body: rtBody(other.body.RefreshToken)})
	r2.expect(t, http.StatusOK, "S", rebell.CodeSuccess)
	e.clock.Advance(31 * time.Minute)
	e.apply(t, call{path: e.cancelPath(), body: atBody(r2.body.AccessToken)}).expect(t, http.StatusOK, "F", rebell.CodeExpiredAccessToken)
	r3 := e.apply(t, call{body: rtBody(r2.body.RefreshToken)})
	r3.expect(t, http.StatusOK, "S", rebell.CodeSuccess)
	e.apply(t, call{path: e.cancelPath(), body: atBody(r3.body.AccessToken)}).expect(t, http.StatusOK, "S", rebell.CodeSuccess)
	e.apply(t, call{body: rtBody(r3.body.RefreshToken)}).expect(t, http.StatusOK, "F", rebell.CodeInvalidRefreshToken)

	st := e.stats(t)
	want := map[string]int64{rebell.CodeSuccess: 2, rebell.CodeInvalidAccessToken: 2, rebell.CodeExpiredAccessToken: 1}
	if st.CancelTokenCalls != 5 || st.AuthorizationsCancelled != 2 || len(st.CancelByResultCode) != len(want) {
		t.Fatalf("stats %+v", st)
	}
	for k, v := range want {
		if st.CancelByResultCode[k] != v {
			t.Errorf("cancelByResultCode[%s] = %d, want %d", k, st.CancelByResultCode[k], v)
		}
	}
	if st.ApplyTokenCalls != 6 || st.LiveRefreshTokens != 0 {
		t.Errorf("applyTokenCalls %d live refresh tokens %d", st.ApplyTokenCalls, st.LiveRefreshTokens)
	}
}

// TestCancelTokenStrict: the headers, the signature and the body are
// checked as for applyToken.
func TestCancelTokenStrict(t *testing.T) {
	e := newEnv(t)
	at := e.exchange(t, "v2", e.mustCode(t)).body.AccessToken
	obj := jsonString(`{"a":"b"}`)
	for _, tc := range []struct {
		name         string
		c            call
		status       int
		result, code string
	}{
		{"no signature", call{unsigned: true, body: atBody(at)}, http.StatusUnauthorized, "F", rebell.CodeInvalidSignature},
		{"signed for applyToken", call{signURI: e.path("v1"), body: atBody(at)}, http.StatusUnauthorized, "F", rebell.CodeInvalidSignature},
		{"stale Request-Time", call{at: e.clock.Now().Add(-time.Hour), body: atBody(at)}, http.StatusUnauthorized, "F", rebell.CodeInvalidSignature},
		{"wrong Client-Id", call{header: func(h http.Header) { h.Set(rebell.HeaderClientID, "OTHER") }, body: atBody(at)}, http.StatusUnauthorized, "F", rebell.CodeInvalidAuthClient},
		{"text/plain", call{header: func(h http.Header) { h.Set(rebell.HeaderContentType, "text/plain") }, body: atBody(at)}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"empty body", call{body: ``}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"no accessToken", call{body: `{}`}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"empty accessToken", call{body: `{"accessToken":""}`}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"long accessToken", call{body: atBody(strings.Repeat("A", 129))}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"accessToken with #", call{body: atBody("SBXAT#1")}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"number accessToken", call{body: `{"accessToken":1}`}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"duplicate field", call{body: `{"accessToken":"a","accessToken":"b"}`}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"unknown field", call{body: `{"accessToken":"a","grantType":"REFRESH_TOKEN"}`}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"extendInfo not an object", call{body: `{"accessToken":"a","extendInfo":"x"}`}, http.StatusBadRequest, "F", rebell.CodeParamIllegal},
		{"extendInfo object", call{body: `{"accessToken":"SBXATx","extendInfo":` + obj + `}`}, http.StatusOK, "F", rebell.CodeInvalidAccessToken},
		{"null extendInfo", call{body: `{"accessToken":"SBXATx","extendInfo":null}`}, http.StatusOK, "F", rebell.CodeInvalidAccessToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.path = e.cancelPath()
			e.apply(t, tc.c).expect(t, tc.status, tc.result, tc.code)
		})
	}
	// None of them cancelled anything.
	e.apply(t, call{path: e.cancelPath(), body: atBody(at)}).expect(t, http.StatusOK, "S", rebell.CodeSuccess)
	// Only POST, and only v1.
	if resp, _ := e.do(t, http.MethodGet, "/v1/authorizations/cancelToken", ""); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	if resp, _ := e.do(t, http.MethodPost, "/v2/authorizations/cancelToken", atBody(at)); resp.StatusCode != http.StatusNotFound {
		t.Errorf("v2 path: %d", resp.StatusCode)
	}
}

// TestCancelTokenFaults: faults for cancelToken answer cancels only, and
// applyToken faults leave cancels alone.
func TestCancelTokenFaults(t *testing.T) {
	e := newEnv(t)
	r := e.exchange(t, "v2", e.mustCode(t))
	e.fault(t, `{"resultCode":"PROCESS_FAIL","resultStatus":"F"}`) // applyToken's
	e.fault(t, `{"call":"cancelToken","count":2,"resultCode":"REQUEST_TRAFFIC_EXCEED_LIMIT","httpStatus":429}`)
	e.apply(t, call{path: e.cancelPath(), body: atBody(r.body.AccessToken)}).expect(t, http.StatusTooManyRequests, "U", rebell.CodeRequestTrafficExceedLimit)
	e.apply(t, call{path: e.cancelPath(), body: atBody(r.body.AccessToken)}).expect(t, http.StatusTooManyRequests, "U", rebell.CodeRequestTrafficExceedLimit)
	e.apply(t, call{path: e.cancelPath(), body: atBody(r.body.AccessToken)}).expect(t, http.StatusOK, "S", rebell.CodeSuccess)
	e.apply(t, call{body: rtBody(r.body.RefreshToken)}).expect(t, http.StatusOK, "F", rebell.CodeProcessFail)
	for _, bad := range []string{`{"call":"revoke"}`, `{"call":"cancelToken","grantType":"REFRESH_TOKEN"}`} {
		if resp, _ := e.do(t, http.MethodPost, "/sandbox/faults", bad); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("fault %s: %d", bad, resp.StatusCode)
		}
	}
}
