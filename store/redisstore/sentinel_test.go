package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// TestSentinel: with master_name, the store finds the master through a
// Sentinel and works as on a standalone server, announcements included.
func TestSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.StartSentinel(t, master)
	key := newKey()
	cfg := Config{Addresses: []string{sentinel.Addr}, MasterName: redistest.SentinelMaster, EncryptionKey: key}
	s, other := newStoreConfig(t, cfg), newStoreConfig(t, cfg)
	e := newEvents()
	other.Listen(e.fn)
	e.next(t, session.EventResync)
	ctx := context.Background()

	ss := newSession("cust-1")
	mustCreate(t, s, ss, time.Hour)
	// The record is on the master the Sentinel named.
	if n := master.Client(t).Exists(ctx, s.keys.record(ss.k)).Val(); n != 1 {
		t.Fatalf("record not on the master: EXISTS = %d", n)
	}
	rec, err := other.Load(ctx, ss.k, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, rec, ss.rec)
	lease, res, err := other.Acquire(ctx, ss.k, 1, time.Minute)
	if res != session.LeaseAcquired || err != nil {
		t.Fatal(res, err)
	}
	if ok, err := other.Swap(ctx, ss.k, lease, 1, refreshed(ss.rec), time.Hour); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ev := e.next(t, session.EventUpdated); ev.Key != ss.k || ev.Version != 2 {
		t.Fatalf("updated: %+v", ev)
	}
	if ok, err := s.End(ctx, ss.k, "cust-1"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ev := e.next(t, session.EventEnded); ev.Key != ss.k {
		t.Fatalf("ended: %+v", ev)
	}
}
