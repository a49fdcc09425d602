package handler

import (
	"io"
	"net/http"
	"strings"
)

// Header hygiene at the edges of a request (README.md, "Header hygiene"):
// its trailers and its Connection header. Both are stripped, never
// rejected, like spoofed headers:
//
//   - Trailers. A chunked HTTP/1.1 request, or an HTTP/2 request, may
//     announce trailers (the Trailer header, which net/http turns into the
//     keys of Request.Trailer) and send them after the body. reverse_proxy
//     forwards them, and many upstream frameworks fold trailers into
//     headers, so a forged X-Rebell-Customer-Id, or the session credential,
//     could reach the upstream that way. The identity headers and the
//     session credential are removed from the announcement before the
//     request goes on, and from the values that arrive, at the end of the
//     body, before the reader of the body (reverse_proxy) sees its end.
//     A trailer arrives after the request went on, so it cannot be answered
//     with a 400.
//   - Connection. A client that lists the identity headers in Connection
//     asks every proxy to drop them as hop-by-hop, which reverse_proxy does
//     after this handler set them: the upstream would get an authenticated
//     request without its identity. Those names (and the session header's)
//     are removed from Connection; its other tokens stay.

// stripEdges applies the trailer and Connection hygiene to r. It allocates
// only for a request that may carry trailers or lists a name to remove.
func (h *Handler) stripEdges(r *http.Request) {
	if _, ok := r.Header["Connection"]; ok {
		h.cleanConnection(r.Header)
	}
	if r.Trailer != nil {
		h.stripTrailer(r.Trailer)
	}
	// An announced trailer, or a body of unknown length (HTTP/1.1 chunked,
	// HTTP/2 without Content-Length), may bring trailers at its end.
	if r.Body != nil && r.Body != http.NoBody && (r.Trailer != nil || r.ContentLength < 0) {
		r.Body = &trailerGuard{ReadCloser: r.Body, h: h, r: r}
	}
}

// stripTrailer removes the identity headers and the session credential, in
// every spelling, from a trailer map.
func (h *Handler) stripTrailer(t http.Header) {
	for k := range t {
		if h.forbiddenName(k) {
			delete(t, k)
		}
	}
	if h.cookie != "" {
		removeCookie(t, h.cookie)
	}
}

// forbiddenName reports whether the header key k names the access-token,
// customer-id, identity-assertion or session header (compared as
// stripSpoofed does).
func (h *Handler) forbiddenName(k string) bool {
	return sameHeader(k, h.accessNorm) || sameHeader(k, h.customerNorm) || sameHeader(k, h.sessionNorm) ||
		h.isIdentityHeader(k)
}

// cleanConnection removes from the Connection header every token that
// names the access-token, customer-id or session header, keeping the
// others (keep-alive, upgrade, ...) in order. A Connection header left with
// no token is deleted.
func (h *Handler) cleanConnection(hd http.Header) {
	lines := hd["Connection"]
	changed := false
	for _, line := range lines {
		if h.connectionNamesForbidden(line) {
			changed = true
			break
		}
	}
	if !changed {
		return
	}
	out := make([]string, 0, len(lines))
	for _, line := range lines {
		var b strings.Builder
		for tok := range strings.SplitSeq(line, ",") {
			tok = trimBlanks(tok)
			if tok == "" || h.forbiddenName(tok) {
				continue
			}
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(tok)
		}
		if b.Len() > 0 {
			out = append(out, b.String())
		}
	}
	if len(out) == 0 {
		delete(hd, "Connection")
		return
	}
	hd["Connection"] = out
}

func (h *Handler) connectionNamesForbidden(line string) bool {
	for line != "" {
		var tok string
		tok, line, _ = strings.Cut(line, ",")
		if tok = trimBlanks(tok); tok != "" && h.forbiddenName(tok) {
			return true
		}
	}
	return false
}

// trailerGuard wraps a request body and, when the body ends, strips the
// trailers net/http has just filled in, before its reader sees the end.
// reverse_proxy copies the trailers to the upstream request only at that
// moment.
type trailerGuard struct {
	io.ReadCloser
	h *Handler
	r *http.Request
}

// Read implements io.Reader.
func (g *trailerGuard) Read(p []byte) (int, error) {
	n, err := g.ReadCloser.Read(p)
	if err != nil && g.r.Trailer != nil {
		g.h.stripTrailer(g.r.Trailer)
	}
	return n, err
}
