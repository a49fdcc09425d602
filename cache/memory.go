package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// errDropped reports a write that ristretto dropped (its set buffer was full)
// or did not admit (its policy rejected the item).
var errDropped = errors.New("memory tier did not keep the session")

// errClosed reports use of a closed tier.
var errClosed = errors.New("cache closed")

// memoryTier is the per-instance hot tier: a ristretto cache of *entry keyed by
// the first 8 bytes of the session's Key (an integer key costs no allocation
// per lookup; the full Key lives in the entry and is checked after each Get).
//
// It is the seam between the session logic and storage: Cache calls only get,
// insert, update and remove, so a shared store can be slotted in behind it
// later without touching the freshness rules.
//
// ristretto's Close is not safe concurrently with Get, Set, Del or Wait (it
// closes the channels they send on). Every call into ristretto therefore passes
// through a gate that close drains first.
type memoryTier struct {
	rc   *ristretto.Cache[uint64, *entry]
	gate gate
	// cost is what one session costs against MaxCost; always 1 outside
	// tests, which raise it above MaxCost to make admission reject a write.
	cost int64
}

// memoryHooks are called by ristretto's processing goroutine when it drops a
// session on its own: evicted for room, expired (its TTL, the record lifetime,
// passed), or not admitted. They must not call back into ristretto.
type memoryHooks struct {
	evicted  func(e *entry, expired bool)
	rejected func(e *entry)
}

func newMemoryTier(maxSessions int64, hooks memoryHooks) (*memoryTier, error) {
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters:        10 * maxSessions,
		MaxCost:            maxSessions,
		BufferItems:        64,
		IgnoreInternalCost: true,
		KeyToHash:          func(k uint64) (uint64, uint64) { return k, 0 },
		// OnExit is not used: ristretto also calls it with the previous value
		// when a key is updated (our refresh re-Set of the same entry), so it
		// cannot tell a session leaving from a session staying.
		OnEvict: func(it *ristretto.Item[*entry]) {
			if it.Value != nil {
				// Victims of the eviction policy carry no expiration; items
				// dropped by the TTL sweep carry theirs.
				hooks.evicted(it.Value, !it.Expiration.IsZero())
			}
		},
		OnReject: func(it *ristretto.Item[*entry]) {
			if it.Value != nil {
				hooks.rejected(it.Value)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cache: ristretto: %w", err)
	}
	return &memoryTier{rc: rc, cost: 1}, nil
}

// hashKey is the ristretto key of a session: the first 8 bytes of its Key,
// which is already a uniformly distributed SHA-256.
func hashKey(k *Key) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// get returns the live or ended entry stored for k, or nil. It does not
// allocate.
func (m *memoryTier) get(k *Key) *entry {
	s := k[0]
	if !m.gate.enter(s) {
		return nil
	}
	e, ok := m.rc.Get(hashKey(k))
	m.gate.leave(s)
	if !ok || e == nil || e.key != *k {
		return nil
	}
	return e
}

// occupied reports whether some session is stored under k's ristretto key.
func (m *memoryTier) occupied(k *Key) bool {
	s := k[0]
	if !m.gate.enter(s) {
		return false
	}
	_, ok := m.rc.Get(hashKey(k))
	m.gate.leave(s)
	return ok
}

// insert stores a new entry for ttl and confirms it: ristretto's Set is
// asynchronous and may drop or reject the item, so insert waits for the write
// to be applied and reads it back. It returns errDropped if the entry is not
// there, and errClosed after close.
func (m *memoryTier) insert(e *entry, ttl time.Duration) error {
	s := e.key[0]
	if !m.gate.enter(s) {
		return errClosed
	}
	defer m.gate.leave(s)
	h := hashKey(&e.key)
	if !m.rc.SetWithTTL(h, e, m.cost, ttl) {
		return errDropped
	}
	m.rc.Wait()
	if got, ok := m.rc.Get(h); !ok || got != e {
		return errDropped
	}
	return nil
}

// update re-stores an entry that is already held, with a new ttl (after a
// refresh moved the refresh token's expiry). ristretto applies an update of
// an existing key synchronously. It reports false if the entry was no longer
// held when update looked (evicted or removed meanwhile); it never re-adds
// such an entry on purpose, but a concurrent eviction can race with the
// write, so callers re-check the entry's state afterwards.
func (m *memoryTier) update(e *entry, ttl time.Duration) bool {
	s := e.key[0]
	if !m.gate.enter(s) {
		return false
	}
	defer m.gate.leave(s)
	h := hashKey(&e.key)
	if got, ok := m.rc.Get(h); !ok || got != e {
		return false
	}
	return m.rc.SetWithTTL(h, e, m.cost, ttl)
}

// remove deletes e if it is the entry stored under its key.
func (m *memoryTier) remove(e *entry) {
	s := e.key[0]
	if !m.gate.enter(s) {
		return
	}
	defer m.gate.leave(s)
	h := hashKey(&e.key)
	if got, ok := m.rc.Get(h); ok && got == e {
		m.rc.Del(h)
	}
}

// closed reports whether close has begun.
func (m *memoryTier) closed() bool { return m.gate.closed.Load() }

// close waits for calls in flight to leave ristretto, then closes it.
// ristretto's Close empties the cache and reports every entry through the
// eviction hook. Safe to call more than once.
func (m *memoryTier) close() {
	if m.gate.close() {
		m.rc.Close()
	}
}

// gate lets callers into ristretto until it is closed, then waits for those
// inside to leave. Its in-flight counters are sharded by the session key's
// first byte, as ristretto shards its own maps, so requests for different
// sessions do not write a shared cache line.
type gate struct {
	closed atomic.Bool
	shards [256]gateShard
}

type gateShard struct {
	n atomic.Int64
	_ [56]byte // one cache line per shard
}

func (g *gate) enter(s byte) bool {
	sh := &g.shards[s]
	sh.n.Add(1)
	// Sequentially consistent atomics: either close sees this increment and
	// waits for it, or this load sees closed.
	if g.closed.Load() {
		sh.n.Add(-1)
		return false
	}
	return true
}

func (g *gate) leave(s byte) { g.shards[s].n.Add(-1) }

// close shuts the gate and waits until nobody is inside. It reports whether
// this call closed it.
func (g *gate) close() bool {
	if !g.closed.CompareAndSwap(false, true) {
		return false
	}
	for i := range g.shards {
		for g.shards[i].n.Load() != 0 {
			runtime.Gosched()
		}
	}
	return true
}
