package cache

import (
	"slices"
	"sync"
	"sync/atomic"
)

// customerIndex maps a customer id to the entries of its live sessions, so
// EndCustomer can find them. It is maintained on login, on every session end
// and on ristretto's eviction and rejection callbacks, so it holds exactly the
// sessions in memory and never leaks; its size is Len.
//
// Most customers hold one session, so the value is a slice of entry pointers
// (8 bytes per session) rather than a set; removal is a linear scan of that
// customer's sessions.
type customerIndex struct {
	mu sync.Mutex
	m  map[string][]*entry
	n  atomic.Int64
	// changed, if set, is called with the new count after every change, with
	// mu held so that counts arrive in order.
	changed func(n int)
}

func newCustomerIndex(changed func(int)) *customerIndex {
	return &customerIndex{m: make(map[string][]*entry), changed: changed}
}

// add records e under customer.
func (x *customerIndex) add(customer string, e *entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.m[customer] = append(x.m[customer], e)
	x.count(1)
}

// remove forgets e under customer; it reports whether e was there.
func (x *customerIndex) remove(customer string, e *entry) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	es := x.m[customer]
	i := slices.Index(es, e)
	if i < 0 {
		return false
	}
	last := len(es) - 1
	es[i] = es[last]
	es[last] = nil
	if last == 0 {
		delete(x.m, customer)
	} else if es = es[:last]; len(es) < cap(es)/4 {
		x.m[customer] = slices.Clone(es) // give back the room of a mass logout
	} else {
		x.m[customer] = es
	}
	x.count(-1)
	return true
}

// sessions returns a copy of the customer's entries.
func (x *customerIndex) sessions(customer string) []*entry {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.m[customer])
}

// all returns every entry held.
func (x *customerIndex) all() []*entry {
	x.mu.Lock()
	defer x.mu.Unlock()
	es := make([]*entry, 0, x.n.Load())
	for _, s := range x.m {
		es = append(es, s...)
	}
	return es
}

func (x *customerIndex) len() int { return int(x.n.Load()) }

func (x *customerIndex) count(delta int64) {
	n := x.n.Add(delta)
	if x.changed != nil {
		x.changed(int(n))
	}
}
