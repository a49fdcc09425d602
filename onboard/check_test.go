package onboard

import (
	"context"
	"crypto/rsa"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/sandbox"
)

const clientID = "CHECK_CLIENT"

// sandboxAt starts a sandbox on 127.0.0.1 whose clock is offset from this
// machine's by skew.
func sandboxAt(t *testing.T, skew time.Duration) *httptest.Server {
	t.Helper()
	one := 1
	sb, err := sandbox.New(sandbox.Config{
		ClientID:           clientID,
		MerchantPublicKey:  &testkeys.RSA(0).PublicKey,
		MerchantKeyVersion: &one,
		PrivateKey:         testkeys.RSA(1),
		Now:                func() time.Time { return time.Now().Add(skew) },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return srv
}

// setup returns a set-up function for a client of endpoint.
type setupOpts struct {
	endpoint   string
	merchant   *rsa.PrivateKey
	keyVersion int
	rebellKey  *rsa.PublicKey
}

func setupFor(o setupOpts) func(hc *http.Client) (*Target, error) {
	return func(hc *http.Client) (*Target, error) {
		signer, err := rebell.NewSigner(clientID, o.merchant, o.keyVersion, "")
		if err != nil {
			return nil, err
		}
		c, err := rebell.NewClient(rebell.ClientConfig{
			Endpoint: o.endpoint, Signer: signer, RebellPublicKey: o.rebellKey, HTTPClient: hc, Timeout: 5 * time.Second,
		})
		if err != nil {
			return nil, err
		}
		return &Target{ClientID: clientID, Endpoint: o.endpoint, KeyVersion: o.keyVersion,
			MerchantKeyFingerprint: Fingerprint(&o.merchant.PublicKey), Client: c}, nil
	}
}

func good(endpoint string) setupOpts {
	return setupOpts{endpoint: endpoint, merchant: testkeys.RSA(0), keyVersion: 1, rebellKey: &testkeys.RSA(1).PublicKey}
}

func check(t *testing.T, o setupOpts) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := Check(ctx, setupFor(o))
	for _, l := range r.Lines {
		if strings.Contains(l, "caddyRebellCheck") || strings.Contains(l, "BEGIN") {
			t.Errorf("the report shows a credential: %s", l)
		}
	}
	return r
}

func requireLine(t *testing.T, r *Report, parts ...string) {
	t.Helper()
	for _, l := range r.Lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return
		}
	}
	t.Errorf("no line contains all of %q:\n%s", parts, strings.Join(r.Lines, "\n"))
}

func TestCheckPass(t *testing.T) {
	srv := sandboxAt(t, 0)
	r := check(t, good(srv.URL))
	if r.Status != Pass || r.ResultCode != rebell.CodeInvalidCode {
		t.Fatalf("status %s, code %s:\n%s", r.Status, r.ResultCode, strings.Join(r.Lines, "\n"))
	}
	requireLine(t, r, "verified with rebell_public_key")
	if !r.SkewKnown || abs(r.Skew) > 2*time.Second {
		t.Errorf("skew %v (known %v) against a sandbox on this clock", r.Skew, r.SkewKnown)
	}
}

func TestCheckNoRebellKeyWarns(t *testing.T) {
	srv := sandboxAt(t, 0)
	o := good(srv.URL)
	o.rebellKey = nil
	r := check(t, o)
	if r.Status != Warn || !r.OK() {
		t.Fatalf("status %s", r.Status)
	}
	requireLine(t, r, "NOT verified")
}

// TestCheckClock runs against a sandbox whose clock is ahead: out of
// Rebell's window the INVALID_SIGNATURE is put down to the clock, with the
// offset; inside it, a large offset passes with a warning.
func TestCheckClock(t *testing.T) {
	r := check(t, good(sandboxAt(t, 10*time.Minute).URL))
	if r.Status != Fail || r.ResultCode != rebell.CodeInvalidSignature {
		t.Fatalf("status %s, code %s", r.Status, r.ResultCode)
	}
	requireLine(t, r, "INVALID_SIGNATURE", "clock is 10m0s behind")
	if abs(r.Skew-10*time.Minute) > 2*time.Second {
		t.Errorf("skew %v, want about 10m", r.Skew)
	}

	r = check(t, good(sandboxAt(t, -2*time.Minute).URL))
	if r.Status != Warn {
		t.Fatalf("2 minutes off: status %s:\n%s", r.Status, strings.Join(r.Lines, "\n"))
	}
	requireLine(t, r, "clock is 2m0s ahead")
}

