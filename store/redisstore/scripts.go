package redisstore

import "github.com/redis/go-redis/v9"

// The Lua scripts. Each touches the keys of one Cluster slot only: a
// session's record and lease share a hash tag; an index or memo is alone.
// Versions and times travel as decimal strings.

// createScript: KEYS record, end mark; ARGV version, sealed, used (ms), ttl
// (ms). Returns 1 if written, 0 if a record or an end mark exists.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2], 'u', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// loadScript: KEYS record, end mark; ARGV used (ms, "0" for none), ttl (ms,
// "0" for none). Raises u to used and the lifetime to ttl, and returns {v,
// d, u}, or nil if there is no record. A record beside an end mark was put
// back after its session ended (docs/sessions.md, threat model): it is
// deleted and not returned.
var loadScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) > 0 then
  redis.call('DEL', KEYS[1])
  return false
end
local r = redis.call('HMGET', KEYS[1], 'v', 'd', 'u')
if not r[1] then return false end
local used = tonumber(ARGV[1])
if used > 0 and used > (tonumber(r[3]) or 0) then
  redis.call('HSET', KEYS[1], 'u', ARGV[1])
  r[3] = ARGV[1]
end
local ttl = tonumber(ARGV[2])
if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return r
`)

// Outcomes of acquireScript.
const (
	acquireGone  = 0
	acquireStale = 1
	acquireHeld  = 2
	acquireOK    = 3
)

// acquireScript: KEYS record, lease, end mark; ARGV version, owner, ttl
// (ms). A record beside an end mark is deleted and reported gone.
var acquireScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) > 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return 0 end
if v ~= ARGV[1] then return 1 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 3 end
return 2
`)

// renewScript: KEYS lease; ARGV owner, ttl (ms). Returns 1 if renewed.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// releaseScript: KEYS lease; ARGV owner. Returns 1 if released.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)

// swapScript: KEYS record, lease, end mark; ARGV old version, new version,
// sealed, ttl (ms), owner ("" for none), channel, message. Returns 1 if
// swapped, 0 if the record is at another version, gone, or beside an end
// mark (then deleted).
var swapScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) > 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
`)

// endScript: KEYS record, lease, end mark; ARGV channel, message, end mark
// lifetime (ms). Returns the number of records deleted (0 or 1); marks and
// announces the end either way. The mark lives at least as long as the
// record would have (its remaining lifetime, the session's own end), so no
// copy of the record put back while the session could have lived opens.
var endScript = redis.NewScript(`
local life = tonumber(ARGV[3])
local left = redis.call('PTTL', KEYS[1])
if left > life then life = left end
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], '1', 'PX', life)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
`)

// indexAddScript: KEYS index; ARGV member, ttl (ms). Adds member and raises
// the index's lifetime to ttl if it is shorter.
var indexAddScript = redis.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
local p = redis.call('PTTL', KEYS[1])
if p < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`)

// claimScript: KEYS memo; ARGV ttl (ms). Returns {1} if claimed, else
// {0, value} (value "p" while the exchange is in flight).
var claimScript = redis.NewScript(`
if redis.call('SET', KEYS[1], 'p', 'NX', 'PX', ARGV[1]) then return {1} end
return {0, redis.call('GET', KEYS[1])}
`)

// forgetScript: KEYS memo. Deletes the memo if it is still a claim.
var forgetScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == 'p' then redis.call('DEL', KEYS[1]) end
return 1
`)

// epochScript: KEYS epoch; ARGV new value, ttl (ms). Returns the epoch,
// setting it to the new value if there is none, and renews its lifetime.
var epochScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v
`)

// pendingClaim is the value of a claimed login memo.
const pendingClaim = "p"
