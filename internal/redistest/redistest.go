package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout is how long a server gets to answer PING (and a Cluster to
// reach cluster_state:ok).
const startTimeout = 10 * time.Second

// skipMessage is what a test without redis-server (or redis-cli) says.
const skipMessage = "%s not found: SKIPPING tests of the shared store; install redis-server or set REBELL_REQUIRE_REDIS=1 to make this an error"

// Server is a standalone redis-server process started by Start.
type Server struct {
	// Addr is the server's "127.0.0.1:port".
	Addr string

	bin     string
	port    int
	dir     string
	logPath string
	extra   []string // further arguments (Cluster mode)
	conf    string   // a config file, given first (Sentinel mode)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *os.File
}

// Start runs a standalone redis-server on a free 127.0.0.1 port (no
// persistence, a t.TempDir() as its dir), waits until it answers PING, and
// stops it in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := lookPath(t, "redis-server")
	return startOnFreePort(t, bin, nil, false, nil)
}

// portTries is how many free ports a new server tries: another process (a
// test binary of another package, an outgoing connection) can take a port
// between freePorts and redis-server's bind.
const portTries = 5

// startOnFreePort starts a server on a free port (and, withBus, its Cluster
// bus port free too), trying another port when the one picked was taken.
// prepare, if set, runs on the new Server before it starts.
func startOnFreePort(t testing.TB, bin string, extra []string, withBus bool, prepare func(*Server)) *Server {
	t.Helper()
	var err error
	for range portTries {
		s := newServer(t, bin, freePorts(t, 1, withBus)[0], extra)
		if prepare != nil {
			prepare(s)
		}
		if err = s.launch(); err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) {
			t.Fatalf("redistest: %v", err)
		}
	}
	t.Fatalf("redistest: %v (after %d ports)", err, portTries)
	return nil
}

// lookPath finds a binary, or skips (or fails, with REBELL_REQUIRE_REDIS=1)
// the test.
func lookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("REBELL_REQUIRE_REDIS") == "1" {
		t.Fatalf("%s not found and REBELL_REQUIRE_REDIS=1: the tests of the shared store cannot run", name)
	}
	t.Skipf(skipMessage, name)
	return ""
}

func newServer(t testing.TB, bin string, port int, extra []string) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		bin:     bin,
		port:    port,
		dir:     dir,
		logPath: filepath.Join(dir, "redis.log"),
		extra:   extra,
	}
	// Registered after t.TempDir, so it runs before the dir is removed.
	t.Cleanup(func() { s.kill() })
	return s
}

// errPortTaken reports a server that could not have its port.
var errPortTaken = errors.New("port taken by another process")

// start launches the process and waits until it answers, failing t if it
// does not.
func (s *Server) start(t testing.TB) {
	t.Helper()
	if err := s.launch(); err != nil {
		t.Fatalf("redistest: %v", err)
	}
}

// launch starts the process and waits until it answers INFO as itself (a
// server that answers with another process id holds the port). It returns
// an error wrapping errPortTaken when the port was taken.
func (s *Server) launch() error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
	}
	args = append(args, s.extra...)
	if s.conf != "" {
		args = append([]string{s.conf}, args...)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done, s.log = cmd, done, logf
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		if info, err := command(s.Addr, "INFO", "server"); err == nil {
			if pid := processID(info); pid == cmd.Process.Pid {
				return nil
			} else if pid != 0 {
				s.kill()
				return fmt.Errorf("%w: %s answered by process %d, not %d", errPortTaken, s.Addr, pid, cmd.Process.Pid)
			}
		}
		select {
		case <-done:
			s.kill()
			log := tail(s.logPath)
			if strings.Contains(log, "Address already in use") {
				return fmt.Errorf("%w: %s", errPortTaken, s.Addr)
			}
			return fmt.Errorf("redis-server on %s exited at start; log tail:\n%s", s.Addr, log)
		default:
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on %s did not answer within %v; log tail:\n%s", s.Addr, startTimeout, tail(s.logPath))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processID reads process_id from INFO server; 0 if absent.
func processID(info string) int {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// kill stops the process if it runs and waits for it.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, done, logf := s.cmd, s.done, s.log
	s.cmd, s.done, s.log = nil, nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
	_ = logf.Close()
}

// Stop kills the server and waits for it to exit. Its port is not handed out
// again by this package, so Restart can usually take it back.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.kill()
}

// Restart starts the server again on the same port, with empty data, and
// waits for PING. It stops the server first if it runs.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.kill()
	s.start(t)
}

