// Package cache keeps the gateway's sessions: who each opaque session id acts
// for and the Rebell tokens it acts with. It applies the freshness rules of
// SPEC §5 (refresh-ahead, blocking refresh, one refresh in flight per
// session, idle timeout, ending a session whose refresh token is dead) with an
// injected clock, deduplicates logins, and holds sessions in a ristretto
// in-memory tier.
//
// It imports nothing from Caddy.
package cache

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// SessionIDLen is the length of a session id: 32 bytes in unpadded
// base64url.
const SessionIDLen = 43

// Layout of a session id's 32 bytes (docs/sessions.md): 16 random bytes,
// then the first 16 bytes of HMAC-SHA256 over them under a session key.
const (
	idRandomLen = 16
	idTagLen    = 16
)

// Key identifies a session: the SHA-256 of its session id. The id itself is
// never stored or compared.
type Key [sha256.Size]byte

// Tag returns the first 8 hex characters of the key, which name the session
// in logs.
func (k Key) Tag() string { return hex.EncodeToString(k[:4]) }

// String returns Tag, so a Key never prints in full.
func (k Key) String() string { return k.Tag() }

// SessionIDs makes and checks session ids. An id proves itself: it carries
// a tag that only the holder of a session key can make, so a made-up id is
// refused by Parse without any lookup. The first key signs new ids; every
// key verifies, so a key can be rotated without ending the sessions made
// under the previous one.
type SessionIDs struct {
	keys []idKey
}

// idKey is a session key with a pool of HMAC-SHA256 states keyed with it:
// crypto/hmac keeps the hash states after the key's pads, so a tag costs two
// SHA-256 blocks, and pooling them makes it cost no allocation.
type idKey struct {
	pool sync.Pool // of *idMAC
}

type idMAC struct {
	h   hash.Hash
	msg [idRandomLen]byte
	sum [sha256.Size]byte
}

// MinSessionKeyLen is the shortest session key NewSessionIDs accepts.
const MinSessionKeyLen = 16

// NewSessionIDs returns the SessionIDs of keys: the first signs new ids,
// all of them verify. Each key must be at least MinSessionKeyLen bytes.
func NewSessionIDs(keys ...[]byte) (*SessionIDs, error) {
	if len(keys) == 0 {
		return nil, errors.New("cache: no session key")
	}
	x := &SessionIDs{keys: make([]idKey, len(keys))}
	for i, k := range keys {
		if len(k) < MinSessionKeyLen {
			return nil, fmt.Errorf("cache: session key %d is %d bytes, want at least %d", i, len(k), MinSessionKeyLen)
		}
		k = slices.Clone(k)
		x.keys[i].pool.New = func() any { return &idMAC{h: hmac.New(sha256.New, k)} }
	}
	return x, nil
}

// RandomSessionIDs returns SessionIDs under a new random key: ids that only
// this value (and its copies) accepts.
func RandomSessionIDs() *SessionIDs {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails (crypto/rand docs)
	x, _ := NewSessionIDs(k)
	return x
}

// sessionKeyInfo labels the HKDF derivation of a session key, so that it is
// independent of every other use of the same secret.
const sessionKeyInfo = "caddy-rebell session id key v1"

// DeriveSessionKey derives a session key from secret (the shared store's
// encryption key) with HKDF-SHA256 under its own label and realm (whose
// sessions these are), so that every instance sharing the secret and realm
// agrees on it and ids of another realm do not verify.
func DeriveSessionKey(secret []byte, realm string) ([]byte, error) {
	return hkdf.Key(sha256.New, secret, nil, sessionKeyInfo+"\x00"+realm, 32)
}

// tag computes the HMAC-SHA256 of msg under k. It does not allocate once
// the pool is warm.
func (k *idKey) tag(msg *[idRandomLen]byte) [sha256.Size]byte {
	m := k.pool.Get().(*idMAC)
	m.h.Reset()
	m.msg = *msg
	m.h.Write(m.msg[:])
	m.h.Sum(m.sum[:0])
	sum := m.sum
	k.pool.Put(m)
	return sum
}

