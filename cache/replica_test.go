package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// loginOn logs in on node i and returns the session id and key.
func (cl *cluster) loginOn(t *testing.T, i int, code string) (string, Key, *Grant) {
	t.Helper()
	id, g, err := cl.nodes[i].Login(context.Background(), rebell.NewSecret(code))
	if err != nil {
		t.Fatalf("Login on %d: %v", i, err)
	}
	k, ok := cl.nodes[i].ParseSessionID(id)
	if !ok {
		t.Fatalf("Login on %d returned an id that does not verify", i)
	}
	return id, k, g
}

// getDuringRefresh makes session k (last granted g) due for a refresh,
// starts a Get of it on node i and returns once the fake Rebell holds the
// refresh call; finish lets Rebell answer and returns what the Get returned.
func (cl *cluster) getDuringRefresh(t *testing.T, i int, k Key, g *Grant) (finish func() (*Grant, error)) {
	t.Helper()
	cl.clock.Set(g.AccessTokenExpiry.Add(-time.Second))
	release := cl.fake.holdCalls()
	type answer struct {
		g   *Grant
		err error
	}
	done := make(chan answer, 1)
	go func() {
		g, err := cl.nodes[i].Get(context.Background(), k)
		done <- answer{g, err}
	}()
	cl.fake.awaitEntered(t, "refresh")
	// The request may also have started a comparison with the store: let it
	// finish before the test changes the store.
	if e := cl.nodes[i].mem.get(&k); e != nil {
		awaitCheck(t, e)
	}
	return func() (*Grant, error) {
		release()
		a := receive(t, done, "the request waiting for the refresh")
		return a.g, a.err
	}
}

func TestSharedSessionWorksOnEveryInstance(t *testing.T) {
	cl := newCluster(t, 3)
	_, k, g := cl.loginOn(t, 0, "code-1")
	if v := cl.srv.version(k); v != 1 {
		t.Fatalf("record version after login = %d, want 1", v)
	}
	for i := 1; i < 3; i++ {
		got, err := cl.nodes[i].Get(context.Background(), k)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if got.CustomerID != g.CustomerID || !got.AccessToken.Equal(g.AccessToken) {
			t.Fatalf("node %d got another grant", i)
		}
		if cl.nodes[i].Len() != 1 {
			t.Fatalf("node %d holds %d sessions, want 1", i, cl.nodes[i].Len())
		}
	}
	// A cached request costs no store call.
	before := cl.srv.calls.Load()
	for i := 0; i < 100; i++ {
		mustGet(t, cl.nodes[i%3], k)
	}
	if d := cl.srv.calls.Load() - before; d != 0 {
		t.Fatalf("cached requests made %d store calls", d)
	}
	// An unknown session is invalid everywhere.
	_, unknown := session.RandomIDs().New()
	cl.wantInvalid(t, 1, unknown, "unknown session")
}

func TestSharedRefreshStormCallsRebellOnce(t *testing.T) {
	cl := newCluster(t, 3)
	_, k, g := cl.loginOn(t, 0, "code-1")
	for i := 1; i < 3; i++ {
		mustGet(t, cl.nodes[i], k) // every instance holds a copy
	}
	cl.clock.Set(g.AccessTokenExpiry.Add(-time.Second)) // must refresh
	release := cl.fake.holdCalls()
	var wg sync.WaitGroup
	grants := make([]*Grant, 300)
	errs := make([]error, 300)
	for i := range grants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			grants[i], errs[i] = cl.nodes[i%3].Get(context.Background(), k)
		}()
	}
	cl.fake.awaitEntered(t, "refresh")
	release()
	waitGroup(t, &wg, "300 requests for a refreshing session")
	if n := cl.fake.refreshes.Load(); n != 1 {
		t.Fatalf("applyToken refresh calls = %d, want 1", n)
	}
	for i := range grants {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if grants[i].AccessToken.Equal(g.AccessToken) || !grants[i].AccessToken.Equal(grants[0].AccessToken) {
			t.Fatalf("request %d did not get the one new token", i)
		}
	}
	if v := cl.srv.version(k); v != 2 {
		t.Fatalf("record version = %d, want 2", v)
	}
}

func TestSharedLogoutEndsEverywhere(t *testing.T) {
	cl := newCluster(t, 3)
	_, k, _ := cl.loginOn(t, 0, "code-1")
	for i := 1; i < 3; i++ {
		mustGet(t, cl.nodes[i], k)
	}
	if err := cl.nodes[2].Logout(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := cl.nodes[i].Get(context.Background(), k); !errors.Is(err, ErrSessionInvalid) {
			t.Fatalf("node %d after logout: %v", i, err)
		}
		if cl.nodes[i].Len() != 0 {
			t.Fatalf("node %d still holds the session", i)
		}
	}
	// Logout of a session this instance never held also reaches the store.
	_, k2, _ := cl.loginOn(t, 0, "code-2")
	if err := cl.nodes[1].Logout(context.Background(), k2); err != nil {
		t.Fatal(err)
	}
	cl.wantInvalid(t, 0, k2, "after logout elsewhere")
}

func TestSharedRecheckWithoutAnnouncement(t *testing.T) {
	cl := newCluster(t, 2)
	_, k, _ := cl.loginOn(t, 0, "code-1")
	mustGet(t, cl.nodes[1], k)
	cl.srv.dropSilently(k) // the end's announcement was lost
	cl.clock.Advance(recheckInterval - time.Second)
	mustGet(t, cl.nodes[1], k) // still the copy
	cl.clock.Advance(time.Second)
	cl.wantInvalid(t, 1, k, "after the recheck interval")

	// A re-established subscription makes every copy be compared at once.
	_, k2, _ := cl.loginOn(t, 0, "code-2")
	mustGet(t, cl.nodes[1], k2)
	cl.srv.dropSilently(k2)
	cl.clock.Advance(time.Second)
	cl.srv.resync()
	cl.clock.Advance(time.Millisecond)
	cl.wantInvalid(t, 1, k2, "after resync")
}

