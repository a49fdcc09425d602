package cache

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// Key identifies a session: the SHA-256 of its session id. It is
// session.Key, named here because it is the key of every Cache method.
type Key = session.Key

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
	bearer     atomic.Pointer[string]
	memo       atomic.Pointer[any]
}

// BearerAccessToken returns "Bearer " followed by the access token, made
// once per grant: the value of an Authorization header that carries it.
func (g *Grant) BearerAccessToken() string {
	if p := g.bearer.Load(); p != nil {
		return *p
	}
	v := "Bearer " + g.AccessToken.Reveal()
	g.bearer.CompareAndSwap(nil, &v)
	return *g.bearer.Load()
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

// Memo returns the value last stored with SetMemo, or nil.
func (g *Grant) Memo() any {
	if p := g.memo.Load(); p != nil {
		return *p
	}
	return nil
}

// SetMemo stores v as g's memo, replacing any. Unlike the attachment, the
// memo may be replaced: callers keep in it a per-grant value that goes
// stale, such as the signed identity assertion (docs/contract.md), which is
// re-signed after half its ttl. A refresh makes a new Grant, with no memo.
func (g *Grant) SetMemo(v any) { g.memo.Store(&v) }

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
