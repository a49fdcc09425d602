// Package redisstore is the Redis (or Valkey) implementation of session.Store:
// the record of truth several gateway instances share (docs/sessions.md).
//
// A session's record is a hash at <prefix>{<hex key>} with fields v
// (version), d (the sealed record) and u (last use, unix ms); its refresh
// lease is <prefix>{<hex key>}:lease, in the same Cluster slot. Every change
// is one Lua script on one slot; cross-slot companions (the customer index)
// travel in the same pipeline.
package redisstore
