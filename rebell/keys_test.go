package rebell

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// wrapped64 is base64 broken into 64-character lines, as tools print it.
func wrapped64(der []byte) []byte {
	s := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	b.WriteString(s + "\n")
	return []byte(b.String())
}

func TestParsePrivateKeyFormats(t *testing.T) {
	key := testKey(t, 0)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	pkcs1 := x509.MarshalPKCS1PrivateKey(key)
	for name, data := range map[string][]byte{
		"PEM PKCS#8":            pemOf("PRIVATE KEY", pkcs8),
		"PEM PKCS#1":            pemOf("RSA PRIVATE KEY", pkcs1),
		"PEM with CRLF":         []byte(strings.ReplaceAll(string(pemOf("PRIVATE KEY", pkcs8)), "\n", "\r\n")),
		"bare base64 PKCS#8":    []byte(base64.StdEncoding.EncodeToString(pkcs8)),
		"bare base64 PKCS#1":    []byte(base64.StdEncoding.EncodeToString(pkcs1)),
		"wrapped base64 PKCS#8": wrapped64(pkcs8),
		"padded with spaces":    []byte("  \n" + base64.StdEncoding.EncodeToString(pkcs8) + "\n\n"),
		"EncodePrivateKeyPEM":   EncodePrivateKeyPEM(key),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePrivateKey(data)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(key) {
				t.Fatal("parsed a different key")
			}
		})
	}
}

func TestParsePublicKeyFormats(t *testing.T) {
	key := testKey(t, 0)
	pkix, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pkcs1 := x509.MarshalPKCS1PublicKey(&key.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkixName("rebell test"),
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Unix(1<<31, 0),
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"PEM PKIX":                pemOf("PUBLIC KEY", pkix),
		"PEM PKCS#1":              pemOf("RSA PUBLIC KEY", pkcs1),
		"PEM certificate":         pemOf("CERTIFICATE", cert),
		"bare base64 PKIX":        []byte(base64.StdEncoding.EncodeToString(pkix)),
		"bare base64 PKCS#1":      []byte(base64.StdEncoding.EncodeToString(pkcs1)),
		"bare base64 certificate": wrapped64(cert),
		"EncodePublicKeyPEM":      EncodePublicKeyPEM(&key.PublicKey),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePublicKey(data)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(&key.PublicKey) {
				t.Fatal("parsed a different key")
			}
		})
	}
}

func pkixName(cn string) pkix.Name { return pkix.Name{CommonName: cn} }

