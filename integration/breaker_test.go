package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// guardGateway is a Caddy with rebell_auth in front of a mock Rebell.
type guardGateway struct {
	t     *testing.T
	caddy *caddyProc
	base  string
	mock  *mockRebell
	codes atomic.Int64
}

func startGuardGateway(t *testing.T, authOpts string) *guardGateway {
	t.Helper()
	// These tests are about the bound and the breaker: their logins all
	// come from 127.0.0.1, which the per-address login limit would stop
	// first (TestAbuseLoginFloodKeepsSessionsServed covers it).
	authOpts += "\n\t\tlogin_rate off"
	mock := newMockRebell(t)
	kf := writeKeys(t, t.TempDir())
	up := newUpstream(t)
	port := freePort(t)
	cf := fmt.Sprintf(`
http://127.0.0.1:%d {
	rebell_auth {
		endpoint %s
		client_id MERCHANT_IT
		private_key_file %s
		rebell_public_key_file %s
		%s
	}
	reverse_proxy %s
}
`, port, mock.URL, kf.MerchantPrivate, kf.PlatformPublic, authOpts, strings.TrimPrefix(up.URL, "http://"))
	g := &guardGateway{t: t, mock: mock, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	g.caddy = startCaddy(t, cf, port)
	return g
}

var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 90 * time.Second}

// login posts a fresh auth code and returns the status, the session id (on
// 200) and the Retry-After header.
func (g *guardGateway) login(c *http.Client) (status int, sid, retryAfter string) {
	code := fmt.Sprintf("code-%d", g.codes.Add(1))
	resp, err := c.Post(g.base+"/rebell/login", "application/json", strings.NewReader(`{"authCode":"`+code+`"}`))
	if err != nil {
		g.t.Errorf("login: %v", err)
		return 0, "", ""
	}
	defer resp.Body.Close()
	var out struct{ SessionID string }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.SessionID, resp.Header.Get("Retry-After")
}

func (g *guardGateway) mustLogin() string {
	g.t.Helper()
	status, sid, _ := g.login(http.DefaultClient)
	if status != http.StatusOK {
		g.t.Fatalf("login: %d", status)
	}
	return sid
}

// get requests /api with session sid and returns the status and Retry-After.
func (g *guardGateway) get(sid string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, g.base+"/api", nil)
	req.Header.Set("Authorization", "Bearer "+sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Errorf("get: %v", err)
		return 0, ""
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// metric returns the value of the first series of name in the admin API's
// /metrics, -1 if there is none.
func (g *guardGateway) metric(name string) float64 {
	resp, err := http.Get("http://" + g.caddy.AdminAddr + "/metrics")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return -1
}

// goroutines returns Caddy's goroutine count from the admin API's pprof.
func goroutines(t testing.TB, adminAddr string) int {
	resp, err := http.Get("http://" + adminAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Error(err)
		return -1
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	var n int
	if _, err := fmt.Sscanf(line, "goroutine profile: total %d", &n); err != nil {
		t.Errorf("pprof answered %q", line)
		return -1
	}
	return n
}

// waitUntil polls cond every 20 ms until it holds, failing after d with
// what it saw.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() (bool, string)) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, saw := cond()
		if ok {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v still not %s; last saw %s", d, what, saw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keepServed requests sid every 20 ms until the returned function is
// called (or the test ends, before Caddy stops) and fails the test on any
// answer other than 200. The function returns how many were served.
func (g *guardGateway) keepServed(sid string) (stopAndCount func() int64) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served atomic.Int64
	var once sync.Once
	stopAndCount = func() int64 {
		once.Do(func() { close(stop); wg.Wait() })
		return served.Load()
	}
	g.t.Cleanup(func() { stopAndCount() })
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if status, _ := g.get(sid); status != http.StatusOK {
				g.t.Errorf("a session with a valid cached token got %d", status)
				return
			}
			served.Add(1)
		}
	})
	return stopAndCount
}

