package identity

import "testing"

// BenchmarkAssertionReused is the cost of a request whose session's
// assertion is kept: a clock read and a few comparisons.
func BenchmarkAssertionReused(b *testing.B) {
	k, _ := newEd25519(b)
	s, _ := New(Config{Key: k})
	m := &grantMemo{}
	var sk [32]byte
	if _, err := s.Assertion(m, sk, "2188000000000001", "api.example"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = s.Assertion(m, sk, "2188000000000001", "api.example")
	}
}

// BenchmarkAssertionSigned is the cost of signing one (once per session and
// half ttl), for each key type.
func BenchmarkAssertionSigned(b *testing.B) {
	for _, kind := range []string{"Ed25519", "P-256"} {
		b.Run(kind, func(b *testing.B) {
			k, _ := newEd25519(b)
			if kind == "P-256" {
				k, _ = newP256(b)
			}
			s, _ := New(Config{Key: k})
			var sk [32]byte
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Assertion(&grantMemo{}, sk, "2188000000000001", "api.example"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