func TestParseKeyErrors(t *testing.T) {
	rsaKey := testKey(t, 0)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ecPKCS8, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecSEC1, _ := x509.MarshalECPrivateKey(ec)
	edPKCS8, _ := x509.MarshalPKCS8PrivateKey(ed)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	smallPKCS8, _ := x509.MarshalPKCS8PrivateKey(small)
	smallPub, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	rsaPKCS8, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaPub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: []byte{1, 2, 3}})

	private := []struct {
		name string
		data []byte
		want KeyProblem
	}{
		{"empty", nil, KeyEmpty},
		{"whitespace", []byte(" \n\t "), KeyEmpty},
		{"garbage", []byte("this is not a key!"), KeyGarbage},
		{"base64 of junk", []byte(base64.StdEncoding.EncodeToString([]byte("junk junk junk"))), KeyUnparsable},
		{"broken PEM", []byte("-----BEGIN PRIVATE KEY-----\n@@@\n-----END PRIVATE KEY-----\n"), KeyGarbage},
		{"PEM of junk", pemOf("PRIVATE KEY", []byte("junk")), KeyUnparsable},
		{"EC PKCS#8", pemOf("PRIVATE KEY", ecPKCS8), KeyNotRSA},
		{"EC SEC1", pemOf("EC PRIVATE KEY", ecSEC1), KeyNotRSA},
		{"Ed25519", pemOf("PRIVATE KEY", edPKCS8), KeyNotRSA},
		{"bare EC", []byte(base64.StdEncoding.EncodeToString(ecPKCS8)), KeyNotRSA},
		{"RSA 1024", pemOf("PRIVATE KEY", smallPKCS8), KeyTooSmall},
		{"encrypted", encrypted, KeyEncrypted},
		{"encrypted PKCS#8", pemOf("ENCRYPTED PRIVATE KEY", []byte{1}), KeyEncrypted},
		{"public instead", pemOf("PUBLIC KEY", rsaPub), KeyNotPrivate},
		{"bare public instead", []byte(base64.StdEncoding.EncodeToString(rsaPub)), KeyNotPrivate},
		{"two blocks", append(pemOf("PRIVATE KEY", rsaPKCS8), pemOf("PRIVATE KEY", rsaPKCS8)...), KeyTrailingPEM},
		{"wrong type", pemOf("OPENSSH PRIVATE KEY", []byte{1}), KeyWrongType},
		{"too large", make([]byte, maxKeyBytes+1), KeyTooLarge},
	}
	for _, tc := range private {
		t.Run("private/"+tc.name, func(t *testing.T) {
			_, err := ParsePrivateKey(tc.data)
			checkKeyErr(t, err, tc.want, tc.data)
		})
	}
	public := []struct {
		name string
		data []byte
		want KeyProblem
	}{
		{"empty", []byte(""), KeyEmpty},
		{"garbage", []byte("%%%%"), KeyGarbage},
		{"EC", pemOf("PUBLIC KEY", ecPub), KeyNotRSA},
		{"bare EC", []byte(base64.StdEncoding.EncodeToString(ecPub)), KeyNotRSA},
		{"RSA 1024", pemOf("PUBLIC KEY", smallPub), KeyTooSmall},
		{"private instead", pemOf("PRIVATE KEY", rsaPKCS8), KeyNotPublic},
		{"bare private instead", []byte(base64.StdEncoding.EncodeToString(rsaPKCS8)), KeyNotPublic},
		{"PEM of junk", pemOf("PUBLIC KEY", []byte("junk")), KeyUnparsable},
		{"junk certificate", pemOf("CERTIFICATE", []byte("junk")), KeyUnparsable},
		{"wrong type", pemOf("X509 CRL", []byte{1}), KeyWrongType},
	}
	for _, tc := range public {
		t.Run("public/"+tc.name, func(t *testing.T) {
			_, err := ParsePublicKey(tc.data)
			checkKeyErr(t, err, tc.want, tc.data)
		})
	}
}

func checkKeyErr(t *testing.T, err error, want KeyProblem, input []byte) {
	t.Helper()
	var ke *KeyError
	if !errors.As(err, &ke) {
		t.Fatalf("error %v is not a *KeyError", err)
	}
	if ke.Problem != want {
		t.Fatalf("problem = %q (%v), want %q", ke.Problem, err, want)
	}
	if !strings.Contains(err.Error(), string(want)) {
		t.Fatalf("message %q does not say %q", err, want)
	}
	// The message must not quote the input.
	for _, line := range strings.Split(string(input), "\n") {
		if strings.HasPrefix(line, "-----") {
			continue // PEM armour names the block type, which messages may repeat
		}
		for i := 0; i+12 <= len(line); i += 12 {
			if chunk := line[i : i+12]; strings.Contains(err.Error(), chunk) {
				t.Fatalf("message %q quotes the key input %q", err, chunk)
			}
		}
	}
}

func TestReadKeyFiles(t *testing.T) {
	key := testKey(t, 0)
	dir := t.TempDir()
	privPath := filepath.Join(dir, "merchant.pem")
	pubPath := filepath.Join(dir, "rebell.pub")
	badPath := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(privPath, EncodePrivateKeyPEM(key), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, EncodePublicKeyPEM(&key.PublicKey), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badPath, []byte("not a key!"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := ReadPrivateKeyFile(privPath); err != nil || !k.Equal(key) {
		t.Fatalf("ReadPrivateKeyFile: %v", err)
	}
	if k, err := ReadPublicKeyFile(pubPath); err != nil || !k.Equal(&key.PublicKey) {
		t.Fatalf("ReadPublicKeyFile: %v", err)
	}
	_, err := ReadPrivateKeyFile(filepath.Join(dir, "missing.pem"))
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Problem != KeyUnreadable || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing file: %v", err)
	}
	_, err = ReadPrivateKeyFile(badPath)
	if !errors.As(err, &ke) || ke.Problem != KeyGarbage || !strings.Contains(err.Error(), badPath) {
		t.Fatalf("bad file: %v", err)
	}
	_, err = ReadPublicKeyFile(privPath)
	if !errors.As(err, &ke) || ke.Problem != KeyNotPublic {
		t.Fatalf("private key as public: %v", err)
	}
}
