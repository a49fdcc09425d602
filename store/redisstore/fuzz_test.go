package redisstore

import (
	"strings"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// FuzzParseMessage: announcements come from Redis, which other clients can
// write to. Any message either parses to an event that formats back to
// itself, or is refused; nothing panics.
func FuzzParseMessage(f *testing.F) {
	_, k := session.RandomIDs().New()
	f.Add(endedMessage(k))
	f.Add(updatedMessage(k, 7))
	f.Add("u:" + strings.Repeat("a", 64))
	f.Add("u:" + strings.Repeat("a", 64) + ":18446744073709551616")
	f.Add("x:zz")
	f.Add(cancelQueuedMessage)
	f.Add("")
	f.Fuzz(func(t *testing.T, msg string) {
		ev, ok := parseMessage(msg)
		if !ok {
			return
		}
		var again string
		switch ev.Kind {
		case session.EventEnded:
			again = endedMessage(ev.Key)
		case session.EventUpdated:
			// The short form "u:<hex>" parses as version 0, which formats as
			// "u:<hex>:0" and parses back to the same event.
			again = updatedMessage(ev.Key, ev.Version)
		case session.EventCancelQueued:
			again = cancelQueuedMessage
		default:
			t.Fatalf("kind %d from %q", ev.Kind, msg)
		}
		if ev2, ok := parseMessage(again); !ok || ev2 != ev {
			t.Fatalf("%q → %+v → %q → %+v", msg, ev, again, ev2)
		}
	})
}

// FuzzOpenRecord: a record's value comes from Redis. Whatever it holds,
// opening it fails cleanly (nothing panics) unless it was sealed by us.
func FuzzOpenRecord(f *testing.F) {
	s, err := newSealer(make([]byte, 32), "realm")
	if err != nil {
		f.Fatal(err)
	}
	sealed, err := s.sealRecord("rebell:{x}", newSession("c").rec)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, uint64(1))
	f.Add([]byte{}, uint64(0))
	f.Add(sealed[:20], uint64(1))
	f.Fuzz(func(t *testing.T, b []byte, version uint64) {
		rec, err := s.openRecord("rebell:{x}", version, b)
		if err == nil && (rec == nil || rec.Version != version) {
			t.Fatalf("opened %+v", rec)
		}
		// A garbage plaintext under a valid seal decodes or fails cleanly.
		_, _ = s.openRecord("rebell:{y}", version, s.seal(b, "rebell:{y}"))
	})
}
