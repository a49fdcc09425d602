package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// Records and copies: reading a record, the rule that reconciles a copy
// with it, and writing a copy back (docs/sessions.md).

// errEndedElsewhere reports a session whose record another instance ended.
var errEndedElsewhere = fmt.Errorf("%w: ended by another instance", ErrSessionInvalid)

// storeError wraps a failure of the shared store.
func storeError(err error) error {
	if errors.Is(err, ErrStoreUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
}

// recordOf is the store record of st.
func recordOf(st *tokenState, created, lastUsed time.Time) *session.Record {
	return &session.Record{
		Version:            st.version,
		CustomerID:         st.grant.CustomerID,
		AccessToken:        st.grant.AccessToken,
		AccessTokenExpiry:  st.grant.AccessTokenExpiry,
		RefreshToken:       st.refreshToken,
		RefreshTokenExpiry: st.grant.SessionExpiry,
		Created:            created,
		LastUsed:           lastUsed,
	}
}

// stateOf is the token state of a store record read at now, or an error if
// the record cannot make a session.
func stateOf(rec *session.Record, now time.Time) (*tokenState, error) {
	if rec.Version == 0 || rec.CustomerID == "" || rec.AccessToken.IsZero() || rec.RefreshToken.IsZero() {
		return nil, fmt.Errorf("%w: incomplete record", session.ErrRecordCorrupt)
	}
	return &tokenState{
		grant: Grant{
			CustomerID:        rec.CustomerID,
			AccessToken:       rec.AccessToken,
			AccessTokenExpiry: rec.AccessTokenExpiry,
			SessionExpiry:     rec.RefreshTokenExpiry,
		},
		refreshToken: rec.RefreshToken,
		version:      rec.Version,
		lifetime:     rec.AccessTokenExpiry.Sub(now),
	}, nil
}

// logCorrupt reports a record of k that cannot be opened; the session is
// treated as invalid.
func (r *replica) logCorrupt(k Key, err error) {
	r.log.Error("rebell session record unreadable: altered, or written with another encryption_key, endpoint or client_id",
		zap.String("session", k.Tag()), zap.Error(err))
}

// corrupt ends session k, whose record cannot be read as a session (a key
// of another type, a seal that does not open, fields that make no
// session): its copy e (nil if none) here, and its record in the store,
// which announces the end to every instance. It returns the
// ErrSessionInvalid to answer with. A corrupt record is never reported as
// the store being unavailable: the store answered.
func (r *replica) corrupt(ctx context.Context, k Key, e *entry, err error) error {
	customer := ""
	switch {
	case e == nil:
		r.logCorrupt(k, err)
	case e.ended.CompareAndSwap(false, true):
		r.logCorrupt(k, err)
		customer = e.state.Load().grant.CustomerID
		r.h.dropEnded(e, "record_corrupt", zapcore.InfoLevel)
	default:
		// Ended already: by another path that found the record unreadable
		// (and logged it), or otherwise. That path may still be deleting
		// the record; delete it here too (an end is idempotent), so that
		// when this call returns, no instance reading the session finds
		// the corrupt record and reports it again.
		customer = e.state.Load().grant.CustomerID
	}
	ctx, cancel := r.storeCtx(context.WithoutCancel(ctx))
	r.endShared(ctx, k, customer)
	cancel()
	return fmt.Errorf("%w: %w", ErrSessionInvalid, err)
}

// storeFailure is what a failed store call about e means: the session's end
// if its record is corrupt, else ErrStoreUnavailable.
func (r *replica) storeFailure(ctx context.Context, e *entry, err error) error {
	if errors.Is(err, session.ErrRecordCorrupt) {
		return r.corrupt(ctx, e.key, e, err)
	}
	return storeError(err)
}

// readRecord reads e's record, reporting this instance's last use (with
// ttl, raising the record's lifetime) when used is not zero. A record that
// is gone is (nil, nil): what that means is the caller's to decide. A
// corrupt record, or one that cannot make a session, ends the session
// everywhere and is an ErrSessionInvalid; any other failure an
// ErrStoreUnavailable.
func (r *replica) readRecord(ctx context.Context, e *entry, used time.Time, ttl time.Duration) (*session.Record, error) {
	rec, err := r.store.Load(ctx, e.key, used, ttl)
	if err == nil && rec != nil {
		_, err = stateOf(rec, r.now())
	}
	if err != nil {
		return nil, r.storeFailure(ctx, e, err)
	}
	return rec, nil
}

// recordTTL is the lifetime of a store record with st written at now: until
// R + grace, or, with an idle timeout, at most idleTTL (the record then lives
// on while instances report uses; docs/sessions.md).
func (r *replica) recordTTL(st *tokenState, now time.Time) time.Duration {
	ttl := r.pol.lifetime(st, now)
	if idle := r.idleTTL(); idle > 0 {
		ttl = min(ttl, idle)
	}
	return ttl
}

// idleTTL is how long a record lives after a use is reported, with an idle
// timeout (0 without): the timeout plus two recheck intervals, since an
// instance reports its uses only when it compares its copy. The idle
// decision itself is the cache's; this lifetime is Redis's backstop for
// sessions no instance asks about again.
func (r *replica) idleTTL() time.Duration {
	if r.idleTimeout <= 0 {
		return 0
	}
	return time.Duration(r.idleTimeout) + 2*time.Duration(r.recheckEvery)
}

// storeCtx bounds one store call made on the cache's behalf.
func (r *replica) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, storeOpTimeout)
}

