package sandbox

import (
	"crypto/rsa"
	"encoding/base64"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// signWith replaces the request's Request-Time and Signature with ones made
// by hand: ts as given, sigHeader formatting the raw signature.
func signWith(key *rsa.PrivateKey, ts string, sigHeader func(sig []byte) string) func(*http.Request) []byte {
	return func(req *http.Request) []byte {
		body, _ := io.ReadAll(req.Body)
		content := rebell.SignedContent(http.MethodPost, req.URL.RequestURI(), req.Header.Get(rebell.HeaderClientID), ts, body)
		sig, err := rebell.SignContent(key, content)
		if err != nil {
			panic(err)
		}
		req.Header.Set(rebell.HeaderRequestTime, ts)
		req.Header.Set(rebell.HeaderSignature, sigHeader(sig))
		return body
	}
}

func TestApplyTokenAuthentication(t *testing.T) {
	e := newEnv(t)
	wrongClient, err := rebell.NewSigner("SOMEONE_ELSE", merchantKey, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, err := rebell.NewSigner(testClientID, otherKey, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	body := acBody("NOSUCHCODE")
	const (
		ok       = rebell.CodeInvalidCode // authentication passed, the code is unknown
		badAuth  = rebell.CodeInvalidAuthClient
		badSig   = rebell.CodeInvalidSignature
		badParam = rebell.CodeParamIllegal
	)
	tests := []struct {
		name string
		c    call
		code string
	}{
		{"valid", call{}, ok},
		{"v1 valid", call{version: "v1"}, ok},
		{"wrong Client-Id", call{signer: wrongClient}, badAuth},
		{"missing Client-Id", call{header: func(h http.Header) { h.Del(rebell.HeaderClientID) }}, badAuth},
		{"two Client-Ids", call{header: func(h http.Header) { h.Add(rebell.HeaderClientID, testClientID) }}, badAuth},
		{"Client-Id in another case", call{header: func(h http.Header) { h.Set(rebell.HeaderClientID, strings.ToLower(testClientID)) }}, badAuth},
		{"Content-Type text/plain", call{header: func(h http.Header) { h.Set("Content-Type", "text/plain") }}, badParam},
		{"Content-Type missing", call{header: func(h http.Header) { h.Del("Content-Type") }}, badParam},
		{"Content-Type form", call{header: func(h http.Header) { h.Set("Content-Type", "application/x-www-form-urlencoded") }}, badParam},
		{"Content-Type latin1", call{header: func(h http.Header) { h.Set("Content-Type", "application/json; charset=ISO-8859-1") }}, badParam},
		{"Content-Type extra param", call{header: func(h http.Header) { h.Set("Content-Type", "application/json; version=2") }}, badParam},
		{"Content-Type without charset", call{header: func(h http.Header) { h.Set("Content-Type", "application/json") }}, ok},
		{"Content-Type other case", call{header: func(h http.Header) { h.Set("Content-Type", "Application/JSON; Charset=utf-8") }}, ok},
		{"Request-Time missing", call{header: func(h http.Header) { h.Del(rebell.HeaderRequestTime) }}, badSig},
		{"Request-Time garbage", call{header: func(h http.Header) { h.Set(rebell.HeaderRequestTime, "yesterday") }}, badSig},
		{"Request-Time epoch millis", call{header: func(h http.Header) { h.Set(rebell.HeaderRequestTime, "1685599933871") }}, badSig},
		{"Request-Time 6 minutes old", call{at: now.Add(-6 * time.Minute)}, badSig},
		{"Request-Time 6 minutes ahead", call{at: now.Add(6 * time.Minute)}, badSig},
		{"Request-Time 4 minutes old", call{at: now.Add(-4 * time.Minute)}, ok},
		{"Request-Time exactly 5 minutes ahead", call{at: now.Add(5 * time.Minute)}, ok},
		{"Request-Time with offset and fraction", call{mutate: signWith(merchantKey, now.Add(253*time.Millisecond).In(time.FixedZone("", 3600)).Format("2006-01-02T15:04:05.000-07:00"),
			func(sig []byte) string { return rebell.FormatSignatureHeader(rebell.AlgorithmRSA256, 1, sig) })}, ok},
		{"algorithm SHA256withRSA", call{mutate: signWith(merchantKey, rebell.FormatTime(now),
			func(sig []byte) string { return rebell.FormatSignatureHeader(rebell.AlgorithmSHA256withRSA, 0, sig) })}, ok},
		{"raw base64 signature, no spaces", call{mutate: signWith(merchantKey, rebell.FormatTime(now),
			func(sig []byte) string {
				return "algorithm=RSA256,keyVersion=1,signature=" + base64.StdEncoding.EncodeToString(sig)
			})}, ok},
		{"Signature missing", call{unsigned: true}, badSig},
		{"Signature garbage", call{header: func(h http.Header) { h.Set(rebell.HeaderSignature, "nonsense") }}, badSig},
		{"Signature twice", call{header: func(h http.Header) { h.Add(rebell.HeaderSignature, h.Get(rebell.HeaderSignature)) }}, badSig},
		{"Signature by another key", call{signer: otherSigner}, badSig},
		{"Signature over another body", call{mutate: func(*http.Request) []byte { return []byte(acBody("NOSUCHCODF")) }}, badSig},
		{"Signature over another path", call{signURI: "/v1/authorizations/applyToken"}, badSig},
		{"Signature with another Request-Time", call{header: func(h http.Header) {
			h.Set(rebell.HeaderRequestTime, rebell.FormatTime(now.Add(time.Second)))
		}}, badSig},
		{"Signature with flipped bit", call{mutate: signWith(merchantKey, rebell.FormatTime(now), func(sig []byte) string {
			sig[10] ^= 1
			return rebell.FormatSignatureHeader(rebell.AlgorithmRSA256, 1, sig)
		})}, badSig},
		// Order: Client-Id before Content-Type before Request-Time.
		{"wrong Client-Id and Content-Type", call{signer: wrongClient, header: func(h http.Header) { h.Set("Content-Type", "text/plain") }}, badAuth},
		{"bad Content-Type and stale time", call{at: now.Add(-time.Hour), header: func(h http.Header) { h.Set("Content-Type", "text/plain") }}, badParam},
		{"wrong Client-Id and bad body", call{signer: wrongClient, body: "{"}, badAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.c.body == "" {
				tt.c.body = body
			}
			r := e.apply(t, tt.c)
			want := results[tt.code]
			r.expect(t, want.httpStatus, want.status, tt.code)
		})
	}
}

func TestApplyTokenBodyValidation(t *testing.T) {
	e := newEnv(t)
	long := func(n int) string { return strings.Repeat("a", n) }
	obj := `"{\"customerBelongsTo\":\"siteNameExample\"}"`
	tests := []struct {
		name    string
		version string
		body    string
		code    string
		msg     string // part of the resultMessage, if set
	}{
		{"v2 unknown code", "v2", acBody("NOSUCHCODE"), rebell.CodeInvalidCode, ""},
		{"v1 unknown code", "v1", acBody("NOSUCHCODE"), rebell.CodeInvalidCode, ""},
		{"v2 unknown refresh token", "v2", rtBody("SBXRTnope"), rebell.CodeInvalidRefreshToken, ""},
		{"v1 unknown refresh token", "v1", rtBody("SBXRTnope"), rebell.CodeInvalidRefreshToken, ""},
		{"v2 full body", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","referenceClientId":"3333010071465913001","extendInfo":` + obj + `}`, rebell.CodeInvalidCode, ""},
		{"v1 with extendInfo", "v1", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","extendInfo":` + obj + `}`, rebell.CodeInvalidCode, ""},
		{"null optional field", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","extendInfo":null}`, rebell.CodeInvalidCode, ""},
		{"pretty-printed", "v2", "{\n  \"grantType\": \"REFRESH_TOKEN\",\n  \"refreshToken\": \"x\"\n}\n", rebell.CodeInvalidRefreshToken, ""},
		{"unsupported grant type", "v2", `{"grantType":"PASSWORD","authCode":"X"}`, rebell.CodeAuthClientUnsupportedGrantType, ""},
		{"lower-case grant type", "v1", `{"grantType":"authorization_code","authCode":"X"}`, rebell.CodeAuthClientUnsupportedGrantType, ""},
		{"referenceClientId in v1", "v1", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","referenceClientId":"abc"}`, rebell.CodeParamIllegal, "v1"},
		{"empty body", "v2", ``, rebell.CodeParamIllegal, "empty"},
		{"blank body", "v2", "  \n", rebell.CodeParamIllegal, "empty"},
		{"malformed", "v2", `{"grantType":"AUTHORIZATION_CODE",`, rebell.CodeParamIllegal, "JSON"},
		{"trailing comma", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X",}`, rebell.CodeParamIllegal, "JSON"},
		{"array", "v2", `[]`, rebell.CodeParamIllegal, "object"},
		{"null", "v2", `null`, rebell.CodeParamIllegal, "object"},
		{"string", "v2", `"x"`, rebell.CodeParamIllegal, "object"},
		{"two objects", "v2", acBody("X") + `{}`, rebell.CodeParamIllegal, "after"},
		{"trailing garbage", "v2", acBody("X") + ` x`, rebell.CodeParamIllegal, "after"},
		{"invalid UTF-8", "v2", "{\"grantType\":\"AUTHORIZATION_CODE\",\"authCode\":\"\xff\"}", rebell.CodeParamIllegal, "UTF-8"},
		{"unknown field", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","scope":"auth_user"}`, rebell.CodeParamIllegal, `"scope"`},
		{"field name in another case", "v2", `{"GrantType":"AUTHORIZATION_CODE","authCode":"X"}`, rebell.CodeParamIllegal, "Unknown field"},
		{"duplicate field", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","authCode":"Y"}`, rebell.CodeParamIllegal, "more than once"},
		{"number authCode", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":123}`, rebell.CodeParamIllegal, "must be a string"},
		{"bool grantType", "v2", `{"grantType":true,"authCode":"X"}`, rebell.CodeParamIllegal, "must be a string"},
		{"object extendInfo", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","extendInfo":{"customerBelongsTo":"x"}}`, rebell.CodeParamIllegal, "must be a string"},
		{"array refreshToken", "v2", `{"grantType":"REFRESH_TOKEN","refreshToken":["x"]}`, rebell.CodeParamIllegal, "must be a string"},
		{"missing grantType", "v2", `{"authCode":"X"}`, rebell.CodeParamIllegal, "grantType is required"},
		{"null grantType", "v2", `{"grantType":null,"authCode":"X"}`, rebell.CodeParamIllegal, "grantType is required"},
		{"empty grantType", "v2", `{"grantType":"","authCode":"X"}`, rebell.CodeParamIllegal, "empty"},
		{"missing authCode", "v2", `{"grantType":"AUTHORIZATION_CODE"}`, rebell.CodeParamIllegal, "authCode is required"},
		{"null authCode", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":null}`, rebell.CodeParamIllegal, "authCode is required"},
		{"missing refreshToken", "v1", `{"grantType":"REFRESH_TOKEN"}`, rebell.CodeParamIllegal, "refreshToken is required"},
		{"both credentials", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","refreshToken":"Y"}`, rebell.CodeParamIllegal, "both"},
		{"refreshToken with code grant", "v2", `{"grantType":"AUTHORIZATION_CODE","refreshToken":"Y"}`, rebell.CodeParamIllegal, "authCode is required"},
		{"authCode with refresh grant", "v2", `{"grantType":"REFRESH_TOKEN","authCode":"X"}`, rebell.CodeParamIllegal, "refreshToken is required"},
		{"empty authCode", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":""}`, rebell.CodeParamIllegal, "empty"},
		{"empty refreshToken", "v2", `{"grantType":"REFRESH_TOKEN","refreshToken":""}`, rebell.CodeParamIllegal, "empty"},
		{"empty referenceClientId", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","referenceClientId":""}`, rebell.CodeParamIllegal, "empty"},
		{"empty extendInfo", "v1", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","extendInfo":""}`, rebell.CodeParamIllegal, "empty"},
		{"authCode of 64", "v2", acBody(long(64)), rebell.CodeInvalidCode, ""},
		{"authCode of 65", "v2", acBody(long(65)), rebell.CodeParamIllegal, "longer"},
		{"refreshToken of 128", "v2", rtBody(long(128)), rebell.CodeInvalidRefreshToken, ""},
		{"refreshToken of 129", "v2", rtBody(long(129)), rebell.CodeParamIllegal, "longer"},
		{"referenceClientId of 129", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","referenceClientId":"` + long(129) + `"}`, rebell.CodeParamIllegal, "longer"},
		{"grantType of 65", "v2", `{"grantType":"` + long(65) + `","authCode":"X"}`, rebell.CodeParamIllegal, "longer"},
		{"extendInfo of 4097", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","extendInfo":"{\"a\":\"` + long(4097-8) + `\"}"}`, rebell.CodeParamIllegal, "longer"},
		{"extendInfo not JSON", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","extendInfo":"siteNameExample"}`, rebell.CodeParamIllegal, "JSON object"},
		{"extendInfo an array", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","extendInfo":"[1]"}`, rebell.CodeParamIllegal, "JSON object"},
		{"extendInfo two objects", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","extendInfo":"{}{}"}`, rebell.CodeParamIllegal, "JSON object"},
		{"body over 16 KiB", "v2", `{"grantType":"AUTHORIZATION_CODE","authCode":"X","extendInfo":"` + long(16<<10) + `"}`, rebell.CodeParamIllegal, "16 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.apply(t, call{version: tt.version, body: tt.body})
			want := results[tt.code]
			r.expect(t, want.httpStatus, want.status, tt.code)
			if !strings.Contains(r.body.Result.ResultMessage, tt.msg) {
				t.Errorf("resultMessage %q does not mention %q", r.body.Result.ResultMessage, tt.msg)
			}
			if n := len(r.body.Result.ResultMessage); n > 256 {
				t.Errorf("resultMessage is %d bytes", n)
			}
		})
	}
}

var (
	tokenRE    = regexp.MustCompile(`^SBX(AT|RT)[A-Za-z0-9]{40}$`)
	authCodeRE = regexp.MustCompile(`^[A-Za-z0-9]{32}$`)
	customerRE = regexp.MustCompile(`^[1-9][0-9]{15}$`)
)

func TestApplyTokenFlow(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			e := newEnv(t)
			code, cid := e.authCode(t, "")
			if !authCodeRE.MatchString(code) || !customerRE.MatchString(cid) {
				t.Fatalf("authCode %q customerId %q have the wrong shape", code, cid)
			}

			// The code buys a session with the default TTLs.
			start := e.clock.Now()
			r := e.exchange(t, version, code)
			b := r.body
			if !tokenRE.MatchString(b.AccessToken) || !tokenRE.MatchString(b.RefreshToken) || b.AccessToken == b.RefreshToken {
				t.Errorf("tokens have the wrong shape: %s", r.raw)
			}
			if b.CustomerID != cid {
				t.Errorf("customerId = %q, want %q", b.CustomerID, cid)
			}
			if b.Result.ResultMessage != "success" {
				t.Errorf("resultMessage = %q", b.Result.ResultMessage)
			}
			if want := rebell.FormatTime(start.Add(30 * time.Minute)); b.AccessTokenExpiryTime != want {
				t.Errorf("accessTokenExpiryTime = %q, want %q", b.AccessTokenExpiryTime, want)
			}
			if want := rebell.FormatTime(start.Add(720 * time.Hour)); b.RefreshTokenExpiryTime != want {
				t.Errorf("refreshTokenExpiryTime = %q, want %q", b.RefreshTokenExpiryTime, want)
			}

			// The code is single-use, also through the other version.
			e.apply(t, call{version: version, body: acBody(code)}).expect(t, 200, rebell.StatusFail, rebell.CodeUsedCode)
			e.apply(t, call{version: "v2", body: acBody(code)}).expect(t, 200, rebell.StatusFail, rebell.CodeUsedCode)

			// A refresh rotates both tokens with new expiries.
			e.clock.Advance(20 * time.Minute)
			r2 := e.apply(t, call{version: version, body: rtBody(b.RefreshToken)})
			r2.expect(t, 200, rebell.StatusSuccess, rebell.CodeSuccess)
			b2 := r2.body
			if b2.AccessToken == b.AccessToken || b2.RefreshToken == b.RefreshToken || !tokenRE.MatchString(b2.RefreshToken) {
				t.Errorf("tokens did not rotate: %s", r2.raw)
			}
			if b2.CustomerID != cid {
				t.Errorf("customerId after refresh = %q, want %q", b2.CustomerID, cid)
			}
			now := e.clock.Now()
			if want := rebell.FormatTime(now.Add(30 * time.Minute)); b2.AccessTokenExpiryTime != want {
				t.Errorf("refreshed accessTokenExpiryTime = %q, want %q", b2.AccessTokenExpiryTime, want)
			}
			if want := rebell.FormatTime(now.Add(720 * time.Hour)); b2.RefreshTokenExpiryTime != want {
				t.Errorf("refreshed refreshTokenExpiryTime = %q, want %q", b2.RefreshTokenExpiryTime, want)
			}

			// The old refresh token is spent; the new one works once.
			e.apply(t, call{version: version, body: rtBody(b.RefreshToken)}).expect(t, 200, rebell.StatusFail, rebell.CodeUsedRefreshToken)
			r3 := e.apply(t, call{version: version, body: rtBody(b2.RefreshToken)})
			r3.expect(t, 200, rebell.StatusSuccess, rebell.CodeSuccess)
			e.apply(t, call{version: version, body: rtBody(b2.RefreshToken)}).expect(t, 200, rebell.StatusFail, rebell.CodeUsedRefreshToken)

			// An access token is not a refresh token.
			e.apply(t, call{version: version, body: rtBody(b.AccessToken)}).expect(t, 200, rebell.StatusFail, rebell.CodeInvalidRefreshToken)
		})
	}
}

func TestApplyTokenCustomerID(t *testing.T) {
	e := newEnv(t)
	code, cid := e.authCode(t, "2188000012345678")
	if cid != "2188000012345678" {
		t.Fatalf("customerId = %q", cid)
	}
	if got := e.exchange(t, "v2", code).body.CustomerID; got != cid {
		t.Errorf("customerId = %q, want %q", got, cid)
	}
	code2, cid2 := e.sb.IssueAuthCode("")
	if !authCodeRE.MatchString(code2) || !customerRE.MatchString(cid2) {
		t.Errorf("IssueAuthCode = %q, %q", code2, cid2)
	}
	if got := e.exchange(t, "v1", code2).body.CustomerID; got != cid2 {
		t.Errorf("customerId = %q, want %q", got, cid2)
	}
	if c, id := e.sb.IssueAuthCode(strings.Repeat("9", 65)); c != "" || id != "" {
		t.Errorf("IssueAuthCode with a 65-character id = %q, %q", c, id)
	}
	if c, id := e.sb.IssueAuthCode("has space"); c != "" || id != "" {
		t.Errorf("IssueAuthCode with a space = %q, %q", c, id)
	}
}

func TestApplyTokenExpiry(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.AuthCodeTTL = time.Minute
		c.AccessTokenTTL = time.Minute
		c.RefreshTokenTTL = time.Hour
	})

	// A code works until just before its expiry.
	code, _ := e.sb.IssueAuthCode("")
	e.clock.Advance(time.Minute - time.Second)
	r := e.exchange(t, "v2", code)
	if want := rebell.FormatTime(e.clock.Now().Add(time.Minute)); r.body.AccessTokenExpiryTime != want {
		t.Errorf("accessTokenExpiryTime = %q, want %q", r.body.AccessTokenExpiryTime, want)
	}

	// A code is expired at its expiry, and still known as such for a while.
	code2, _ := e.sb.IssueAuthCode("")
	e.clock.Advance(time.Minute)
	e.apply(t, call{body: acBody(code2)}).expect(t, 200, rebell.StatusFail, rebell.CodeExpiredCode)
	// A used code stays USED_CODE after its expiry.
	e.apply(t, call{body: acBody(code)}).expect(t, 200, rebell.StatusFail, rebell.CodeUsedCode)
	e.clock.Advance(markerGrace - time.Second)
	e.apply(t, call{body: acBody(code2)}).expect(t, 200, rebell.StatusFail, rebell.CodeExpiredCode)
	// code expired a minute before code2: past its grace period and a sweep
	// it is forgotten, and so is code2 a sweep later.
	e.apply(t, call{body: acBody(code)}).expect(t, 200, rebell.StatusFail, rebell.CodeInvalidCode)
	e.clock.Advance(sweepInterval)
	e.apply(t, call{body: acBody(code2)}).expect(t, 200, rebell.StatusFail, rebell.CodeInvalidCode)

	// A refresh token expires after RefreshTokenTTL.
	code3, _ := e.sb.IssueAuthCode("")
	rt := e.exchange(t, "v1", code3).body.RefreshToken
	e.clock.Advance(time.Hour - time.Second)
	rt2 := e.apply(t, call{body: rtBody(rt)})
	rt2.expect(t, 200, rebell.StatusSuccess, rebell.CodeSuccess)
	e.apply(t, call{body: rtBody(rt)}).expect(t, 200, rebell.StatusFail, rebell.CodeUsedRefreshToken)
	e.clock.Advance(time.Hour)
	e.apply(t, call{body: rtBody(rt2.body.RefreshToken)}).expect(t, 200, rebell.StatusFail, rebell.CodeExpiredRefreshToken)
	// rt expired an hour ago, past its grace period: forgotten.
	e.apply(t, call{body: rtBody(rt)}).expect(t, 200, rebell.StatusFail, rebell.CodeInvalidRefreshToken)
	e.clock.Advance(markerGrace + sweepInterval)
	e.apply(t, call{body: rtBody(rt2.body.RefreshToken)}).expect(t, 200, rebell.StatusFail, rebell.CodeInvalidRefreshToken)
}

func TestApplyTokenUnderPrefix(t *testing.T) {
	e := newEnvAt(t, "/api/open")
	code, _ := e.authCode(t, "") // /api/open/sandbox/authcode
	if e.path("v2") != "/api/open/v2/authorizations/applyToken" {
		t.Fatalf("path = %q", e.path("v2"))
	}
	// Signed over the path without the prefix: rejected.
	e.apply(t, call{body: acBody(code), signURI: "/v2/authorizations/applyToken"}).
		expect(t, http.StatusUnauthorized, rebell.StatusFail, rebell.CodeInvalidSignature)
	// Signed over the full path: accepted, and the response is signed over it too.
	r := e.exchange(t, "v2", code)
	e.apply(t, call{version: "v1", body: rtBody(r.body.RefreshToken)}).expect(t, 200, rebell.StatusSuccess, rebell.CodeSuccess)
	// A query string is part of the signed URI.
	code2, _ := e.authCode(t, "")
	e.apply(t, call{path: "/api/open/v2/authorizations/applyToken?trace=1", body: acBody(code2)}).
		expect(t, 200, rebell.StatusSuccess, rebell.CodeSuccess)
	if resp, _ := e.do(t, http.MethodGet, "/sandbox/public-key", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("public key under the prefix: %d", resp.StatusCode)
	}
}

func TestApplyTokenUnsignedMode(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MerchantPublicKey = nil })
	code, _ := e.authCode(t, "")
	// No Signature header at all; a garbage one is not looked at either.
	e.apply(t, call{unsigned: true, body: acBody(code)}).expect(t, 200, rebell.StatusSuccess, rebell.CodeSuccess)
	e.apply(t, call{body: acBody("X"), header: func(h http.Header) { h.Set(rebell.HeaderSignature, "junk") }}).
		expect(t, 200, rebell.StatusFail, rebell.CodeInvalidCode)
	// Client-Id, Content-Type and Request-Time still are.
	wrong, _ := rebell.NewSigner("NOT_THE_CLIENT", merchantKey, 1, "")
	e.apply(t, call{unsigned: true, signer: wrong, body: acBody("X")}).
		expect(t, http.StatusUnauthorized, rebell.StatusFail, rebell.CodeInvalidAuthClient)
	e.apply(t, call{unsigned: true, at: e.clock.Now().Add(-6 * time.Minute), body: acBody("X")}).
		expect(t, http.StatusUnauthorized, rebell.StatusFail, rebell.CodeInvalidSignature)
	e.apply(t, call{unsigned: true, body: acBody("X"), header: func(h http.Header) { h.Del(rebell.HeaderRequestTime) }}).
		expect(t, http.StatusUnauthorized, rebell.StatusFail, rebell.CodeInvalidSignature)
	e.apply(t, call{unsigned: true, body: acBody("X"), header: func(h http.Header) { h.Set("Content-Type", "text/plain") }}).
		expect(t, http.StatusBadRequest, rebell.StatusFail, rebell.CodeParamIllegal)
}

// Concurrent redemptions of one code or one refresh token: exactly one wins.
func TestApplyTokenSingleUseUnderConcurrency(t *testing.T) {
	e := newEnv(t)
	code, _ := e.sb.IssueAuthCode("")
	rt := e.exchange(t, "v2", e.mustCode(t)).body.RefreshToken
	for _, body := range []string{acBody(code), rtBody(rt)} {
		const n = 8
		var wg sync.WaitGroup
		codes := make(chan string, n)
		for range n {
			wg.Go(func() {
				codes <- e.apply(t, call{body: body}).body.Result.ResultCode
			})
		}
		wg.Wait()
		close(codes)
		got := map[string]int{}
		for c := range codes {
			got[c]++
		}
		if got[rebell.CodeSuccess] != 1 || got[rebell.CodeSuccess]+got[rebell.CodeUsedCode]+got[rebell.CodeUsedRefreshToken] != n {
			t.Errorf("results of %d concurrent redemptions: %v", n, got)
		}
	}
}

func (e *env) mustCode(t *testing.T) string {
	t.Helper()
	code, _ := e.sb.IssueAuthCode("")
	if code == "" {
		t.Fatal("IssueAuthCode failed")
	}
	return code
}

// TestApplyTokenDuplicateHeaders: every header the sandbox checks says
// "appears more than once" when it is duplicated, Content-Type included
// (the official Alipay Go SDK sends application/json twice), even when
// each copy alone is valid.
func TestApplyTokenDuplicateHeaders(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		header, code string
	}{
		{rebell.HeaderClientID, rebell.CodeInvalidAuthClient},
		{"Content-Type", rebell.CodeParamIllegal},
		{rebell.HeaderRequestTime, rebell.CodeInvalidSignature},
		{rebell.HeaderSignature, rebell.CodeInvalidSignature},
	} {
		t.Run(tt.header, func(t *testing.T) {
			r := e.apply(t, call{body: acBody("NOSUCHCODE"), header: func(h http.Header) {
				if tt.header == "Content-Type" {
					h.Set("Content-Type", "application/json")
				}
				h.Add(tt.header, h.Get(tt.header))
			}})
			want := results[tt.code]
			r.expect(t, want.httpStatus, want.status, tt.code)
			if msg := r.body.Result.ResultMessage; msg != "The "+tt.header+" header appears more than once." {
				t.Errorf("resultMessage %q", msg)
			}
		})
	}
}

func TestApplyTokenMerchantKeyVersion(t *testing.T) {
	one := 1
	e := newEnv(t, func(c *Config) { c.MerchantKeyVersion = &one })
	v2, err := rebell.NewSigner(testClientID, merchantKey, 2, rebell.AlgorithmRSA256)
	if err != nil {
		t.Fatal(err)
	}
	// The right key under a keyVersion Rebell does not hold for it.
	r := e.apply(t, call{signer: v2, body: acBody("X")})
	r.expect(t, http.StatusUnauthorized, rebell.StatusFail, rebell.CodeInvalidSignature)
	if !strings.Contains(r.body.Result.ResultMessage, "keyVersion") {
		t.Errorf("resultMessage %q does not name the keyVersion", r.body.Result.ResultMessage)
	}
	// The registered version, written with a leading zero, and no version
	// at all (the latest) are accepted.
	e.apply(t, call{body: acBody("X")}).expect(t, 200, rebell.StatusFail, rebell.CodeInvalidCode)
	e.apply(t, call{body: acBody("X"), header: func(h http.Header) {
		h.Set(rebell.HeaderSignature, strings.Replace(h.Get(rebell.HeaderSignature), "keyVersion=1", "keyVersion=01", 1))
	}}).expect(t, 200, rebell.StatusFail, rebell.CodeInvalidCode)
	e.apply(t, call{body: acBody("X"), header: func(h http.Header) {
		h.Set(rebell.HeaderSignature, strings.Replace(h.Get(rebell.HeaderSignature), "keyVersion=1, ", "", 1))
	}}).expect(t, 200, rebell.StatusFail, rebell.CodeInvalidCode)

	// Without MerchantKeyVersion any version goes, as before.
	any := newEnv(t)
	any.apply(t, call{signer: v2, body: acBody("X")}).expect(t, 200, rebell.StatusFail, rebell.CodeInvalidCode)

	neg := -1
	if _, err := New(Config{MerchantKeyVersion: &neg}); err == nil {
		t.Error("a negative key version is accepted")
	}
}
