package handler

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func loginFrom(addr string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/rebell/login", strings.NewReader(`{"authCode":"`+testAuthCode+`"}`))
	r.Header.Set("Content-Type", "application/json")
	r.RemoteAddr = addr
	return r
}

// clockEnv is newEnv with a clock the test moves.
func clockEnv(t *testing.T, edit func(*Config)) (*env, *time.Time) {
	now := testNow
	var mu sync.Mutex
	e := newEnv(t, func(c *Config) {
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		if edit != nil {
			edit(c)
		}
	})
	return e, &now
}

func TestLoginRatePerAddress(t *testing.T) {
	e, now := clockEnv(t, nil) // the defaults: 10 a minute, burst 20
	for i := range DefaultLoginRateBurst {
		if w, _ := e.serve(loginFrom("192.0.2.1:1000"), nil); w.Code != http.StatusOK {
			t.Fatalf("login %d: %d %s", i, w.Code, w.Body)
		}
	}
	w, _ := e.serve(loginFrom("192.0.2.1:1001"), nil)
	wantError(t, w, http.StatusTooManyRequests, "too_many_logins")
	if ra := w.Header().Get("Retry-After"); ra != "6" {
		t.Fatalf("Retry-After %q, want 6 (one login per 6 s)", ra)
	}
	// The code was not spent: the cache was not asked.
	if n := len(e.s.loginCalls()); n != DefaultLoginRateBurst {
		t.Fatalf("%d logins reached the cache, want %d", n, DefaultLoginRateBurst)
	}
	// Another address is not affected.
	if w, _ := e.serve(loginFrom("192.0.2.2:1000"), nil); w.Code != http.StatusOK {
		t.Fatalf("another address: %d", w.Code)
	}
	// Six seconds later one more login is allowed, and only one.
	*now = now.Add(6 * time.Second)
	if w, _ := e.serve(loginFrom("192.0.2.1:1000"), nil); w.Code != http.StatusOK {
		t.Fatalf("after 6 s: %d", w.Code)
	}
	w, _ = e.serve(loginFrom("192.0.2.1:1000"), nil)
	wantError(t, w, http.StatusTooManyRequests, "too_many_logins")
	if got := e.cb.outcomes[len(e.cb.outcomes)-1]; got != "too_many_logins" {
		t.Fatalf("outcome %q", got)
	}
}

func TestLoginRateUsesTheHostsClientIP(t *testing.T) {
	e, _ := clockEnv(t, func(c *Config) {
		c.LoginRate = LoginRate{Count: 1, Period: time.Hour, Burst: 1}
		c.ClientIP = func(r *http.Request) string { return r.Header.Get("Test-Client-Ip") }
	})
	r := loginFrom("127.0.0.1:1")
	r.Header.Set("Test-Client-Ip", "203.0.113.7")
	if w, _ := e.serve(r, nil); w.Code != http.StatusOK {
		t.Fatalf("first: %d", w.Code)
	}
	// Same peer (a proxy), another client: its own bucket.
	r = loginFrom("127.0.0.1:1")
	r.Header.Set("Test-Client-Ip", "203.0.113.8")
	if w, _ := e.serve(r, nil); w.Code != http.StatusOK {
		t.Fatalf("another client behind the proxy: %d", w.Code)
	}
	r = loginFrom("127.0.0.1:2")
	r.Header.Set("Test-Client-Ip", "203.0.113.7")
	w, _ := e.serve(r, nil)
	wantError(t, w, http.StatusTooManyRequests, "too_many_logins")
	// A request that is not a login is never limited.
	if w, _ := e.serve(get("/api", "Test-Client-Ip", "203.0.113.7"), nil); w.Code == http.StatusTooManyRequests {
		t.Fatal("a request that is not a login was limited")
	}
}

func TestLoginRateOffAndBadConfig(t *testing.T) {
	e, _ := clockEnv(t, func(c *Config) { c.LoginRate = LoginRate{Off: true} })
	for range 3 * DefaultLoginRateBurst {
		if w, _ := e.serve(loginFrom("192.0.2.1:1"), nil); w.Code != http.StatusOK {
			t.Fatalf("login_rate off: %d", w.Code)
		}
	}
	for _, lr := range []LoginRate{{Count: -1}, {Burst: -1}, {Count: 1_000_000, Period: time.Millisecond}} {
		if _, err := New(Config{Sessions: newFakeSessions(), LoginRate: lr}); err == nil {
			t.Errorf("New accepted %+v", lr)
		}
	}
}

func TestLoginLimiterTableIsBoundedLRU(t *testing.T) {
	l, err := newLoginLimiter(LoginRate{Count: 1, Period: time.Hour, Burst: 1, Table: 3})
	if err != nil {
		t.Fatal(err)
	}
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	for _, s := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		if _, ok := l.allow(a(s), testNow); !ok {
			t.Fatal(s)
		}
	}
	// 10.0.0.1 is used again (refused), so 10.0.0.2 is the least recent.
	if _, ok := l.allow(a("10.0.0.1"), testNow); ok {
		t.Fatal("10.0.0.1 allowed twice")
	}
	l.allow(a("10.0.0.4"), testNow) // forgets 10.0.0.2
	if len(l.entries) != 3 || l.lru.Len() != 3 {
		t.Fatalf("table holds %d/%d entries, bound 3", len(l.entries), l.lru.Len())
	}
	if _, ok := l.allow(a("10.0.0.2"), testNow); !ok {
		t.Fatal("the forgotten address was not forgotten")
	}
	if _, ok := l.allow(a("10.0.0.1"), testNow); ok {
		t.Fatal("a recently used address was forgotten")
	}
	// IPv6 addresses of one /64 share a bucket; IPv4-mapped is IPv4.
	if _, ok := l.allow(a("2001:db8::1"), testNow); !ok {
		t.Fatal("2001:db8::1")
	}
	if _, ok := l.allow(a("2001:db8::ffff:2"), testNow); ok {
		t.Fatal("another address of the same /64 has its own bucket")
	}
	if _, ok := l.allow(a("::ffff:10.0.0.1"), testNow); ok {
		t.Fatal("an IPv4-mapped address has its own bucket")
	}
}

func BenchmarkLoginLimiterAllow(b *testing.B) {
	l, _ := newLoginLimiter(LoginRate{})
	addrs := make([]netip.Addr, 100_000) // more than the table: evictions
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		l.allow(addrs[i%len(addrs)], testNow)
	}
}
