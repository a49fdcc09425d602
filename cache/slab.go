package cache

import (
	"encoding/binary"
	"errors"
	"hash/maphash"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// A slab is where the memory tier keeps every session it holds
// (docs/design.md, "The memory tier"): fixed-size slots in chunks that never
// move, and the sessions' text (customer id, access token, refresh token) in
// a byte arena addressed by offset. Nothing in it is a pointer the GC
// follows, except one per chunk: a collection marks a slab of a million
// sessions in a few dozen objects. Its index is an open-addressed table of
// slot numbers keyed by the session Key stored in the slot, and its customer
// index a map of customer id hashes to lists threaded through the slots, so
// they hold no pointer either.
//
// A slot holds a session's data as of the last time its entry was frozen
// (memory.go): while the session is hot, its entry is the truth and the
// slot only its place (key, generation, customer). The slab has no lock of
// its own: the memory tier's guards it.

// slabChunk is how many slots a chunk holds.
const slabChunk = 1024

// slabTextMax bounds each part of a session's text: customer id, access
// token and refresh token (Rebell's responses are refused beyond 64 and
// 128; loginState and refreshedState refuse beyond this).
const slabTextMax = 255

// errSlabText reports a session whose text does not fit a slot.
var errSlabText = errors.New("customer id or token longer than 255 bytes")

// Slot flags: what an entry remembers beyond its state, kept over a freeze.
const (
	slotShortened = 1 << iota // entry.shortened
	slotRestored              // entry.restored
)

// slot is one session in a slab. A free slot has gen 0.
type slot struct {
	key Key
	// gen tells the sessions held under one Key apart over time (a copy
	// dropped for room and read back from the store is a new one): an entry
	// of another generation is not the one held.
	gen          uint64
	accessExpiry int64 // Unix ns
	sessionExp   int64 // Unix ns
	lifetime     int64 // ns
	created      int64 // Unix ns
	lastUsed     int64 // Unix ns
	until        int64 // Unix ns, wall clock
	checked      int64 // Unix ns
	version      uint64
	// text is the offset of the session's text in the arena, and the
	// lengths of its three parts.
	text                    uint32
	custLen, accLen, refLen uint8
	flags                   uint8
	// hot is the session's place in the hot table + 1 (0: cold, no entry).
	hot uint32
	// nextCust is the slot number + 1 of the next session of the same
	// customer id hash (0: none): the customer index's list.
	nextCust uint32
}

// textClass rounds a text length up to the size of its arena record.
func textClass(n int) int { return (n + 7) &^ 7 }

// slab stores sessions without pointers the GC follows. It is not safe for
// concurrent use.
type slab struct {
	chunks []*[slabChunk]slot
	arena  [][]byte // chunks of slabArenaChunk bytes of text records
	// free lists: slots freed, and text records freed by size class.
	freeSlots []uint32
	freeText  map[int][]uint32
	textEnd   uint32 // next unused byte of the arena
	next      uint32 // next slot never used
	gen       uint64 // last generation handed out
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
const slabArenaChunk = 64 << 10

func newSlab() *slab {
	return &slab{freeText: map[int][]uint32{}, customers: map[uint64]uint32{}, seed: maphash.MakeSeed()}
}

func (s *slab) slot(i uint32) *slot { return &s.chunks[i/slabChunk][i%slabChunk] }

// fits reports whether st's text fits a slot.
func fits(st *tokenState) bool {
	return len(st.grant.CustomerID) <= slabTextMax && st.grant.AccessToken.Len() <= slabTextMax &&
		st.refreshToken.Len() <= slabTextMax
}

// put stores e, a new session, with its state, gives it a generation and
// returns its slot number. It fails with errOccupied when a session is held
// under e's key already, and with errSlabText when e's text does not fit.
func (s *slab) put(e *entry) (uint32, error) {
	st := e.state.Load()
	if !fits(st) {
		return 0, errSlabText
	}
	if _, ok := s.find(&e.key); ok {
		return 0, errOccupied
	}
	i := s.takeSlot()
	sl := s.slot(i)
	s.gen++
	*sl = slot{key: e.key, gen: s.gen, created: e.created}
	e.gen = s.gen
	s.write(sl, e)
	h := maphash.String(s.seed, st.grant.CustomerID)
	sl.nextCust = s.customers[h]
	s.customers[h] = i + 1
	s.insertIndex(i)
	s.n++
	return i, nil
}

// write copies e's state and what it remembers into its slot, sl.
func (s *slab) write(sl *slot, e *entry) {
	st := e.state.Load()
	cust, acc, ref := st.grant.CustomerID, st.grant.AccessToken.Reveal(), st.refreshToken.Reveal()
	tlen := len(cust) + len(acc) + len(ref)
	if old := int(sl.custLen) + int(sl.accLen) + int(sl.refLen); sl.text == 0 || textClass(old) != textClass(tlen) {
		if sl.text != 0 {
			s.freeRecord(sl)
		}
		sl.text = s.takeText(tlen)
	}
	buf := s.text(sl.text, textClass(tlen))
	clear(buf)
	copy(buf, cust)
	copy(buf[len(cust):], acc)
	copy(buf[len(cust)+len(acc):], ref)
	sl.custLen, sl.accLen, sl.refLen = uint8(len(cust)), uint8(len(acc)), uint8(len(ref))
	sl.accessExpiry = st.grant.AccessTokenExpiry.UnixNano()
	sl.sessionExp = st.grant.SessionExpiry.UnixNano()
	sl.lifetime = int64(st.lifetime)
	sl.version = st.version
	sl.lastUsed = e.lastUsed.Load()
	sl.until = e.until.Load()
	sl.checked = e.checked.Load()
	sl.flags = 0
	if e.shortened.Load() {
		sl.flags |= slotShortened
	}
	if e.restored.Load() {
		sl.flags |= slotRestored
	}
}

// entry makes an entry of the session in slot i, as it was last written.
func (s *slab) entry(i uint32) *entry {
	sl := s.slot(i)
	c, a := int(sl.custLen), int(sl.custLen)+int(sl.accLen)
	t := string(s.text(sl.text, a+int(sl.refLen))) // a copy: the record is reused after remove
	st := &tokenState{
		grant: Grant{
			CustomerID:        t[:c],
			AccessToken:       rebell.NewSecret(t[c:a]),
			AccessTokenExpiry: time.Unix(0, sl.accessExpiry),
			SessionExpiry:     time.Unix(0, sl.sessionExp),
		},
		refreshToken: rebell.NewSecret(t[a:]),
		version:      sl.version,
		lifetime:     time.Duration(sl.lifetime),
	}
	e := &entry{key: sl.key, gen: sl.gen, created: sl.created}
	e.state.Store(st)
	e.lastUsed.Store(sl.lastUsed)
	e.until.Store(sl.until)
	e.checked.Store(sl.checked)
	e.storing.Store(sl.version)
	e.shortened.Store(sl.flags&slotShortened != 0)
	e.restored.Store(sl.flags&slotRestored != 0)
	return e
}

// customer returns the customer id of slot i, without allocating when the
// caller only compares it.
func (s *slab) customer(i uint32) []byte {
	sl := s.slot(i)
	return s.text(sl.text, int(sl.custLen))
}

// remove frees slot i: its text is cleared, so that no token outlives its
// session in memory.
func (s *slab) remove(i uint32) {
	sl := s.slot(i)
	s.deleteIndex(&sl.key)
	s.unlinkCustomer(i)
	s.freeRecord(sl)
	*sl = slot{}
	s.freeSlots = append(s.freeSlots, i)
	s.n--
}

func (s *slab) freeRecord(sl *slot) {
	c := textClass(int(sl.custLen) + int(sl.accLen) + int(sl.refLen))
	clear(s.text(sl.text, c))
	s.freeText[c] = append(s.freeText[c], sl.text)
}

// sessionsOf returns the slot numbers of the customer's sessions.
func (s *slab) sessionsOf(customer string) []uint32 {
	var is []uint32
	for v := s.customers[maphash.String(s.seed, customer)]; v != 0; v = s.slot(v - 1).nextCust {
		if string(s.customer(v-1)) == customer { // another id may share the hash
			is = append(is, v-1)
		}
	}
	return is
}

// unlinkCustomer takes slot i out of its customer's list.
func (s *slab) unlinkCustomer(i uint32) {
	sl := s.slot(i)
	h := maphash.Bytes(s.seed, s.customer(i))
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

// used reports whether slot number i holds a session.
func (s *slab) used(i uint32) bool { return i < s.next && s.slot(i).gen != 0 }

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

// takeText returns the offset of a free record of n bytes. Offset 0 is
// never handed out, so that a slot's text 0 means none.
func (s *slab) takeText(n int) uint32 {
	c := textClass(n)
	if fl := s.freeText[c]; len(fl) > 0 {
		off := fl[len(fl)-1]
		s.freeText[c] = fl[:len(fl)-1]
		return off
	}
	if s.textEnd == 0 {
		s.textEnd = 8
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

// find returns the slot number of the session held under k.
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
