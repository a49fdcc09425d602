package integration

// End-to-end tests of the shared store (docs/sessions.md): three Caddy processes running rebell_auth with
// the same `store redis`, one Caddy running the sandbox, a real redis-server
// (internal/redistest; skipped loudly without it unless REBELL_REQUIRE_REDIS=1).

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
)

// tokenUpstream answers every request with the identity it was given: the
// customer id, a short hash of the access token (a test must tell tokens
// apart, not read them) and the access token's expiry, which the gateway
// passes in X-Test-Access-Expiry from {http.rebell.access_token_expiry}.
type tokenUpstream struct {
	*httptest.Server
	mu     sync.Mutex
	tokens map[string]int // token hash → requests
}

func newTokenUpstream(t testing.TB) *tokenUpstream {
	u := &tokenUpstream{tokens: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		th := tokenHash(r.Header.Get("X-Rebell-Access-Token"))
		u.mu.Lock()
		u.tokens[th]++
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"customerId":   r.Header.Get("X-Rebell-Customer-Id"),
			"tokenHash":    th,
			"accessExpiry": r.Header.Get("X-Test-Access-Expiry"),
		})
	}))
	t.Cleanup(u.Close)
	return u
}

func tokenHash(tok string) string {
	if tok == "" {
		return ""
	}
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:8])
}

// reply is what a request through a gateway got: the upstream's answer on
// success, the gateway's error JSON otherwise.
type reply struct {
	Status       int
	CustomerID   string `json:"customerId"`
	TokenHash    string `json:"tokenHash"`
	AccessExpiry string `json:"accessExpiry"`
	Error        string `json:"error"`
	Message      string `json:"message"`
}

func (r reply) String() string {
	if r.Error != "" {
		return fmt.Sprintf("%d %s (%s)", r.Status, r.Error, r.Message)
	}
	return fmt.Sprintf("%d customer=%s token=%s", r.Status, r.CustomerID, r.TokenHash)
}

// node is one gateway Caddy process.
type node struct {
	n     int
	base  string
	caddy *caddyProc
	site  string // the Caddyfile it runs (without the global options)
}

// multi is the test topology: a sandbox process and gateway processes that
// share one Redis.
type multi struct {
	t        *testing.T
	kf       keyFiles
	sbPort   int
	sandbox  string
	up       *tokenUpstream
	storeKey string
	client   *http.Client
	nodes    []*node
}

// newMulti starts the sandbox (with sbOpts) and returns the topology without
// gateways; add them with startNode.
func newMulti(t *testing.T, sbOpts string) *multi {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	m := &multi{
		t:        t,
		kf:       writeKeys(t, t.TempDir()),
		sbPort:   freePort(t),
		up:       newTokenUpstream(t),
		storeKey: base64.StdEncoding.EncodeToString(key),
		client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: retryClosedConn{&http.Transport{MaxIdleConnsPerHost: 200, IdleConnTimeout: 30 * time.Second}},
		},
	}
	t.Cleanup(m.client.CloseIdleConnections)
	m.sandbox = fmt.Sprintf("http://127.0.0.1:%d", m.sbPort)
	startCaddy(t, sandboxSite(m.kf, m.sbPort, 0, sbOpts), m.sbPort)
	return m
}

// startNode starts one more gateway process with the shared store at
// redisAddrs.
func (m *multi) startNode(redisAddrs []string, authOpts string) *node {
	m.t.Helper()
	port := freePort(m.t)
	site := fmt.Sprintf(`http://127.0.0.1:%d {
	rebell_auth {
		endpoint http://127.0.0.1:%d
		client_id MERCHANT_IT
		private_key_file %s
		rebell_public_key_file %s
		retries 1
		%s
		store redis {
			address %s
			encryption_key %s
			key_prefix it:
		}
	}
	reverse_proxy %s {
		header_up X-Test-Access-Expiry {http.rebell.access_token_expiry}
	}
}
`, port, m.sbPort, m.kf.MerchantPrivate, m.kf.PlatformPublic, authOpts,
		strings.Join(redisAddrs, " "), m.storeKey, strings.TrimPrefix(m.up.URL, "http://"))
	nd := &node{n: len(m.nodes) + 1, base: fmt.Sprintf("http://127.0.0.1:%d", port), site: site}
	nd.caddy = startCaddy(m.t, site, port)
	// Cleanups run last-in first-out: before this process is stopped, drop
	// the client's idle connections, so its graceful shutdown need not wait
	// for connections that never carried a request.
	m.t.Cleanup(m.client.CloseIdleConnections)
	m.nodes = append(m.nodes, nd)
	return nd
}

