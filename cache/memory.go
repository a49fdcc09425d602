package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// errClosed reports use of a closed tier.
var errClosed = errors.New("cache closed")

// errOccupied reports a session held under the key of a new one already.
var errOccupied = errors.New("a session with this key is held already")

// memoryTier holds the sessions of this instance with a store's semantics:
// a session it accepts stays until it is removed, or until the tier is full
// and it is the one a request used least recently (approximated by sampling,
// as Redis does), or until its record lifetime (R + grace) passes.
//
// Two structures make it up. The session index is the record of what the
// tier holds, and never refuses a session. In front of it, a ristretto cache
// of *entry keyed by the first 8 bytes of the session's Key is the hot
// lookup (an integer key costs no allocation per lookup; the full Key lives
// in the entry and is checked after each Get). ristretto is sized above
// the tier's capacity, so its admission policy is not normally consulted;
// when it still refuses, drops or evicts a write (its set buffer is full
// under contention, or its accounting lags), the session is found in the
// index and put back into ristretto: nothing ristretto does ends a session.
//
// ristretto's Close is not safe concurrently with Get, Set, Del or Wait (it
// closes the channels they send on). Every call into ristretto therefore
// passes through a gate that close drains first.
type memoryTier struct {
	rc   *ristretto.Cache[uint64, *entry]
	gate gate
	idx  sessionIndex
	max  int64
	// roomMu serialises making room: reserved is the room promised to logins
	// whose exchange is in flight.
	roomMu   sync.Mutex
	reserved int64
	hooks    memoryHooks

	// newest is the highest last use (Unix ns) of a session the tier took
	// in; requests read it on every use (entry.touch), logins write it, so it
	// has a cache line of its own.
	_      [64]byte
	newest atomic.Int64
	_      [56]byte
}

// memoryHooks tell the Cache what the tier did on its own.
type memoryHooks struct {
	// evicted is called, with no lock held, for a session removed to make
	// room. It may call the tier.
	evicted func(ctx context.Context, e *entry)
	// expired is called by ristretto's processing goroutine for a session
	// whose record lifetime passed. It must not call into ristretto (the
	// index is fine).
	expired func(e *entry)
	// changed is called with the number of sessions held after it changes.
	changed func(n int)
}

// hotCounters is the size of ristretto's admission sketch. The sketch only
// matters when ristretto is full, which the tier avoids, so it stays small
// whatever MaxSessions is: memory grows with the sessions held, not with
// the configured capacity.
const hotCounters = 1 << 16

