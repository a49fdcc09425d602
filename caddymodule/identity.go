package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/rebell-gateway/caddy-rebell/handler"
	"github.com/rebell-gateway/caddy-rebell/identity"
)

func init() {
	caddy.RegisterModule(identityAdminAPI{})
}

// IdentityAssertion configures the signed identity assertion
// (docs/contract.md, "Identity assertion"): every request that passes with
// a session carries, in its header, a compact JWS (a JWT) that the upstream
// verifies against the site's JWKS, so that it can tell the gateway's
// identity from headers set by anything else. Its claims are iss, aud, sub
// (the customer id), iat, exp (iat + ttl) and sid (a stable handle of the
// session that reveals nothing about it). The assertion is signed once per
// session and reused until it has used half its ttl. docs/upstream.md shows
// how to verify it.
type IdentityAssertion struct {
	// Path of the signing key: PEM PKCS#8, Ed25519 (alg EdDSA) or ECDSA
	// P-256 (alg ES256). Read when the config is loaded. Exactly one of
	// signing_key_file and signing_key is required.
	SigningKeyFile string `json:"signing_key_file,omitempty"`

	// The signing key inline, in the same format, e.g.
	// {env.REBELL_IDENTITY_KEY}.
	SigningKey string `json:"signing_key,omitempty"`

	// Paths of keys published in the JWKS but never used to sign: the key
	// that signed before a rotation, or the next one, published ahead (see
	// docs/key-rotation.md). Each is a PEM PKCS#8 private key or a PEM PKIX
	// public key. The Caddyfile's previous_key_file may repeat.
	PreviousKeyFiles []string `json:"previous_key_files,omitempty"`

	// Upstream request header that receives the assertion. Client copies of
	// it (every spelling, trailers, Connection) are removed, and it is
	// removed from responses. Default: X-Rebell-Identity.
	Header string `json:"header,omitempty"`

	// The aud claim. Default: the host the request was made to (its Host
	// header without the port, lower-cased). Set it when a site answers
	// several host names or an upstream checks one fixed value.
	Audience string `json:"audience,omitempty"`

	// The iss claim. Default: caddy-rebell.
	Issuer string `json:"issuer,omitempty"`

	// Lifetime of an assertion, exp − iat: whole seconds from 10s to 1h.
	// Default: 5m.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// Path where this site serves its JWKS to anyone, without a session.
	// Default: /.well-known/rebell-jwks.json.
	JWKSPath string `json:"jwks_path,omitempty"`
}

// accessTokenOff is the access_token_header value that sends no access
// token upstream.
const accessTokenOff = "off"

// provisionIdentity completes the handler config with the identity
// assertion and access_token_header off. Key files are read here (never by
// the Caddyfile adapter); errors name the option and the file.
func (a *Auth) provisionIdentity(repl *caddy.Replacer, cfg *handler.Config) error {
	if a.AccessTokenHeader == accessTokenOff {
		cfg.AccessTokenHeader, cfg.OmitAccessToken = "", true
	}
	ia := a.IdentityAssertion
	if ia == nil {
		return nil
	}
	for _, f := range []*string{&ia.SigningKeyFile, &ia.SigningKey, &ia.Header, &ia.Audience, &ia.Issuer, &ia.JWKSPath} {
		*f = strings.TrimSpace(repl.ReplaceKnown(*f, ""))
	}
	for i := range ia.PreviousKeyFiles {
		ia.PreviousKeyFiles[i] = strings.TrimSpace(repl.ReplaceKnown(ia.PreviousKeyFiles[i], ""))
	}
	var (
		key *identity.Key
		err error
	)
	switch {
	case ia.SigningKeyFile != "" && ia.SigningKey != "":
		return errors.New("identity_assertion: signing_key_file and signing_key: set only one")
	case ia.SigningKeyFile != "":
		if key, err = identity.ReadKeyFile(ia.SigningKeyFile); err != nil {
			return fmt.Errorf("identity_assertion: signing_key_file: %w", err)
		}
	case ia.SigningKey != "":
		if key, err = identity.ParseKey([]byte(ia.SigningKey)); err != nil {
			return fmt.Errorf("identity_assertion: signing_key: %w", err)
		}
	default:
		return errors.New("identity_assertion: signing_key_file or signing_key: one is required")
	}
	if !key.CanSign() {
		return errors.New("identity_assertion: signing key: a public key cannot sign: give the PKCS#8 private key")
	}
	var previous []*identity.Key
	for _, path := range ia.PreviousKeyFiles {
		if path == "" {
			return errors.New("identity_assertion: previous_key_file: empty path")
		}
		k, err := identity.ReadKeyFile(path)
		if err != nil {
			return fmt.Errorf("identity_assertion: previous_key_file: %w", err)
		}
		previous = append(previous, k)
	}
	ttl := time.Duration(ia.TTL)
	if ttl != 0 && (ttl < identity.MinTTL || ttl > identity.MaxTTL || ttl%time.Second != 0) {
		return fmt.Errorf("identity_assertion: ttl: %v is not whole seconds from %v to %v", ttl, identity.MinTTL, identity.MaxTTL)
	}
	signer, err := identity.New(identity.Config{
		Key:      key,
		Previous: previous,
		Issuer:   ia.Issuer,
		Audience: ia.Audience,
		TTL:      ttl,
	})
	if err != nil {
		return fmt.Errorf("identity_assertion: %w", err)
	}
	cfg.Identity, cfg.IdentityHeader, cfg.JWKSPath = signer, ia.Header, ia.JWKSPath
	identitySigners.add(a, signer)
	return nil
}

