package onboard

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// The files that GenerateKeyPair writes.
const (
	// PrivateKeyFile is the merchant's private key, PEM PKCS#8, mode 0600:
	// the gateway's private_key_file.
	PrivateKeyFile = "merchant-private.pem"
	// PublicKeyFile is the public half, PEM PKIX.
	PublicKeyFile = "merchant-public.pem"
	// PublicKeyTextFile is the public half as bare base64 of the PKIX DER on
	// one line: the form Rebell's console takes.
	PublicKeyTextFile = "merchant-public.txt"
)

// KeyBits are the RSA modulus sizes GenerateKeyPair accepts. Rebell asks for
// 2048 (docs/protocol.md); the larger sizes are for policies that demand them.
var KeyBits = []int{2048, 3072, 4096}

// ErrExists is wrapped by GenerateKeyPair's error when one of its files is
// already there.
var ErrExists = errors.New("already exists")

// KeyPair describes the files GenerateKeyPair wrote.
type KeyPair struct {
	// PrivateKey, PublicKey and PublicKeyText are the paths written.
	PrivateKey, PublicKey, PublicKeyText string
	// Bits is the modulus size.
	Bits int
	// CreatedDir is the directory GenerateKeyPair created (mode 0700) because
	// it did not exist, "" if it existed.
	CreatedDir string
	// Fingerprint is the SHA-256 of the public key's PKIX DER in hex, the
	// same value `caddy rebell check` prints, to tell keys apart without
	// showing them.
	Fingerprint string
}

// GenerateKeyPair generates an RSA key of the given size and writes it into
// dir as PrivateKeyFile (mode 0600), PublicKeyFile and PublicKeyTextFile. It
// writes nothing if any of the three exists (the error wraps ErrExists), and
// removes what it wrote if a later write fails, so it never leaves half a
// pair or overwrites a key in use. A missing dir is created, with its
// missing parents, mode 0700: it holds a private key.
func GenerateKeyPair(dir string, bits int) (*KeyPair, error) {
	if !validBits(bits) {
		return nil, fmt.Errorf("key size %d: use 2048, 3072 or 4096", bits)
	}
	if dir == "" {
		dir = "."
	}
	created, err := ensureDir(dir)
	if err != nil {
		return nil, err
	}
	kp := &KeyPair{
		CreatedDir:    created,
		PrivateKey:    filepath.Join(dir, PrivateKeyFile),
		PublicKey:     filepath.Join(dir, PublicKeyFile),
		PublicKeyText: filepath.Join(dir, PublicKeyTextFile),
		Bits:          bits,
	}
	for _, p := range []string{kp.PrivateKey, kp.PublicKey, kp.PublicKeyText} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%s: %w; move it away or choose another --dir", p, ErrExists)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	kp.Fingerprint = Fingerprint(&key.PublicKey)
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{kp.PrivateKey, rebell.EncodePrivateKeyPEM(key), 0o600},
		{kp.PublicKey, rebell.EncodePublicKeyPEM(&key.PublicKey), 0o644},
		{kp.PublicKeyText, []byte(base64.StdEncoding.EncodeToString(der) + "\n"), 0o644},
	}
	var written []string
	for _, f := range files {
		if err := writeNew(f.path, f.data, f.mode); err != nil {
			for _, p := range written {
				_ = os.Remove(p)
			}
			if created != "" {
				_ = os.Remove(created) // only if still empty
			}
			return nil, err
		}
		written = append(written, f.path)
	}
	return kp, nil
}

// ensureDir checks that dir is a directory, creating it (and its missing
// parents) with mode 0700 when it does not exist. It returns dir when it
// created it.
func ensureDir(dir string) (created string, err error) {
	st, err := os.Stat(dir)
	switch {
	case err == nil && st.IsDir():
		return "", nil
	case err == nil:
		return "", fmt.Errorf("%s: not a directory", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// MkdirAll's mode passes through the umask; 0700 is what is meant.
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	return dir, nil
}

func validBits(bits int) bool {
	for _, b := range KeyBits {
		if bits == b {
			return true
		}
	}
	return false
}

// writeNew creates path, which must not exist, with exactly mode (the umask
// does not widen or narrow it), and writes data.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrExists)
		}
		return err
	}
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}
