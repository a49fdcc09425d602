package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
	"github.com/rebell-gateway/caddy-rebell/session"
)

func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	key := newKey()
	s := newStore(t, key, cl.Addrs...)
	other := newStore(t, key, cl.Addrs...)
	e := newEvents()
	other.Listen(e.fn)
	e.next(t, session.EventResync)
	raw := cl.Client(t)
	ctx := context.Background()

	// Enough sessions to land on every node.
	nodes := map[string]bool{}
	for range 30 {
		ss := newSession("cust-1")
		mustCreate(t, s, ss, time.Hour)
		rec, err := other.Load(ctx, ss.k, time.Now(), 0)
		if err != nil {
			t.Fatal(err)
		}
		sameRecord(t, rec, ss.rec)
		lease, res, err := other.Acquire(ctx, ss.k, 1, time.Minute)
		if res != session.LeaseAcquired || err != nil {
			t.Fatal(res, err)
		}
		if ok, err := other.Renew(ctx, ss.k, lease, time.Minute); !ok || err != nil {
			t.Fatal(ok, err)
		}
		next := refreshed(ss.rec)
		if ok, err := other.Swap(ctx, ss.k, lease, 1, next, time.Hour); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if ev := e.next(t, session.EventUpdated); ev.Key != ss.k || ev.Version != 2 {
			t.Fatalf("updated: %+v", ev)
		}
		if rec, _ := s.Load(ctx, ss.k, time.Time{}, 0); rec == nil || rec.Version != 2 {
			t.Fatalf("after swap: %+v", rec)
		}
		slot := raw.ClusterKeySlot(ctx, s.keys.record(ss.k)).Val()
		if ls := raw.ClusterKeySlot(ctx, s.keys.lease(ss.k)).Val(); ls != slot {
			t.Fatalf("record slot %d, lease slot %d", slot, ls)
		}
		for _, sl := range raw.ClusterSlots(ctx).Val() {
			if int64(sl.Start) <= slot && slot <= int64(sl.End) {
				nodes[sl.Nodes[0].Addr] = true
			}
		}
		if ks, err := s.CustomerSessions(ctx, "cust-1"); err != nil || len(ks) != 1 || ks[0] != ss.k {
			t.Fatalf("customer sessions: %v %v", ks, err)
		}
		if ok, err := s.End(ctx, ss.k, "cust-1"); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if ev := e.next(t, session.EventEnded); ev.Key != ss.k {
			t.Fatalf("ended: %+v", ev)
		}
	}
	if len(nodes) != len(cl.Addrs) {
		t.Fatalf("sessions landed on %v only", nodes)
	}

	claimed, _, err := s.ClaimLogin(ctx, secret("code"), time.Minute)
	if !claimed || err != nil {
		t.Fatal(claimed, err)
	}
	if err := s.FinishLogin(ctx, secret("code"), "sid", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, sid, _ := other.ClaimLogin(ctx, secret("code"), time.Minute); sid != "sid" {
		t.Fatalf("memo: %q", sid)
	}
}
