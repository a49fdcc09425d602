package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// sandboxSite is a Caddyfile site with the sandbox at the root of port and,
// on prefixPort, under /api/open.
func sandboxSite(kf keyFiles, port, prefixPort int, extra string) string {
	block := fmt.Sprintf(`rebell_sandbox {
		client_id MERCHANT_IT
		merchant_public_key_file %s
		private_key_file %s
		%s
	}`, kf.MerchantPublic, kf.PlatformPrivate, extra)
	s := fmt.Sprintf("http://127.0.0.1:%d {\n\t%s\n}\n", port, block)
	if prefixPort != 0 {
		s += fmt.Sprintf("http://127.0.0.1:%d {\n\thandle /api/open/* {\n\t\t%s\n\t}\n\trespond 404\n}\n", prefixPort, block)
	}
	return s
}

func postJSON(t testing.TB, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func issueCode(t testing.TB, base, customerID string) string {
	t.Helper()
	req := `{"scopes":["auth_user"]}`
	if customerID != "" {
		req = fmt.Sprintf(`{"customerId":%q,"scopes":["auth_user"]}`, customerID)
	}
	status, body := postJSON(t, base+"/sandbox/authcode", req)
	if status != http.StatusOK {
		t.Fatalf("authcode: %d %s", status, body)
	}
	var out struct{ AuthCode, CustomerID string }
	if err := json.Unmarshal(body, &out); err != nil || out.AuthCode == "" {
		t.Fatalf("authcode body %s: %v", body, err)
	}
	return out.AuthCode
}

// sandboxStats are the counters of the sandbox's /sandbox/stats.
type sandboxStats struct {
	ApplyTokenCalls int64                       `json:"applyTokenCalls"`
	ByGrantType     map[string]map[string]int64 `json:"byGrantType"`
	ByResultCode    map[string]int64            `json:"byResultCode"`
	// The cancelToken counters.
	CancelTokenCalls        int64            `json:"cancelTokenCalls"`
	CancelByResultCode      map[string]int64 `json:"cancelByResultCode"`
	AuthorizationsCancelled int64            `json:"authorizationsCancelled"`
	LiveRefreshTokens       int              `json:"liveRefreshTokens"`
}

func getStats(t testing.TB, base string) sandboxStats {
	t.Helper()
	resp, err := http.Get(base + "/sandbox/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st sandboxStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestSandboxDirectiveThroughCaddy drives the rebell_sandbox directive in a
// real Caddy with the merchant client: codes, refresh and rotation, faults,
// stats, response signatures verified with the key from /sandbox/public-key,
// and a path prefix.
func TestSandboxDirectiveThroughCaddy(t *testing.T) {
	kf := writeKeys(t, t.TempDir())
	port, prefixPort := freePort(t), freePort(t)
	startCaddy(t, sandboxSite(kf, port, prefixPort, "access_token_ttl 10m"), port, prefixPort)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	// The public key the sandbox serves is the platform key.
	resp, err := http.Get(base + "/sandbox/public-key")
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pub, err := rebell.ParsePublicKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	_, platform := testKeys(t)
	if !pub.Equal(&platform.PublicKey) {
		t.Fatal("/sandbox/public-key is not the configured key")
	}

	merchant, _ := testKeys(t)
	signer, _ := rebell.NewSigner("MERCHANT_IT", merchant, 1, "")
	for _, tc := range []struct{ name, endpoint, version string }{
		{"v2", base, "v2"},
		{"v1", base, "v1"},
		{"v2 prefix", fmt.Sprintf("http://127.0.0.1:%d/api/open", prefixPort), "v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := rebell.NewClient(rebell.ClientConfig{Endpoint: tc.endpoint, Signer: signer, RebellPublicKey: pub, APIVersion: tc.version, Retries: 1, BackoffBase: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			code := issueCode(t, base, "2188000000000007")
			tok, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code))
			if err != nil {
				t.Fatal(err)
			}
			if tok.CustomerID != "2188000000000007" {
				t.Errorf("customer %q", tok.CustomerID)
			}
			if d := time.Until(tok.AccessTokenExpiry); d < 9*time.Minute || d > 11*time.Minute {
				t.Errorf("access_token_ttl not applied: expires in %v", d)
			}
			if _, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code)); rebell.ResultCodeOf(err) != "USED_CODE" {
				t.Errorf("reused code: %v", err)
			}
			tok2, err := c.Refresh(ctx, tok.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if tok2.RefreshToken.Equal(tok.RefreshToken) {
				t.Error("refresh token not rotated")
			}
			if _, err := c.Refresh(ctx, tok.RefreshToken); rebell.ResultCodeOf(err) != "USED_REFRESH_TOKEN" {
				t.Errorf("reused refresh token: %v", err)
			}
		})
	}

	// Faults and stats through Caddy.
	if status, body := postJSON(t, base+"/sandbox/faults", `{"count":1,"resultStatus":"F","resultCode":"ACCESS_DENIED"}`); status != 200 {
		t.Fatalf("faults: %d %s", status, body)
	}
	c, _ := rebell.NewClient(rebell.ClientConfig{Endpoint: base, Signer: signer, RebellPublicKey: pub})
	code := issueCode(t, base, "")
	if _, err := c.ExchangeAuthCode(context.Background(), rebell.NewSecret(code)); rebell.ResultCodeOf(err) != "ACCESS_DENIED" {
		t.Fatalf("fault not applied: %v", err)
	}
	st := getStats(t, base)
	if st.ByGrantType["AUTHORIZATION_CODE"]["SUCCESS"] != 3 || st.ByGrantType["REFRESH_TOKEN"]["SUCCESS"] != 3 ||
		st.ByResultCode["USED_CODE"] != 3 || st.ByResultCode["ACCESS_DENIED"] != 1 {
		t.Errorf("stats %+v", st)
	}
	req, _ := http.NewRequest(http.MethodDelete, base+"/sandbox/faults", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE faults: %v %v", err, resp)
	}
}