// TestBreakerOutageAndRecovery: Rebell refuses; the breaker opens after
// the rule's failures; while open Rebell receives only probes (one at a
// time, spaced by the open period) however many requests need it; sessions
// with a valid cached token are served throughout; when Rebell answers
// again, a session whose token expired during the outage is served within a
// second of Rebell's first successful answer, and no refresh token is ever
// used twice.
func TestBreakerOutageAndRecovery(t *testing.T) {
	g := startGuardGateway(t, "timeout 1s\n\t\tretries 1\n\t\trefresh_ahead 1s\n\t\tmax_concurrent_calls 8")
	cached := g.mustLogin() // access token valid for an hour
	g.mock.accessTTL.Store(int64(3 * time.Second))
	expiring := g.mustLogin()

	stopServed := g.keepServed(cached)

	g.mock.setMode(mockRefuse)
	outage := time.Now()
	for i := 0; g.metric("caddy_rebell_breaker_state") != 1; i++ {
		if i == 20 {
			t.Fatalf("breaker not open after %d failed logins", i)
		}
		if status, _, ra := g.login(http.DefaultClient); status != http.StatusServiceUnavailable || ra == "" {
			t.Fatalf("login during the outage: %d, Retry-After %q", status, ra)
		}
	}
	opened := time.Now()
	if calls := g.mock.callsBetween(outage, opened); len(calls) > 2*10 {
		t.Fatalf("%d calls before the breaker opened", len(calls))
	}
	waitUntil(t, 10*time.Second, "503 for the session whose token expired", func() (bool, string) {
		status, ra := g.get(expiring)
		return status == http.StatusServiceUnavailable && ra != "", fmt.Sprintf("%d Retry-After %q", status, ra)
	})

	// Open: many requests that need Rebell, few calls.
	from := time.Now()
	requests := 0
	for time.Since(from) < 2500*time.Millisecond {
		status, ra := g.get(expiring)
		if status != http.StatusServiceUnavailable {
			t.Fatalf("expired session while open: %d", status)
		}
		if n, err := strconv.Atoi(ra); err != nil || n < 1 {
			t.Fatalf("Retry-After %q while open", ra)
		}
		if lstatus, _, _ := g.login(http.DefaultClient); lstatus != http.StatusServiceUnavailable {
			t.Fatalf("login while open: %d", lstatus)
		}
		requests += 2
		time.Sleep(20 * time.Millisecond)
	}
	probes := g.mock.callsBetween(from, time.Now())
	t.Logf("while open: %d requests needing Rebell, %d calls reached it", requests, len(probes))
	if len(probes) > 3 {
		t.Fatalf("%d calls reached Rebell in 2.5 s while the breaker was open (probes only: at most 3)", len(probes))
	}
	for i := 1; i < len(probes); i++ {
		if probes[i].at.Before(probes[i-1].end) {
			t.Fatal("two probes overlapped")
		}
	}

	// Rebell answers again.
	g.mock.setMode(mockOK)
	back := time.Now()
	servedAt := waitUntil(t, 40*time.Second, "serving the expired session", func() (bool, string) {
		status, _ := g.get(expiring)
		return status == http.StatusOK, strconv.Itoa(status)
	})
	first := g.mock.firstSuccessSinceMode()
	if first.IsZero() {
		t.Fatal("served without a successful call to Rebell")
	}
	t.Logf("outage %v; breaker open after %v; after Rebell came back: first success %v later, session served %v later",
		back.Sub(outage).Round(time.Millisecond), opened.Sub(outage).Round(time.Millisecond),
		first.Sub(back).Round(time.Millisecond), servedAt.Sub(back).Round(time.Millisecond))
	if d := servedAt.Sub(first); d > time.Second {
		t.Fatalf("session served %v after Rebell's first successful answer, want within 1s", d)
	}
	if d := servedAt.Sub(back); d > 30*time.Second+2*time.Second {
		t.Fatalf("session served %v after Rebell came back: more than the capped open period", d)
	}
	if g.metric("caddy_rebell_breaker_state") != 0 {
		t.Fatal("breaker not closed after recovery")
	}
	if status, _, _ := g.login(http.DefaultClient); status != http.StatusOK {
		t.Fatalf("login after recovery: %d", status)
	}
	if stopServed() == 0 {
		t.Fatal("the cached session was never requested")
	}
	g.mock.mu.Lock()
	reused := g.mock.reused
	g.mock.mu.Unlock()
	if reused != 0 {
		t.Fatalf("%d refresh tokens used twice", reused)
	}
	logs := g.caddy.logs.String()
	if !strings.Contains(logs, "rebell circuit breaker open") || !strings.Contains(logs, `"last_failure":"http_error"`) ||
		!strings.Contains(logs, "rebell circuit breaker closed") {
		t.Error("the breaker's WARN on open / INFO on close with the last failure's class were not logged")
	}
}

