package cache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// revokes records what Config.Revoke receives.
type revokes struct {
	mu  sync.Mutex
	got []string // "<reason> <access token> <refresh token>"
}

func (r *revokes) hook(c *Config) {
	c.Revoke = func(_ context.Context, t session.Cancel, reason string) {
		r.mu.Lock()
		r.got = append(r.got, fmt.Sprintf("%s %s %s", reason, t.AccessToken.Reveal(), t.RefreshToken.Reveal()))
		r.mu.Unlock()
	}
}

func (r *revokes) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func (r *revokes) want(t *testing.T, want ...string) {
	t.Helper()
	if got := r.list(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Revoke got %q, want %q", got, want)
	}
}

// TestRevokeMemoryOnly: a logout and an end of a customer hand the
// session's current tokens (after a refresh: the new ones) to Revoke once;
// a second logout, a dead refresh token and an expiry hand nothing.
func TestRevokeMemoryOnly(t *testing.T) {
	var r revokes
	h := newHarness(t, r.hook)
	k1, g1 := h.login(t, "code-1") // access-1
	h.atAccessExpiry(g1, time.Second)
	mustGet(t, h, k1) // refreshed: access-2
	if err := h.Logout(context.Background(), k1); err != nil {
		t.Fatal(err)
	}
	r.want(t, "logout access-2 refresh-2")
	_ = h.Logout(context.Background(), k1)
	r.want(t, "logout access-2 refresh-2")

	k3, _ := h.login(t, "code-3")
	k4, _ := h.login(t, "code-4")
	customer := mustGet(t, h, k3).CustomerID
	if customer != mustGet(t, h, k4).CustomerID {
		t.Skip("the fake gives each login its own customer")
	}
	n, _ := h.EndCustomer(context.Background(), customer)
	if n != 2 || len(r.list()) != 3 {
		t.Fatalf("ended %d, revokes %q", n, r.list())
	}

	// Ends Rebell decided, or expiries: nothing.
	k5, g5 := h.login(t, "code-5")
	h.fake.scriptRefresh(result{err: errUsedRefresh})
	h.atAccessExpiry(g5, time.Second)
	_, _ = h.get(t, k5)
	if len(r.list()) != 3 {
		t.Fatalf("a dead refresh token revoked: %q", r.list())
	}
}

// TestRevokeEvicted: without a store, a session ended to make room in the
// full memory tier is revoked; a Close drops sessions without revoking.
func TestRevokeEvicted(t *testing.T) {
	var r revokes
	const max = 4
	h := newHarness(t, r.hook, func(c *Config) { c.MaxSessions = max; c.LoginDedupWindow = 0 })
	for i := range 3 * max {
		h.clock.Advance(time.Second)
		h.login(t, fmt.Sprintf("code-%d", i))
	}
	got := r.list()
	if len(got) < 2*max-max || len(got) > 3*max-1 {
		t.Fatalf("%d revokes for %d logins into %d slots", len(got), 3*max, max)
	}
	for _, g := range got {
		if g[:len(RevokeEvicted)] != RevokeEvicted {
			t.Fatalf("revoke %q", g)
		}
	}
	before := len(got)
	h.Close()
	if len(r.list()) != before {
		t.Fatal("Close revoked sessions")
	}
}

// TestRevokeWithStore: with a shared store, the instance whose end deleted
// the record revokes it, once, with the record's tokens (refreshed by
// another instance); other instances, which hear of the end or log out
// the ended session again, do not.
func TestRevokeWithStore(t *testing.T) {
	var r revokes
	cl := newCluster(t, 3, r.hook)
	a, b, c := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	k, g := a.login(t, "code-1") // access-1
	mustGet(t, b, k)
	mustGet(t, c, k)
	b.atAccessExpiry(g, time.Second)
	mustGet(t, b, k) // b refreshes: the record holds access-2
	if err := c.Logout(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	r.want(t, "logout access-2 refresh-2")
	for _, h := range []*harness{a, b} {
		if err := h.Logout(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	r.want(t, "logout access-2 refresh-2")

	// An end of a customer on one instance ends its sessions made on two.
	k2, _ := a.login(t, "code-2")
	customer := mustGet(t, a, k2).CustomerID
	n, err := b.EndCustomer(context.Background(), customer)
	if err != nil || n != 1 {
		t.Fatalf("EndCustomer = %d, %v", n, err)
	}
	if got := r.list(); len(got) != 2 || got[1][:len(RevokeCustomer)] != RevokeCustomer {
		t.Fatalf("revokes %q", got)
	}
}
