package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/revoke"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// fakeServer is an in-memory shared store on a fake clock: several Caches
// (instances) talk to it through their own fakeStore. It keeps the
// semantics of the Store interface, with lease and record lifetimes on the
// fake clock, and delivers announcements synchronously, in order.
type fakeServer struct {
	clock *fakeClock

	mu        sync.Mutex
	recs      map[Key]fakeRec
	leases    map[Key]fakeLease
	customers map[string]map[Key]bool
	logins    map[string]fakeMemo
	endMarks  map[Key]time.Time // expiry
	listeners []*fakeStore
	// garbled are the keys overwritten with something that is no record
	// (as Redis's WRONGTYPE): reading them fails with session.ErrRecordCorrupt
	// until End deletes them.
	garbled map[Key]bool

	// afterLoad, if set, runs after a Load read a record, before it
	// returns: what happens elsewhere while the answer travels.
	afterLoad func(Key)

	ends atomic.Int64 // End calls

	// cancels are the pending cancels every instance shares.
	cancels *revoke.MemoryQueue

	down  atomic.Bool  // every call fails
	calls atomic.Int64 // calls made
}

type fakeRec struct {
	rec     session.Record
	expires time.Time
}

type fakeLease struct {
	owner   string
	expires time.Time
}

type fakeMemo struct {
	sid     string // "" while pending
	expires time.Time
}

var errFakeDown = errors.New("fake store down")

func newFakeServer(clock *fakeClock) *fakeServer {
	return &fakeServer{
		clock:     clock,
		recs:      map[Key]fakeRec{},
		leases:    map[Key]fakeLease{},
		customers: map[string]map[Key]bool{},
		logins:    map[string]fakeMemo{},
		endMarks:  map[Key]time.Time{},
		garbled:   map[Key]bool{},
		cancels:   revoke.NewMemoryQueue(),
	}
}

// garble overwrites k's record with something that is no record.
func (s *fakeServer) garble(k Key) {
	s.mu.Lock()
	s.garbled[k] = true
	s.mu.Unlock()
}

// waitDeleted waits until End deleted k's garbled record.
func (s *fakeServer) waitDeleted(t testing.TB, k Key) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		s.mu.Lock()
		garbled := s.garbled[k]
		s.mu.Unlock()
		if !garbled {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the corrupt record was never deleted")
		}
		time.Sleep(time.Millisecond)
	}
}

var errGarbled = fmt.Errorf("fake store: %w: a key holds another type", session.ErrRecordCorrupt)

// store returns a new instance's view of the server.
func (s *fakeServer) store() *fakeStore { return &fakeStore{s: s, PendingCancels: s.cancels} }

// enter counts a call and fails it when the server is down; it returns with
// mu held otherwise.
func (s *fakeServer) enter(ctx context.Context) error {
	s.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.down.Load() {
		return errFakeDown
	}
	s.mu.Lock()
	return nil
}

// record returns k's live record; mu is held.
func (s *fakeServer) record(k Key) (fakeRec, bool) {
	r, ok := s.recs[k]
	if ok && !s.clock.Now().Before(r.expires) {
		delete(s.recs, k)
		return r, false
	}
	return r, ok
}

func (s *fakeServer) lease(k Key) (fakeLease, bool) {
	l, ok := s.leases[k]
	if ok && !s.clock.Now().Before(l.expires) {
		delete(s.leases, k)
		return l, false
	}
	return l, ok
}

func (s *fakeServer) announce(ev session.Event) {
	s.mu.Lock()
	ls := append([]*fakeStore(nil), s.listeners...)
	s.mu.Unlock()
	for _, l := range ls {
		l.deliver(ev)
	}
}

// resync tells every instance its subscription was re-established.
func (s *fakeServer) resync() { s.announce(session.Event{Kind: session.EventResync}) }

// restartEmpty loses every key, as a Redis without persistence that
// restarts, and tells every instance so when it resubscribes.
func (s *fakeServer) restartEmpty() {
	s.wipe()
	s.announce(session.Event{Kind: session.EventResync, Lost: true})
}

// wipe loses every key, telling nobody.
func (s *fakeServer) wipe() {
	s.mu.Lock()
	s.recs = map[Key]fakeRec{}
	s.leases = map[Key]fakeLease{}
	s.customers = map[string]map[Key]bool{}
	s.logins = map[string]fakeMemo{}
	s.endMarks = map[Key]time.Time{}
	s.garbled = map[Key]bool{} // a store that lost its data lost these too
	s.mu.Unlock()
}

