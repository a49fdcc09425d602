package rebell

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The literals accepted in the algorithm field of a Signature header. Rebell's
// examples write SHA256withRSA, Alipay+ writes RSA256; both mean
// RSASSA-PKCS1-v1_5 with SHA-256 (docs/protocol.md).
const (
	AlgorithmRSA256        = "RSA256"
	AlgorithmSHA256withRSA = "SHA256withRSA"
)

// Header names of Rebell's OpenAPI messages.
const (
	HeaderClientID     = "Client-Id"
	HeaderRequestTime  = "Request-Time"
	HeaderResponseTime = "Response-Time"
	HeaderSignature    = "Signature"
	HeaderContentType  = "Content-Type"
)

// ContentType is the Content-Type of every OpenAPI request and response.
const ContentType = "application/json; charset=UTF-8"

// TimeLayout is the layout of the Request-Time and Response-Time values sent:
// RFC 3339 in UTC with a Z, to the second.
const TimeLayout = "2006-01-02T15:04:05Z"

// maxSignatureHeader bounds the Signature header a parser accepts.
const maxSignatureHeader = 4096

// FormatTime formats t as a Request-Time or Response-Time value.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// SignedContent builds the string that is signed or verified:
//
//	<method> <uri>\n<clientID>.<timestamp>.<body>
//
// uri is the path as sent (with any prefix and query), without scheme and host.
func SignedContent(method, uri, clientID, timestamp string, body []byte) []byte {
	b := make([]byte, 0, len(method)+1+len(uri)+1+len(clientID)+1+len(timestamp)+1+len(body))
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, uri...)
	b = append(b, '\n')
	b = append(b, clientID...)
	b = append(b, '.')
	b = append(b, timestamp...)
	b = append(b, '.')
	b = append(b, body...)
	return b
}

// SignContent signs content with RSASSA-PKCS1-v1_5 over SHA-256.
func SignContent(key *rsa.PrivateKey, content []byte) ([]byte, error) {
	sum := sha256.Sum256(content)
	return rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
}

// VerifyContent checks an RSASSA-PKCS1-v1_5 SHA-256 signature over content.
func VerifyContent(pub *rsa.PublicKey, content, sig []byte) error {
	sum := sha256.Sum256(content)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig)
}

// FormatSignatureHeader returns the value of a Signature header:
// algorithm=<alg>, keyVersion=<n>, signature=<percent-encoded std base64>.
func FormatSignatureHeader(algorithm string, keyVersion int, sig []byte) string {
	return "algorithm=" + algorithm + ", keyVersion=" + strconv.Itoa(keyVersion) +
		", signature=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig))
}

// SignatureHeader is a parsed Signature header.
type SignatureHeader struct {
	// Algorithm as written (RSA256 or SHA256withRSA, any case).
	Algorithm string
	// KeyVersion as written; empty when absent.
	KeyVersion string
	// Signature holds the decoded signature bytes.
	Signature []byte
}

// ErrSignatureHeader is wrapped by every error of ParseSignatureHeader.
var ErrSignatureHeader = errors.New("malformed Signature header")

// ParseSignatureHeader parses a Signature header tolerantly: pairs are split
// on commas and trimmed, each is split at its first '=', the signature value
// is percent-decoded (a '+' stays a '+') and then decoded as standard or URL
// base64, padded or not. The algorithm must be RSA256 or SHA256withRSA (any
// case) and the signature must be present.
func ParseSignatureHeader(v string) (SignatureHeader, error) {
	var h SignatureHeader
	if len(v) > maxSignatureHeader {
		return h, fmt.Errorf("%w: longer than %d bytes", ErrSignatureHeader, maxSignatureHeader)
	}
	var sigValue string
	var haveSig bool
	for part := range strings.SplitSeq(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return h, fmt.Errorf("%w: a pair without '='", ErrSignatureHeader)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "algorithm":
			h.Algorithm = value
		case "keyversion":
			h.KeyVersion = value
		case "signature":
			sigValue, haveSig = value, true
		}
	}
	if !strings.EqualFold(h.Algorithm, AlgorithmRSA256) && !strings.EqualFold(h.Algorithm, AlgorithmSHA256withRSA) {
		if h.Algorithm == "" {
			return h, fmt.Errorf("%w: no algorithm", ErrSignatureHeader)
		}
		return h, fmt.Errorf("%w: unsupported algorithm", ErrSignatureHeader)
	}
	if h.KeyVersion != "" {
		if _, err := strconv.ParseUint(h.KeyVersion, 10, 31); err != nil {
			return h, fmt.Errorf("%w: keyVersion is not a number", ErrSignatureHeader)
		}
	}
	if !haveSig || sigValue == "" {
		return h, fmt.Errorf("%w: no signature", ErrSignatureHeader)
	}
	unescaped, err := url.PathUnescape(sigValue)
	if err != nil {
		return h, fmt.Errorf("%w: bad percent-encoding in signature", ErrSignatureHeader)
	}
	h.Signature = decodeBase64Any(unescaped)
	if h.Signature == nil {
		return h, fmt.Errorf("%w: signature is not base64", ErrSignatureHeader)
	}
	return h, nil
}

