package cache

import (
	"encoding/binary"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// This file is the first step of a compact memory tier (docs/design.md): the
// pointer-free storage of the sessions' immutable hot data. It is not wired
// into the tier yet (memoryTier still holds *entry); see slab_test.go for
// what it costs per session.
//
// A slab holds sessions in fixed-size slots, in chunks that never move, and
// their text (customer id, access token, refresh token) in a byte arena
// addressed by offset. Nothing in it is a pointer the GC follows, except
// one per chunk: a collection marks a slab of a million sessions in a few
// dozen objects. Its index is an open-addressed table of slot numbers
// keyed by the session Key stored in the slot, and its customer index a map
// of customer id hashes to lists threaded through the slots, so they hold
// no pointer either.

// slabChunk is how many slots (and text records) a chunk holds.
const slabChunk = 4096

// slabTextMax bounds the text of one session: customer id, access token and
// refresh token, each at most 255 bytes (Rebell documents at most 64 and
// 128).
const slabTextMax = 255

// errSlabText reports a session whose text does not fit a slot.
var errSlabText = errors.New("slab: customer id or token longer than 255 bytes")

// hotData is the immutable part of a session that a slot holds.
type hotData struct {
	key                       Key
	customer, access, refresh string
	accessExpiry, sessionExp  int64 // Unix ns
	lifetime                  int64 // ns
	created                   int64 // Unix ns
	version                   uint64
}

// slot is one session in a slab. Its fields are written under the slab's
// lock when the slot is taken, and only lastUsed and until change later.
type slot struct {
	key          Key
	accessExpiry int64
	sessionExp   int64
	lifetime     int64
	created      int64
	version      uint64
	lastUsed     atomic.Int64
	until        atomic.Int64
	// text is the offset of the session's text in the arena, and the
	// lengths of its three parts.
	text                   uint32
	custLen, accLen, refLn uint8
	// nextCust is the slot number + 1 of the next session of the same
	// customer id hash (0: none): the customer index's list.
	nextCust uint32
}

// textClass rounds a text length up to the size of its arena record.
func textClass(n int) int { return (n + 15) &^ 15 }

// slab stores sessions without pointers the GC follows. It is safe for
// concurrent use.
type slab struct {
	mu     sync.RWMutex
	chunks []*[slabChunk]slot
	arena  [][]byte // chunks of slabArenaChunk bytes of text records
	// free lists: slots freed, and text records freed by size class.
	freeSlots []uint32
	freeText  map[int][]uint32
	textEnd   uint32 // next unused byte of the arena
	next      uint32 // next slot never used
	// index is an open-addressed table of slot number + 1 (0: empty),
	// probed linearly from the first 4 bytes of the Key (a uniform hash).
	index []uint32
	n     int
	// customers maps a hash of a customer id to the slot number + 1 of the
	// first of its sessions, the others following by slot.nextCust: the
	// customer index without a pointer per session.
	customers map[uint64]uint32
	seed      maphash.Seed
}

// slabArenaChunk is the size of one arena chunk.
const slabArenaChunk = 1 << 20

func newSlab() *slab {
	return &slab{freeText: map[int][]uint32{}, customers: map[uint64]uint32{}, seed: maphash.MakeSeed()}
}

func (s *slab) slot(i uint32) *slot { return &s.chunks[i/slabChunk][i%slabChunk] }

// put stores d and returns its slot number. It fails when a session is
// held under d.key already, or when d's text does not fit.
func (s *slab) put(d *hotData) (uint32, error) {
	if len(d.customer) > slabTextMax || len(d.access) > slabTextMax || len(d.refresh) > slabTextMax {
		return 0, errSlabText
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.find(&d.key); ok {
		return 0, errOccupied
	}
	i := s.takeSlot()
	sl := s.slot(i)
	tlen := len(d.customer) + len(d.access) + len(d.refresh)
	off := s.takeText(tlen)
	buf := s.text(off, tlen)
	copy(buf, d.customer)
	copy(buf[len(d.customer):], d.access)
	copy(buf[len(d.customer)+len(d.access):], d.refresh)
	*sl = slot{
		key: d.key, accessExpiry: d.accessExpiry, sessionExp: d.sessionExp, lifetime: d.lifetime,
		created: d.created, version: d.version, text: off,
		custLen: uint8(len(d.customer)), accLen: uint8(len(d.access)), refLn: uint8(len(d.refresh)),
	}
	sl.lastUsed.Store(d.created)
	h := maphash.String(s.seed, d.customer)
	sl.nextCust = s.customers[h]
	s.customers[h] = i + 1
	s.insertIndex(i)
	s.n++
	return i, nil
}

// get copies out the session held under k.
func (s *slab) get(k *Key) (hotData, uint32, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, ok := s.find(k)
	if !ok {
		return hotData{}, 0, false
	}
	sl := s.slot(i)
	tlen := int(sl.custLen) + int(sl.accLen) + int(sl.refLn)
	t := string(s.text(sl.text, tlen)) // a copy: the record may be reused after remove
	c, a := int(sl.custLen), int(sl.custLen)+int(sl.accLen)
	return hotData{
		key: sl.key, customer: t[:c], access: t[c:a], refresh: t[a:],
		accessExpiry: sl.accessExpiry, sessionExp: sl.sessionExp, lifetime: sl.lifetime,
		created: sl.created, version: sl.version,
	}, i, true
}

// remove forgets the session held under k, and reports whether there was one.
func (s *slab) remove(k *Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.find(k)
	if !ok {
		return false
	}
	s.deleteIndex(k)
	sl := s.slot(i)
	s.unlinkCustomer(i)
	tlen := int(sl.custLen) + int(sl.accLen) + int(sl.refLn)
	clear(s.text(sl.text, tlen)) // no token outlives its session in memory
	c := textClass(tlen)
	s.freeText[c] = append(s.freeText[c], sl.text)
	*sl = slot{}
	s.freeSlots = append(s.freeSlots, i)
	s.n--
	return true
}

// sessionsOf returns the keys of the customer's sessions.
func (s *slab) sessionsOf(customer string) []Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ks []Key
	for v := s.customers[maphash.String(s.seed, customer)]; v != 0; {
		sl := s.slot(v - 1)
		if string(s.text(sl.text, int(sl.custLen))) == customer { // another id may share the hash
			ks = append(ks, sl.key)
		}
		v = sl.nextCust
	}
	return ks
}

// unlinkCustomer takes slot i out of its customer's list.
func (s *slab) unlinkCustomer(i uint32) {
	sl := s.slot(i)
	h := maphash.String(s.seed, string(s.text(sl.text, int(sl.custLen))))
	head := s.customers[h]
	if head == i+1 {
		if sl.nextCust == 0 {
			delete(s.customers, h)
		} else {
			s.customers[h] = sl.nextCust
		}
		return
	}
	for v := head; v != 0; v = s.slot(v - 1).nextCust {
		if p := s.slot(v - 1); p.nextCust == i+1 {
			p.nextCust = sl.nextCust
			return
		}
	}
}

func (s *slab) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.n
}

