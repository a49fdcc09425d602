package identity

import (
	"net/http"
	"strconv"
)

// JWKSCacheControl is the Cache-Control of the JWKS responses: verifiers may
// keep the key set five minutes. A key published as a previous key before it
// signs (docs/key-rotation.md) reaches every verifier within that time.
const JWKSCacheControl = "public, max-age=300"

// ServeHTTP serves the JWKS document to GET and HEAD requests, with
// Cache-Control JWKSCacheControl; any other method gets 405 with Allow.
func (s *Signer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ServeJWKS(w, r, s.jwks)
}

// ServeJWKS writes doc as a JWKS response (see Signer.ServeHTTP).
func ServeJWKS(w http.ResponseWriter, r *http.Request, doc []byte) {
	hd := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: use GET", http.StatusMethodNotAllowed)
		return
	}
	hd.Set("Content-Type", "application/jwk-set+json")
	hd.Set("Cache-Control", JWKSCacheControl)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(doc)
	}
}
