// Package redistest runs real redis-server processes on 127.0.0.1 for tests:
// a standalone server (Start) or a small Cluster (StartCluster).
//
// Without the redis-server binary (or redis-cli, for a Cluster) the test is
// skipped with a loud message, unless the environment has
// REBELL_REQUIRE_REDIS=1: then it fails.
package redistest
