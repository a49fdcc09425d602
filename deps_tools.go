//go:build tools

// This file pins dependencies that packages under construction will import,
// so that go.mod stays stable while they are written. Removed once they are used.
package caddyrebell

import (
	_ "github.com/dgraph-io/ristretto/v2"
	_ "github.com/redis/go-redis/v9"
	_ "go.uber.org/zap"
	_ "golang.org/x/sync/singleflight"
)
