package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/go-jose/go-jose/v4"
)

// Key is one key of the identity assertion: an Ed25519 key (alg EdDSA) or
// a P-256 key (alg ES256), named by its kid, the RFC 7638 thumbprint of its
// public JWK (SHA-256, unpadded base64url). A Key read from a private key
// can sign; one read from a public key is only published.
//
// A Key prints as its algorithm and kid through fmt (every verb): never the
// key material.
type Key struct {
	alg     jose.SignatureAlgorithm
	kid     string
	private crypto.Signer    // nil for a public key
	public  crypto.PublicKey // ed25519.PublicKey or *ecdsa.PublicKey
	// secret is the PKCS#8 DER of a private key, from which the sid key is
	// derived (docs/contract.md); nil for a public key.
	secret []byte
}

// Algorithms of the keys.
const (
	AlgEdDSA = string(jose.EdDSA)
	AlgES256 = string(jose.ES256)
)

// ParseKey reads one PEM block: a PKCS#8 private key ("PRIVATE KEY") or a
// PKIX public key ("PUBLIC KEY"), Ed25519 or ECDSA on P-256. Errors never
// contain key material.
func ParseKey(data []byte) (*Key, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("not a PEM key (want a PKCS#8 PRIVATE KEY or a PUBLIC KEY block)")
	}
	if extra, _ := pem.Decode(rest); extra != nil {
		return nil, errors.New("more than one PEM block: give one key per file")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("PRIVATE KEY block is not a valid PKCS#8 key")
		}
		return newKey(k, block.Bytes)
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, errors.New("PUBLIC KEY block is not a valid PKIX key")
		}
		return newKey(k, nil)
	case "EC PRIVATE KEY":
		return nil, errors.New("EC PRIVATE KEY (SEC 1) is not supported: convert it with `openssl pkcs8 -topk8 -nocrypt`")
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted private keys are not supported: give an unencrypted PKCS#8 key")
	}
	return nil, fmt.Errorf("PEM block %q is not a PRIVATE KEY or PUBLIC KEY", block.Type)
}

// ReadKeyFile reads a key file in the format of ParseKey. Errors name the
// file, never its content.
func ReadKeyFile(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err // *PathError names the file
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func newKey(k any, der []byte) (*Key, error) {
	key := &Key{}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		key.alg, key.private, key.public = jose.EdDSA, k, k.Public()
	case ed25519.PublicKey:
		key.alg, key.public = jose.EdDSA, k
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on %s: only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		key.alg, key.private, key.public = jose.ES256, k, &k.PublicKey
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on %s: only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		key.alg, key.public = jose.ES256, k
	default:
		return nil, fmt.Errorf("%T keys are not supported: use Ed25519 or ECDSA P-256", k)
	}
	if key.private != nil {
		key.secret = der
	}
	jwk := key.publicJWK()
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("thumbprint: %w", err)
	}
	key.kid = base64.RawURLEncoding.EncodeToString(tp)
	return key, nil
}

// Alg returns the key's JWS algorithm: EdDSA or ES256.
func (k *Key) Alg() string { return string(k.alg) }

// KID returns the key's kid: its RFC 7638 thumbprint.
func (k *Key) KID() string { return k.kid }

// CanSign reports whether k holds a private key.
func (k *Key) CanSign() bool { return k.private != nil }

// Public returns the public key: an ed25519.PublicKey or an
// *ecdsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return k.public }

// publicJWK returns the key's public JWK, with kid, alg and use once the
// kid is known.
func (k *Key) publicJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.public, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// String returns the key's algorithm and kid. (Value receivers, so that a
// Key printed by value does not print its fields either.)
func (k Key) String() string { return "identity key " + string(k.alg) + " " + k.kid }

// GoString is String.
func (k Key) GoString() string { return k.String() }

// Format implements fmt.Formatter, so that no verb prints key material.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }
