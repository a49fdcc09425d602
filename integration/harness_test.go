// Package integration runs caddy-rebell end to end: a real Caddy built from
// ./cmd/caddy, started as a process with a Caddyfile, on 127.0.0.1 only.
package integration

import (
	"bytes"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// caddyBin is the Caddy built from ./cmd/caddy for this test run.
var caddyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "caddy-rebell-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddyBin = filepath.Join(dir, "caddy")
	_, thisFile, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(thisFile))
	build := exec.Command("go", "build", "-o", caddyBin, "./cmd/caddy")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ./cmd/caddy:", err)
		os.Exit(1)
	}
	// Every request a test sends without a client of its own has a deadline:
	// a gateway that hangs fails the test instead of the whole run.
	http.DefaultClient.Timeout = 60 * time.Second
	http.DefaultClient.Transport = retryClosedConn{http.DefaultTransport}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// retryClosedConn sends a request once more when the connection was closed
// before any answer: after a reload, a server of the old config can still
// be waiting in Accept on the listener the configs share, take one new
// connection, and close it unanswered (Caddy v2.11's fakeCloseListener: a
// sibling clears the deadline that should wake it). The request never
// reached a handler, so sending it again is safe.
type retryClosedConn struct{ next http.RoundTripper }

func (rt retryClosedConn) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(req)
	if err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) || req.Context().Err() != nil {
		return resp, err
	}
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return resp, err
		}
		body, berr := req.GetBody()
		if berr != nil {
			return resp, err
		}
		req = req.Clone(req.Context())
		req.Body = body
	}
	return rt.next.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// wrapped transport.
func (rt retryClosedConn) CloseIdleConnections() {
	if c, ok := rt.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// heldPorts are the listening sockets freePort bound, by port, until
// startCaddy hands them to a Caddy process.
var heldPorts = struct {
	sync.Mutex
	files map[int]*os.File
}{files: map[int]*os.File{}}

// freePort binds a listening socket on a free 127.0.0.1 port and holds it
// for startCaddy, which hands it to Caddy as an inherited file descriptor
// (`bind fd/N`, `admin fd/N`): no other process (a redis-server another
// package starts, an outgoing connection) can take the port in between, as
// it could if the port were released and picked again by Caddy.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File() // a duplicate: the socket stays open
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	heldPorts.Lock()
	heldPorts.files[port] = f
	heldPorts.Unlock()
	t.Cleanup(func() {
		if f := takeHeldPort(port); f != nil {
			f.Close()
		}
	})
	return port
}

// takeHeldPort returns the socket freePort holds for port and forgets it,
// or nil.
func takeHeldPort(port int) *os.File {
	heldPorts.Lock()
	defer heldPorts.Unlock()
	f := heldPorts.files[port]
	delete(heldPorts.files, port)
	return f
}

// siteAddress matches a site address on 127.0.0.1 that opens its block.
var siteAddress = regexp.MustCompile(`(?m)^(?:https?://)?127\.0\.0\.1:(\d+) \{$`)

// bindHeld makes each site of caddyfile whose port is in fds listen on the
// inherited descriptor: `bind fd/N` as the block's first line.
func bindHeld(caddyfile string, fds map[int]int) string {
	return siteAddress.ReplaceAllStringFunc(caddyfile, func(site string) string {
		port, _ := strconv.Atoi(siteAddress.FindStringSubmatch(site)[1])
		if fd, ok := fds[port]; ok {
			return fmt.Sprintf("%s\n\tbind fd/%d", site, fd)
		}
		return site
	})
}

// testKeys returns the merchant's and the sandbox's keys.
func testKeys(t testing.TB) (merchant, platform *rsa.PrivateKey) {
	t.Helper()
	return testkeys.RSA(0), testkeys.RSA(1)
}

// keyFiles writes the test keys as PEM files in dir.
type keyFiles struct {
	MerchantPrivate, MerchantPublic, PlatformPrivate, PlatformPublic string
}

