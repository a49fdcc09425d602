package onboard

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// RebellClockWindow is how far Request-Time may be from Rebell's clock
// before Rebell rejects the request as INVALID_SIGNATURE (docs/protocol.md;
// the sandbox enforces the same window).
const RebellClockWindow = 5 * time.Minute

// skewWarning is the clock offset from which a passing check still warns.
const skewWarning = time.Minute

// Target is one configured Rebell client to check: one rebell_auth
// directive, set up exactly as the gateway would set it up.
type Target struct {
	// ClientID, Endpoint and KeyVersion are the configured values, printed
	// as they are (none is secret).
	ClientID   string
	Endpoint   string
	KeyVersion int
	// MerchantKeyFingerprint is Fingerprint of the merchant key's public
	// half, printed so it can be compared with the key registered at Rebell.
	MerchantKeyFingerprint string
	// Client is the gateway's applyToken client. It must make a single
	// attempt (no retries) and send through the *http.Client given to the
	// set-up function.
	Client *rebell.Client
}

// Status is the outcome of a check.
type Status int

// The outcomes of a check.
const (
	// Pass: Rebell accepted the merchant's credentials and its answer
	// verified.
	Pass Status = iota
	// Warn: Rebell accepted the credentials, but something needs attention
	// (responses not verified, clock drifting).
	Warn
	// Fail: the configuration does not work; Lines say why.
	Fail
)

func (s Status) String() string {
	switch s {
	case Pass:
		return "PASS"
	case Warn:
		return "WARN"
	}
	return "FAIL"
}

// Report is what one check found.
type Report struct {
	// Status is the verdict.
	Status Status
	// Lines explain it in plain words, most important first. They never
	// contain a key, a token, an auth code or a signature.
	Lines []string
	// ResultCode is Rebell's resultCode, "" without one.
	ResultCode string
	// Target is what was checked; nil when it could not be set up.
	Target *Target
	// Skew is Rebell's clock minus this machine's, measured from the
	// response's Response-Time; valid when SkewKnown.
	Skew      time.Duration
	SkewKnown bool
}

// OK reports whether the configuration works (Pass or Warn).
func (r *Report) OK() bool { return r.Status != Fail }

func (r *Report) add(format string, args ...any) {
	r.Lines = append(r.Lines, fmt.Sprintf(format, args...))
}

// Check sets up a Target with setup, which must send through the given
// *http.Client, then makes one real, signed applyToken call with a made-up
// auth code and explains the answer. Only an authenticated request can be
// told that an auth code is invalid, so INVALID_CODE (or EXPIRED_CODE,
// USED_CODE) with a verified signature proves client id, merchant key, key
// version and Rebell public key at once; every other answer says which of
// them is wrong.
func Check(ctx context.Context, setup func(hc *http.Client) (*Target, error)) *Report {
	rec := &recorder{base: http.DefaultTransport.(*http.Transport).Clone()}
	defer rec.base.CloseIdleConnections()
	hc := &http.Client{
		Transport: rec,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	r := &Report{}
	t, err := setup(hc)
	if err != nil {
		r.Status = Fail
		r.add("the configuration does not load: %v", err)
		return r
	}
	r.Target = t
	_, err = t.Client.ExchangeAuthCode(ctx, rebell.NewSecret(madeUpAuthCode()))
	rec.measureSkew(r)
	diagnose(r, t, err)
	if r.SkewKnown {
		r.clockLine()
	}
	return r
}

// madeUpAuthCode returns an auth code that Rebell never issued, in the form
// of a real one, so the request passes every check except the code's.
func madeUpAuthCode() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "caddyRebellCheck" + hex.EncodeToString(b)
}

