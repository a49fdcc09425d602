package identity

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/go-jose/go-jose/v4"
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

// JWKSOf returns the JWKS document of keys (public halves only), without
// duplicate kids, in the order given. The admin API's /rebell/jwks lists the
// keys of every site this way.
func JWKSOf(keys ...*Key) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	seen := map[string]bool{}
	for _, k := range keys {
		if k == nil || seen[k.kid] {
			continue
		}
		seen[k.kid] = true
		set.Keys = append(set.Keys, k.publicJWK())
	}
	return json.Marshal(set)
}
