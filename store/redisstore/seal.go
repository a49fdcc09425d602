package redisstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// sealer seals values with AES-256-GCM: a random 12-byte nonce, then the
// ciphertext and tag. The associated data is the value's key name, so a
// value moved to another key does not open (docs/sessions.md). The plaintext also
// carries the realm (and a record its version), checked on opening: a value
// written for another merchant, or a version edited beside its value, is
// refused too.
//
// Values are always sealed with the current key; they open with the current
// key or any previous one (Config.PreviousEncryptionKeys), so a rolling
// change of the key ends no session (docs/key-rotation.md).
type sealer struct {
	aead cipher.AEAD
	// previous open values sealed with earlier keys, newest first.
	previous []cipher.AEAD
	// realm is a short tag of Config.Realm.
	realm string
}

func newSealer(key []byte, realm string, previous ...[]byte) (*sealer, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	tag := sha256.Sum256([]byte(realm))
	s := &sealer{aead: aead, realm: hex.EncodeToString(tag[:8])}
	for _, k := range previous {
		p, err := newAEAD(k)
		if err != nil {
			return nil, errors.New("redisstore: previous_encryption_keys: not an AES-256 key")
		}
		s.previous = append(s.previous, p)
	}
	return s, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, errors.New("redisstore: encryption_key: not an AES-256 key")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, errors.New("redisstore: encryption_key: not an AES-256 key")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, errors.New("redisstore: encryption_key: GCM unavailable")
	}
	return aead, nil
}

// seal returns nonce||ciphertext of plain, with the key name as associated
// data.
func (s *sealer) seal(plain []byte, name string) []byte {
	out := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	_, _ = rand.Read(out) // never fails (crypto/rand docs)
	return s.aead.Seal(out, out, plain, []byte(name))
}

// open reverses seal, with the current key or a previous one; it fails if
// sealed was altered, sealed for another key name, or with a key it does
// not hold.
func (s *sealer) open(sealed []byte, name string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, errors.New("sealed value too short")
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(name))
	for _, p := range s.previous {
		if err == nil {
			break
		}
		plain, err = p.Open(nil, sealed[:n], sealed[n:], []byte(name))
	}
	return plain, err
}

// plainRecord is the sealed part of a session.Record. Times are unix
// nanoseconds, 0 for the zero time.
type plainRecord struct {
	Realm              string `json:"m"`
	Version            uint64 `json:"v"`
	CustomerID         string `json:"c"`
	AccessToken        string `json:"a"`
	AccessTokenExpiry  int64  `json:"ae"`
	RefreshToken       string `json:"r"`
	RefreshTokenExpiry int64  `json:"re"`
	Created            int64  `json:"cr"`
}

// sealRecord seals the secret part of rec for key name.
func (s *sealer) sealRecord(name string, rec *session.Record) ([]byte, error) {
	plain, err := json.Marshal(plainRecord{
		Realm:              s.realm,
		Version:            rec.Version,
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
	return s.seal(plain, name), nil
}

// openRecord opens a record sealed for key name, stored at version. Its
// errors wrap session.ErrRecordCorrupt and contain no value.
func (s *sealer) openRecord(name string, version uint64, sealed []byte) (*session.Record, error) {
	plain, err := s.open(sealed, name)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w: does not open", session.ErrRecordCorrupt)
	}
	var p plainRecord
	if err := json.Unmarshal(plain, &p); err != nil {
		return nil, fmt.Errorf("redisstore: %w: does not decode", session.ErrRecordCorrupt)
	}
	switch {
	case p.Realm != s.realm:
		return nil, fmt.Errorf("redisstore: %w: written for another endpoint or client id", session.ErrRecordCorrupt)
	case p.Version != version:
		return nil, fmt.Errorf("redisstore: %w: version does not match", session.ErrRecordCorrupt)
	}
	return &session.Record{
		Version:            version,
		CustomerID:         p.CustomerID,
		AccessToken:        rebell.NewSecret(p.AccessToken),
		AccessTokenExpiry:  fromUnixNano(p.AccessTokenExpiry),
		RefreshToken:       rebell.NewSecret(p.RefreshToken),
		RefreshTokenExpiry: fromUnixNano(p.RefreshTokenExpiry),
		Created:            fromUnixNano(p.Created),
	}, nil
}

// sealMemo seals a login memo's session id for key name, with the realm.
func (s *sealer) sealMemo(name, sessionID string) []byte {
	return s.seal([]byte(s.realm+":"+sessionID), name)
}

// openMemo opens a login memo sealed for key name.
func (s *sealer) openMemo(name string, sealed []byte) (string, error) {
	plain, err := s.open(sealed, name)
	if err != nil {
		return "", fmt.Errorf("redisstore: login memo: %w: does not open", session.ErrRecordCorrupt)
	}
	realm, id, ok := strings.Cut(string(plain), ":")
	if !ok || realm != s.realm {
		return "", fmt.Errorf("redisstore: login memo: %w: written for another endpoint or client id", session.ErrRecordCorrupt)
	}
	return id, nil
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
