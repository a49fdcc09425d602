// Package upstream is what a service behind the gateway uses to verify the
// identity assertion (docs/upstream.md): an http.Handler middleware that
// checks the assertion header against the gateway's JWKS with
// github.com/go-jose/go-jose/v4 and hands the verified identity to the next
// handler. It is the Go example of docs/upstream.md, run by the test suite
// against a real gateway.
//
// Copy it, or import it: it depends only on go-jose.
package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults of Config.
const (
	DefaultHeader = "X-Rebell-Identity"
	DefaultIssuer = "caddy-rebell"
	// DefaultLeeway is the clock skew allowed when checking iat and exp.
	DefaultLeeway = 30 * time.Second
	// keysMaxAge is how long a fetched JWKS is used before it is fetched
	// again (the gateway serves it with max-age=300).
	keysMaxAge = 5 * time.Minute
	// refetchEvery is the least time between two fetches caused by an
	// unknown kid, so forged kids cannot make the service hammer the
	// gateway.
	refetchEvery = 10 * time.Second
)

// Config configures a Verifier.
type Config struct {
	// JWKSURL is the gateway's JWKS, e.g.
	// https://api.example.com/.well-known/rebell-jwks.json. Required.
	JWKSURL string
	// Audience is the aud the assertion must have: the gateway's audience
	// option, or by default the host name the Mini App calls. Required.
	Audience string
	// Issuer is the iss the assertion must have; "" means caddy-rebell.
	Issuer string
	// Header carries the assertion; "" means X-Rebell-Identity.
	Header string
	// Leeway is the clock skew allowed; 0 means DefaultLeeway.
	Leeway time.Duration
	// Client fetches the JWKS; nil means a client with a 10s timeout.
	Client *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Identity is what a verified assertion says.
type Identity struct {
	// CustomerID is the Rebell user (sub).
	CustomerID string
	// SessionHandle is sid: stable for the session, and nothing else.
	SessionHandle string
	// IssuedAt and Expiry are iat and exp.
	IssuedAt, Expiry time.Time
}

// Verifier verifies identity assertions. It is safe for concurrent use.
type Verifier struct {
	cfg Config

	mu        sync.Mutex
	keys      jose.JSONWebKeySet
	fetched   time.Time // when keys were fetched
	lastFetch time.Time // when a fetch was last tried
}

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	if cfg.JWKSURL == "" || cfg.Audience == "" {
		return nil, errors.New("upstream: JWKSURL and Audience are required")
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	if cfg.Header == "" {
		cfg.Header = DefaultHeader
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{cfg: cfg}, nil
}

// claims are the assertion's claims.
type claims struct {
	jwt.Claims
	SID string `json:"sid"`
}

// Verify checks a compact JWS: signed (EdDSA or ES256) by a key of the
// JWKS, typ JWT, with the configured iss and aud, within iat and exp, and
// with a subject.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("upstream: malformed assertion: %w", err)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "JWT" {
		return nil, errors.New("upstream: assertion typ is not JWT")
	}
	key, err := v.key(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != h.Algorithm {
		return nil, errors.New("upstream: assertion alg does not match its key")
	}
	var c claims
	if err := tok.Claims(key.Key, &c); err != nil {
		return nil, fmt.Errorf("upstream: bad signature: %w", err)
	}
	now := v.cfg.Now()
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: now}, v.cfg.Leeway); err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	if c.Subject == "" || c.Expiry == nil || c.IssuedAt == nil {
		return nil, errors.New("upstream: assertion lacks sub, iat or exp")
	}
	return &Identity{CustomerID: c.Subject, SessionHandle: c.SID, IssuedAt: c.IssuedAt.Time(), Expiry: c.Expiry.Time()}, nil
}

// key returns the JWKS key with kid, fetching the JWKS when it is stale or
// does not know kid (a rotation).
func (v *Verifier) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.cfg.Now()
	if ks := v.keys.Key(kid); len(ks) == 1 && now.Sub(v.fetched) < keysMaxAge {
		return ks[0], nil
	}
	if now.Sub(v.lastFetch) >= refetchEvery || v.lastFetch.IsZero() {
		v.lastFetch = now
		set, err := v.fetch(ctx)
		if err != nil {
			return jose.JSONWebKey{}, err
		}
		v.keys, v.fetched = set, now
	}
	if ks := v.keys.Key(kid); len(ks) == 1 {
		return ks[0], nil
	}
	return jose.JSONWebKey{}, errors.New("upstream: assertion signed by an unknown key")
}

func (v *Verifier) fetch(ctx context.Context) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return set, fmt.Errorf("upstream: JWKS: %w", err)
	}
	resp, err := v.cfg.Client.Do(req)
	if err != nil {
		return set, fmt.Errorf("upstream: JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return set, fmt.Errorf("upstream: JWKS: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return set, fmt.Errorf("upstream: JWKS: %w", err)
	}
	return set, nil
}

type ctxKey struct{}

// FromContext returns the identity the middleware verified, if any.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok
}

// Middleware lets through only requests with exactly one valid assertion,
// with the Identity in their context (FromContext); any other gets 401.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values(v.cfg.Header)
		if len(vals) != 1 {
			http.Error(w, "identity assertion missing", http.StatusUnauthorized)
			return
		}
		id, err := v.Verify(r.Context(), vals[0])
		if err != nil {
			http.Error(w, "identity assertion invalid", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}