// New returns a new session id, tagged with the first key, and its Key.
func (x *SessionIDs) New() (string, Key) {
	var raw [idRandomLen + idTagLen]byte
	var r [idRandomLen]byte
	_, _ = rand.Read(r[:]) // never fails (crypto/rand docs)
	mac := x.keys[0].tag(&r)
	copy(raw[:], r[:])
	copy(raw[idRandomLen:], mac[:idTagLen])
	id := base64.RawURLEncoding.EncodeToString(raw[:])
	return id, sha256.Sum256([]byte(id))
}

// Parse checks that id is SessionIDLen canonical base64url characters
// whose tag one of the keys made (compared in constant time), and returns
// its key. It does not allocate.
func (x *SessionIDs) Parse(id string) (Key, bool) {
	if len(id) != SessionIDLen {
		return Key{}, false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return Key{}, false
		}
	}
	// The last character carries 4 padding bits that must be zero for the id
	// to be canonical (32 bytes encode to 43 characters).
	if base64URLValue(id[SessionIDLen-1])&0x3 != 0 {
		return Key{}, false
	}
	// Read the string's bytes in place: a []byte(id) conversion of 43 bytes
	// would allocate on every request. Decode and Sum256 only read it.
	b := unsafe.Slice(unsafe.StringData(id), len(id))
	var raw [idRandomLen + idTagLen]byte
	if n, err := base64.RawURLEncoding.Decode(raw[:], b); err != nil || n != len(raw) {
		return Key{}, false
	}
	r := (*[idRandomLen]byte)(raw[:idRandomLen])
	ok := 0
	for i := range x.keys {
		mac := x.keys[i].tag(r)
		ok |= subtle.ConstantTimeCompare(mac[:idTagLen], raw[idRandomLen:])
	}
	if ok != 1 {
		return Key{}, false
	}
	return sha256.Sum256(b), true
}

func base64URLValue(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c - 'A'
	case 'a' <= c && c <= 'z':
		return c - 'a' + 26
	case '0' <= c && c <= '9':
		return c - '0' + 52
	case c == '-':
		return 62
	default:
		return 63
	}
}

// Grant is what a request may act with: an immutable snapshot of a session's
// identity and current access token. A refresh makes a new Grant.
type Grant struct {
	// CustomerID is the Rebell user the session acts for.
	CustomerID string
	// AccessToken is the token injected into the upstream request.
	AccessToken rebell.Secret
	// AccessTokenExpiry is when AccessToken stops working.
	AccessTokenExpiry time.Time
	// SessionExpiry is when the session ends at the latest (the refresh
	// token's expiry).
	SessionExpiry time.Time

	attachment atomic.Pointer[any]
}

// Attachment returns the value attached to g with Attach, or nil.
func (g *Grant) Attachment() any {
	if p := g.attachment.Load(); p != nil {
		return *p
	}
	return nil
}

// Attach attaches v to g unless a value is attached already, and returns the
// attached value. Callers use it to derive per-grant values (such as
// placeholder values) once per grant instead of once per request.
func (g *Grant) Attach(v any) any {
	if g.attachment.CompareAndSwap(nil, &v) {
		return v
	}
	return *g.attachment.Load()
}

// Errors returned by the cache. Returned errors wrap exactly one of them
// (test with errors.Is); when Rebell gave a reason, they also wrap the
// *rebell.Error (rebell.ResultCodeOf gives its resultCode).
var (
	// ErrSessionInvalid: the session is unknown, ended or idle-expired.
	ErrSessionInvalid = errors.New("session invalid")
	// ErrReauthRequired: the refresh token expired, or Rebell said it is
	// invalid or used; the Mini App must log in again.
	ErrReauthRequired = errors.New("reauthorization required")
	// ErrAuthCodeRejected: login with an INVALID_CODE, EXPIRED_CODE or
	// USED_CODE answer.
	ErrAuthCodeRejected = errors.New("auth code rejected")
	// ErrRebellUnavailable: Rebell could not be reached or answered U, after
	// retries, and no valid access token remains.
	ErrRebellUnavailable = errors.New("rebell unavailable")
	// ErrRebellRejected: Rebell answered F for a reason in the merchant's
	// configuration, or its response was unusable or badly signed, and no
	// valid access token remains.
	ErrRebellRejected = errors.New("rebell rejected the request")
	// ErrStoreUnavailable: the session could not be stored or read.
	ErrStoreUnavailable = errors.New("session store unavailable")
)
