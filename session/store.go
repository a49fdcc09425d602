package session

import (
	"context"
	"errors"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Store is the record of truth that several gateway instances share
// (docs/sessions.md), made of the roles below. The memory tier stays each
// instance's hot copy: a request whose session is held in memory and fresh
// costs no call to the Store.
//
// Every method is safe for concurrent use. A method fails with an error when
// the store cannot be reached or answers something it cannot read; the
// cache treats it as the store being unavailable, except ErrRecordCorrupt (a
// record that cannot be read as a session, which ends it). "Not there" is
// never an error: it is a nil record or a false result. The conformance
// suite in session/storetest checks these rules.
//
// A Store implementation keeps no session id, token or customer id in plain
// text (records are sealed; indexes are keyed by keyed hashes) and gives every
// key it writes a lifetime.
type Store interface {
	Records
	Leases
	LoginMemo
	CustomerIndex
	Events
	PendingCancels
	// Close stops Listen's delivery and releases the store's connections.
	Close() error
}

// Records keeps the sessions' records.
type Records interface {
	// Create writes rec as the new record of session k, to live for ttl,
	// and adds k to rec.CustomerID's index. It reports false, writing no
	// record, if a record of k exists or session k ended (End) within
	// EndMarkLifetime: a session written back after a data loss must not
	// outlive an end that other instances heard of and this one did not.
	// The index may gain k even then (see CustomerSessions).
	Create(ctx context.Context, k Key, rec *Record, ttl time.Duration) (bool, error)

	// Load returns the record of k, or nil if there is none. If used is not
	// zero it is recorded as a use of the session first: the store keeps the
	// latest use any instance reported, and returns it in Record.LastUsed.
	// If ttl is positive, the record's remaining lifetime is raised to ttl
	// when it is shorter (a record that lives for the idle timeout after its
	// last reported use; docs/sessions.md).
	Load(ctx context.Context, k Key, used time.Time, ttl time.Duration) (*Record, error)

	// Swap replaces the record of k with rec (rec.Version is greater than old:
	// old+1 after a refresh, more when an instance writes back a state the
	// store lost) and sets its lifetime to ttl, if and only if the stored record is at version
	// old; it then releases the lease if lease holds it, and announces
	// EventUpdated for k to every instance. It reports false, writing
	// nothing, if the record is at another version or gone. The version
	// check alone fences the write: a holder whose lease expired mid-call
	// still wins if nobody wrote since.
	Swap(ctx context.Context, k Key, lease string, old uint64, rec *Record, ttl time.Duration) (bool, error)

	// End deletes the record and lease of session k, leaves a mark that it
	// ended for EndMarkLifetime, removes k from customerID's index (skipped
	// when customerID is ""; a failure to remove it leaves an index entry
	// for an ended session, which CustomerSessions may list), and announces
	// EventEnded for k to every instance. It reports whether a record was
	// deleted; it announces the end either way.
	End(ctx context.Context, k Key, customerID string) (bool, error)
}

// Leases fences refreshes: one holder per session at a time, across
// instances.
type Leases interface {
	// Acquire tries to take the refresh lease of session k for ttl. It
	// succeeds (LeaseAcquired, with the lease's owner token) only if the
	// record of k is at version and no lease is held; otherwise it reports
	// LeaseHeld (another holder; the lease expires by itself after its ttl
	// unless renewed), LeaseStale (the record is at another version: re-read
	// it) or LeaseGone (no record).
	Acquire(ctx context.Context, k Key, version uint64, ttl time.Duration) (lease string, res LeaseResult, err error)

	// Renew extends the lease of k to ttl from now if lease still holds it,
	// and reports whether it did.
	Renew(ctx context.Context, k Key, lease string, ttl time.Duration) (bool, error)

	// Release gives up the lease of k if lease holds it.
	Release(ctx context.Context, k Key, lease string) error
}

// LoginMemo deduplicates the exchange of an auth code across instances.
type LoginMemo interface {
	// ClaimLogin claims the exchange of authCode for ttl, so that one
	// instance calls Rebell for a code that several receive. It reports
	// claimed=true if this caller must exchange the code (and then call
	// FinishLogin); otherwise sessionID is the session another caller made
	// from the code, or "" while that exchange is in flight.
	ClaimLogin(ctx context.Context, authCode rebell.Secret, ttl time.Duration) (claimed bool, sessionID string, err error)

	// FinishLogin ends a claim: it remembers sessionID as the result of
	// authCode for ttl, or, when sessionID is "", forgets the claim so the
	// code can be claimed again. "" forgets only a claim in flight, never a
	// session remembered already.
	FinishLogin(ctx context.Context, authCode rebell.Secret, sessionID string, ttl time.Duration) error
}

// CustomerIndex finds the sessions of a customer.
type CustomerIndex interface {
	// CustomerSessions returns the sessions indexed under customerID. It may
	// list sessions that have ended since; their records are gone.
	CustomerSessions(ctx context.Context, customerID string) ([]Key, error)
}

// Events carries the store's announcements to every instance.
type Events interface {
	// Listen delivers the store's announcements to fn, one at a time, until
	// Close: EventEnded and EventUpdated as other instances (and this one)
	// announce them, and EventResync each time the subscription is
	// (re)established, since announcements may have been missed while it
	// was not, and (with Lost) whenever the store is found to have lost its
	// data, subscribed or not. It is called at most once, and must not
	// block on the store being reachable. fn must not call Close.
	Listen(fn func(Event))
}

// Record is a session as the Store keeps it.
type Record struct {
	// Version counts the session's token states: 1 at login, +1 for every
	// refresh. Leases and Swap are fenced by it.
	Version            uint64
	CustomerID         string
	AccessToken        rebell.Secret
	AccessTokenExpiry  time.Time
	RefreshToken       rebell.Secret
	RefreshTokenExpiry time.Time
	// Created is when the session was created.
	Created time.Time
	// LastUsed is the latest use any instance reported (see Store.Load);
	// zero if none was. Create records Created as the first use.
	LastUsed time.Time
}

// LeaseResult is the outcome of Store.Acquire.
type LeaseResult uint8

// Outcomes of Store.Acquire.
const (
	// LeaseAcquired: the caller holds the lease and may call Rebell.
	LeaseAcquired LeaseResult = iota + 1
	// LeaseHeld: another caller holds the lease; wait for EventUpdated or the
	// lease's expiry.
	LeaseHeld
	// LeaseStale: the record is at another version than the caller's.
	LeaseStale
	// LeaseGone: there is no record.
	LeaseGone
)

// EventKind is the kind of a Store announcement.
type EventKind uint8

// Kinds of Event.
const (
	// EventEnded: the session ended (logout, customer ended, dead refresh
	// token, idle).
	EventEnded EventKind = iota + 1
	// EventUpdated: the session's record was swapped to a newer version.
	EventUpdated
	// EventResync: the subscription was (re)established; announcements may
	// have been lost before it. Key is zero; Lost says whether the store lost
	// its data meanwhile.
	EventResync
	// EventCancelQueued: a pending cancel was queued
	// (PendingCancels.AddCancel), so every instance looks for due ones
	// (docs/sessions.md, pending cancels). Key is zero.
	EventCancelQueued
)

// Event is an announcement of the Store.
type Event struct {
	Kind EventKind
	Key  Key
	// Version is, for EventUpdated, the version the record was swapped to;
	// 0 when the announcement does not say.
	Version uint64
	// Lost is set on an EventResync when the store was found to have lost
	// its data (it came back empty, or its data vanished while subscribed),
	// within EndMarkLifetime of when it was last seen whole: a record
	// missing now may be one it lost, not a session that ended, and may be
	// written back with Create (which refuses sessions ended since).
	Lost bool
}

// EndMarkLifetime is how long a Store remembers that a session ended
// (Store.End), so that Create refuses to write it back.
const EndMarkLifetime = 24 * time.Hour

// ErrRecordCorrupt is returned (wrapped) by a Store whose record cannot be
// read as a session: a key of another type, tampered with, or sealed with
// another key.
var ErrRecordCorrupt = errors.New("session record corrupt")
