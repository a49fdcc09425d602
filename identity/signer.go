// Package identity signs the identity assertion that the gateway hands to
// upstreams (docs/contract.md, "Identity assertion"; docs/upstream.md shows
// how an upstream verifies it) and publishes the public keys that verify it
// as a JWKS.
//
// An assertion is a compact JWS (a JWT) signed with Ed25519 (EdDSA) or
// ECDSA P-256 (ES256) by github.com/go-jose/go-jose/v4. Its header carries
// alg, kid (the RFC 7638 thumbprint of the key) and typ JWT; its claims are
// iss, aud, sub (the customer id), iat, exp (iat + ttl) and sid, a stable
// handle of the session that reveals nothing about it.
//
// Signing costs tens of microseconds, so an assertion is signed once and kept
// with the session's grant (see Memo) until it has used half its ttl: every
// request in between reuses it, without allocating.
//
// The package imports nothing from Caddy.
package identity

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults and bounds of Config (docs/contract.md).
const (
	DefaultHeader   = "X-Rebell-Identity"
	DefaultIssuer   = "caddy-rebell"
	DefaultTTL      = 5 * time.Minute
	MinTTL          = 10 * time.Second
	MaxTTL          = time.Hour
	DefaultJWKSPath = "/.well-known/rebell-jwks.json"
)

