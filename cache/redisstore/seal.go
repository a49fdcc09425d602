package redisstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// sealer seals values with AES-256-GCM: a random 12-byte nonce, then the
// ciphertext and tag. The associated data binds a value to its key name (and
// a record to its version) and to the realm, so a value moved elsewhere, or
// written for another merchant, does not open.
type sealer struct {
	aead  cipher.AEAD
	realm string
}

func newSealer(key []byte, realm string) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, errors.New("redisstore: encryption_key: not an AES-256 key")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, errors.New("redisstore: encryption_key: GCM unavailable")
	}
	return &sealer{aead: aead, realm: realm}, nil
}

// seal returns nonce||ciphertext of plain under ad and the realm.
func (s *sealer) seal(plain []byte, ad string) []byte {
	out := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	_, _ = rand.Read(out) // never fails (crypto/rand docs)
	return s.aead.Seal(out, out, plain, []byte(ad+"\x00"+s.realm))
}

// open reverses seal; it fails if sealed was altered, sealed under another
// ad or realm, or with another key.
func (s *sealer) open(sealed []byte, ad string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, errors.New("sealed value too short")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], []byte(ad+"\x00"+s.realm))
}

// recordAD is the associated data of a record: its key name and version.
func recordAD(name string, version uint64) string {
	return name + "\x00" + strconv.FormatUint(version, 10)
}

// plainRecord is the sealed part of a cache.Record. Times are unix
// nanoseconds, 0 for the zero time.
type plainRecord struct {
	CustomerID         string `json:"c"`
	AccessToken        string `json:"a"`
	AccessTokenExpiry  int64  `json:"ae"`
	RefreshToken       string `json:"r"`
	RefreshTokenExpiry int64  `json:"re"`
	Created            int64  `json:"cr"`
}

// sealRecord seals the secret part of rec for key name at rec.Version.
func (s *sealer) sealRecord(name string, rec *cache.Record) ([]byte, error) {
	plain, err := json.Marshal(plainRecord{
		CustomerID:         rec.CustomerID,
		AccessToken:        rec.AccessToken.Reveal(),
		AccessTokenExpiry:  unixNano(rec.AccessTokenExpiry),
		RefreshToken:       rec.RefreshToken.Reveal(),
		RefreshTokenExpiry: unixNano(rec.RefreshTokenExpiry),
		Created:            unixNano(rec.Created),
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: encoding a record: %w", err)
	}
	return s.seal(plain, recordAD(name, rec.Version)), nil
}

// openRecord opens a record sealed for key name at version. Its errors wrap
// cache.ErrRecordCorrupt and contain no value.
func (s *sealer) openRecord(name string, version uint64, sealed []byte) (*cache.Record, error) {
	plain, err := s.open(sealed, recordAD(name, version))
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w: does not open", cache.ErrRecordCorrupt)
	}
	var p plainRecord
	if err := json.Unmarshal(plain, &p); err != nil {
		return nil, fmt.Errorf("redisstore: %w: does not decode", cache.ErrRecordCorrupt)
	}
	return &cache.Record{
		Version:            version,
		CustomerID:         p.CustomerID,
		AccessToken:        rebell.NewSecret(p.AccessToken),
		AccessTokenExpiry:  fromUnixNano(p.AccessTokenExpiry),
		RefreshToken:       rebell.NewSecret(p.RefreshToken),
		RefreshTokenExpiry: fromUnixNano(p.RefreshTokenExpiry),
		Created:            fromUnixNano(p.Created),
	}, nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// unixMilli is t in unix milliseconds, 0 for the zero time.
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnixMilli(n int64) time.Time {
	if n <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(n)
}
