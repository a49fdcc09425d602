package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
	"github.com/rebell-gateway/caddy-rebell/session"
)

func TestListenEvents(t *testing.T) {
	srv := redistest.Start(t)
	key := newKey()
	a, b := newStore(t, key, srv.Addr), newStore(t, key, srv.Addr)
	ea, eb := newEvents(), newEvents()
	a.Listen(ea.fn)
	b.Listen(eb.fn)
	ea.next(t, session.EventResync)
	eb.next(t, session.EventResync)

	ctx := context.Background()
	ss := newSession("cust-1")
	mustCreate(t, a, ss, time.Hour)
	next := refreshed(ss.rec)
	if ok, _ := a.Swap(ctx, ss.k, "", 1, next, time.Hour); !ok {
		t.Fatal("swap")
	}
	for _, e := range []*events{ea, eb} {
		if ev := e.next(t, session.EventUpdated); ev.Key != ss.k || ev.Version != 2 {
			t.Fatalf("updated: %+v", ev)
		}
	}
	if _, err := a.End(ctx, ss.k, "cust-1"); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*events{ea, eb} {
		if ev := e.next(t, session.EventEnded); ev.Key != ss.k {
			t.Fatalf("ended: %+v", ev)
		}
	}
	// Malformed announcements are ignored; the next good one arrives.
	raw := srv.Client(t)
	raw.Publish(ctx, b.keys.channel, "garbage")
	raw.Publish(ctx, b.keys.channel, endedMessage(ss.k))
	if ev := eb.next(t, session.EventEnded); ev.Key != ss.k {
		t.Fatalf("after garbage: %+v", ev)
	}

	// Close stops delivery and waits for it; twice is fine; Listen after
	// Close does nothing.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	raw.Publish(ctx, b.keys.channel, endedMessage(ss.k))
	ea.next(t, session.EventEnded)
	select {
	case ev := <-eb.ch:
		t.Fatalf("event after Close: %+v", ev)
	default:
	}
	c, _ := New(Config{Addresses: []string{srv.Addr}, EncryptionKey: key})
	_ = c.Close()
	c.Listen(func(session.Event) { t.Error("Listen after Close delivered") })
}

// TestListenRecovers stops and restarts Redis under a listening Store, and
// starts a Store while Redis is down.
func TestListenRecovers(t *testing.T) {
	srv := redistest.Start(t)
	key := newKey()
	core, logs := observer.New(zap.DebugLevel)
	s := newStoreConfig(t, Config{Addresses: []string{srv.Addr}, EncryptionKey: key, Logger: zap.New(core)})
	e := newEvents()
	s.Listen(e.fn)
	if ev := e.next(t, session.EventResync); ev.Lost {
		t.Fatal("first subscription reports lost data")
	}

	srv.Stop(t)
	late := newStore(t, key, srv.Addr) // Redis is down as it starts listening
	le := newEvents()
	late.Listen(le.fn)
	ctx := context.Background()
	if _, err := s.Load(ctx, newSession("").k, timeZero, 0); err == nil {
		t.Fatal("Load while Redis is down succeeded")
	}

	for range 3 {
		_, _ = s.Load(ctx, newSession("").k, timeZero, 0)
	}

	srv.Restart(t) // empty: no persistence
	if ev := e.next(t, session.EventResync); !ev.Lost {
		t.Fatal("Redis came back empty, but the resync does not say so")
	}
	if ev := le.next(t, session.EventResync); ev.Lost {
		t.Fatal("a Store that never saw Redis reports lost data")
	}
	ss := newSession("cust-1")
	mustCreate(t, s, ss, time.Hour)
	if _, err := s.End(ctx, ss.k, "cust-1"); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []*events{e, le} {
		if got := ev.next(t, session.EventEnded); got.Key != ss.k {
			t.Fatalf("ended after restart: %+v", got)
		}
	}
	// One WARN for the outage, one for the lost data, one INFO for the
	// recovery; no key names.
	warns := logs.FilterLevelExact(zap.WarnLevel)
	if warns.Len() != 2 || warns.FilterMessageSnippet("unavailable").Len() != 1 ||
		warns.FilterMessageSnippet("without its data").Len() != 1 ||
		logs.FilterMessageSnippet("reachable again").Len() != 1 {
		t.Fatalf("logs: %v", logs.All())
	}
	for _, entry := range logs.All() {
		for _, f := range entry.Context {
			if strings.Contains(fmt.Sprint(f.Interface, f.String), s.keys.prefix) {
				t.Fatalf("log names a key: %v", entry)
			}
		}
	}
}

// TestListenUnanswered: a subscription whose PING goes unanswered is
// dropped and made again.
func TestListenUnanswered(t *testing.T) {
	srv := redistest.Start(t)
	core, logs := observer.New(zap.DebugLevel)
	s := newStoreConfig(t, Config{Addresses: []string{srv.Addr}, EncryptionKey: newKey(), Logger: zap.New(core)})
	e := newEvents()
	s.Listen(e.fn)
	e.next(t, session.EventResync)
	// The server stops answering anyone for longer than two health
	// intervals (200 ms each in tests), but the connection stays open.
	raw := srv.Client(t)
	if err := raw.Do(context.Background(), "CLIENT", "PAUSE", "1000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	e.next(t, session.EventResync)
	if n := logs.FilterMessageSnippet("unavailable").Len(); n != 1 {
		t.Fatalf("%d outage messages, want 1: %v", n, logs.All())
	}
}

// TestListenKilled: a subscription whose connection is closed is made again.
func TestListenKilled(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, newKey(), srv.Addr)
	e := newEvents()
	s.Listen(e.fn)
	e.next(t, session.EventResync)
	// Kill the subscriber's connection from the server side.
	raw := srv.Client(t)
	if err := raw.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	if ev := e.next(t, session.EventResync); ev.Lost {
		t.Fatal("a reconnect to the same Redis reports lost data")
	}
}

// A flapping connection writes one WARN and one INFO per warnEvery, not a
// line per flip.
func TestHealthFlappingLogsLittle(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	h := &health{log: zap.New(core)}
	for range 50 {
		h.fail("get", errors.New("connection refused"))
		h.ok()
	}
	var warn, info, debug int
	for _, e := range logs.All() {
		switch e.Level {
		case zap.WarnLevel:
			warn++
		case zap.InfoLevel:
			info++
		case zap.DebugLevel:
			debug++
		}
	}
	if warn != 1 || info != 1 || debug != 98 {
		t.Fatalf("WARN %d, INFO %d, DEBUG %d lines; want 1, 1, 98", warn, info, debug)
	}
}

// A subscribed Store renews the epoch marker while it listens, and notices
// data lost without its subscription dropping (FLUSHALL).
func TestListenEpochWhileSubscribed(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, newKey(), srv.Addr)
	s.epochEvery = 100 * time.Millisecond
	e := newEvents()
	s.Listen(e.fn)
	if ev := e.next(t, session.EventResync); ev.Lost {
		t.Fatal("first subscription reports lost data")
	}
	c := srv.Client(t)
	ctx := context.Background()
	// Renewed: its lifetime goes back up after being cut.
	if err := c.PExpire(ctx, s.keys.epoch, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ttl, err := c.PTTL(ctx, s.keys.epoch).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl > 24*time.Hour {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("epoch marker not renewed: TTL %v", ttl)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if ev := e.next(t, session.EventResync); !ev.Lost {
		t.Fatal("FLUSHALL while subscribed was not reported as lost data")
	}
}
