// Command soak drives the gateway's soak test (bench/soak.sh): real Caddy
// processes running rebell_auth in front of the Rebell sandbox, one memory
// only and three sharing a Redis store, under a mix of logins, cached
// requests, refreshes (short token lifetimes), logouts and admin
// revocations, while it injects Rebell faults (outage, hang, U, rate limit,
// forged signature) and restarts Redis once.
//
// It checks that every response is in the documented set for the situation
// (docs/contract.md, docs/rebell-calls.md), that Rebell never answered
// USED_REFRESH_TOKEN, and that each gateway's goroutine count and live heap
// are flat after the warm-up (end ≤ 1.2 × the level at the warm-up mark) and
// its RSS nearly so (≤ 1.5 ×), then prints a summary table. It exits 1 on a
// failed check, 2 on a usage error.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rebell-gateway/caddy-rebell/bench/internal/freeport"
)

// flatFactor bounds goroutines and the live heap at the end against their
// level at the warm-up mark. rssFactor bounds RSS, which follows Go's heap
// goal (up to twice the live heap with GOGC=100) and the allocator's slow
// return of freed pages rather than what is live: in a 10-minute run the
// live heap stayed flat (HeapAlloc 94 MB at 1.5 min, 89 MB at 3.7 min)
// while RSS grew 1.28–1.32× (bench/README.md).
//
// goroutineSlack is added to the goroutine bound: an idle gateway runs
// about 20, and the requests in flight when a sample is taken (up to one
// per worker) add a few, so 1.2x alone would fail on noise.
const (
	flatFactor     = 1.2
	rssFactor      = 1.5
	goroutineSlack = 8
)

// Allowance windows after a situation ends, in which its answers remain
// documented: a refresh or login already in flight when a fault ended can
// still report it (timeout × (1 + retries) + backoff), and the store
// reconnects within a few seconds.
const (
	faultLag = 8 * time.Second
	redisLag = 15 * time.Second
)

type instance struct {
	target, name string
	base, admin  string
	pid          int

	mu      sync.Mutex
	breaker []stateSample
	rss     []sample
	gor     []sample
	heap    []sample
}

type stateSample struct {
	at    time.Time
	state float64
}

type sample struct {
	at time.Time
	v  float64
}

type faultWindow struct {
	kind       string
	start, end time.Time
}

type driver struct {
	sandbox   string
	start     time.Time
	duration  time.Duration
	warmup    time.Duration
	instances []*instance
	byTarget  map[string][]*instance
	client    *http.Client

	mu         sync.Mutex
	faults     []faultWindow
	redisDown  []faultWindow
	counts     map[string]int // "target kind outcome"
	violations []string
	nviolation int
	customers  atomic.Int64
}

func main() {
	var (
		duration = flag.Duration("duration", 10*time.Minute, "how long to run")
		warmup   = flag.Duration("warmup", 0, "when the level for the flatness check is taken (0: min(1m, duration/3))")
		sandbox  = flag.String("sandbox", "", "base URL of the Rebell sandbox")
		mem      = flag.String("memory", "", "memory-only gateway: base,admin,pid")
		redis    = flag.String("redis", "", "store redis gateways: base,admin,pid;base,admin,pid;...")
		restart  = flag.String("redis-restart", "", "command that restarts redis-server and returns once it answers")
		workers  = flag.Int("workers", 6, "workers per target")
		ports    = flag.Int("free-ports", 0, "print this many free ports on 127.0.0.1 and exit (for soak.sh)")
	)
	flag.Parse()
	if *ports > 0 {
		os.Exit(printFreePorts(*ports))
	}
	if *sandbox == "" || *mem == "" || *redis == "" || *duration < 30*time.Second || *workers < 1 {
		fmt.Fprintln(os.Stderr, "usage: soak -sandbox URL -memory base,admin,pid -redis 'base,admin,pid;...' [-redis-restart CMD] [-duration 10m] (at least 30s)")
		os.Exit(2)
	}
	d := &driver{
		sandbox:  strings.TrimSuffix(*sandbox, "/"),
		duration: *duration,
		warmup:   *warmup,
		byTarget: map[string][]*instance{},
		client:   &http.Client{Timeout: 45 * time.Second},
		counts:   map[string]int{},
	}
	if d.warmup == 0 {
		d.warmup = min(time.Minute, d.duration/3)
	}
	for target, spec := range map[string]string{"memory": *mem, "redis": *redis} {
		for i, s := range strings.Split(spec, ";") {
			f := strings.Split(s, ",")
			pid, err := strconv.Atoi(strings.TrimSpace(f[len(f)-1]))
			if len(f) != 3 || err != nil {
				fmt.Fprintf(os.Stderr, "soak: bad instance %q (want base,admin,pid)\n", s)
				os.Exit(2)
			}
			in := &instance{target: target, name: fmt.Sprintf("%s-%d", target, i+1), base: strings.TrimSuffix(f[0], "/"), admin: f[1], pid: pid}
			d.instances = append(d.instances, in)
			d.byTarget[target] = append(d.byTarget[target], in)
		}
	}
	sort.Slice(d.instances, func(i, j int) bool { return d.instances[i].name < d.instances[j].name })
	os.Exit(d.run(*workers, *restart))
}

