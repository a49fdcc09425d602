package cache

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
)

// indexShards is the number of shards of the session index. Sessions are
// spread over them by the first byte of their Key (a uniformly distributed
// SHA-256).
const indexShards = 64

// sessionIndex holds every session in memory: it is the memory tier's record
// of what it keeps, while ristretto in front of it is only the hot lookup
// (ristretto may drop or refuse a write; the index never does). It also maps
// each customer id to its sessions, so EndCustomer can find them, and it
// picks the sessions to end when the tier is full.
//
// Its maps grow with the sessions held, never ahead of them.
type sessionIndex struct {
	shards [indexShards]indexShard
	n      atomic.Int64

	// custMu serialises adding and removing sessions, and guards
	// customers (the shard locks let readers in meanwhile). Most customers hold one session, so a value
	// is a slice of entry pointers (8 bytes per session) rather than a set;
	// removal is a linear scan of that customer's sessions.
	custMu    sync.Mutex
	customers map[string][]*entry
	// changed, if set, is called with the new count after every change, with
	// custMu held so that counts arrive in order.
	changed func(n int)
}

type indexShard struct {
	mu sync.RWMutex
	m  map[Key]*entry // nil until the first session of the shard
	_  [40]byte       // keep shards on separate cache lines
}

func (x *sessionIndex) shard(k *Key) *indexShard { return &x.shards[k[0]%indexShards] }

// get returns the entry held under k, or nil.
func (x *sessionIndex) get(k *Key) *entry {
	sh := x.shard(k)
	sh.mu.RLock()
	e := sh.m[*k]
	sh.mu.RUnlock()
	return e
}

// holds reports, under the shard's read lock, whether e is the entry held
// under its key, and runs f while it is so: f cannot race with e's removal.
func (x *sessionIndex) holds(e *entry, f func()) bool {
	sh := x.shard(&e.key)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if sh.m[e.key] != e {
		return false
	}
	f()
	return true
}

// add holds e. It reports false, holding nothing, when a session is held
// under e's key already.
func (x *sessionIndex) add(e *entry) bool {
	x.custMu.Lock()
	defer x.custMu.Unlock()
	sh := x.shard(&e.key)
	sh.mu.Lock()
	if _, ok := sh.m[e.key]; ok {
		sh.mu.Unlock()
		return false
	}
	if sh.m == nil {
		sh.m = make(map[Key]*entry)
	}
	sh.m[e.key] = e
	sh.mu.Unlock()

	customer := e.state.Load().grant.CustomerID
	if x.customers == nil {
		x.customers = make(map[string][]*entry)
	}
	x.customers[customer] = append(x.customers[customer], e)
	x.count(1)
	return true
}

// remove forgets e if it is the entry held under its key, and reports
// whether it was.
func (x *sessionIndex) remove(e *entry) bool {
	x.custMu.Lock()
	defer x.custMu.Unlock()
	sh := x.shard(&e.key)
	sh.mu.Lock()
	if sh.m[e.key] != e {
		sh.mu.Unlock()
		return false
	}
	delete(sh.m, e.key)
	sh.mu.Unlock()

	// A customer id never changes over a session's life (a refresh naming
	// another customer is refused), so the state's is the one indexed.
	customer := e.state.Load().grant.CustomerID
	es := x.customers[customer]
	if i := slices.Index(es, e); i >= 0 {
		last := len(es) - 1
		es[i] = es[last]
		es[last] = nil
		if last == 0 {
			delete(x.customers, customer)
		} else if es = es[:last]; len(es) < cap(es)/4 {
			x.customers[customer] = slices.Clone(es) // give back the room of a mass logout
		} else {
			x.customers[customer] = es
		}
	}
	x.count(-1)
	return true
}

// sessionsOf returns a copy of the customer's entries.
func (x *sessionIndex) sessionsOf(customer string) []*entry {
	x.custMu.Lock()
	defer x.custMu.Unlock()
	return slices.Clone(x.customers[customer])
}

// all returns every entry held.
func (x *sessionIndex) all() []*entry {
	es := make([]*entry, 0, x.n.Load())
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.RLock()
		for _, e := range sh.m {
			es = append(es, e)
		}
		sh.mu.RUnlock()
	}
	return es
}

func (x *sessionIndex) len() int { return int(x.n.Load()) }

func (x *sessionIndex) count(delta int64) {
	n := x.n.Add(delta)
	if x.changed != nil {
		x.changed(int(n))
	}
}

// victimSamples is how many sessions an eviction compares, as Redis does
// for its approximated LRU: the one unused longest among them is ended.
const victimSamples = 8

// victim picks the session to end for room: among a few sessions sampled
// at random, the one a request used least recently, never one whose login
// is handing it out. It returns nil when there is none.
func (x *sessionIndex) victim() *entry {
	var (
		best     *entry
		bestUsed int64
		sampled  int
	)
	consider := func(e *entry) {
		if e.pinned.Load() {
			return // its login is handing it out
		}
		if used := e.lastUsed.Load(); best == nil || used < bestUsed {
			best, bestUsed = e, used
		}
		sampled++
	}
	// Go starts each map iteration at a random place, so the first entries
	// of a range over a shard are a random sample of it. Shards are visited
	// from a random one on, until enough sessions are sampled.
	start := rand.IntN(indexShards)
	for i := 0; i < indexShards && sampled < victimSamples; i++ {
		sh := &x.shards[(start+i)%indexShards]
		sh.mu.RLock()
		taken := 0
		for _, e := range sh.m {
			consider(e)
			if taken++; taken == 4 || sampled == victimSamples {
				break
			}
		}
		sh.mu.RUnlock()
	}
	return best
}

// reset forgets every session, as Close empties the tier.
func (x *sessionIndex) reset() {
	x.custMu.Lock()
	defer x.custMu.Unlock()
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		sh.m = nil
		sh.mu.Unlock()
	}
	x.customers = nil
	if n := x.n.Load(); n != 0 {
		x.count(-n)
	}
}
