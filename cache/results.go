package cache

import (
	"errors"
	"fmt"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Results reported to Config.OnLogin and Config.OnRefresh besides Rebell's
// resultCodes (see Config.OnLogin).
const (
	// resultSuccess: the exchange or refresh succeeded and was stored.
	resultSuccess = rebell.CodeSuccess
	// resultTransportError: no resultCode: Rebell could not be reached, timed
	// out or answered HTTP 429/5xx.
	resultTransportError = "transport_error"
	// resultBadSignature: the response signature is missing or invalid.
	resultBadSignature = "bad_signature"
	// resultBadResponse: the response could not be used.
	resultBadResponse = "bad_response"
	// resultStoreError: the login succeeded at Rebell but the session could
	// not be stored.
	resultStoreError = "store_error"
	// resultDeduplicated: a login joined or reused the exchange of the same
	// auth code instead of calling Rebell.
	resultDeduplicated = "deduplicated"
)

// resultOf names err for the metrics hooks.
func resultOf(err error) string {
	var re *rebell.Error
	if !errors.As(err, &re) {
		return resultTransportError
	}
	switch {
	case re.Kind == rebell.KindBadSignature:
		return resultBadSignature
	case re.Kind == rebell.KindBadResponse:
		return resultBadResponse
	case re.ResultCode != "":
		return rebell.MetricCode(re.ResultCode) // a bounded set of labels
	default:
		return resultTransportError
	}
}

// loginError maps a failed exchange to the cache's errors.
func loginError(err error) error {
	switch rebell.ErrorKind(err) {
	case rebell.KindAuthCodeRejected:
		return fmt.Errorf("%w: %w", ErrAuthCodeRejected, err)
	case rebell.KindConfiguration, rebell.KindBadSignature, rebell.KindBadResponse, rebell.KindRefreshTokenDead:
		return fmt.Errorf("%w: %w", ErrRebellRejected, err)
	default: // KindRetryable, or not a *rebell.Error (a transport error, a cancelled context)
		return fmt.Errorf("%w: %w", ErrRebellUnavailable, err)
	}
}

// refused reports whether err says the Exchanger refused the call without
// sending it to Rebell: such an error has a RetryAfter() time.Duration
// method (rebell.TokenExchanger; the gateway's guard of calls to Rebell,
// docs/rebell-calls.md), recognised by behaviour as the handler does.
func refused(err error) bool {
	var r interface{ RetryAfter() time.Duration }
	return errors.As(err, &r)
}
