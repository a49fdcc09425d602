package redisstore

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
	sessions "github.com/rebell-gateway/caddy-rebell/session"
	"github.com/rebell-gateway/caddy-rebell/session/storetest"
)

// TestConformance runs the session.Store conformance suite against a real
// redis-server, standalone and Cluster; each store has a key prefix of its
// own.
func TestConformance(t *testing.T) {
	var n atomic.Int64
	harness := func(addrs ...string) storetest.Harness {
		return storetest.Harness{
			New: func(t *testing.T) sessions.Store {
				return newStoreConfig(t, Config{
					Addresses:     addrs,
					EncryptionKey: newKey(),
					KeyPrefix:     fmt.Sprintf("ct%d:", n.Add(1)),
				})
			},
			Advance: func(_ *testing.T, d time.Duration) { time.Sleep(d) },
			Now:     time.Now,
		}
	}
	t.Run("standalone", func(t *testing.T) {
		srv := redistest.Start(t)
		storetest.Run(t, harness(srv.Addr))
	})
	t.Run("cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, 3)
		storetest.Run(t, harness(cl.Addrs...))
	})
}
