package cache

import "github.com/rebell-gateway/caddy-rebell/session"

// The shared store's vocabulary lives in package session, which store
// implementations import instead of this package; these aliases keep the
// cache's names.
type (
	// Store is the record of truth several instances share (session.Store).
	Store = session.Store
	// Record is a session as the Store keeps it.
	Record = session.Record
	// LeaseResult is the outcome of Store.Acquire.
	LeaseResult = session.LeaseResult
	// EventKind is the kind of a Store announcement.
	EventKind = session.EventKind
	// Event is an announcement of the Store.
	Event = session.Event
)

// Outcomes of Store.Acquire, kinds of Event, and the Store's constants.
const (
	LeaseAcquired   = session.LeaseAcquired
	LeaseHeld       = session.LeaseHeld
	LeaseStale      = session.LeaseStale
	LeaseGone       = session.LeaseGone
	EventEnded      = session.EventEnded
	EventUpdated    = session.EventUpdated
	EventResync     = session.EventResync
	EndMarkLifetime = session.EndMarkLifetime
)

// ErrRecordCorrupt is returned (wrapped) by a Store whose record cannot be
// read as a session (session.ErrRecordCorrupt).
var ErrRecordCorrupt = session.ErrRecordCorrupt
