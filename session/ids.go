// Package session holds the vocabulary the gateway's cache and its session
// stores share: the key that names a session, the session ids that prove
// themselves (docs/sessions.md), the record a store keeps, the store's
// announcements and its role interfaces. It imports neither the cache nor
// any store, so a store implementation needs nothing else.
package session

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// IDLen is the length of a session id: 32 bytes in unpadded
// base64url.
const IDLen = 43

// idEncoding is the encoding of session ids: unpadded base64url, canonical.
var idEncoding = base64.RawURLEncoding.Strict()

// Layout of a session id's 32 bytes (docs/sessions.md): 16 random bytes,
// then the first 16 bytes of HMAC-SHA256 over them under a session key.
const (
	idRandomLen = 16
	idTagLen    = 16
)

// Key identifies a session: the SHA-256 of its session id. Sessions are
// kept and looked up by it; the id itself is never written to a store or
// logged.
type Key [sha256.Size]byte

// Tag returns the first 8 hex characters of the key, which name the session
// in logs.
func (k Key) Tag() string { return hex.EncodeToString(k[:4]) }

// String returns Tag, so a Key never prints in full.
func (k Key) String() string { return k.Tag() }

// IDs makes and checks session ids. An id proves itself: it carries
// a tag that only the holder of a session key can make, so a made-up id is
// refused by Parse without any lookup. The first key signs new ids; every
// key verifies, so a key can be rotated without ending the sessions made
// under the previous one.
type IDs struct {
	keys []idKey
	// verified remembers ids that verified lately (nil until the first).
	verified atomic.Pointer[[verifiedSlots]verifiedSlot]
}

// verifiedSlots is how many verified ids IDs remembers (about 1.1 MiB,
// allocated on the first): an id found there is not verified again, so the
// ids of the sessions in use cost Parse no hashing. An id is remembered in
// the slot its first 8 (random) bytes pick, replacing the one there.
const verifiedSlots = 1 << 14

// verifiedSlot is one remembered id and its key, written under a sequence
// lock (odd while a write is in progress; 0 while empty) so that a reader
// needs no lock and no allocation.
type verifiedSlot struct {
	seq atomic.Uint64
	raw [4]atomic.Uint64 // the id's 32 bytes
	key [4]atomic.Uint64
}

// recall returns the key of raw if it is the id remembered in its slot,
// compared in constant time.
func (x *IDs) recall(raw *[idRandomLen + idTagLen]byte) (Key, bool) {
	t := x.verified.Load()
	if t == nil {
		return Key{}, false
	}
	s := &t[binary.LittleEndian.Uint64(raw[:8])%verifiedSlots]
	seq := s.seq.Load()
	if seq == 0 || seq&1 == 1 {
		return Key{}, false // empty, or being written
	}
	var got [idRandomLen + idTagLen]byte
	var k Key
	for i := range 4 {
		binary.LittleEndian.PutUint64(got[8*i:], s.raw[i].Load())
		binary.LittleEndian.PutUint64(k[8*i:], s.key[i].Load())
	}
	if s.seq.Load() != seq || subtle.ConstantTimeCompare(got[:], raw[:]) != 1 {
		return Key{}, false
	}
	return k, true
}

// remember stores raw, an id that verified, with its key k. A write that
// finds the slot being written gives up.
func (x *IDs) remember(raw *[idRandomLen + idTagLen]byte, k *Key) {
	t := x.verified.Load()
	if t == nil {
		x.verified.CompareAndSwap(nil, new([verifiedSlots]verifiedSlot))
		t = x.verified.Load()
	}
	s := &t[binary.LittleEndian.Uint64(raw[:8])%verifiedSlots]
	seq := s.seq.Load()
	if seq&1 == 1 || !s.seq.CompareAndSwap(seq, seq+1) {
		return
	}
	for i := range 4 {
		s.raw[i].Store(binary.LittleEndian.Uint64(raw[8*i:]))
		s.key[i].Store(binary.LittleEndian.Uint64(k[8*i:]))
	}
	s.seq.Store(seq + 2)
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

// MinKeyLen is the shortest session key NewIDs accepts.
const MinKeyLen = 16

// NewIDs returns the IDs of keys: the first signs new ids,
// all of them verify. Each key must be at least MinKeyLen bytes.
func NewIDs(keys ...[]byte) (*IDs, error) {
	if len(keys) == 0 {
		return nil, errors.New("session: no session key")
	}
	x := &IDs{keys: make([]idKey, len(keys))}
	for i, k := range keys {
		if len(k) < MinKeyLen {
			return nil, fmt.Errorf("session: session key %d is %d bytes, want at least %d", i, len(k), MinKeyLen)
		}
		k = slices.Clone(k)
		x.keys[i].pool.New = func() any { return &idMAC{h: hmac.New(sha256.New, k)} }
	}
	return x, nil
}

// RandomIDs returns IDs under a new random key: ids that only
// this value (and its copies) accepts.
func RandomIDs() *IDs {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails (crypto/rand docs)
	x, _ := NewIDs(k)
	return x
}

// sessionKeyInfo labels the HKDF derivation of a session key, so that it is
// independent of every other use of the same secret.
const sessionKeyInfo = "caddy-rebell session id key v1"

// DeriveKey derives a session key from secret (the shared store's
// encryption key) with HKDF-SHA256 under its own label and realm (whose
// sessions these are), so that every instance sharing the secret and realm
// agrees on it and ids of another realm do not verify.
func DeriveKey(secret []byte, realm string) ([]byte, error) {
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
func (x *IDs) New() (string, Key) {
	var raw [idRandomLen + idTagLen]byte
	var r [idRandomLen]byte
	_, _ = rand.Read(r[:]) // never fails (crypto/rand docs)
	mac := x.keys[0].tag(&r)
	copy(raw[:], r[:])
	copy(raw[idRandomLen:], mac[:idTagLen])
	id := idEncoding.EncodeToString(raw[:])
	return id, sha256.Sum256([]byte(id))
}

// Parse checks that id is IDLen canonical base64url characters
// whose tag one of the keys made (compared in constant time), and returns
// its key. An id that verified lately is recognised by a constant-time
// comparison with the remembered one instead. It does not allocate (but
// for the memory of verified ids, once).
func (x *IDs) Parse(id string) (Key, bool) {
	if len(id) != IDLen {
		return Key{}, false
	}
	// Read the string's bytes in place: a []byte(id) conversion of 43 bytes
	// would allocate on every request. Decode and Sum256 only read it.
	// Strict decoding accepts only the canonical encoding (the last
	// character's 2 padding bits zero); the newlines the decoder skips make
	// it decode fewer than 32 bytes. So every id has exactly one spelling,
	// which the memory of verified ids relies on.
	b := unsafe.Slice(unsafe.StringData(id), len(id))
	var raw [idRandomLen + idTagLen]byte
	if n, err := idEncoding.Decode(raw[:], b); err != nil || n != len(raw) {
		return Key{}, false
	}
	if k, ok := x.recall(&raw); ok {
		return k, true
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
	k := Key(sha256.Sum256(b))
	x.remember(&raw, &k)
	return k, true
}
