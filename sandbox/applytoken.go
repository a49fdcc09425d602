package sandbox

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Limits of applyToken requests.
const (
	maxApplyTokenBody = 16 << 10
	maxClockSkew      = 5 * time.Minute
	maxRequestTimeLen = 64
)

// apiVersion is the applyToken version a request was sent to.
type apiVersion int

const (
	apiV1 apiVersion = 1
	apiV2 apiVersion = 2
)

// resultSpec is how the sandbox answers one result code.
type resultSpec struct {
	status     string
	httpStatus int
	message    string
}

// results are the result codes the sandbox produces itself, with their
// resultStatus, HTTP status and default resultMessage.
var results = map[string]resultSpec{
	rebell.CodeSuccess:                        {rebell.StatusSuccess, http.StatusOK, "success"},
	rebell.CodeInvalidCode:                    {rebell.StatusFail, http.StatusOK, "The authorization code is invalid."},
	rebell.CodeUsedCode:                       {rebell.StatusFail, http.StatusOK, "The authorization code has been used."},
	rebell.CodeExpiredCode:                    {rebell.StatusFail, http.StatusOK, "The authorization code has expired."},
	rebell.CodeInvalidRefreshToken:            {rebell.StatusFail, http.StatusOK, "The refresh token is invalid."},
	rebell.CodeUsedRefreshToken:               {rebell.StatusFail, http.StatusOK, "The refresh token has been used."},
	rebell.CodeExpiredRefreshToken:            {rebell.StatusFail, http.StatusOK, "The refresh token has expired."},
	rebell.CodeAuthClientUnsupportedGrantType: {rebell.StatusFail, http.StatusOK, "The grant type is not supported."},
	rebell.CodeParamIllegal:                   {rebell.StatusFail, http.StatusBadRequest, "Illegal parameters."},
	rebell.CodeInvalidAuthClient:              {rebell.StatusFail, http.StatusUnauthorized, "The client is not authorized."},
	rebell.CodeInvalidSignature:               {rebell.StatusFail, http.StatusUnauthorized, "The signature is invalid."},
	rebell.CodeRequestTrafficExceedLimit:      {rebell.StatusUnknown, http.StatusTooManyRequests, "The request traffic exceeds the limit."},
	rebell.CodeUnknownException:               {rebell.StatusUnknown, http.StatusInternalServerError, "An unknown exception occurred."},
	rebell.CodeInvalidAccessToken:             {rebell.StatusFail, http.StatusOK, "The access token is invalid."},
	rebell.CodeExpiredAccessToken:             {rebell.StatusFail, http.StatusOK, "The access token has expired."},
}

// result is the result object of every applyToken response.
type result struct {
	ResultCode    string `json:"resultCode"`
	ResultStatus  string `json:"resultStatus"`
	ResultMessage string `json:"resultMessage"`
}

// tokenResponse is the body of every applyToken response; the token fields
// are present on SUCCESS only.
type tokenResponse struct {
	Result                 result `json:"result"`
	AccessToken            string `json:"accessToken,omitempty"`
	AccessTokenExpiryTime  string `json:"accessTokenExpiryTime,omitempty"`
	RefreshToken           string `json:"refreshToken,omitempty"`
	RefreshTokenExpiryTime string `json:"refreshTokenExpiryTime,omitempty"`
	CustomerID             string `json:"customerId,omitempty"`
}

// answer is an applyToken response before it is signed and written.
type answer struct {
	httpStatus int
	body       tokenResponse
	signing    signMode
}

// answerFor returns the answer for a result code of the catalogue, with
// message replacing the default one when not empty.
func answerFor(code, message string) answer {
	r := results[code]
	if message == "" {
		message = r.message
	}
	return answer{
		httpStatus: r.httpStatus,
		body:       tokenResponse{Result: result{ResultCode: code, ResultStatus: r.status, ResultMessage: message}},
	}
}

func succeed(s session) answer {
	a := answerFor(rebell.CodeSuccess, "")
	a.body.AccessToken = s.accessToken
	a.body.AccessTokenExpiryTime = rebell.FormatTime(s.accessExpiry)
	a.body.RefreshToken = s.refreshToken
	a.body.RefreshTokenExpiryTime = rebell.FormatTime(s.refreshExpiry)
	a.body.CustomerID = s.customerID
	return a
}

