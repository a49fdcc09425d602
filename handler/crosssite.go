package handler

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Cross-site requests and the session cookie's attributes
// (docs/contract.md, "Cross-site requests" and the cookie block). They
// matter only when the session cookie is on: a browser sends a cookie on
// its own, a Mini App's my.request sends the session id it was given.

// CookieSecure values.
const (
	// CookieSecureAuto sets Secure when the request came over TLS, or from
	// a trusted proxy that says X-Forwarded-Proto: https.
	CookieSecureAuto = "auto"
	// CookieSecureAlways always sets Secure.
	CookieSecureAlways = "always"
)

// CookieSameSite values.
const (
	SameSiteLax    = "lax"
	SameSiteStrict = "strict"
	SameSiteNone   = "none"
)

// cookieAttrs are the attributes of the session cookie after Path and
// HttpOnly, fixed at New: "; SameSite=…" and "; Domain=…".
func cookieAttrs(cfg Config) (string, error) {
	secure := strings.ToLower(orDefault(cfg.CookieSecure, CookieSecureAuto))
	sameSite := strings.ToLower(orDefault(cfg.CookieSameSite, SameSiteLax))
	if secure != CookieSecureAuto && secure != CookieSecureAlways {
		return "", fmt.Errorf("handler: cookie secure %q is not auto or always", cfg.CookieSecure)
	}
	var attrs string
	switch sameSite {
	case SameSiteLax:
		attrs = "; SameSite=Lax"
	case SameSiteStrict:
		attrs = "; SameSite=Strict"
	case SameSiteNone:
		if secure != CookieSecureAlways {
			// Browsers drop a SameSite=None cookie that is not Secure.
			return "", fmt.Errorf("handler: cookie same_site none requires secure always")
		}
		attrs = "; SameSite=None"
	default:
		return "", fmt.Errorf("handler: cookie same_site %q is not lax, strict or none", cfg.CookieSameSite)
	}
	if d := cfg.CookieDomain; d != "" {
		if !validCookieDomain(d) {
			return "", fmt.Errorf("handler: cookie domain %q is not a host name", d)
		}
		attrs += "; Domain=" + d
	}
	return attrs, nil
}

// validCookieDomain reports whether d is a DNS name (letters, digits, '-'
// and '.', an optional leading dot), the only values a Domain attribute can
// usefully hold.
func validCookieDomain(d string) bool {
	d = strings.TrimPrefix(d, ".")
	if d == "" || len(d) > 253 || d[0] == '.' || d[len(d)-1] == '.' || strings.Contains(d, "..") {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// secureCookie reports whether the cookie set in answer to r gets Secure:
// always with secure always; else when r came over TLS, or from a trusted
// proxy (Config.TrustedProxy) whose X-Forwarded-Proto is https. A client
// that is not a trusted proxy cannot ask for it with that header.
func (h *Handler) secureCookie(r *http.Request) bool {
	if h.cookieAlwaysSecure || r.TLS != nil {
		return true
	}
	if h.trustedProxy == nil || !h.trustedProxy(r) {
		return false
	}
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(trimBlanks(proto), "https")
}

// normalizeOrigin returns the ASCII serialisation of a web origin
// (scheme://host[:port], lower case, the scheme's default port left out),
// or false when s is not one (an opaque origin such as "null", a path, a
// query, user info, a scheme other than http and https).
func normalizeOrigin(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.User != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
		u.Path != "" && u.Path != "/" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	return scheme + "://" + hostWithoutDefaultPort(strings.ToLower(u.Host), scheme), true
}

// hostWithoutDefaultPort drops :80 (http) or :443 (https) from host.
func hostWithoutDefaultPort(host, scheme string) string {
	if scheme == "http" {
		return strings.TrimSuffix(host, ":80")
	}
	return strings.TrimSuffix(host, ":443")
}

// crossSite reports whether r, a login or logout, comes from another site:
// its Sec-Fetch-Site is cross-site, or its Origin is a web origin whose
// host is not the request's own Host and that allowed_origins does not
// list. Requests with neither header (a Mini App's my.request, curl) are
// not cross-site, nor is an opaque Origin ("null") alone. Only asked when
// the session cookie is on.
func (h *Handler) crossSite(r *http.Request) bool {
	if strings.EqualFold(trimBlanks(r.Header.Get("Sec-Fetch-Site")), "cross-site") {
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	origin, ok := normalizeOrigin(o)
	if !ok {
		return false
	}
	if _, ok := h.allowedOrigins[origin]; ok {
		return false
	}
	scheme, host, _ := strings.Cut(origin, "://")
	own := hostWithoutDefaultPort(strings.ToLower(r.Host), scheme)
	return host != own
}

// refuseCrossSite answers 403 cross_site_request and returns true when the
// session cookie is on and r comes from another site.
func (h *Handler) refuseCrossSite(w http.ResponseWriter, r *http.Request) (bool, error) {
	if h.cookie == "" || !h.crossSite(r) {
		return false, nil
	}
	return true, h.refuse(w, r, errCrossSite)
}

// allowedOriginSet checks and normalizes Config.AllowedOrigins.
func allowedOriginSet(origins []string) (map[string]struct{}, error) {
	set := make(map[string]struct{}, len(origins))
	for _, o := range origins {
		n, ok := normalizeOrigin(o)
		if !ok || strings.HasSuffix(o, "/") {
			return nil, fmt.Errorf("handler: allowed_origins: %q is not an origin (scheme://host[:port], http or https)", o)
		}
		set[n] = struct{}{}
	}
	return set, nil
}