func TestCheckWrongKeys(t *testing.T) {
	srv := sandboxAt(t, 0)

	o := good(srv.URL)
	o.merchant = testkeys.RSA(2)
	r := check(t, o)
	if r.Status != Fail || r.ResultCode != rebell.CodeInvalidSignature {
		t.Fatalf("wrong merchant key: %s %s", r.Status, r.ResultCode)
	}
	requireLine(t, r, "merchant private key is not the pair", "key_version 1", "The signature does not verify.")
	requireLine(t, r, Fingerprint(&testkeys.RSA(2).PublicKey))

	o = good(srv.URL)
	o.keyVersion = 3
	r = check(t, o)
	if r.Status != Fail || r.ResultCode != rebell.CodeInvalidSignature {
		t.Fatalf("wrong key version: %s %s", r.Status, r.ResultCode)
	}
	requireLine(t, r, "key_version 3 is not the version", "keyVersion")

	o = good(srv.URL)
	o.rebellKey = &testkeys.RSA(3).PublicKey
	r = check(t, o)
	if r.Status != Fail {
		t.Fatalf("wrong Rebell key: %s", r.Status)
	}
	requireLine(t, r, "does not verify with rebell_public_key", "rebell_public_key is wrong")
	requireLine(t, r, "unverified answer says INVALID_CODE")

	// Both wrong: the unverified INVALID_SIGNATURE is named too.
	o.merchant = testkeys.RSA(2)
	r = check(t, o)
	requireLine(t, r, "rebell_public_key is wrong")
	requireLine(t, r, "unverified answer also says INVALID_SIGNATURE")
}

func TestCheckNotRebell(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	o := good(srv.URL)
	o.rebellKey = nil
	r := check(t, o)
	if r.Status != Fail {
		t.Fatalf("status %s", r.Status)
	}
	requireLine(t, r, "HTTP 404 without a Rebell result")
}

func TestCheckTransport(t *testing.T) {
	// Nothing listens on a port that was just free.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := check(t, good("http://"+addr))
	if r.Status != Fail {
		t.Fatalf("status %s", r.Status)
	}
	requireLine(t, r, "connect:", addr)

	// A certificate this machine does not trust.
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	r = check(t, good(tlsSrv.URL))
	requireLine(t, r, "TLS:", "not trusted")

	// https:// to a plain HTTP port.
	plain := sandboxAt(t, 0)
	r = check(t, good(strings.Replace(plain.URL, "http://", "https://", 1)))
	requireLine(t, r, "TLS:", "does not speak TLS")

	// DNS is not asked here (tests stay on 127.0.0.1): the error a failed
	// lookup gives is named as such.
	dnsErr := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.example.invalid", IsNotFound: true}}
	if got := transportProblem(&Target{}, dnsErr); !strings.HasPrefix(got, "DNS: the host name api.example.invalid") {
		t.Errorf("DNS failure: %s", got)
	}
}

func TestCheckSetupError(t *testing.T) {
	r := check(t, setupOpts{endpoint: "ftp://x", merchant: testkeys.RSA(0)})
	if r.Status != Fail || r.Target != nil {
		t.Fatalf("status %s", r.Status)
	}
	requireLine(t, r, "does not load")
}

// fault queues one sandbox fault.
func fault(t *testing.T, srv *httptest.Server, spec string) {
	t.Helper()
	resp, err := http.Post(srv.URL+"/sandbox/faults", "application/json", strings.NewReader(spec))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("faults: %d", resp.StatusCode)
	}
}

// TestCheckUnsignedAnswers: an unsigned INVALID_SIGNATURE (Rebell may not
// sign its signature failures) is about the merchant key, not about
// rebell_public_key; any other unsigned answer is named as unsigned.
func TestCheckUnsignedAnswers(t *testing.T) {
	srv := sandboxAt(t, 0)
	fault(t, srv, `{"count":1,"resultStatus":"F","resultCode":"INVALID_SIGNATURE","httpStatus":401,"unsigned":true}`)
	r := check(t, good(srv.URL))
	if r.Status != Fail || r.ResultCode != rebell.CodeInvalidSignature {
		t.Fatalf("status %s, code %s", r.Status, r.ResultCode)
	}
	requireLine(t, r, "INVALID_SIGNATURE", "merchant private key is not the pair")
	requireLine(t, r, "carried no signature, so rebell_public_key could not be checked")
	for _, l := range r.Lines {
		if strings.Contains(l, "rebell_public_key is wrong") {
			t.Errorf("blames rebell_public_key: %s", l)
		}
	}

	fault(t, srv, `{"count":1,"resultStatus":"F","resultCode":"INVALID_CODE","httpStatus":200,"unsigned":true}`)
	r = check(t, good(srv.URL))
	requireLine(t, r, "carries no Signature header")
	requireLine(t, r, "unverified answer says INVALID_CODE")
}