func (d *driver) run(workers int, restart string) int {
	d.start = time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), d.start.Add(d.duration))
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { d.monitor(ctx) })
	wg.Go(func() { d.schedule(ctx, restart) })
	for target := range d.byTarget {
		for w := range workers {
			wg.Go(func() { d.work(ctx, target, w) })
		}
	}
	wg.Wait()
	return d.report()
}

// schedule injects the five faults in turn, each for a third of its slot,
// and restarts Redis once in the middle, while no fault is active.
func (d *driver) schedule(ctx context.Context, restart string) {
	lead := min(10*time.Second, d.duration/10)
	tail := max(10*time.Second, d.duration/6)
	slot := (d.duration - lead - tail) / 5
	type fault struct{ kind, spec string }
	faults := []fault{
		{"outage", `{"count":10000,"httpStatus":503}`},
		{"hang", `{"count":10000,"delay":"10s"}`},
		{"U", `{"count":10000,"resultStatus":"U","resultCode":"UNKNOWN_EXCEPTION"}`},
		{"rate_limit", `{"count":10000,"resultStatus":"U","resultCode":"REQUEST_TRAFFIC_EXCEED_LIMIT"}`},
		{"forged_signature", `{"count":10000,"resultStatus":"S","resultCode":"SUCCESS","forgeSignature":true}`},
	}
	sleepUntil := func(t time.Time) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Until(t)):
			return true
		}
	}
	for i, f := range faults {
		at := d.start.Add(lead + time.Duration(i)*slot)
		if !sleepUntil(at) {
			return
		}
		w := faultWindow{kind: f.kind, start: time.Now()}
		d.mu.Lock()
		d.faults = append(d.faults, faultWindow{kind: f.kind, start: w.start, end: d.start.Add(d.duration + time.Hour)})
		idx := len(d.faults) - 1
		d.mu.Unlock()
		if err := d.sandboxFaults(http.MethodPost, f.spec); err != nil {
			d.violate("injecting fault %s: %v", f.kind, err)
		}
		sleepUntil(at.Add(slot / 3))
		if err := d.sandboxFaults(http.MethodDelete, ""); err != nil {
			d.violate("clearing fault %s: %v", f.kind, err)
		}
		d.mu.Lock()
		d.faults[idx].end = time.Now()
		d.mu.Unlock()
		log("fault %s for %v", f.kind, time.Since(w.start).Round(100*time.Millisecond))
		if i == 2 && restart != "" {
			if !sleepUntil(at.Add(slot * 2 / 3)) {
				return
			}
			w := faultWindow{kind: "redis_restart", start: time.Now(), end: d.start.Add(d.duration + time.Hour)}
			d.mu.Lock()
			d.redisDown = append(d.redisDown, w)
			d.mu.Unlock()
			out, err := exec.Command("bash", "-c", restart).CombinedOutput()
			if err != nil {
				d.violate("restarting redis: %v: %s", err, out)
			}
			d.mu.Lock()
			d.redisDown[len(d.redisDown)-1].end = time.Now()
			d.mu.Unlock()
			log("redis restarted in %v", time.Since(w.start).Round(100*time.Millisecond))
		}
	}
}

func (d *driver) sandboxFaults(method, spec string) error {
	req, _ := http.NewRequest(method, d.sandbox+"/sandbox/faults", strings.NewReader(spec))
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("HTTP %d %s", resp.StatusCode, b)
	}
	return nil
}

