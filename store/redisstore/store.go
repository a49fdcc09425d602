package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// Create implements session.Store. The record and the index entry travel in
// one pipeline; when a record of k already exists, k is still added to the
// index of rec.CustomerID (harmless: k is a hash of a random session id, so
// only a retry of the same Create finds it).
func (s *Store) Create(ctx context.Context, k session.Key, rec *session.Record, ttl time.Duration) (bool, error) {
	name := s.keys.record(k)
	sealed, err := s.seal.sealRecord(name, rec)
	if err != nil {
		return false, err
	}
	ms := millis(ttl)
	return s.writeIndexed(ctx, "create", &call{
		script: createScript,
		keys:   []string{name, s.keys.ended(k)},
		args:   []any{strconv.FormatUint(rec.Version, 10), sealed, unixMilli(rec.Created), ms},
	}, k, rec.CustomerID, ms)
}

// writeIndexed runs main (a script answering 1 when it wrote) in one
// pipeline with the index entry of k under customerID (raised to live ms),
// and reports whether main wrote. Main's outcome decides: an index update
// that fails after main wrote is retried once, then logged, since the
// record it indexes is stored.
func (s *Store) writeIndexed(ctx context.Context, op string, main *call, k session.Key, customerID string, ms int64) (bool, error) {
	calls := []*call{main}
	if customerID != "" {
		calls = append(calls, &call{
			script: indexAddScript,
			keys:   []string{s.keys.customer(customerID)},
			args:   []any{hex.EncodeToString(k[:]), ms},
		})
	}
	err := s.runAll(ctx, op, calls)
	n, merr := main.cmd.Int64()
	if merr != nil {
		if err == nil { // runAll checks every reply: a non-integer one
			err = s.fail(op, merr)
		}
		return false, err
	}
	if err != nil && n == 1 {
		idx := calls[1]
		if ierr := idx.script.Run(ctx, s.client, idx.keys, idx.args...).Err(); ierr != nil {
			s.indexFailed(op, ierr)
		}
	}
	return n == 1, nil
}

// indexFailed logs a customer index that could not be updated: the session
// is stored, but an admin end of its customer (docs/contract.md) may miss it or
// list it after it ended.
func (s *Store) indexFailed(op string, err error) {
	s.log.Warn("redis store: customer index not updated; ending this customer's sessions may miss one",
		zap.String("op", op), zap.Error(err))
}

// Load implements session.Store, in one round trip.
func (s *Store) Load(ctx context.Context, k session.Key, used time.Time, ttl time.Duration) (*session.Record, error) {
	name := s.keys.record(k)
	var ms int64
	if ttl > 0 {
		ms = millis(ttl)
	}
	vals, err := s.run(ctx, loadScript, []string{name, s.keys.ended(k)}, unixMilli(used), ms).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, s.fail("load", err)
	}
	if len(vals) != 3 {
		return nil, fmt.Errorf("redisstore: load: %w: unexpected shape", session.ErrRecordCorrupt)
	}
	v, _ := vals[0].(string)
	d, _ := vals[1].(string)
	u, _ := vals[2].(string)
	version, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("redisstore: load: %w: bad version", session.ErrRecordCorrupt)
	}
	rec, err := s.seal.openRecord(name, version, []byte(d))
	if err != nil {
		return nil, err
	}
	if u != "" {
		ms, err := strconv.ParseInt(u, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redisstore: load: %w: bad last use", session.ErrRecordCorrupt)
		}
		rec.LastUsed = fromUnixMilli(ms)
	}
	return rec, nil
}

// Acquire implements session.Store.
func (s *Store) Acquire(ctx context.Context, k session.Key, version uint64, ttl time.Duration) (string, session.LeaseResult, error) {
	owner := newOwner()
	n, err := s.run(ctx, acquireScript, []string{s.keys.record(k), s.keys.lease(k), s.keys.ended(k)},
		strconv.FormatUint(version, 10), owner, millis(ttl)).Int64()
	if err != nil {
		return "", 0, s.fail("acquire", err)
	}
	switch n {
	case acquireOK:
		return owner, session.LeaseAcquired, nil
	case acquireHeld:
		return "", session.LeaseHeld, nil
	case acquireStale:
		return "", session.LeaseStale, nil
	default:
		return "", session.LeaseGone, nil
	}
}

