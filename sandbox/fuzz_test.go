package sandbox

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// FuzzApplyTokenBody feeds arbitrary bodies to applyToken (v1 or v2) on an
// authenticated request: the handler must not panic, and must always answer
// with a signed JSON body carrying a result.
func FuzzApplyTokenBody(f *testing.F) {
	testKeys(f)
	clock := newFakeClock()
	// No merchant key: the request passes authentication without a costly
	// signature per input, so the fuzzer spends its time on the body.
	sb, err := New(Config{ClientID: testClientID, PrivateKey: sandboxKey, Now: clock.Now})
	if err != nil {
		f.Fatal(err)
	}
	code, _ := sb.IssueAuthCode("")
	for _, seed := range []string{
		acBody(code),
		acBody("0000000001AbCdEfGh1234567890xyz"),
		rtBody("SBXRT0000000000000000000000000000000000000000"),
		`{"grantType":"AUTHORIZATION_CODE","authCode":"X","referenceClientId":"3333010071465913001","extendInfo":"{\"customerBelongsTo\":\"siteNameExample\"}"}`,
		`{"grantType":"AUTHORIZATION_CODE","authCode":"X","authCode":"Y"}`,
		`{"grantType":"REFRESH_TOKEN","refreshToken":null,"extendInfo":"{}"}`,
		`{"grantType":"PASSWORD"}`,
		`{"grantType":""}`,
		`{"GRANTTYPE":"AUTHORIZATION_CODE"}`,
		`{"grantType":["AUTHORIZATION_CODE"],"authCode":{"a":1}}`,
		`{"grantType":"AUTHORIZATION_CODE","authCode":"X"} {}`,
		`[]`, `null`, `""`, `0`, `{`, `}`, ``, " \t\n",
		"{\"grantType\":\"\xff\xfe\"}",
		`{"grantType":"AUTHORIZATION_CODE","authCode":"\u0000"}`,
	} {
		f.Add(false, []byte(seed))
		f.Add(true, []byte(seed))
	}
	f.Fuzz(func(t *testing.T, v2 bool, body []byte) {
		path := "/v1/authorizations/applyToken"
		if v2 {
			path = "/api/open/v2/authorizations/applyToken"
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set(rebell.HeaderClientID, testClientID)
		req.Header.Set(rebell.HeaderRequestTime, rebell.FormatTime(clock.Now()))
		req.Header.Set(rebell.HeaderContentType, rebell.ContentType)
		w := httptest.NewRecorder()
		sb.ServeHTTP(w, req)

		raw := w.Body.Bytes()
		var resp wireResponse
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&resp); err != nil {
			t.Fatalf("body %q: response %q is not the applyToken JSON: %v", body, raw, err)
		}
		res := resp.Result
		spec, known := results[res.ResultCode]
		if !known || res.ResultStatus != spec.status || w.Code != spec.httpStatus || res.ResultMessage == "" || len(res.ResultMessage) > 256 {
			t.Fatalf("body %q: HTTP %d %+v", body, w.Code, res)
		}
		if (res.ResultCode == rebell.CodeSuccess) != (resp.AccessToken != "" && resp.RefreshToken != "" && resp.CustomerID != "") {
			t.Fatalf("body %q: tokens do not match the result: %s", body, raw)
		}
		if _, err := rebell.VerifyMessage(sb.PublicKey(), w.Header(), rebell.HeaderResponseTime, http.MethodPost, path, raw); err != nil {
			t.Fatalf("body %q: response signature: %v", body, err)
		}
	})
}

// FuzzCancelTokenBody feeds arbitrary bodies to cancelToken on an
// authenticated request: no panic, always a signed result of the
// catalogue, and SUCCESS only for a token the sandbox issued.
func FuzzCancelTokenBody(f *testing.F) {
	testKeys(f)
	clock := newFakeClock()
	sb, err := New(Config{ClientID: testClientID, PrivateKey: sandboxKey, Now: clock.Now})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		atBody("SBXAT0000000000000000000000000000000000000000"),
		`{"accessToken":"a","extendInfo":"{\"k\":\"v\"}"}`,
		`{"accessToken":"a","accessToken":"b"}`,
		`{"accessToken":null}`, `{"accessToken":"a@b"}`, `{"ACCESSTOKEN":"a"}`,
		`[]`, `null`, `{`, ``, "{\"accessToken\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		const path = "/v1/authorizations/cancelToken"
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set(rebell.HeaderClientID, testClientID)
		req.Header.Set(rebell.HeaderRequestTime, rebell.FormatTime(clock.Now()))
		req.Header.Set(rebell.HeaderContentType, rebell.ContentType)
		w := httptest.NewRecorder()
		sb.ServeHTTP(w, req)
		raw := w.Body.Bytes()
		var resp wireResponse
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&resp); err != nil {
			t.Fatalf("body %q: response %q: %v", body, raw, err)
		}
		res := resp.Result
		spec, known := results[res.ResultCode]
		if !known || res.ResultStatus != spec.status || w.Code != spec.httpStatus || res.ResultCode == rebell.CodeSuccess || resp.AccessToken != "" {
			t.Fatalf("body %q: HTTP %d %+v", body, w.Code, res)
		}
		if _, err := rebell.VerifyMessage(sb.PublicKey(), w.Header(), rebell.HeaderResponseTime, http.MethodPost, path, raw); err != nil {
			t.Fatalf("body %q: response signature: %v", body, err)
		}
	})
}