// Config configures a Signer.
type Config struct {
	// Key signs the assertions. Required; it must hold a private key.
	Key *Key
	// Previous keys are published in the JWKS but never sign: the keys
	// signed with before a rotation (and a key about to sign, published
	// ahead). See docs/key-rotation.md.
	Previous []*Key
	// Issuer is the iss claim; "" means caddy-rebell.
	Issuer string
	// Audience is the aud claim; "" means the host of each request (its
	// Host without the port, lower-cased), and an assertion is then kept
	// for one host at a time.
	Audience string
	// TTL is exp − iat, a whole number of seconds between MinTTL and
	// MaxTTL; 0 means DefaultTTL.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Signer signs identity assertions and serves the JWKS. It is safe for
// concurrent use.
type Signer struct {
	key      *Key
	signer   jose.Signer
	issuer   string
	audience string
	ttl      time.Duration
	now      func() time.Time
	sidKey   []byte
	jwks     []byte
	keys     []*Key
}

// New validates cfg and returns a Signer.
func New(cfg Config) (*Signer, error) {
	if cfg.Key == nil {
		return nil, errors.New("identity: a signing key is required")
	}
	if !cfg.Key.CanSign() {
		return nil, errors.New("identity: the signing key is a public key: give the PKCS#8 private key")
	}
	s := &Signer{
		key:      cfg.Key,
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		ttl:      cfg.TTL,
		now:      cfg.Now,
	}
	if s.issuer == "" {
		s.issuer = DefaultIssuer
	}
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	if s.ttl < MinTTL || s.ttl > MaxTTL {
		return nil, fmt.Errorf("identity: ttl %v is not between %v and %v", s.ttl, MinTTL, MaxTTL)
	}
	if s.ttl%time.Second != 0 {
		return nil, fmt.Errorf("identity: ttl %v is not a whole number of seconds", s.ttl)
	}
	if s.now == nil {
		s.now = time.Now
	}
	for _, f := range []struct{ name, v string }{{"issuer", s.issuer}, {"audience", s.audience}} {
		if strings.TrimSpace(f.v) != f.v || strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, fmt.Errorf("identity: %s %q has surrounding blanks or control characters", f.name, f.v)
		}
	}
	var err error
	s.signer, err = jose.NewSigner(
		jose.SigningKey{Algorithm: cfg.Key.alg, Key: jose.JSONWebKey{Key: cfg.Key.private, KeyID: cfg.Key.kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	// The sid key is derived from the signing key, so every instance that
	// signs with the same key gives a session the same sid.
	s.sidKey, err = hkdf.Key(sha256.New, cfg.Key.secret, nil, "caddy-rebell identity assertion sid v1", sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	s.keys = append(s.keys, cfg.Key)
	seen := map[string]bool{cfg.Key.kid: true}
	for i, k := range cfg.Previous {
		if k == nil {
			return nil, fmt.Errorf("identity: previous key %d is missing", i+1)
		}
		if !seen[k.kid] {
			seen[k.kid] = true
			s.keys = append(s.keys, k)
		}
	}
	if s.jwks, err = JWKSOf(s.keys...); err != nil {
		return nil, fmt.Errorf("identity: JWKS: %w", err)
	}
	return s, nil
}

// TTL returns the assertions' lifetime, exp − iat.
func (s *Signer) TTL() time.Duration { return s.ttl }

// KID returns the kid of the signing key.
func (s *Signer) KID() string { return s.key.kid }

// Keys returns the published keys: the signing key first, then the
// previous ones in the order configured, without duplicates.
func (s *Signer) Keys() []*Key { return append([]*Key(nil), s.keys...) }

// JWKS returns the JWKS document (RFC 7517) of the published keys.
func (s *Signer) JWKS() []byte { return s.jwks }

// Memo is where an assertion is kept between the requests of a session: a
// slot that belongs to the session's current grant, so that a grant a
// refresh replaced takes its assertion with it. *cache.Grant is a Memo.
type Memo interface {
	// Memo returns the value last stored with SetMemo, or nil.
	Memo() any
	// SetMemo stores v.
	SetMemo(v any)
}

// memo is one signed assertion as a Memo keeps it.
type memo struct {
	signer *Signer // the Signer that made it: another (a reload) signs anew
	token  string
	host   string // the request host it was made for, without a configured audience
	renew  int64  // Unix ns: when it has used half its ttl
}

// Claims are the claims of an assertion.
type Claims struct {
	Issuer   string `json:"iss"`
	Audience string `json:"aud"`
	Subject  string `json:"sub"`
	IssuedAt int64  `json:"iat"`
	Expiry   int64  `json:"exp"`
	SID      string `json:"sid"`
}

// Assertion returns the assertion for a request to host by the session
// whose stable key is sessionKey, acting for sub. It reuses the assertion
// kept in m while that has used less than half its ttl and was made by s
// (and, without a configured audience, for the same host); otherwise it
// signs a new one and keeps it in m. Reuse allocates nothing.
func (s *Signer) Assertion(m Memo, sessionKey [32]byte, sub, host string) (string, error) {
	if a, ok := m.Memo().(*memo); ok && a.signer == s && s.now().UnixNano() < a.renew &&
		(s.audience != "" || a.host == host) {
		return a.token, nil
	}
	return s.renewMemo(m, sessionKey, sub, host)
}

// renewMemo signs a new assertion and keeps it in m. It is apart from
// Assertion so that sessionKey escapes (into the HMAC) only here.
func (s *Signer) renewMemo(m Memo, sessionKey [32]byte, sub, host string) (string, error) {
	now := s.now()
	aud := s.audience
	if aud == "" {
		aud = hostName(host)
	}
	iat := now.Unix()
	tok, err := s.Sign(Claims{
		Issuer:   s.issuer,
		Audience: aud,
		Subject:  sub,
		IssuedAt: iat,
		Expiry:   iat + int64(s.ttl/time.Second),
		SID:      s.SID(sessionKey),
	})
	if err != nil {
		return "", err
	}
	a := &memo{signer: s, token: tok, renew: time.Unix(iat, 0).Add(s.ttl / 2).UnixNano()}
	if s.audience == "" {
		a.host = host
	}
	m.SetMemo(a)
	return tok, nil
}

// Sign signs c with the signing key and returns the compact JWS. Errors
// never contain key material.
func (s *Signer) Sign(c Claims) (string, error) {
	if c.Subject == "" {
		return "", errors.New("identity: empty subject")
	}
	if c.Audience == "" {
		return "", errors.New("identity: empty audience")
	}
	tok, err := jwt.Signed(s.signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("identity: signing the assertion: %w", err)
	}
	return tok, nil
}

// SID returns the sid of the session whose stable key is sessionKey: the
// first 16 bytes of HMAC-SHA256 over it under a key derived from the
// signing key, in unpadded base64url (22 characters). It is the same on
// every instance that signs with the same key, and reveals neither the
// session id nor anything else about the session.
func (s *Signer) SID(sessionKey [32]byte) string {
	mac := hmac.New(sha256.New, s.sidKey)
	mac.Write(sessionKey[:])
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:16])
}

// hostName returns host (a request's Host) without its port and brackets,
// lower-cased: the default audience.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.ToLower(host)
}