func TestSharedStoreDown(t *testing.T) {
	cl := newCluster(t, 2)
	_, k, g := cl.loginOn(t, 0, "code-1")
	mustGet(t, cl.nodes[1], k)
	cl.srv.down.Store(true)

	// In memory and valid: served, also past the recheck interval.
	cl.clock.Advance(2 * recheckInterval)
	mustGet(t, cl.nodes[1], k)
	// Not in memory: store_unavailable.
	_, unknown := session.RandomIDs().New()
	if _, err := cl.nodes[1].Get(context.Background(), unknown); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("miss with the store down: %v", err)
	}
	// Login: refused before Rebell is asked.
	exchanges := cl.fake.exchanges.Load()
	if _, _, err := cl.nodes[0].Login(context.Background(), rebell.NewSecret("code-2")); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("login with the store down: %v", err)
	}
	if cl.fake.exchanges.Load() != exchanges {
		t.Fatal("Rebell was asked although the login could not be stored")
	}
	// In the refresh-ahead window: the cached token, no refresh without the lease.
	cl.clock.Set(g.AccessTokenExpiry.Add(-time.Minute))
	if got := mustGet(t, cl.nodes[1], k); !got.AccessToken.Equal(g.AccessToken) {
		t.Fatal("cached token not served")
	}
	cl.nodes[1].settle(t, k)
	// Past the access token's expiry: store_unavailable.
	cl.clock.Set(g.AccessTokenExpiry.Add(time.Second))
	if _, err := cl.nodes[1].Get(context.Background(), k); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("expired token with the store down: %v", err)
	}
	if cl.fake.refreshes.Load() != 0 {
		t.Fatal("refreshed without the lease")
	}
	// Logout cannot be stored: an error, not a silent success.
	if err := cl.nodes[1].Logout(context.Background(), k); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("logout with the store down: %v", err)
	}

	// The store is back: everything works again.
	cl.srv.down.Store(false)
	cl.clock.Advance(time.Minute) // past the retry cooldown
	got, err := cl.nodes[0].Get(context.Background(), k)
	if err != nil || got.AccessToken.Equal(g.AccessToken) {
		t.Fatalf("after the store came back: %v", err)
	}
	cl.loginOn(t, 1, "code-3")
}

func TestSharedRefreshStoredWhileStoreDownIsWrittenBack(t *testing.T) {
	cl := newCluster(t, 2)
	_, k, g := cl.loginOn(t, 0, "code-1")
	mustGet(t, cl.nodes[1], k)
	finish := cl.getDuringRefresh(t, 0, k, g)
	cl.srv.down.Store(true) // the store goes away while Rebell answers
	g2, err := finish()
	if err != nil {
		t.Fatal(err)
	}
	if g2.AccessToken.Equal(g.AccessToken) {
		t.Fatal("the refreshed token was not served")
	}
	if cl.srv.version(k) != 1 {
		t.Fatal("written although the store was down")
	}
	cl.srv.down.Store(false)
	cl.clock.Advance(recheckInterval)
	mustGet(t, cl.nodes[0], k) // the recheck writes it back
	if v := cl.srv.version(k); v != 2 {
		t.Fatalf("version after write-back = %d, want 2", v)
	}
	if got := mustGet(t, cl.nodes[1], k); !got.AccessToken.Equal(g2.AccessToken) {
		t.Fatal("the other instance did not get the written-back token")
	}
}

// TestSharedLeaseExpiresMidCall: a holder whose lease expired while Rebell
// was slow loses to the instance that took over, whichever order their
// answers come in; the session survives and no instance keeps the loser's
// tokens.
func TestSharedLeaseExpiresMidCall(t *testing.T) {
	for _, tc := range []struct {
		name     string
		slowSays error // what the slow holder hears from Rebell
	}{
		{"slow holder succeeds later", nil},
		{"slow holder hears USED_REFRESH_TOKEN", errUsedRefresh},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t, 2)
			slow := newFakeExchanger(cl.clock)
			cl.nodes[0].exch = slow
			cl.nodes[0].replica().exch = slow // the layer holds its own copy of the settings
			_, k, g := cl.loginOn(t, 1, "code-1")
			mustGet(t, cl.nodes[0], k)
			cl.clock.Set(g.AccessTokenExpiry.Add(-30 * time.Second))

			release := slow.holdCalls()
			if tc.slowSays != nil {
				slow.scriptRefresh(result{err: tc.slowSays})
			}
			slowDone := make(chan error, 1)
			go func() {
				_, err := cl.nodes[0].Get(context.Background(), k)
				slowDone <- err
			}()
			slow.awaitEntered(t, "refresh")

			// The lease lapses; the other instance takes over and refreshes.
			cl.clock.Set(g.AccessTokenExpiry.Add(-5 * time.Second))
			cl.srv.mu.Lock()
			for key, l := range cl.srv.leases {
				l.expires = cl.clock.Now()
				cl.srv.leases[key] = l
			}
			cl.srv.mu.Unlock()
			winner := mustGet(t, cl.nodes[1], k)
			if winner.AccessToken.Equal(g.AccessToken) || cl.srv.version(k) != 2 {
				t.Fatal("the taking-over instance did not refresh")
			}

			release()
			if err := receive(t, slowDone, "the slow holder's request"); err != nil {
				t.Fatalf("slow holder's request: %v", err)
			}
			if cl.srv.version(k) != 2 {
				t.Fatalf("version = %d: the slow holder overwrote the winner", cl.srv.version(k))
			}
			for i := 0; i < 2; i++ {
				got := mustGet(t, cl.nodes[i], k)
				if !got.AccessToken.Equal(winner.AccessToken) {
					t.Fatalf("node %d serves another token than the stored one", i)
				}
			}
		})
	}
}