func newMemoryTier(maxSessions int64, hooks memoryHooks) (*memoryTier, error) {
	m := &memoryTier{max: maxSessions, hooks: hooks}
	m.idx.changed = hooks.changed
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters:        min(10*maxSessions, hotCounters),
		MaxCost:            maxSessions + maxSessions/4 + 64,
		BufferItems:        64,
		IgnoreInternalCost: true,
		KeyToHash:          func(k uint64) (uint64, uint64) { return k, 0 },
		// OnExit is not used: ristretto also calls it with the previous value
		// when a key is updated (our refresh re-Set of the same entry), so it
		// cannot tell a session leaving from a session staying. OnReject is
		// not used either: the index holds what ristretto refuses.
		OnEvict: func(it *ristretto.Item[*entry]) {
			// Victims of the eviction policy carry no expiration and stay in
			// the index; items dropped by the TTL sweep carry theirs.
			if it.Value != nil && !it.Expiration.IsZero() {
				hooks.expired(it.Value)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cache: ristretto: %w", err)
	}
	m.rc = rc
	return m, nil
}

// hashKey is the ristretto key of a session: the first 8 bytes of its Key,
// which is already a uniformly distributed SHA-256.
func hashKey(k *Key) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// get returns the live or ended entry stored for k, or nil. It does not
// allocate when ristretto holds the session.
func (m *memoryTier) get(k *Key) *entry {
	s := k[0]
	if !m.gate.enter(s) {
		return nil
	}
	defer m.gate.leave(s)
	if e, ok := m.rc.Get(hashKey(k)); ok && e != nil && e.key == *k {
		return e
	}
	e := m.idx.get(k)
	if e != nil {
		m.hot(e) // ristretto dropped or refused it: put it back
	}
	return e
}

// hot (re)writes e into ristretto if the index holds it, under the index's
// read lock so that it cannot race with e's removal. It reports whether the
// index holds e. The caller is inside the gate.
func (m *memoryTier) hot(e *entry) bool {
	ttl := time.Until(time.Unix(0, e.until.Load()))
	return m.idx.holds(e, func() {
		if ttl > 0 {
			m.rc.SetWithTTL(hashKey(&e.key), e, 1, ttl)
		}
	})
}

// room is space promised in the tier for a session about to be created.
type room struct {
	m    *memoryTier
	held bool
}

// reserve secures room for one session, ending the least recently used
// sessions if the tier is full, so that a login whose exchange succeeds is
// sure to be kept. Release what insert does not consume. It fails only
// after close.
func (m *memoryTier) reserve(ctx context.Context) (*room, error) {
	if m.closed() {
		return nil, errClosed
	}
	m.roomMu.Lock()
	victims := m.makeRoom()
	m.reserved++
	m.roomMu.Unlock()
	m.report(ctx, victims)
	return &room{m: m, held: true}, nil
}

// release gives back room not used. It is safe to call more than once.
func (r *room) release() {
	if r == nil || !r.held {
		return
	}
	r.m.roomMu.Lock()
	r.m.reserved--
	r.held = false
	r.m.roomMu.Unlock()
}

// makeRoom removes sessions until one more fits beside those held and those
// promised, and returns them. roomMu is held. When every place is promised
// to exchanges in flight, the tier holds one more for a while.
func (m *memoryTier) makeRoom() []*entry {
	var victims []*entry
	for int64(m.idx.len())+m.reserved >= m.max {
		v := m.idx.victim()
		if v == nil {
			break
		}
		if m.idx.remove(v) {
			m.drop(v)
			victims = append(victims, v)
		}
	}
	return victims
}

// report hands the sessions removed for room to the evicted hook, with the
// context of the call that needed the room (a login's request).
func (m *memoryTier) report(ctx context.Context, victims []*entry) {
	for _, v := range victims {
		m.hooks.evicted(ctx, v)
	}
}

// insert holds a new entry for ttl, using r (which may be nil) for room or
// making room itself. It fails with errClosed after close, and with
// errOccupied when a session is held under e's key already.
func (m *memoryTier) insert(ctx context.Context, e *entry, ttl time.Duration, r *room) error {
	s := e.key[0]
	if !m.gate.enter(s) {
		return errClosed
	}
	defer m.gate.leave(s)
	e.until.Store(time.Now().Add(ttl).UnixNano())
	m.roomMu.Lock()
	if used := e.lastUsed.Load(); used > m.newest.Load() {
		m.newest.Store(used) // under roomMu: never moves back
	}
	if r != nil && r.held {
		m.reserved--
		r.held = false
	}
	victims := m.makeRoom()
	added := m.idx.add(e)
	m.roomMu.Unlock()
	m.report(ctx, victims)
	if !added {
		return errOccupied
	}
	// ristretto applies a new key's write asynchronously: wait for it, so
	// the session's first requests find it in the hot lookup (a write it
	// dropped is found in the index all the same).
	m.hot(e)
	m.rc.Wait()
	return nil
}

// update moves the memory lifetime of an entry held to ttl from now (after
// a refresh moved the refresh token's expiry). It reports false if the
// entry was no longer held (removed meanwhile); it never re-adds such an
// entry.
func (m *memoryTier) update(e *entry, ttl time.Duration) bool {
	s := e.key[0]
	if !m.gate.enter(s) {
		return false
	}
	defer m.gate.leave(s)
	e.until.Store(time.Now().Add(ttl).UnixNano())
	return m.hot(e)
}

// remove deletes e if it is the entry held under its key, and reports
// whether it was.
func (m *memoryTier) remove(e *entry) bool {
	if !m.idx.remove(e) {
		return false
	}
	m.drop(e)
	return true
}

// drop deletes e from ristretto if it is the entry stored there. It is
// called after e left the index, outside the index's locks: a Set that
// raced with the removal was made under the index's lock before it, and
// ristretto applies a Set and a later Del in order.
func (m *memoryTier) drop(e *entry) {
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

// touch records a use of e at now (Unix ns); see entry.touch.
func (m *memoryTier) touch(e *entry, now int64) { e.touch(now, m.newest.Load()) }

// len is the number of sessions held.
func (m *memoryTier) len() int { return m.idx.len() }

// closed reports whether close has begun.
func (m *memoryTier) closed() bool { return m.gate.closed.Load() }

// close waits for calls in flight to leave ristretto, closes it and empties
// the index. ristretto's Close reports every entry through the eviction
// hook. Safe to call more than once.
func (m *memoryTier) close() {
	if m.gate.close() {
		m.rc.Close()
		m.idx.reset()
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
