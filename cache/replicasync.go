package cache

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// pendingWrites are the refreshed states the store could not be told about
// (it failed when the refresh's Swap ran). Rebell has spent the refresh token
// they replaced, so until the store holds them, another instance refreshing
// from the stored record would present a dead token and end the session
// everywhere. One syncer goroutine writes them back: every third of the
// lease lifetime, and at once when the store's subscription comes back.
type pendingWrites struct {
	mu      sync.Mutex
	m       map[*entry]pendingWrite
	running bool
	// kick wakes the running syncer early (buffered, one; sent and
	// drained under mu).
	kick chan struct{}
}

// pendingWrite is a state to write over the record at version stored, with
// the lease it was refreshed under ("" when none).
type pendingWrite struct {
	st     *tokenState
	lease  string
	stored uint64
}

// syncLater queues st, e's state refreshed under lease from the record at
// version stored, for writing back, and starts the syncer if it is not
// running.
func (r *replica) syncLater(e *entry, st *tokenState, lease string, stored uint64) {
	p := &r.pending
	p.mu.Lock()
	p.m[e] = pendingWrite{st: st, lease: lease, stored: stored}
	start := !p.running
	p.running = true
	p.mu.Unlock()
	if start && !r.h.spawn(r.runSyncer) {
		p.mu.Lock()
		p.running = false
		p.mu.Unlock()
	}
}

// kickSyncer makes a running syncer try at once.
func (r *replica) kickSyncer() {
	p := &r.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// runSyncer writes pending states back until none is left or the cache
// closes. A pass stops at the first failure of the store and waits for the
// next tick.
func (r *replica) runSyncer(ctx context.Context) {
	p := &r.pending
	tick, stop := r.leaseTicker(r.leaseTTL / 3)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-p.kick:
		}
		p.mu.Lock()
		batch := make(map[*entry]pendingWrite, len(p.m))
		for e, w := range p.m {
			batch[e] = w
		}
		p.mu.Unlock()
		for e, w := range batch {
			if r.syncOne(ctx, e, w) {
				break // the store still fails: wait for the next tick
			}
			p.mu.Lock()
			if p.m[e] == w {
				delete(p.m, e)
			}
			p.mu.Unlock()
		}
		p.mu.Lock()
		if len(p.m) == 0 {
			p.running = false
			select { // a kick not taken is not for the next syncer
			case <-p.kick:
			default:
			}
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// syncOne writes w back for e. It reports whether to try again later (the
// store failed); otherwise w is done with: written, overtaken by a newer
// state, or the session is over.
func (r *replica) syncOne(ctx context.Context, e *entry, w pendingWrite) (retry bool) {
	if e.ended.Load() {
		return false
	}
	if cur := e.state.Load(); cur != w.st {
		// Not published yet by the refresh that made it (try later), or
		// overtaken by a newer state.
		return cur.version < w.st.version
	}
	sctx, cancel := r.storeCtx(ctx)
	defer cancel()
	now := r.now()
	ok, err := r.store.Swap(sctx, e.key, w.lease, w.stored,
		recordOf(w.st, time.Unix(0, e.created), time.Unix(0, e.lastUsed.Load())), r.recordTTL(w.st, now))
	switch {
	case err != nil && errors.Is(err, session.ErrRecordCorrupt):
		_ = r.corrupt(sctx, e.key, e, err)
		return false
	case err != nil:
		return true
	case ok:
		r.log.Info("rebell refreshed tokens written back to the store", zap.String("session", e.key.Tag()),
			zap.Uint64("version", w.st.version))
		return false
	}
	rec, err := r.readRecord(sctx, e, time.Time{}, 0)
	if err == nil {
		// Missing: lost by the store (written back) or ended (its end mark
		// refuses that, and e ends). Behind: a failover lost versions.
		var st *tokenState
		if st, err = r.reconcile(sctx, e, w.st, rec, restoreCopy, true); err == nil && st != w.st {
			r.log.Warn("rebell refreshed tokens discarded: another instance stored newer ones", zap.String("session", e.key.Tag()))
		}
	}
	// Equal versions: written back already, by a comparison or a refresh
	// here.
	return err != nil && !errors.Is(err, ErrSessionInvalid)
}