func (s *slab) takeSlot() uint32 {
	if n := len(s.freeSlots); n > 0 {
		i := s.freeSlots[n-1]
		s.freeSlots = s.freeSlots[:n-1]
		return i
	}
	i := s.next
	if int(i/slabChunk) == len(s.chunks) {
		s.chunks = append(s.chunks, new([slabChunk]slot))
	}
	s.next++
	return i
}

func (s *slab) takeText(n int) uint32 {
	c := textClass(n)
	if fl := s.freeText[c]; len(fl) > 0 {
		off := fl[len(fl)-1]
		s.freeText[c] = fl[:len(fl)-1]
		return off
	}
	off := s.textEnd
	if int(off)%slabArenaChunk+c > slabArenaChunk { // a record never spans two arena chunks
		off = (off/slabArenaChunk + 1) * slabArenaChunk
	}
	if int(off)/slabArenaChunk == len(s.arena) {
		s.arena = append(s.arena, make([]byte, slabArenaChunk))
	}
	s.textEnd = off + uint32(c)
	return off
}

func (s *slab) text(off uint32, n int) []byte {
	ch := s.arena[off/slabArenaChunk]
	o := int(off % slabArenaChunk)
	return ch[o : o+n]
}

// The index: linear probing with backward-shift deletion, kept at most
// three quarters full.

func (s *slab) home(k *Key) int { return int(binary.LittleEndian.Uint32(k[:4])) & (len(s.index) - 1) }

func (s *slab) find(k *Key) (uint32, bool) {
	if len(s.index) == 0 {
		return 0, false
	}
	for p := s.home(k); ; p = (p + 1) & (len(s.index) - 1) {
		v := s.index[p]
		if v == 0 {
			return 0, false
		}
		if s.slot(v-1).key == *k {
			return v - 1, true
		}
	}
}

func (s *slab) insertIndex(i uint32) {
	if (s.n+1)*4 > len(s.index)*3 {
		s.growIndex()
	}
	s.place(i)
}

func (s *slab) place(i uint32) {
	k := &s.slot(i).key
	p := s.home(k)
	for s.index[p] != 0 {
		p = (p + 1) & (len(s.index) - 1)
	}
	s.index[p] = i + 1
}

func (s *slab) growIndex() {
	old := s.index
	s.index = make([]uint32, max(1024, 2*len(old)))
	for _, v := range old {
		if v != 0 {
			s.place(v - 1)
		}
	}
}

func (s *slab) deleteIndex(k *Key) {
	mask := len(s.index) - 1
	p := s.home(k)
	for s.slot(s.index[p]-1).key != *k {
		p = (p + 1) & mask
	}
	// Backward-shift: move later entries of the probe run into the hole.
	for q := (p + 1) & mask; ; q = (q + 1) & mask {
		v := s.index[q]
		if v == 0 {
			break
		}
		h := s.home(&s.slot(v - 1).key)
		// v may move to p if its home is not in (p, q].
		if (q > p && (h <= p || h > q)) || (q < p && h <= p && h > q) {
			s.index[p] = v
			p = q
		}
	}
	s.index[p] = 0
}