// onMissing says what reconcile does about a copy whose record is missing.
type onMissing int

const (
	// endCopy: the session was ended (by another instance, or by an end
	// this one has not heard of): the copy ends.
	endCopy onMissing = iota
	// restoreIfLost: as endCopy, unless the store lost its data since the
	// copy was last compared with it (docs/sessions.md, data loss): then
	// the copy is written back as a new record.
	restoreIfLost
	// restoreCopy: the copy is written back as a new record; an end mark
	// refuses it, and then the copy ends.
	restoreCopy
	// keepCopy: nothing is done; the caller decides.
	keepCopy
)

// reconcile is the one rule by which a copy held in memory and its stored
// record are brought together (docs/sessions.md). cur is the state the
// copy e holds (or held when the caller read rec, or, after a refresh, is
// about to hold) and rec the record as just read, nil if there is none:
//
//   - rec is newer: e adopts it;
//   - same version: they agree;
//   - rec is behind cur: cur was refreshed here while the store failed, or
//     the store lost versions in a failover to a replica that lagged; this
//     instance holds the only live refresh token, so cur is written over
//     rec when writeBack is set (else the next comparison does it);
//   - rec is missing: as missing says.
//
// e is marked compared when the two agree afterwards, and takes the later
// of its last use and the one the record reports. reconcile returns the
// state e holds afterwards: cur, unless it adopted rec or wrote cur back
// and found a newer record. Errors: ErrSessionInvalid (the session is
// over, and e ended) and ErrStoreUnavailable (writing back failed).
func (r *replica) reconcile(ctx context.Context, e *entry, cur *tokenState, rec *session.Record, missing onMissing, writeBack bool) (*tokenState, error) {
	if rec == nil {
		switch {
		case missing == keepCopy:
			return cur, nil
		case missing == restoreCopy, missing == restoreIfLost && r.lostRecord(e):
			if err := r.restore(ctx, e, cur); err != nil {
				return nil, err
			}
			if st := e.state.Load(); st.version > cur.version {
				return st, nil // another instance wrote back a newer state
			}
			return cur, nil
		}
		r.h.endSession(e, "ended_elsewhere", zapcore.DebugLevel)
		return nil, errEndedElsewhere
	}
	if used := rec.LastUsed.UnixNano(); !rec.LastUsed.IsZero() && used > e.lastUsed.Load() {
		e.lastUsed.Store(used)
	}
	now := r.now()
	switch {
	case rec.Version > cur.version:
		st, err := stateOf(rec, now)
		if err != nil {
			return nil, r.corrupt(ctx, e.key, e, err)
		}
		e.checked.Store(now.UnixNano())
		return r.h.adopt(e, st), nil
	case rec.Version < cur.version:
		if !writeBack {
			return cur, nil
		}
		return r.writeBack(ctx, e, cur, rec.Version)
	}
	e.checked.Store(now.UnixNano())
	return cur, nil
}