// startMulti is the common case: sandbox plus three gateways on redisAddrs.
func startMulti(t *testing.T, redisAddrs []string, authOpts, sbOpts string) *multi {
	t.Helper()
	m := newMulti(t, sbOpts)
	for range 3 {
		m.startNode(redisAddrs, authOpts)
	}
	return m
}

// login posts a fresh auth code for customerID to nd. It may run off the
// test goroutine: it reports failures as errors.
func (m *multi) login(nd *node, code string) (int, loginResult, error) {
	resp, err := m.client.Post(nd.base+"/rebell/login", "application/json", strings.NewReader(fmt.Sprintf(`{"authCode":%q}`, code)))
	if err != nil {
		return 0, loginResult{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var lr loginResult
	if err := json.Unmarshal(body, &lr); err != nil {
		return resp.StatusCode, lr, fmt.Errorf("login body %q: %v", body, err)
	}
	return resp.StatusCode, lr, nil
}

func (m *multi) mustLogin(nd *node, customerID string) loginResult {
	m.t.Helper()
	status, lr, err := m.login(nd, issueCode(m.t, m.sandbox, customerID))
	if err != nil || status != http.StatusOK || len(lr.SessionID) != 43 {
		m.t.Fatalf("login on instance %d: %d %+v %v", nd.n, status, lr, err)
	}
	return lr
}

// do sends method path with the session to nd. It may run off the test
// goroutine.
func (m *multi) do(nd *node, method, path, sessionID string) (reply, error) {
	req, _ := http.NewRequest(method, nd.base+path, nil)
	if sessionID != "" {
		req.Header.Set("Authorization", "Bearer "+sessionID)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &r); err != nil {
			return r, fmt.Errorf("body %q: %v", b, err)
		}
	}
	return r, nil
}

func (m *multi) get(nd *node, sessionID string) reply {
	m.t.Helper()
	r, err := m.do(nd, http.MethodGet, "/api/me", sessionID)
	if err != nil {
		m.t.Fatalf("instance %d: %v", nd.n, err)
	}
	return r
}

func (m *multi) mustGet(nd *node, sessionID, customerID string) reply {
	m.t.Helper()
	r := m.get(nd, sessionID)
	if r.Status != http.StatusOK || r.CustomerID != customerID || r.TokenHash == "" {
		m.t.Fatalf("instance %d: %v, want 200 for customer %s", nd.n, r, customerID)
	}
	return r
}

func (m *multi) logout(nd *node, sessionID string) {
	m.t.Helper()
	r, err := m.do(nd, http.MethodPost, "/rebell/logout", sessionID)
	if err != nil || r.Status != http.StatusNoContent {
		m.t.Fatalf("logout on instance %d: %v %v", nd.n, r, err)
	}
}

// waitRejected polls nd until the session gets 401 with code, within d.
func (m *multi) waitRejected(nd *node, sessionID, code string, d time.Duration) time.Duration {
	m.t.Helper()
	start := time.Now()
	for {
		r := m.get(nd, sessionID)
		if r.Status == http.StatusUnauthorized && r.Error == code {
			return time.Since(start)
		}
		if r.Status != http.StatusOK {
			m.t.Fatalf("instance %d: %v while waiting for 401 %s", nd.n, r, code)
		}
		if time.Since(start) > d {
			m.t.Fatalf("instance %d still serves the session %v after it ended (want 401 %s)", nd.n, time.Since(start).Round(time.Millisecond), code)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refreshes is the number of REFRESH_TOKEN applyToken calls the sandbox saw.
func refreshes(st sandboxStats) int64 {
	var n int64
	for _, c := range st.ByGrantType["REFRESH_TOKEN"] {
		n += c
	}
	return n
}

// stormTTL is the sandbox's access_token_ttl in the tests that wait for a
// refresh to be due (sbOpts stormOpts, with refresh_ahead 2s). Its expiries
// have whole seconds, so the refresh-ahead window opens 12 to 13 s after the
// login: a loaded machine has that long to log in and warm the instances up
// without setting off a refresh, three times what the test needs alone.
const (
	stormTTL  = 15 * time.Second
	stormOpts = "access_token_ttl 15s"
)

// waitUntilRefreshDue sleeps until the access token of r (its expiry, from
// {http.rebell.access_token_expiry}) is within margin of expiring: with
// refresh_ahead 2s, m = 1s, so from A − 1s every request must wait for a
// refresh (README.md, "Token freshness"). It fails if the refresh-ahead
// window (from A − 2s) opened before the caller's warm-up ended at
// warmedUp: a request of the warm-up may then have refreshed.
func waitUntilRefreshDue(t *testing.T, r reply, margin time.Duration, warmedUp time.Time) time.Time {
	t.Helper()
	a, err := time.Parse(time.RFC3339, r.AccessExpiry)
	if err != nil {
		t.Fatalf("access token expiry %q: %v", r.AccessExpiry, err)
	}
	if opens := a.Add(-2 * time.Second); warmedUp.After(opens) {
		t.Fatalf("the warm-up ended %v after the refresh-ahead window opened: the machine is too slow for stormTTL %v", warmedUp.Sub(opens), stormTTL)
	}
	due := a.Add(-margin).Add(20 * time.Millisecond)
	if wait := time.Until(due); wait > 0 {
		if wait > stormTTL+time.Second {
			t.Fatalf("access token expiry %v is %v away; the sandbox's access_token_ttl is not %v", a, wait, stormTTL)
		}
		time.Sleep(wait)
	}
	return a
}

// randomSessionID is 43 base64url characters that no gateway issued (its
// tag does not verify).
func randomSessionID(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestClusterSessionSharedAtOnce: a login on instance 1 works at once on
// instances 2 and 3, with the same identity.
func TestClusterSessionSharedAtOnce(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	lr := m.mustLogin(m.nodes[0], "2188000000000701")
	first := m.mustGet(m.nodes[1], lr.SessionID, "2188000000000701")
	for _, nd := range []*node{m.nodes[2], m.nodes[0]} {
		if r := m.mustGet(nd, lr.SessionID, "2188000000000701"); r.TokenHash != first.TokenHash {
			t.Errorf("instance %d injected another access token than instance 2", nd.n)
		}
	}
	if st := getStats(t, m.sandbox); st.ApplyTokenCalls != 1 {
		t.Errorf("applyToken calls %d, want 1 (the login): %+v", st.ApplyTokenCalls, st)
	}
}

// TestClusterRefreshStorm: 300 concurrent requests over three instances for
// a session whose token must be refreshed: one applyToken call cluster-wide,
// every request served with the one new token.
func TestClusterRefreshStorm(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "refresh_ahead 2s", stormOpts)
	const customer = "2188000000000702"
	lr := m.mustLogin(m.nodes[0], customer)
	var old reply
	for _, nd := range m.nodes { // each instance holds the session in memory
		old = m.mustGet(nd, lr.SessionID, customer)
	}
	before := getStats(t, m.sandbox)
	warmedUp := time.Now()
	if refreshes(before) != 0 {
		t.Fatalf("a refresh happened before the storm (warm-up took too long?): %+v", before)
	}
	waitUntilRefreshDue(t, old, time.Second, warmedUp)

	const n = 300
	results := m.burst(n, lr.SessionID)

	tokens := map[string]int{}
	var lat []time.Duration
	bad := 0
	for i, res := range results {
		lat = append(lat, res.took)
		if res.err != nil || res.r.Status != http.StatusOK || res.r.CustomerID != customer {
			if bad++; bad <= 5 {
				t.Errorf("request %d (instance %d): %v %v", i, i%3+1, res.r, res.err)
			}
			continue
		}
		tokens[res.r.TokenHash]++
	}
	if bad > 0 {
		t.Errorf("%d of %d requests failed", bad, n)
	}
	if len(tokens) != 1 {
		t.Errorf("the storm saw %d access tokens, want the one new token: %v", len(tokens), tokens)
	}
	if tokens[old.TokenHash] > 0 {
		t.Errorf("%d requests got the old access token, which was due for a refresh", tokens[old.TokenHash])
	}
	after := getStats(t, m.sandbox)
	if got := refreshes(after) - refreshes(before); got != 1 {
		t.Errorf("REFRESH_TOKEN applyToken calls during the storm: %d, want exactly 1: %+v", got, after.ByGrantType)
	}
	if after.ByResultCode["USED_REFRESH_TOKEN"] != 0 {
		t.Errorf("USED_REFRESH_TOKEN: %d", after.ByResultCode["USED_REFRESH_TOKEN"])
	}
	slices.Sort(lat)
	t.Logf("storm: %d requests over 3 instances: p50 %v, p99 %v, max %v; refresh calls %d; tokens %d",
		n, lat[n/2].Round(time.Microsecond), lat[n*99/100].Round(time.Microsecond), lat[n-1].Round(time.Microsecond),
		refreshes(after)-refreshes(before), len(tokens))

	// For comparison, the same burst at once for the fresh new token (no
	// refresh), on new connections as well.
	var base []time.Duration
	for _, res := range m.burst(n, lr.SessionID) {
		base = append(base, res.took)
	}
	slices.Sort(base)
	t.Logf("same burst, cached token: p50 %v, p99 %v, max %v",
		base[n/2].Round(time.Microsecond), base[n*99/100].Round(time.Microsecond), base[n-1].Round(time.Microsecond))
}

// burstResult is one request of a burst.
type burstResult struct {
	r    reply
	err  error
	took time.Duration
}

// burst sends n concurrent requests with the session, spread over the
// instances, each on a new connection.
func (m *multi) burst(n int, sessionID string) []burstResult {
	m.client.CloseIdleConnections()
	results := make([]burstResult, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			r, err := m.do(m.nodes[i%len(m.nodes)], http.MethodGet, "/api/storm", sessionID)
			results[i] = burstResult{r, err, time.Since(t0)}
		})
	}
	close(start)
	wg.Wait()
	return results
}

// TestClusterLogoutEverywhere: a logout on instance 1 ends the session on
// instances 2 and 3, which hold it in memory, within a second.
func TestClusterLogoutEverywhere(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	const customer = "2188000000000703"
	lr := m.mustLogin(m.nodes[0], customer)
	other := m.mustLogin(m.nodes[1], customer) // a second session of the same customer
	for _, nd := range m.nodes {
		m.mustGet(nd, lr.SessionID, customer)
		m.mustGet(nd, other.SessionID, customer)
	}
	m.logout(m.nodes[0], lr.SessionID)
	for _, nd := range m.nodes[1:] {
		took := m.waitRejected(nd, lr.SessionID, "session_invalid", time.Second)
		t.Logf("instance %d rejected the session %v after the logout", nd.n, took.Round(time.Millisecond))
	}
	if r := m.get(m.nodes[0], lr.SessionID); r.Status != http.StatusUnauthorized || r.Error != "session_invalid" {
		t.Errorf("instance 1 after its own logout: %v", r)
	}
	for _, nd := range m.nodes { // the other session is untouched
		m.mustGet(nd, other.SessionID, customer)
	}
	m.assertLogsClean(lr.SessionID, other.SessionID)
}

// TestClusterCachedRequestsCostNoRedis: requests for a session every
// instance holds in memory send no command to Redis.
func TestClusterCachedRequestsCostNoRedis(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	const customer = "2188000000000704"
	lr := m.mustLogin(m.nodes[0], customer)
	for _, nd := range m.nodes {
		m.mustGet(nd, lr.SessionID, customer)
		m.mustGet(nd, lr.SessionID, customer)
	}
	before := settledStats(t, rs)

	const n = 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i := range n {
		wg.Go(func() {
			r, err := m.do(m.nodes[i%3], http.MethodGet, "/api/cached", lr.SessionID)
			if err != nil || r.Status != http.StatusOK {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%v %v", r, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	after := rs.CommandStats(t)
	if len(failures) > 0 {
		t.Fatalf("%d cached requests failed, e.g. %s", len(failures), failures[0])
	}

	ignored := map[string]bool{"info": true, "ping": true}
	var total int64
	var changed []string
	for cmd, c := range after {
		if d := c - before[cmd]; d != 0 && !ignored[cmd] {
			total += d
			changed = append(changed, fmt.Sprintf("%s +%d", cmd, d))
		}
	}
	sort.Strings(changed)
	t.Logf("redis commands during %d cached requests over 3 instances: %d (%.3f per request) %v", n, total, float64(total)/n, changed)
	if total != 0 {
		t.Errorf("cached requests sent %d commands to Redis, want 0: %s", total, strings.Join(changed, ", "))
	}
}

// settledStats returns Redis's command counts once they stop changing (any
// write the warm-up set off has landed), ignoring INFO itself.
func settledStats(t *testing.T, rs *redistest.Server) map[string]int64 {
	t.Helper()
	prev := rs.CommandStats(t)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		cur := rs.CommandStats(t)
		same := true
		for cmd, c := range cur {
			if cmd != "info" && c != prev[cmd] {
				same = false
			}
		}
		if same {
			return cur
		}
		prev = cur
	}
	return prev
}

// TestClusterRedisDown: with Redis stopped, sessions in memory are served
// while their token is valid; logins and memory misses get 503
// store_unavailable; when Redis comes back (empty), logins work again
// without restarting Caddy.
func TestClusterRedisDown(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	const customer = "2188000000000705"
	lr := m.mustLogin(m.nodes[0], customer)
	m.mustGet(m.nodes[0], lr.SessionID, customer)
	m.mustGet(m.nodes[1], lr.SessionID, customer) // instance 3 never sees it

	rs.Stop(t)

	for _, nd := range m.nodes[:2] {
		m.mustGet(nd, lr.SessionID, customer)
	}
	if r := m.get(m.nodes[2], lr.SessionID); r.Status != http.StatusServiceUnavailable || r.Error != "store_unavailable" {
		t.Errorf("memory miss on instance 3 with Redis down: %v, want 503 store_unavailable", r)
	}
	// A made-up id is refused by its tag, without asking Redis.
	if r := m.get(m.nodes[0], randomSessionID(t)); r.Status != http.StatusUnauthorized || r.Error != "session_invalid" {
		t.Errorf("made-up session id with Redis down: %v, want 401 session_invalid", r)
	}
	before := getStats(t, m.sandbox)
	status, res, err := m.login(m.nodes[0], issueCode(t, m.sandbox, "2188000000000715"))
	if err != nil || status != http.StatusServiceUnavailable || res.Error != "store_unavailable" || res.SessionID != "" {
		t.Errorf("login with Redis down: %d %+v %v, want 503 store_unavailable", status, res, err)
	}
	t.Logf("applyToken calls for the login with Redis down: %d", getStats(t, m.sandbox).ApplyTokenCalls-before.ApplyTokenCalls)

	rs.Restart(t)
	start := time.Now()
	lr2 := m.waitLogin(m.nodes[0], "2188000000000725", 15*time.Second)
	t.Logf("login worked again %v after Redis restarted", time.Since(start).Round(time.Millisecond))
	for _, nd := range m.nodes {
		m.mustGet(nd, lr2.SessionID, "2188000000000725")
	}

	// The restarted Redis came back empty. The session that instances 1
	// and 2 held through the outage is written back by them (without
	// waiting for a request there), not lost: it reaches instance 3 through
	// Redis and keeps working on 1 and 2.
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := m.get(m.nodes[2], lr.SessionID)
		if r.Status == http.StatusOK && r.CustomerID == customer {
			break
		}
		if r.Status != http.StatusUnauthorized || time.Now().After(deadline) {
			t.Fatalf("instance 3, session held through the outage elsewhere: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.mustGet(m.nodes[0], lr.SessionID, customer)
	m.mustGet(m.nodes[1], lr.SessionID, customer)
	// And it ends everywhere as usual.
	m.logout(m.nodes[2], lr.SessionID)
	for _, nd := range m.nodes[:2] {
		m.waitRejected(nd, lr.SessionID, "session_invalid", time.Second)
	}
	m.assertLogsClean(lr.SessionID, lr2.SessionID)
}

// waitLogin polls logins (each with a new code) on nd until one succeeds.
func (m *multi) waitLogin(nd *node, customerID string, d time.Duration) loginResult {
	m.t.Helper()
	deadline := time.Now().Add(d)
	for {
		status, lr, err := m.login(nd, issueCode(m.t, m.sandbox, customerID))
		if err == nil && status == http.StatusOK && len(lr.SessionID) == 43 {
			return lr
		}
		if status != http.StatusServiceUnavailable || lr.Error != "store_unavailable" {
			m.t.Fatalf("login on instance %d while Redis recovers: %d %+v %v", nd.n, status, lr, err)
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("login on instance %d still fails %v after Redis came back: %d %+v", nd.n, d, status, lr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterStartsWithoutRedis: Caddy starts while Redis is down, answers
// 503 store_unavailable to logins, and serves them once Redis is up.
func TestClusterStartsWithoutRedis(t *testing.T) {
	rs := redistest.Start(t)
	rs.Stop(t)
	m := newMulti(t, "")
	nd := m.startNode([]string{rs.Addr}, "")
	resp, err := http.Get("http://" + nd.caddy.AdminAddr + "/config/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("admin endpoint: %v %v", resp, err)
	}
	resp.Body.Close()
	status, lr, err := m.login(nd, issueCode(t, m.sandbox, "2188000000000706"))
	if err != nil || status != http.StatusServiceUnavailable || lr.Error != "store_unavailable" {
		t.Errorf("login with Redis down: %d %+v %v, want 503 store_unavailable", status, lr, err)
	}
	rs.Restart(t)
	start := time.Now()
	lr = m.waitLogin(nd, "2188000000000706", 15*time.Second)
	t.Logf("login worked %v after Redis started", time.Since(start).Round(time.Millisecond))
	m.mustGet(nd, lr.SessionID, "2188000000000706")
}

// TestClusterRedisCluster runs the session's life over a 3-node Redis
// Cluster: login on 1, use on 2, refresh, logout on 3, rejected on 1.
func TestClusterRedisCluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	m := startMulti(t, rc.Addrs, "refresh_ahead 2s", stormOpts)
	const customer = "2188000000000707"
	lr := m.mustLogin(m.nodes[0], customer)
	old := m.mustGet(m.nodes[1], lr.SessionID, customer)
	m.mustGet(m.nodes[0], lr.SessionID, customer)
	warmedUp := time.Now()
	if st := getStats(t, m.sandbox); refreshes(st) != 0 {
		t.Fatalf("a refresh happened before it was due: %+v", st)
	}

	waitUntilRefreshDue(t, old, time.Second, warmedUp)
	fresh := m.mustGet(m.nodes[1], lr.SessionID, customer)
	if fresh.TokenHash == old.TokenHash {
		t.Fatal("instance 2 did not refresh a token due for it")
	}
	for _, nd := range []*node{m.nodes[0], m.nodes[2]} {
		if r := m.mustGet(nd, lr.SessionID, customer); r.TokenHash != fresh.TokenHash {
			t.Errorf("instance %d: token %s, want the refreshed %s", nd.n, r.TokenHash, fresh.TokenHash)
		}
	}
	st := getStats(t, m.sandbox)
	if refreshes(st) != 1 || st.ByResultCode["USED_REFRESH_TOKEN"] != 0 {
		t.Errorf("refreshes %d (want 1): %+v", refreshes(st), st)
	}

	m.logout(m.nodes[2], lr.SessionID)
	took := m.waitRejected(m.nodes[0], lr.SessionID, "session_invalid", time.Second)
	t.Logf("instance 1 rejected the session %v after the logout on instance 3", took.Round(time.Millisecond))
	if r := m.get(m.nodes[1], lr.SessionID); r.Status != http.StatusUnauthorized {
		t.Errorf("instance 2 after the logout: %v", r)
	}
}

// TestClusterAdminEndsCustomerEverywhere: DELETE
// /rebell/customers/<id>/sessions on instance 1's admin endpoint ends that
// customer's sessions on all three instances, and no one else's.
func TestClusterAdminEndsCustomerEverywhere(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	const customer, bystander = "2188000000000708", "2188000000000718"
	s1 := m.mustLogin(m.nodes[0], customer)
	s2 := m.mustLogin(m.nodes[2], customer) // created on another instance
	keep := m.mustLogin(m.nodes[1], bystander)
	for _, nd := range m.nodes {
		m.mustGet(nd, s1.SessionID, customer)
		m.mustGet(nd, s2.SessionID, customer)
		m.mustGet(nd, keep.SessionID, bystander)
	}

	req, _ := http.NewRequest(http.MethodDelete, "http://"+m.nodes[0].caddy.AdminAddr+"/rebell/customers/"+customer+"/sessions", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin DELETE: %d %s", resp.StatusCode, body)
	}
	t.Logf("admin DELETE answered %s", strings.TrimSpace(string(body)))
	for _, nd := range m.nodes {
		for _, sid := range []string{s1.SessionID, s2.SessionID} {
			m.waitRejected(nd, sid, "session_invalid", time.Second)
		}
	}
	for _, nd := range m.nodes {
		m.mustGet(nd, keep.SessionID, bystander)
	}
}

// TestClusterReloadKeepsMemory: `caddy reload` with the same store keeps the
// copies in memory (no Redis read afterwards); a changed store block makes
// a new memory tier, and the sessions come back from Redis.
func TestClusterReloadKeepsMemory(t *testing.T) {
	rs := redistest.Start(t)
	m := newMulti(t, "")
	nd := m.startNode([]string{rs.Addr}, "")
	const customer = "2188000000000709"
	lr := m.mustLogin(nd, customer)
	m.mustGet(nd, lr.SessionID, customer)

	// A reload that changes what does not define the sessions.
	nd.caddy.reload(strings.Replace(nd.site, "retries 1", "retries 2", 1))
	before := rs.CommandStats(t)
	m.mustGet(nd, lr.SessionID, customer)
	if d := commandsBetween(before, rs.CommandStats(t)); d != 0 {
		t.Errorf("a request after the reload sent %d Redis commands: the memory copy was lost", d)
	}
	if n := sessionsInMemory(t, nd); n != 1 {
		t.Errorf("sessions in memory after the reload: %d, want 1", n)
	}

	// Another key prefix: another store, another (empty) memory tier; this
	// session is not in it.
	nd.caddy.reload(strings.Replace(nd.site, "key_prefix it:", "key_prefix it2:", 1))
	if r := m.get(nd, lr.SessionID); r.Status != http.StatusUnauthorized {
		t.Errorf("session under another key prefix: %v, want 401", r)
	}
	// Back to the first prefix: read from Redis again.
	nd.caddy.reload(nd.site)
	m.mustGet(nd, lr.SessionID, customer)
}

// commandsBetween is how many Redis commands ran between two CommandStats,
// not counting INFO (the measurement itself) and PING (health checks).
func commandsBetween(before, after map[string]int64) int64 {
	var n int64
	for cmd, calls := range after {
		if cmd == "info" || cmd == "ping" {
			continue
		}
		n += calls - before[cmd]
	}
	return n
}

// sessionsInMemory asks nd's admin API how many sessions it holds.
func sessionsInMemory(t *testing.T, nd *node) int {
	t.Helper()
	resp, err := http.Get("http://" + nd.caddy.AdminAddr + "/rebell/sessions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Sessions int }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Sessions
}

// assertLogsClean fails if a gateway's log holds any of secrets (session
// ids, the store's encryption key).
func (m *multi) assertLogsClean(secrets ...string) {
	m.t.Helper()
	secrets = append(secrets, m.storeKey)
	for _, nd := range m.nodes {
		logs := nd.caddy.logs.String()
		if !strings.Contains(logs, "serving initial configuration") {
			m.t.Errorf("instance %d: its log was not captured; the check would prove nothing", nd.n)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(logs, s) {
				m.t.Errorf("instance %d logged a secret", nd.n)
			}
		}
	}
}