func writeKeys(t testing.TB, dir string) keyFiles {
	t.Helper()
	m, p := testKeys(t)
	kf := keyFiles{
		MerchantPrivate: filepath.Join(dir, "merchant.pem"),
		MerchantPublic:  filepath.Join(dir, "merchant.pub"),
		PlatformPrivate: filepath.Join(dir, "platform.pem"),
		PlatformPublic:  filepath.Join(dir, "platform.pub"),
	}
	for path, data := range map[string][]byte{
		kf.MerchantPrivate: rebell.EncodePrivateKeyPEM(m),
		kf.MerchantPublic:  rebell.EncodePublicKeyPEM(&m.PublicKey),
		kf.PlatformPrivate: rebell.EncodePrivateKeyPEM(p),
		kf.PlatformPublic:  rebell.EncodePublicKeyPEM(&p.PublicKey),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return kf
}

// caddyProc is a running Caddy.
type caddyProc struct {
	t         testing.TB
	cmd       *exec.Cmd
	dir       string
	AdminAddr string
	logs      *syncBuffer
	done      chan struct{}
	global    string      // extra global options
	fds       map[int]int // port → inherited descriptor
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startCaddy runs Caddy with caddyfile (its global options block is added:
// admin on a port of its own, no persisted config) and waits until it serves
// its configuration. Every port freePort returned that the admin endpoint or
// a site address (`http://127.0.0.1:<port> {`) uses is handed to Caddy as an
// inherited listening socket; waitPorts must be among them.
func startCaddy(t testing.TB, caddyfile string, waitPorts ...int) *caddyProc {
	t.Helper()
	return startCaddyGlobal(t, "", caddyfile, waitPorts...)
}

// startCaddyGlobal is startCaddy with more global options (lines of the
// global options block).
func startCaddyGlobal(t testing.TB, global, caddyfile string, waitPorts ...int) *caddyProc {
	t.Helper()
	dir := t.TempDir()
	adminPort := freePort(t)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", adminPort)
	p := &caddyProc{t: t, dir: dir, AdminAddr: adminAddr, logs: &syncBuffer{}, done: make(chan struct{}), fds: map[int]int{}, global: global}
	var files []*os.File
	for _, port := range append([]int{adminPort}, sitePorts(caddyfile)...) {
		if f := takeHeldPort(port); f != nil {
			p.fds[port] = 3 + len(files) // ExtraFiles start at descriptor 3
			files = append(files, f)
		}
	}
	for _, port := range waitPorts {
		if _, ok := p.fds[port]; !ok {
			t.Fatalf("port %d is not a site's port held by freePort", port)
		}
	}
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(p.config(caddyfile)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(caddyBin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.ExtraFiles = files
	err := p.cmd.Start()
	// Caddy has its copies now. Without ours, a request to a Caddy that has
	// exited is refused instead of waiting for an accept that never comes.
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for !strings.Contains(p.logs.String(), "serving initial configuration") {
		select {
		case <-p.done:
			t.Fatalf("caddy exited:\n%s", p.logs.String())
		case <-deadline.C:
			t.Fatalf("caddy did not serve its configuration within 30s:\n%s", p.logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return p
}

// sitePorts returns the ports of caddyfile's 127.0.0.1 site addresses.
func sitePorts(caddyfile string) []int {
	var ports []int
	for _, m := range siteAddress.FindAllStringSubmatch(caddyfile, -1) {
		port, _ := strconv.Atoi(m[1])
		ports = append(ports, port)
	}
	return ports
}

// config is the whole Caddyfile Caddy runs for caddyfile: the global
// options, and the inherited sockets bound.
func (p *caddyProc) config(caddyfile string) string {
	return fmt.Sprintf("{\n\tadmin fd/%d\n\tpersist_config off\n\tgrace_period 2s\n%s\n}\n\n%s", p.fds[portOf(p.AdminAddr)], p.global, bindHeld(caddyfile, p.fds))
}

func portOf(addr string) int {
	_, port, _ := net.SplitHostPort(addr)
	var n int
	fmt.Sscan(port, &n)
	return n
}

func (p *caddyProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	if p.t.Failed() {
		p.t.Logf("caddy logs:\n%s", p.logs.String())
	}
}

// reload adapts caddyfile (with the same global options) and loads it
// through the admin API, as `caddy reload` does.
func (p *caddyProc) reload(caddyfile string) {
	p.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.AdminAddr+"/load", strings.NewReader(p.config(caddyfile)))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("reload: %d %s", resp.StatusCode, body)
	}
	// The old servers closed their idle connections; a POST sent on one
	// before the client notices would fail instead of being retried.
	http.DefaultClient.CloseIdleConnections()
}

// ctx returns a context that ends with the test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestFreePortIsHeld: a port from freePort cannot be taken by another
// listener before Caddy gets it, and Caddy serves on it.
func TestFreePortIsHeld(t *testing.T) {
	port := freePort(t)
	if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		l.Close()
		t.Fatalf("another listener took port %d that freePort returned", port)
	}
	p := startCaddy(t, fmt.Sprintf("http://127.0.0.1:%d {\n\trespond \"held\"\n}\n", port), port)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "held" {
		t.Fatalf("port %d answered %d %q", port, resp.StatusCode, body)
	}
	if l, err := net.Listen("tcp", p.AdminAddr); err == nil {
		l.Close()
		t.Fatalf("another listener took Caddy's admin address %s", p.AdminAddr)
	}
}
