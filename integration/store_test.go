package integration

// End-to-end tests of sessions kept like a store: a full memory tier, short
// access tokens, a hung Redis, a record Redis holds under another type, and
// session ids that prove themselves.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
)

// TestGatewayFullTierKeepsEveryLogin: with max_sessions 5, 30 logins (10 at
// a time) all succeed, Rebell spends each auth code exactly once, the
// instance holds 5 sessions, the most recent work, and the 25 ended for room
// are counted and logged.
func TestGatewayFullTierKeepsEveryLogin(t *testing.T) {
	const max, logins = 5, 30
	// 30 logins from 127.0.0.1: over the per-address limit's burst.
	g := startGateway(t, fmt.Sprintf("max_sessions %d\n\t\tlogin_rate off", max), "")
	codes := make([]string, logins)
	for i := range codes {
		codes[i] = issueCode(t, g.sandbox, fmt.Sprintf("21880000000008%02d", i))
	}
	ids := make([]string, logins)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	var mu sync.Mutex
	var failures []string
	for i, code := range codes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			resp, err := http.Post(g.base+"/rebell/login", "application/json", strings.NewReader(fmt.Sprintf(`{"authCode":%q}`, code)))
			if err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
				return
			}
			defer resp.Body.Close()
			var lr loginResult
			if err := json.NewDecoder(resp.Body).Decode(&lr); err != nil || resp.StatusCode != http.StatusOK || len(lr.SessionID) != 43 {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%d %+v %v", resp.StatusCode, lr, err))
				mu.Unlock()
				return
			}
			ids[i] = lr.SessionID
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d logins into a full tier failed, e.g. %s", len(failures), logins, failures[0])
	}
	st := getStats(t, g.sandbox)
	codeCalls := st.ByGrantType["AUTHORIZATION_CODE"]
	if codeCalls["SUCCESS"] != logins || len(codeCalls) != 1 {
		t.Fatalf("auth code exchanges %v, want %d SUCCESS and nothing else", codeCalls, logins)
	}
	if n := sessionsInMemoryAt(t, g.caddy); n != max {
		t.Fatalf("instance holds %d sessions, want %d", n, max)
	}
	// Log in once more and use it: a new session is never the one ended.
	last := g.mustLogin("2188000000000899")
	if resp, _ := g.call(http.MethodGet, "/api/me", bearer(last.SessionID)); resp.StatusCode != http.StatusOK {
		t.Fatalf("newest session: %d", resp.StatusCode)
	}
	served, ended := 0, 0
	for _, id := range ids {
		resp, body := g.call(http.MethodGet, "/api/me", bearer(id))
		switch {
		case resp.StatusCode == http.StatusOK:
			served++
		case resp.StatusCode == http.StatusUnauthorized && body["error"] == "session_invalid":
			ended++
		default:
			t.Fatalf("session of a full tier: %d %v", resp.StatusCode, body)
		}
	}
	if served != max-1 || ended != logins-(max-1) {
		t.Fatalf("%d sessions served, %d ended; want %d and %d", served, ended, max-1, logins-(max-1))
	}
	if n := metricValue(t, g.caddy, `caddy_rebell_sessions_ended_total{reason="evicted"}`); n != logins+1-max {
		t.Errorf("evicted sessions counted: %v, want %d", n, logins+1-max)
	}
	logs := g.caddy.logs.String()
	if n := strings.Count(logs, `"reason":"evicted"`); n != logins+1-max {
		t.Errorf("%d INFO lines for evicted sessions, want %d", n, logins+1-max)
	}
	if n := strings.Count(logs, "rebell memory tier full (max_sessions)"); n != 1 {
		t.Errorf("%d WARN lines for a full tier within a minute, want 1", n)
	}
}

// TestGatewayShortTokenRefreshedOnce: an access token that lives 10 s, with
// the default refresh_ahead of 5m, is refreshed once half-way through its
// life, not on every request.
func TestGatewayShortTokenRefreshedOnce(t *testing.T) {
	g := startGateway(t, "", "access_token_ttl 10s")
	lr := g.mustLogin("2188000000000810")
	start := time.Now()
	requests := 0
	for time.Since(start) < 7*time.Second {
		if resp, body := g.call(http.MethodGet, "/api/me", bearer(lr.SessionID)); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %v", requests, resp.StatusCode, body)
		}
		requests++
		time.Sleep(20 * time.Millisecond)
	}
	// The refresh of the first token (obtained at 0, expiring at 9–10 s)
	// is due from 4.5–5 s; the next token's from 9.5 s on.
	if n := refreshes(getStats(t, g.sandbox)); n != 1 {
		t.Fatalf("%d refreshes for %d requests over 7 s of a 10 s token, want 1", n, requests)
	}
	if n := strings.Count(g.caddy.logs.String(), "rebell refresh_ahead shortened to half the access token's lifetime"); n != 1 {
		t.Errorf("the shortened window was logged %d times, want once", n)
	}
}