// releaseIdentity forgets this config's keys for the admin API's JWKS.
func (a *Auth) releaseIdentity() { identitySigners.remove(a) }

// identitySigners are the signers of every loaded rebell_auth config, for
// the admin API's GET /rebell/jwks.
var identitySigners = &signerSet{m: map[*Auth]*identity.Signer{}}

type signerSet struct {
	mu sync.Mutex
	m  map[*Auth]*identity.Signer
}

func (s *signerSet) add(a *Auth, sg *identity.Signer) {
	s.mu.Lock()
	s.m[a] = sg
	s.mu.Unlock()
}

func (s *signerSet) remove(a *Auth) {
	s.mu.Lock()
	delete(s.m, a)
	s.mu.Unlock()
}

// keys returns the published keys of every loaded config, the signing keys
// first.
func (s *signerSet) keys() []*identity.Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	var signing, previous []*identity.Key
	for _, sg := range s.m {
		ks := sg.Keys()
		signing = append(signing, ks[0])
		previous = append(previous, ks[1:]...)
	}
	return append(signing, previous...)
}

// identityAdminAPI adds GET /rebell/jwks to Caddy's admin API: the JWKS of
// the identity assertion keys (current and previous) of every site with
// identity_assertion, for upstreams that reach the admin endpoint but not
// the sites. It lists public keys only.
type identityAdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (identityAdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.rebell_jwks",
		New: func() caddy.Module { return new(identityAdminAPI) },
	}
}

// Routes returns the admin route.
func (identityAdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/rebell/jwks", Handler: caddy.AdminHandlerFunc(handleJWKS)}}
}

func handleJWKS(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	doc, err := identity.JWKSOf(identitySigners.keys()...)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	identity.ServeJWKS(w, r, doc)
	return nil
}

// unmarshalIdentity parses `identity_assertion { ... }`. It only stores
// what it reads: the key files are read at provisioning.
func (a *Auth) unmarshalIdentity(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Err("identity_assertion: settings go in a block: identity_assertion { ... }")
	}
	ia := &IdentityAssertion{}
	strs := map[string]*string{
		"signing_key_file": &ia.SigningKeyFile,
		"signing_key":      &ia.SigningKey,
		"header":           &ia.Header,
		"audience":         &ia.Audience,
		"issuer":           &ia.Issuer,
		"jwks_path":        &ia.JWKSPath,
	}
	seen := map[string]int{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if sub == "previous_key_file" {
			paths := d.RemainingArgs()
			if len(paths) == 0 {
				return d.Err("identity_assertion: previous_key_file: a path is required")
			}
			ia.PreviousKeyFiles = append(ia.PreviousKeyFiles, paths...)
			continue
		}
		if line, dup := seen[sub]; dup {
			return d.Errf("identity_assertion: %s: already set on line %d", sub, line)
		}
		seen[sub] = d.Line()
		if dst, ok := strs[sub]; ok {
			if err := oneArg(d, dst); err != nil {
				return err
			}
			if *dst == "" {
				return d.Errf("identity_assertion: %s: empty", sub)
			}
			continue
		}
		switch sub {
		case "ttl":
			if err := durationArg(d, &ia.TTL); err != nil {
				return err
			}
			if ttl := time.Duration(ia.TTL); ttl < identity.MinTTL || ttl > identity.MaxTTL || ttl%time.Second != 0 {
				return d.Errf("identity_assertion: ttl: %v is not whole seconds from %v to %v", ttl, identity.MinTTL, identity.MaxTTL)
			}
		default:
			return d.Errf("identity_assertion: unrecognized subdirective %q", sub)
		}
	}
	if ia.SigningKeyFile == "" && ia.SigningKey == "" {
		return d.Err("identity_assertion: signing_key_file or signing_key: one is required")
	}
	if ia.SigningKeyFile != "" && ia.SigningKey != "" {
		return d.Err("identity_assertion: signing_key_file and signing_key: set only one")
	}
	a.IdentityAssertion = ia
	return nil
}

var _ caddy.AdminRouter = identityAdminAPI{}
