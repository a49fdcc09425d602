package rebell

import (
	"errors"
	"fmt"
)

// Kind says what an applyToken failure means to the caller.
type Kind int

// The kinds of applyToken failure.
const (
	// KindRetryable: resultStatus U or an unknown status letter,
	// REQUEST_TRAFFIC_EXCEED_LIMIT, a timeout, a transport error, HTTP 429 or
	// 5xx. Trying again later may succeed.
	KindRetryable Kind = iota + 1
	// KindAuthCodeRejected: INVALID_CODE, EXPIRED_CODE or USED_CODE. The Mini
	// App must call my.getAuthCode again.
	KindAuthCodeRejected
	// KindRefreshTokenDead: INVALID_REFRESH_TOKEN, EXPIRED_REFRESH_TOKEN or
	// USED_REFRESH_TOKEN. The session cannot be refreshed any more.
	KindRefreshTokenDead
	// KindConfiguration: INVALID_AUTH_CLIENT, ACCESS_DENIED, PARAM_ILLEGAL,
	// AUTH_CLIENT_UNSUPPORTED_GRANT_TYPE, REFERENCE_CLIENT_ID_NOT_MATCH or any
	// other F result: something in the merchant's set-up is wrong.
	KindConfiguration
	// KindBadSignature: a Rebell public key is configured and the response's
	// signature is missing or does not verify.
	KindBadSignature
	// KindBadResponse: the response could not be used: too large, not the
	// JSON expected, or a field out of its documented bounds.
	KindBadResponse
	// KindNothingToCancel: cancelToken answered INVALID_ACCESS_TOKEN or
	// EXPIRED_ACCESS_TOKEN. Rebell no longer knows the access token as a
	// live one: there is nothing left to cancel with it (docs/protocol.md).
	KindNothingToCancel
)

var kindNames = [...]string{
	KindRetryable:        "retryable",
	KindAuthCodeRejected: "auth code rejected",
	KindRefreshTokenDead: "refresh token dead",
	KindConfiguration:    "merchant configuration",
	KindBadSignature:     "bad response signature",
	KindBadResponse:      "bad response",
	KindNothingToCancel:  "nothing left to cancel",
}