// dropSilently deletes k's record without announcing it (a lost message).
func (s *fakeServer) dropSilently(k Key) {
	s.mu.Lock()
	delete(s.recs, k)
	s.mu.Unlock()
}

func (s *fakeServer) version(k Key) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.record(k)
	if !ok {
		return 0
	}
	return r.rec.Version
}

type fakeStore struct {
	// PendingCancels are the server's, shared by every instance.
	session.PendingCancels
	s      *fakeServer
	mu     sync.Mutex
	fn     func(session.Event)
	closed bool
	deaf   bool // not subscribed: announcements are lost
}

func (f *fakeStore) deliver(ev session.Event) {
	f.mu.Lock()
	fn, closed, deaf := f.fn, f.closed, f.deaf
	f.mu.Unlock()
	if fn != nil && !closed && !deaf {
		fn(ev)
	}
}

// disconnect makes the instance miss announcements until reconnect, which
// delivers a session.EventResync (with lost, if the store lost its data meanwhile).
func (f *fakeStore) disconnect() {
	f.mu.Lock()
	f.deaf = true
	f.mu.Unlock()
}

func (f *fakeStore) reconnect(lost bool) {
	f.mu.Lock()
	f.deaf = false
	f.mu.Unlock()
	f.deliver(session.Event{Kind: session.EventResync, Lost: lost})
}

func (f *fakeStore) Create(ctx context.Context, k Key, rec *session.Record, ttl time.Duration) (bool, error) {
	s := f.s
	if err := s.enter(ctx); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	if _, ok := s.record(k); ok {
		return false, nil
	}
	if exp, ok := s.endMarks[k]; ok && s.clock.Now().Before(exp) {
		return false, nil
	}
	r := *rec
	r.LastUsed = r.Created
	s.recs[k] = fakeRec{rec: r, expires: s.clock.Now().Add(ttl)}
	if s.customers[rec.CustomerID] == nil {
		s.customers[rec.CustomerID] = map[Key]bool{}
	}
	s.customers[rec.CustomerID][k] = true
	return true, nil
}

func (f *fakeStore) Load(ctx context.Context, k Key, used time.Time, ttl time.Duration) (*session.Record, error) {
	s := f.s
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	if s.garbled[k] {
		s.mu.Unlock()
		return nil, errGarbled
	}
	r, ok := s.record(k)
	if !ok {
		s.mu.Unlock()
		return nil, nil
	}
	if used.After(r.rec.LastUsed) {
		r.rec.LastUsed = used
	}
	if exp := s.clock.Now().Add(ttl); ttl > 0 && exp.After(r.expires) {
		r.expires = exp
	}
	s.recs[k] = r
	hook := s.afterLoad
	s.mu.Unlock()
	if hook != nil {
		hook(k)
	}
	rec := r.rec
	return &rec, nil
}

