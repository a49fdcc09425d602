package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
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
// Three structures make it up (docs/design.md, "The memory tier"):
//
//   - the slab (slab.go) holds every session, in pointer-free slots: it is
//     the record of what the tier holds, never refuses a session, and costs
//     the GC next to nothing;
//   - the hot table holds an entry for each session in use: its tokens as a
//     Grant a request can act with, and what refreshes it. A session leaves
//     it (its entry is frozen into its slot) when more than hotMax are hot
//     and it is the one used least recently among a few sampled; its next
//     use makes a new entry from the slot (a thaw);
//   - in front, a ristretto cache of hot entries keyed by the first 8 bytes
//     of the session's Key is the lookup a request makes (an integer key
//     costs no allocation per lookup; the full Key lives in the entry and is
//     checked after each Get). ristretto is sized above hotMax, so its
//     admission policy is not normally consulted; when it still refuses,
//     drops or evicts a write, the session is found in the slab and put
//     back: nothing ristretto does ends a session. It holds no TTL: the
//     tier's sweeper removes sessions past their record lifetime.
//
// The slab and the hot table are split into shards by the last byte of the
// Key, each under its own lock, when sessions can go cold (the hot table
// is smaller than MaxSessions) and it is large enough to split: requests
// thawing sessions of different shards do not wait for each other.
//
// A frozen entry is a snapshot: whoever still holds it may read it, and may
// end its session (the slab tells sessions apart by generation), but its
// state never changes again. Refreshes and states adopted from the store go
// to the session's current entry (joinRefresh and adopt check frozen under
// the entry's lock, which freezing takes), so a session never has two
// entries that could each spend its refresh token.
//
// ristretto's Close is not safe concurrently with Get, Set, Del or Wait (it
// closes the channels they send on). Every call into ristretto therefore
// passes through a gate that close drains first.
type memoryTier struct {
	rc     *ristretto.Cache[uint64, *entry]
	gate   gate
	max    int64
	shards []tierShard
	// now is the cache's clock: a refresh failure's cooldown runs on it.
	now func() time.Time

	// n is the number of sessions held. countMu orders its changes, so
	// that the changed hook hears counts in order.
	n       atomic.Int64
	countMu sync.Mutex

	// roomMu serialises making room: reserved is the room promised to logins
	// whose exchange is in flight.
	roomMu   sync.Mutex
	reserved int64
	hooks    memoryHooks

	// stop ends the sweeper, which closes swept when it returns.
	stop  chan struct{}
	swept chan struct{}

	// newest is the highest last use (Unix ns) of a session the tier took
	// in; requests read it on every use (entry.touch), logins write it, so it
	// has a cache line of its own.
	_      [64]byte
	newest atomic.Int64
	_      [56]byte
}

// tierShard is a part of the tier: the sessions whose Key ends in the same
// byte modulo the number of shards.
type tierShard struct {
	// mu guards the slab and the hot table.
	mu  sync.RWMutex
	s   *slab
	hot []*entry // slot.hot - 1 indexes it; nil where free
	// freeHot lists the free places of hot; nHot counts the others, at
	// most hotMax but for a while.
	freeHot []uint32
	nHot    int
	hotMax  int
	_       [64]byte // keep shards' locks on separate cache lines
}

// memoryHooks tell the Cache what the tier did on its own.
type memoryHooks struct {
	// evicted is called, with no lock held, for a session removed to make
	// room. It may call the tier. A session that was not hot comes as a
	// frozen entry made for the call.
	evicted func(ctx context.Context, e *entry)
	// expired is called, with no lock held, for a session the sweeper
	// removed because its record lifetime passed. A session that was not
	// hot comes as a frozen entry made for the call.
	expired func(e *entry)
	// changed is called with the number of sessions held after it changes,
	// in order.
	changed func(n int)
	// thawed is called, with no lock held, each time a session without an
	// entry gets one.
	thawed func()
}

// hotCounters is the size of ristretto's admission sketch. The sketch only
// matters when ristretto is full, which the tier avoids, so it stays small
// whatever MaxSessions is: memory grows with the sessions held, not with
// the configured capacity.
const hotCounters = 1 << 16

// hotFloor is the hot table's size for tiers larger than it: every session
// of a tier up to hotFloor has an entry, larger tiers give one to
// max(hotFloor, MaxSessions/16) of them.
const hotFloor = 1 << 16

// hotSize is the hot table's size for a tier of maxSessions.
func hotSize(maxSessions int64) int {
	if maxSessions <= hotFloor {
		return int(maxSessions)
	}
	return int(max(hotFloor, maxSessions/16))
}

