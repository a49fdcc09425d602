package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Field limits of the applyToken body (docs/protocol.md).
const (
	maxGrantTypeLen         = 64
	maxReferenceClientIDLen = 128
	maxExtendInfoLen        = 4096
)

// tokenRequest is a validated applyToken body.
type tokenRequest struct {
	grantType         string
	authCode          string
	refreshToken      string
	referenceClientID string
	extendInfo        string
}

// readBody reads r's body, at most limit bytes; beyond that the error is an
// *http.MaxBytesError.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

// peekGrantType returns the body's grantType if it is one of the two grant
// types, and UNKNOWN otherwise. It is lenient: it serves the stats and the
// faults' grantType filter, which come before the body is validated.
func peekGrantType(body []byte) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return grantUnknown
	}
	var g string
	if json.Unmarshal(fields["grantType"], &g) != nil {
		return grantUnknown
	}
	switch g {
	case rebell.GrantAuthorizationCode, rebell.GrantRefreshToken:
		return g
	}
	return grantUnknown
}

// parseTokenRequest parses and validates an applyToken body strictly. It
// walks the JSON tokens itself rather than decoding into a struct, because
// encoding/json matches field names case-insensitively and lets a repeated
// field win silently; Rebell's fields are case-sensitive and the sandbox
// rejects duplicates. JSON null counts as an absent field (Alipay+ allows
// it); an empty string does not.
//
// On failure it returns the answer to send (PARAM_ILLEGAL or
// AUTH_CLIENT_UNSUPPORTED_GRANT_TYPE) and false.
func parseTokenRequest(body []byte, v apiVersion) (tokenRequest, answer, bool) {
	var req tokenRequest
	present, msg := decodeFields(body, v, &req)
	if msg != "" {
		return req, answerFor(rebell.CodeParamIllegal, msg), false
	}
	if msg := validateFields(req, present); msg != "" {
		return req, answerFor(rebell.CodeParamIllegal, msg), false
	}
	switch req.grantType {
	case rebell.GrantAuthorizationCode, rebell.GrantRefreshToken:
	default:
		return req, answerFor(rebell.CodeAuthClientUnsupportedGrantType, ""), false
	}
	hasCode, hasRefresh := present["authCode"], present["refreshToken"]
	switch {
	case hasCode && hasRefresh:
		return req, answerFor(rebell.CodeParamIllegal, "authCode and refreshToken must not both be sent."), false
	case req.grantType == rebell.GrantAuthorizationCode && !hasCode:
		return req, answerFor(rebell.CodeParamIllegal, "authCode is required for grantType AUTHORIZATION_CODE."), false
	case req.grantType == rebell.GrantAuthorizationCode && hasRefresh:
		return req, answerFor(rebell.CodeParamIllegal, "refreshToken must not be sent with grantType AUTHORIZATION_CODE."), false
	case req.grantType == rebell.GrantRefreshToken && !hasRefresh:
		return req, answerFor(rebell.CodeParamIllegal, "refreshToken is required for grantType REFRESH_TOKEN."), false
	case req.grantType == rebell.GrantRefreshToken && hasCode:
		return req, answerFor(rebell.CodeParamIllegal, "authCode must not be sent with grantType REFRESH_TOKEN."), false
	}
	return req, answer{}, true
}

// decodeFields reads the body's single JSON object into req. present holds
// the fields given with a string value. msg says what is wrong, if anything.
func decodeFields(body []byte, v apiVersion, req *tokenRequest) (present map[string]bool, msg string) {
	slots := map[string]*string{
		"grantType":    &req.grantType,
		"authCode":     &req.authCode,
		"refreshToken": &req.refreshToken,
		"extendInfo":   &req.extendInfo,
	}
	if v == apiV2 {
		slots["referenceClientId"] = &req.referenceClientID
	}
	return decodeStringFields(body, slots, func(key string) string {
		if key == "referenceClientId" {
			return "referenceClientId is not a v1 field; use v2 applyToken."
		}
		return "Unknown field " + quoteField(key) + "."
	})
}

// decodeStringFields reads body, a single JSON object whose fields are all
// strings (or null, meaning absent), into slots. unknown says what is wrong
// with a field that has no slot. present holds the fields given with a
// string value; msg says what is wrong, if anything.
func decodeStringFields(body []byte, slots map[string]*string, unknown func(key string) string) (present map[string]bool, msg string) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, "The request body is empty."
	}
	if !utf8.Valid(body) {
		return nil, "The request body is not valid UTF-8."
	}
	const notJSON = "The request body is not valid JSON."
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, notJSON
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, "The request body must be a JSON object."
	}
	present = make(map[string]bool, len(slots))
	seen := make(map[string]bool, len(slots))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, notJSON
		}
		key, _ := tok.(string) // object keys are strings
		slot, known := slots[key]
		switch {
		case !known:
			return nil, unknown(key)
		case seen[key]:
			return nil, "Field " + key + " appears more than once."
		}
		seen[key] = true
		tok, err = dec.Token()
		if err != nil {
			return nil, notJSON
		}
		switch val := tok.(type) {
		case string:
			*slot = val
			present[key] = true
		case nil: // null: absent
		default:
			return nil, "Field " + key + " must be a string."
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, notJSON
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "The request body has data after the JSON object."
	}
	return present, ""
}

// quoteField quotes an unknown field name for a message, shortened so that
// the message stays under Rebell's 256-character resultMessage limit.
func quoteField(s string) string {
	const max = 40
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	return strconv.Quote(s)
}

// validateFields checks the values of the fields present: no empty strings,
// lengths, and extendInfo being a JSON object.
func validateFields(req tokenRequest, present map[string]bool) string {
	if !present["grantType"] {
		return "grantType is required."
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"grantType", req.grantType, maxGrantTypeLen},
		{"authCode", req.authCode, maxAuthCodeIn},
		{"refreshToken", req.refreshToken, maxRefreshTokIn},
		{"referenceClientId", req.referenceClientID, maxReferenceClientIDLen},
		{"extendInfo", req.extendInfo, maxExtendInfoLen},
	} {
		if !present[f.name] {
			continue
		}
		if f.value == "" {
			return f.name + " must not be an empty string; leave it out instead."
		}
		if utf8.RuneCountInString(f.value) > f.max {
			return fmt.Sprintf("%s is longer than %d characters.", f.name, f.max)
		}
	}
	if present["extendInfo"] && !isJSONObject(req.extendInfo) {
		return `extendInfo must be a JSON object in a string, e.g. "{\"customerBelongsTo\":\"...\"}".`
	}
	return ""
}

// isJSONObject reports whether s is exactly one JSON object.
func isJSONObject(s string) bool {
	b := bytes.TrimSpace([]byte(s))
	return len(b) > 0 && b[0] == '{' && json.Valid(b)
}