func TestSharedDeadRefreshTokenEndsEverywhere(t *testing.T) {
	cl := newCluster(t, 2)
	_, k, g := cl.loginOn(t, 0, "code-1")
	mustGet(t, cl.nodes[1], k)
	cl.fake.scriptRefresh(result{err: errUsedRefresh})
	cl.clock.Set(g.AccessTokenExpiry.Add(-time.Second))
	if _, err := cl.nodes[0].Get(context.Background(), k); !errors.Is(err, ErrReauthRequired) {
		t.Fatalf("dead refresh token: %v", err)
	}
	cl.wantInvalid(t, 1, k, "other instance after the end")
}

func TestSharedLoginDeduplicatedAcrossInstances(t *testing.T) {
	cl := newCluster(t, 2)
	release := cl.fake.holdCalls()
	type res struct {
		id  string
		err error
	}
	out := make(chan res, 2)
	go func() {
		id, _, err := cl.nodes[0].Login(context.Background(), rebell.NewSecret("same-code"))
		out <- res{id, err}
	}()
	cl.fake.awaitEntered(t, "exchange")
	go func() {
		id, _, err := cl.nodes[1].Login(context.Background(), rebell.NewSecret("same-code"))
		out <- res{id, err}
	}()
	release()
	a, b := receive(t, out, "first login"), receive(t, out, "second login")
	if a.err != nil || b.err != nil || a.id != b.id {
		t.Fatalf("logins: %+v %+v", a, b)
	}
	if n := cl.fake.exchanges.Load(); n != 1 {
		t.Fatalf("exchanges = %d, want 1", n)
	}
	// Within the window, later too.
	id, _, err := cl.nodes[1].Login(context.Background(), rebell.NewSecret("same-code"))
	if err != nil || id != a.id || cl.fake.exchanges.Load() != 1 {
		t.Fatalf("login again: %v", err)
	}
}

func TestSharedEndCustomer(t *testing.T) {
	cl := newCluster(t, 2)
	cl.fake.customerForCode["c1"] = "cust-A"
	cl.fake.customerForCode["c2"] = "cust-A"
	cl.fake.customerForCode["c3"] = "cust-B"
	_, k1, _ := cl.loginOn(t, 0, "c1")
	_, k2, _ := cl.loginOn(t, 1, "c2")
	_, k3, _ := cl.loginOn(t, 1, "c3")
	mustGet(t, cl.nodes[0], k2)
	n, err := cl.nodes[0].EndCustomer(context.Background(), "cust-A")
	if err != nil || n != 2 {
		t.Fatalf("EndCustomer = %d, %v; want 2", n, err)
	}
	for i := 0; i < 2; i++ {
		for _, k := range []Key{k1, k2} {
			if _, err := cl.nodes[i].Get(context.Background(), k); !errors.Is(err, ErrSessionInvalid) {
				t.Fatalf("node %d: ended customer's session: %v", i, err)
			}
		}
		mustGet(t, cl.nodes[i], k3)
	}
}

func TestSharedIdleTimeoutCountsEveryInstance(t *testing.T) {
	cl := newCluster(t, 2, func(c *Config) { c.IdleTimeout = 10 * time.Minute })
	_, k, _ := cl.loginOn(t, 0, "code-1")
	expires := func() time.Duration {
		cl.srv.mu.Lock()
		defer cl.srv.mu.Unlock()
		return cl.srv.recs[k].expires.Sub(cl.clock.Now())
	}
	// The record lives for the idle timeout plus two recheck intervals
	// after its last reported use, not until R + grace.
	if got, want := expires(), 10*time.Minute+2*recheckInterval; got != want {
		t.Fatalf("record lifetime %v, want %v", got, want)
	}
	mustGet(t, cl.nodes[1], k)
	// Used on node 0 only, every minute: node 0 reports it at each recheck.
	for i := 0; i < 11; i++ {
		cl.clock.Advance(recheckInterval)
		mustGet(t, cl.nodes[0], k)
	}
	if got, want := expires(), 10*time.Minute+2*recheckInterval; got != want {
		t.Fatalf("record lifetime after a reported use %v, want %v", got, want)
	}
	// Node 1 has not seen a use for 11 minutes, but the session is in use.
	mustGet(t, cl.nodes[1], k)
	// Unused everywhere for longer than the timeout: ended everywhere.
	cl.clock.Advance(11 * time.Minute)
	cl.wantInvalid(t, 1, k, "idle everywhere")
	cl.wantInvalid(t, 0, k, "idle everywhere, other instance")
}

