package cache

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
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
func (c *Cache) loadMiss(k Key) (*entry, error) {
	c.loads.mu.Lock()
	if call := c.loads.m[k]; call != nil {
		c.loads.mu.Unlock()
		<-call.done
		return call.e, call.err
	}
	call := &loadCall{done: make(chan struct{})}
	c.loads.m[k] = call
	c.loads.mu.Unlock()

	// Under the cache's context: the first request giving up does not fail
	// the others.
	ctx, cancel := c.storeCtx(c.ctx)
	call.e, call.err = c.readMiss(ctx, k)
	cancel()

	c.loads.mu.Lock()
	delete(c.loads.m, k)
	ended := call.ended
	c.loads.mu.Unlock()
	if ended && call.e != nil {
		c.end(call.e, "ended_elsewhere", zapcore.DebugLevel)
		call.e, call.err = nil, errEndedElsewhere
	}
	close(call.done)
	return call.e, call.err
}

// endedWhileLoading marks a read of k in flight as overtaken by the end of
// the session.
func (c *Cache) endedWhileLoading(k Key) {
	c.loads.mu.Lock()
	if call := c.loads.m[k]; call != nil {
		call.ended = true
	}
	c.loads.mu.Unlock()
}

func (c *Cache) readMiss(ctx context.Context, k Key) (*entry, error) {
	rec, err := c.shared.Load(ctx, k, time.Time{}, 0)
	if err != nil {
		if errors.Is(err, ErrRecordCorrupt) {
			return nil, c.corrupt(ctx, k, nil, err)
		}
		return nil, storeError(err)
	}
	if rec == nil {
		return nil, ErrSessionInvalid
	}
	st, err := stateOf(rec, c.now())
	if err != nil {
		return nil, c.corrupt(ctx, k, nil, err)
	}
	now := c.now()
	ns := now.UnixNano()
	if c.pol.classify(st, now) == gone {
		return nil, ErrSessionInvalid
	}
	if c.idleTimeout > 0 && !rec.LastUsed.IsZero() && ns-rec.LastUsed.UnixNano() >= c.idleTimeout {
		c.endShared(ctx, k, st.grant.CustomerID)
		return nil, ErrSessionInvalid
	}
	e := newEntry(k, st, rec.Created)
	e.lastUsed.Store(ns) // the request that missed uses it now
	e.checked.Store(ns)
	if err := c.mem.insert(e, c.pol.lifetime(st, now), nil); err != nil {
		if held := c.mem.get(&k); held != nil {
			return held, nil // another path stored it meanwhile
		}
		return nil, storeError(err)
	}
	if e.ended.Load() {
		c.mem.remove(e)
		return nil, ErrSessionInvalid
	}
	c.noteWindow(e, st)
	return e, nil
}
