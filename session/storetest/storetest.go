// Package storetest is the conformance suite of session.Store: the rules of
// its doc comments, checked the same way against every implementation (the
// Redis store against a real redis-server, and the cache's in-memory fake),
// so that a fake cannot drift from the store it stands for.
package storetest

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// Harness gives the suite stores to test.
type Harness struct {
	// New returns a new, empty store (a keyspace of its own), closed by the
	// caller's cleanup.
	New func(t *testing.T) session.Store
	// Advance moves the store's clock on by d: a fake's clock, or real
	// time (by sleeping) for a real store.
	Advance func(t *testing.T, d time.Duration)
	// Now is the store's clock.
	Now func() time.Time
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, Harness)
	}{
		{"Records", testRecords},
		{"EndMark", testEndMark},
		{"LastUse", testLastUse},
		{"Leases", testLeases},
		{"LeaseExpiry", testLeaseExpiry},
		{"RecordLifetime", testRecordLifetime},
		{"CustomerIndex", testCustomerIndex},
		{"LoginMemo", testLoginMemo},
		{"Events", testEvents},
		{"PendingCancels", func(t *testing.T, h Harness) { testPendingCancels(t, cancelsOf(h)) }},
		{"PendingCancelLease", func(t *testing.T, h Harness) { testPendingCancelLease(t, cancelsOf(h)) }},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, h) })
	}
}

var ids = session.RandomIDs()

func newKey() session.Key {
	_, k := ids.New()
	return k
}

// NewRecord returns a session record of customer at version 1, made at now
// with made-up tokens, its times to the millisecond (what a store keeps).
func NewRecord(now time.Time, customer string) *session.Record {
	now = now.Truncate(time.Millisecond)
	return &session.Record{
		Version:            1,
		CustomerID:         customer,
		AccessToken:        rebell.NewSecret("AT-" + rand.Text()),
		AccessTokenExpiry:  now.Add(15 * time.Minute),
		RefreshToken:       rebell.NewSecret("RT-" + rand.Text()),
		RefreshTokenExpiry: now.Add(24 * time.Hour),
		Created:            now,
	}
}

