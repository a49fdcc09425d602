package cache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// slabEntry makes the entry of session i: its key (random), customer (one
// of 7919), tokens and times.
func slabEntry(i int) *entry {
	var k Key
	r := rand.New(rand.NewPCG(uint64(i), 7))
	for j := range k {
		k[j] = byte(r.Uint32())
	}
	e := &entry{key: k, created: int64(i)}
	e.state.Store(&tokenState{
		grant: Grant{
			CustomerID:        fmt.Sprintf("2188%016d", i%7919),
			AccessToken:       rebell.NewSecret(fmt.Sprintf("%064d", i)),
			AccessTokenExpiry: time.Unix(0, int64(i)+1),
			SessionExpiry:     time.Unix(0, int64(i)+2),
		},
		refreshToken: rebell.NewSecret(fmt.Sprintf("r%0*d", 1+i%90, i)), // lengths vary: records of several sizes
		version:      uint64(i),
		lifetime:     3,
	})
	e.lastUsed.Store(int64(i) + 4)
	e.until.Store(int64(i) + 5)
	e.checked.Store(int64(i) + 6)
	e.shortened.Store(i%2 == 0)
	e.restored.Store(i%3 == 0)
	return e
}

// sameSession reports how got, made from a slot, differs from want.
func sameSession(got, want *entry) error {
	g, w := got.state.Load(), want.state.Load()
	switch {
	case got.key != want.key || got.gen != want.gen || got.created != want.created:
		return fmt.Errorf("key/gen/created %x/%d/%d, want %x/%d/%d", got.key[:4], got.gen, got.created, want.key[:4], want.gen, want.created)
	case g.grant.CustomerID != w.grant.CustomerID || !g.grant.AccessToken.Equal(w.grant.AccessToken) || !g.refreshToken.Equal(w.refreshToken):
		return errors.New("text differs")
	case !g.grant.AccessTokenExpiry.Equal(w.grant.AccessTokenExpiry) || !g.grant.SessionExpiry.Equal(w.grant.SessionExpiry):
		return errors.New("expiries differ")
	case g.version != w.version || g.lifetime != w.lifetime:
		return errors.New("version or lifetime differs")
	case got.lastUsed.Load() != want.lastUsed.Load() || got.until.Load() != want.until.Load() || got.checked.Load() != want.checked.Load():
		return errors.New("times differ")
	case got.shortened.Load() != want.shortened.Load() || got.restored.Load() != want.restored.Load():
		return errors.New("flags differ")
	}
	return nil
}

// TestSlabAgreesWithAMap: random puts, rewrites and removes, checked against
// a map, including keys whose index hash collides.
func TestSlabAgreesWithAMap(t *testing.T) {
	s := newSlab()
	want := map[Key]*entry{}
	r := rand.New(rand.NewPCG(1, 2))
	var keys []Key
	for step := range 50_000 {
		switch op := r.IntN(12); {
		case op < 6:
			e := slabEntry(step)
			if step%5 == 0 && len(keys) > 0 { // same first 4 bytes as another: same home
				copy(e.key[:4], keys[r.IntN(len(keys))][:4])
			}
			if _, err := s.put(e); err != nil {
				t.Fatal(err)
			}
			if _, err := s.put(e); !errors.Is(err, errOccupied) {
				t.Fatalf("second put: %v", err)
			}
			want[e.key] = e
			keys = append(keys, e.key)
		case op < 8 && len(keys) > 0:
			j := r.IntN(len(keys))
			k := keys[j]
			keys[j] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
			i, ok := s.find(&k)
			if !ok {
				t.Fatal("a held session was not found")
			}
			s.remove(i)
			if _, ok := s.find(&k); ok {
				t.Fatal("a removed session was found")
			}
			delete(want, k)
		case op < 9 && len(keys) > 0: // a refresh, then a freeze: the slot is rewritten
			k := keys[r.IntN(len(keys))]
			e := want[k]
			n := slabEntry(step)
			st := *n.state.Load()
			st.grant.CustomerID = e.state.Load().grant.CustomerID // a refresh never changes it
			e.state.Store(&st)
			e.lastUsed.Store(int64(step))
			i, _ := s.find(&k)
			s.write(s.slot(i), e)
		default:
			if len(keys) == 0 {
				continue
			}
			k := keys[r.IntN(len(keys))]
			i, ok := s.find(&k)
			if !ok {
				t.Fatal("a held session was not found")
			}
			if err := sameSession(s.entry(i), want[k]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if s.n != len(want) {
		t.Fatalf("n %d, want %d", s.n, len(want))
	}
	byCustomer := map[string]int{}
	for k, e := range want {
		i, ok := s.find(&k)
		if !ok {
			t.Fatal("a held session was not found")
		}
		if err := sameSession(s.entry(i), e); err != nil {
			t.Fatal(err)
		}
		byCustomer[e.state.Load().grant.CustomerID]++
	}
	for c, n := range byCustomer {
		is := s.sessionsOf(c)
		if len(is) != n {
			t.Fatalf("customer %s: %d sessions, want %d", c, len(is), n)
		}
		for _, i := range is {
			if got := string(s.customer(i)); got != c {
				t.Fatalf("customer %s lists a session of %s", c, got)
			}
		}
	}
	if is := s.sessionsOf("nobody"); len(is) != 0 {
		t.Fatalf("an unknown customer has %d sessions", len(is))
	}
	var absent Key
	absent[0] = 1
	if _, ok := s.find(&absent); ok {
		t.Fatal("an absent key was found")
	}
}

// TestSlabClearsRemovedText: a removed session's tokens do not stay in the
// arena.
func TestSlabClearsRemovedText(t *testing.T) {
	s := newSlab()
	e := slabEntry(1)
	i, err := s.put(e)
	if err != nil {
		t.Fatal(err)
	}
	off, n := s.slot(i).text, textClass(int(s.slot(i).custLen)+int(s.slot(i).accLen)+int(s.slot(i).refLen))
	s.remove(i)
	for _, b := range s.text(off, n) {
		if b != 0 {
			t.Fatal("a removed session's text is still in the arena")
		}
	}
}

func TestSlabRefusesLongText(t *testing.T) {
	e := slabEntry(1)
	st := *e.state.Load()
	st.grant.AccessToken = rebell.NewSecret(string(make([]byte, 256)))
	e.state.Store(&st)
	if _, err := newSlab().put(e); !errors.Is(err, errSlabText) {
		t.Fatalf("put: %v", err)
	}
}

// BenchmarkSlabPerSession reports what the slab alone takes per session at
// 1M (slots, text, index, customer index), and the mark CPU of a
// collection with it resident (BenchmarkScale's metric).
func BenchmarkSlabPerSession(b *testing.B) {
	const n = 1_000_000
	es := make([]*entry, 1000)
	for i := range es {
		es[i] = slabEntry(i)
		st := *es[i].state.Load()
		st.refreshToken = rebell.NewSecret(fmt.Sprintf("r%063d", i))
		es[i].state.Store(&st)
	}
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		s := newSlab()
		for i := range n {
			e := es[i%len(es)]
			// Keys are uniform (SHA-256): vary the bytes the index hashes.
			e.key[0], e.key[1], e.key[2], e.key[3] = byte(i*0x9E37), byte(i>>5), byte(i>>13), byte(i>>21)
			st := *e.state.Load()
			st.grant.CustomerID = fmt.Sprintf("2188%016d", i) // one session per customer, the usual case
			e.state.Store(&st)
			if _, err := s.put(e); err != nil {
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
