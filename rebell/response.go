package rebell

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Limits checked on applyToken responses (docs/protocol.md).
const (
	// MaxResponseBytes caps an applyToken response body.
	MaxResponseBytes = 64 << 10
	maxResultCode    = 64
	maxResultMessage = 256
	maxTokenLen      = 128
	maxCustomerIDLen = 64
	maxExtendInfo    = 4096
	maxReferenceID   = 128
)

type result struct {
	ResultStatus  string `json:"resultStatus"`
	ResultCode    string `json:"resultCode"`
	ResultMessage string `json:"resultMessage"`
}

type applyTokenResponse struct {
	Result                 *result `json:"result"`
	AccessToken            *string `json:"accessToken"`
	AccessTokenExpiryTime  *string `json:"accessTokenExpiryTime"`
	RefreshToken           *string `json:"refreshToken"`
	RefreshTokenExpiryTime *string `json:"refreshTokenExpiryTime"`
	CustomerID             *string `json:"customerId"`
	ExtendInfo             *string `json:"extendInfo"`
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// parseResult reads only the result object, for error answers.
func parseResult(body []byte) (*result, error) {
	var r struct {
		Result *result `json:"result"`
	}
	if err := decodeStrict(body, &r); err != nil {
		return nil, err
	}
	if r.Result == nil {
		return nil, errors.New("no result object")
	}
	if err := r.Result.check(); err != nil {
		return nil, err
	}
	return r.Result, nil
}

func (r *result) check() error {
	if r.ResultStatus == "" {
		return errors.New("result without resultStatus")
	}
	if len(r.ResultStatus) > 8 {
		return errors.New("resultStatus too long")
	}
	if r.ResultCode == "" {
		return errors.New("result without resultCode")
	}
	if len(r.ResultCode) > maxResultCode {
		return fmt.Errorf("resultCode longer than %d characters", maxResultCode)
	}
	for i := 0; i < len(r.ResultCode); i++ {
		c := r.ResultCode[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return errors.New("resultCode is not upper-case letters, digits and underscores")
		}
	}
	if len(r.ResultMessage) > maxResultMessage*4 {
		return fmt.Errorf("resultMessage longer than %d characters", maxResultMessage)
	}
	if n := len([]rune(r.ResultMessage)); n > maxResultMessage {
		return fmt.Errorf("resultMessage longer than %d characters", maxResultMessage)
	}
	return nil
}

// ParseApplyTokenResponse parses an applyToken response body received with
// the given HTTP status for the given grant type. It returns the token on
// success and an *Error otherwise. It is exported for tests and fuzzing; the
// Client calls it after verifying the signature.
func ParseApplyTokenResponse(httpStatus int, body []byte, grantType string) (*Token, error) {
	tok, err := parseApplyToken(httpStatus, body, grantType)
	if err != nil {
		return nil, err
	}
	return tok, nil
}

func parseApplyToken(httpStatus int, body []byte, grantType string) (*Token, *Error) {
	bad := func(format string, args ...any) *Error {
		return &Error{Kind: KindBadResponse, HTTPStatus: httpStatus, Err: fmt.Errorf(format, args...)}
	}
	if len(body) > MaxResponseBytes {
		return nil, bad("response body over %d bytes", MaxResponseBytes)
	}
	var r applyTokenResponse
	if err := decodeStrict(body, &r); err != nil {
		if httpStatus >= 300 {
			return nil, &Error{Kind: KindConfiguration, HTTPStatus: httpStatus, Err: errors.New("HTTP error without a result")}
		}
		return nil, bad("response is not the JSON expected: %v", jsonProblem(err))
	}
	if r.Result == nil {
		if httpStatus >= 300 {
			return nil, &Error{Kind: KindConfiguration, HTTPStatus: httpStatus, Err: errors.New("HTTP error without a result")}
		}
		return nil, bad("response has no result")
	}
	if err := r.Result.check(); err != nil {
		return nil, bad("%v", err)
	}
	res := r.Result
	if res.ResultStatus != StatusSuccess || res.ResultCode != CodeSuccess {
		return nil, &Error{
			Kind:          Classify(res.ResultStatus, res.ResultCode),
			ResultStatus:  res.ResultStatus,
			ResultCode:    res.ResultCode,
			ResultMessage: res.ResultMessage,
			HTTPStatus:    httpStatus,
		}
	}
	if httpStatus < 200 || httpStatus >= 300 {
		return nil, bad("SUCCESS result with HTTP status %d", httpStatus)
	}
	tok := &Token{}
	if r.AccessToken == nil || *r.AccessToken == "" {
		return nil, bad("no accessToken")
	}
	if len(*r.AccessToken) > maxTokenLen {
		return nil, bad("accessToken longer than %d characters", maxTokenLen)
	}
	tok.AccessToken = NewSecret(*r.AccessToken)
	var err error
	if tok.AccessTokenExpiry, err = parseExpiry(r.AccessTokenExpiryTime); err != nil {
		return nil, bad("accessTokenExpiryTime: %v", err)
	}
	if r.RefreshToken != nil && *r.RefreshToken != "" {
		if len(*r.RefreshToken) > maxTokenLen {
			return nil, bad("refreshToken longer than %d characters", maxTokenLen)
		}
		tok.RefreshToken = NewSecret(*r.RefreshToken)
		if tok.RefreshTokenExpiry, err = parseExpiry(r.RefreshTokenExpiryTime); err != nil {
			return nil, bad("refreshTokenExpiryTime: %v", err)
		}
	} else if grantType == GrantAuthorizationCode {
		return nil, bad("no refreshToken")
	}
	if r.CustomerID != nil {
		if len(*r.CustomerID) > maxCustomerIDLen {
			return nil, bad("customerId longer than %d characters", maxCustomerIDLen)
		}
		tok.CustomerID = *r.CustomerID
	}
	if tok.CustomerID == "" && grantType == GrantAuthorizationCode {
		return nil, bad("no customerId")
	}
	if r.ExtendInfo != nil && len(*r.ExtendInfo) > maxExtendInfo {
		return nil, bad("extendInfo longer than %d characters", maxExtendInfo)
	}
	return tok, nil
}

func parseExpiry(s *string) (time.Time, error) {
	if s == nil || *s == "" {
		return time.Time{}, errors.New("missing")
	}
	if len(*s) > 64 {
		return time.Time{}, errors.New("too long")
	}
	t, err := time.Parse(time.RFC3339, *s)
	if err != nil {
		return time.Time{}, errors.New("not RFC 3339")
	}
	return t, nil
}

// jsonProblem describes a decoding error without quoting the input (which
// may hold a token).
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %s has the wrong type (%s)", te.Field, te.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated"
	default:
		return "malformed"
	}
}
