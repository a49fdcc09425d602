package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// TestConcurrentChurn runs logins, requests, refreshes (with failures),
// logouts, customer ends and evictions at once under the race detector, then
// checks that the customer index agrees with memory.
func TestConcurrentChurn(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.MaxSessions = 64
		c.IdleTimeout = 20 * time.Minute
		c.RetryCooldown = time.Second
	})
	for i := range 4 {
		h.fake.customerForCode[fmt.Sprintf("code-%d", i)] = fmt.Sprintf("customer-%d", i%3)
	}
	var mu sync.Mutex
	var keys []Key
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 300 {
				switch n := r.IntN(100); {
				case n < 10:
					id, _, err := h.Login(ctx, rebell.NewSecret(fmt.Sprintf("code-%d", r.IntN(4))))
					if err == nil {
						k, _ := h.ParseSessionID(id)
						mu.Lock()
						keys = append(keys, k)
						mu.Unlock()
					} else if !errors.Is(err, ErrStoreUnavailable) {
						t.Errorf("Login: %v", err)
					}
				case n < 13:
					h.clock.Advance(time.Duration(r.IntN(120)) * time.Second)
				case n < 15:
					h.fake.scriptRefresh(result{err: errUnknown})
				case n < 17:
					mu.Lock()
					if len(keys) > 0 {
						_ = h.Logout(ctx, keys[r.IntN(len(keys))])
					}
					mu.Unlock()
				case n < 18:
					_, _ = h.EndCustomer(ctx, fmt.Sprintf("customer-%d", r.IntN(3)))
				default:
					mu.Lock()
					var k Key
					if len(keys) > 0 {
						k = keys[r.IntN(len(keys))]
					}
					mu.Unlock()
					_, err := h.Get(ctx, k)
					if err != nil && !errors.Is(err, ErrSessionInvalid) && !errors.Is(err, ErrRebellUnavailable) &&
						!errors.Is(err, ErrReauthRequired) {
						t.Errorf("Get: %v", err)
					}
				}
			}
		})
	}
	waitGroup(t, &wg, "the churning goroutines")
	mu.Lock()
	all := append([]Key(nil), keys...)
	mu.Unlock()
	for _, k := range all {
		h.settle(t, k)
	}
	h.mem.rc.Wait()

	held := map[Key]bool{}
	for _, k := range all {
		if e := h.mem.get(&k); e != nil && !e.ended.Load() {
			held[k] = true
		}
	}
	indexed := 0
	for j := range h.mem.shards {
		sh := &h.mem.shards[j]
		sh.mu.RLock()
		for _, head := range sh.s.customers {
			for v := head; v != 0; v = sh.s.slot(v - 1).nextCust {
				indexed++
				if !held[sh.s.slot(v-1).key] {
					t.Errorf("index holds a session memory does not")
				}
			}
		}
		sh.mu.RUnlock()
	}
	if indexed != len(held) || h.Len() != indexed {
		t.Fatalf("memory holds %d live sessions, index %d, Len %d", len(held), indexed, h.Len())
	}
}
