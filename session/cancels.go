package session

import (
	"context"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// PendingCancels keeps the cancelToken calls the gateway owes Rebell until
// Rebell answered them (docs/sessions.md, pending cancels): with a shared
// store, a cancel queued by an instance that stops or dies is finished by
// another. A lease lets one caller at a time work on a pending cancel; a
// lease that expires frees it for another caller, which may then call
// Rebell a second time (a cancel is idempotent there).
//
// The times given (now, Cancel.Due) are the caller's clock; instances
// sharing a store are expected to agree on the time within seconds.
type PendingCancels interface {
	// AddCancel queues c, due at c.Due (zero means at once). It fills c.ID
	// with a new random id when it is empty; adding an id that is pending
	// replaces it. The store keeps it at least until c.Until().
	AddCancel(ctx context.Context, c *Cancel) error

	// LeaseCancel takes the lease of one pending cancel due at now (its Due
	// has passed and no unexpired lease holds it), the earliest due first,
	// for ttl, and returns it with the lease's owner token. It returns nil
	// when none is due. A pending cancel that cannot be read is removed and
	// reported as an error wrapping ErrRecordCorrupt.
	LeaseCancel(ctx context.Context, now time.Time, ttl time.Duration) (*Cancel, string, error)

	// PutBackCancel writes c back (its tokens, Attempts and Due may have
	// changed) and gives up its lease, if lease still holds it (an expired
	// lease nobody took since still does). It reports false, writing
	// nothing, when another caller took the lease or c is no longer pending.
	PutBackCancel(ctx context.Context, c *Cancel, lease string) (bool, error)

	// RemoveCancel removes pending cancel id, whoever holds its lease: Rebell
	// confirmed it, or the gateway gave it up. Removing an id that is not
	// pending is not an error.
	RemoveCancel(ctx context.Context, id string) error

	// CountCancels returns the number of pending cancels.
	CountCancels(ctx context.Context) (int, error)
}

// Cancel is a cancelToken the gateway owes Rebell: the tokens of a session
// that the gateway ended (docs/contract.md, revoke).
type Cancel struct {
	// ID names the pending cancel: random, not derived from the session.
	ID string
	// AccessToken is the token to cancel, and its expiry: once it passed,
	// the refresh token must be spent first for a token that can be
	// cancelled.
	AccessToken       rebell.Secret
	AccessTokenExpiry time.Time
	// RefreshToken of the same authorization, and its expiry, after which
	// nothing is left to cancel.
	RefreshToken       rebell.Secret
	RefreshTokenExpiry time.Time
	// Reason is the end that queued it: "logout", "customer" or "evicted".
	Reason string
	// Queued is when it was queued.
	Queued time.Time
	// Due is when it may next be tried.
	Due time.Time
	// Attempts counts the tries that did not end it.
	Attempts int
}

// Until returns the time after which nothing is left to cancel: the later
// of the two tokens' expiries.
func (c *Cancel) Until() time.Time {
	if c.AccessTokenExpiry.After(c.RefreshTokenExpiry) {
		return c.AccessTokenExpiry
	}
	return c.RefreshTokenExpiry
}
