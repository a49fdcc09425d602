package cache

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// loadCall is a read of one session's record on a memory miss, shared by the
// requests that miss at once.
type loadCall struct {
	done chan struct{}
	e    *entry
	err  error
	// ended, guarded by missLoads.mu, is set when the store announced the
	// session's end while it was being read.
	ended bool
}

// missLoads deduplicates memory-miss reads by session.
type missLoads struct {
	mu sync.Mutex
	m  map[Key]*loadCall
}

// loadMiss finds session k in the store after a memory miss, and holds it in
// memory (docs/sessions.md: a session created on one instance works on every other at
// once). Concurrent misses of one session share one read.
func (r *replica) loadMiss(k Key) (*entry, error) {
	r.loads.mu.Lock()
	if call := r.loads.m[k]; call != nil {
		r.loads.mu.Unlock()
		<-call.done
		return call.e, call.err
	}
	call := &loadCall{done: make(chan struct{})}
	r.loads.m[k] = call
	r.loads.mu.Unlock()

	// Under the cache's context: the first request giving up does not fail
	// the others.
	ctx, cancel := r.storeCtx(r.ctx)
	call.e, call.err = r.readMiss(ctx, k)
	cancel()

	r.loads.mu.Lock()
	delete(r.loads.m, k)
	ended := call.ended
	r.loads.mu.Unlock()
	if ended && call.e != nil {
		r.h.endSession(call.e, "ended_elsewhere", zapcore.DebugLevel)
		call.e, call.err = nil, errEndedElsewhere
	}
	close(call.done)
	return call.e, call.err
}

// endedWhileLoading marks a read of k in flight as overtaken by the end of
// the session.
func (r *replica) endedWhileLoading(k Key) {
	r.loads.mu.Lock()
	if call := r.loads.m[k]; call != nil {
		call.ended = true
	}
	r.loads.mu.Unlock()
}

func (r *replica) readMiss(ctx context.Context, k Key) (*entry, error) {
	rec, err := r.store.Load(ctx, k, time.Time{}, 0)
	if err != nil {
		if errors.Is(err, session.ErrRecordCorrupt) {
			return nil, r.corrupt(ctx, k, nil, err)
		}
		return nil, storeError(err)
	}
	if rec == nil {
		return nil, ErrSessionInvalid
	}
	st, err := stateOf(rec, r.now())
	if err != nil {
		return nil, r.corrupt(ctx, k, nil, err)
	}
	now := r.now()
	ns := now.UnixNano()
	if r.pol.classify(st, now) == gone {
		return nil, ErrSessionInvalid
	}
	if r.idleTimeout > 0 && !rec.LastUsed.IsZero() && ns-rec.LastUsed.UnixNano() >= r.idleTimeout {
		r.endShared(ctx, k, st.grant.CustomerID)
		return nil, ErrSessionInvalid
	}
	e := newEntry(k, st, rec.Created)
	e.lastUsed.Store(ns) // the request that missed uses it now
	e.checked.Store(ns)
	return r.h.hold(e, st, now)
}
