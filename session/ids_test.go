package session

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
)

func TestSessionIDs(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	ids, err := NewIDs(key)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 100 {
		id, k := ids.New()
		if len(id) != IDLen || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
		got, ok := ids.Parse(id)
		if !ok || got != k || k != Key(sha256.Sum256([]byte(id))) {
			t.Fatalf("Parse(New()) = %v, %v", got, ok)
		}
		// The definition: 16 random bytes, then the first 16 bytes of
		// HMAC-SHA256 over them.
		raw, err := base64.RawURLEncoding.DecodeString(id)
		if err != nil || len(raw) != 32 {
			t.Fatalf("id %q: %v", id, err)
		}
		m := hmac.New(sha256.New, key)
		m.Write(raw[:16])
		if !bytes.Equal(m.Sum(nil)[:16], raw[16:]) {
			t.Fatalf("id %q: tag is not HMAC-SHA256(key, random)[:16]", id)
		}
	}
}

func TestSessionIDsRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	before, _ := NewIDs(oldKey)
	after, _ := NewIDs(newKey, oldKey)
	other, _ := NewIDs(bytes.Repeat([]byte{3}, 32))
	oldID, k := before.New()
	if got, ok := after.Parse(oldID); !ok || got != k {
		t.Fatal("an id of the previous key does not verify")
	}
	newID, _ := after.New()
	if _, ok := before.Parse(newID); ok {
		t.Fatal("the new key signed with the previous one")
	}
	if _, ok := other.Parse(oldID); ok {
		t.Fatal("an id verifies under another key")
	}
	if _, err := NewIDs(); err == nil {
		t.Fatal("no key accepted")
	}
	if _, err := NewIDs(make([]byte, 15)); err == nil {
		t.Fatal("a 15-byte key accepted")
	}
}

func TestDeriveKey(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	a, err := DeriveKey(secret, "realm-a")
	if err != nil || len(a) != 32 {
		t.Fatalf("%x %v", a, err)
	}
	a2, _ := DeriveKey(secret, "realm-a")
	b, _ := DeriveKey(secret, "realm-b")
	if !bytes.Equal(a, a2) || bytes.Equal(a, b) || bytes.Equal(a, secret) {
		t.Fatal("derivation is not a function of secret and realm alone")
	}
}

func TestParseSessionIDRejects(t *testing.T) {
	ids := RandomIDs()
	id, _ := ids.New()
	flipped := []byte(id)
	flipped[40] ^= 1 // in the tag
	random := []byte(id)
	random[3] ^= 1 // in the random part
	for name, s := range map[string]string{
		"empty":         "",
		"short":         id[:42],
		"long":          id + "A",
		"padded":        id[:42] + "=",
		"std alphabet":  id[:42] + "+",
		"space":         " " + id[1:],
		"non-canonical": id[:42] + string(id[42]^1), // a padding bit set
		"non-ascii":     id[:41] + "é",
		"zero":          strings.Repeat("A", 43),
		"tag altered":   string(flipped),
		"random part":   string(random),
	} {
		if _, ok := ids.Parse(s); ok {
			t.Errorf("%s: Parse(%q) accepted", name, s)
		}
	}
}

func TestParseSessionIDDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under the race detector")
	}
	ids := RandomIDs()
	id, _ := ids.New()
	if n := testing.AllocsPerRun(100, func() { ids.Parse(id) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func BenchmarkParseSessionID(b *testing.B) {
	ids := RandomIDs()
	id, _ := ids.New()
	for b.Loop() {
		ids.Parse(id)
	}
}

func TestKeyTag(t *testing.T) {
	var k Key
	k[0], k[3], k[4] = 0xab, 0x01, 0xff
	if k.Tag() != "ab000001" || k.String() != "ab000001" {
		t.Fatalf("Tag = %q", k.Tag())
	}
}

// FuzzParseSessionID checks Parse against the definition: exactly the
// canonical unpadded base64url encodings of 32 bytes whose last 16 are the
// HMAC-SHA256 tag of the first 16, keyed by SHA-256.
func FuzzParseSessionID(f *testing.F) {
	key := bytes.Repeat([]byte{9}, 32)
	ids, _ := NewIDs(key)
	id, _ := ids.New()
	for _, s := range []string{
		id, id[:42], id + "A", id[:42] + "B", id[:42] + "=", strings.Repeat("A", 43),
		strings.Repeat("_", 42) + "w", strings.Repeat("-", 43), "", "Bearer " + id,
		strings.Repeat("A", 42) + "é",
	} {
		f.Add(s)
	}
	strict := base64.RawURLEncoding.Strict()
	f.Fuzz(func(t *testing.T, s string) {
		k, ok := ids.Parse(s)
		b, err := strict.DecodeString(s)
		want := err == nil && len(b) == 32 && !strings.ContainsAny(s, "\r\n")
		if want {
			m := hmac.New(sha256.New, key)
			m.Write(b[:16])
			want = bytes.Equal(m.Sum(nil)[:16], b[16:])
		}
		if ok != want {
			t.Fatalf("Parse(%q) ok = %v, want %v", s, ok, want)
		}
		if ok {
			if k != Key(sha256.Sum256([]byte(s))) {
				t.Fatalf("key of %q is not its SHA-256", s)
			}
			if strict.EncodeToString(b) != s {
				t.Fatalf("%q is not canonical", s)
			}
		} else if k != (Key{}) {
			t.Fatalf("rejected %q with a non-zero key", s)
		}
	})
}

// TestVerifiedIDsRemembered: an id that verified is recognised again (with
// its key) without verifying; a made-up id, the empty slot's zero bytes, or
// an id differing in one byte from a remembered one is not.
func TestVerifiedIDsRemembered(t *testing.T) {
	ids := RandomIDs()
	if k, ok := ids.Parse(strings.Repeat("A", 43)); ok || k != (Key{}) {
		t.Fatal("the all-zero id parsed before any was remembered")
	}
	id, k := ids.New()
	if got, ok := ids.Parse(id); !ok || got != k {
		t.Fatal("Parse")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(id)
	if got, ok := ids.recall((*[32]byte)(raw)); !ok || got != k {
		t.Fatal("a verified id is not remembered")
	}
	if got, ok := ids.Parse(id); !ok || got != k {
		t.Fatal("Parse of a remembered id")
	}
	// Same slot (first 8 bytes), another tag: not this id.
	forged := bytes.Clone(raw)
	forged[31] ^= 1
	if _, ok := ids.Parse(base64.RawURLEncoding.EncodeToString(forged)); ok {
		t.Fatal("an id differing from a remembered one in its tag parsed")
	}
	if _, ok := ids.Parse(strings.Repeat("A", 43)); ok {
		t.Fatal("the all-zero id parsed")
	}
	// A remembered id of one IDs is nothing to another.
	if _, ok := RandomIDs().Parse(id); ok {
		t.Fatal("an id of another key parsed")
	}
}

// TestVerifiedIDsConcurrent reads and replaces remembered ids from many
// goroutines (run under -race): every answer is right.
func TestVerifiedIDsConcurrent(t *testing.T) {
	x := RandomIDs()
	type pair struct {
		id string
		k  Key
	}
	var all []pair
	for range 64 {
		id, k := x.New()
		all = append(all, pair{id, k})
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				p := all[(g*7+i)%len(all)]
				if k, ok := x.Parse(p.id); !ok || k != p.k {
					t.Errorf("Parse of a valid id = %v, %v", k, ok)
					return
				}
			}
		})
	}
	wg.Wait()
}
