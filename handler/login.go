package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

const (
	// maxLoginBody is the largest login body accepted (docs/contract.md).
	maxLoginBody = 8 << 10
	// maxAuthCodeLen is the longest authCode accepted (docs/contract.md).
	maxAuthCodeLen = 64
)

// serveLogin serves POST <login_path> (docs/contract.md).
func (h *Handler) serveLogin(w http.ResponseWriter, r *http.Request) error {
	h.stripCredential(r.Header)
	if r.Method != http.MethodPost {
		return h.refuse(w, r, errMethodNotAllowed)
	}
	// Before the body is read: a login refused here spends no code and
	// calls nobody.
	if refused, err := h.refuseCrossSite(w, r); refused {
		return err
	}
	if ok, err := h.admitLogin(w, r); !ok {
		return err
	}
	code, e := readAuthCode(r)
	if e != nil {
		return h.refuse(w, r, e)
	}
	id, g, err := h.sessions.Login(r.Context(), rebell.NewSecret(code))
	if err == nil && g == nil {
		err = errors.New("handler: Login returned no grant")
	}
	if err == nil {
		if _, ok := h.sessions.ParseSessionID(id); !ok {
			err = errors.New("handler: Login returned a malformed session id")
		}
	}
	if err != nil {
		return h.refuseErr(w, r, err, nil)
	}

	body, err := json.Marshal(loginResponse{
		SessionID:  id,
		CustomerID: g.CustomerID,
		ExpiresAt:  g.SessionExpiry.UTC().Format(time.RFC3339),
	})
	if err != nil { // cannot happen: three strings
		return h.refuseErr(w, r, err, nil)
	}
	hd := w.Header()
	if h.cookie != "" {
		hd.Add("Set-Cookie", h.sessionCookie(id, g.SessionExpiry, h.secureCookie(r)))
	}
	setNoStoreJSON(hd, len(body))
	h.outcome(outcomeLogin)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}

// loginResponse is the body of a successful login.
type loginResponse struct {
	SessionID  string `json:"sessionId"`
	CustomerID string `json:"customerId"`
	ExpiresAt  string `json:"expiresAt"`
}

// sessionCookie returns the Set-Cookie value that hands out session id,
// living until expiry (a session cookie if expiry is zero).
func (h *Handler) sessionCookie(id string, expiry time.Time, secure bool) string {
	c := h.cookie + "=" + id + "; Path=/; HttpOnly" + h.cookieAttrs
	if !expiry.IsZero() {
		// At least a second: Max-Age=0 would delete the cookie just handed out.
		c += "; Max-Age=" + strconv.FormatInt(max(int64(expiry.Sub(h.now())/time.Second), 1), 10)
	}
	if secure {
		c += "; Secure"
	}
	return c
}

// clearCookie returns the Set-Cookie value that deletes the session cookie.
func (h *Handler) clearCookie(secure bool) string {
	c := h.cookie + "=; Path=/; HttpOnly" + h.cookieAttrs + "; Max-Age=0"
	if secure {
		c += "; Secure"
	}
	return c
}

// readAuthCode reads the login body: JSON {"authCode":"..."} or, with
// Content-Type application/x-www-form-urlencoded, the form field authCode.
// It returns errRequestTooLarge for a body over maxLoginBody and
// errInvalidAuthCode for anything else that is not exactly one valid
// authCode.
func readAuthCode(r *http.Request) (string, *apiError) {
	if r.ContentLength > maxLoginBody {
		return "", errRequestTooLarge
	}
	if r.Body == nil {
		return "", errInvalidAuthCode
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxLoginBody+1))
	if len(body) > maxLoginBody {
		return "", errRequestTooLarge
	}
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return "", errRequestTooLarge // a limit set before this handler
		}
		return "", errInvalidAuthCode
	}

	var code string
	var ok bool
	if isForm(r.Header.Get("Content-Type")) {
		code, ok = formAuthCode(body)
	} else {
		code, ok = jsonAuthCode(body)
	}
	if !ok || !validAuthCode(code) {
		return "", errInvalidAuthCode
	}
	return code, nil
}

// isForm reports whether the media type of a Content-Type value is
// application/x-www-form-urlencoded. Anything else is read as JSON.
func isForm(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(trimBlanks(mt), "application/x-www-form-urlencoded")
}

// formAuthCode returns the form's only authCode value.
func formAuthCode(body []byte) (string, bool) {
	q, err := url.ParseQuery(string(body))
	if err != nil {
		return "", false
	}
	v := q["authCode"]
	if len(v) != 1 {
		return "", false
	}
	return v[0], true
}

// jsonAuthCode returns the authCode member of a JSON object. The body must be
// exactly one object; authCode (the name is case-sensitive) must appear once
// and be a string. Other members are ignored.
func jsonAuthCode(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	var code string
	found := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		if t != "authCode" {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return "", false
			}
			continue
		}
		t, err = dec.Token()
		s, isString := t.(string)
		if err != nil || !isString || found {
			return "", false
		}
		code, found = s, true
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return "", false
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", false // something after the object
	}
	return code, found
}

// validAuthCode reports whether s is 1 to 64 characters from
// A-Z a-z 0-9 . _ ~ + / = - (docs/contract.md).
func validAuthCode(s string) bool {
	if len(s) == 0 || len(s) > maxAuthCodeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=' || c == '-') {
			return false
		}
	}
	return true
}

// serveLogout serves POST <logout_path> (docs/contract.md): it ends the sessions the
// request names and answers 204 whatever they were. If an end cannot be
// stored (a shared store is down) it answers 503 store_unavailable and keeps
// the cookie, so the Mini App can try again.
func (h *Handler) serveLogout(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		h.stripCredential(r.Header)
		return h.refuse(w, r, errMethodNotAllowed)
	}
	if h.cookie != "" && h.crossSite(r) {
		h.stripCredential(r.Header)
		return h.refuse(w, r, errCrossSite)
	}
	keys := h.logoutKeys(r)
	h.stripCredential(r.Header)
	// The client may hang up; the session must end all the same.
	ctx := context.WithoutCancel(r.Context())
	for i := range keys {
		if err := h.sessions.Logout(ctx, keys[i]); err != nil {
			h.log.Warn("logout failed; the session stays valid until it is ended",
				zap.String("session", keys[i].Tag()), zap.Error(err))
			return h.refuseErr(w, r, err, &keys[i])
		}
	}
	hd := w.Header()
	if h.cookie != "" {
		hd.Add("Set-Cookie", h.clearCookie(h.secureCookie(r)))
	}
	hd.Set("Cache-Control", "no-store")
	h.outcome(outcomeLogout)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// logoutKeys returns the keys of the well-formed sessions a logout request
// carries: the one the header names, and the one its cookie names when that
// differs (the cookie is being cleared, so its session must not outlive it).
func (h *Handler) logoutKeys(r *http.Request) []cache.Key {
	var keys []cache.Key
	if id, st := h.headerCredential(r.Header[h.sessionHeader]); st == credValid {
		if k, ok := h.sessions.ParseSessionID(id); ok {
			keys = append(keys, k)
		}
	}
	if h.cookie == "" {
		return keys
	}
	for _, line := range r.Header["Cookie"] {
		for line != "" {
			var name, value string
			name, value, line = nextCookie(line)
			if name != h.cookie {
				continue
			}
			if k, ok := h.sessions.ParseSessionID(value); ok && (len(keys) == 0 || keys[0] != k) {
				return append(keys, k)
			}
		}
	}
	return keys
}