// diagnose turns the answer to the made-up auth code into r's verdict.
func diagnose(r *Report, t *Target, err error) {
	if err == nil {
		r.Status = Fail
		r.add("the endpoint issued tokens for an auth code that was made up: it does not behave like Rebell's OpenAPI; check endpoint")
		return
	}
	var re *rebell.Error
	if !errors.As(err, &re) {
		r.Status = Fail
		r.add("the call failed: %v", err)
		return
	}
	r.ResultCode = re.ResultCode
	said := rebellSaid(re)
	switch re.Kind {
	case rebell.KindAuthCodeRejected:
		r.add("Rebell answered %s to a made-up auth code, which it only does for a request it authenticated: client_id %s, the merchant private key and key_version %d are accepted", re.ResultCode, t.ClientID, t.KeyVersion)
		if t.Client.VerifiesResponses() {
			r.add("the response's signature verified with rebell_public_key")
		} else {
			r.Status = Warn
			r.add("responses are NOT verified: no rebell_public_key or rebell_public_key_file is set, so the gateway would trust any answer; set Rebell's platform public key")
		}
	case rebell.KindBadSignature:
		r.Status = Fail
		var se *rebell.SignatureError
		unsigned := errors.As(re.Err, &se) && se.Problem == rebell.SignatureMissing
		if unsigned && re.ResultCode == rebell.CodeInvalidSignature {
			// Rebell may leave a signature failure unsigned: the answer
			// is about the request, and says nothing of rebell_public_key.
			configurationProblem(r, t, re, said)
			r.add("the answer carried no signature, so rebell_public_key could not be checked")
			return
		}
		if unsigned {
			r.add("the response carries no Signature header, so it cannot be verified with rebell_public_key: is endpoint Rebell's OpenAPI, and does nothing in between drop headers?")
		} else {
			r.add("the response's signature %s with rebell_public_key: rebell_public_key is wrong (not Rebell's platform key for this endpoint; sandbox and production keys differ)", signatureProblem(re))
		}
		switch {
		case re.ResultCode == "":
		case rebell.Classify(re.ResultStatus, re.ResultCode) == rebell.KindAuthCodeRejected:
			r.add("the unverified answer says %s, so the request itself (client id, merchant key, key version) looks accepted", re.ResultCode)
		case re.ResultCode == rebell.CodeInvalidSignature:
			r.add("the unverified answer also says INVALID_SIGNATURE: the merchant private key or key_version %d may be wrong as well%s", t.KeyVersion, said)
		default:
			r.add("the unverified answer says %s%s", re.ResultCode, said)
		}
	case rebell.KindConfiguration:
		r.Status = Fail
		configurationProblem(r, t, re, said)
	case rebell.KindBadResponse:
		r.Status = Fail
		r.add("the endpoint's answer is not an applyToken response (%v): is endpoint the base URL of Rebell's OpenAPI, with its path prefix?", re.Err)
	case rebell.KindRetryable:
		r.Status = Fail
		if re.HTTPStatus == 0 && re.ResultCode == "" {
			r.add("%s", transportProblem(t, re.Err))
			return
		}
		what := fmt.Sprintf("HTTP %d", re.HTTPStatus)
		if re.ResultCode != "" {
			what = re.ResultStatus + " " + re.ResultCode
		}
		r.add("Rebell cannot answer right now (%s)%s: nothing about the configuration could be checked; try again later", what, said)
	default:
		r.Status = Fail
		r.add("unexpected answer: %v", err)
	}
}

// configurationProblem explains an F result to the made-up auth code.
func configurationProblem(r *Report, t *Target, re *rebell.Error, said string) {
	switch re.ResultCode {
	case rebell.CodeInvalidSignature:
		if r.SkewKnown && abs(r.Skew) > RebellClockWindow-5*time.Second {
			r.add("INVALID_SIGNATURE: this machine's clock is %s; Rebell refuses a Request-Time more than %s away. Fix the clock (NTP), then check again%s",
				skewPhrase(r.Skew), RebellClockWindow, said)
			return
		}
		r.add("INVALID_SIGNATURE: Rebell could not verify the request's signature for client_id %s. Either the merchant private key is not the pair of the public key registered for this client id in Rebell's console, or key_version %d is not the version Rebell gave that key%s",
			t.ClientID, t.KeyVersion, said)
		if t.MerchantKeyFingerprint != "" {
			r.add("the configured private key's public half has SHA-256 fingerprint %s (`openssl pkey -pubin -in merchant-public.pem -outform DER | sha256sum` gives the same for the registered one)", t.MerchantKeyFingerprint)
		}
	case rebell.CodeInvalidAuthClient:
		r.add("INVALID_AUTH_CLIENT: Rebell does not know client_id %s at %s (sandbox and production credentials are separate)%s", t.ClientID, t.Endpoint, said)
	case rebell.CodeAccessDenied:
		r.add("ACCESS_DENIED: client_id %s may not call applyToken; ask Rebell to enable user authorization for it%s", t.ClientID, said)
	case rebell.CodeAuthClientUnsupportedGrantType:
		r.add("AUTH_CLIENT_UNSUPPORTED_GRANT_TYPE: client_id %s is not enabled for the authorization-code grant%s", t.ClientID, said)
	case rebell.CodeReferenceClientIDNotMatch:
		r.add("REFERENCE_CLIENT_ID_NOT_MATCH: reference_client_id does not belong to client_id %s%s", t.ClientID, said)
	case rebell.CodeParamIllegal:
		r.add("PARAM_ILLEGAL: Rebell refused the request's parameters; check api_version, reference_client_id and customer_belongs_to%s", said)
	case "":
		r.add("the endpoint answered HTTP %d without a Rebell result: is endpoint (%s) the base URL of Rebell's OpenAPI, with its path prefix?", re.HTTPStatus, t.Endpoint)
	default:
		r.add("Rebell refused the request: %s %s%s", re.ResultStatus, re.ResultCode, said)
	}
}