// TestClusterHungRedisCachedRequestsFast: with redis-server stopped by
// SIGSTOP (connections open, no answer), requests for sessions every
// instance holds with a valid token are answered at memory speed, while the
// comparisons with Redis they start (every 500 ms with idle_timeout 2s)
// hang in the background.
func TestClusterHungRedisCachedRequestsFast(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "idle_timeout 2s", "")
	const customer = "2188000000000811"
	lr := m.mustLogin(m.nodes[0], customer)
	for _, nd := range m.nodes {
		m.mustGet(nd, lr.SessionID, customer)
	}
	rs.Pause(t)
	var slowest time.Duration
	var slow []string
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		for _, nd := range m.nodes {
			t0 := time.Now()
			r, err := m.do(nd, http.MethodGet, "/api/me", lr.SessionID)
			d := time.Since(t0)
			if err != nil || r.Status != http.StatusOK {
				t.Fatalf("instance %d with Redis hung: %v %v", nd.n, r, err)
			}
			slowest = max(slowest, d)
			if d > 250*time.Millisecond {
				slow = append(slow, fmt.Sprintf("instance %d: %v", nd.n, d.Round(time.Millisecond)))
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("slowest cached request with Redis hung: %v", slowest.Round(time.Microsecond))
	if len(slow) > 0 {
		t.Fatalf("cached requests waited on a hung Redis: %s", strings.Join(slow, ", "))
	}
	rs.Resume(t)
	m.mustGet(m.nodes[1], lr.SessionID, customer)
}

// TestClusterWrongTypeRecordEndsSession: a session key overwritten with a
// string ends the session on every instance with 401 session_invalid (never
// 503 store_unavailable), logged once as corrupt, and the key is deleted.
func TestClusterWrongTypeRecordEndsSession(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	const customer = "2188000000000812"
	lr := m.mustLogin(m.nodes[0], customer)
	m.mustGet(m.nodes[0], lr.SessionID, customer)
	m.mustGet(m.nodes[1], lr.SessionID, customer) // instance 3 never holds it

	rc := rs.Client(t)
	ctx := context.Background()
	h := sha256.Sum256([]byte(lr.SessionID))
	name := "it:{" + hex.EncodeToString(h[:]) + "}"
	if n, err := rc.Exists(ctx, name).Result(); err != nil || n != 1 {
		t.Fatalf("session record %s: %d %v", name, n, err)
	}
	rc.Del(ctx, name)
	rc.Set(ctx, name, "x", time.Hour)

	// Instance 3 reads the record on a memory miss: unreadable.
	if r := m.get(m.nodes[2], lr.SessionID); r.Status != http.StatusUnauthorized || r.Error != "session_invalid" {
		t.Fatalf("instance 3: %v, want 401 session_invalid", r)
	}
	// The end reaches the instances holding a copy.
	for _, nd := range m.nodes[:2] {
		m.waitRejected(nd, lr.SessionID, "session_invalid", 5*time.Second)
	}
	// And stays: 70 s in the report came from a record never cleaned up.
	for _, nd := range m.nodes {
		if r := m.get(nd, lr.SessionID); r.Status != http.StatusUnauthorized || r.Error != "session_invalid" {
			t.Fatalf("instance %d later: %v, want 401 session_invalid", nd.n, r)
		}
	}
	if n, _ := rc.Exists(ctx, name).Result(); n != 0 {
		t.Errorf("the unreadable key is still in Redis")
	}
	corrupt, warned := 0, 0
	for _, nd := range m.nodes {
		logs := nd.caddy.logs.String()
		corrupt += strings.Count(logs, "rebell session record unreadable")
		warned += strings.Count(logs, "redis store unavailable") + strings.Count(logs, "store_unavailable")
	}
	if corrupt != 1 {
		t.Errorf("the corrupt record was logged %d times, want once", corrupt)
	}
	if warned != 0 {
		t.Errorf("a record of the wrong type was reported as Redis being unavailable")
	}
	m.assertLogsClean(lr.SessionID)
}

// TestClusterUnknownIDsCostNoRedis: made-up session ids are refused by their
// tag without a Redis command; a logged-out id replayed on every instance
// costs at most a few.
func TestClusterUnknownIDsCostNoRedis(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	before := settledStats(t, rs)
	for i := range 1000 {
		if r := m.get(m.nodes[i%3], randomSessionID(t)); r.Status != http.StatusUnauthorized || r.Error != "session_invalid" {
			t.Fatalf("made-up id: %v, want 401 session_invalid", r)
		}
	}
	after := rs.CommandStats(t)
	n, changed := commandDelta(before, after)
	t.Logf("redis commands for 1000 made-up session ids: %d %v", n, changed)
	if n != 0 {
		t.Errorf("made-up session ids sent %d commands to Redis, want 0: %v", n, changed)
	}

	const customer = "2188000000000813"
	lr := m.mustLogin(m.nodes[0], customer)
	m.mustGet(m.nodes[1], lr.SessionID, customer)
	m.logout(m.nodes[0], lr.SessionID)
	m.waitRejected(m.nodes[1], lr.SessionID, "session_invalid", 5*time.Second)
	// The logout's cancel at Rebell (revoke on) goes through Redis too: let
	// it settle first, so that only the replays are counted.
	waitUntil(t, 10*time.Second, "the logout's cancel settled", func() (bool, string) {
		st := getStats(t, m.sandbox)
		pending := 0
		for _, nd := range m.nodes {
			pending += metricValue(t, nd.caddy, "caddy_rebell_pending_cancels")
		}
		return st.CancelTokenCalls >= 1 && pending == 0, fmt.Sprintf("cancelToken calls %d, pending %d", st.CancelTokenCalls, pending)
	})
	before = settledStats(t, rs)
	for i := range 300 {
		if r := m.get(m.nodes[i%3], lr.SessionID); r.Status != http.StatusUnauthorized || r.Error != "session_invalid" {
			t.Fatalf("logged-out id: %v, want 401 session_invalid", r)
		}
	}
	after = rs.CommandStats(t)
	n, changed = commandDelta(before, after)
	t.Logf("redis commands for a logged-out id replayed 300 times over 3 instances: %d %v", n, changed)
	if n > 3 {
		t.Errorf("a logged-out id replayed 300 times sent %d commands to Redis, want at most 3: %v", n, changed)
	}
}

// commandDelta counts the commands between two INFO commandstats, INFO and
// PING aside.
func commandDelta(before, after map[string]int64) (int64, []string) {
	var total int64
	var changed []string
	for cmd, c := range after {
		if d := c - before[cmd]; d != 0 && cmd != "info" && cmd != "ping" {
			total += d
			changed = append(changed, fmt.Sprintf("%s +%d", cmd, d))
		}
	}
	sort.Strings(changed)
	return total, changed
}

// sessionsInMemoryAt asks p's admin API how many sessions it holds.
func sessionsInMemoryAt(t *testing.T, p *caddyProc) int {
	t.Helper()
	return sessionsInMemory(t, &node{caddy: p})
}

// metricValue reads one series from p's admin /metrics (0 when absent).
func metricValue(t *testing.T, p *caddyProc, series string) int {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			var n float64
			fmt.Sscan(v, &n)
			return int(n)
		}
	}
	return 0
}

