package rebell

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// MinKeyBits is the smallest RSA modulus accepted for signing or verifying.
const MinKeyBits = 2048

// maxKeyBytes bounds what a key loader reads; real RSA keys are a few KiB.
const maxKeyBytes = 64 << 10

// KeyProblem names what is wrong with a key that could not be loaded.
type KeyProblem string

// The problems a key loader reports.
const (
	KeyEmpty       KeyProblem = "empty"
	KeyGarbage     KeyProblem = "not a PEM block or base64 DER"
	KeyUnparsable  KeyProblem = "not a parsable key"
	KeyNotRSA      KeyProblem = "not an RSA key"
	KeyTooSmall    KeyProblem = "RSA key too small"
	KeyEncrypted   KeyProblem = "encrypted PEM is not supported"
	KeyWrongType   KeyProblem = "wrong PEM block type"
	KeyTooLarge    KeyProblem = "too large to be a key"
	KeyUnreadable  KeyProblem = "cannot be read"
	KeyNotPrivate  KeyProblem = "a public key where a private key is needed"
	KeyNotPublic   KeyProblem = "a private key where a public key is needed"
	KeyTrailingPEM KeyProblem = "more than one PEM block"
)

// KeyError reports why a key could not be loaded. Its message names the
// problem and never contains key material.
type KeyError struct {
	// Problem is what is wrong.
	Problem KeyProblem
	// Detail adds a specific fact, such as the key type or size found.
	Detail string
	// Source names where the key came from (a file path), if known.
	Source string
	// Err is the underlying error, if any (file errors only; parser errors
	// are summarised in Detail).
	Err error
}

func (e *KeyError) Error() string {
	var b strings.Builder
	b.WriteString("key")
	if e.Source != "" {
		fmt.Fprintf(&b, " %s", e.Source)
	}
	fmt.Fprintf(&b, ": %s", e.Problem)
	if e.Detail != "" {
		fmt.Fprintf(&b, " (%s)", e.Detail)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *KeyError) Unwrap() error { return e.Err }

// ParsePrivateKey parses a merchant's RSA private key given as PEM PKCS#1
// ("RSA PRIVATE KEY"), PEM PKCS#8 ("PRIVATE KEY") or bare base64 of PKCS#8 or
// PKCS#1 DER. Keys that are not RSA or are under MinKeyBits are rejected.
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	der, blockType, err := keyDER(data)
	if err != nil {
		return nil, err
	}
	switch blockType {
	case "":
		// Bare DER: PKCS#8 first (Alipay's convention), then PKCS#1.
		if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
			return checkPrivate(k)
		}
		if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
			return checkPrivate(k)
		}
		if isPublicDER(der) {
			return nil, &KeyError{Problem: KeyNotPrivate}
		}
		return nil, &KeyError{Problem: KeyUnparsable, Detail: "base64 DER is neither PKCS#8 nor PKCS#1"}
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, &KeyError{Problem: KeyUnparsable, Detail: "PKCS#8: " + derProblem(err)}
		}
		return checkPrivate(k)
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(der)
		if err != nil {
			return nil, &KeyError{Problem: KeyUnparsable, Detail: "PKCS#1: " + derProblem(err)}
		}
		return checkPrivate(k)
	case "EC PRIVATE KEY":
		return nil, &KeyError{Problem: KeyNotRSA, Detail: "EC private key"}
	case "ENCRYPTED PRIVATE KEY":
		return nil, &KeyError{Problem: KeyEncrypted}
	case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE":
		return nil, &KeyError{Problem: KeyNotPrivate, Detail: "PEM " + blockType}
	default:
		return nil, &KeyError{Problem: KeyWrongType, Detail: "PEM " + blockType}
	}
}

// ParsePublicKey parses an RSA public key (Rebell's platform key, or a
// merchant's key in the sandbox) given as PEM PKIX ("PUBLIC KEY"), PEM PKCS#1
// ("RSA PUBLIC KEY"), a PEM X.509 certificate, or bare base64 of PKIX or
// PKCS#1 DER or of a DER certificate. Keys that are not RSA or are under
// MinKeyBits are rejected.
func ParsePublicKey(data []byte) (*rsa.PublicKey, error) {
	der, blockType, err := keyDER(data)
	if err != nil {
		return nil, err
	}
	switch blockType {
	case "":
		if k, err := x509.ParsePKIXPublicKey(der); err == nil {
			return checkPublic(k)
		}
		if k, err := x509.ParsePKCS1PublicKey(der); err == nil {
			return checkPublic(k)
		}
		if c, err := x509.ParseCertificate(der); err == nil {
			return checkPublic(c.PublicKey)
		}
		if _, err := x509.ParsePKCS8PrivateKey(der); err == nil {
			return nil, &KeyError{Problem: KeyNotPublic}
		}
		if _, err := x509.ParsePKCS1PrivateKey(der); err == nil {
			return nil, &KeyError{Problem: KeyNotPublic}
		}
		return nil, &KeyError{Problem: KeyUnparsable, Detail: "base64 DER is neither PKIX, PKCS#1 nor a certificate"}
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return nil, &KeyError{Problem: KeyUnparsable, Detail: "PKIX: " + derProblem(err)}
		}
		return checkPublic(k)
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(der)
		if err != nil {
			return nil, &KeyError{Problem: KeyUnparsable, Detail: "PKCS#1: " + derProblem(err)}
		}
		return checkPublic(k)
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, &KeyError{Problem: KeyUnparsable, Detail: "certificate: " + derProblem(err)}
		}
		return checkPublic(c.PublicKey)
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, &KeyError{Problem: KeyNotPublic, Detail: "PEM " + blockType}
	default:
		return nil, &KeyError{Problem: KeyWrongType, Detail: "PEM " + blockType}
	}
}

