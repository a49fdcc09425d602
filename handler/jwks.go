package handler

import "net/http"

// outcomeJWKS is the outcome of a JWKS request.
const outcomeJWKS = "jwks"

// serveJWKS answers a request on the JWKS path (docs/contract.md, "Identity
// assertion") with the public keys that verify the identity assertion. It
// needs no session, like login; a session credential sent along is removed
// and ignored.
func (h *Handler) serveJWKS(w http.ResponseWriter, r *http.Request) error {
	h.stripCredential(r.Header)
	h.outcome(outcomeJWKS)
	h.identity.ServeHTTP(w, r)
	return nil
}
