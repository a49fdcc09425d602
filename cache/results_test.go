package cache

import (
	"errors"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// TestResultOfBoundsLabels: the result of a login or refresh, a metric
// label, is a known resultCode or one of a fixed set of words, whatever
// code an answer (verified or not) claims.
func TestResultOfBoundsLabels(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{&rebell.Error{Kind: rebell.KindAuthCodeRejected, ResultCode: rebell.CodeUsedCode, Verified: true}, rebell.CodeUsedCode},
		{&rebell.Error{Kind: rebell.KindConfiguration, ResultCode: "MADE_UP_4711", Verified: true}, rebell.ResultOtherCode},
		{&rebell.Error{Kind: rebell.KindRetryable, HTTPStatus: 503, ResultCode: "RANDOM_0001"}, rebell.ResultOtherCode},
		{&rebell.Error{Kind: rebell.KindRetryable, HTTPStatus: 503, ResultCode: rebell.CodeUnknownException}, rebell.CodeUnknownException},
		{&rebell.Error{Kind: rebell.KindBadSignature, ResultCode: "FORGED_CODE"}, resultBadSignature},
		{&rebell.Error{Kind: rebell.KindRetryable, HTTPStatus: 502}, resultTransportError},
		{errors.New("dial tcp: refused"), resultTransportError},
	}
	for _, tc := range cases {
		if got := resultOf(tc.err); got != tc.want {
			t.Errorf("resultOf(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