// TestClusterReplayedRecordStaysEnded: someone with write access to Redis
// copies a session's record, the session is logged out, and the copy is put
// back: the session stays ended on every instance, those that heard of the
// end and one started afterwards that never did, and the copy is deleted.
func TestClusterReplayedRecordStaysEnded(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	const customer = "2188000000000814"
	lr := m.mustLogin(m.nodes[0], customer)
	m.mustGet(m.nodes[0], lr.SessionID, customer)
	m.mustGet(m.nodes[1], lr.SessionID, customer)

	rc := rs.Client(t)
	ctx := context.Background()
	h := sha256.Sum256([]byte(lr.SessionID))
	name := "it:{" + hex.EncodeToString(h[:]) + "}"
	copied, err := rc.Dump(ctx, name).Result()
	if err != nil {
		t.Fatalf("copying the record %s: %v", name, err)
	}
	m.logout(m.nodes[0], lr.SessionID)
	m.waitRejected(m.nodes[1], lr.SessionID, "session_invalid", 5*time.Second)
	if err := rc.RestoreReplace(ctx, name, time.Hour, copied).Err(); err != nil {
		t.Fatal(err)
	}
	// An instance that never heard of the end reads the store.
	late := m.startNode([]string{rs.Addr}, "")
	for _, nd := range m.nodes {
		if r := m.get(nd, lr.SessionID); r.Status != http.StatusUnauthorized || r.Error != "session_invalid" {
			t.Fatalf("instance %d after the record was put back: %v, want 401 session_invalid", nd.n, r)
		}
	}
	if n, _ := rc.Exists(ctx, name).Result(); n != 0 {
		t.Error("the put-back record is still in Redis after instance", late.n, "read it")
	}
	m.assertLogsClean(lr.SessionID)
}
