package rebell_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/sandbox"
)

// TestCancelTokenAgainstSandbox: a cancel revokes the authorization at the
// strict sandbox (the refresh token dies with it); a second cancel and an
// expired access token are "nothing left to cancel".
func TestCancelTokenAgainstSandbox(t *testing.T) {
	for _, prefix := range []string{"", "/api/open"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			e := newEnv(t, prefix)
			var observed atomic.Int64
			c := e.client(t, func(cfg *rebell.ClientConfig) {
				cfg.APIVersion = "v2" // the cancel path is v1 whatever this says
				cfg.ObserveCancel = func(result string, _ time.Duration) {
					if result == rebell.CodeSuccess {
						observed.Add(1)
					}
				}
			})
			if got, want := c.CancelURL(), e.srv.URL+prefix+"/v1/authorizations/cancelToken"; got != want {
				t.Fatalf("CancelURL = %s, want %s", got, want)
			}
			ctx := context.Background()
			code, _ := e.sb.IssueAuthCode("")
			tok, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.CancelToken(ctx, tok.AccessToken); err != nil {
				t.Fatalf("CancelToken = %v", err)
			}
			if observed.Load() != 1 {
				t.Errorf("ObserveCancel heard %d successes, want 1", observed.Load())
			}
			_, err = c.Refresh(ctx, tok.RefreshToken)
			wantKind(t, err, rebell.KindRefreshTokenDead, rebell.CodeInvalidRefreshToken)
			err = c.CancelToken(ctx, tok.AccessToken)
			re := wantKind(t, err, rebell.KindNothingToCancel, rebell.CodeInvalidAccessToken)
			if !re.Verified || re.Op != rebell.OpCancelToken || !strings.Contains(err.Error(), "cancelToken") {
				t.Errorf("second cancel: %v (verified %v, op %q)", err, re.Verified, re.Op)
			}
			st := e.sb.Stats()
			if st.CancelTokenCalls != 2 || st.AuthorizationsCancelled != 1 || st.CancelByResultCode[rebell.CodeInvalidAccessToken] != 1 {
				t.Errorf("sandbox stats: %+v", st)
			}

			// An access token that expired: nothing left to cancel with it;
			// the authorization is cancelled with the refreshed one.
			code, _ = e.sb.IssueAuthCode("")
			tok, _ = c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
			e.clock.Advance(31 * time.Minute)
			wantKind(t, c.CancelToken(ctx, tok.AccessToken), rebell.KindNothingToCancel, rebell.CodeExpiredAccessToken)
			fresh, err := c.Refresh(ctx, tok.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.CancelToken(ctx, fresh.AccessToken); err != nil {
				t.Fatalf("cancel of the refreshed token = %v", err)
			}
			_, err = c.Refresh(ctx, fresh.RefreshToken)
			wantKind(t, err, rebell.KindRefreshTokenDead, rebell.CodeInvalidRefreshToken)
		})
	}
}

// TestCancelTokenResultCodes: every result code of cancelToken, injected
// at the sandbox, is typed: U codes are retried, F codes are final, the two
// access token codes are nothing left to cancel.
func TestCancelTokenResultCodes(t *testing.T) {
	e := newEnv(t, "")
	c := e.client(t, nil) // Retries 2
	cases := []struct {
		status, code string
		kind         rebell.Kind
		attempts     int
	}{
		{"F", rebell.CodeProcessFail, rebell.KindConfiguration, 1},
		{"F", rebell.CodeParamIllegal, rebell.KindConfiguration, 1},
		{"F", rebell.CodeAccessDenied, rebell.KindConfiguration, 1},
		{"F", rebell.CodeInvalidAPI, rebell.KindConfiguration, 1},
		{"F", rebell.CodeInvalidAuthClientStatus, rebell.KindConfiguration, 1},
		{"F", rebell.CodeInvalidAccessToken, rebell.KindNothingToCancel, 1},
		{"F", rebell.CodeInvalidAuthClient, rebell.KindConfiguration, 1},
		{"F", rebell.CodeExpiredAccessToken, rebell.KindNothingToCancel, 1},
		{"F", rebell.CodeExpiredAgentToken, rebell.KindConfiguration, 1},
		{"F", rebell.CodeInvalidAgentToken, rebell.KindConfiguration, 1},
		{"U", rebell.CodeUnknownException, rebell.KindRetryable, 3},
		{"U", rebell.CodeRequestTrafficExceedLimit, rebell.KindRetryable, 3},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			if !rebell.KnownResultCode(tc.code) || rebell.MetricCode(tc.code) != tc.code {
				t.Errorf("%s is not its own metric label", tc.code)
			}
			e.fault(t, fmt.Sprintf(`{"call":"cancelToken","count":3,"resultStatus":%q,"resultCode":%q}`, tc.status, tc.code))
			t.Cleanup(func() { clearFaults(t, e) })
			err := c.CancelToken(context.Background(), rebell.NewSecret("SBXATwhatever"))
			re := wantKind(t, err, tc.kind, tc.code)
			if re.Attempts != tc.attempts || !re.Verified {
				t.Errorf("attempts %d verified %v, want %d true", re.Attempts, re.Verified, tc.attempts)
			}
			if rebell.MetricResult(err) != tc.code {
				t.Errorf("MetricResult = %s", rebell.MetricResult(err))
			}
		})
	}
	// A U fault once, then the real answer: the retry reaches the sandbox.
	e.fault(t, `{"call":"cancelToken","resultStatus":"U","resultCode":"UNKNOWN_EXCEPTION"}`)
	err := c.CancelToken(context.Background(), rebell.NewSecret("SBXATunknown"))
	if re := wantKind(t, err, rebell.KindNothingToCancel, rebell.CodeInvalidAccessToken); re.Attempts != 2 {
		t.Errorf("attempts %d, want 2", re.Attempts)
	}
	// A forged signature on a cancel is KindBadSignature, its claim kept
	// for the operator only.
	e.fault(t, `{"call":"cancelToken","count":3,"resultStatus":"S","resultCode":"SUCCESS","forgeSignature":true}`)
	err = c.CancelToken(context.Background(), rebell.NewSecret("SBXATforged"))
	if re := wantKind(t, err, rebell.KindBadSignature, rebell.CodeSuccess); re.Verified || rebell.VerifiedResultCode(err) != "" {
		t.Errorf("unverified answer counted as verified: %v", err)
	}
	clearFaults(t, e)
}

