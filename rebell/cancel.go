package rebell

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// OpCancelToken names cancelToken in an Error's Op.
const OpCancelToken = "cancelToken"

// CancelTokenPath is the only path Rebell documents for cancelToken, used
// whatever ClientConfig.APIVersion says (docs/protocol.md).
const CancelTokenPath = "/v1/authorizations/cancelToken"

// cancelTokenRequest is the request body of cancelToken.
type cancelTokenRequest struct {
	AccessToken string `json:"accessToken"`
}

// cancelTokenResponse is the response body of cancelToken.
type cancelTokenResponse struct {
	Result     *result `json:"result"`
	ExtendInfo *string `json:"extendInfo"`
}

// ClassifyCancel returns what a non-success cancelToken result means: the
// codes of an access token Rebell no longer holds as live are
// KindNothingToCancel, the rest are read as by Classify.
func ClassifyCancel(resultStatus, resultCode string) Kind {
	switch resultCode {
	case CodeInvalidAccessToken, CodeExpiredAccessToken:
		return KindNothingToCancel
	case CodeRequestTrafficExceedLimit, CodeUnknownException:
		return KindRetryable
	}
	if resultStatus == StatusFail {
		return KindConfiguration
	}
	return KindRetryable
}

// cancelURL returns the cancelToken URL under the endpoint u.
func cancelURL(u *url.URL) *url.URL {
	target := *u
	target.Path = strings.TrimSuffix(u.Path, "/") + CancelTokenPath
	if u.RawPath != "" {
		target.RawPath = strings.TrimSuffix(u.RawPath, "/") + CancelTokenPath
	}
	return &target
}

// CancelURL returns the cancelToken URL the client posts to.
func (c *Client) CancelURL() string { return c.cancelURL.String() }

// CancelToken calls cancelToken (see TokenCanceller), with the signing,
// verification, retries and redaction of applyToken. ClientConfig.Observe
// is not called: it speaks of grant types.
func (c *Client) CancelToken(ctx context.Context, accessToken Secret) error {
	switch {
	case accessToken.IsZero():
		return &Error{Op: OpCancelToken, Kind: KindNothingToCancel, Err: errors.New("no access token")}
	case accessToken.Len() > maxTokenLen:
		return &Error{Op: OpCancelToken, Kind: KindConfiguration, Err: fmt.Errorf("access token longer than %d characters", maxTokenLen)}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cancelTokenRequest{AccessToken: accessToken.Reveal()}); err != nil {
		return &Error{Op: OpCancelToken, Kind: KindConfiguration, Err: errors.New("access token cannot be encoded")}
	}
	op := &call{
		url:   c.cancelURL,
		uri:   c.cancelURL.RequestURI(),
		body:  bytes.TrimSuffix(buf.Bytes(), []byte("\n")),
		parse: parseCancelToken,
		op:    OpCancelToken,
		observe: func(result string, took time.Duration) {
			if c.cfg.ObserveCancel != nil {
				c.cfg.ObserveCancel(result, took)
			}
		},
	}
	if e := c.do(ctx, op); e != nil {
		return e
	}
	return nil
}

// ParseCancelTokenResponse parses a cancelToken response body received with
// the given HTTP status: nil on SUCCESS, an *Error otherwise. It is exported
// for tests and fuzzing; the Client calls it after verifying the signature.
func ParseCancelTokenResponse(httpStatus int, body []byte) error {
	if e := parseCancelToken(httpStatus, body); e != nil {
		e.Op = OpCancelToken
		return e
	}
	return nil
}

func parseCancelToken(httpStatus int, body []byte) *Error {
	bad := func(format string, args ...any) *Error {
		return &Error{Kind: KindBadResponse, HTTPStatus: httpStatus, Err: fmt.Errorf(format, args...)}
	}
	if len(body) > MaxResponseBytes {
		return bad("response body over %d bytes", MaxResponseBytes)
	}
	var r cancelTokenResponse
	if err := decodeStrict(body, &r); err != nil || r.Result == nil {
		if httpStatus >= 300 {
			return &Error{Kind: KindConfiguration, HTTPStatus: httpStatus, Err: errors.New("HTTP error without a result")}
		}
		if err != nil {
			return bad("response is not the JSON expected: %v", jsonProblem(err))
		}
		return bad("response has no result")
	}
	if err := r.Result.check(); err != nil {
		return bad("%v", err)
	}
	res := r.Result
	if res.ResultStatus != StatusSuccess || res.ResultCode != CodeSuccess {
		return &Error{
			Kind:          ClassifyCancel(res.ResultStatus, res.ResultCode),
			ResultStatus:  res.ResultStatus,
			ResultCode:    res.ResultCode,
			ResultMessage: res.ResultMessage,
			HTTPStatus:    httpStatus,
		}
	}
	if httpStatus < 200 || httpStatus >= 300 {
		return bad("SUCCESS result with HTTP status %d", httpStatus)
	}
	if r.ExtendInfo != nil && len(*r.ExtendInfo) > maxExtendInfo {
		return bad("extendInfo longer than %d characters", maxExtendInfo)
	}
	return nil
}