// Renew implements session.Store.
func (s *Store) Renew(ctx context.Context, k session.Key, lease string, ttl time.Duration) (bool, error) {
	if lease == "" {
		return false, nil
	}
	n, err := s.run(ctx, renewScript, []string{s.keys.lease(k)}, lease, millis(ttl)).Int64()
	if err != nil {
		return false, s.fail("renew", err)
	}
	return n == 1, nil
}

// Release implements session.Store.
func (s *Store) Release(ctx context.Context, k session.Key, lease string) error {
	if lease == "" {
		return nil
	}
	if err := s.run(ctx, releaseScript, []string{s.keys.lease(k)}, lease).Err(); err != nil {
		return s.fail("release", err)
	}
	return nil
}

// Swap implements session.Store. The record's lifetime is set to ttl, and the
// index of rec.CustomerID is kept at least as long, in the same pipeline.
func (s *Store) Swap(ctx context.Context, k session.Key, lease string, old uint64, rec *session.Record, ttl time.Duration) (bool, error) {
	name := s.keys.record(k)
	sealed, err := s.seal.sealRecord(name, rec)
	if err != nil {
		return false, err
	}
	ms := millis(ttl)
	return s.writeIndexed(ctx, "swap", &call{
		script: swapScript,
		keys:   []string{name, s.keys.lease(k), s.keys.ended(k)},
		args: []any{strconv.FormatUint(old, 10), strconv.FormatUint(rec.Version, 10), sealed, ms,
			lease, s.keys.channel, updatedMessage(k, rec.Version)},
	}, k, rec.CustomerID, ms)
}

// End implements session.Store. The session leaves its customer's index
// only after the end script ran: pipelined with it, an SREM would run even
// when the script did not (NOSCRIPT after a restart emptied Redis's script
// cache, and the retry with EVAL failing), leaving a live record that an
// admin end of its customer can no longer find (docs/sessions.md, keys).
func (s *Store) End(ctx context.Context, k session.Key, customerID string) (bool, error) {
	n, err := s.run(ctx, endScript, []string{s.keys.record(k), s.keys.lease(k), s.keys.ended(k)},
		s.keys.channel, endedMessage(k), millis(session.EndMarkLifetime)).Int64()
	if err != nil {
		return false, s.fail("end", err)
	}
	if customerID != "" {
		// The script's outcome decides; a failed index removal is logged
		// (the index may list ended sessions, which ending them again
		// tolerates).
		member := hex.EncodeToString(k[:])
		_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.SRem(ctx, s.keys.customer(customerID), member)
			// Best effort: an index under a previous key expires anyway.
			for _, name := range s.keys.previousCustomers(customerID) {
				p.SRem(ctx, name, member)
			}
			return nil
		})
		if err != nil {
			s.indexFailed("end", err)
		}
	}
	return n == 1, nil
}

// CustomerSessions implements session.Store.
// With previous encryption keys, the indexes named under them are read
// too (instances not yet changed to the current key write there).
func (s *Store) CustomerSessions(ctx context.Context, customerID string) ([]session.Key, error) {
	members, err := s.client.SMembers(ctx, s.keys.customer(customerID)).Result()
	if err != nil {
		return nil, s.fail("customer sessions", err)
	}
	for _, name := range s.keys.previousCustomers(customerID) {
		more, err := s.client.SMembers(ctx, name).Result()
		if err != nil {
			return nil, s.fail("customer sessions", err)
		}
		members = append(members, more...)
	}
	s.health.ok()
	ks := make([]session.Key, 0, len(members))
	seen := make(map[session.Key]bool, len(members))
	for _, m := range members {
		if k, ok := parseKey(m); ok && !seen[k] {
			seen[k] = true
			ks = append(ks, k)
		}
	}
	return ks, nil
}

