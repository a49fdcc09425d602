package redistest

import (
	"context"
	"testing"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	before := s.CommandStats(t)
	if err := c.Get(ctx, "a").Err(); err != nil {
		t.Fatal(err)
	}
	after := s.CommandStats(t)
	if d := after["get"] - before["get"]; d != 1 {
		t.Fatalf("get calls: %d, want 1 (%v)", d, after)
	}
	s.Stop(t)
	if err := ping(s.Addr); err == nil {
		t.Fatal("PING answered after Stop")
	}
	s.Restart(t)
	if n, err := c.Exists(ctx, "a").Result(); err != nil || n != 0 {
		t.Fatalf("after Restart: exists=%d err=%v, want empty data", n, err)
	}
}

func TestCluster(t *testing.T) {
	cl := StartCluster(t, 3)
	c := cl.Client(t)
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, k).Result(); err != nil || v != k {
			t.Fatalf("get %s: %q %v", k, v, err)
		}
	}
	if len(cl.Addrs) != 3 {
		t.Fatalf("addrs: %v", cl.Addrs)
	}
}

func TestParseCommandStats(t *testing.T) {
	got := parseCommandStats("# Commandstats\r\ncmdstat_GET:calls=3,usec=1,usec_per_call=0.33\r\ncmdstat_client|setinfo:calls=2,usec=1\r\n")
	if got["get"] != 3 || got["client|setinfo"] != 2 {
		t.Fatalf("%v", got)
	}
}