// TestSharedStoreLosesLatestVersion: a failover to a replica that lagged
// brings back the record before the last refresh, whose refresh token
// Rebell has spent. The instance holding the newer state writes it back, at
// its next recheck or before its next refresh.
func TestSharedStoreLosesLatestVersion(t *testing.T) {
	for _, via := range []string{"recheck", "refresh"} {
		t.Run(via, func(t *testing.T) {
			cl := newCluster(t, 2)
			_, k, g := cl.loginOn(t, 0, "code-1")
			cl.srv.mu.Lock()
			v1 := cl.srv.recs[k]
			cl.srv.mu.Unlock()
			cl.clock.Set(g.AccessTokenExpiry.Add(-time.Second))
			g2 := mustGet(t, cl.nodes[0], k) // refreshed: version 2
			if cl.srv.version(k) != 2 {
				t.Fatal("no refresh")
			}
			cl.srv.mu.Lock()
			cl.srv.recs[k] = v1 // the failover
			cl.srv.mu.Unlock()

			switch via {
			case "recheck":
				cl.clock.Advance(recheckInterval)
				mustGet(t, cl.nodes[0], k)
				if v := cl.srv.version(k); v != 2 {
					t.Fatalf("version after the recheck = %d, want 2 written back", v)
				}
				if got := mustGet(t, cl.nodes[1], k); !got.AccessToken.Equal(g2.AccessToken) {
					t.Fatal("the other instance did not get the written-back token")
				}
			case "refresh":
				cl.clock.Set(g2.AccessTokenExpiry.Add(-time.Second))
				got := mustGet(t, cl.nodes[0], k)
				if v := cl.srv.version(k); v != 3 || got.AccessToken.Equal(g2.AccessToken) {
					t.Fatalf("version after the refresh = %d, want 3", v)
				}
				// The refresh presented version 2's refresh token, not the spent one.
				p := cl.fake.presented()
				if len(p) != 2 || p[0] == p[1] {
					t.Fatalf("refresh tokens presented: %v", p)
				}
			}
		})
	}
}

// TestSharedStoreLosesVersionDuringRefresh: a failover to a replica that
// lagged happens while applyToken runs, so the refresh's compare-and-set
// finds the record behind the state it refreshed from. Rebell has spent
// that state's refresh token on this call: the new tokens are the only live
// ones, and are written over the record, not discarded.
func TestSharedStoreLosesVersionDuringRefresh(t *testing.T) {
	for _, lost := range []string{"a version", "the record"} {
		t.Run(lost, func(t *testing.T) {
			cl := newCluster(t, 2)
			_, k, g := cl.loginOn(t, 0, "code-1")
			cl.srv.mu.Lock()
			v1 := cl.srv.recs[k]
			cl.srv.mu.Unlock()
			cl.clock.Set(g.AccessTokenExpiry.Add(-time.Second))
			g2 := mustGet(t, cl.nodes[0], k) // refreshed: version 2
			if cl.srv.version(k) != 2 {
				t.Fatal("no refresh")
			}
			for len(cl.fake.entered) > 0 { // forget the first refresh's start
				<-cl.fake.entered
			}
			finish := cl.getDuringRefresh(t, 0, k, g2) // from version 2 to 3
			cl.srv.mu.Lock()
			if lost == "a version" {
				cl.srv.recs[k] = v1 // the failover: back to version 1
			} else {
				delete(cl.srv.recs, k) // a failover to an empty replica
			}
			cl.srv.mu.Unlock()
			g3, err := finish()
			if err != nil {
				t.Fatal(err)
			}
			if g3.AccessToken.Equal(g2.AccessToken) {
				t.Fatal("the refreshed tokens were discarded")
			}
			if v := cl.srv.version(k); v != 3 {
				t.Fatalf("stored version %d, want 3 written back", v)
			}
			if got := mustGet(t, cl.nodes[1], k); !got.AccessToken.Equal(g3.AccessToken) {
				t.Fatal("the other instance did not get the refreshed tokens")
			}
			// The next refresh presents version 3's refresh token.
			cl.clock.Set(g3.AccessTokenExpiry.Add(-time.Second))
			mustGet(t, cl.nodes[1], k)
			p := cl.fake.presented()
			if len(p) != 3 || p[2] == p[1] || p[2] == p[0] {
				t.Fatalf("refresh tokens presented: %v", p)
			}
		})
	}
}

// TestSharedMemoryFull: with a shared store, a full memory tier drops the
// copy used least recently (the session lives on in the store, and is read
// back when used), and every login succeeds.
func TestSharedMemoryFull(t *testing.T) {
	cl := newCluster(t, 2, func(c *Config) { c.MaxSessions = 1 })
	_, k1, g1 := cl.loginOn(t, 0, "code-1")
	_, k2, _ := cl.loginOn(t, 0, "code-2")
	if cl.srv.version(k1) != 1 || cl.srv.version(k2) != 1 || cl.nodes[0].Len() != 1 {
		t.Fatalf("stored %d and %d, in memory %d", cl.srv.version(k1), cl.srv.version(k2), cl.nodes[0].Len())
	}
	for i := 0; i < 2; i++ {
		before := cl.srv.calls.Load()
		if got := mustGet(t, cl.nodes[i], k1); !got.AccessToken.Equal(g1.AccessToken) {
			t.Fatalf("node %d served another token", i)
		}
		if cl.srv.calls.Load() == before {
			t.Fatalf("node %d served a session it does not hold without reading the store", i)
		}
	}
	mustGet(t, cl.nodes[0], k2)
}

// TestSharedEndedWhileLoading: an end announced while an instance reads the
// record after a memory miss is not lost: the read's result is dropped.
func TestSharedEndedWhileLoading(t *testing.T) {
	cl := newCluster(t, 2)
	_, k, _ := cl.loginOn(t, 0, "code-1")
	cl.srv.mu.Lock()
	cl.srv.afterLoad = func(Key) {
		cl.srv.mu.Lock()
		cl.srv.afterLoad = nil
		cl.srv.mu.Unlock()
		if err := cl.nodes[0].Logout(context.Background(), k); err != nil {
			t.Error(err)
		}
	}
	cl.srv.mu.Unlock()
	cl.wantInvalid(t, 1, k, "read overtaken by a logout")
	if cl.nodes[1].Len() != 0 {
		t.Fatal("the ended session stayed in memory")
	}
}

