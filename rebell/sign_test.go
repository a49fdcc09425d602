package rebell

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The worked example in docs/protocol.md.
const (
	goldenURI      = "/v2/authorizations/applyToken"
	goldenClientID = "TEST_5Y0000000000REBELL"
	goldenTime     = "2025-03-14T09:26:53Z"
	goldenBody     = `{"grantType":"AUTHORIZATION_CODE","authCode":"0000000001AbCdEfGh1234567890xyz","referenceClientId":"3333010071465913001"}`
	goldenSHA256   = "7733e7eec1725def9120dc722bb6e37a284e15ae58db359ea7a4b5614608a39b"
)

func TestSignedContentGoldenVector(t *testing.T) {
	content := SignedContent("POST", goldenURI, goldenClientID, goldenTime, []byte(goldenBody))
	if len(content) != 201 {
		t.Errorf("length = %d, want 201", len(content))
	}
	if n := bytes.Count(content, []byte{'\n'}); n != 1 {
		t.Errorf("%d LFs, want 1", n)
	}
	if i := bytes.IndexByte(content, '\n'); i != 34 {
		t.Errorf("LF at offset %d, want 34", i)
	}
	sum := sha256.Sum256(content)
	if got := hex.EncodeToString(sum[:]); got != goldenSHA256 {
		t.Errorf("SHA-256 = %s, want %s", got, goldenSHA256)
	}
	want := "POST /v2/authorizations/applyToken\n" + goldenClientID + "." + goldenTime + "." + goldenBody
	if string(content) != want {
		t.Errorf("content = %q", content)
	}
}

// TestSignatureMatchesOpenSSL signs the golden content with Go and with the
// openssl command line tool (docs/protocol.md's cross-check recipe); PKCS#1
// v1.5 is deterministic, so the two must be identical.
func TestSignatureMatchesOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("SKIPPING the openssl cross-check: no openssl binary on PATH")
	}
	key := testKey(t, 0)
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "merchant.pem")
	contentPath := filepath.Join(dir, "content")
	content := SignedContent("POST", goldenURI, goldenClientID, goldenTime, []byte(goldenBody))
	if err := os.WriteFile(keyPath, EncodePrivateKeyPEM(key), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(contentPath, content, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "dgst", "-sha256", "-sign", keyPath, contentPath).Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	sig, err := SignContent(key, content)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, sig) {
		t.Fatal("Go and openssl signatures differ")
	}
	b64 := base64.StdEncoding.EncodeToString(sig)
	if len(b64) != 344 || !strings.HasSuffix(b64, "=") {
		t.Errorf("base64 signature of length %d: %q", len(b64), b64[len(b64)-4:])
	}

	// And openssl verifies what the Signer puts in the header.
	pubPath := filepath.Join(dir, "merchant.pub")
	sigPath := filepath.Join(dir, "sig")
	if err := os.WriteFile(pubPath, EncodePublicKeyPEM(&key.PublicKey), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := NewSigner(goldenClientID, key, 1, AlgorithmSHA256withRSA)
	h := http.Header{}
	now, _ := time.Parse(time.RFC3339, goldenTime)
	if err := s.Sign(h, HeaderRequestTime, "POST", goldenURI, []byte(goldenBody), now); err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseSignatureHeader(h.Get(HeaderSignature))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sigPath, parsed.Signature, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(openssl, "dgst", "-sha256", "-verify", pubPath, "-signature", sigPath, contentPath).CombinedOutput(); err != nil {
		t.Fatalf("openssl does not verify the header's signature: %v: %s", err, out)
	}
}

