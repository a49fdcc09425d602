package redisstore

import "context"

// Ping sends PING to Redis (on a Cluster, to one node) and waits for the
// answer within ctx and the client's timeouts. It is for readiness probes
// (docs/operations.md, "Readiness"): it does not change the store's outage
// logging, which follows the requests' own round trips.
func (s *Store) Ping(ctx context.Context) error {
	return s.client.Ping(ctx).Err()
}