// Shards: a tier whose sessions can go cold has up to maxShards, with at
// least minShardHot hot places each.
const (
	maxShards   = 64
	minShardHot = 1024
)

// sweepEvery is how often the sweeper removes sessions past their record
// lifetime.
const sweepEvery = 10 * time.Second

func newMemoryTier(maxSessions, hotSessions int64, now func() time.Time, hooks memoryHooks) (*memoryTier, error) {
	hotMax := hotSize(maxSessions)
	if hotSessions > 0 {
		hotMax = int(min(hotSessions, maxSessions))
	}
	shards := 1
	if int64(hotMax) < maxSessions {
		for shards < maxShards && hotMax/(2*shards) >= minShardHot {
			shards *= 2
		}
	}
	m := &memoryTier{max: maxSessions, now: now, hooks: hooks, shards: make([]tierShard, shards),
		stop: make(chan struct{}), swept: make(chan struct{})}
	for i := range m.shards {
		m.shards[i].s = newSlab()
		m.shards[i].hotMax = (hotMax + shards - 1) / shards
	}
	hm := int64(hotMax)
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters:        min(10*hm, hotCounters),
		MaxCost:            hm + hm/4 + 64,
		BufferItems:        64,
		IgnoreInternalCost: true,
		KeyToHash:          func(k uint64) (uint64, uint64) { return k, 0 },
		// No OnEvict, OnExit or OnReject: what ristretto drops stays in the
		// slab and is put back on its next use.
	})
	if err != nil {
		return nil, fmt.Errorf("cache: ristretto: %w", err)
	}
	m.rc = rc
	go m.sweeper()
	return m, nil
}

// hashKey is the ristretto key of a session: the first 8 bytes of its Key,
// which is already a uniformly distributed SHA-256.
func hashKey(k *Key) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// shard returns the shard of the session held under k. The slab's index
// and ristretto hash the Key's first bytes, the gate its first: the shard
// takes its last.
func (m *memoryTier) shard(k *Key) *tierShard {
	return &m.shards[int(k[len(k)-1])&(len(m.shards)-1)]
}

// get returns the entry of the session held under k, or nil. It does not
// allocate when ristretto holds the session's entry; a session that has
// none gets one (see memoryTier).
func (m *memoryTier) get(k *Key) *entry {
	s := k[0]
	if !m.gate.enter(s) {
		return nil
	}
	defer m.gate.leave(s)
	if e, ok := m.rc.Get(hashKey(k)); ok && e != nil && e.key == *k && !e.frozen.Load() {
		return e
	}
	return m.load(k)
}

// load finds k in the slab and returns its entry, made from its slot if it
// has none, and (re)writes it into ristretto. The caller is inside the gate.
func (m *memoryTier) load(k *Key) *entry {
	sh := m.shard(k)
	sh.mu.RLock()
	i, ok := sh.s.find(k)
	var e *entry
	if ok {
		if h := sh.s.slot(i).hot; h != 0 {
			e = sh.hot[h-1]
			m.rc.Set(hashKey(k), e, 1) // ristretto dropped or refused it: put it back
		}
	}
	sh.mu.RUnlock()
	if !ok || e != nil {
		return e
	}

	sh.mu.Lock()
	i, ok = sh.s.find(k)
	if !ok {
		sh.mu.Unlock()
		return nil
	}
	var frozen []*entry
	thawed := false
	if h := sh.s.slot(i).hot; h != 0 {
		e = sh.hot[h-1]
	} else {
		e = sh.s.entry(i)
		sh.addHot(i, e)
		frozen = sh.cool(e, m.now().UnixNano())
		thawed = true
	}
	m.rc.Set(hashKey(k), e, 1)
	sh.mu.Unlock()
	m.dropAll(frozen)
	if thawed && m.hooks.thawed != nil {
		m.hooks.thawed()
	}
	return e
}

// addHot gives slot i's session its entry e. mu is held.
func (sh *tierShard) addHot(i uint32, e *entry) {
	var h uint32
	if n := len(sh.freeHot); n > 0 {
		h = sh.freeHot[n-1]
		sh.freeHot = sh.freeHot[:n-1]
		sh.hot[h] = e
	} else {
		h = uint32(len(sh.hot))
		sh.hot = append(sh.hot, e)
	}
	sh.s.slot(i).hot = h + 1
	sh.nHot++
}