func TestSignerHeaders(t *testing.T) {
	key := testKey(t, 0)
	s, err := NewSigner(goldenClientID, key, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 3, 14, 10, 26, 53, 999, time.FixedZone("CET", 3600))
	h := http.Header{}
	if err := s.Sign(h, HeaderRequestTime, "POST", goldenURI, []byte(goldenBody), now); err != nil {
		t.Fatal(err)
	}
	if got := h.Get(HeaderRequestTime); got != goldenTime {
		t.Errorf("Request-Time = %q, want %q (UTC, seconds)", got, goldenTime)
	}
	if h.Get(HeaderClientID) != goldenClientID || h.Get(HeaderContentType) != "application/json; charset=UTF-8" {
		t.Errorf("headers: %v", h)
	}
	sigHeader := h.Get(HeaderSignature)
	if !strings.HasPrefix(sigHeader, "algorithm=RSA256, keyVersion=3, signature=") {
		t.Errorf("Signature = %q", sigHeader)
	}
	value := strings.TrimPrefix(sigHeader, "algorithm=RSA256, keyVersion=3, signature=")
	if strings.ContainsAny(value, "+/=") {
		t.Errorf("signature value is not percent-encoded: %q", value)
	}
	raw, _ := url.QueryUnescape(value)
	want, _ := SignContent(key, SignedContent("POST", goldenURI, goldenClientID, goldenTime, []byte(goldenBody)))
	if raw != base64.StdEncoding.EncodeToString(want) {
		t.Error("header signature is not std base64 of the signature over the content")
	}
	if _, err := VerifyMessage(&key.PublicKey, h, HeaderRequestTime, "POST", goldenURI, []byte(goldenBody)); err != nil {
		t.Errorf("VerifyMessage: %v", err)
	}
}

func TestNewSignerRejects(t *testing.T) {
	key := testKey(t, 0)
	for name, f := range map[string]func() error{
		"no client id":  func() error { _, err := NewSigner("", key, 1, ""); return err },
		"no key":        func() error { _, err := NewSigner("C", nil, 1, ""); return err },
		"negative kv":   func() error { _, err := NewSigner("C", key, -1, ""); return err },
		"bad algorithm": func() error { _, err := NewSigner("C", key, 1, "SHA1withRSA"); return err },
	} {
		if f() == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseSignatureHeader(t *testing.T) {
	sig := bytes.Repeat([]byte{0xfb, 0xff, 0xfe}, 86) // base64 full of + and /
	std := base64.StdEncoding.EncodeToString(sig)
	rawURL := base64.RawURLEncoding.EncodeToString(sig)
	if !strings.ContainsAny(std, "+/") {
		t.Fatal("test signature should contain + and /")
	}
	good := []struct{ name, header, alg, kv string }{
		{"canonical", "algorithm=RSA256, keyVersion=1, signature=" + url.QueryEscape(std), "RSA256", "1"},
		{"no spaces", "algorithm=RSA256,keyVersion=1,signature=" + url.QueryEscape(std), "RSA256", "1"},
		{"raw std base64", "algorithm=SHA256withRSA, keyVersion=0, signature=" + std, "SHA256withRSA", "0"},
		{"base64url unpadded", "algorithm=rsa256, keyVersion=2, signature=" + rawURL, "rsa256", "2"},
		{"unpadded std", "algorithm=RSA256, signature=" + strings.TrimRight(std, "="), "RSA256", ""},
		{"order and case", "Signature=" + url.QueryEscape(std) + " , KEYVERSION=7 ,algorithm=sha256withrsa", "sha256withrsa", "7"},
		{"lowercase escapes", "algorithm=RSA256, keyVersion=1, signature=" + strings.ToLower(strings.ReplaceAll(url.QueryEscape(std), "%2", "%2")), "RSA256", "1"},
		{"trailing comma", "algorithm=RSA256, keyVersion=1, signature=" + url.QueryEscape(std) + ",", "RSA256", "1"},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseSignatureHeader(tc.header)
			if err != nil {
				t.Fatal(err)
			}
			if h.Algorithm != tc.alg || h.KeyVersion != tc.kv {
				t.Errorf("got %q %q", h.Algorithm, h.KeyVersion)
			}
			if tc.name != "lowercase escapes" && !bytes.Equal(h.Signature, sig) {
				t.Error("signature bytes differ")
			}
		})
	}
	bad := map[string]string{
		"empty":            "",
		"no algorithm":     "keyVersion=1, signature=" + std,
		"other algorithm":  "algorithm=ECC224, signature=" + std,
		"no signature":     "algorithm=RSA256, keyVersion=1",
		"empty signature":  "algorithm=RSA256, keyVersion=1, signature=",
		"not base64":       "algorithm=RSA256, signature=!!!notbase64!!!",
		"bad escape":       "algorithm=RSA256, signature=%zz",
		"pair without =":   "algorithm=RSA256, junk, signature=" + std,
		"keyVersion word":  "algorithm=RSA256, keyVersion=one, signature=" + std,
		"too long":         "algorithm=RSA256, signature=" + strings.Repeat("A", 5000),
		"plus as space":    "algorithm=RSA256, signature=" + strings.ReplaceAll(std, "+", " "),
		"only separators":  ",,,",
		"keyVersion minus": "algorithm=RSA256, keyVersion=-1, signature=" + std,
	}
	for name, header := range bad {
		t.Run("bad/"+name, func(t *testing.T) {
			h, err := ParseSignatureHeader(header)
			if name == "plus as space" {
				// A '+' that arrived as a space cannot decode to the same
				// bytes; it must not verify, parse error or not.
				if err == nil && bytes.Equal(h.Signature, sig) {
					t.Fatal("space decoded as +")
				}
				return
			}
			if err == nil {
				t.Fatalf("no error for %q", header)
			}
			if !errors.Is(err, ErrSignatureHeader) {
				t.Fatalf("error %v does not wrap ErrSignatureHeader", err)
			}
		})
	}
}

