package sandbox

import (
	"fmt"
	"net/http"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Bounds of POST /sandbox/faults.
const (
	maxFaultCount      = 10_000
	maxQueuedFaults    = 1_000 // entries (POSTs) in the queue
	maxFaultDelay      = 60 * time.Second
	maxResultCodeLen   = 64
	maxResultStatusLen = 16
	maxResultMsgLen    = 256
)

// signMode says how an applyToken response is signed.
type signMode int

const (
	signNormal   signMode = iota // with the sandbox's key
	signForged                   // with another key: a well-formed signature that does not verify
	signUnsigned                 // no Signature header
)

// The calls a fault may answer (faultSpec.Call).
const (
	callApplyToken  = "applyToken"
	callCancelToken = "cancelToken"
)

// fault answers the next count applyToken calls (of grantType, when set),
// or cancelToken calls, instead of processing them.
type fault struct {
	remaining     int
	call          string // callApplyToken or callCancelToken
	grantType     string
	resultStatus  string
	resultCode    string
	resultMessage string
	httpStatus    int
	delay         time.Duration
	signing       signMode
}

// faultSpec is the body of POST /sandbox/faults.
type faultSpec struct {
	Count          *int   `json:"count"`
	ResultStatus   string `json:"resultStatus"`
	ResultCode     string `json:"resultCode"`
	ResultMessage  string `json:"resultMessage"`
	Delay          string `json:"delay"`
	HTTPStatus     *int   `json:"httpStatus"`
	GrantType      string `json:"grantType"`
	Call           string `json:"call"`
	ForgeSignature bool   `json:"forgeSignature"`
	Unsigned       bool   `json:"unsigned"`
}

// fault validates spec and fills in its defaults. The error message is meant
// for the test author.
func (spec faultSpec) fault() (fault, error) {
	f := fault{
		remaining:     1,
		call:          callApplyToken,
		grantType:     spec.GrantType,
		resultStatus:  rebell.StatusUnknown,
		resultCode:    rebell.CodeUnknownException,
		resultMessage: spec.ResultMessage,
		httpStatus:    http.StatusOK,
	}
	if spec.Count != nil {
		if *spec.Count < 1 || *spec.Count > maxFaultCount {
			return f, fmt.Errorf("count must be between 1 and %d", maxFaultCount)
		}
		f.remaining = *spec.Count
	}
	if spec.ResultStatus != "" {
		if !upperWord(spec.ResultStatus, maxResultStatusLen, false) {
			return f, fmt.Errorf("resultStatus must be 1 to %d letters A-Z (S, F, U, A or an unknown one)", maxResultStatusLen)
		}
		f.resultStatus = spec.ResultStatus
	}
	if spec.ResultCode != "" {
		if !upperWord(spec.ResultCode, maxResultCodeLen, true) {
			return f, fmt.Errorf("resultCode must be 1 to %d characters A-Z, 0-9 or _", maxResultCodeLen)
		}
		f.resultCode = spec.ResultCode
	}
	if len(spec.ResultMessage) > maxResultMsgLen {
		return f, fmt.Errorf("resultMessage must be at most %d bytes", maxResultMsgLen)
	}
	if f.resultMessage == "" {
		f.resultMessage = "Injected fault."
		if r, ok := results[f.resultCode]; ok {
			f.resultMessage = r.message
		}
	}
	if spec.Delay != "" {
		d, err := time.ParseDuration(spec.Delay)
		if err != nil || d < 0 || d > maxFaultDelay {
			return f, fmt.Errorf("delay must be a Go duration between 0s and %v", maxFaultDelay)
		}
		f.delay = d
	}
	if spec.HTTPStatus != nil {
		// 1xx cannot be a final response in net/http.
		if *spec.HTTPStatus < 200 || *spec.HTTPStatus > 599 {
			return f, fmt.Errorf("httpStatus must be between 200 and 599")
		}
		f.httpStatus = *spec.HTTPStatus
	}
	switch spec.GrantType {
	case "", rebell.GrantAuthorizationCode, rebell.GrantRefreshToken:
	default:
		return f, fmt.Errorf("grantType must be %s or %s", rebell.GrantAuthorizationCode, rebell.GrantRefreshToken)
	}
	switch spec.Call {
	case "", callApplyToken:
	case callCancelToken:
		if spec.GrantType != "" {
			return f, fmt.Errorf("grantType is an applyToken filter; leave it out with call cancelToken")
		}
		f.call = callCancelToken
	default:
		return f, fmt.Errorf("call must be %s (the default) or %s", callApplyToken, callCancelToken)
	}
	switch {
	case spec.ForgeSignature && spec.Unsigned:
		return f, fmt.Errorf("forgeSignature and unsigned exclude each other")
	case spec.ForgeSignature:
		f.signing = signForged
	case spec.Unsigned:
		f.signing = signUnsigned
	}
	return f, nil
}

// upperWord reports whether s is 1 to max characters of A-Z (and 0-9 and _
// when codeChars).
func upperWord(s string, max int, codeChars bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
		case codeChars && (c >= '0' && c <= '9' || c == '_'):
		default:
			return false
		}
	}
	return true
}

// faultQueue holds queued faults in order. The caller holds Sandbox.mu.
type faultQueue struct {
	items []fault
}

// add queues f; it fails when the queue is full.
func (q *faultQueue) add(f fault) bool {
	if len(q.items) >= maxQueuedFaults {
		return false
	}
	q.items = append(q.items, f)
	return true
}

// take consumes one use of the first fault that applies to a call (one of
// callApplyToken, callCancelToken) of grantType (applyToken only).
func (q *faultQueue) take(call, grantType string) (fault, bool) {
	for i := range q.items {
		f := &q.items[i]
		if f.call != call || f.grantType != "" && f.grantType != grantType {
			continue
		}
		taken := *f
		f.remaining--
		if f.remaining == 0 {
			q.items = append(q.items[:i], q.items[i+1:]...)
		}
		return taken, true
	}
	return fault{}, false
}

// pending is the number of calls the queued faults will still answer.
func (q *faultQueue) pending() int {
	n := 0
	for _, f := range q.items {
		n += f.remaining
	}
	return n
}

func (q *faultQueue) clear() { q.items = nil }