// monitor samples each instance's breaker state (every 250 ms), RSS and
// goroutines (every 2 s).
func (d *driver) monitor(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		for _, in := range d.instances {
			now := time.Now()
			if v, err := metric(d.client, in.admin, "caddy_rebell_breaker_state"); err == nil {
				in.mu.Lock()
				in.breaker = append(in.breaker, stateSample{now, v})
				in.mu.Unlock()
			}
			if n%8 == 0 {
				rss, err1 := rssKiB(in.pid)
				g, err2 := goroutines(d.client, in.admin)
				h, err3 := liveHeap(d.client, in.admin)
				if err1 == nil && err2 == nil && err3 == nil {
					in.mu.Lock()
					in.rss = append(in.rss, sample{now, float64(rss)})
					in.gor = append(in.gor, sample{now, float64(g)})
					in.heap = append(in.heap, sample{now, h})
					in.mu.Unlock()
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

type session struct {
	id, customer string
}

// work is one worker's loop on a target: it keeps a few sessions of its own
// customers and logs in, uses, logs out and revokes them.
func (d *driver) work(ctx context.Context, target string, w int) {
	ins := d.byTarget[target]
	pick := func() *instance { return ins[rand.IntN(len(ins))] }
	var pool []session
	const maxPool = 12
	for ctx.Err() == nil {
		r := rand.Float64()
		switch {
		case len(pool) < 3 || r < 0.04:
			if len(pool) >= maxPool {
				pool = d.logout(ctx, pick(), pool, 0)
				continue
			}
			if s, ok := d.login(ctx, pick()); ok {
				pool = append(pool, s)
			}
		case r < 0.06:
			pool = d.logout(ctx, pick(), pool, rand.IntN(len(pool)))
		case r < 0.07:
			pool = d.revoke(ctx, pick(), pool, rand.IntN(len(pool)))
		default:
			s := pool[rand.IntN(len(pool))]
			in := pick()
			status, code, t0, t1 := d.do(ctx, http.MethodGet, in.base+"/api/soak", "", s.id)
			if ctx.Err() == nil {
				d.judge(in, "request", status, code, t0, t1, false, s.id)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(10+rand.IntN(20)) * time.Millisecond):
		}
	}
}

func (d *driver) login(ctx context.Context, in *instance) (session, bool) {
	customer := fmt.Sprintf("2188%012d", d.customers.Add(1))
	resp, err := d.client.Post(d.sandbox+"/sandbox/authcode", "application/json",
		strings.NewReader(`{"customerId":"`+customer+`","scopes":["auth_user"]}`))
	if err != nil {
		if ctx.Err() == nil {
			d.violate("sandbox authcode: %v", err)
		}
		return session{}, false
	}
	var ac struct{ AuthCode string }
	_ = json.NewDecoder(resp.Body).Decode(&ac)
	resp.Body.Close()
	if ac.AuthCode == "" {
		d.violate("sandbox authcode: HTTP %d without a code", resp.StatusCode)
		return session{}, false
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, in.base+"/rebell/login", strings.NewReader(`{"authCode":"`+ac.AuthCode+`"}`))
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err = d.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			d.violate("login on %s: %v", in.name, err)
		}
		return session{}, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	t1 := time.Now()
	var out struct{ SessionID, CustomerID, Error string }
	_ = json.Unmarshal(body, &out)
	if ctx.Err() != nil {
		return session{}, false
	}
	d.judge(in, "login", resp.StatusCode, out.Error, t0, t1, false, "")
	if resp.StatusCode != http.StatusOK {
		return session{}, false
	}
	if out.CustomerID != customer || len(out.SessionID) != 43 {
		d.violate("login on %s: customer %q, session id of %d characters", in.name, out.CustomerID, len(out.SessionID))
		return session{}, false
	}
	return session{id: out.SessionID, customer: customer}, true
}

// logout ends pool[i] on in and checks that in no longer serves it.
func (d *driver) logout(ctx context.Context, in *instance, pool []session, i int) []session {
	s := pool[i]
	status, code, t0, t1 := d.do(ctx, http.MethodPost, in.base+"/rebell/logout", "", s.id)
	if ctx.Err() != nil {
		return pool
	}
	d.judge(in, "logout", status, code, t0, t1, false, s.id)
	if status != http.StatusNoContent {
		return pool // kept: it may be ended again later
	}
	d.checkEnded(ctx, in, s)
	return slices.Delete(pool, i, i+1)
}

// revoke ends every session of pool[i]'s customer through in's admin API.
func (d *driver) revoke(ctx context.Context, in *instance, pool []session, i int) []session {
	s := pool[i]
	status, _, t0, t1 := d.do(ctx, http.MethodDelete, "http://"+in.admin+"/rebell/customers/"+s.customer+"/sessions", "", "")
	if ctx.Err() != nil {
		return pool
	}
	code := ""
	if status == http.StatusServiceUnavailable {
		code = "store_unavailable" // the admin API's own error body
	}
	d.judge(in, "revoke", status, code, t0, t1, false, s.id)
	if status != http.StatusOK {
		return pool
	}
	d.checkEnded(ctx, in, s)
	return slices.Delete(pool, i, i+1)
}

func (d *driver) checkEnded(ctx context.Context, in *instance, s session) {
	status, code, t0, t1 := d.do(ctx, http.MethodGet, in.base+"/api/soak", "", s.id)
	if ctx.Err() == nil {
		d.judge(in, "ended_session", status, code, t0, t1, true, s.id)
	}
}

// do sends a request with the session id (if any) and returns the status,
// the error code of a JSON error body, and when it started and ended.
func (d *driver) do(ctx context.Context, method, url, body, sid string) (int, string, time.Time, time.Time) {
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if sid != "" {
		req.Header.Set("Authorization", "Bearer "+sid)
	}
	t0 := time.Now()
	resp, err := d.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			d.violate("%s %s: %v", method, url, err)
		}
		return 0, "", t0, time.Now()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e struct{ Error string }
	if resp.StatusCode >= 400 {
		_ = json.Unmarshal(b, &e)
	}
	return resp.StatusCode, e.Error, t0, time.Now()
}

// judge counts a response and checks it is documented for the situation
// (docs/contract.md's error table, docs/rebell-calls.md):
//   - 200 / 204: always (but not for a session just ended);
//   - 503 rebell_unavailable: while an availability fault (outage, hang, U,
//     rate limit) is active or just ended, or the instance's breaker is not
//     closed;
//   - 502 rebell_rejected: while the forged-signature fault is active or
//     just ended;
//   - 503 store_unavailable: on a store redis instance while Redis
//     restarts or just after;
//   - 401 session_invalid: only for a session the driver just ended.
func (d *driver) judge(in *instance, kind string, status int, code string, t0, t1 time.Time, ended bool, sid string) {
	outcome := strconv.Itoa(status)
	if code != "" {
		outcome += " " + code
	}
	ok := false
	switch {
	case ended:
		ok = status == http.StatusUnauthorized && code == "session_invalid"
	case status == http.StatusOK || status == http.StatusNoContent:
		ok = true
	case status == http.StatusServiceUnavailable && code == "rebell_unavailable" && kind != "logout":
		ok = d.faultNear(t0, t1, "outage", "hang", "U", "rate_limit") || in.breakerNotClosed(t0, t1)
	case status == http.StatusBadGateway && code == "rebell_rejected":
		ok = d.faultNear(t0, t1, "forged_signature")
	}
	if status == http.StatusServiceUnavailable && code == "store_unavailable" && in.target == "redis" {
		ok = d.redisNear(t0, t1)
	}
	d.mu.Lock()
	d.counts[in.target+"\t"+kind+"\t"+outcome]++
	d.mu.Unlock()
	if !ok {
		d.violate("%s on %s at +%v: %s outside the documented set (took %v)%s",
			kind, in.name, t0.Sub(d.start).Round(time.Millisecond), outcome, t1.Sub(t0).Round(time.Millisecond), sessionTag(sid))
	}
}

// sessionTag names a session as the gateway's logs do (the first 8 hex
// characters of the SHA-256 of its id), so a violation can be found in
// them.
func sessionTag(sid string) string {
	if sid == "" {
		return ""
	}
	h := sha256.Sum256([]byte(sid))
	return " session " + hex.EncodeToString(h[:4])
}

func (d *driver) faultNear(t0, t1 time.Time, kinds ...string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.faults {
		if slices.Contains(kinds, f.kind) && !t1.Before(f.start) && !t0.After(f.end.Add(faultLag)) {
			return true
		}
	}
	return false
}

func (d *driver) redisNear(t0, t1 time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.redisDown {
		if !t1.Before(w.start) && !t0.After(w.end.Add(redisLag)) {
			return true
		}
	}
	return false
}

// breakerNotClosed reports whether in's breaker was seen open or half-open
// within a second of [t0, t1].
func (in *instance) breakerNotClosed(t0, t1 time.Time) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, s := range in.breaker {
		if !s.at.Before(t0.Add(-time.Second)) && !s.at.After(t1.Add(time.Second)) && s.state != 0 {
			return true
		}
	}
	return false
}

func (d *driver) violate(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nviolation++
	if len(d.violations) < 20 {
		d.violations = append(d.violations, fmt.Sprintf(format, args...))
	}
}

func log(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[soak %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// report prints the summary table and the checks; it returns the exit code.
func (d *driver) report() int {
	failed := false
	fmt.Printf("\nsoak: %v, warm-up mark at %v; faults: ", d.duration, d.warmup)
	for _, f := range d.faults {
		fmt.Printf("%s +%v..+%v  ", f.kind, f.start.Sub(d.start).Round(time.Second), f.end.Sub(d.start).Round(time.Second))
	}
	for _, w := range d.redisDown {
		fmt.Printf("redis restart +%v..+%v", w.start.Sub(d.start).Round(time.Second), w.end.Sub(d.start).Round(time.Second))
	}
	fmt.Println()

	fmt.Printf("\n%-7s %-14s %-28s %9s\n", "target", "kind", "outcome", "count")
	keys := make([]string, 0, len(d.counts))
	for k := range d.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	total := 0
	for _, k := range keys {
		f := strings.Split(k, "\t")
		fmt.Printf("%-7s %-14s %-28s %9d\n", f[0], f[1], f[2], d.counts[k])
		total += d.counts[k]
	}
	fmt.Printf("%-7s %-14s %-28s %9d\n", "all", "", "", total)

	stats, err := sandboxStats(d.client, d.sandbox)
	switch {
	case err != nil:
		fmt.Printf("\nsandbox stats: %v\n", err)
		failed = true
	default:
		fmt.Printf("\nRebell (sandbox) applyToken answers: %d", stats.ApplyTokenCalls)
		codes := make([]string, 0, len(stats.ByResultCode))
		for c := range stats.ByResultCode {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		for _, c := range codes {
			fmt.Printf("  %s=%d", c, stats.ByResultCode[c])
		}
		fmt.Println()
		if n := stats.ByResultCode["USED_REFRESH_TOKEN"]; n != 0 {
			fmt.Printf("CHECK FAILED: Rebell answered USED_REFRESH_TOKEN %d times\n", n)
			failed = true
		}
	}

	fmt.Printf("\n%-9s %11s %11s %6s %11s %11s %6s %9s %8s %6s %7s %7s %8s\n",
		"instance", "RSS@warm", "RSS@end", "ratio", "heap@warm", "heap@end", "ratio", "gor@warm", "gor@end", "ratio",
		"opened", "closed", "refused")
	for _, in := range d.instances {
		rw, re := in.level(in.rss, d.start.Add(d.warmup)), in.level(in.rss, time.Time{})
		gw, ge := in.level(in.gor, d.start.Add(d.warmup)), in.level(in.gor, time.Time{})
		hw, he := in.level(in.heap, d.start.Add(d.warmup)), in.level(in.heap, time.Time{})
		opened, _ := metricSum(d.client, in.admin, `caddy_rebell_breaker_transitions_total`, `state="open"`)
		closed, _ := metricSum(d.client, in.admin, `caddy_rebell_breaker_transitions_total`, `state="closed"`)
		refused, _ := metricSum(d.client, in.admin, `caddy_rebell_calls_refused_total`, "")
		fmt.Printf("%-9s %8.1fMiB %8.1fMiB %6.2f %8.1fMiB %8.1fMiB %6.2f %9.0f %8.0f %6.2f %7.0f %7.0f %8.0f\n",
			in.name, rw/1024, re/1024, re/rw, hw/(1<<20), he/(1<<20), he/hw, gw, ge, ge/gw, opened, closed, refused)
		if rw <= 0 || gw <= 0 || hw <= 0 {
			fmt.Printf("CHECK FAILED: %s: no samples at the warm-up mark\n", in.name)
			failed = true
			continue
		}
		if re > rssFactor*rw {
			fmt.Printf("CHECK FAILED: %s: RSS grew %.2fx after the warm-up (bound %.1fx)\n", in.name, re/rw, rssFactor)
			failed = true
		}
		if he > flatFactor*hw {
			fmt.Printf("CHECK FAILED: %s: the live heap grew %.2fx after the warm-up (bound %.1fx)\n", in.name, he/hw, flatFactor)
			failed = true
		}
		if ge > flatFactor*gw+goroutineSlack {
			fmt.Printf("CHECK FAILED: %s: goroutines grew from %.0f to %.0f after the warm-up (bound %.1fx + %d)\n",
				in.name, gw, ge, flatFactor, goroutineSlack)
			failed = true
		}
	}
	fmt.Printf("\nresponses outside the documented set, and driver errors: %d\n", d.nviolation)
	for _, v := range d.violations {
		fmt.Println("  " + v)
	}
	if d.nviolation > 0 {
		failed = true
	}
	if failed {
		fmt.Println("\nsoak: FAIL")
		return 1
	}
	fmt.Println("\nsoak: PASS")
	return 0
}

// level is the median of the samples within 5 s of at, or of the last 6 s
// when at is zero.
func (in *instance) level(samples []sample, at time.Time) float64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	var vs []float64
	for _, s := range samples {
		if at.IsZero() {
			if len(samples) > 0 && samples[len(samples)-1].at.Sub(s.at) <= 6*time.Second {
				vs = append(vs, s.v)
			}
		} else if s.at.Sub(at).Abs() <= 5*time.Second {
			vs = append(vs, s.v)
		}
	}
	if len(vs) == 0 {
		return 0
	}
	sort.Float64s(vs)
	return vs[len(vs)/2]
}

type stats struct {
	ApplyTokenCalls int64            `json:"applyTokenCalls"`
	ByResultCode    map[string]int64 `json:"byResultCode"`
}

func sandboxStats(c *http.Client, base string) (*stats, error) {
	resp, err := c.Get(base + "/sandbox/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

// metric returns the largest value of the series of name in the admin
// API's /metrics.
func metric(c *http.Client, admin, name string) (float64, error) {
	vals, err := series(c, admin, name, "")
	if err != nil {
		return 0, err
	}
	m := 0.0
	for _, v := range vals {
		m = max(m, v)
	}
	return m, nil
}

// metricSum returns the sum of the series of name whose labels contain
// match.
func metricSum(c *http.Client, admin, name, match string) (float64, error) {
	vals, err := series(c, admin, name, match)
	sum := 0.0
	for _, v := range vals {
		sum += v
	}
	return sum, err
}

func series(c *http.Client, admin, name, match string) ([]float64, error) {
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out []float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if match != "" && !strings.Contains(line, match) {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			out = append(out, v)
		}
	}
	return out, sc.Err()
}

func goroutines(c *http.Client, admin string) (int, error) {
	resp, err := c.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	var n int
	if _, err := fmt.Sscanf(line, "goroutine profile: total %d", &n); err != nil {
		return 0, errors.New("unexpected pprof answer")
	}
	return n, nil
}

// printFreePorts prints n distinct ports on 127.0.0.1 that were free a
// moment ago, on one line.
func printFreePorts(n int) int {
	if err := freeport.Print(os.Stdout, n); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	return 0
}

// liveHeap estimates the live heap (bytes) from the admin API's expvar
// memstats: the heap goal is the heap live after the last collection times
// (1 + GOGC/100), and Caddy runs with the default GOGC of 100.
func liveHeap(c *http.Client, admin string) (float64, error) {
	resp, err := c.Get("http://" + admin + "/debug/vars")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var v struct {
		Memstats struct{ NextGC uint64 } `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, err
	}
	if v.Memstats.NextGC == 0 {
		return 0, errors.New("no memstats")
	}
	return float64(v.Memstats.NextGC) / 2, nil
}

func rssKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int
			_, err := fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb, err
		}
	}
	return 0, errors.New("no VmRSS")
}
