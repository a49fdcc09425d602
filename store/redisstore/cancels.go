package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// Pending cancels (docs/sessions.md) live in three keys of one Cluster slot:
//
//	<prefix>{cancels}        hash: id → sealed cancel
//	<prefix>{cancels}:due    sorted set: id → due (unix ms)
//	<prefix>{cancels}:lease  hash: id → lease owner
//
// A lease moves the id's due time to the lease's end, so an expired lease
// makes the cancel due again by itself. Each write raises the keys'
// lifetime to cover the cancel's Until.

// cancelSlack is how long a pending cancel is kept after its Until, so that
// the instance working on it still finds it to give it up.
const cancelSlack = time.Hour

// maxCancelScan bounds the due ids one LeaseCancel looks at.
const maxCancelScan = 16

// addCancelScript: KEYS data, due, lease; ARGV id, sealed, due (ms),
// lifetime (ms), channel, message. Announces the cancel, so that idle
// instances look for due ones.
var addCancelScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
`)

// leaseCancelScript: KEYS data, due, lease; ARGV now (ms), ttl (ms), owner,
// scan. Returns {id, sealed, due} of the earliest due cancel, leased, or
// nil; ids without data are dropped on the way.
var leaseCancelScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
for i = 1, #ids, 2 do
  local id = ids[i]
  local d = redis.call('HGET', KEYS[1], id)
  if d then
    redis.call('ZADD', KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
    redis.call('HSET', KEYS[3], id, ARGV[3])
    local p = redis.call('PTTL', KEYS[1])
    if p > 0 then redis.call('PEXPIRE', KEYS[3], p) end
    return {id, d, ids[i+1]}
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
return false
`)

// putBackCancelScript: KEYS data, due, lease; ARGV id, owner, sealed, due
// (ms), lifetime (ms). Returns 1 if written.
var putBackCancelScript = redis.NewScript(`
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
end
return 1
`)

// removeCancelScript: KEYS data, due, lease; ARGV id.
var removeCancelScript = redis.NewScript(`
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
`)

// cancelKeys are the key names of the pending cancels.
func (ks keys) cancelKeys() []string {
	data := ks.prefix + "{cancels}"
	return []string{data, data + ":due", data + ":lease"}
}

// plainCancel is the sealed part of a session.Cancel. Times are unix
// nanoseconds, 0 for the zero time.
type plainCancel struct {
	Realm              string `json:"m"`
	AccessToken        string `json:"a"`
	AccessTokenExpiry  int64  `json:"ae"`
	RefreshToken       string `json:"r"`
	RefreshTokenExpiry int64  `json:"re"`
	Reason             string `json:"why"`
	Queued             int64  `json:"q"`
	Attempts           int    `json:"n"`
}

// cancelName is the associated data of a pending cancel's seal: the data
// key and the id, so a value moved to another id does not open.
func cancelName(data, id string) string { return data + ":" + id }

