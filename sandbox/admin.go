package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// maxAdminBody caps the bodies of the /sandbox/* endpoints.
const maxAdminBody = 4 << 10

// Limits of POST /sandbox/authcode.
const (
	maxScopes   = 16
	maxScopeLen = 64
)

// authCodeRequest is the body of POST /sandbox/authcode.
type authCodeRequest struct {
	CustomerID *string  `json:"customerId"`
	Scopes     []string `json:"scopes"`
}

// authCodeResponse is the answer of POST /sandbox/authcode.
type authCodeResponse struct {
	AuthCode   string `json:"authCode"`
	CustomerID string `json:"customerId"`
}

// errorResponse is the error body of the /sandbox/* endpoints and of unknown
// paths.
type errorResponse struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// serveAuthCode answers POST .../sandbox/authcode: what my.getAuthCode gives
// a Mini App.
func (s *Sandbox) serveAuthCode(w http.ResponseWriter, r *http.Request) {
	var req authCodeRequest
	if !decodeAdminJSON(w, r, &req) {
		return
	}
	customerID := ""
	if req.CustomerID != nil {
		if msg := checkCustomerID(*req.CustomerID); msg != "" {
			writeError(w, http.StatusBadRequest, "bad_request", msg)
			return
		}
		customerID = *req.CustomerID
	}
	if len(req.Scopes) > maxScopes {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("At most %d scopes are allowed.", maxScopes))
		return
	}
	for _, sc := range req.Scopes {
		if sc == "" || len(sc) > maxScopeLen {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("A scope must be 1 to %d bytes.", maxScopeLen))
			return
		}
	}
	code, cid, err := s.issueAuthCode(customerID)
	if err != nil {
		writeError(w, http.StatusTooManyRequests, "too_many_auth_codes",
			"The sandbox holds too many auth codes; use some or wait for them to expire.")
		return
	}
	s.log.Debug("rebell sandbox: auth code issued")
	writeJSON(w, http.StatusOK, authCodeResponse{AuthCode: code, CustomerID: cid})
}

// checkCustomerID accepts 1 to 64 visible ASCII characters; it returns what
// is wrong otherwise.
func checkCustomerID(id string) string {
	if id == "" || len(id) > maxCustomerID {
		return fmt.Sprintf("customerId must be 1 to %d characters.", maxCustomerID)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return "customerId must be visible ASCII characters without spaces."
		}
	}
	return ""
}

// serveFaults answers POST and DELETE .../sandbox/faults.
func (s *Sandbox) serveFaults(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete {
		s.mu.Lock()
		s.faults.clear()
		s.mu.Unlock()
		s.log.Debug("rebell sandbox: faults cleared")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var spec faultSpec
	if !decodeAdminJSON(w, r, &spec) {
		return
	}
	f, err := spec.fault()
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error()+".")
		return
	}
	s.mu.Lock()
	added := s.faults.add(f)
	pending := s.faults.pending()
	s.mu.Unlock()
	if !added {
		writeError(w, http.StatusTooManyRequests, "too_many_faults",
			fmt.Sprintf("At most %d fault entries can be queued; DELETE them first.", maxQueuedFaults))
		return
	}
	s.log.Debug("rebell sandbox: fault queued",
		zap.String("result_code", f.resultCode), zap.Int("count", f.remaining), zap.Int("pending", pending))
	writeJSON(w, http.StatusOK, struct {
		Queued int `json:"queued"`
	}{pending})
}

// serveStats answers GET and DELETE .../sandbox/stats.
func (s *Sandbox) serveStats(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete {
		s.mu.Lock()
		s.counters = newCounters()
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, s.Stats())
}

// servePublicKey answers GET .../sandbox/public-key.
func (s *Sandbox) servePublicKey(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(s.publicKeyPEM)
}

// decodeAdminJSON decodes a /sandbox/* body into v: one JSON object, no
// unknown fields, nothing after it. An empty body leaves v as it is. On
// failure it writes a 400 and returns false.
func decodeAdminJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := readBody(w, r, maxAdminBody)
	if err != nil {
		msg := "The request body cannot be read."
		if errors.As(err, new(*http.MaxBytesError)) {
			msg = fmt.Sprintf("The request body is larger than %d bytes.", maxAdminBody)
		}
		writeError(w, http.StatusBadRequest, "bad_request", msg)
		return false
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return true
	}
	if body[0] != '{' {
		writeError(w, http.StatusBadRequest, "bad_request", "The request body must be a JSON object.")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := "Invalid JSON body: " + strings.TrimPrefix(err.Error(), "json: ") + "."
		if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) && te.Field != "" {
			msg = "Field " + te.Field + " has the wrong type."
		}
		writeError(w, http.StatusBadRequest, "bad_request", msg)
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "bad_request", "The request body has data after the JSON object.")
		return false
	}
	return true
}

// writeJSON writes v as a JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // cannot happen for the types written here
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal","message":"Cannot encode the response."}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError writes {"error":code,"message":message}.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorResponse{Error: code, Message: message})
}