// serveApplyToken answers POST .../v{1,2}/authorizations/applyToken.
func (s *Sandbox) serveApplyToken(w http.ResponseWriter, r *http.Request, v apiVersion) {
	uri := requestURI(r)
	body, err := readBody(w, r, maxApplyTokenBody)
	if err != nil {
		msg := "The request body cannot be read."
		if errors.As(err, new(*http.MaxBytesError)) {
			msg = "The request body is larger than 16 KiB."
		}
		s.writeAnswer(w, v, uri, grantUnknown, answerFor(rebell.CodeParamIllegal, msg))
		return
	}
	grant := peekGrantType(body)
	if a, ok := s.authenticate(r.Header, uri, body, s.now()); !ok {
		s.writeAnswer(w, v, uri, grant, a)
		return
	}

	s.mu.Lock()
	f, faulted := s.faults.take(callApplyToken, grant)
	s.mu.Unlock()
	if faulted {
		if f.delay > 0 {
			wait(r, f.delay)
		}
		s.writeAnswer(w, v, uri, grant, answer{
			httpStatus: f.httpStatus,
			body: tokenResponse{Result: result{
				ResultCode: f.resultCode, ResultStatus: f.resultStatus, ResultMessage: f.resultMessage,
			}},
			signing: f.signing,
		})
		return
	}

	req, a, ok := parseTokenRequest(body, v)
	if !ok {
		s.writeAnswer(w, v, uri, grant, a)
		return
	}
	now := s.now()
	var sess session
	var code string
	s.mu.Lock()
	if req.grantType == rebell.GrantAuthorizationCode {
		sess, code = s.store.exchangeCode(now, req.authCode)
	} else {
		sess, code = s.store.refreshSession(now, req.refreshToken)
	}
	s.mu.Unlock()
	if code == rebell.CodeSuccess {
		a = succeed(sess)
	} else {
		a = answerFor(code, "")
	}
	s.writeAnswer(w, v, uri, grant, a)
}