func decodeBase64Any(s string) []byte {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) > 0 {
			return b
		}
	}
	return nil
}

// Signer signs messages as one Client-Id with one key. It is safe for
// concurrent use. Its key never prints.
type Signer struct {
	clientID   string
	key        *rsa.PrivateKey
	keyVersion int
	algorithm  string
}

// NewSigner returns a Signer. algorithm is AlgorithmRSA256 or
// AlgorithmSHA256withRSA ("" means RSA256); keyVersion is written in the
// Signature header as given.
func NewSigner(clientID string, key *rsa.PrivateKey, keyVersion int, algorithm string) (*Signer, error) {
	if clientID == "" {
		return nil, errors.New("rebell: signer needs a client id")
	}
	if key == nil {
		return nil, errors.New("rebell: signer needs a private key")
	}
	if _, err := checkPrivate(key); err != nil {
		return nil, err
	}
	if keyVersion < 0 {
		return nil, fmt.Errorf("rebell: key version %d is negative", keyVersion)
	}
	switch algorithm {
	case "":
		algorithm = AlgorithmRSA256
	case AlgorithmRSA256, AlgorithmSHA256withRSA:
	default:
		return nil, fmt.Errorf("rebell: signature algorithm %q is not %s or %s", algorithm, AlgorithmRSA256, AlgorithmSHA256withRSA)
	}
	return &Signer{clientID: clientID, key: key, keyVersion: keyVersion, algorithm: algorithm}, nil
}

// ClientID returns the Client-Id the signer signs as.
func (s *Signer) ClientID() string { return s.clientID }

// PublicKey returns the public half of the signer's key.
func (s *Signer) PublicKey() *rsa.PublicKey { return &s.key.PublicKey }

// String describes the signer without its key.
func (s *Signer) String() string {
	return fmt.Sprintf("rebell.Signer{clientID: %q, keyVersion: %d, algorithm: %s, key: %s}", s.clientID, s.keyVersion, s.algorithm, Redacted)
}

// GoString is String, so %#v does not print the key either.
func (s *Signer) GoString() string { return s.String() }

// Sign sets Client-Id, the time header (Request-Time for a request,
// Response-Time for a response), Content-Type and Signature on h for a
// message with the given method, URI and exact body bytes.
func (s *Signer) Sign(h http.Header, timeHeader, method, uri string, body []byte, now time.Time) error {
	ts := FormatTime(now)
	sig, err := SignContent(s.key, SignedContent(method, uri, s.clientID, ts, body))
	if err != nil {
		return fmt.Errorf("rebell: sign: %w", err)
	}
	h.Set(HeaderClientID, s.clientID)
	h.Set(timeHeader, ts)
	h.Set(HeaderContentType, ContentType)
	h.Set(HeaderSignature, FormatSignatureHeader(s.algorithm, s.keyVersion, sig))
	return nil
}

// SignatureProblem classifies a SignatureError.
type SignatureProblem uint8

// The problems VerifyMessage reports.
const (
	// SignatureMissing: no Signature header.
	SignatureMissing SignatureProblem = iota + 1
	// SignatureUnreadable: a Signature header that cannot be parsed.
	SignatureUnreadable
	// SignatureUnverifiable: a header the signed content needs is missing.
	SignatureUnverifiable
	// SignatureInvalid: the signature does not verify.
	SignatureInvalid
)

// SignatureError says why a message's signature could not be verified.
type SignatureError struct {
	// Problem is what went wrong.
	Problem SignatureProblem
	// Reason is a short phrase for people: "missing: no Signature header",
	// "invalid: does not verify", ...
	Reason string
}

func (e *SignatureError) Error() string { return "rebell: signature " + e.Reason }

// VerifyMessage checks the Signature header of a message against pub, using
// the message's Client-Id, the named time header, the method and URI of the
// request and the raw body bytes. It returns the parsed header on success and
// a *SignatureError otherwise.
func VerifyMessage(pub *rsa.PublicKey, h http.Header, timeHeader, method, uri string, body []byte) (SignatureHeader, error) {
	raw := h.Get(HeaderSignature)
	if raw == "" {
		return SignatureHeader{}, &SignatureError{Problem: SignatureMissing, Reason: "missing: no Signature header"}
	}
	sh, err := ParseSignatureHeader(raw)
	if err != nil {
		return sh, &SignatureError{Problem: SignatureUnreadable, Reason: "unreadable: " + strings.TrimPrefix(err.Error(), ErrSignatureHeader.Error()+": ")}
	}
	ts := h.Get(timeHeader)
	if ts == "" {
		return sh, &SignatureError{Problem: SignatureUnverifiable, Reason: "unverifiable: no " + timeHeader + " header"}
	}
	clientID := h.Get(HeaderClientID)
	if clientID == "" {
		return sh, &SignatureError{Problem: SignatureUnverifiable, Reason: "unverifiable: no Client-Id header"}
	}
	if err := VerifyContent(pub, SignedContent(method, uri, clientID, ts, body), sh.Signature); err != nil {
		return sh, &SignatureError{Problem: SignatureInvalid, Reason: "invalid: does not verify"}
	}
	return sh, nil
}