// TestSharedStoreRestartsEmpty: sessions held in memory survive a store that
// comes back without its data: the instances write them back. A session
// whose record is missing without such a loss is ended.
func TestSharedStoreRestartsEmpty(t *testing.T) {
	cl := newCluster(t, 3)
	_, k, g := cl.loginOn(t, 0, "code-1")
	mustGet(t, cl.nodes[1], k)
	cl.clock.Set(g.AccessTokenExpiry.Add(-time.Second))
	g2 := mustGet(t, cl.nodes[0], k) // version 2
	// Node 1 reads version 2 when the update is announced (in a goroutine
	// of its own): wait for it, so that both hold the latest version when
	// the data is lost.
	waitVersion(t, cl.nodes[1], k, 2)

	cl.clock.Advance(time.Second)
	cl.srv.restartEmpty()
	cl.clock.Advance(time.Second)
	// Node 1 comes first and writes the session back.
	if got := mustGet(t, cl.nodes[1], k); !got.AccessToken.Equal(g2.AccessToken) {
		t.Fatal("node 1 serves an old token after the restore")
	}
	mustGet(t, cl.nodes[0], k)
	if v := cl.srv.version(k); v != 2 {
		t.Fatalf("restored version %d, want 2", v)
	}
	// A third instance that never held it reads the restored record.
	if got := mustGet(t, cl.nodes[2], k); !got.AccessToken.Equal(g2.AccessToken) {
		t.Fatal("node 2 reads another token")
	}
	// The customer index is back too.
	if n, err := cl.nodes[2].EndCustomer(context.Background(), g.CustomerID); err != nil || n < 1 {
		t.Fatalf("EndCustomer after the restore: %d %v", n, err)
	}
	for i := 0; i < 3; i++ {
		if _, err := cl.nodes[i].Get(context.Background(), k); !errors.Is(err, ErrSessionInvalid) {
			t.Fatalf("node %d after EndCustomer: %v", i, err)
		}
	}

	// A session only node 0 holds is written back without a request there,
	// so it works on the other instances.
	_, only0, _ := cl.loginOn(t, 0, "code-4")
	cl.clock.Advance(time.Second)
	cl.srv.restartEmpty()
	deadline := time.Now().Add(10 * time.Second)
	for cl.srv.version(only0) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("node 0 did not write back the session it holds")
		}
		time.Sleep(time.Millisecond)
	}
	mustGet(t, cl.nodes[2], only0)
	// Ended later elsewhere: node 0, which wrote it back, deletes it again
	// (its write may have come after the end).
	ends := cl.srv.ends.Load()
	if err := cl.nodes[2].Logout(context.Background(), only0); err != nil {
		t.Fatal(err)
	}
	for cl.srv.ends.Load() < ends+2 {
		if time.Now().After(deadline) {
			t.Fatal("node 0 did not end the session it wrote back")
		}
		time.Sleep(time.Millisecond)
	}

	// Without a loss, a missing record is an ended session.
	_, k3, _ := cl.loginOn(t, 0, "code-3")
	mustGet(t, cl.nodes[1], k3)
	cl.srv.dropSilently(k3)
	cl.clock.Advance(time.Second)
	cl.srv.resync()
	cl.clock.Advance(time.Second)
	cl.wantInvalid(t, 1, k3, "missing record without a loss")
}

