package rebell

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Defaults of ClientConfig.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultBackoffBase = 200 * time.Millisecond
	DefaultBackoffMax  = 2 * time.Second
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Endpoint is the OpenAPI base URL, e.g. https://api.rebellapp.com or
	// https://host/api/open. A path prefix is kept and signed.
	Endpoint string
	// Signer signs requests as the merchant (Client-Id and private key).
	Signer *Signer
	// RebellPublicKey verifies response signatures. When it and
	// RebellPublicKeys are empty, responses are not verified; otherwise a
	// response without a signature that one of them verifies is an error
	// of KindBadSignature, never a success.
	RebellPublicKey *rsa.PublicKey
	// RebellPublicKeys are more keys that verify response signatures, tried
	// after RebellPublicKey: a response verifies if any key verifies it, so
	// a key Rebell is rotating to can be configured before Rebell switches.
	RebellPublicKeys []*rsa.PublicKey
	// APIVersion is "v1" or "v2" ("" means v2).
	APIVersion string
	// ReferenceClientID is sent as referenceClientId (v2 only).
	ReferenceClientID string
	// CustomerBelongsTo is sent in extendInfo as {"customerBelongsTo":...}.
	CustomerBelongsTo string
	// Timeout bounds one attempt (0 means DefaultTimeout).
	Timeout time.Duration
	// Retries is how many extra attempts a retryable failure gets.
	Retries int
	// BackoffBase and BackoffMax shape the exponential backoff with full
	// jitter between attempts (0 means the defaults).
	BackoffBase, BackoffMax time.Duration
	// HTTPClient sends the requests. nil means a client of its own that
	// follows no redirects, over Transport.
	HTTPClient *http.Client
	// Transport carries the requests when HTTPClient is nil. Share one
	// among the clients that call the same endpoint, so that connections
	// are reused. nil means NewTransport(DefaultIdleConns) of its own.
	Transport http.RoundTripper
	// Now is the clock for Request-Time (nil means time.Now).
	Now func() time.Time
	// MayRetry, if set, is asked before each retry, before and after the
	// backoff: when it answers false, the last failure is returned without
	// another attempt. The gateway's circuit breaker answers false while it
	// is not closed (docs/rebell-calls.md).
	MayRetry func() bool
	// Observe, if set, is called after every attempt with the grant type, its
	// result (a resultCode, or transport_error, bad_signature, bad_response,
	// http_error) and how long it took. Metrics hook; keep it cheap.
	Observe func(grantType, result string, took time.Duration)
	// ObserveCancel, if set, is called after every cancelToken attempt with
	// its result (as for Observe) and how long it took.
	ObserveCancel func(result string, took time.Duration)
	// OnAttempt, if set, is called after every attempt with the call's
	// context and what the attempt got (tracing hook; keep it cheap).
	OnAttempt func(ctx context.Context, a AttemptInfo)
	// ClockSkew, if set, measures the offset of this machine's clock from
	// Rebell's on every verified answer (its Response-Time against the
	// middle of the round trip, read from Now). nil measures nothing.
	ClockSkew *ClockSkew
}

