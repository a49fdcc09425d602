package cache

import (
	"encoding/binary"
	"sync"
	"time"
)

// Bounds of the memory of unknown sessions (docs/sessions.md).
const (
	// unknownFor is how long a session the store does not know is
	// remembered as unknown.
	unknownFor = 60 * time.Second
	// unknownSets × unknownWays is how many sessions are remembered at
	// most: 8192, about 320 KiB, allocated on first use. When a set is
	// full, the entry closest to expiry makes way.
	unknownSets = 2048
	unknownWays = 4
)

// unknownIDs remembers, per instance, the sessions a shared store said it
// has no record of, so that a request replaying an ended (or never stored)
// id with a valid tag costs no store command for a while. Session ids are
// never reused, so remembering one cannot hide a live session; only a
// store that lost its data (and gets sessions written back) could, and
// then the memory is cleared.
type unknownIDs struct {
	mu    sync.Mutex
	slots []unknownSlot // nil until the first add
}

type unknownSlot struct {
	k     Key
	until int64 // Unix ns; 0 = free
}

func unknownSet(k *Key) int {
	return int(binary.LittleEndian.Uint32(k[8:12])%unknownSets) * unknownWays
}

// has reports whether k is remembered as unknown at now (Unix ns).
func (u *unknownIDs) has(k *Key, now int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.slots == nil {
		return false
	}
	set := u.slots[unknownSet(k):][:unknownWays]
	for i := range set {
		if set[i].until > now && set[i].k == *k {
			return true
		}
	}
	return false
}

// add remembers k as unknown from now (Unix ns) for unknownFor.
func (u *unknownIDs) add(k *Key, now int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.slots == nil {
		u.slots = make([]unknownSlot, unknownSets*unknownWays)
	}
	set := u.slots[unknownSet(k):][:unknownWays]
	victim := 0
	for i := range set {
		if set[i].k == *k || set[i].until <= now {
			victim = i
			break
		}
		if set[i].until < set[victim].until {
			victim = i
		}
	}
	set[victim] = unknownSlot{k: *k, until: now + int64(unknownFor)}
}

// clear forgets every session.
func (u *unknownIDs) clear() {
	u.mu.Lock()
	defer u.mu.Unlock()
	clear(u.slots)
}
