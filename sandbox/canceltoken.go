package sandbox

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Limits of cancelToken requests (docs/protocol.md).
const (
	maxCancelTokenBody = 16 << 10
	maxAccessTokenIn   = 128
)

// cancelRequest is a validated cancelToken body.
type cancelRequest struct {
	accessToken string
	extendInfo  string
}

// serveCancelToken answers POST .../v1/authorizations/cancelToken, as
// strictly as applyToken: the same headers, signature and body rules.
// SUCCESS revokes the access token's authorization: its refresh tokens
// answer INVALID_REFRESH_TOKEN from then on.
func (s *Sandbox) serveCancelToken(w http.ResponseWriter, r *http.Request) {
	uri := requestURI(r)
	body, err := readBody(w, r, maxCancelTokenBody)
	if err != nil {
		msg := "The request body cannot be read."
		if errors.As(err, new(*http.MaxBytesError)) {
			msg = "The request body is larger than 16 KiB."
		}
		s.writeCancelAnswer(w, uri, answerFor(rebell.CodeParamIllegal, msg))
		return
	}
	if a, ok := s.authenticate(r.Header, uri, body, s.now()); !ok {
		s.writeCancelAnswer(w, uri, a)
		return
	}

	s.mu.Lock()
	f, faulted := s.faults.take(callCancelToken, "")
	s.mu.Unlock()
	if faulted {
		if f.delay > 0 {
			wait(r, f.delay)
		}
		s.writeCancelAnswer(w, uri, answer{
			httpStatus: f.httpStatus,
			body: tokenResponse{Result: result{
				ResultCode: f.resultCode, ResultStatus: f.resultStatus, ResultMessage: f.resultMessage,
			}},
			signing: f.signing,
		})
		return
	}

	req, msg := parseCancelRequest(body)
	if msg != "" {
		s.writeCancelAnswer(w, uri, answerFor(rebell.CodeParamIllegal, msg))
		return
	}
	now := s.now()
	s.mu.Lock()
	code := s.store.cancelToken(now, req.accessToken)
	s.mu.Unlock()
	s.writeCancelAnswer(w, uri, answerFor(code, ""))
}

// parseCancelRequest parses and validates a cancelToken body strictly (see
// parseTokenRequest): accessToken required, 1 to 128 characters without
// '@', '#' or '?'; extendInfo optional, a JSON object of at most 4096
// characters. It returns what is wrong, if anything.
func parseCancelRequest(body []byte) (cancelRequest, string) {
	var req cancelRequest
	present, msg := decodeStringFields(body, map[string]*string{
		"accessToken": &req.accessToken,
		"extendInfo":  &req.extendInfo,
	}, func(key string) string { return "Unknown field " + quoteField(key) + "." })
	switch {
	case msg != "":
		return req, msg
	case !present["accessToken"]:
		return req, "accessToken is required."
	case req.accessToken == "":
		return req, "accessToken must not be an empty string."
	case utf8.RuneCountInString(req.accessToken) > maxAccessTokenIn:
		return req, fmt.Sprintf("accessToken is longer than %d characters.", maxAccessTokenIn)
	case strings.ContainsAny(req.accessToken, "@#?"):
		return req, "accessToken must not contain '@', '#' or '?'."
	}
	if present["extendInfo"] {
		switch {
		case req.extendInfo == "":
			return req, "extendInfo must not be an empty string; leave it out instead."
		case utf8.RuneCountInString(req.extendInfo) > maxExtendInfoLen:
			return req, fmt.Sprintf("extendInfo is longer than %d characters.", maxExtendInfoLen)
		case !isJSONObject(req.extendInfo):
			return req, `extendInfo must be a JSON object in a string, e.g. "{\"key\":\"...\"}".`
		}
	}
	return req, ""
}

// writeCancelAnswer signs a and writes it, and counts it in the stats.
// Every cancelToken response goes through here.
func (s *Sandbox) writeCancelAnswer(w http.ResponseWriter, uri string, a answer) {
	a, body := s.signAnswer(w.Header(), uri, a)
	code := a.body.Result.ResultCode
	s.mu.Lock()
	s.counters.recordCancel(code)
	s.mu.Unlock()
	if ce := s.log.Check(zap.DebugLevel, "rebell sandbox: cancelToken"); ce != nil {
		ce.Write(
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
