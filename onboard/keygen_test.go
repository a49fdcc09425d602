package onboard

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func TestGenerateKeyPair(t *testing.T) {
	dir := t.TempDir()
	kp, err := GenerateKeyPair(dir, 2048)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := rebell.ReadPrivateKeyFile(kp.PrivateKey)
	if err != nil {
		t.Fatalf("the gateway's loader refuses the private key: %v", err)
	}
	if priv.N.BitLen() != 2048 {
		t.Errorf("modulus is %d bits, want 2048", priv.N.BitLen())
	}
	pub, err := rebell.ReadPublicKeyFile(kp.PublicKey)
	if err != nil {
		t.Fatalf("the loader refuses the public key: %v", err)
	}
	if !pub.Equal(&priv.PublicKey) {
		t.Error("merchant-public.pem is not the public half of merchant-private.pem")
	}
	txt, err := os.ReadFile(kp.PublicKeyText)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSuffix(string(txt), "\n")
	if strings.ContainsAny(line, "\n -") {
		t.Errorf("merchant-public.txt is not one line of bare base64: %q", txt)
	}
	pub2, err := rebell.ParsePublicKey([]byte(line))
	if err != nil || !pub2.Equal(pub) {
		t.Errorf("merchant-public.txt does not hold the same public key (err %v)", err)
	}
	if kp.Fingerprint != Fingerprint(pub) || len(kp.Fingerprint) != 64 {
		t.Errorf("fingerprint %q", kp.Fingerprint)
	}

	pemData, _ := os.ReadFile(kp.PrivateKey)
	if !bytes.HasPrefix(pemData, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("private key is not PEM PKCS#8: %.30q", pemData)
	}
	pubData, _ := os.ReadFile(kp.PublicKey)
	if !bytes.HasPrefix(pubData, []byte("-----BEGIN PUBLIC KEY-----\n")) {
		t.Errorf("public key is not PEM PKIX: %.30q", pubData)
	}
	for path, want := range map[string]os.FileMode{kp.PrivateKey: 0o600, kp.PublicKey: 0o644, kp.PublicKeyText: 0o644} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", filepath.Base(path), got, want)
		}
	}
}

// TestGenerateKeyPairOpenSSL reads the three files with openssl, as a
// merchant's other tools would.
func TestGenerateKeyPairOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	kp, err := GenerateKeyPair(dir, 2048)
	if err != nil {
		t.Fatal(err)
	}
	run := func(stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("openssl %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	// The private key parses, checks, and its public half is the PEM file's.
	run(nil, "pkey", "-in", kp.PrivateKey, "-check", "-noout")
	fromPriv := run(nil, "pkey", "-in", kp.PrivateKey, "-pubout")
	fromPub := run(nil, "pkey", "-pubin", "-in", kp.PublicKey)
	if !bytes.Equal(fromPriv, fromPub) {
		t.Error("openssl: merchant-public.pem is not the public half of merchant-private.pem")
	}
	txt, _ := os.ReadFile(kp.PublicKeyText)
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(txt)))
	if err != nil {
		t.Fatal(err)
	}
	fromTxt := run(der, "pkey", "-pubin", "-inform", "DER")
	if !bytes.Equal(fromTxt, fromPub) {
		t.Error("openssl: merchant-public.txt is not the same key as merchant-public.pem")
	}
	text := run(nil, "pkey", "-in", kp.PrivateKey, "-noout", "-text")
	if !bytes.Contains(text, []byte("2048 bit")) {
		t.Errorf("openssl does not see a 2048-bit key: %.80s", text)
	}
}

func TestGenerateKeyPairRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	first, err := GenerateKeyPair(dir, 2048)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(first.PrivateKey)
	if _, err := GenerateKeyPair(dir, 2048); !errors.Is(err, ErrExists) {
		t.Fatalf("second run: %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(first.PrivateKey)
	if !bytes.Equal(before, after) {
		t.Fatal("the private key was overwritten")
	}

	// Any one of the three files already there stops the run before a key
	// is written.
	for _, name := range []string{PrivateKeyFile, PublicKeyFile, PublicKeyTextFile} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, name), []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := GenerateKeyPair(dir, 2048)
		if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s present: %v, want ErrExists naming it", name, err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("%s present: the directory now holds %d files, want it untouched", name, len(entries))
		}
		if got, _ := os.ReadFile(filepath.Join(dir, name)); string(got) != "keep me" {
			t.Errorf("%s was changed", name)
		}
	}
}

func TestGenerateKeyPairBits(t *testing.T) {
	for _, bits := range []int{0, 1024, 2047, 8192} {
		if _, err := GenerateKeyPair(t.TempDir(), bits); err == nil || !strings.Contains(err.Error(), "2048, 3072 or 4096") {
			t.Errorf("bits %d: %v", bits, err)
		}
	}
	if testing.Short() {
		return
	}
	kp, err := GenerateKeyPair(t.TempDir(), 3072)
	if err != nil {
		t.Fatal(err)
	}
	k, err := rebell.ReadPrivateKeyFile(kp.PrivateKey)
	if err != nil || k.N.BitLen() != 3072 {
		t.Fatalf("3072: %v", err)
	}
}

// TestGenerateKeyPairMissingDir: a missing --dir (and its missing parents)
// is created with mode 0700 and the pair written into it; a path through a
// regular file, or a file as --dir, is an error.
func TestGenerateKeyPairMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "rebell")
	kp, err := GenerateKeyPair(dir, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if kp.CreatedDir != dir {
		t.Errorf("CreatedDir %q, want %q", kp.CreatedDir, dir)
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("created dir: %v %v", st, err)
	}
	if _, err := rebell.ReadPrivateKeyFile(filepath.Join(dir, PrivateKeyFile)); err != nil {
		t.Fatal(err)
	}
	again, err := GenerateKeyPair(t.TempDir(), 2048)
	if err != nil || again.CreatedDir != "" {
		t.Errorf("an existing dir: CreatedDir %q, %v", again.CreatedDir, err)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateKeyPair(file, 2048); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file as the directory: %v", err)
	}
	if _, err := GenerateKeyPair(filepath.Join(file, "sub"), 2048); err == nil {
		t.Error("a directory under a regular file is not an error")
	}
}