func clearFaults(t *testing.T, e *env) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, e.srv.URL+e.prefix+"/sandbox/faults", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestCancelTokenRequest: the request is the documented body, signed like
// applyToken, and no error names the token.
func TestCancelTokenRequest(t *testing.T) {
	const secret = "AT-do-not-print-me"
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 1024)
		n, _ := r.Body.Read(b)
		body.Store(r.URL.Path + " " + string(b[:n]) + " " + r.Header.Get(rebell.HeaderSignature))
		http.Error(w, "down", http.StatusBadGateway)
	}))
	t.Cleanup(srv.Close)
	c, err := rebell.NewClient(rebell.ClientConfig{Endpoint: srv.URL + "/p", Signer: mustSigner(t), APIVersion: "v1", BackoffBase: time.Millisecond, BackoffMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = c.CancelToken(context.Background(), rebell.NewSecret(secret))
	if rebell.ErrorKind(err) != rebell.KindRetryable {
		t.Fatalf("502: %v", err)
	}
	got := body.Load().(string)
	if !strings.HasPrefix(got, `/p/v1/authorizations/cancelToken {"accessToken":"`+secret+`"} algorithm=`) {
		t.Errorf("request: %s", got)
	}
	if s := fmt.Sprintf("%v %+v %#v", err, err, err); strings.Contains(s, secret) {
		t.Errorf("error prints the token: %s", s)
	}
	if err := c.CancelToken(context.Background(), rebell.Secret{}); rebell.ErrorKind(err) != rebell.KindNothingToCancel {
		t.Errorf("empty token: %v", err)
	}
	if err := c.CancelToken(context.Background(), rebell.NewSecret(strings.Repeat("a", 129))); rebell.ErrorKind(err) != rebell.KindConfiguration {
		t.Errorf("long token: %v", err)
	}
	if err := rebell.ParseCancelTokenResponse(200, []byte(`{"result":{"resultStatus":"S","resultCode":"SUCCESS","resultMessage":"ok"}}`)); err != nil {
		t.Errorf("SUCCESS: %v", err)
	}
	if err := rebell.ParseCancelTokenResponse(200, []byte(`{"result":`)); rebell.ErrorKind(err) != rebell.KindBadResponse {
		t.Errorf("truncated: %v", err)
	}
	if err := rebell.ParseCancelTokenResponse(400, []byte(`<html>`)); rebell.ErrorKind(err) != rebell.KindConfiguration {
		t.Errorf("HTTP 400 without result: %v", err)
	}
}

// BenchmarkCancelTokenRoundTrip measures one signed, verified cancelToken
// against the sandbox over loopback HTTP.
func BenchmarkCancelTokenRoundTrip(b *testing.B) {
	clk := &clock{now: time.Now()}
	sb, err := sandbox.New(sandbox.Config{ClientID: "MERCHANT_1", MerchantPublicKey: &key(b, 0).PublicKey, PrivateKey: key(b, 1), Now: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	defer srv.Close()
	signer, _ := rebell.NewSigner("MERCHANT_1", key(b, 0), 1, "")
	c, _ := rebell.NewClient(rebell.ClientConfig{Endpoint: srv.URL, Signer: signer, RebellPublicKey: &key(b, 1).PublicKey})
	tokens := make([]rebell.Secret, b.N)
	for i := range tokens {
		code, _ := sb.IssueAuthCode("")
		tok, err := c.ExchangeAuthCode(context.Background(), rebell.NewSecret(code))
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = tok.AccessToken
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.CancelToken(context.Background(), tokens[i]); err != nil {
			b.Fatal(err)
		}
	}
}
