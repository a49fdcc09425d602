package handler

import "net/http"

// Error is an error response the handler returns instead of writing it, when
// Config.ReturnErrors is set: a row of the error table in docs/contract.md.
// Its headers (WWW-Authenticate, Retry-After, Allow) are already set on the
// response; the host writes the status and a body of its own. Its fields and
// message never hold a token, an auth code or a session id.
type Error struct {
	// Status is the HTTP status, e.g. 401.
	Status int
	// Code is the error code, e.g. "session_invalid".
	Code string
	// Message is the one-sentence explanation the JSON body would carry.
	Message string
	// ResultCode is Rebell's resultCode when the JSON body would carry one.
	ResultCode string
}

// Error returns "<code>: <message>".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// returnError sets e's headers on w and returns it as an *Error.
func returnError(w http.ResponseWriter, e *apiError, resultCode string) *Error {
	setErrorHeaders(w.Header(), e)
	return &Error{Status: e.status, Code: e.code, Message: e.message, ResultCode: resultCode}
}
