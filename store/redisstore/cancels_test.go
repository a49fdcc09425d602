package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// TestPendingCancelsSealedAndRotated: a pending cancel holds no token in
// clear, every key of it expires, it opens under the key rotation rules of
// records, and one that does not open (another key or realm) is dropped
// with an error wrapping ErrRecordCorrupt.
func TestPendingCancelsSealedAndRotated(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	keyA, keyB := newKey(), newKey()
	store := func(realm string, cur []byte, prev ...[]byte) *Store {
		return newStoreConfig(t, Config{Addresses: []string{srv.Addr}, EncryptionKey: cur, PreviousEncryptionKeys: prev, Realm: realm})
	}
	a, ba, b, other := store("r", keyA), store("r", keyB, keyA), store("r", keyB), store("other", keyA)
	now := time.Now().Truncate(time.Millisecond)
	c := &session.Cancel{
		AccessToken: secret("AT-secret-value"), AccessTokenExpiry: now.Add(time.Hour),
		RefreshToken: secret("RT-secret-value"), RefreshTokenExpiry: now.Add(24 * time.Hour),
		Reason: "logout", Queued: now,
	}
	if err := a.AddCancel(ctx, c); err != nil {
		t.Fatal(err)
	}
	client := srv.Client(t)
	for _, k := range allKeys(t, client) {
		if ttl := client.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %s has no lifetime (%v)", k, ttl)
		}
		dump := client.Dump(ctx, k).Val()
		if strings.Contains(dump, "secret-value") {
			t.Errorf("key %s holds a token in clear", k)
		}
	}
	// BA opens what A sealed, and writes it back with B; B then opens it.
	got, lease, err := ba.LeaseCancel(ctx, now, time.Minute)
	if err != nil || got == nil || !got.AccessToken.Equal(c.AccessToken) || !got.RefreshToken.Equal(c.RefreshToken) {
		t.Fatalf("BA LeaseCancel = %v, %v", got, err)
	}
	got.Due = now
	if ok, err := ba.PutBackCancel(ctx, got, lease); !ok || err != nil {
		t.Fatalf("PutBackCancel = %v %v", ok, err)
	}
	if got, _, err := b.LeaseCancel(ctx, now.Add(time.Second), time.Minute); err != nil || got == nil {
		t.Fatalf("B after the rewrite: %v %v", got, err)
	}
	_ = b.RemoveCancel(ctx, c.ID)

	// Another realm's, or a key this store does not hold: dropped.
	for name, writer := range map[string]*Store{"other realm": other, "old key only": a} {
		c := &session.Cancel{AccessToken: secret("AT"), AccessTokenExpiry: now.Add(time.Hour), RefreshTokenExpiry: now.Add(time.Hour)}
		if err := writer.AddCancel(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.LeaseCancel(ctx, now, time.Minute); !errors.Is(err, session.ErrRecordCorrupt) {
			t.Fatalf("%s: %v, want ErrRecordCorrupt", name, err)
		}
		if n, _ := b.CountCancels(ctx); n != 0 {
			t.Fatalf("%s: %d pending after the drop", name, n)
		}
	}
}

// TestPendingCancelsRace: several stores (instances) lease from one queue
// at once: every pending cancel is leased by exactly one of them.
func TestPendingCancelsRace(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	key := newKey()
	const instances, cancels = 4, 60
	stores := make([]*Store, instances)
	for i := range stores {
		stores[i] = newStoreConfig(t, Config{Addresses: []string{srv.Addr}, EncryptionKey: key})
	}
	now := time.Now()
	for i := range cancels {
		c := &session.Cancel{AccessToken: secret(fmt.Sprintf("AT%d", i)), AccessTokenExpiry: now.Add(time.Hour), RefreshTokenExpiry: now.Add(time.Hour)}
		if err := stores[i%instances].AddCancel(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for _, s := range stores {
		wg.Go(func() {
			for {
				c, _, err := s.LeaseCancel(ctx, now, time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if c == nil {
					return
				}
				mu.Lock()
				seen[c.AccessToken.Reveal()]++
				mu.Unlock()
				if err := s.RemoveCancel(ctx, c.ID); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != cancels {
		t.Fatalf("%d cancels leased, want %d", len(seen), cancels)
	}
	for at, n := range seen {
		if n != 1 {
			t.Fatalf("%s leased %d times", at, n)
		}
	}
}

// TestAddCancelAnnounces: every instance hears of a pending cancel queued
// on another, so an idle one looks for due cancels.
func TestAddCancelAnnounces(t *testing.T) {
	srv := redistest.Start(t)
	key := newKey()
	a, b := newStore(t, key, srv.Addr), newStore(t, key, srv.Addr)
	eb := newEvents()
	b.Listen(eb.fn)
	eb.next(t, session.EventResync)
	now := time.Now()
	if err := a.AddCancel(context.Background(), &session.Cancel{AccessToken: secret("AT"), AccessTokenExpiry: now.Add(time.Hour), RefreshTokenExpiry: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if ev := eb.next(t, session.EventCancelQueued); ev.Key != (session.Key{}) {
		t.Fatalf("announcement %+v", ev)
	}
}
