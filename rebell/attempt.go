package rebell

import (
	"context"
	"time"
)

// AttemptInfo is what one applyToken or cancelToken attempt got, for ClientConfig.OnAttempt
// (tracing). It holds no token, code or message: only classes and codes.
type AttemptInfo struct {
	// GrantType is applyToken's AUTHORIZATION_CODE or REFRESH_TOKEN; ""
	// for cancelToken.
	GrantType string
	// HTTPStatus is the response's status, 0 without a response.
	HTTPStatus int
	// ResultStatus and ResultCode are Rebell's result ("S" and SUCCESS on
	// success); "" without one. ResultCode is as the body said it: read
	// Verified before trusting it.
	ResultStatus, ResultCode string
	// Verified is whether the answer's signature was verified.
	Verified bool
	// Result is the attempt's result as the metrics name it (see
	// MetricResult).
	Result string
	// Took is how long the attempt took.
	Took time.Duration
}

// onAttempt reports an attempt that ended with e (nil: SUCCESS) to OnAttempt.
func (c *Client) onAttempt(ctx context.Context, grantType string, status int, took time.Duration, e *Error) {
	if c.cfg.OnAttempt == nil {
		return
	}
	info := AttemptInfo{GrantType: grantType, HTTPStatus: status, Took: took}
	switch {
	case e != nil:
		info.ResultStatus, info.ResultCode, info.Verified = e.ResultStatus, e.ResultCode, e.Verified
		info.Result = e.metricResult()
		if info.HTTPStatus == 0 {
			info.HTTPStatus = e.HTTPStatus
		}
	default:
		info.ResultStatus, info.ResultCode, info.Verified = StatusSuccess, CodeSuccess, c.VerifiesResponses()
		info.Result = CodeSuccess
	}
	c.cfg.OnAttempt(ctx, info)
}