// unHot takes slot sl's entry out of the hot table. mu is held.
func (sh *tierShard) unHot(sl *slot) {
	h := sl.hot - 1
	sh.hot[h] = nil
	sh.freeHot = append(sh.freeHot, h)
	sl.hot = 0
	sh.nHot--
}

// cool freezes the entries of the sessions used least recently (sampled)
// until at most hotMax are hot, never keep, and returns those it froze for
// the caller to drop from ristretto once mu is released. now is the
// cache's clock (Unix ns). mu is held.
func (sh *tierShard) cool(keep *entry, now int64) []*entry {
	var frozen []*entry
	for misses := 0; sh.nHot > sh.hotMax && misses < 4; {
		var (
			best     *entry
			bestUsed int64
		)
		for range victimSamples {
			e := sh.hot[rand.IntN(len(sh.hot))]
			if e == nil || e == keep {
				continue
			}
			if used := e.lastUsed.Load(); best == nil || used < bestUsed {
				best, bestUsed = e, used
			}
		}
		if best == nil || !sh.freeze(best, now) {
			misses++
			continue
		}
		frozen = append(frozen, best)
	}
	return frozen
}

// freeze writes e's session into its slot and takes its entry out of the
// hot table, unless e is busy: its login is handing it out, a refresh or
// a comparison with the store runs, the cooldown of a failed refresh runs
// at now (Unix ns; a slot does not keep it), or a write it asked of the
// store is not in its state yet. mu is held.
func (sh *tierShard) freeze(e *entry, now int64) bool {
	if e.pinned.Load() || e.checking.Load() || e.ended.Load() || e.flight.Load() != nil {
		return false
	}
	if f := e.failure.Load(); f != nil && now < f.until {
		return false
	}
	i, ok := sh.s.find(&e.key)
	if !ok || sh.s.slot(i).gen != e.gen {
		return false
	}
	if !e.mu.TryLock() {
		return false
	}
	defer e.mu.Unlock()
	if e.flight.Load() != nil || e.wake != nil || e.storing.Load() > e.state.Load().version {
		return false
	}
	// frozen is set before the last use is read (write), and touch reads
	// frozen after writing the last use: a use either reaches the slot
	// here or sees frozen and writes it there itself.
	e.frozen.Store(true)
	sl := sh.s.slot(i)
	sh.s.write(sl, e)
	sh.unHot(sl)
	return true
}

// until returns when the memory lifetime of slot i's session ends (Unix
// ns): its entry's, if it has one, else its slot's. mu is held.
func (sh *tierShard) until(i uint32) int64 {
	if h := sh.s.slot(i).hot; h != 0 {
		return sh.hot[h-1].until.Load()
	}
	return sh.s.slot(i).until
}

// dropAll drops entries just frozen or removed from ristretto.
func (m *memoryTier) dropAll(es []*entry) {
	for _, e := range es {
		m.drop(e)
	}
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
	for m.n.Load()+m.reserved >= m.max {
		v := m.evict()
		if v == nil {
			break
		}
		victims = append(victims, v)
	}
	return victims
}

// victimSamples is how many sessions an eviction compares, as Redis does
// for its approximated LRU: the one unused longest among them is ended.
const victimSamples = 8

// candidate is a session sampled for eviction.
type candidate struct {
	sh   *tierShard
	i    uint32
	gen  uint64
	used int64
}

// evict removes the session a request used least recently among a few
// sampled at random over every shard, never one whose login is handing it
// out, and returns its entry (a frozen one made for the call if it had
// none). It returns nil when there is none.
func (m *memoryTier) evict() *entry {
	for range 3 {
		best, ok := m.sample()
		if !ok {
			return nil
		}
		sh := best.sh
		sh.mu.Lock()
		if !sh.s.used(best.i) || sh.s.slot(best.i).gen != best.gen {
			sh.mu.Unlock()
			continue // removed meanwhile: sample again
		}
		e, wasHot := m.take(sh, best.i)
		sh.mu.Unlock()
		if wasHot {
			m.drop(e)
		}
		return e
	}
	return nil
}

