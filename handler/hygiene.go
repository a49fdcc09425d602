package handler

import (
	"net/http"
	"strings"

	"github.com/rebell-gateway/caddy-rebell/cache"
)

// Header hygiene and reading the session credential (docs/contract.md).
// Everything on the path of a request with a valid session works on the
// request's own strings and does not allocate.

// stripSpoofed deletes every request header that names the access-token or
// customer-id header, compared case-insensitively with '_' read as '-' and
// trailing blanks ignored (Go keeps "X_Rebell_Access_Token" and
// "X-Rebell-Access-Token " as keys of their own, and a server behind the
// gateway may read them as the real header). Variants of the session header
// other than its canonical key go too: they are never read as the
// credential, and the upstream must not see a session id. When the access
// token goes in the session header (Authorization), that header is left for
// the credential to be read; it is removed before the token is set.
func (h *Handler) stripSpoofed(hd http.Header) {
	for k := range hd {
		if sameHeader(k, h.accessNorm) && (!h.accessIsSession || k != h.sessionHeader) || sameHeader(k, h.customerNorm) ||
			k != h.sessionHeader && sameHeader(k, h.sessionNorm) || h.isIdentityHeader(k) {
			delete(hd, k)
		}
	}
}

// isIdentityHeader reports whether k names the identity-assertion header
// (never true without Config.Identity).
func (h *Handler) isIdentityHeader(k string) bool {
	return h.identityNorm != "" && sameHeader(k, h.identityNorm)
}

// stripCredential removes the session credential from what the upstream
// sees: the session header (whatever it holds) and the session cookie.
func (h *Handler) stripCredential(hd http.Header) {
	delete(hd, h.sessionHeader)
	if h.cookie != "" {
		removeCookie(hd, h.cookie)
	}
}

// normalizeHeaderName lower-cases an ASCII header name and reads '_' as '-'.
func normalizeHeaderName(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = normByte(c)
	}
	return string(b)
}

func normByte(c byte) byte {
	switch {
	case c == '_':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + ('a' - 'A')
	}
	return c
}

// sameHeader reports whether the header key k names the header whose
// normalized name is norm (see normalizeHeaderName), ignoring blanks after
// the name.
func sameHeader(k, norm string) bool {
	if len(k) < len(norm) {
		return false
	}
	for i := 0; i < len(norm); i++ {
		if normByte(k[i]) != norm[i] {
			return false
		}
	}
	for i := len(norm); i < len(k); i++ {
		if k[i] != ' ' && k[i] != '\t' {
			return false
		}
	}
	return true
}

// credState is what a request carries as its session credential.
type credState uint8

const (
	credAbsent  credState = iota // no credential
	credInvalid                  // a credential that is not a session id, or several that disagree
	credValid                    // a well-formed session id
)

// credential reads the session id from the session header first, then from
// the session cookie, and returns its key.
//
// With the Authorization header, only the Bearer scheme carries the session;
// another scheme, or Bearer with no token, counts as no credential in the
// header. Several header values count only if they agree.
//
// Among several session cookies (browsers send one per matching path and
// domain), the first well-formed one is used.
func (h *Handler) credential(r *http.Request) (cache.Key, credState) {
	if id, st := h.headerCredential(r.Header[h.sessionHeader]); st != credAbsent {
		if st == credInvalid {
			return cache.Key{}, credInvalid
		}
		if k, ok := h.sessions.ParseSessionID(id); ok {
			return k, credValid
		}
		return cache.Key{}, credInvalid
	}
	if h.cookie == "" {
		return cache.Key{}, credAbsent
	}
	st := credAbsent
	for _, line := range r.Header["Cookie"] {
		for line != "" {
			var name, value string
			name, value, line = nextCookie(line)
			if name != h.cookie || value == "" {
				continue
			}
			if k, ok := h.sessions.ParseSessionID(value); ok {
				return k, credValid
			}
			st = credInvalid
		}
	}
	return cache.Key{}, st
}

// headerCredential picks the session id out of the session header's values.
// It returns credValid with an id still to be parsed.
func (h *Handler) headerCredential(vals []string) (string, credState) {
	var id string
	for _, v := range vals {
		v = trimBlanks(v)
		if h.bearer {
			var ok bool
			if v, ok = bearerToken(v); !ok {
				continue
			}
		}
		if v == "" {
			continue
		}
		if id != "" && id != v {
			return "", credInvalid
		}
		id = v
	}
	if id == "" {
		return "", credAbsent
	}
	return id, credValid
}

// bearerToken returns the token of an Authorization value of the Bearer
// scheme (case-insensitive, then one or more blanks), and whether v is of
// that scheme. v has no leading or trailing blanks.
func bearerToken(v string) (string, bool) {
	const scheme = "bearer"
	if len(v) < len(scheme) {
		return "", false
	}
	for i := 0; i < len(scheme); i++ {
		if v[i]|0x20 != scheme[i] {
			return "", false
		}
	}
	rest := v[len(scheme):]
	if rest == "" {
		return "", true
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false // "Bearerfoo" is another scheme
	}
	return trimBlanks(rest), true
}

func trimBlanks(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// nextCookie splits the first cookie off a Cookie header value
// ("a=1; b=2"): its name, its value (without surrounding double quotes) and
// the rest of the line. A pair without '=' has an empty name.
func nextCookie(line string) (name, value, rest string) {
	pair, rest, _ := strings.Cut(line, ";")
	pair = trimBlanks(pair)
	name, value, ok := strings.Cut(pair, "=")
	if !ok {
		return "", "", rest
	}
	name, value = trimBlanks(name), trimBlanks(value)
	if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
		value = value[1 : len(value)-1]
	}
	return name, value, rest
}

// removeCookie removes every cookie called name from the Cookie header
// values, keeping the other cookies in order, and deletes the header when no
// cookie remains. It allocates only when there is something to remove.
func removeCookie(hd http.Header, name string) {
	lines := hd["Cookie"]
	n, changed := 0, false
	for _, line := range lines {
		if !hasCookie(line, name) {
			lines[n] = line
			n++
			continue
		}
		changed = true
		if rest := withoutCookie(line, name); rest != "" {
			lines[n] = rest
			n++
		}
	}
	if !changed {
		return
	}
	if n == 0 {
		delete(hd, "Cookie")
		return
	}
	clear(lines[n:])
	hd["Cookie"] = lines[:n]
}

func hasCookie(line, name string) bool {
	for line != "" {
		var n string
		n, _, line = nextCookie(line)
		if n == name {
			return true
		}
	}
	return false
}

// withoutCookie rebuilds a Cookie header value without the cookies called
// name. Pairs are kept as sent (trimmed), joined with "; ".
func withoutCookie(line, name string) string {
	var b strings.Builder
	b.Grow(len(line))
	for line != "" {
		var pair string
		pair, line, _ = strings.Cut(line, ";")
		pair = trimBlanks(pair)
		if pair == "" {
			continue
		}
		if n, _, ok := strings.Cut(pair, "="); ok && trimBlanks(n) == name {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(pair)
	}
	return b.String()
}

// validToken reports whether s is an HTTP token (RFC 9110 §5.6.2), which is
// what header field names and cookie names must be.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
