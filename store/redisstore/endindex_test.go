package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
)

// TestFailedEndKeepsIndexEntry: an End whose script did not run (here
// refused by an ACL; in the soak, a script cache emptied by a Redis restart
// and a connection lost before the retry) must not remove the session from
// its customer's index, since the record lives on: an admin end of the
// customer would then miss a live session.
func TestFailedEndKeepsIndexEntry(t *testing.T) {
	srv := redistest.Start(t)
	raw := srv.Client(t)
	key := newKey()
	s := newStore(t, key, srv.Addr)
	ctx := context.Background()
	ss := newSession("cust-end")
	mustCreate(t, s, ss, time.Hour)

	// A user that may do everything but run scripts.
	if err := raw.Do(ctx, "ACL", "SETUSER", "noscripts", "on", ">pw", "~*", "&*", "+@all", "-eval", "-evalsha").Err(); err != nil {
		t.Fatal(err)
	}
	limited := newStoreConfig(t, Config{Addresses: []string{srv.Addr}, EncryptionKey: key, Username: "noscripts", Password: "pw"})

	if _, err := limited.End(ctx, ss.k, "cust-end"); err == nil {
		t.Fatal("End without the right to run its script succeeded")
	}
	rec, err := s.Load(ctx, ss.k, time.Time{}, 0)
	if err != nil || rec == nil {
		t.Fatalf("record after a failed End: %v, %v; want it kept", rec, err)
	}
	ks, err := s.CustomerSessions(ctx, "cust-end")
	if err != nil {
		t.Fatal(err)
	}
	if len(ks) != 1 || ks[0] != ss.k {
		t.Fatalf("customer index after a failed End lists %d sessions, want the live one", len(ks))
	}

	// The End that succeeds removes both.
	if ok, err := s.End(ctx, ss.k, "cust-end"); !ok || err != nil {
		t.Fatalf("End: %v %v", ok, err)
	}
	if ks, _ := s.CustomerSessions(ctx, "cust-end"); len(ks) != 0 {
		t.Fatalf("customer index after End lists %d sessions", len(ks))
	}
}