// Client calls Rebell's applyToken and cancelToken. It is safe for
// concurrent use and implements TokenExchanger and TokenCanceller.
type Client struct {
	cfg        ClientConfig
	url        *url.URL
	uri        string // what is signed: the path (and query) as sent
	cancelURL  *url.URL
	extendInfo string
	pubKeys    []*rsa.PublicKey // RebellPublicKey, then RebellPublicKeys
	httpClient *http.Client
	now        func() time.Time
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Signer == nil {
		return nil, errors.New("rebell: client needs a signer")
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("rebell: endpoint %q is not an absolute http(s) URL", cfg.Endpoint)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("rebell: endpoint %q must not carry a query, fragment or user info", cfg.Endpoint)
	}
	if u.Scheme != "https" && !isLoopback(u.Hostname()) {
		// Auth codes and refresh tokens would cross the network in clear.
		return nil, fmt.Errorf("rebell: endpoint %q must be https:// (http:// is allowed only for localhost, 127.0.0.0/8 and ::1)", cfg.Endpoint)
	}
	switch cfg.APIVersion {
	case "":
		cfg.APIVersion = "v2"
	case "v1", "v2":
	default:
		return nil, fmt.Errorf("rebell: api version %q is not v1 or v2", cfg.APIVersion)
	}
	if cfg.ReferenceClientID != "" && cfg.APIVersion != "v2" {
		return nil, errors.New("rebell: reference client id is a v2 field")
	}
	if len(cfg.ReferenceClientID) > maxReferenceID {
		return nil, fmt.Errorf("rebell: reference client id longer than %d characters", maxReferenceID)
	}
	if cfg.Timeout < 0 || cfg.Retries < 0 || cfg.BackoffBase < 0 || cfg.BackoffMax < 0 {
		return nil, errors.New("rebell: timeout, retries and backoff must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	c := &Client{cfg: cfg, httpClient: cfg.HTTPClient, now: cfg.Now}
	if cfg.RebellPublicKey != nil {
		c.pubKeys = append(c.pubKeys, cfg.RebellPublicKey)
	}
	for i, k := range cfg.RebellPublicKeys {
		if k == nil {
			return nil, fmt.Errorf("rebell: Rebell public key %d is nil", i+1)
		}
		c.pubKeys = append(c.pubKeys, k)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.httpClient == nil {
		rt := cfg.Transport
		if rt == nil {
			rt = NewTransport(DefaultIdleConns)
		}
		c.httpClient = &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
	}
	if cfg.CustomerBelongsTo != "" {
		b, _ := json.Marshal(map[string]string{"customerBelongsTo": cfg.CustomerBelongsTo})
		if len(b) > maxExtendInfo {
			return nil, fmt.Errorf("rebell: customerBelongsTo makes extendInfo longer than %d bytes", maxExtendInfo)
		}
		c.extendInfo = string(b)
	}
	target := *u
	target.Path = strings.TrimSuffix(u.Path, "/") + "/" + cfg.APIVersion + "/authorizations/applyToken"
	if u.RawPath != "" {
		target.RawPath = strings.TrimSuffix(u.RawPath, "/") + "/" + cfg.APIVersion + "/authorizations/applyToken"
	}
	c.url = &target
	c.uri = target.RequestURI()
	c.cancelURL = cancelURL(u)
	return c, nil
}

// DefaultIdleConns is how many idle connections toward Rebell the transport
// of a Client made without one keeps: the default bound of applyToken calls
// in flight (docs/rebell-calls.md).
const DefaultIdleConns = 64

// NewTransport returns a transport for applyToken calls that keeps up to
// idle connections open between calls, so that a call does not pay for a
// new TCP (and TLS) connection while at most that many run at once (Go's
// default transport keeps 2 per host). Otherwise it is http.DefaultTransport's
// configuration (proxy from the environment, dial and TLS timeouts).
func NewTransport(idle int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = idle
	t.MaxIdleConnsPerHost = idle
	return t
}

// isLoopback reports whether host (without port or brackets) is localhost,
// an address in 127.0.0.0/8 or ::1.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// URL returns the applyToken URL the client posts to.
func (c *Client) URL() string { return c.url.String() }

// MerchantPublicKey returns the public half of the key the client signs
// requests with.
func (c *Client) MerchantPublicKey() *rsa.PublicKey { return c.cfg.Signer.PublicKey() }

// VerifiesResponses reports whether the client checks the signature of every
// response (at least one Rebell public key is configured).
func (c *Client) VerifiesResponses() bool { return len(c.pubKeys) > 0 }

// ExchangeAuthCode calls applyToken with grantType AUTHORIZATION_CODE.
func (c *Client) ExchangeAuthCode(ctx context.Context, authCode Secret) (*Token, error) {
	if authCode.IsZero() {
		return nil, &Error{Kind: KindConfiguration, Err: errors.New("empty auth code")}
	}
	return c.applyToken(ctx, GrantAuthorizationCode, authCode)
}

// Refresh calls applyToken with grantType REFRESH_TOKEN.
func (c *Client) Refresh(ctx context.Context, refreshToken Secret) (*Token, error) {
	if refreshToken.IsZero() {
		return nil, &Error{Kind: KindRefreshTokenDead, Err: errors.New("no refresh token")}
	}
	return c.applyToken(ctx, GrantRefreshToken, refreshToken)
}

// applyTokenRequest is the request body; optional fields are left out when empty.
type applyTokenRequest struct {
	GrantType         string `json:"grantType"`
	AuthCode          string `json:"authCode,omitempty"`
	RefreshToken      string `json:"refreshToken,omitempty"`
	ReferenceClientID string `json:"referenceClientId,omitempty"`
	ExtendInfo        string `json:"extendInfo,omitempty"`
}

func (c *Client) body(grantType string, credential Secret) ([]byte, error) {
	req := applyTokenRequest{GrantType: grantType, ReferenceClientID: c.cfg.ReferenceClientID, ExtendInfo: c.extendInfo}
	if grantType == GrantAuthorizationCode {
		req.AuthCode = credential.Reveal()
	} else {
		req.RefreshToken = credential.Reveal()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func (c *Client) applyToken(ctx context.Context, grantType string, credential Secret) (*Token, error) {
	body, err := c.body(grantType, credential)
	if err != nil {
		return nil, &Error{Kind: KindConfiguration, Err: err}
	}
	var tok *Token
	op := &call{
		url: c.url, uri: c.uri, body: body, grantType: grantType,
		parse: func(status int, respBody []byte) (e *Error) {
			tok, e = parseApplyToken(status, respBody, grantType)
			return e
		},
		observe: func(result string, took time.Duration) {
			if c.cfg.Observe != nil {
				c.cfg.Observe(grantType, result, took)
			}
		},
	}
	if e := c.do(ctx, op); e != nil {
		return nil, e
	}
	return tok, nil
}

// call is one OpenAPI call as do sends it: where to, what, how its answer
// is read and who hears of each attempt. applyToken and cancelToken share
// do, and with it the signing, verification, retries and redaction.
type call struct {
	url  *url.URL
	uri  string // what is signed
	body []byte
	// parse reads a verified (or, without keys, unverified) answer; it
	// returns nil on SUCCESS.
	parse func(httpStatus int, body []byte) *Error
	// observe, if set, hears every attempt's result and duration.
	observe func(result string, took time.Duration)
	// op names the call in its errors ("" means applyToken).
	op string
	// grantType is applyToken's grant, for OnAttempt ("" for cancelToken).
	grantType string
}

// do sends op, retrying a retryable failure as ClientConfig says, and
// returns nil on SUCCESS or the last attempt's *Error.
func (c *Client) do(ctx context.Context, op *call) *Error {
	var last *Error
	for attempt := 0; ; attempt++ {
		err := c.attempt(ctx, op)
		if err == nil {
			return nil
		}
		last = err
		last.Attempts = attempt + 1
		last.Op = op.op
		if last.Kind != KindRetryable || attempt >= c.cfg.Retries || ctx.Err() != nil || !c.mayRetry() {
			return last
		}
		wait := c.backoff(attempt)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			return last
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return last
		case <-t.C:
		}
		if !c.mayRetry() {
			return last
		}
	}
}

func (c *Client) mayRetry() bool { return c.cfg.MayRetry == nil || c.cfg.MayRetry() }

// backoff returns a full-jitter delay for the attempt that just failed.
func (c *Client) backoff(attempt int) time.Duration {
	ceiling := c.cfg.BackoffMax
	if attempt < 30 {
		if d := c.cfg.BackoffBase << attempt; d > 0 && d < ceiling {
			ceiling = d
		}
	}
	return rand.N(ceiling) + 1
}

func (c *Client) attempt(ctx context.Context, op *call) (e *Error) {
	start := time.Now()
	status := 0 // the response's, for OnAttempt
	defer func() {
		if op.observe != nil {
			result := CodeSuccess
			if e != nil {
				result = e.metricResult()
			}
			op.observe(result, time.Since(start))
		}
		c.onAttempt(ctx, op.grantType, status, time.Since(start), e)
	}()
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, op.url.String(), bytes.NewReader(op.body))
	if err != nil {
		return &Error{Kind: KindConfiguration, Err: err}
	}
	sent := c.now()
	if err := c.cfg.Signer.Sign(req.Header, HeaderRequestTime, http.MethodPost, op.uri, op.body, sent); err != nil {
		return &Error{Kind: KindConfiguration, Err: err}
	}
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return &Error{Kind: KindRetryable, Err: transportError(err)}
	}
	received := c.now() // the headers are in
	status = resp.StatusCode
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return &Error{Kind: KindRetryable, HTTPStatus: resp.StatusCode, Err: transportError(err)}
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		e := &Error{Kind: KindRetryable, HTTPStatus: resp.StatusCode, Err: errors.New("server error")}
		if r, err := parseResult(respBody); err == nil {
			e.ResultStatus, e.ResultCode, e.ResultMessage = r.ResultStatus, r.ResultCode, r.ResultMessage
		}
		return e
	}
	if len(respBody) > MaxResponseBytes {
		return &Error{Kind: KindBadResponse, HTTPStatus: resp.StatusCode, Err: fmt.Errorf("response body over %d bytes", MaxResponseBytes)}
	}
	if len(c.pubKeys) > 0 {
		if err := c.verify(resp.Header, op.uri, respBody); err != nil {
			// Say what the unverified body claims: an INVALID_SIGNATURE
			// answer is usually unsigned, and naming it helps the operator.
			// Verified stays false, so the claim never reaches a client.
			e := &Error{Kind: KindBadSignature, HTTPStatus: resp.StatusCode, Err: err}
			if r, perr := parseResult(respBody); perr == nil {
				e.ResultStatus, e.ResultCode, e.ResultMessage = r.ResultStatus, r.ResultCode, r.ResultMessage
			}
			return e
		}
		// Only a verified Response-Time says what Rebell's clock reads.
		c.cfg.ClockSkew.Observe(sent, received, resp.Header.Get(HeaderResponseTime))
	}
	e = op.parse(resp.StatusCode, respBody)
	if e != nil && len(c.pubKeys) > 0 {
		e.Verified = true
	}
	return e
}

// verify checks the response's signature against each configured Rebell key
// in turn. It returns nil as soon as one verifies, and otherwise the first
// key's error (a missing or unreadable signature fails the same way for
// every key).
func (c *Client) verify(h http.Header, uri string, body []byte) error {
	var first error
	for _, pub := range c.pubKeys {
		_, err := VerifyMessage(pub, h, HeaderResponseTime, http.MethodPost, uri, body)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
		var se *SignatureError
		if errors.As(err, &se) && se.Problem != SignatureInvalid {
			break // no other key can do better
		}
	}
	return first
}

// metricResult names the error as a metric label value.
func (e *Error) metricResult() string {
	switch e.Kind {
	case KindBadSignature:
		return "bad_signature"
	case KindBadResponse:
		return "bad_response"
	}
	if e.ResultCode != "" {
		return MetricCode(e.ResultCode)
	}
	if e.HTTPStatus != 0 {
		return "http_error"
	}
	return "transport_error"
}

// MetricResult names err as the result label of the refresh and login
// metrics: the Rebell resultCode (ResultOtherCode for one the gateway does
// not know), or transport_error, bad_signature,
// bad_response, http_error. It returns "error" for an error that is not an
// *Error.
func MetricResult(err error) string {
	if err == nil {
		return CodeSuccess
	}
	var e *Error
	if errors.As(err, &e) {
		return e.metricResult()
	}
	return "error"
}

func transportError(err error) error {
	// url.Error repeats the URL, which is fine (no secrets), but the
	// underlying error is what matters.
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("timeout: %w", ue.Err)
		}
		return ue.Err
	}
	return err
}
