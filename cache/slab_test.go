package cache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

func slabData(i int) hotData {
	var k Key
	r := rand.New(rand.NewPCG(uint64(i), 7))
	for j := range k {
		k[j] = byte(r.Uint32())
	}
	return hotData{
		key:          k,
		customer:     fmt.Sprintf("2188%016d", i%7919),
		access:       fmt.Sprintf("%064d", i),
		refresh:      fmt.Sprintf("r%063d", i),
		accessExpiry: int64(i) + 1, sessionExp: int64(i) + 2, lifetime: 3, created: int64(i), version: uint64(i),
	}
}

// TestSlabAgreesWithAMap: random puts and removes, checked against a map,
// including keys whose index hash collides.
func TestSlabAgreesWithAMap(t *testing.T) {
	s := newSlab()
	want := map[Key]hotData{}
	r := rand.New(rand.NewPCG(1, 2))
	var keys []Key
	for step := range 50_000 {
		switch op := r.IntN(10); {
		case op < 6:
			d := slabData(step)
			if step%5 == 0 && len(keys) > 0 { // same first 4 bytes as another: same home
				copy(d.key[:4], keys[r.IntN(len(keys))][:4])
			}
			if _, err := s.put(&d); err != nil {
				t.Fatal(err)
			}
			if _, err := s.put(&d); !errors.Is(err, errOccupied) {
				t.Fatalf("second put: %v", err)
			}
			want[d.key] = d
			keys = append(keys, d.key)
		case op < 9 && len(keys) > 0:
			i := r.IntN(len(keys))
			k := keys[i]
			keys[i] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
			if !s.remove(&k) {
				t.Fatal("remove of a held session failed")
			}
			if s.remove(&k) {
				t.Fatal("second remove succeeded")
			}
			delete(want, k)
		default:
			if len(keys) == 0 {
				continue
			}
			k := keys[r.IntN(len(keys))]
			got, _, ok := s.get(&k)
			if !ok || got != want[k] {
				t.Fatalf("get = %+v, %v; want %+v", got, ok, want[k])
			}
		}
	}
	if s.len() != len(want) {
		t.Fatalf("len %d, want %d", s.len(), len(want))
	}
	byCustomer := map[string]int{}
	for k, d := range want {
		if got, _, ok := s.get(&k); !ok || got != d {
			t.Fatalf("get = %+v, %v; want %+v", got, ok, d)
		}
		byCustomer[d.customer]++
	}
	for c, n := range byCustomer {
		ks := s.sessionsOf(c)
		if len(ks) != n {
			t.Fatalf("customer %s: %d sessions, want %d", c, len(ks), n)
		}
		for _, k := range ks {
			if want[k].customer != c {
				t.Fatalf("customer %s lists a session of %s", c, want[k].customer)
			}
		}
	}
	if ks := s.sessionsOf("nobody"); len(ks) != 0 {
		t.Fatalf("an unknown customer has %d sessions", len(ks))
	}
	var absent Key
	absent[0] = 1
	if _, _, ok := s.get(&absent); ok {
		t.Fatal("an absent key was found")
	}
}

func TestSlabRefusesLongText(t *testing.T) {
	d := slabData(1)
	d.access = string(make([]byte, 256))
	if _, err := newSlab().put(&d); !errors.Is(err, errSlabText) {
		t.Fatalf("put: %v", err)
	}
}

// BenchmarkSlabPerSession reports what the pointer-free storage takes per
// session at 1M (slots, text, index), and the mark CPU of a collection
// with it resident (BenchmarkScale's metric): the measure of what the compact tier would hold
// instead of entries, token states and their strings.
func BenchmarkSlabPerSession(b *testing.B) {
	const n = 1_000_000
	ds := make([]hotData, 1000)
	for i := range ds {
		ds[i] = slabData(i)
	}
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		s := newSlab()
		for i := range n {
			d := ds[i%len(ds)]
			// Keys are uniform (SHA-256): vary the bytes the index hashes.
			d.key[0], d.key[1], d.key[2], d.key[3] = byte(i*0x9E37), byte(i>>5), byte(i>>13), byte(i>>21)
			d.customer = fmt.Sprintf("2188%016d", i) // one session per customer, the usual case
			if _, err := s.put(&d); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		g0 := readGCMetrics()
		runtime.GC()
		g1 := readGCMetrics()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/session")
		b.ReportMetric(1e3*(g1.mark-g0.mark), "mark-cpu-ms/cycle")
		runtime.KeepAlive(s)
		b.StartTimer()
	}
}
