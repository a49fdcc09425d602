package storetest

import (
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// newCancel returns a pending cancel of a new record made at now, due at
// due.
func newCancel(now, due time.Time) *session.Cancel {
	rec := NewRecord(now, "cust-c")
	return &session.Cancel{
		AccessToken:        rec.AccessToken,
		AccessTokenExpiry:  rec.AccessTokenExpiry,
		RefreshToken:       rec.RefreshToken,
		RefreshTokenExpiry: rec.RefreshTokenExpiry,
		Reason:             "logout",
		Queued:             rec.Created,
		Due:                due.Truncate(time.Millisecond),
	}
}

func sameCancel(t *testing.T, what string, got, want *session.Cancel) {
	t.Helper()
	switch {
	case got == nil:
		t.Fatalf("%s: no pending cancel", what)
	case got.ID != want.ID, !got.AccessToken.Equal(want.AccessToken), !got.RefreshToken.Equal(want.RefreshToken),
		!got.AccessTokenExpiry.Equal(want.AccessTokenExpiry), !got.RefreshTokenExpiry.Equal(want.RefreshTokenExpiry),
		got.Reason != want.Reason, !got.Queued.Equal(want.Queued), got.Attempts != want.Attempts,
		!got.Due.Equal(want.Due):
		t.Fatalf("%s: got %s %s q=%v n=%d due=%v, want %s %s q=%v n=%d due=%v", what,
			got.ID, got.Reason, got.Queued, got.Attempts, got.Due, want.ID, want.Reason, want.Queued, want.Attempts, want.Due)
	}
}

// CancelsHarness gives RunCancels queues to test.
type CancelsHarness struct {
	// New returns a new, empty queue.
	New func(t *testing.T) session.PendingCancels
	// Now is the clock the test's times start from.
	Now func() time.Time
}

// RunCancels runs the part of the suite that covers session.PendingCancels,
// for a queue that is not a whole Store (Run covers it for a Store).
func RunCancels(t *testing.T, h CancelsHarness) {
	t.Run("PendingCancels", func(t *testing.T) { testPendingCancels(t, h) })
	t.Run("PendingCancelLease", func(t *testing.T) { testPendingCancelLease(t, h) })
}

func cancelsOf(h Harness) CancelsHarness {
	return CancelsHarness{New: func(t *testing.T) session.PendingCancels { return h.New(t) }, Now: h.Now}
}

func count(t *testing.T, s session.PendingCancels, want int) {
	t.Helper()
	if n, err := s.CountCancels(ctxOf(t)); n != want || err != nil {
		t.Fatalf("CountCancels = %d, %v; want %d", n, err, want)
	}
}

// testPendingCancels: add, lease the earliest due, put back (fenced by the
// lease), remove.
func testPendingCancels(t *testing.T, h CancelsHarness) {
	s, ctx := h.New(t), ctxOf(t)
	now := h.Now().Truncate(time.Millisecond)
	count(t, s, 0)
	if c, lease, err := s.LeaseCancel(ctx, now, time.Minute); c != nil || lease != "" || err != nil {
		t.Fatalf("LeaseCancel of an empty queue = %v, %q, %v", c, lease, err)
	}
	later := newCancel(now, now.Add(time.Hour))
	first := newCancel(now, now.Add(-time.Second))
	first.Due = now.Add(-time.Second)
	for _, c := range []*session.Cancel{later, first} {
		if err := s.AddCancel(ctx, c); err != nil {
			t.Fatal(err)
		}
		if c.ID == "" {
			t.Fatal("AddCancel left the id empty")
		}
	}
	if later.ID == first.ID {
		t.Fatal("two pending cancels share an id")
	}
	count(t, s, 2)

	got, lease, err := s.LeaseCancel(ctx, now, time.Minute)
	if err != nil || lease == "" {
		t.Fatalf("LeaseCancel = %v, %q, %v", got, lease, err)
	}
	sameCancel(t, "leased", got, first)
	if c, _, err := s.LeaseCancel(ctx, now, time.Minute); c != nil || err != nil {
		t.Fatalf("LeaseCancel while the due one is leased = %v, %v; want nil", c, err)
	}

	// Put back with a new token, one more attempt, due later.
	upd := *got
	upd.AccessToken = NewRecord(now, "x").AccessToken
	upd.Attempts = 1
	upd.Due = now.Add(30 * time.Second)
	if ok, err := s.PutBackCancel(ctx, &upd, "not-the-lease"); ok || err != nil {
		t.Fatalf("PutBackCancel with another lease = %v, %v; want false", ok, err)
	}
	if ok, err := s.PutBackCancel(ctx, &upd, lease); !ok || err != nil {
		t.Fatalf("PutBackCancel = %v, %v", ok, err)
	}
	if ok, err := s.PutBackCancel(ctx, &upd, lease); ok || err != nil {
		t.Fatalf("PutBackCancel with a lease given up = %v, %v; want false", ok, err)
	}
	if c, _, _ := s.LeaseCancel(ctx, now.Add(29*time.Second), time.Minute); c != nil {
		t.Fatalf("leased before its due time: %v", c.ID)
	}
	got, lease2, err := s.LeaseCancel(ctx, now.Add(31*time.Second), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sameCancel(t, "put back", got, &upd)
	count(t, s, 2)

	// Removed whoever holds the lease; removing again is no error.
	if err := s.RemoveCancel(ctx, got.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveCancel(ctx, got.ID); err != nil {
		t.Fatalf("RemoveCancel of a removed id: %v", err)
	}
	if ok, err := s.PutBackCancel(ctx, got, lease2); ok || err != nil {
		t.Fatalf("PutBackCancel after RemoveCancel = %v, %v; want false", ok, err)
	}
	count(t, s, 1)
	got, _, _ = s.LeaseCancel(ctx, now.Add(2*time.Hour), time.Minute)
	sameCancel(t, "the later one", got, later)
	_ = s.RemoveCancel(ctx, got.ID)
	count(t, s, 0)

	// Adding a pending id again replaces it.
	again := newCancel(now, now)
	_ = s.AddCancel(ctx, again)
	again.Reason = "customer"
	_ = s.AddCancel(ctx, again)
	count(t, s, 1)
	got, _, _ = s.LeaseCancel(ctx, now, time.Minute)
	sameCancel(t, "replaced", got, again)
}

// testPendingCancelLease: an expired lease frees the cancel for another
// caller, whose lease then fences the first one's write; one that nobody
// took still lets its holder write.
func testPendingCancelLease(t *testing.T, h CancelsHarness) {
	s, ctx := h.New(t), ctxOf(t)
	now := h.Now().Truncate(time.Millisecond)
	c := newCancel(now, now)
	if err := s.AddCancel(ctx, c); err != nil {
		t.Fatal(err)
	}
	a, leaseA, err := s.LeaseCancel(ctx, now, time.Second)
	if a == nil || err != nil {
		t.Fatalf("LeaseCancel = %v, %v", a, err)
	}
	if b, _, _ := s.LeaseCancel(ctx, now.Add(999*time.Millisecond), time.Second); b != nil {
		t.Fatal("leased twice within the lease")
	}
	// Expired, nobody took it: its holder may still put it back.
	a.Due = now.Add(1500 * time.Millisecond)
	if ok, err := s.PutBackCancel(ctx, a, leaseA); !ok || err != nil {
		t.Fatalf("PutBackCancel after an expired lease nobody took = %v, %v", ok, err)
	}
	a, leaseA, _ = s.LeaseCancel(ctx, now.Add(2*time.Second), time.Second)
	if a == nil {
		t.Fatal("not leased again")
	}
	b, leaseB, err := s.LeaseCancel(ctx, now.Add(3500*time.Millisecond), time.Minute)
	if b == nil || err != nil || leaseB == leaseA {
		t.Fatalf("LeaseCancel after the lease expired = %v, %v", b, err)
	}
	if b.ID != c.ID {
		t.Fatalf("leased %s, want %s", b.ID, c.ID)
	}
	if ok, err := s.PutBackCancel(ctx, a, leaseA); ok || err != nil {
		t.Fatalf("PutBackCancel by the holder of an expired lease another took = %v, %v; want false", ok, err)
	}
	if ok, err := s.PutBackCancel(ctx, b, leaseB); !ok || err != nil {
		t.Fatalf("PutBackCancel by the new holder = %v, %v", ok, err)
	}
}
