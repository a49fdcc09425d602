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
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// SessionIDLen is the length of a session id: 32 random bytes in unpadded
// base64url.
const SessionIDLen = 43

// Key identifies a session: the SHA-256 of its session id. The id itself is
// never stored or compared.
type Key [sha256.Size]byte

// Tag returns the first 8 hex characters of the key, which name the session
// in logs.
func (k Key) Tag() string { return hex.EncodeToString(k[:4]) }

// String returns Tag, so a Key never prints in full.
func (k Key) String() string { return k.Tag() }

// NewSessionID returns a new session id (32 bytes from crypto/rand, base64url)
// and its key.
func NewSessionID() (string, Key) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand docs)
	id := base64.RawURLEncoding.EncodeToString(b[:])
	return id, sha256.Sum256([]byte(id))
}

// ParseSessionID checks that id is SessionIDLen base64url characters and
// returns its key. It does not allocate.
func ParseSessionID(id string) (Key, bool) {
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
	// Hash the string's bytes in place: a []byte(id) conversion of 43 bytes
	// would allocate on every request. Sum256 only reads its argument.
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(id), len(id))), true
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