func (s *sealer) sealCancel(name string, c *session.Cancel) ([]byte, error) {
	plain, err := json.Marshal(plainCancel{
		Realm:              s.realm,
		AccessToken:        c.AccessToken.Reveal(),
		AccessTokenExpiry:  unixNano(c.AccessTokenExpiry),
		RefreshToken:       c.RefreshToken.Reveal(),
		RefreshTokenExpiry: unixNano(c.RefreshTokenExpiry),
		Reason:             c.Reason,
		Queued:             unixNano(c.Queued),
		Attempts:           c.Attempts,
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: encoding a pending cancel: %w", err)
	}
	return s.seal(plain, name), nil
}

func (s *sealer) openCancel(name, id string, sealed []byte) (*session.Cancel, error) {
	plain, err := s.open(sealed, name)
	if err != nil {
		return nil, fmt.Errorf("redisstore: pending cancel: %w: does not open", session.ErrRecordCorrupt)
	}
	var p plainCancel
	if err := json.Unmarshal(plain, &p); err != nil {
		return nil, fmt.Errorf("redisstore: pending cancel: %w: does not decode", session.ErrRecordCorrupt)
	}
	if p.Realm != s.realm {
		return nil, fmt.Errorf("redisstore: pending cancel: %w: written for another endpoint or client id", session.ErrRecordCorrupt)
	}
	return &session.Cancel{
		ID:                 id,
		AccessToken:        rebell.NewSecret(p.AccessToken),
		AccessTokenExpiry:  fromUnixNano(p.AccessTokenExpiry),
		RefreshToken:       rebell.NewSecret(p.RefreshToken),
		RefreshTokenExpiry: fromUnixNano(p.RefreshTokenExpiry),
		Reason:             p.Reason,
		Queued:             fromUnixNano(p.Queued),
		Attempts:           p.Attempts,
	}, nil
}

// cancelLifetime is how long the keys must live for c: until its Until,
// and cancelSlack more.
func cancelLifetime(c *session.Cancel) int64 {
	return millis(time.Until(c.Until()) + cancelSlack)
}

// AddCancel implements session.Store.
func (s *Store) AddCancel(ctx context.Context, c *session.Cancel) error {
	if c.ID == "" {
		c.ID = newOwner()
	}
	ks := s.keys.cancelKeys()
	sealed, err := s.seal.sealCancel(cancelName(ks[0], c.ID), c)
	if err != nil {
		return err
	}
	if err := s.run(ctx, addCancelScript, ks, c.ID, sealed, unixMilli(c.Due), cancelLifetime(c), s.keys.channel, cancelQueuedMessage).Err(); err != nil {
		return s.fail("add cancel", err)
	}
	return nil
}

// LeaseCancel implements session.Store, in one round trip.
func (s *Store) LeaseCancel(ctx context.Context, now time.Time, ttl time.Duration) (*session.Cancel, string, error) {
	ks := s.keys.cancelKeys()
	owner := newOwner()
	vals, err := s.run(ctx, leaseCancelScript, ks, now.UnixMilli(), millis(ttl), owner, maxCancelScan).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", s.fail("lease cancel", err)
	}
	if len(vals) != 3 {
		return nil, "", fmt.Errorf("redisstore: lease cancel: %w: unexpected shape", session.ErrRecordCorrupt)
	}
	id, _ := vals[0].(string)
	d, _ := vals[1].(string)
	due, _ := vals[2].(string)
	c, err := s.seal.openCancel(cancelName(ks[0], id), id, []byte(d))
	if err != nil {
		// It would block nothing (others are leased after it) but would
		// come back forever: drop it.
		s.log.Warn("redis store: a pending cancel cannot be read; dropped", zap.Error(err))
		if rerr := s.RemoveCancel(ctx, id); rerr != nil {
			return nil, "", rerr
		}
		return nil, "", err
	}
	if ms, err := strconv.ParseFloat(due, 64); err == nil {
		c.Due = fromUnixMilli(int64(ms))
	}
	return c, owner, nil
}

// PutBackCancel implements session.Store.
func (s *Store) PutBackCancel(ctx context.Context, c *session.Cancel, lease string) (bool, error) {
	if lease == "" || c.ID == "" {
		return false, nil
	}
	ks := s.keys.cancelKeys()
	sealed, err := s.seal.sealCancel(cancelName(ks[0], c.ID), c)
	if err != nil {
		return false, err
	}
	n, err := s.run(ctx, putBackCancelScript, ks, c.ID, lease, sealed, unixMilli(c.Due), cancelLifetime(c)).Int64()
	if err != nil {
		return false, s.fail("put back cancel", err)
	}
	return n == 1, nil
}

// RemoveCancel implements session.Store.
func (s *Store) RemoveCancel(ctx context.Context, id string) error {
	if err := s.run(ctx, removeCancelScript, s.keys.cancelKeys(), id).Err(); err != nil {
		return s.fail("remove cancel", err)
	}
	return nil
}

// CountCancels implements session.Store.
func (s *Store) CountCancels(ctx context.Context) (int, error) {
	n, err := s.client.ZCard(ctx, s.keys.cancelKeys()[1]).Result()
	if err != nil {
		return 0, s.fail("count cancels", err)
	}
	s.health.ok()
	return int(n), nil
}