// ReadPrivateKeyFile reads and parses a private key file (see ParsePrivateKey).
func ReadPrivateKeyFile(path string) (*rsa.PrivateKey, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(data)
	return k, withSource(err, path)
}

// ReadPublicKeyFile reads and parses a public key file (see ParsePublicKey).
func ReadPublicKeyFile(path string) (*rsa.PublicKey, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePublicKey(data)
	return k, withSource(err, path)
}

// EncodePublicKeyPEM returns pub as a PEM "PUBLIC KEY" (PKIX) block.
func EncodePublicKeyPEM(pub *rsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		// MarshalPKIXPublicKey only fails for unsupported key types.
		panic("rebell: marshal RSA public key: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// EncodePrivateKeyPEM returns key as a PEM "PRIVATE KEY" (PKCS#8) block.
func EncodePrivateKeyPEM(key *rsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic("rebell: marshal RSA private key: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &KeyError{Problem: KeyUnreadable, Source: path, Err: errors.Unwrap(err)}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyBytes+1))
	if err != nil {
		return nil, &KeyError{Problem: KeyUnreadable, Source: path, Err: err}
	}
	if len(data) > maxKeyBytes {
		return nil, &KeyError{Problem: KeyTooLarge, Source: path, Detail: fmt.Sprintf("over %d bytes", maxKeyBytes)}
	}
	return data, nil
}

func withSource(err error, path string) error {
	var ke *KeyError
	if errors.As(err, &ke) && ke.Source == "" {
		ke.Source = path
	}
	return err
}

// keyDER turns PEM or bare base64 input into DER. blockType is "" for bare
// base64.
func keyDER(data []byte) (der []byte, blockType string, err error) {
	if len(data) > maxKeyBytes {
		return nil, "", &KeyError{Problem: KeyTooLarge, Detail: fmt.Sprintf("over %d bytes", maxKeyBytes)}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, "", &KeyError{Problem: KeyEmpty}
	}
	if bytes.Contains(trimmed, []byte("-----BEGIN ")) {
		block, rest := pem.Decode(trimmed)
		if block == nil {
			return nil, "", &KeyError{Problem: KeyGarbage, Detail: "malformed PEM"}
		}
		if _, encrypted := block.Headers["Proc-Type"]; encrypted {
			return nil, "", &KeyError{Problem: KeyEncrypted}
		}
		if next, _ := pem.Decode(bytes.TrimSpace(rest)); next != nil {
			return nil, "", &KeyError{Problem: KeyTrailingPEM, Detail: "found " + block.Type + " then " + next.Type}
		}
		return block.Bytes, block.Type, nil
	}
	// Bare base64 DER, possibly wrapped over several lines.
	compact := make([]byte, 0, len(trimmed))
	for _, c := range trimmed {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			compact = append(compact, c)
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if der, err := enc.DecodeString(string(compact)); err == nil && len(der) > 0 {
			return der, "", nil
		}
	}
	return nil, "", &KeyError{Problem: KeyGarbage}
}

func isPublicDER(der []byte) bool {
	if _, err := x509.ParsePKIXPublicKey(der); err == nil {
		return true
	}
	if _, err := x509.ParsePKCS1PublicKey(der); err == nil {
		return true
	}
	_, err := x509.ParseCertificate(der)
	return err == nil
}

// derProblem shortens an x509 parse error to a phrase without key bytes.
func derProblem(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "x509: ")
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return msg
}

func keyTypeName(k any) string {
	switch k.(type) {
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return "ECDSA key"
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "Ed25519 key"
	default:
		return fmt.Sprintf("%T", k)
	}
}

func checkPrivate(k any) (*rsa.PrivateKey, error) {
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, &KeyError{Problem: KeyNotRSA, Detail: keyTypeName(k)}
	}
	if bits := rk.N.BitLen(); bits < MinKeyBits {
		return nil, &KeyError{Problem: KeyTooSmall, Detail: fmt.Sprintf("%d bits; at least %d required", bits, MinKeyBits)}
	}
	if err := rk.Validate(); err != nil {
		return nil, &KeyError{Problem: KeyUnparsable, Detail: "invalid RSA key"}
	}
	return rk, nil
}

func checkPublic(k any) (*rsa.PublicKey, error) {
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, &KeyError{Problem: KeyNotRSA, Detail: keyTypeName(k)}
	}
	if bits := rk.N.BitLen(); bits < MinKeyBits {
		return nil, &KeyError{Problem: KeyTooSmall, Detail: fmt.Sprintf("%d bits; at least %d required", bits, MinKeyBits)}
	}
	return rk, nil
}