// ClaimLogin implements session.Store, in one round trip.
func (s *Store) ClaimLogin(ctx context.Context, authCode rebell.Secret, ttl time.Duration) (bool, string, error) {
	name := s.keys.login(authCode.Reveal())
	vals, err := s.run(ctx, claimScript, []string{name}, millis(ttl)).Slice()
	if err != nil {
		return false, "", s.fail("claim login", err)
	}
	if len(vals) == 0 {
		return false, "", errors.New("redisstore: claim login: unexpected reply")
	}
	if n, _ := vals[0].(int64); n == 1 {
		return true, "", nil
	}
	var memo string
	if len(vals) > 1 {
		memo, _ = vals[1].(string)
	}
	if memo == "" || memo == pendingClaim {
		return false, "", nil
	}
	id, err := s.seal.openMemo(name, []byte(memo))
	if err != nil {
		return false, "", err
	}
	return false, id, nil
}

// FinishLogin implements session.Store. Forgetting (sessionID "") deletes the
// memo only while it is still a claim.
func (s *Store) FinishLogin(ctx context.Context, authCode rebell.Secret, sessionID string, ttl time.Duration) error {
	name := s.keys.login(authCode.Reveal())
	var err error
	if sessionID == "" {
		err = s.run(ctx, forgetScript, []string{name}).Err()
	} else {
		err = s.client.Set(ctx, name, s.seal.sealMemo(name, sessionID), time.Duration(millis(ttl))*time.Millisecond).Err()
	}
	if err != nil {
		return s.fail("finish login", err)
	}
	s.health.ok()
	return nil
}

// Close implements session.Store: it stops Listen's delivery (waiting for it)
// and closes the client. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	ps := s.pubsub
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	s.listenWG.Wait()
	return s.client.Close()
}

// call is one script call of a pipeline.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

// run runs one script (EVALSHA, then EVAL if the server lacks it).
func (s *Store) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	cmd := sc.Run(ctx, s.client, keys, args...)
	if err := cmd.Err(); err == nil || errors.Is(err, redis.Nil) {
		s.health.ok()
	}
	return cmd
}

// runAll runs calls in one pipeline (one round trip on a standalone server,
// one per node on a Cluster), then reruns with EVAL any the server did not
// know. It returns the first error.
func (s *Store) runAll(ctx context.Context, op string, calls []*call) error {
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range calls {
			c.cmd = c.script.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	if err != nil && !isNoScript(err) {
		return s.fail(op, err)
	}
	if err := s.retryNoScript(ctx, op, calls); err != nil {
		return err
	}
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil {
			return s.fail(op, err)
		}
	}
	s.health.ok()
	return nil
}

// retryNoScript reruns with EVAL the calls that failed with NOSCRIPT (they
// did nothing).
func (s *Store) retryNoScript(ctx context.Context, op string, calls []*call) error {
	for _, c := range calls {
		if isNoScript(c.cmd.Err()) {
			c.cmd = c.script.Eval(ctx, s.client, c.keys, c.args...)
			if err := c.cmd.Err(); err != nil {
				return s.fail(op, err)
			}
		}
	}
	return nil
}

func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// fail records err as store trouble and wraps it for the caller. A key of
// the wrong type (a record overwritten by something else) is not trouble
// with Redis, which answered: it is a record that cannot be read, and is
// reported as session.ErrRecordCorrupt.
func (s *Store) fail(op string, err error) error {
	if isWrongType(err) {
		s.health.ok()
		return fmt.Errorf("redisstore: %s: %w: a key holds another type", op, session.ErrRecordCorrupt)
	}
	s.health.fail(op, err)
	return fmt.Errorf("redisstore: %s: %w", op, err)
}

// isWrongType reports Redis's WRONGTYPE error, also as a script's error
// (Redis 7 keeps its prefix; older servers wrap it in the script's).
func isWrongType(err error) bool {
	return err != nil && strings.Contains(err.Error(), "WRONGTYPE")
}

// newOwner returns a lease owner token: 16 random bytes in hex.
func newOwner() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand docs)
	return hex.EncodeToString(b[:])
}

// millis is ttl in whole milliseconds, at least 1: every key gets a
// lifetime, however short.
func millis(ttl time.Duration) int64 {
	return max(ttl.Milliseconds(), 1)
}