func TestVerifyMessageFailures(t *testing.T) {
	key, other := testKey(t, 0), testKey(t, 1)
	s, _ := NewSigner("REBELL", key, 1, "")
	body := []byte(`{"result":{"resultStatus":"S","resultCode":"SUCCESS"}}`)
	now := time.Now()
	signed := func() http.Header {
		h := http.Header{}
		if err := s.Sign(h, HeaderResponseTime, "POST", goldenURI, body, now); err != nil {
			t.Fatal(err)
		}
		return h
	}
	cases := map[string]struct {
		mutate func(http.Header) ([]byte, string)
		pub    bool
		want   SignatureProblem
	}{
		"other key":         {func(h http.Header) ([]byte, string) { return body, goldenURI }, false, SignatureInvalid},
		"body changed":      {func(h http.Header) ([]byte, string) { return append([]byte(" "), body...), goldenURI }, true, SignatureInvalid},
		"path changed":      {func(h http.Header) ([]byte, string) { return body, "/api" + goldenURI }, true, SignatureInvalid},
		"client id changed": {func(h http.Header) ([]byte, string) { h.Set(HeaderClientID, "OTHER"); return body, goldenURI }, true, SignatureInvalid},
		"time changed": {func(h http.Header) ([]byte, string) {
			h.Set(HeaderResponseTime, "2000-01-01T00:00:00Z")
			return body, goldenURI
		}, true, SignatureInvalid},
		"no time":      {func(h http.Header) ([]byte, string) { h.Del(HeaderResponseTime); return body, goldenURI }, true, SignatureUnverifiable},
		"no client id": {func(h http.Header) ([]byte, string) { h.Del(HeaderClientID); return body, goldenURI }, true, SignatureUnverifiable},
		"no signature": {func(h http.Header) ([]byte, string) { h.Del(HeaderSignature); return body, goldenURI }, true, SignatureMissing},
		"garbled signature": {func(h http.Header) ([]byte, string) {
			h.Set(HeaderSignature, "algorithm=RSA256")
			return body, goldenURI
		}, true, SignatureUnreadable},
		"request time field": {func(h http.Header) ([]byte, string) {
			h.Set(HeaderRequestTime, h.Get(HeaderResponseTime))
			h.Del(HeaderResponseTime)
			return body, goldenURI
		}, true, SignatureUnverifiable},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := signed()
			b, uri := tc.mutate(h)
			pub := &other.PublicKey
			if tc.pub {
				pub = &key.PublicKey
			}
			_, err := VerifyMessage(pub, h, HeaderResponseTime, "POST", uri, b)
			var se *SignatureError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *SignatureError", err)
			}
			if se.Problem != tc.want {
				t.Fatalf("problem %d (%v), want %d", se.Problem, err, tc.want)
			}
		})
	}
}
