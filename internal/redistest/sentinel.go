package redistest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// SentinelMaster is the master name a Sentinel started by StartSentinel
// monitors.
const SentinelMaster = "mymaster"

// StartSentinel runs a Sentinel (redis-server --sentinel) on a free
// 127.0.0.1 port that monitors master as SentinelMaster with a quorum of 1,
// waits until it answers PING, and stops it in t.Cleanup. The returned
// Server's Addr is the Sentinel's.
func StartSentinel(t testing.TB, master *Server) *Server {
	t.Helper()
	bin := lookPath(t, "redis-server")
	conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 2000\n",
		SentinelMaster, master.port, SentinelMaster)
	return startOnFreePort(t, bin, []string{"--sentinel"}, false, func(s *Server) {
		// Sentinel rewrites its config file: it must be writable, in the
		// temp dir.
		s.conf = filepath.Join(s.dir, "sentinel.conf")
		if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
			t.Fatalf("redistest: sentinel config: %v", err)
		}
	})
}