// rebellSaid quotes Rebell's resultMessage, if any, for a diagnosis line.
func rebellSaid(re *rebell.Error) string {
	msg := strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return -1
		}
		return c
	}, re.ResultMessage)
	if msg == "" {
		return ""
	}
	return fmt.Sprintf(" (Rebell says: %q)", msg)
}

func signatureProblem(re *rebell.Error) string {
	var se *rebell.SignatureError
	if !errors.As(re.Err, &se) {
		return "does not verify"
	}
	switch se.Problem {
	case rebell.SignatureMissing:
		return "is missing (no Signature header), so it cannot be verified"
	case rebell.SignatureUnreadable:
		return "cannot be read, so it cannot be verified"
	case rebell.SignatureUnverifiable:
		return "lacks a header it covers, so it cannot be verified"
	}
	return "does not verify"
}

// transportProblem names the layer where a request without an answer failed.
func transportProblem(t *Target, err error) string {
	var (
		dnsErr   *net.DNSError
		certErr  *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalid  x509.CertificateInvalidError
		recErr   tls.RecordHeaderError
		alertErr tls.AlertError
		opErr    *net.OpError
	)
	switch {
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return fmt.Sprintf("DNS: the host name %s in endpoint does not resolve (no such host)", dnsErr.Name)
		}
		return fmt.Sprintf("DNS: looking up %s failed: %v", dnsErr.Name, dnsErr.Err)
	case errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &hostErr), errors.As(err, &invalid):
		return fmt.Sprintf("TLS: the server's certificate for %s is not trusted: %v", t.Endpoint, err)
	case errors.As(err, &recErr) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Sprintf("TLS: the server at %s does not speak TLS (is endpoint https:// on a plain HTTP port?)", t.Endpoint)
	case errors.As(err, &alertErr):
		return fmt.Sprintf("TLS: the handshake with %s failed: %v", t.Endpoint, err)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		if opErr.Timeout() {
			return fmt.Sprintf("connect: no answer from %s before the timeout (a firewall, or a wrong address)", opErr.Addr)
		}
		return fmt.Sprintf("connect: cannot connect to %s: %v", opErr.Addr, opErr.Err)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Sprintf("timeout: %s accepted the connection but did not answer in time", t.Endpoint)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("connection: %s closed the connection without answering (is endpoint http:// on a TLS port?)", t.Endpoint)
	}
	return fmt.Sprintf("transport: the request to %s failed: %v", t.Endpoint, err)
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// clockLine adds the measured clock offset, and warns when it is large.
func (r *Report) clockLine() {
	switch d := abs(r.Skew); {
	case d > RebellClockWindow-5*time.Second:
		if r.ResultCode != rebell.CodeInvalidSignature {
			r.add("clock: this machine's clock is %s: outside Rebell's %s window; fix it (NTP)", skewPhrase(r.Skew), RebellClockWindow)
			if r.Status == Pass {
				r.Status = Warn
			}
		}
	case d >= skewWarning:
		r.add("clock: this machine's clock is %s; Rebell refuses requests more than %s off; fix it (NTP)", skewPhrase(r.Skew), RebellClockWindow)
		if r.Status == Pass {
			r.Status = Warn
		}
	case d >= 2*time.Second:
		r.add("clock: this machine's clock is %s (Rebell accepts up to %s)", skewPhrase(r.Skew), RebellClockWindow)
	default:
		r.add("clock: in step with Rebell's (Response-Time), within a second or two")
	}
}

// skewPhrase says which way this machine's clock is off.
func skewPhrase(skew time.Duration) string {
	d := abs(skew).Round(time.Second)
	if skew > 0 {
		return fmt.Sprintf("%s behind Rebell's", d)
	}
	return fmt.Sprintf("%s ahead of Rebell's", d)
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// recorder is a RoundTripper that remembers when the (single) request went
// out and came back and the response's Response-Time, to measure the clock
// offset. It keeps no header or body.
type recorder struct {
	base *http.Transport

	mu                 sync.Mutex
	sent, received     time.Time
	responseTime       string
	haveResponseHeader bool
}

func (rc *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := time.Now()
	resp, err := rc.base.RoundTrip(req)
	received := time.Now()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.sent, rc.received = sent, received
	if err == nil {
		rc.haveResponseHeader = true
		rc.responseTime = resp.Header.Get(rebell.HeaderResponseTime)
	}
	return resp, err
}

// measureSkew sets r.Skew from the Response-Time of the answer: Rebell's
// clock minus this machine's at the middle of the round trip. The header has
// a one-second resolution.
func (rc *recorder) measureSkew(r *Report) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !rc.haveResponseHeader {
		return
	}
	r.Skew, r.SkewKnown = rebell.MeasureSkew(rc.sent, rc.received, rc.responseTime)
}
