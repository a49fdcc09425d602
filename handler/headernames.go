package handler

import (
	"fmt"
	"strings"
)

// unusableHeaders are the header names the gateway cannot read a session
// from or hand an identity to (docs/contract.md, "Upstream headers"), lower
// case: hop-by-hop and framing headers, which a proxy drops, rewrites or
// interprets on the way (RFC 9110 §7.6.1, §6.4); Host; the cookies, which
// the gateway and browsers manage; and the forwarding headers, which
// reverse_proxy sets itself.
var unusableHeaders = map[string]string{
	"connection":        hopByHop,
	"keep-alive":        hopByHop,
	"te":                hopByHop,
	"trailer":           hopByHop,
	"upgrade":           hopByHop,
	"transfer-encoding": framing,
	"content-length":    framing,
	"host":              "it names the requested host, which Go and proxies handle apart from other headers",
	"cookie":            cookies,
	"set-cookie":        cookies,
	"forwarded":         forwarding,
}

const (
	hopByHop   = "it is a hop-by-hop header, which proxies remove"
	framing    = "it is a framing header, which proxies interpret and rewrite"
	cookies    = "it is a cookie header, which the gateway and browsers manage"
	forwarding = "it is a forwarding header, which reverse_proxy sets itself"
)

// CheckHeaderName checks that name, the value of the setting field, is a
// header the gateway can use to carry a session id or an identity: a valid
// HTTP token, and not a hop-by-hop or framing header (Connection,
// Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade,
// Content-Length), Host, Cookie, Set-Cookie, Forwarded or X-Forwarded-*.
// Authorization is allowed. Names compare case-insensitively with '_' read
// as '-', as the gateway's hygiene does. The error names the field and says
// why.
func CheckHeaderName(field, name string) error {
	if !validToken(name) {
		return fmt.Errorf("%s %q is not a valid header name", field, name)
	}
	n := normalizeHeaderName(name)
	why, bad := unusableHeaders[n]
	switch {
	case bad:
	case strings.HasPrefix(n, "proxy-"):
		why = "it is meant for proxies, which remove it"
	case strings.HasPrefix(n, "x-forwarded-"):
		why = forwarding
	default:
		return nil
	}
	return fmt.Errorf("%s %q cannot be used: %s; choose another name, such as X-Rebell-…", field, name, why)
}