// sample looks at victimSamples sessions picked at random, each in a
// shard picked at random, and returns the one used least recently.
func (m *memoryTier) sample() (candidate, bool) {
	var (
		best    candidate
		sampled int
	)
	consider := func(sh *tierShard, i uint32) {
		sl := sh.s.slot(i)
		used := sl.lastUsed
		if sl.hot != 0 {
			e := sh.hot[sl.hot-1]
			if e.pinned.Load() {
				return // its login is handing it out
			}
			used = e.lastUsed.Load()
		}
		if sampled == 0 || used < best.used {
			best = candidate{sh: sh, i: i, gen: sl.gen, used: used}
		}
		sampled++
	}
	for tries := 0; sampled < victimSamples && tries < 8*victimSamples; tries++ {
		sh := &m.shards[rand.IntN(len(m.shards))]
		sh.mu.RLock()
		if sh.s.next > 0 {
			if i := rand.Uint32N(sh.s.next); sh.s.used(i) {
				consider(sh, i)
			}
		}
		sh.mu.RUnlock()
	}
	if sampled == 0 && m.n.Load() > 0 {
		// A sparse tier: look at every slot from a random place.
		first := rand.IntN(len(m.shards))
		for j := range m.shards {
			sh := &m.shards[(first+j)%len(m.shards)]
			sh.mu.RLock()
			for i := range sh.s.next {
				if sampled == victimSamples {
					break
				}
				if sh.s.used(i) {
					consider(sh, i)
				}
			}
			sh.mu.RUnlock()
		}
	}
	return best, sampled > 0
}

// take removes the session in slot i of sh from the slab and returns its
// entry: the hot one, or a frozen one made for the caller. sh.mu is held.
func (m *memoryTier) take(sh *tierShard, i uint32) (e *entry, wasHot bool) {
	sl := sh.s.slot(i)
	if sl.hot != 0 {
		e, wasHot = sh.hot[sl.hot-1], true
		sh.unHot(sl)
	} else {
		e = sh.s.entry(i)
		e.frozen.Store(true)
	}
	sh.s.remove(i)
	m.count(-1)
	return e, wasHot
}

func (m *memoryTier) count(delta int64) {
	m.countMu.Lock()
	n := m.n.Add(delta)
	if m.hooks.changed != nil {
		m.hooks.changed(int(n))
	}
	m.countMu.Unlock()
}

// report hands the sessions removed for room to the evicted hook, with the
// context of the call that needed the room (a login's request).
func (m *memoryTier) report(ctx context.Context, victims []*entry) {
	for _, v := range victims {
		m.hooks.evicted(ctx, v)
	}
}

// insert holds a new entry for ttl, using r (which may be nil) for room or
// making room itself. It fails with errClosed after close, with
// errOccupied when a session is held under e's key already, and with
// errSlabText when its text does not fit.
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
	sh := m.shard(&e.key)
	sh.mu.Lock()
	i, err := sh.s.put(e)
	var frozen []*entry
	if err == nil {
		sh.addHot(i, e)
		m.count(1)
		frozen = sh.cool(e, m.now().UnixNano())
		m.rc.Set(hashKey(&e.key), e, 1)
	}
	sh.mu.Unlock()
	m.roomMu.Unlock()
	m.dropAll(frozen)
	m.report(ctx, victims)
	if err != nil {
		return err
	}
	// ristretto applies a new key's write asynchronously: wait for it, so
	// that the session's first requests find it in the hot lookup rather
	// than in the slab (where each would write it again). A thaw does not
	// wait: its session's next requests are rarely that close.
	m.rc.Wait()
	return nil
}

// update moves the memory lifetime of e's session, if it is held, to ttl
// from now (after a refresh moved the refresh token's expiry). It reports
// false if the session was no longer held (removed meanwhile); it never
// re-adds one. e may be frozen: the session's current entry or slot is
// updated.
func (m *memoryTier) update(e *entry, ttl time.Duration) bool {
	until := time.Now().Add(ttl).UnixNano()
	sh := m.shard(&e.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.s.find(&e.key)
	if !ok || sh.s.slot(i).gen != e.gen {
		return false
	}
	sl := sh.s.slot(i)
	if sl.hot == 0 {
		sl.until = until
	} else {
		sh.hot[sl.hot-1].until.Store(until)
	}
	return true
}

// remove deletes e's session if it is the one held under its key (same
// generation), and reports whether it was. The session's current entry, if
// e is a frozen one, is marked ended.
func (m *memoryTier) remove(e *entry) bool {
	sh := m.shard(&e.key)
	sh.mu.Lock()
	i, ok := sh.s.find(&e.key)
	if !ok || sh.s.slot(i).gen != e.gen {
		sh.mu.Unlock()
		return false
	}
	h, _ := m.take(sh, i)
	sh.mu.Unlock()
	if h != e {
		h.ended.Store(true)
	}
	m.drop(e)
	return true
}

// sweeper removes, every sweepEvery until close, the sessions past their
// record lifetime.
func (m *memoryTier) sweeper() {
	defer close(m.swept)
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep(time.Now().UnixNano())
		}
	}
}

