package revoke

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// MaxMemoryPending bounds the cancels a MemoryQueue holds: beyond it,
// AddCancel fails with ErrQueueFull (and the Revoker logs the cancel as
// given up).
const MaxMemoryPending = 100_000

// ErrQueueFull is the error of AddCancel on a full MemoryQueue.
var ErrQueueFull = errors.New("revoke: too many pending cancels held in memory")

// MemoryQueue is a session.PendingCancels held in memory: what the gateway
// uses without a shared store, and beside one when the store cannot take a
// cancel. It follows the rules of session.PendingCancels (the conformance
// suite in session/storetest checks it) and is safe for concurrent use.
type MemoryQueue struct {
	mu    sync.Mutex
	items map[string]*memItem
	added uint64 // the number of AddCancel calls, which orders ties
}

type memItem struct {
	c          session.Cancel
	owner      string
	leaseUntil time.Time
	seq        uint64 // when it was added: equal due times go oldest first
}

// due is when the item may be leased: its Due, or the end of a lease.
func (it *memItem) due() time.Time {
	if it.owner != "" && it.leaseUntil.After(it.c.Due) {
		return it.leaseUntil
	}
	return it.c.Due
}

var _ session.PendingCancels = (*MemoryQueue)(nil)

// NewMemoryQueue returns an empty MemoryQueue.
func NewMemoryQueue() *MemoryQueue { return &MemoryQueue{items: make(map[string]*memItem)} }

// AddCancel implements session.PendingCancels.
func (q *MemoryQueue) AddCancel(ctx context.Context, c *session.Cancel) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if c.ID == "" {
		c.ID = newID()
	}
	if _, ok := q.items[c.ID]; !ok && len(q.items) >= MaxMemoryPending {
		return ErrQueueFull
	}
	q.added++
	q.items[c.ID] = &memItem{c: *c, seq: q.added}
	return nil
}

// LeaseCancel implements session.PendingCancels. It looks at every pending
// cancel: the queue is meant for the few an outage leaves behind.
func (q *MemoryQueue) LeaseCancel(ctx context.Context, now time.Time, ttl time.Duration) (*session.Cancel, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var best *memItem
	for _, it := range q.items {
		d := it.due()
		if d.After(now) {
			continue
		}
		if best == nil || d.Before(best.due()) || (d.Equal(best.due()) && it.seq < best.seq) {
			best = it
		}
	}
	if best == nil {
		return nil, "", nil
	}
	c := best.c
	best.c.Due = best.due()
	c.Due = best.c.Due
	best.owner = newID()
	best.leaseUntil = now.Add(ttl)
	return &c, best.owner, nil
}

// PutBackCancel implements session.PendingCancels.
func (q *MemoryQueue) PutBackCancel(ctx context.Context, c *session.Cancel, lease string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	it, ok := q.items[c.ID]
	if !ok || lease == "" || it.owner != lease {
		return false, nil
	}
	q.items[c.ID] = &memItem{c: *c}
	return true, nil
}

// RemoveCancel implements session.PendingCancels.
func (q *MemoryQueue) RemoveCancel(ctx context.Context, id string) error {
	q.mu.Lock()
	delete(q.items, id)
	q.mu.Unlock()
	return nil
}

// CountCancels implements session.PendingCancels.
func (q *MemoryQueue) CountCancels(context.Context) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items), nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand docs)
	return hex.EncodeToString(b[:])
}