// Client returns a client of the server, closed in t.Cleanup.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// CommandStats returns INFO commandstats: calls per command, by lowercase
// name ("get", "evalsha", "publish", "client|setinfo"). The INFO call that
// reads them is not yet counted in its result.
func (s *Server) CommandStats(t testing.TB) map[string]int64 {
	t.Helper()
	out, err := command(s.Addr, "INFO", "commandstats")
	if err != nil {
		t.Fatalf("redistest: INFO commandstats on %s: %v", s.Addr, err)
	}
	return parseCommandStats(out)
}

func parseCommandStats(info string) map[string]int64 {
	stats := make(map[string]int64)
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		name = strings.ToLower(strings.TrimPrefix(name, "cmdstat_"))
		for field := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(field, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil {
					stats[name] = n
				}
			}
		}
	}
	return stats
}

// Cluster is a Redis Cluster of redis-server processes started by
// StartCluster, with no replicas.
type Cluster struct {
	// Addrs are the nodes' "127.0.0.1:port".
	Addrs []string
	// Nodes are the node processes, in the order of Addrs.
	Nodes []*Server
}

// StartCluster runs n (at least 3) redis-server nodes in Cluster mode,
// joins them with redis-cli --cluster create (no replicas), waits until
// every node reports cluster_state:ok, and stops them in t.Cleanup.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 3 {
		t.Fatalf("redistest: a Cluster needs at least 3 nodes, not %d", n)
	}
	bin := lookPath(t, "redis-server")
	cli := lookPath(t, "redis-cli")
	c := &Cluster{}
	for range n {
		s := startOnFreePort(t, bin, []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000",
		}, true, nil)
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}

	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}

	deadline := time.Now().Add(startTimeout)
	for _, s := range c.Nodes {
		for {
			info, err := command(s.Addr, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: cluster node %s not ok within %v (%v):\n%s\nlog tail:\n%s",
					s.Addr, startTimeout, err, info, tail(s.logPath))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Client returns a Cluster client of c, closed in t.Cleanup.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// reserved holds the ports this package handed out, so that a port a stopped
// Server may take back is not handed to another.
var reserved sync.Map

// freePorts picks n free 127.0.0.1 ports; withBus also requires port+10000
// (the Cluster bus port) to be free.
func freePorts(t testing.TB, n int, withBus bool) []int {
	t.Helper()
	var (
		held  []net.Listener
		ports []int
	)
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("redistest: no free ports found")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("redistest: listen: %v", err)
		}
		held = append(held, l)
		p := l.Addr().(*net.TCPAddr).Port
		if _, taken := reserved.Load(p); taken {
			continue
		}
		if withBus {
			if p+10000 > 65535 {
				continue
			}
			if _, taken := reserved.Load(p + 10000); taken {
				continue
			}
			bl, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
			if err != nil {
				continue
			}
			held = append(held, bl)
			reserved.Store(p+10000, true)
		}
		reserved.Store(p, true)
		ports = append(ports, p)
	}
	return ports
}

// ping sends PING on a fresh connection.
func ping(addr string) error {
	out, err := command(addr, "PING")
	if err != nil {
		return err
	}
	if out != "PONG" {
		return fmt.Errorf("PING answered %q", out)
	}
	return nil
}

// command sends one command on a fresh connection and returns a simple,
// error or bulk string reply.
func command(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("unexpected reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("unexpected reply %q", line)
	}
}

// tail returns the last lines of a log file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
