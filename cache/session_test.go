package cache

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

func TestNewSessionID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id, k := NewSessionID()
		if len(id) != SessionIDLen || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
		got, ok := ParseSessionID(id)
		if !ok || got != k || k != Key(sha256.Sum256([]byte(id))) {
			t.Fatalf("ParseSessionID(NewSessionID()) = %v, %v", got, ok)
		}
	}
}

func TestParseSessionIDRejects(t *testing.T) {
	id, _ := NewSessionID()
	for name, s := range map[string]string{
		"empty":         "",
		"short":         id[:42],
		"long":          id + "A",
		"padded":        id[:42] + "=",
		"std alphabet":  id[:42] + "+",
		"space":         " " + id[1:],
		"non-canonical": id[:42] + "B", // 'B' = 1: a padding bit set
		"non-ascii":     id[:41] + "é",
	} {
		if _, ok := ParseSessionID(s); ok {
			t.Errorf("%s: ParseSessionID(%q) accepted", name, s)
		}
	}
}

func TestParseSessionIDDoesNotAllocate(t *testing.T) {
	id, _ := NewSessionID()
	if n := testing.AllocsPerRun(100, func() { ParseSessionID(id) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func TestKeyTag(t *testing.T) {
	var k Key
	k[0], k[3], k[4] = 0xab, 0x01, 0xff
	if k.Tag() != "ab000001" || k.String() != "ab000001" {
		t.Fatalf("Tag = %q", k.Tag())
	}
}

// FuzzParseSessionID checks ParseSessionID against the definition: exactly
// the canonical unpadded base64url encodings of 32 bytes, keyed by SHA-256.
func FuzzParseSessionID(f *testing.F) {
	id, _ := NewSessionID()
	for _, s := range []string{
		id, id[:42], id + "A", id[:42] + "B", id[:42] + "=", strings.Repeat("A", 43),
		strings.Repeat("_", 42) + "w", strings.Repeat("-", 43), "", "Bearer " + id,
		strings.Repeat("A", 42) + "é",
	} {
		f.Add(s)
	}
	strict := base64.RawURLEncoding.Strict()
	f.Fuzz(func(t *testing.T, s string) {
		k, ok := ParseSessionID(s)
		b, err := strict.DecodeString(s)
		want := err == nil && len(b) == 32 && !strings.ContainsAny(s, "\r\n")
		if ok != want {
			t.Fatalf("ParseSessionID(%q) ok = %v, want %v", s, ok, want)
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