// sweepBatch is how many slots the sweep looks at under one read lock.
const sweepBatch = 1024

// sweep removes the sessions whose record lifetime passed by now (Unix ns),
// and reports them through the expired hook. It looks under the read lock,
// a batch of slots at a time, and takes the write lock only to remove.
func (m *memoryTier) sweep(now int64) {
	var gone []*entry
	for j := range m.shards {
		sh := &m.shards[j]
		for start := uint32(0); ; start += sweepBatch {
			var due []candidate
			sh.mu.RLock()
			next := sh.s.next
			for i := start; i < min(start+sweepBatch, next); i++ {
				if !sh.s.used(i) {
					continue
				}
				if sh.until(i) <= now {
					due = append(due, candidate{sh: sh, i: i, gen: sh.s.slot(i).gen})
				}
			}
			sh.mu.RUnlock()
			if len(due) > 0 {
				sh.mu.Lock()
				for _, d := range due {
					if sh.s.used(d.i) && sh.s.slot(d.i).gen == d.gen {
						e, _ := m.take(sh, d.i)
						gone = append(gone, e)
					}
				}
				sh.mu.Unlock()
			}
			if start+sweepBatch >= next || m.closed() {
				break
			}
		}
	}
	for _, e := range gone {
		m.drop(e)
		m.hooks.expired(e)
	}
}

// drop deletes e's key from ristretto. It is called after e left the hot
// table, outside the tier's locks: a Set that raced with the removal was
// made under the lock before it, and ristretto applies a Set (which may
// still be in its buffer, invisible to a Get) and a later Del in order. A
// newer entry of the same session that it deletes is found in the slab.
func (m *memoryTier) drop(e *entry) {
	s := e.key[0]
	if !m.gate.enter(s) {
		return
	}
	defer m.gate.leave(s)
	m.rc.Del(hashKey(&e.key))
}

// sessionsOf returns the entries of the customer's sessions: hot ones, and
// frozen ones made for the call (enough to end them).
func (m *memoryTier) sessionsOf(customer string) []*entry {
	var es []*entry
	for j := range m.shards {
		sh := &m.shards[j]
		sh.mu.RLock()
		for _, i := range sh.s.sessionsOf(customer) {
			if sl := sh.s.slot(i); sl.hot != 0 {
				es = append(es, sh.hot[sl.hot-1])
			} else {
				e := sh.s.entry(i)
				e.frozen.Store(true)
				es = append(es, e)
			}
		}
		sh.mu.RUnlock()
	}
	return es
}

// keys returns the key of every session held.
func (m *memoryTier) keys() []Key {
	ks := make([]Key, 0, m.n.Load())
	for j := range m.shards {
		sh := &m.shards[j]
		sh.mu.RLock()
		for i := range sh.s.next {
			if sh.s.used(i) {
				ks = append(ks, sh.s.slot(i).key)
			}
		}
		sh.mu.RUnlock()
	}
	return ks
}

// touch records a use of e at now (Unix ns); see entry.touch. A use of an
// entry frozen meanwhile is recorded in the session's slot or current
// entry, so that it counts for the idle timeout and for eviction.
func (m *memoryTier) touch(e *entry, now int64) {
	e.touch(now, m.newest.Load())
	if e.frozen.Load() {
		m.touchFrozen(e, now)
	}
}

func (m *memoryTier) touchFrozen(e *entry, now int64) {
	sh := m.shard(&e.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.s.find(&e.key)
	if !ok || sh.s.slot(i).gen != e.gen {
		return
	}
	sl := sh.s.slot(i)
	if sl.hot != 0 {
		h := sh.hot[sl.hot-1]
		if h.lastUsed.Load() < now {
			h.lastUsed.Store(now)
		}
	} else if sl.lastUsed < now {
		sl.lastUsed = now
	}
}

// len is the number of sessions held.
func (m *memoryTier) len() int { return int(m.n.Load()) }

// closed reports whether close has begun.
func (m *memoryTier) closed() bool { return m.gate.closed.Load() }

// close stops the sweeper, waits for calls in flight to leave ristretto,
// closes it and empties the slab. Safe to call more than once.
func (m *memoryTier) close() {
	if m.gate.close() {
		close(m.stop)
		<-m.swept
		m.rc.Close()
		for j := range m.shards {
			sh := &m.shards[j]
			sh.mu.Lock()
			sh.s = newSlab()
			sh.hot, sh.freeHot, sh.nHot = nil, nil, 0
			sh.mu.Unlock()
		}
		if n := m.n.Load(); n != 0 {
			m.count(-n)
		}
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