func (f *fakeStore) Acquire(ctx context.Context, k Key, version uint64, ttl time.Duration) (string, session.LeaseResult, error) {
	s := f.s
	if err := s.enter(ctx); err != nil {
		return "", 0, err
	}
	defer s.mu.Unlock()
	if s.garbled[k] {
		return "", 0, errGarbled
	}
	r, ok := s.record(k)
	switch {
	case !ok:
		return "", session.LeaseGone, nil
	case r.rec.Version != version:
		return "", session.LeaseStale, nil
	}
	if _, held := s.lease(k); held {
		return "", session.LeaseHeld, nil
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	owner := hex.EncodeToString(b[:])
	s.leases[k] = fakeLease{owner: owner, expires: s.clock.Now().Add(ttl)}
	return owner, session.LeaseAcquired, nil
}

func (f *fakeStore) Renew(ctx context.Context, k Key, lease string, ttl time.Duration) (bool, error) {
	s := f.s
	if err := s.enter(ctx); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	if l, ok := s.lease(k); ok && l.owner == lease {
		s.leases[k] = fakeLease{owner: lease, expires: s.clock.Now().Add(ttl)}
		return true, nil
	}
	return false, nil
}

func (f *fakeStore) Release(ctx context.Context, k Key, lease string) error {
	s := f.s
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if l, ok := s.lease(k); ok && l.owner == lease {
		delete(s.leases, k)
	}
	return nil
}

func (f *fakeStore) Swap(ctx context.Context, k Key, lease string, old uint64, rec *session.Record, ttl time.Duration) (bool, error) {
	s := f.s
	if err := s.enter(ctx); err != nil {
		return false, err
	}
	if s.garbled[k] {
		s.mu.Unlock()
		return false, errGarbled
	}
	r, ok := s.record(k)
	if !ok || r.rec.Version != old {
		s.mu.Unlock()
		return false, nil
	}
	nr := *rec
	nr.LastUsed = r.rec.LastUsed
	s.recs[k] = fakeRec{rec: nr, expires: s.clock.Now().Add(ttl)}
	if l, ok := s.lease(k); ok && l.owner == lease {
		delete(s.leases, k)
	}
	s.mu.Unlock()
	s.announce(session.Event{Kind: session.EventUpdated, Key: k, Version: rec.Version})
	return true, nil
}

func (f *fakeStore) End(ctx context.Context, k Key, customerID string) (bool, error) {
	s := f.s
	s.ends.Add(1)
	if err := s.enter(ctx); err != nil {
		return false, err
	}
	_, ok := s.record(k)
	ok = ok || s.garbled[k]
	delete(s.garbled, k)
	delete(s.recs, k)
	delete(s.leases, k)
	s.endMarks[k] = s.clock.Now().Add(session.EndMarkLifetime)
	if customerID != "" {
		delete(s.customers[customerID], k)
	}
	s.mu.Unlock()
	s.announce(session.Event{Kind: session.EventEnded, Key: k})
	return ok, nil
}

func (f *fakeStore) CustomerSessions(ctx context.Context, customerID string) ([]Key, error) {
	s := f.s
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var ks []Key
	for k := range s.customers[customerID] {
		ks = append(ks, k)
	}
	return ks, nil
}

func (f *fakeStore) ClaimLogin(ctx context.Context, code rebell.Secret, ttl time.Duration) (bool, string, error) {
	s := f.s
	if err := s.enter(ctx); err != nil {
		return false, "", err
	}
	defer s.mu.Unlock()
	m, ok := s.logins[code.Reveal()]
	if ok && s.clock.Now().Before(m.expires) {
		return false, m.sid, nil
	}
	s.logins[code.Reveal()] = fakeMemo{expires: s.clock.Now().Add(ttl)}
	return true, "", nil
}

func (f *fakeStore) FinishLogin(ctx context.Context, code rebell.Secret, sid string, ttl time.Duration) error {
	s := f.s
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if sid == "" {
		// Only a claim is forgotten, as the Redis store does.
		if m, ok := s.logins[code.Reveal()]; ok && m.sid == "" {
			delete(s.logins, code.Reveal())
		}
		return nil
	}
	s.logins[code.Reveal()] = fakeMemo{sid: sid, expires: s.clock.Now().Add(ttl)}
	return nil
}

func (f *fakeStore) Listen(fn func(session.Event)) {
	f.mu.Lock()
	f.fn = fn
	f.mu.Unlock()
	f.s.mu.Lock()
	f.s.listeners = append(f.s.listeners, f)
	f.s.mu.Unlock()
	f.deliver(session.Event{Kind: session.EventResync})
}

func (f *fakeStore) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

var _ session.Store = (*fakeStore)(nil)

// cluster is several Caches (instances) sharing one fake store, one fake
// clock and one fake Rebell.
type cluster struct {
	clock *fakeClock
	srv   *fakeServer
	fake  *fakeExchanger
	nodes []*harness
}

// newCluster starts n instances. Each has its own fake exchanger view only
// through fake (shared), unless a test swaps one in.
// clusterHotSessions is the HotSessions of the caches newCluster makes (0:
// the default); TestSharedWithColdCopies sets it.
var clusterHotSessions int64

func newCluster(t testing.TB, n int, mutate ...func(*Config)) *cluster {
	t.Helper()
	clock := newFakeClock()
	cl := &cluster{clock: clock, srv: newFakeServer(clock), fake: newFakeExchanger(clock)}
	// Instances sharing a store share the session key.
	sessionKey := []byte("a session key shared by the instances")
	for i := 0; i < n; i++ {
		st := cl.srv.store()
		h := newHarness(t, append([]func(*Config){func(c *Config) {
			c.SessionKeys = [][]byte{sessionKey}
			c.Now = clock.Now
			c.Exchanger = cl.fake
			c.Store = st
			c.HotSessions = clusterHotSessions
		}}, mutate...)...)
		h.clock, h.fake = clock, cl.fake
		// Leases far longer than a test: the renewer (on the real clock)
		// never runs; lease expiry is driven by the fake clock alone.
		h.replica().leaseTTL = time.Hour
		cl.nodes = append(cl.nodes, h)
	}
	return cl
}

// replica is the replica layer of h, which must have a store.
func (h *harness) replica() *replica { return h.back.(*replica) }