func next(rec *session.Record) *session.Record {
	r := *rec
	r.Version++
	r.AccessToken = rebell.NewSecret("AT-" + rand.Text())
	r.RefreshToken = rebell.NewSecret("RT-" + rand.Text())
	return &r
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sameRecord(t *testing.T, what string, got, want *session.Record) {
	t.Helper()
	switch {
	case got == nil:
		t.Fatalf("%s: no record", what)
	case got.Version != want.Version, got.CustomerID != want.CustomerID,
		!got.AccessToken.Equal(want.AccessToken), !got.RefreshToken.Equal(want.RefreshToken),
		!got.AccessTokenExpiry.Equal(want.AccessTokenExpiry), !got.RefreshTokenExpiry.Equal(want.RefreshTokenExpiry),
		!got.Created.Equal(want.Created):
		t.Fatalf("%s: record v%d %s, want v%d %s (times %v/%v/%v, want %v/%v/%v)", what,
			got.Version, got.CustomerID, want.Version, want.CustomerID,
			got.AccessTokenExpiry, got.RefreshTokenExpiry, got.Created,
			want.AccessTokenExpiry, want.RefreshTokenExpiry, want.Created)
	}
}

func testRecords(t *testing.T, h Harness) {
	s, ctx := h.New(t), ctxOf(t)
	k := newKey()
	if rec, err := s.Load(ctx, k, time.Time{}, 0); rec != nil || err != nil {
		t.Fatalf("Load of an unknown session = %v, %v; want nil, nil", rec, err)
	}
	rec := NewRecord(h.Now(), "cust-1")
	if ok, err := s.Create(ctx, k, rec, time.Hour); !ok || err != nil {
		t.Fatalf("Create = %v, %v", ok, err)
	}
	if ok, err := s.Create(ctx, k, next(rec), time.Hour); ok || err != nil {
		t.Fatalf("Create over a record = %v, %v; want false", ok, err)
	}
	got, err := s.Load(ctx, k, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, "after Create", got, rec)
	if !got.LastUsed.Equal(rec.Created) {
		t.Fatalf("LastUsed after Create = %v, want Created %v", got.LastUsed, rec.Created)
	}

	r2 := next(rec)
	if ok, err := s.Swap(ctx, k, "", 2, next(r2), time.Hour); ok || err != nil {
		t.Fatalf("Swap from a version the record is not at = %v, %v; want false", ok, err)
	}
	if ok, err := s.Swap(ctx, k, "", 1, r2, time.Hour); !ok || err != nil {
		t.Fatalf("Swap = %v, %v", ok, err)
	}
	got, _ = s.Load(ctx, k, time.Time{}, 0)
	sameRecord(t, "after Swap", got, r2)
	if ok, err := s.Swap(ctx, newKey(), "", 1, r2, time.Hour); ok || err != nil {
		t.Fatalf("Swap of an unknown session = %v, %v; want false", ok, err)
	}
	// A write-back after a loss may skip versions.
	r5 := next(r2)
	r5.Version = 5
	if ok, err := s.Swap(ctx, k, "", 2, r5, time.Hour); !ok || err != nil {
		t.Fatalf("Swap 2→5 = %v, %v", ok, err)
	}
	got, _ = s.Load(ctx, k, time.Time{}, 0)
	sameRecord(t, "after Swap 2→5", got, r5)

	if ok, err := s.End(ctx, k, rec.CustomerID); !ok || err != nil {
		t.Fatalf("End = %v, %v", ok, err)
	}
	if rec, err := s.Load(ctx, k, time.Time{}, 0); rec != nil || err != nil {
		t.Fatalf("Load after End = %v, %v", rec, err)
	}
	if ok, err := s.End(ctx, k, rec.CustomerID); ok || err != nil {
		t.Fatalf("End again = %v, %v; want false", ok, err)
	}
	if ok, err := s.Swap(ctx, k, "", 5, next(r5), time.Hour); ok || err != nil {
		t.Fatalf("Swap after End = %v, %v; want false", ok, err)
	}
}

func testEndMark(t *testing.T, h Harness) {
	s, ctx := h.New(t), ctxOf(t)
	k := newKey()
	rec := NewRecord(h.Now(), "cust-1")
	// End of a session never created leaves its mark too.
	if ok, err := s.End(ctx, k, ""); ok || err != nil {
		t.Fatalf("End of an unknown session = %v, %v; want false", ok, err)
	}
	if ok, err := s.Create(ctx, k, rec, time.Hour); ok || err != nil {
		t.Fatalf("Create after End = %v, %v; want false (the end mark refuses it)", ok, err)
	}
	if got, _ := s.Load(ctx, k, time.Time{}, 0); got != nil {
		t.Fatal("a record was written over an end mark")
	}
}

func testLastUse(t *testing.T, h Harness) {
	s, ctx := h.New(t), ctxOf(t)
	k := newKey()
	rec := NewRecord(h.Now(), "cust-1")
	mustCreate(t, s, k, rec)
	later := rec.Created.Add(time.Minute)
	got, err := s.Load(ctx, k, later, 0)
	if err != nil || got == nil || !got.LastUsed.Equal(later) {
		t.Fatalf("Load reporting a use: LastUsed %v, %v; want %v", got.LastUsed, err, later)
	}
	got, _ = s.Load(ctx, k, rec.Created.Add(time.Second), 0)
	if !got.LastUsed.Equal(later) {
		t.Fatalf("an earlier use moved LastUsed back to %v", got.LastUsed)
	}
	got, _ = s.Load(ctx, k, time.Time{}, time.Hour)
	if !got.LastUsed.Equal(later) {
		t.Fatalf("Load without a use moved LastUsed to %v", got.LastUsed)
	}
	// A Swap keeps the latest use.
	if ok, _ := s.Swap(ctx, k, "", 1, next(rec), time.Hour); !ok {
		t.Fatal("Swap")
	}
	if got, _ = s.Load(ctx, k, time.Time{}, 0); !got.LastUsed.Equal(later) {
		t.Fatalf("LastUsed after Swap = %v, want %v", got.LastUsed, later)
	}
}

func mustCreate(t *testing.T, s session.Store, k session.Key, rec *session.Record) {
	t.Helper()
	if ok, err := s.Create(ctxOf(t), k, rec, time.Hour); !ok || err != nil {
		t.Fatalf("Create = %v, %v", ok, err)
	}
}

func testLeases(t *testing.T, h Harness) {
	s, ctx := h.New(t), ctxOf(t)
	k := newKey()
	if _, res, err := s.Acquire(ctx, k, 1, time.Minute); res != session.LeaseGone || err != nil {
		t.Fatalf("Acquire of an unknown session = %v, %v; want LeaseGone", res, err)
	}
	rec := NewRecord(h.Now(), "cust-1")
	mustCreate(t, s, k, rec)
	if _, res, err := s.Acquire(ctx, k, 2, time.Minute); res != session.LeaseStale || err != nil {
		t.Fatalf("Acquire at another version = %v, %v; want LeaseStale", res, err)
	}
	lease, res, err := s.Acquire(ctx, k, 1, time.Minute)
	if res != session.LeaseAcquired || err != nil || lease == "" {
		t.Fatalf("Acquire = %q, %v, %v; want LeaseAcquired", lease, res, err)
	}
	if _, res, _ := s.Acquire(ctx, k, 1, time.Minute); res != session.LeaseHeld {
		t.Fatalf("second Acquire = %v, want LeaseHeld", res)
	}
	if ok, err := s.Renew(ctx, k, "not-the-lease", time.Minute); ok || err != nil {
		t.Fatalf("Renew by another = %v, %v; want false", ok, err)
	}
	if ok, err := s.Renew(ctx, k, lease, time.Minute); !ok || err != nil {
		t.Fatalf("Renew = %v, %v", ok, err)
	}
	if err := s.Release(ctx, k, "not-the-lease"); err != nil {
		t.Fatal(err)
	}
	if _, res, _ := s.Acquire(ctx, k, 1, time.Minute); res != session.LeaseHeld {
		t.Fatalf("Acquire after a Release by another = %v, want LeaseHeld", res)
	}
	if err := s.Release(ctx, k, lease); err != nil {
		t.Fatal(err)
	}
	lease2, res, _ := s.Acquire(ctx, k, 1, time.Minute)
	if res != session.LeaseAcquired || lease2 == lease {
		t.Fatalf("Acquire after Release = %q, %v; want a new lease", lease2, res)
	}
	if ok, err := s.Renew(ctx, k, lease, time.Minute); ok || err != nil {
		t.Fatalf("Renew of a released lease = %v, %v; want false", ok, err)
	}
	// Swap releases the lease it names.
	if ok, _ := s.Swap(ctx, k, lease2, 1, next(rec), time.Hour); !ok {
		t.Fatal("Swap")
	}
	lease3, res, _ := s.Acquire(ctx, k, 2, time.Minute)
	if res != session.LeaseAcquired {
		t.Fatalf("Acquire after a Swap with the lease = %v, want LeaseAcquired", res)
	}
	// End takes the lease with the record.
	if ok, _ := s.End(ctx, k, rec.CustomerID); !ok {
		t.Fatal("End")
	}
	if _, res, _ := s.Acquire(ctx, k, 2, time.Minute); res != session.LeaseGone {
		t.Fatalf("Acquire after End = %v, want LeaseGone", res)
	}
	if ok, err := s.Renew(ctx, k, lease3, time.Minute); ok || err != nil {
		t.Fatalf("Renew of a lease held when End ran = %v, %v; want false", ok, err)
	}
}

// testRecordLifetime: a record lives for the ttl Create or Swap gave it; a
// Load with a ttl raises a shorter remaining lifetime to it.
func testRecordLifetime(t *testing.T, h Harness) {
	s, ctx := h.New(t), ctxOf(t)
	const short = 100 * time.Millisecond
	created, swapped, raised := newKey(), newKey(), newKey()
	for _, k := range []session.Key{created, swapped, raised} {
		if ok, err := s.Create(ctx, k, NewRecord(h.Now(), "cust-1"), short); !ok || err != nil {
			t.Fatalf("Create = %v, %v", ok, err)
		}
	}
	if ok, err := s.Swap(ctx, swapped, "", 1, next(NewRecord(h.Now(), "cust-1")), time.Minute); !ok || err != nil {
		t.Fatalf("Swap = %v, %v", ok, err)
	}
	if rec, err := s.Load(ctx, raised, h.Now(), time.Minute); rec == nil || err != nil {
		t.Fatalf("Load = %v, %v", rec, err)
	}
	h.Advance(t, 2*short+50*time.Millisecond)
	for k, want := range map[session.Key]bool{created: false, swapped: true, raised: true} {
		rec, err := s.Load(ctx, k, time.Time{}, 0)
		if err != nil || (rec != nil) != want {
			t.Fatalf("record after its first ttl: %v, %v; want present %v", rec, err, want)
		}
	}
}

func testLeaseExpiry(t *testing.T, h Harness) {
	s, ctx := h.New(t), ctxOf(t)
	k := newKey()
	mustCreate(t, s, k, NewRecord(h.Now(), "cust-1"))
	lease, res, _ := s.Acquire(ctx, k, 1, 100*time.Millisecond)
	if res != session.LeaseAcquired {
		t.Fatalf("Acquire = %v", res)
	}
	h.Advance(t, 250*time.Millisecond)
	if ok, _ := s.Renew(ctx, k, lease, time.Minute); ok {
		t.Fatal("an expired lease was renewed")
	}
	if _, res, _ := s.Acquire(ctx, k, 1, time.Minute); res != session.LeaseAcquired {
		t.Fatalf("Acquire after the lease expired = %v, want LeaseAcquired", res)
	}
}

func testCustomerIndex(t *testing.T, h Harness) {
	s, ctx := h.New(t), ctxOf(t)
	k1, k2, k3 := newKey(), newKey(), newKey()
	mustCreate(t, s, k1, NewRecord(h.Now(), "cust-a"))
	mustCreate(t, s, k2, NewRecord(h.Now(), "cust-a"))
	mustCreate(t, s, k3, NewRecord(h.Now(), "cust-b"))
	sorted := func(ks []session.Key) []session.Key {
		slices.SortFunc(ks, func(a, b session.Key) int { return slices.Compare(a[:], b[:]) })
		return ks
	}
	got, err := s.CustomerSessions(ctx, "cust-a")
	if want := sorted([]session.Key{k1, k2}); err != nil || !slices.Equal(sorted(got), want) {
		t.Fatalf("CustomerSessions = %v, %v; want %v", got, err, want)
	}
	if ok, _ := s.End(ctx, k1, "cust-a"); !ok {
		t.Fatal("End")
	}
	if got, _ := s.CustomerSessions(ctx, "cust-a"); !slices.Equal(got, []session.Key{k2}) {
		t.Fatalf("CustomerSessions after End = %v, want [%v]", got, k2)
	}
	if got, err := s.CustomerSessions(ctx, "nobody"); len(got) != 0 || err != nil {
		t.Fatalf("CustomerSessions of nobody = %v, %v", got, err)
	}
}

func testLoginMemo(t *testing.T, h Harness) {
	s, ctx := h.New(t), ctxOf(t)
	code := rebell.NewSecret("code-" + rand.Text())
	if claimed, sid, err := s.ClaimLogin(ctx, code, time.Minute); !claimed || sid != "" || err != nil {
		t.Fatalf("first ClaimLogin = %v, %q, %v; want claimed", claimed, sid, err)
	}
	if claimed, sid, err := s.ClaimLogin(ctx, code, time.Minute); claimed || sid != "" || err != nil {
		t.Fatalf("ClaimLogin while claimed = %v, %q, %v; want in flight", claimed, sid, err)
	}
	id, _ := ids.New()
	if err := s.FinishLogin(ctx, code, id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if claimed, sid, err := s.ClaimLogin(ctx, code, time.Minute); claimed || sid != id || err != nil {
		t.Fatalf("ClaimLogin after FinishLogin = %v, %v; want the session", claimed, err)
	}
	// Forgetting ("") forgets only a claim, never a remembered session: a
	// claim holder that gave up late must not erase another's result.
	if err := s.FinishLogin(ctx, code, "", 0); err != nil {
		t.Fatal(err)
	}
	if claimed, sid, _ := s.ClaimLogin(ctx, code, time.Minute); claimed || sid != id {
		t.Fatal("forgetting erased a remembered session")
	}
	other := rebell.NewSecret("code-" + rand.Text())
	s.ClaimLogin(ctx, other, time.Minute)
	if err := s.FinishLogin(ctx, other, "", 0); err != nil {
		t.Fatal(err)
	}
	if claimed, _, _ := s.ClaimLogin(ctx, other, time.Minute); !claimed {
		t.Fatal("a forgotten claim cannot be claimed again")
	}
	// A claim lapses after its ttl.
	lapsing := rebell.NewSecret("code-" + rand.Text())
	s.ClaimLogin(ctx, lapsing, 100*time.Millisecond)
	h.Advance(t, 250*time.Millisecond)
	if claimed, _, _ := s.ClaimLogin(ctx, lapsing, time.Minute); !claimed {
		t.Fatal("a lapsed claim cannot be claimed again")
	}
}

func testEvents(t *testing.T, h Harness) {
	s, ctx := h.New(t), ctxOf(t)
	events := make(chan session.Event, 64)
	s.Listen(func(ev session.Event) { events <- ev })
	await := func(what string, match func(session.Event) bool) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev := <-events:
				if match(ev) {
					return
				}
			case <-timeout:
				t.Fatalf("no %s announced", what)
			}
		}
	}
	await("EventResync on subscribing", func(ev session.Event) bool { return ev.Kind == session.EventResync })
	k := newKey()
	rec := NewRecord(h.Now(), "cust-1")
	mustCreate(t, s, k, rec)
	if ok, _ := s.Swap(ctx, k, "", 1, next(rec), time.Hour); !ok {
		t.Fatal("Swap")
	}
	await("EventUpdated", func(ev session.Event) bool {
		return ev.Kind == session.EventUpdated && ev.Key == k && (ev.Version == 2 || ev.Version == 0)
	})
	if ok, _ := s.End(ctx, k, rec.CustomerID); !ok {
		t.Fatal("End")
	}
	await("EventEnded", func(ev session.Event) bool { return ev.Kind == session.EventEnded && ev.Key == k })
	// End announces even when there was no record.
	k2 := newKey()
	s.End(ctx, k2, "")
	await("EventEnded of an unknown session", func(ev session.Event) bool { return ev.Kind == session.EventEnded && ev.Key == k2 })
}
