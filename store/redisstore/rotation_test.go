package redisstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// TestKeyRotation follows the runbook of docs/key-rotation.md on one Redis:
// A (old key only), AB (A, new key B as previous), BA (B, A as previous),
// B (new key only). Records open with the current or a previous key and are
// written with the current one; customer indexes are found under both.
func TestKeyRotation(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	keyA, keyB := newKey(), newKey()
	store := func(cur []byte, prev ...[]byte) *Store {
		return newStoreConfig(t, Config{Addresses: []string{srv.Addr}, EncryptionKey: cur, PreviousEncryptionKeys: prev})
	}
	a, ab, ba, b := store(keyA), store(keyA, keyB), store(keyB, keyA), store(keyB)

	load := func(s *Store, ss testSession) (*session.Record, error) { return s.Load(ctx, ss.k, timeZero, 0) }

	// Written with A: every store holding A opens it.
	s1 := newSession("cust-rot")
	mustCreate(t, a, s1, time.Hour)
	for name, s := range map[string]*Store{"A": a, "AB": ab, "BA": ba} {
		rec, err := load(s, s1)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sameRecord(t, rec, s1.rec)
	}
	if _, err := load(b, s1); !errors.Is(err, session.ErrRecordCorrupt) {
		t.Fatalf("B opened a record sealed with A: %v", err)
	}

	// Rewritten by BA (a refresh during phase 2): sealed with B now, read
	// by the phase-1 store AB, not by A any more.
	next := refreshed(s1.rec)
	if ok, err := ba.Swap(ctx, s1.k, "", 1, next, time.Hour); !ok || err != nil {
		t.Fatalf("Swap: %v %v", ok, err)
	}
	for name, s := range map[string]*Store{"AB": ab, "BA": ba, "B": b} {
		rec, err := load(s, s1)
		if err != nil {
			t.Fatalf("%s after the rewrite: %v", name, err)
		}
		sameRecord(t, rec, next)
	}
	if _, err := load(a, s1); !errors.Is(err, session.ErrRecordCorrupt) {
		t.Fatalf("A opened a record sealed with B: %v", err)
	}

	// The customer's sessions, indexed under A by AB and under B by BA,
	// are all found, and ended, from either side.
	s2, s3 := newSession("cust-rot"), newSession("cust-rot")
	mustCreate(t, ab, s2, time.Hour)
	mustCreate(t, ba, s3, time.Hour)
	for name, s := range map[string]*Store{"AB": ab, "BA": ba} {
		got, err := s.CustomerSessions(ctx, "cust-rot")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || !slices.Contains(got, s1.k) || !slices.Contains(got, s2.k) || !slices.Contains(got, s3.k) {
			t.Fatalf("%s: customer sessions %v", name, got)
		}
	}
	if _, err := ba.End(ctx, s2.k, "cust-rot"); err != nil {
		t.Fatal(err)
	}
	if got, _ := ab.CustomerSessions(ctx, "cust-rot"); len(got) != 2 || slices.Contains(got, s2.k) {
		t.Fatalf("after End: %v", got)
	}

	// Login memos written with one key open with the other.
	code := rebell.NewSecret("CODE-rot")
	if ok, _, err := ba.ClaimLogin(ctx, code, time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := ba.FinishLogin(ctx, code, s3.id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, id, err := ba.ClaimLogin(ctx, code, time.Minute); id != s3.id || err != nil {
		t.Fatalf("memo: %q %v", id, err)
	}
}

func TestPreviousKeysValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		prev [][]byte
		want string
	}{
		"short":    {[][]byte{newKey(), make([]byte, 16)}, "previous_encryption_keys: entry 2 must be 32 bytes (got 16)"},
		"too many": {slices.Repeat([][]byte{newKey()}, MaxPreviousEncryptionKeys+1), "previous_encryption_keys: 9 keys, at most 8"},
	} {
		_, err := New(Config{Addresses: []string{"127.0.0.1:1"}, EncryptionKey: newKey(), PreviousEncryptionKeys: tc.prev})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}
