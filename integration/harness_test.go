// Package integration runs caddy-rebell end to end: a real Caddy built from
// ./cmd/caddy, started as a process with a Caddyfile, on 127.0.0.1 only.
package integration

import (
	"bytes"
	"context"
	"crypto/rsa"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
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
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
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
	global    string // extra global options
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
// admin on a free port, no persisted config) and waits until every port in
// waitPorts accepts connections.
func startCaddy(t testing.TB, caddyfile string, waitPorts ...int) *caddyProc {
	t.Helper()
	return startCaddyGlobal(t, "", caddyfile, waitPorts...)
}

// startCaddyGlobal is startCaddy with more global options (lines of the
// global options block).
func startCaddyGlobal(t testing.TB, global, caddyfile string, waitPorts ...int) *caddyProc {
	t.Helper()
	dir := t.TempDir()
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	full := fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tgrace_period 2s\n%s\n}\n\n%s", adminAddr, global, caddyfile)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &caddyProc{t: t, dir: dir, AdminAddr: adminAddr, logs: &syncBuffer{}, done: make(chan struct{}), global: global}
	p.cmd = exec.Command(caddyBin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	deadline := time.Now().Add(30 * time.Second)
	for _, port := range append([]int{portOf(adminAddr)}, waitPorts...) {
		for {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				t.Fatalf("caddy exited:\n%s", p.logs.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("caddy did not listen on %d:\n%s", port, p.logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return p
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
	full := fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tgrace_period 2s\n%s\n}\n\n%s", p.AdminAddr, p.global, caddyfile)
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.AdminAddr+"/load", strings.NewReader(full))
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
}

// ctx returns a context that ends with the test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