// reload reads e's record and reconciles e with it, adopting a newer state.
// A record that is gone ends e (errEndedElsewhere); a corrupt one too. A
// record behind the copy is left for the next comparison to write over.
func (r *replica) reload(ctx context.Context, e *entry) (*tokenState, error) {
	rec, err := r.readRecord(ctx, e, time.Time{}, 0)
	if err != nil {
		return nil, err
	}
	return r.reconcile(ctx, e, e.state.Load(), rec, endCopy, false)
}

// lostRecord reports whether e's record, found missing, may have been lost
// by the store (it came back empty since e was last compared with it)
// rather than ended.
func (r *replica) lostRecord(e *entry) bool { return e.checked.Load() < r.lostAt.Load() }

// restore writes cur, the state e holds, back as a new record, after the
// store lost its data. When another instance wrote the session back first,
// the newer of the two states wins; when the session was ended since (the
// store keeps end marks, so Create refuses it), e is ended.
func (r *replica) restore(ctx context.Context, e *entry, cur *tokenState) error {
	sctx, cancel := r.storeCtx(ctx)
	defer cancel()
	now := r.now()
	e.restored.Store(true)
	created, err := r.store.Create(sctx, e.key, recordOf(cur, time.Unix(0, e.created), time.Unix(0, e.lastUsed.Load())), r.recordTTL(cur, now))
	if err != nil {
		return storeError(err)
	}
	if created {
		r.log.Info("rebell session written back to a store that lost it", zap.String("session", e.key.Tag()))
		e.checked.Store(now.UnixNano())
		return nil
	}
	rec, err := r.readRecord(sctx, e, time.Time{}, 0)
	if err != nil {
		return err
	}
	// Missing now: ended since the loss, by an instance this one did not
	// hear (its end mark refused the Create).
	_, err = r.reconcile(sctx, e, cur, rec, endCopy, true)
	return err
}

// restoreAll writes back, in the background, every session held in memory
// that has not been compared with the store since it lost its data, so that
// sessions this instance holds work on every instance again without waiting
// for a request here.
func (r *replica) restoreAll(ctx context.Context) {
	n := 0
	for _, k := range r.h.heldKeys() {
		if ctx.Err() != nil {
			return
		}
		e := r.h.held(k)
		if e == nil || e.ended.Load() || !r.lostRecord(e) {
			continue
		}
		if err := r.restore(ctx, e, e.state.Load()); err != nil && errors.Is(err, ErrStoreUnavailable) {
			r.log.Warn("rebell sessions not written back: the store failed again", zap.Int("written_back", n), zap.Error(err))
			return
		}
		n++
	}
	if n > 0 {
		r.log.Info("rebell sessions held in memory written back to the store", zap.Int("sessions", n))
	}
}

// writeBack stores cur, a state the store does not have (refreshed while
// the store was down, or lost by a failover to a replica that lagged), over
// the record at version stored. It returns cur (now synced) or the store's
// newer state, or an error.
func (r *replica) writeBack(ctx context.Context, e *entry, cur *tokenState, stored uint64) (*tokenState, error) {
	sctx, cancel := r.storeCtx(ctx)
	defer cancel()
	rec := recordOf(cur, time.Unix(0, e.created), time.Unix(0, e.lastUsed.Load()))
	ok, err := r.store.Swap(sctx, e.key, "", stored, rec, r.recordTTL(cur, r.now()))
	if err != nil {
		return nil, r.storeFailure(sctx, e, err)
	}
	if !ok {
		return r.reload(sctx, e)
	}
	e.checked.Store(r.now().UnixNano())
	r.log.Info("rebell session tokens written back to the store", zap.String("session", e.key.Tag()),
		zap.Uint64("stored_version", stored), zap.Uint64("version", cur.version))
	return cur, nil
}