// wait waits d in real time, or until the request's context ends.
func wait(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

// requestURI is the URI the client signed: the request target as sent, which
// keeps a path prefix even if something in front rewrote r.URL.
func requestURI(r *http.Request) string {
	if r.RequestURI != "" {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// authenticate checks Client-Id, Content-Type, Request-Time and, when a
// merchant key is configured, the signature, in that order.
func (s *Sandbox) authenticate(h http.Header, uri string, body []byte, now time.Time) (answer, bool) {
	switch ids := h.Values(rebell.HeaderClientID); {
	case len(ids) == 0 || ids[0] == "":
		return answerFor(rebell.CodeInvalidAuthClient, "The Client-Id header is missing."), false
	case len(ids) > 1:
		return answerFor(rebell.CodeInvalidAuthClient, "The Client-Id header appears more than once."), false
	case ids[0] != s.clientID:
		return answerFor(rebell.CodeInvalidAuthClient, "The Client-Id is not a registered client."), false
	}
	if msg := checkContentType(h.Values(rebell.HeaderContentType)); msg != "" {
		return answerFor(rebell.CodeParamIllegal, msg), false
	}
	if msg := checkRequestTime(h.Values(rebell.HeaderRequestTime), now); msg != "" {
		return answerFor(rebell.CodeInvalidSignature, msg), false
	}
	if s.merchantKey == nil {
		return answer{}, true
	}
	if len(h.Values(rebell.HeaderSignature)) > 1 {
		return answerFor(rebell.CodeInvalidSignature, "The Signature header appears more than once."), false
	}
	sh, err := rebell.VerifyMessage(s.merchantKey, h, rebell.HeaderRequestTime, http.MethodPost, uri, body)
	if err == nil && s.keyVersion >= 0 && sh.KeyVersion != "" {
		if v, _ := strconv.Atoi(sh.KeyVersion); v != s.keyVersion {
			return answerFor(rebell.CodeInvalidSignature, "No key is registered under this keyVersion for the Client-Id."), false
		}
	}
	if err != nil {
		msg := "The signature does not verify."
		var se *rebell.SignatureError
		if errors.As(err, &se) {
			switch se.Problem {
			case rebell.SignatureMissing:
				msg = "The Signature header is missing."
			case rebell.SignatureUnreadable:
				msg = "The Signature header cannot be parsed."
			}
		}
		return answerFor(rebell.CodeInvalidSignature, msg), false
	}
	return answer{}, true
}

// checkContentType accepts exactly one application/json Content-Type whose
// only parameter, if any, is charset=UTF-8 (any case). A duplicated header
// is named as such, whatever its values: some SDKs send application/json
// twice, and "must be application/json" would be wrong about the cause.
func checkContentType(values []string) string {
	switch {
	case len(values) == 0:
		return "Content-Type must be application/json."
	case len(values) > 1:
		return "The Content-Type header appears more than once."
	}
	mt, params, err := mime.ParseMediaType(values[0])
	if err != nil || mt != "application/json" {
		return "Content-Type must be application/json."
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return "Content-Type may carry only charset=UTF-8."
		}
	}
	return ""
}

// checkRequestTime accepts exactly one RFC 3339 Request-Time (any offset,
// fractional seconds allowed) within 5 minutes of now.
func checkRequestTime(values []string, now time.Time) string {
	switch {
	case len(values) == 0 || values[0] == "":
		return "The Request-Time header is missing."
	case len(values) > 1:
		return "The Request-Time header appears more than once."
	case len(values[0]) > maxRequestTimeLen:
		return "Request-Time is not an RFC 3339 timestamp."
	}
	t, err := time.Parse(time.RFC3339Nano, values[0])
	if err != nil {
		return "Request-Time is not an RFC 3339 timestamp."
	}
	if d := now.Sub(t); d > maxClockSkew || d < -maxClockSkew {
		return "Request-Time is more than 5 minutes away from the server time."
	}
	return ""
}

// writeAnswer signs a and writes it, and counts it in the stats. Every
// applyToken response goes through here.
func (s *Sandbox) writeAnswer(w http.ResponseWriter, v apiVersion, uri, grant string, a answer) {
	a, body := s.signAnswer(w.Header(), uri, a)
	code := a.body.Result.ResultCode
	s.mu.Lock()
	s.counters.record(grant, code)
	s.mu.Unlock()
	if ce := s.log.Check(zap.DebugLevel, "rebell sandbox: applyToken"); ce != nil {
		ce.Write(
			zap.Int("version", int(v)),
			zap.String("grant_type", grant),
			zap.String("result_status", a.body.Result.ResultStatus),
			zap.String("result_code", code),
			zap.Int("status", a.httpStatus),
		)
	}
	w.WriteHeader(a.httpStatus)
	if len(body) > 0 {
		_, _ = w.Write(body)
	}
}

// signAnswer encodes a and signs it into h for uri. It returns the answer
// actually sent (UNKNOWN_EXCEPTION, unsigned, if signing failed) and its
// body.
func (s *Sandbox) signAnswer(h http.Header, uri string, a answer) (answer, []byte) {
	body, err := json.Marshal(a.body)
	if err != nil { // cannot happen: strings only
		body = []byte(`{"result":{"resultCode":"UNKNOWN_EXCEPTION","resultStatus":"U","resultMessage":"An unknown exception occurred."}}`)
	}
	if !bodyAllowed(a.httpStatus) {
		body = nil
	}
	h.Set("Cache-Control", "no-store")
	now := s.now()
	switch a.signing {
	case signNormal:
		err = s.signer.Sign(h, rebell.HeaderResponseTime, http.MethodPost, uri, body, now)
	case signForged:
		var forger *rebell.Signer
		if forger, err = s.forgeSigner(); err == nil {
			err = forger.Sign(h, rebell.HeaderResponseTime, http.MethodPost, uri, body, now)
		}
	case signUnsigned:
		h.Set(rebell.HeaderClientID, s.clientID)
		h.Set(rebell.HeaderResponseTime, rebell.FormatTime(now))
		h.Set(rebell.HeaderContentType, rebell.ContentType)
	}
	if err != nil {
		// Signing with a valid key does not fail; answer honestly unsigned.
		s.log.Error("rebell sandbox: cannot sign a response", zap.Error(err))
		a = answerFor(rebell.CodeUnknownException, "")
		body, _ = json.Marshal(a.body)
		h.Del(rebell.HeaderSignature)
		h.Set(rebell.HeaderClientID, s.clientID)
		h.Set(rebell.HeaderResponseTime, rebell.FormatTime(now))
		h.Set(rebell.HeaderContentType, rebell.ContentType)
	}

	return a, body
}

// bodyAllowed reports whether a response with this status may have a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// forgeSigner returns a signer with the sandbox's Client-Id and a key of its
// own, generated on first use.
func (s *Sandbox) forgeSigner() (*rebell.Signer, error) {
	s.forgeOnce.Do(func() {
		var key *rsa.PrivateKey
		if key, s.forgeErr = rsa.GenerateKey(rand.Reader, rebell.MinKeyBits); s.forgeErr == nil {
			s.forger, s.forgeErr = rebell.NewSigner(s.clientID, key, responseKeyVersion, rebell.AlgorithmRSA256)
		}
	})
	return s.forger, s.forgeErr
}
