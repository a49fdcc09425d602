package redisstore

import (
	"context"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
	"github.com/rebell-gateway/caddy-rebell/session/storetest"
)

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// go-redis logs dial failures to stderr; the tests stop servers on
	// purpose.
	redis.SetLogger(quietLogger{})
	os.Exit(m.Run())
}

func newKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// newStore returns a Store on addrs, closed in t.Cleanup.
func newStore(t testing.TB, key []byte, addrs ...string) *Store {
	t.Helper()
	return newStoreConfig(t, Config{Addresses: addrs, EncryptionKey: key})
}

// newStoreConfig returns a Store of cfg with short listening intervals,
// closed in t.Cleanup.
func newStoreConfig(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.healthInterval = 200 * time.Millisecond
	s.retryMax = 100 * time.Millisecond
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// testSession is a test session: its id, key and record.
type testSession struct {
	id  string
	k   session.Key
	rec *session.Record
}

func newSession(customer string) testSession {
	id, k := session.RandomIDs().New()
	return testSession{id: id, k: k, rec: storetest.NewRecord(time.Now(), customer)}
}

// refreshed returns rec at the next version with new tokens.
func refreshed(rec *session.Record) *session.Record {
	r := *rec
	r.Version++
	r.AccessToken = rebell.NewSecret("AT-" + rand.Text())
	r.RefreshToken = rebell.NewSecret("RT-" + rand.Text())
	r.AccessTokenExpiry = r.AccessTokenExpiry.Add(15 * time.Minute)
	return &r
}

func mustCreate(t testing.TB, s *Store, ss testSession, ttl time.Duration) {
	t.Helper()
	ok, err := s.Create(context.Background(), ss.k, ss.rec, ttl)
	if err != nil || !ok {
		t.Fatalf("Create: %v %v", ok, err)
	}
}

func sameRecord(t testing.TB, got, want *session.Record) {
	t.Helper()
	if got == nil {
		t.Fatal("record is nil")
	}
	if got.Version != want.Version || got.CustomerID != want.CustomerID ||
		!got.AccessToken.Equal(want.AccessToken) || !got.RefreshToken.Equal(want.RefreshToken) ||
		!got.AccessTokenExpiry.Equal(want.AccessTokenExpiry) || !got.RefreshTokenExpiry.Equal(want.RefreshTokenExpiry) ||
		!got.Created.Equal(want.Created) {
		t.Fatalf("record differs: got v%d %q %v %v %v, want v%d %q %v %v %v",
			got.Version, got.CustomerID, got.AccessTokenExpiry, got.RefreshTokenExpiry, got.Created,
			want.Version, want.CustomerID, want.AccessTokenExpiry, want.RefreshTokenExpiry, want.Created)
	}
}

// allKeys lists every key of the server.
func allKeys(t testing.TB, c redis.Cmdable) []string {
	t.Helper()
	var keys []string
	var cursor uint64
	for {
		ks, next, err := c.Scan(context.Background(), cursor, "*", 100).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, ks...)
		if next == 0 {
			return keys
		}
		cursor = next
	}
}

// events collects what Listen delivers.
type events struct{ ch chan session.Event }

func newEvents() *events { return &events{ch: make(chan session.Event, 100)} }

func (e *events) fn(ev session.Event) { e.ch <- ev }

// next waits for the next event of kind (skipping others).
func (e *events) next(t testing.TB, kind session.EventKind) session.Event {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case ev := <-e.ch:
			if ev.Kind == kind {
				return ev
			}
		case <-deadline:
			t.Fatalf("no event of kind %d within 15s", kind)
		}
	}
}

// startedStore is a Store on a fresh standalone server.
func startedStore(t *testing.T) (*redistest.Server, *Store, *redis.Client) {
	srv := redistest.Start(t)
	return srv, newStore(t, newKey(), srv.Addr), srv.Client(t)
}

func secret(s string) rebell.Secret { return rebell.NewSecret(s) }