func (k Kind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Result statuses of Rebell's OpenAPI.
const (
	StatusSuccess  = "S"
	StatusFail     = "F"
	StatusUnknown  = "U"
	StatusAccepted = "A"
)

// Result codes of applyToken that the gateway acts on.
const (
	CodeSuccess                        = "SUCCESS"
	CodeUnknownException               = "UNKNOWN_EXCEPTION"
	CodeRequestTrafficExceedLimit      = "REQUEST_TRAFFIC_EXCEED_LIMIT"
	CodeParamIllegal                   = "PARAM_ILLEGAL"
	CodeProcessFail                    = "PROCESS_FAIL"
	CodeAccessDenied                   = "ACCESS_DENIED"
	CodeInvalidAuthClient              = "INVALID_AUTH_CLIENT"
	CodeAuthClientUnsupportedGrantType = "AUTH_CLIENT_UNSUPPORTED_GRANT_TYPE"
	CodeReferenceClientIDNotMatch      = "REFERENCE_CLIENT_ID_NOT_MATCH"
	CodeInvalidCode                    = "INVALID_CODE"
	CodeExpiredCode                    = "EXPIRED_CODE"
	CodeUsedCode                       = "USED_CODE"
	CodeInvalidRefreshToken            = "INVALID_REFRESH_TOKEN"
	CodeExpiredRefreshToken            = "EXPIRED_REFRESH_TOKEN"
	CodeUsedRefreshToken               = "USED_REFRESH_TOKEN"
	CodeInvalidSignature               = "INVALID_SIGNATURE"
)

// Result codes of cancelToken (docs/protocol.md) that applyToken does not
// share. cancelToken also answers CodeSuccess, CodeProcessFail,
// CodeParamIllegal, CodeAccessDenied, CodeInvalidAuthClient,
// CodeUnknownException and CodeRequestTrafficExceedLimit.
const (
	CodeInvalidAPI              = "INVALID_API"
	CodeInvalidAuthClientStatus = "INVALID_AUTH_CLIENT_STATUS"
	CodeInvalidAccessToken      = "INVALID_ACCESS_TOKEN"
	CodeExpiredAccessToken      = "EXPIRED_ACCESS_TOKEN"
	CodeExpiredAgentToken       = "EXPIRED_AGENT_TOKEN"
	CodeInvalidAgentToken       = "INVALID_AGENT_TOKEN"
)

// ResultOtherCode is the metric label of a resultCode that is not among
// the codes above (KnownResultCode): a label takes one of a bounded set of
// values whatever a response claims. The code itself is logged.
const ResultOtherCode = "other_result_code"

// KnownResultCode reports whether code is one of the resultCodes above.
func KnownResultCode(code string) bool {
	switch code {
	case CodeSuccess, CodeUnknownException, CodeRequestTrafficExceedLimit, CodeParamIllegal,
		CodeProcessFail, CodeAccessDenied, CodeInvalidAuthClient, CodeAuthClientUnsupportedGrantType,
		CodeReferenceClientIDNotMatch, CodeInvalidCode, CodeExpiredCode, CodeUsedCode,
		CodeInvalidRefreshToken, CodeExpiredRefreshToken, CodeUsedRefreshToken, CodeInvalidSignature,
		CodeInvalidAPI, CodeInvalidAuthClientStatus, CodeInvalidAccessToken, CodeExpiredAccessToken,
		CodeExpiredAgentToken, CodeInvalidAgentToken:
		return true
	}
	return false
}

// MetricCode is code as a metric label value: code when it is known,
// ResultOtherCode otherwise.
func MetricCode(code string) string {
	if KnownResultCode(code) {
		return code
	}
	return ResultOtherCode
}

// Classify returns what a non-success result means. It keys off the code
// first (Rebell has been seen to send UNKNOWN_EXCEPTION with status F), then
// the status: S with a code other than SUCCESS, F, and anything not S count
// as failures; an unknown status letter counts as U.
func Classify(resultStatus, resultCode string) Kind {
	switch resultCode {
	case CodeInvalidCode, CodeExpiredCode, CodeUsedCode:
		return KindAuthCodeRejected
	case CodeInvalidRefreshToken, CodeExpiredRefreshToken, CodeUsedRefreshToken:
		return KindRefreshTokenDead
	case CodeRequestTrafficExceedLimit, CodeUnknownException:
		return KindRetryable
	}
	if resultStatus == StatusFail {
		return KindConfiguration
	}
	return KindRetryable
}

// Error is a failed applyToken or cancelToken call. Callers act on Kind;
// ResultCode names Rebell's reason when Rebell gave one. It never holds a
// token, an auth code or a signature.
type Error struct {
	// Op is the call that failed: "" for applyToken, OpCancelToken for
	// cancelToken.
	Op string
	// Kind says what the failure means.
	Kind Kind
	// ResultStatus and ResultCode are Rebell's, when it answered with a result.
	ResultStatus string
	ResultCode   string
	// ResultMessage is Rebell's resultMessage (at most 256 characters).
	ResultMessage string
	// HTTPStatus is the response status, 0 without a response.
	HTTPStatus int
	// Attempts is how many requests were made.
	Attempts int
	// Verified reports that ResultStatus, ResultCode and ResultMessage come
	// from a response whose signature a configured Rebell public key
	// verified. Without a key, or when the signature failed (KindBadSignature)
	// or the result came in an HTTP error response (which is not verified),
	// the result is only what the answer claims: good for the operator's
	// logs, not for the Mini App (see VerifiedResultCode).
	Verified bool
	// Err is the underlying error (transport, timeout, signature, parse), if any.
	Err error
}

func (e *Error) Error() string {
	op := e.Op
	if op == "" {
		op = "applyToken"
	}
	msg := "rebell: " + op + ": " + e.Kind.String()
	if e.ResultCode != "" {
		if e.Kind == KindBadSignature {
			msg += ": unverified answer claims"
		} else {
			msg += ":"
		}
		msg += " " + e.ResultStatus + " " + e.ResultCode
	}
	if e.HTTPStatus != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.HTTPStatus)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorKind returns the Kind of err if it is or wraps an *Error, and 0
// otherwise.
func ErrorKind(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// VerifiedResultCode returns the resultCode carried by err when it came from
// a verified response (Error.Verified), and "" otherwise: the only resultCode
// that may be shown to a client.
func VerifiedResultCode(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Verified {
		return e.ResultCode
	}
	return ""
}

// ResultCodeOf returns the resultCode carried by err, or "", verified or
// not: for logs. Use VerifiedResultCode for what a client may see.
func ResultCodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.ResultCode
	}
	return ""
}
