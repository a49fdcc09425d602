package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// TestReplayedRecordStaysEnded: someone with write access to Redis copies a
// session's record, the session ends (logout), and the copy is put back:
// no Load, Acquire or Swap opens it while the end mark lives, and it is
// deleted on sight. The mark lives as long as the record could have.
func TestReplayedRecordStaysEnded(t *testing.T) {
	_, s, raw := startedStore(t)
	ctx := context.Background()
	ss := newSession("cust-replay")
	const life = 48 * time.Hour // longer than EndMarkLifetime
	mustCreate(t, s, ss, life)
	name := s.keys.record(ss.k)
	copied, err := raw.Dump(ctx, name).Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.End(ctx, ss.k, ss.rec.CustomerID); err != nil {
		t.Fatal(err)
	}
	if pttl := raw.PTTL(ctx, s.keys.ended(ss.k)).Val(); pttl < life-time.Minute {
		t.Fatalf("end mark lives %v, less than the record would have (%v)", pttl, life)
	}
	putBack := func() {
		t.Helper()
		if err := raw.RestoreReplace(ctx, name, time.Hour, copied).Err(); err != nil {
			t.Fatal(err)
		}
	}

	putBack()
	if rec, err := s.Load(ctx, ss.k, time.Now(), time.Hour); rec != nil || err != nil {
		t.Fatalf("Load of a replayed record: %v %v", rec, err)
	}
	if raw.Exists(ctx, name).Val() != 0 {
		t.Fatal("the replayed record was left in Redis")
	}
	putBack()
	if _, res, err := s.Acquire(ctx, ss.k, ss.rec.Version, time.Minute); res != session.LeaseGone || err != nil {
		t.Fatalf("Acquire on a replayed record: %v %v", res, err)
	}
	putBack()
	if ok, err := s.Swap(ctx, ss.k, "", ss.rec.Version, refreshed(ss.rec), time.Hour); ok || err != nil {
		t.Fatalf("Swap on a replayed record: %v %v", ok, err)
	}
	if raw.Exists(ctx, name).Val() != 0 {
		t.Fatal("the replayed record was left in Redis")
	}
	// What the store cannot do alone: with the mark deleted too, the copy
	// opens again (docs/sessions.md, threat model: the instances' own
	// memory of the end is the defence then).
	raw.Del(ctx, s.keys.ended(ss.k))
	putBack()
	if rec, err := s.Load(ctx, ss.k, time.Time{}, 0); rec == nil || err != nil {
		t.Fatalf("Load with the mark deleted: %v %v", rec, err)
	}
}
