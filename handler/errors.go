package handler

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// retryAfter is the Retry-After value, in seconds, of the 503 responses (see
// the package documentation).
const retryAfter = "5"

// An apiError is one row of the error table in docs/contract.md: what the Mini App sees for an error
// code. Messages are fixed sentences: they never echo input or name a
// credential.
type apiError struct {
	status    int
	code      string
	message   string
	challenge string // WWW-Authenticate value, for 401s
	retry     bool   // send Retry-After
	body      []byte // the JSON body without resultCode, built once
}

// The error codes of docs/contract.md.
var (
	errInvalidAuthCode = newAPIError(http.StatusBadRequest, "invalid_auth_code",
		"The login request needs an authCode of 1 to 64 characters, each a letter, a digit or one of -._~+/=.")
	errSessionRequired = newAPIError(http.StatusUnauthorized, "session_required",
		"This request needs a session: log in first.")
	errSessionInvalid = newAPIError(http.StatusUnauthorized, "session_invalid",
		"The session is malformed, unknown or has ended: log in again.")
	errReauthRequired = newAPIError(http.StatusUnauthorized, "reauth_required",
		"The session can no longer be renewed: get a new authCode and log in again.")
	errAuthCodeRejected = newAPIError(http.StatusUnauthorized, "auth_code_rejected",
		"Rebell did not accept the authCode: get a new one and log in again.")
	errMethodNotAllowed = newAPIError(http.StatusMethodNotAllowed, "method_not_allowed",
		"Only POST is allowed on this path.")
	errRequestTooLarge = newAPIError(http.StatusRequestEntityTooLarge, "request_too_large",
		"The login request body is larger than 8 KiB.")
	errRebellRejected = newAPIError(http.StatusBadGateway, "rebell_rejected",
		"Rebell refused the gateway's token request.")
	errRebellUnavailable = newAPIError(http.StatusServiceUnavailable, "rebell_unavailable",
		"Rebell cannot be reached right now: try again later.")
	errStoreUnavailable = newAPIError(http.StatusServiceUnavailable, "store_unavailable",
		"The session store cannot be reached right now: try again later.")
	errTooManyLogins = newAPIError(http.StatusTooManyRequests, "too_many_logins",
		"Too many logins from this address: try again after the time in Retry-After.")
	errCrossSite = newAPIError(http.StatusForbidden, "cross_site_request",
		"Login and logout are not accepted from another site.")
)

// errorBody is the JSON shape of every error response.
type errorBody struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	ResultCode string `json:"resultCode,omitempty"`
}

// errorCodes lists the code of every apiError, in the order made.
var errorCodes []string

func newAPIError(status int, code, message string) *apiError {
	errorCodes = append(errorCodes, code)
	e := &apiError{status: status, code: code, message: message}
	switch code {
	case "session_invalid", "reauth_required":
		// RFC 6750 §3.1: the token is expired, revoked or malformed.
		e.challenge = `Bearer error="invalid_token"`
	case "session_required", "auth_code_rejected":
		// RFC 6750 §3.1: no error attribute when no credential was sent.
		e.challenge = "Bearer"
	}
	e.retry = status == http.StatusServiceUnavailable
	body, err := json.Marshal(errorBody{Error: code, Message: message})
	if err != nil {
		panic(err) // static input
	}
	e.body = body
	return e
}

// classify maps an error of the cache to the Mini App's error. known is
// false when err wraps none of the cache's sentinels (or is nil): that is
// answered as rebell_unavailable, and is a bug worth logging.
func classify(err error) (e *apiError, known bool) {
	switch {
	case err == nil:
		return errRebellUnavailable, false
	case errors.Is(err, cache.ErrSessionInvalid):
		return errSessionInvalid, true
	case errors.Is(err, cache.ErrReauthRequired):
		return errReauthRequired, true
	case errors.Is(err, cache.ErrAuthCodeRejected):
		return errAuthCodeRejected, true
	case errors.Is(err, cache.ErrRebellUnavailable):
		return errRebellUnavailable, true
	case errors.Is(err, cache.ErrRebellRejected):
		return errRebellRejected, true
	case errors.Is(err, cache.ErrStoreUnavailable):
		return errStoreUnavailable, true
	}
	return errRebellUnavailable, false
}

// refuse answers e with no resultCode (see writeError).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, e *apiError) error {
	return h.writeError(w, r, e, "")
}

// refuseErr answers err, a failed (or nil-grant) answer of the cache (see
// writeError). k names the session in logs; it may be nil.
func (h *Handler) refuseErr(w http.ResponseWriter, r *http.Request, err error, k *cache.Key) error {
	e, known := classify(err)
	h.logRejection(e, !known, err, k)
	if s := retryAfterOf(err); s != "" && e.retry {
		w.Header().Set("Retry-After", s)
	}
	return h.writeError(w, r, e, rebell.VerifiedResultCode(err)) // an unverified claim never reaches the client
}

// retryAfterOf returns the Retry-After that err asks for, in whole seconds
// (at least 1), or "" when it asks for none. The gateway's guard of calls
// to Rebell sets it to the time left until its circuit breaker's next probe
// (docs/rebell-calls.md).
func retryAfterOf(err error) string {
	var ra interface{ RetryAfter() time.Duration }
	if !errors.As(err, &ra) {
		return ""
	}
	d := ra.RetryAfter()
	if d <= 0 {
		return ""
	}
	return strconv.FormatInt(int64(max(1, (d+time.Second-1)/time.Second)), 10)
}

// writeError reports e to the callbacks and writes it as JSON, with
// resultCode when it is not "", and returns nil. With Config.ReturnErrors it
// sets only the headers and returns e as an *Error instead (returnError).
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, e *apiError, resultCode string) error {
	if h.onReject != nil {
		h.onReject(r, e.code)
	}
	h.outcome(e.code)
	if h.returnErrors {
		return returnError(w, e, resultCode)
	}

	body := e.body
	if resultCode != "" {
		if b, err := json.Marshal(errorBody{Error: e.code, Message: e.message, ResultCode: resultCode}); err == nil {
			body = b
		}
	}
	hd := w.Header()
	setNoStoreJSON(hd, len(body))
	setErrorHeaders(hd, e)
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
	return nil
}

// setNoStoreJSON sets the headers of every JSON response the handler writes.
func setNoStoreJSON(hd http.Header, n int) {
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(n))
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
}

// setErrorHeaders sets the headers that go with e, whether the handler
// writes the response or returns e to the host (Config.ReturnErrors).
func setErrorHeaders(hd http.Header, e *apiError) {
	if e.challenge != "" {
		hd.Set("WWW-Authenticate", e.challenge)
	}
	if e.retry && hd.Get("Retry-After") == "" { // refuseErr may have set it from the error
		hd.Set("Retry-After", retryAfter)
	}
	if e == errMethodNotAllowed {
		hd.Set("Allow", http.MethodPost)
	}
}
