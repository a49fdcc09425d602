package rebell

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const okBody = `{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"},` +
	`"accessToken":"at_1","accessTokenExpiryTime":"2025-03-14T10:26:53+01:00",` +
	`"refreshToken":"rt_1","refreshTokenExpiryTime":"2025-04-13T09:26:53Z","customerId":"2088000000000001"}`

func TestParseApplyTokenSuccess(t *testing.T) {
	tok, err := ParseApplyTokenResponse(200, []byte(okBody), GrantAuthorizationCode)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken.Reveal() != "at_1" || tok.RefreshToken.Reveal() != "rt_1" || tok.CustomerID != "2088000000000001" {
		t.Fatalf("token: %+v", tok)
	}
	if want := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC); !tok.AccessTokenExpiry.Equal(want) {
		t.Errorf("access expiry %v, want %v (offsets honoured)", tok.AccessTokenExpiry, want)
	}
	// A refresh answer may leave out the refresh token and customer id.
	tok, err = ParseApplyTokenResponse(200, []byte(`{"result":{"resultCode":"SUCCESS","resultStatus":"S"},"accessToken":"a","accessTokenExpiryTime":"2025-03-14T09:26:53.5Z"}`), GrantRefreshToken)
	if err != nil || !tok.RefreshToken.IsZero() {
		t.Fatalf("refresh without refresh token: %v %+v", err, tok)
	}
}

func TestParseApplyTokenResults(t *testing.T) {
	cases := []struct {
		status, code string
		kind         Kind
	}{
		{"F", "INVALID_CODE", KindAuthCodeRejected},
		{"F", "EXPIRED_CODE", KindAuthCodeRejected},
		{"F", "USED_CODE", KindAuthCodeRejected},
		{"F", "INVALID_REFRESH_TOKEN", KindRefreshTokenDead},
		{"F", "EXPIRED_REFRESH_TOKEN", KindRefreshTokenDead},
		{"F", "USED_REFRESH_TOKEN", KindRefreshTokenDead},
		{"F", "INVALID_AUTH_CLIENT", KindConfiguration},
		{"F", "ACCESS_DENIED", KindConfiguration},
		{"F", "PARAM_ILLEGAL", KindConfiguration},
		{"F", "AUTH_CLIENT_UNSUPPORTED_GRANT_TYPE", KindConfiguration},
		{"F", "REFERENCE_CLIENT_ID_NOT_MATCH", KindConfiguration},
		{"F", "SOMETHING_NEW", KindConfiguration},
		{"F", "INVALID_SIGNATURE", KindConfiguration},
		{"U", "UNKNOWN_EXCEPTION", KindRetryable},
		{"F", "UNKNOWN_EXCEPTION", KindRetryable},
		{"U", "REQUEST_TRAFFIC_EXCEED_LIMIT", KindRetryable},
		{"U", "ANYTHING", KindRetryable},
		{"A", "ACCEPTED", KindRetryable},
		{"R", "WHATEVER", KindRetryable},
		{"S", "NOT_SUCCESS", KindRetryable},
	}
	for _, tc := range cases {
		body := `{"result":{"resultStatus":"` + tc.status + `","resultCode":"` + tc.code + `","resultMessage":"m"}}`
		_, err := ParseApplyTokenResponse(200, []byte(body), GrantAuthorizationCode)
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%s %s: %v", tc.status, tc.code, err)
		}
		if e.Kind != tc.kind || e.ResultCode != tc.code || e.ResultStatus != tc.status || e.ResultMessage != "m" {
			t.Errorf("%s %s: got %v", tc.status, tc.code, e)
		}
		// A metric label takes a known code, or one value for every other.
		label := tc.code
		if !KnownResultCode(tc.code) {
			label = ResultOtherCode
		}
		if ErrorKind(err) != tc.kind || ResultCodeOf(err) != tc.code || MetricResult(err) != label {
			t.Errorf("%s %s: helpers disagree (metric %q)", tc.status, tc.code, MetricResult(err))
		}
	}
}