// TestBoundedCallsDuringHang: Rebell hangs; 500 concurrent logins produce at
// most max_concurrent_calls calls in flight and nowhere near 500 goroutines
// in Caddy; every login is answered 503 with Retry-After (once the breaker
// opens, at once); a cached session is served throughout; when Rebell
// answers again, logins work.
func TestBoundedCallsDuringHang(t *testing.T) {
	const bound = 4
	g := startGuardGateway(t, fmt.Sprintf("timeout 2s\n\t\tretries 1\n\t\tmax_concurrent_calls %d", bound))
	cached := g.mustLogin()
	stopServed := g.keepServed(cached)

	base := goroutines(t, g.caddy.AdminAddr)
	g.mock.setMode(mockHang)
	start := time.Now()
	const logins = 500
	// At most bound calls run and 16 per slot wait (docs/rebell-calls.md);
	// the other logins are answered at once.
	const mayWait = bound * (1 + 16)
	statuses := make(chan string, logins)
	var answered atomic.Int64
	var lwg sync.WaitGroup
	for range logins {
		lwg.Go(func() {
			status, _, ra := g.login(noKeepAlive)
			answered.Add(1)
			statuses <- fmt.Sprintf("%d Retry-After:%v", status, ra != "")
		})
	}
	done := make(chan struct{})
	go func() { lwg.Wait(); close(done) }()
	peakG, settledG, settledAfter, samples := 0, -1, time.Duration(0), 0
sample:
	for {
		select {
		case <-done:
			break sample
		case <-time.After(100 * time.Millisecond):
		}
		a := answered.Load()
		n := goroutines(t, g.caddy.AdminAddr)
		peakG = max(peakG, n)
		if settledG < 0 && a >= logins-mayWait && a < logins && g.mock.inFlight.Load() > 0 {
			settledG, settledAfter = n, time.Since(start)
		}
		samples++
		if time.Since(start) > 60*time.Second {
			t.Fatal("logins still unanswered after 60 s")
		}
	}
	took := time.Since(start)
	close(statuses)
	counts := map[string]int{}
	for s := range statuses {
		counts[s]++
	}
	calls := g.mock.callCount() - 1 // the first login
	t.Logf("%d logins during a hang: answers %v in %v; Rebell saw %d requests, at most %d at once; "+
		"Caddy goroutines %d before, %d once the burst was in (%v), peak %d in the burst (%d samples)",
		logins, counts, took.Round(time.Millisecond), calls, g.mock.peak.Load(), base, settledG, settledAfter.Round(time.Millisecond), peakG, samples)
	if counts["503 Retry-After:true"] != logins {
		t.Fatalf("answers %v, want %d × 503 with Retry-After", counts, logins)
	}
	// The mock counts a hung call as ended when it notices that the gateway
	// closed the connection (the attempt's timeout), which on a loaded
	// machine can come a few milliseconds after the gateway freed the slot
	// and sent the next call: allow that lag two calls, not a bound's worth.
	if p := g.mock.peak.Load(); p > bound+2 {
		t.Fatalf("%d calls in flight at Rebell, bound %d", p, bound)
	}
	// Each slot's call makes at most 1 + retries attempts before the
	// breaker opens: a few dozen, not 500.
	if calls > 4*bound*2 {
		t.Fatalf("Rebell received %d requests for %d logins", calls, logins)
	}
	// Once the logins that cannot wait are answered, each waiting one
	// holds its connection's, its request's and its exchange's goroutines
	// (the burst's own peak, with hundreds of requests in transit on two
	// cores, is only logged).
	if settledG < 0 {
		t.Fatal("no sample while logins waited on the hung calls")
	}
	if settledG-base > 5*mayWait {
		t.Fatalf("Caddy's goroutines went from %d to %d with at most %d logins waiting", base, settledG, mayWait)
	}

	g.mock.setMode(mockOK)
	waitUntil(t, 40*time.Second, "a login after Rebell answers again", func() (bool, string) {
		status, _, _ := g.login(http.DefaultClient)
		return status == http.StatusOK, strconv.Itoa(status)
	})
	if stopServed() == 0 {
		t.Fatal("the cached session was never requested")
	}
	waitUntil(t, 10*time.Second, "Caddy's goroutines back near their level", func() (bool, string) {
		n := goroutines(t, g.caddy.AdminAddr)
		return n <= base+20, strconv.Itoa(n)
	})
}

// TestRateLimitOpensBreaker: REQUEST_TRAFFIC_EXCEED_LIMIT answers count as
// failures: the breaker opens and the merchant's rate limit stops being
// hit by every session on its own schedule.
func TestRateLimitOpensBreaker(t *testing.T) {
	g := startGuardGateway(t, "retries 2")
	g.mock.setMode(mockRateLimit)
	for i := 0; g.metric("caddy_rebell_breaker_state") != 1; i++ {
		if i == 20 {
			t.Fatalf("breaker not open after %d rate-limited logins", i)
		}
		if status, _, _ := g.login(http.DefaultClient); status != http.StatusServiceUnavailable {
			t.Fatalf("rate-limited login: %d", status)
		}
	}
	before := g.mock.callCount()
	for range 50 {
		if status, _, _ := g.login(http.DefaultClient); status != http.StatusServiceUnavailable {
			t.Fatalf("login while open: %d", status)
		}
	}
	// Only probes: one per open period (1 s, then 2 s, ...).
	if n := g.mock.callCount() - before; n > 2 {
		t.Fatalf("%d calls reached Rebell during 50 logins with the breaker open", n)
	}
	if v := g.metric("caddy_rebell_calls_refused_total"); v < 48 {
		t.Fatalf("calls_refused_total %v", v)
	}
	if !strings.Contains(g.caddy.logs.String(), `"last_failure":"REQUEST_TRAFFIC_EXCEED_LIMIT"`) {
		t.Error("open not logged with the rate limit as the last failure")
	}
}