// waitVersion waits until h holds version v of session k, which an
// announcement makes it read in a goroutine of its own.
func waitVersion(t *testing.T, h *harness, k Key, v uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.entryOf(t, k).state.Load().version != v {
		if time.Now().After(deadline) {
			t.Fatalf("node never read version %d", v)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSharedNoWriteBackOfEndedSession: an instance that was not subscribed
// when a session ended (after the store lost its data) does not bring it
// back when it reconnects: the store's end mark refuses it.
func TestSharedNoWriteBackOfEndedSession(t *testing.T) {
	cl := newCluster(t, 3)
	_, k, _ := cl.loginOn(t, 0, "code-1")
	mustGet(t, cl.nodes[1], k)
	st1 := cl.nodes[1].replica().store.(*fakeStore)
	st1.disconnect()
	cl.clock.Advance(time.Second)
	cl.srv.wipe()
	cl.nodes[0].replica().store.(*fakeStore).reconnect(true)
	cl.nodes[2].replica().store.(*fakeStore).reconnect(true)
	cl.clock.Advance(time.Second)
	mustGet(t, cl.nodes[0], k) // written back by node 0
	if err := cl.nodes[2].Logout(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	cl.wantInvalid(t, 0, k, "node 0 after the logout")
	// Node 1 missed the logout; it reconnects and learns of the loss.
	st1.reconnect(true)
	cl.clock.Advance(time.Second)
	cl.wantInvalid(t, 1, k, "node 1 brought back an ended session")
	if v := cl.srv.version(k); v != 0 {
		t.Fatalf("record of the ended session is back (version %d)", v)
	}
}

// TestSharedRecordGoneDuringRefresh: the record vanishes while Rebell
// answers a refresh. Lost by the store: the new tokens are written back.
// Ended by a logout elsewhere: they are discarded and the session is over.
func TestSharedRecordGoneDuringRefresh(t *testing.T) {
	for _, how := range []string{"lost", "logout"} {
		t.Run(how, func(t *testing.T) {
			cl := newCluster(t, 2)
			_, k, g := cl.loginOn(t, 0, "code-1")
			finish := cl.getDuringRefresh(t, 0, k, g)
			if how == "lost" {
				cl.srv.wipe()
			} else if err := cl.nodes[1].Logout(context.Background(), k); err != nil {
				t.Fatal(err)
			}
			var r struct {
				g   *Grant
				err error
			}
			r.g, r.err = finish()
			switch how {
			case "lost":
				if r.err != nil || r.g.AccessToken.Equal(g.AccessToken) {
					t.Fatalf("refresh after the loss: %v", r.err)
				}
				if v := cl.srv.version(k); v != 2 {
					t.Fatalf("version in the store = %d, want 2", v)
				}
				if got := mustGet(t, cl.nodes[1], k); !got.AccessToken.Equal(r.g.AccessToken) {
					t.Fatal("the other instance reads another token")
				}
			case "logout":
				if !errors.Is(r.err, ErrSessionInvalid) {
					t.Fatalf("refresh after the logout: %v", r.err)
				}
				if v := cl.srv.version(k); v != 0 {
					t.Fatalf("the ended session is back at version %d", v)
				}
			}
		})
	}
}

// TestSharedShortIdleTimeout: with an idle timeout shorter than the recheck
// interval, instances report their uses often enough (every quarter of the
// timeout) that a session in use on one is not ended by another.
func TestSharedShortIdleTimeout(t *testing.T) {
	cl := newCluster(t, 2, func(c *Config) { c.IdleTimeout = 20 * time.Second })
	_, k, _ := cl.loginOn(t, 0, "code-1")
	mustGet(t, cl.nodes[1], k)
	for i := 0; i < 15; i++ { // in use on node 0 for a minute
		cl.clock.Advance(4 * time.Second)
		mustGet(t, cl.nodes[0], k)
	}
	mustGet(t, cl.nodes[1], k) // idle here for 60 s, but in use
	cl.clock.Advance(21 * time.Second)
	cl.wantInvalid(t, 0, k, "idle everywhere")
	cl.wantInvalid(t, 1, k, "idle everywhere, other instance")
}

// wantInvalid asserts that node i rejects session k as invalid.
// wantInvalid checks that session k is over on node i: at once, or, when
// the node still holds a copy whose comparison with the store the request
// started in the background (the request is served from the copy), from
// the next request on.
func (cl *cluster) wantInvalid(t *testing.T, i int, k Key, what string) {
	t.Helper()
	e := cl.nodes[i].mem.get(&k)
	_, err := cl.nodes[i].Get(context.Background(), k)
	if err == nil && e != nil {
		awaitCheck(t, e)
		_, err = cl.nodes[i].Get(context.Background(), k)
	}
	if !errors.Is(err, ErrSessionInvalid) {
		t.Fatalf("%s: node %d: %v, want ErrSessionInvalid", what, i, err)
	}
}

// TestSharedLeaseRenewedWhileRebellIsSlow: the holder renews its lease while
// applyToken runs, so a slow Rebell does not let another instance present
// the same refresh token.
func TestSharedLeaseRenewedWhileRebellIsSlow(t *testing.T) {
	for _, renew := range []bool{true, false} {
		t.Run(map[bool]string{true: "renewed", false: "not renewed"}[renew], func(t *testing.T) {
			cl := newCluster(t, 2)
			tick := make(chan time.Time)
			cl.nodes[0].replica().leaseTTL = 10 * time.Second
			cl.nodes[0].replica().leaseTicker = func(time.Duration) (<-chan time.Time, func()) { return tick, func() {} }
			_, k, g := cl.loginOn(t, 0, "code-1")
			mustGet(t, cl.nodes[1], k)
			cl.clock.Set(g.AccessTokenExpiry.Add(-time.Second))
			release := cl.fake.holdCalls()
			done := make(chan *Grant, 2)
			go func() { done <- mustGet(t, cl.nodes[0], k) }()
			cl.fake.awaitEntered(t, "refresh")

			leaseExpiry := func() time.Time {
				cl.srv.mu.Lock()
				defer cl.srv.mu.Unlock()
				return cl.srv.leases[k].expires
			}
			first := leaseExpiry()
			cl.clock.Advance(8 * time.Second)
			if renew {
				tick <- time.Time{}
				// The renewal runs in the holder's goroutine.
				eventually(t, "lease renewal", func() bool { return leaseExpiry().After(first) },
					func() string {
						return fmt.Sprintf("the lease still expires at %v, as before the renewal tick", leaseExpiry())
					})
			}
			cl.clock.Advance(8 * time.Second) // past the first expiry
			go func() { done <- mustGet(t, cl.nodes[1], k) }()
			if renew {
				release()
			} else {
				cl.fake.awaitEntered(t, "refresh") // node 1 took the lapsed lease
				release()
			}
			a, b := receive(t, done, "first request"), receive(t, done, "second request")
			calls := cl.fake.refreshes.Load()
			switch {
			case renew && (calls != 1 || !a.AccessToken.Equal(b.AccessToken)):
				t.Fatalf("renewed lease: %d refresh calls, same token %v", calls, a.AccessToken.Equal(b.AccessToken))
			case !renew && calls != 2:
				t.Fatalf("lapsed lease: %d refresh calls, want 2 (the hazard renewal prevents)", calls)
			}
		})
	}
}

// With a shared store, ristretto dropping a session for room does not end
// it: a refresh in flight completes and its waiters get the new token, and
// the next request reads the session back from the store.
func TestSharedEvictionDuringRefreshKeepsSession(t *testing.T) {
	cl := newCluster(t, 1)
	node := cl.nodes[0]
	_, k, g := cl.loginOn(t, 0, "code-1")
	e := node.entryOf(t, k)
	finish := cl.getDuringRefresh(t, 0, k, g)
	node.mem.remove(e) // dropped for room while applyToken runs
	node.back.evicted(context.Background(), e)
	if node.Len() != 0 {
		t.Fatalf("Len after eviction = %d", node.Len())
	}
	refreshed, err := finish()
	if err != nil {
		t.Fatalf("request waiting on the refresh: %v", err)
	}
	if refreshed.AccessToken.Equal(g.AccessToken) {
		t.Fatal("request got the old token")
	}
	if e.ended.Load() {
		t.Fatal("eviction ended the session")
	}
	got := mustGet(t, node, k)
	if !got.AccessToken.Equal(refreshed.AccessToken) {
		t.Fatal("session read back from the store does not carry the refreshed token")
	}
	if n := cl.fake.refreshes.Load(); n != 1 {
		t.Fatalf("applyToken refresh calls = %d, want 1", n)
	}
	if v := cl.srv.version(k); v != 2 {
		t.Fatalf("record version = %d, want 2", v)
	}
}

// A state adopted from the store whose refresh token lives longer keeps the
// copy in memory as long (the memory tier's TTL is R + grace).
func TestSharedAdoptMovesMemoryLifetime(t *testing.T) {
	cl := newCluster(t, 1)
	node := cl.nodes[0]
	_, k, _ := cl.loginOn(t, 0, "code-1")
	e := node.entryOf(t, k)
	before, ok := node.mem.lifetime(&k)
	if !ok {
		t.Fatal("session not in memory")
	}
	cur := e.state.Load()
	next := &tokenState{
		grant: Grant{
			CustomerID:        cur.grant.CustomerID,
			AccessToken:       cur.grant.AccessToken,
			AccessTokenExpiry: cur.grant.AccessTokenExpiry,
			SessionExpiry:     cur.grant.SessionExpiry.Add(time.Hour),
		},
		refreshToken: cur.refreshToken,
		version:      cur.version + 1,
	}
	node.adopt(e, next)
	after, ok := node.mem.lifetime(&k)
	if !ok {
		t.Fatal("session left memory")
	}
	if after < before+50*time.Minute {
		t.Fatalf("memory TTL %v after adopting a state that lives an hour longer (was %v)", after, before)
	}
}

// Tokens refreshed while the store failed are written back as soon as it
// answers again, without waiting for a request: until then another instance
// refreshing from the stored record would present the refresh token Rebell
// has already spent.
func TestSharedUnstoredRefreshWrittenBackWhenStoreReturns(t *testing.T) {
	for _, via := range []string{"resync", "tick"} {
		t.Run(via, func(t *testing.T) {
			cl := newCluster(t, 2)
			tick := make(chan time.Time)
			cl.nodes[0].replica().leaseTicker = func(time.Duration) (<-chan time.Time, func()) { return tick, func() {} }
			_, k, g := cl.loginOn(t, 0, "code-1")
			mustGet(t, cl.nodes[1], k)
			finish := cl.getDuringRefresh(t, 0, k, g)
			cl.srv.down.Store(true) // the store goes away while Rebell answers
			g2, err := finish()
			if err != nil {
				t.Fatal(err)
			}
			if v := cl.srv.version(k); v != 1 {
				t.Fatalf("version %d written although the store was down", v)
			}

			cl.srv.down.Store(false)
			if via == "resync" {
				cl.nodes[0].replica().store.(*fakeStore).reconnect(false)
			} else {
				select {
				case tick <- time.Now():
				case <-time.After(10 * time.Second):
					t.Fatal("no syncer took the tick")
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for cl.srv.version(k) != 2 {
				if time.Now().After(deadline) {
					t.Fatalf("not written back: version %d", cl.srv.version(k))
				}
				time.Sleep(time.Millisecond)
			}
			cl.srv.mu.Lock()
			_, held := cl.srv.lease(k)
			cl.srv.mu.Unlock()
			if held {
				t.Fatal("the refresh's lease is still held after the write-back")
			}
			// The other instance, whose copy must refresh, takes the stored
			// tokens instead of spending the dead refresh token.
			if got := mustGet(t, cl.nodes[1], k); !got.AccessToken.Equal(g2.AccessToken) {
				t.Fatal("the other instance did not get the written-back token")
			}
			if n := cl.fake.refreshes.Load(); n != 1 {
				t.Fatalf("applyToken refresh calls = %d, want 1", n)
			}
		})
	}
}

// TestSharedCorruptRecordEndsSession: a record that cannot be read as a
// session ends it on every instance (session_invalid), whichever path finds
// it: a memory miss, the comparison of a copy, a refresh. It is deleted
// from the store, logged once as corrupt, and never reported as the store
// being unavailable.
func TestSharedCorruptRecordEndsSession(t *testing.T) {
	for _, via := range []string{"miss", "recheck", "refresh"} {
		t.Run(via, func(t *testing.T) {
			logs := observe(t)
			cl := newCluster(t, 3, func(c *Config) { c.Logger = logs.logger })
			_, k, g := cl.loginOn(t, 0, "code-1")
			mustGet(t, cl.nodes[1], k)
			cl.srv.garble(k)
			switch via {
			case "miss":
				_, err := cl.nodes[2].Get(context.Background(), k)
				if !errors.Is(err, ErrSessionInvalid) || errors.Is(err, ErrStoreUnavailable) {
					t.Fatalf("memory miss: %v, want ErrSessionInvalid", err)
				}
			case "recheck":
				cl.clock.Advance(recheckInterval)
				cl.wantInvalid(t, 1, k, "compared")
			case "refresh":
				cl.clock.Set(g.AccessTokenExpiry.Add(-time.Second))
				_, err := cl.nodes[1].Get(context.Background(), k)
				if !errors.Is(err, ErrSessionInvalid) || errors.Is(err, ErrStoreUnavailable) {
					t.Fatalf("refresh: %v, want ErrSessionInvalid", err)
				}
			}
			// The instance that found it may finish in the background (a
			// comparison that ran beside the refresh): wait until it has
			// logged and deleted the record. An instance reading the
			// record before then would find it corrupt and report it as
			// well, which is right but not this test.
			const msg = "rebell session record unreadable: altered, or written with another encryption_key, endpoint or client_id"
			cl.srv.waitDeleted(t, k)
			for deadline := time.Now().Add(10 * time.Second); logs.count(msg) == 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			for i := range 3 {
				cl.wantInvalid(t, i, k, "after the corrupt record")
			}
			if n := logs.count(msg); n != 1 {
				t.Fatalf("corrupt record logged %d times", n)
			}
			if n := cl.fake.refreshes.Load(); n != 0 {
				t.Fatalf("%d refreshes of a corrupt session", n)
			}
		})
	}
}

// TestSharedUnknownSessionsRemembered: a well-tagged id the store has no
// session for costs one read, then none for a minute; a logged-out id
// replayed costs none; an id of another key never verifies.
func TestSharedUnknownSessionsRemembered(t *testing.T) {
	cl := newCluster(t, 2)
	node := cl.nodes[0]
	unknownID, _ := node.ids.New()
	k, ok := node.ParseSessionID(unknownID)
	if !ok {
		t.Fatal("an id of the cluster's key does not verify")
	}
	calls := func(f func()) int64 {
		before := cl.srv.calls.Load()
		f()
		return cl.srv.calls.Load() - before
	}
	if n := calls(func() { cl.wantInvalid(t, 0, k, "unknown") }); n != 1 {
		t.Fatalf("first request for an unknown session: %d store calls, want 1", n)
	}
	if n := calls(func() {
		for range 100 {
			cl.wantInvalid(t, 0, k, "unknown again")
		}
	}); n != 0 {
		t.Fatalf("100 requests for a session known to be unknown: %d store calls", n)
	}
	cl.clock.Advance(unknownFor)
	if n := calls(func() { cl.wantInvalid(t, 0, k, "unknown after a minute") }); n != 1 {
		t.Fatalf("after a minute: %d store calls, want 1", n)
	}

	// A logged-out id, replayed on both instances (one heard the end).
	_, k2, _ := cl.loginOn(t, 0, "code-1")
	mustGet(t, cl.nodes[1], k2)
	if err := cl.nodes[0].Logout(context.Background(), k2); err != nil {
		t.Fatal(err)
	}
	if n := calls(func() {
		for range 50 {
			cl.wantInvalid(t, 0, k2, "logged out")
			cl.wantInvalid(t, 1, k2, "logged out, other instance")
			_ = cl.nodes[0].Logout(context.Background(), k2)
		}
	}); n != 0 {
		t.Fatalf("a logged-out id replayed 150 times: %d store calls", n)
	}

	// Memory stays bounded whatever is remembered.
	for range 3 * unknownSets * unknownWays {
		_, k := node.ids.New()
		node.replica().unknown.add(&k, cl.clock.Now().UnixNano())
	}
	if n := len(node.replica().unknown.slots); n != unknownSets*unknownWays {
		t.Fatalf("%d slots", n)
	}
	if node.replica().unknown.has(&k2, cl.clock.Now().Add(unknownFor).UnixNano()) {
		t.Fatal("remembered for longer than a minute")
	}
	// Another cache's ids do not verify here.
	foreign, _ := session.RandomIDs().New()
	if _, ok := node.ParseSessionID(foreign); ok {
		t.Fatal("an id of another key verifies")
	}
}

// TestSharedLoginAfterRememberedSessionEnded: a code posted again after the
// session it made ended is exchanged afresh (once), on any instance.
func TestSharedLoginAfterRememberedSessionEnded(t *testing.T) {
	cl := newCluster(t, 2)
	_, k, _ := cl.loginOn(t, 0, "code-1")
	if err := cl.nodes[0].Logout(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, _, err := cl.nodes[1].Login(ctx, rebell.NewSecret("code-1"))
	if err != nil {
		t.Fatalf("login again with the code of an ended session: %v", err)
	}
	if k2, _ := cl.nodes[1].ParseSessionID(id); k2 == k {
		t.Fatal("the ended session was handed out again")
	}
	if n := cl.fake.exchanges.Load(); n != 2 {
		t.Fatalf("%d exchanges, want 2", n)
	}
}

// TestSharedDeadRefreshTokenUnconfirmedEnd: Rebell calls the refresh token
// dead while the store cannot be reached to confirm the end. The copy ends
// here, but the session, which may live on in the store, is not remembered
// as unknown: its next request reads the store again. When the store
// confirms the end, it is remembered.
func TestSharedDeadRefreshTokenUnconfirmedEnd(t *testing.T) {
	for _, storeUp := range []bool{false, true} {
		t.Run(fmt.Sprintf("store up %v", storeUp), func(t *testing.T) {
			cl := newCluster(t, 1)
			_, k, g := cl.loginOn(t, 0, "code-1")
			cl.fake.scriptRefresh(result{err: errUsedRefresh})
			finish := cl.getDuringRefresh(t, 0, k, g)
			cl.srv.down.Store(!storeUp)
			if _, err := finish(); !errors.Is(err, ErrReauthRequired) {
				t.Fatalf("Get = %v, want ErrReauthRequired", err)
			}
			if cl.nodes[0].mem.get(&k) != nil {
				t.Fatal("the copy was kept")
			}
			remembered := cl.nodes[0].replica().unknown.has(&k, cl.clock.Now().UnixNano())
			if remembered != storeUp {
				t.Fatalf("remembered as unknown: %v, want %v", remembered, storeUp)
			}
		})
	}
}