func TestParseApplyTokenBadResponses(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := map[string]string{
		"empty":               ``,
		"not json":            `<html>oops</html>`,
		"array":               `[]`,
		"trailing data":       okBody + `{}`,
		"no result":           `{"accessToken":"a"}`,
		"result not object":   `{"result":"S"}`,
		"no status":           `{"result":{"resultCode":"SUCCESS"}}`,
		"no code":             `{"result":{"resultStatus":"S"}}`,
		"code too long":       `{"result":{"resultStatus":"F","resultCode":"` + strings.Repeat("A", 65) + `"}}`,
		"code lower case":     `{"result":{"resultStatus":"F","resultCode":"used_code"}}`,
		"message too long":    `{"result":{"resultStatus":"F","resultCode":"X","resultMessage":"` + long(257) + `"}}`,
		"no access token":     `{"result":{"resultStatus":"S","resultCode":"SUCCESS"},"accessTokenExpiryTime":"2025-03-14T09:26:53Z","refreshToken":"r","refreshTokenExpiryTime":"2025-03-14T09:26:53Z","customerId":"c"}`,
		"token too long":      strings.Replace(okBody, `"at_1"`, `"`+long(129)+`"`, 1),
		"refresh too long":    strings.Replace(okBody, `"rt_1"`, `"`+long(129)+`"`, 1),
		"customer too long":   strings.Replace(okBody, `"2088000000000001"`, `"`+long(65)+`"`, 1),
		"no customer":         strings.Replace(okBody, `,"customerId":"2088000000000001"`, ``, 1),
		"bad expiry":          strings.Replace(okBody, `2025-03-14T10:26:53+01:00`, `14/03/2025`, 1),
		"expiry without zone": strings.Replace(okBody, `2025-03-14T10:26:53+01:00`, `2025-03-14T10:26:53`, 1),
		"no refresh expiry":   strings.Replace(okBody, `,"refreshTokenExpiryTime":"2025-04-13T09:26:53Z"`, ``, 1),
		"no refresh token":    strings.Replace(okBody, `"refreshToken":"rt_1",`, ``, 1),
		"token wrong type":    strings.Replace(okBody, `"at_1"`, `42`, 1),
		"too large":           `{"result":{"resultStatus":"S","resultCode":"SUCCESS"},"x":"` + long(MaxResponseBytes) + `"}`,
		"extendInfo too long": strings.Replace(okBody, `{"result"`, `{"extendInfo":"`+long(4097)+`","result"`, 1),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseApplyTokenResponse(200, []byte(body), GrantAuthorizationCode)
			if ErrorKind(err) != KindBadResponse {
				t.Fatalf("got %v, want a bad response", err)
			}
			if strings.Contains(err.Error(), "at_1") || strings.Contains(err.Error(), "rt_1") {
				t.Fatalf("error quotes a token: %v", err)
			}
		})
	}
	// SUCCESS on a non-2xx status is not a success.
	if _, err := ParseApplyTokenResponse(400, []byte(okBody), GrantAuthorizationCode); ErrorKind(err) != KindBadResponse {
		t.Errorf("SUCCESS with 400: %v", err)
	}
	// An HTTP error without a result is the merchant's problem, not a token.
	if _, err := ParseApplyTokenResponse(401, []byte("Unauthorized"), GrantAuthorizationCode); ErrorKind(err) != KindConfiguration {
		t.Errorf("401 without result: %v", err)
	}
}

// TestKnownResultCodes: every code the gateway names is known, so it is
// its own metric label; a made-up one is not.
func TestKnownResultCodes(t *testing.T) {
	for _, code := range []string{CodeSuccess, CodeUnknownException, CodeRequestTrafficExceedLimit,
		CodeParamIllegal, CodeProcessFail, CodeAccessDenied, CodeInvalidAuthClient,
		CodeAuthClientUnsupportedGrantType, CodeReferenceClientIDNotMatch, CodeInvalidCode,
		CodeExpiredCode, CodeUsedCode, CodeInvalidRefreshToken, CodeExpiredRefreshToken,
		CodeUsedRefreshToken, CodeInvalidSignature} {
		if !KnownResultCode(code) || MetricCode(code) != code {
			t.Errorf("%s is not its own label", code)
		}
	}
	for _, code := range []string{"SOMETHING_NEW", "A1B2C3", ""} {
		if MetricCode(code) != ResultOtherCode {
			t.Errorf("%q labels as %q", code, MetricCode(code))
		}
	}
}
