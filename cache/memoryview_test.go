package cache

import "time"

// Views of the memory tier that only tests need.

// lifetime returns how long the session held under k stays, by the wall
// clock, and whether it is held.
func (m *memoryTier) lifetime(k *Key) (time.Duration, bool) {
	sh := m.shard(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i, ok := sh.s.find(k)
	if !ok {
		return 0, false
	}
	return time.Until(time.Unix(0, sh.until(i))), true
}

// customers returns the number of customer ids the tier indexes.
func (m *memoryTier) customers() int {
	n := 0
	for j := range m.shards {
		sh := &m.shards[j]
		sh.mu.RLock()
		n += len(sh.s.customers)
		sh.mu.RUnlock()
	}
	return n
}

// hotLen is the number of sessions with an entry.
func (m *memoryTier) hotLen() int {
	n := 0
	for j := range m.shards {
		sh := &m.shards[j]
		sh.mu.RLock()
		n += sh.nHot
		sh.mu.RUnlock()
	}
	return n
}
