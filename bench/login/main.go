// Command login measures what a login costs the gateway against its floor:
// the gateway process's CPU time per /rebell/login (read from
// /proc/<pid>/stat around the logins) and, in this process, the CPU time of
// one RSA-2048 SHA-256 PKCS #1 v1.5 signature and one verification (what the
// gateway must do per login: sign the applyToken request, verify Rebell's
// response). Auth codes are issued by the sandbox before the measured
// window, so only the logins themselves fall inside it. See bench/README.md
// (bench/login.sh).
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rebell-gateway/caddy-rebell/bench/internal/freeport"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func main() {
	var (
		sandbox = flag.String("sandbox", "", "base URL of the Rebell sandbox")
		gateway = flag.String("gateway", "", "base URL of the gateway")
		pid     = flag.Int("pid", 0, "process id of the gateway")
		logins  = flag.Int("logins", 2500, "logins to measure")
		conc    = flag.Int("concurrency", 8, "logins in flight at once")
		warm    = flag.Int("warmup", 200, "logins before the measured ones")
		floorN  = flag.Int("floor", 400, "sign+verify pairs timed for the floor (0: skip)")
		ports   = flag.Int("free-ports", 0, "print this many free ports on 127.0.0.1 and exit")
		admin   = flag.String("admin", "", "the gateway's admin address, for -profile")
		profile = flag.String("profile", "", "write a 5 s CPU profile of the gateway, taken during the logins, to this file")
	)
	flag.Parse()
	if *ports > 0 {
		os.Exit(printFreePorts(*ports))
	}
	if *floorN > 0 {
		f, err := floor(*floorN)
		if err != nil {
			fail(err)
		}
		fmt.Printf("floor_us %.1f\n", f)
	}
	if *gateway == "" {
		return
	}
	if *sandbox == "" || *pid <= 0 || *logins < 1 || *conc < 1 {
		fail(errors.New("need -sandbox, -gateway, -pid, -logins ≥ 1 and -concurrency ≥ 1"))
	}
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: *conc * 2, DisableCompression: true},
	}
	d := &driver{client: client, sandbox: *sandbox, gateway: *gateway}
	if err := d.run(*warm, *conc); err != nil {
		fail(fmt.Errorf("warm-up: %w", err))
	}
	codes, err := d.codes(*logins, *conc)
	if err != nil {
		fail(err)
	}
	before, err := cpuTicks(*pid)
	if err != nil {
		fail(err)
	}
	var prof sync.WaitGroup
	if *profile != "" && *admin != "" {
		prof.Go(func() {
			if err := fetch(client, "http://"+*admin+"/debug/pprof/profile?seconds=5", *profile); err != nil {
				fmt.Fprintln(os.Stderr, "login: profile:", err)
			}
		})
	}
	t0 := time.Now()
	if err := d.login(codes, *conc); err != nil {
		fail(err)
	}
	wall := time.Since(t0)
	prof.Wait()
	after, err := cpuTicks(*pid)
	if err != nil {
		fail(err)
	}
	perLogin := float64(after-before) * 1e6 / clockTicks / float64(*logins)
	fmt.Printf("gateway_cpu_us_per_login %.1f\nlogins_per_s %.0f\n", perLogin, float64(*logins)/wall.Seconds())
}

type driver struct {
	client           *http.Client
	sandbox, gateway string
	customers        atomic.Int64
}

// run issues n codes and logs in with them (the warm-up).
func (d *driver) run(n, conc int) error {
	codes, err := d.codes(n, conc)
	if err != nil {
		return err
	}
	return d.login(codes, conc)
}

// codes has the sandbox issue n auth codes.
func (d *driver) codes(n, conc int) ([]string, error) {
	out := make([]string, n)
	return out, parallel(n, conc, func(i int) error {
		customer := fmt.Sprintf("2188%012d", d.customers.Add(1))
		body, err := d.post(d.sandbox+"/sandbox/authcode", `{"customerId":"`+customer+`","scopes":["auth_user"]}`)
		if err != nil {
			return fmt.Errorf("sandbox authcode: %w", err)
		}
		var ac struct{ AuthCode string }
		if err := json.Unmarshal(body, &ac); err != nil || ac.AuthCode == "" {
			return fmt.Errorf("sandbox authcode: no code in %q", body)
		}
		out[i] = ac.AuthCode
		return nil
	})
}

// login logs in with every code, conc at a time; any failure is an error.
func (d *driver) login(codes []string, conc int) error {
	return parallel(len(codes), conc, func(i int) error {
		body, err := d.post(d.gateway+"/rebell/login", `{"authCode":"`+codes[i]+`"}`)
		if err != nil {
			return fmt.Errorf("login: %w", err)
		}
		var out struct{ SessionID string }
		if err := json.Unmarshal(body, &out); err != nil || len(out.SessionID) != 43 {
			return fmt.Errorf("login: no session id in %q", body)
		}
		return nil
	})
}

func (d *driver) post(url, body string) ([]byte, error) {
	resp, err := d.client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return b, nil
}

// fetch writes what url answers to file.
func fetch(c *http.Client, url, file string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

// parallel runs f(0..n-1), conc at a time, and returns the first error.
func parallel(n, conc int, f func(int) error) error {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					cancel(err)
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// floor is the CPU time (µs) of one RSA-2048 sign plus one verify, as the
// gateway does them (rebell.SignContent, rebell.VerifyContent), measured over
// n pairs on one goroutine with getrusage.
func floor(n int) (float64, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0, err
	}
	content := []byte(`POST /v2/authorizations/applyToken.MERCHANT.2026-12-06T18:00:00+00:00.{"grantType":"AUTHORIZATION_CODE","authCode":"0000000000000000000000000000000000000000"}`)
	pair := func() error {
		sig, err := rebell.SignContent(key, content)
		if err != nil {
			return err
		}
		return rebell.VerifyContent(&key.PublicKey, content, sig)
	}
	for range 20 { // warm up
		if err := pair(); err != nil {
			return 0, err
		}
	}
	before := cpuSelf()
	for range n {
		if err := pair(); err != nil {
			return 0, err
		}
	}
	return float64(cpuSelf()-before) / 1e3 / float64(n), nil
}

// cpuSelf is this process's user+system CPU time in ns.
func cpuSelf() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// cpuTicks is utime+stime of pid from /proc/<pid>/stat.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return ut + st, nil
}

// printFreePorts prints n distinct ports on 127.0.0.1 that were free a
// moment ago, on one line.
func printFreePorts(n int) int {
	if err := freeport.Print(os.Stdout, n); err != nil {
		fmt.Fprintln(os.Stderr, "login:", err)
		return 1
	}
	return 0
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "login:", err)
	os.Exit(1)
}
