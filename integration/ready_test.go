package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
)

// readyState is what GET /rebell/ready said.
type readyState struct {
	status int
	body   string
	store  string // the first instance's store check
}

func getReady(t *testing.T, url string) readyState {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var rep struct {
		Ready     bool `json:"ready"`
		Instances []struct {
			Checks []struct {
				Name  string `json:"name"`
				State string `json:"state"`
			} `json:"checks"`
		} `json:"instances"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("ready body %q: %v", b, err)
	}
	s := readyState{status: resp.StatusCode, body: string(b)}
	if len(rep.Instances) > 0 {
		for _, c := range rep.Instances[0].Checks {
			if c.Name == "store" {
				s.store = c.State
			}
		}
	}
	if rep.Ready != (resp.StatusCode == http.StatusOK) {
		t.Errorf("status %d with ready %v", resp.StatusCode, rep.Ready)
	}
	return s
}

// waitReady polls url until it answers status, and fails after within.
func waitReady(t *testing.T, url string, status int, within time.Duration) (readyState, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		s := getReady(t, url)
		if s.status == status {
			return s, time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("GET /rebell/ready still %d after %v, want %d: %s", s.status, within, status, s.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReadyThroughCaddy: GET /rebell/ready on the admin API, and through
// the load-balancer site of docs/operations.md, with a real redis-server:
// 200; 503 within 5 s of Redis hanging (SIGSTOP); 200 within 5 s of its
// answering again; and 200 for a memory-only config.
func TestReadyThroughCaddy(t *testing.T) {
	rs := redistest.Start(t)
	kf := writeKeys(t, t.TempDir())
	gwPort, readyPort := freePort(t), freePort(t)
	gateway := func(store string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\trebell_auth {\n\t\tendpoint http://127.0.0.1:1\n\t\tclient_id READY_IT\n\t\tprivate_key_file %s\n%s\t}\n\trespond ok\n}\n",
			gwPort, kf.MerchantPrivate, store)
	}
	withRedis := gateway(fmt.Sprintf("\t\tstore redis {\n\t\t\taddress %s\n\t\t\tencryption_key AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n\t\t}\n", rs.Addr))
	// The readiness site's port is held from the start; it proxies to the
	// admin endpoint once its address is known.
	c := startCaddy(t, withRedis+fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\trespond 404\n}\n", readyPort), gwPort, readyPort)
	lbSite := fmt.Sprintf(`
http://127.0.0.1:%d {
	handle /rebell/ready {
		reverse_proxy %s {
			header_up Host {upstream_hostport}
		}
	}
	respond 404
}
`, readyPort, c.AdminAddr)
	c.reload(withRedis + lbSite)
	admin := "http://" + c.AdminAddr + "/rebell/ready"
	lb := fmt.Sprintf("http://127.0.0.1:%d/rebell/ready", readyPort)

	s, _ := waitReady(t, lb, http.StatusOK, 5*time.Second)
	if s.store != "up" {
		t.Errorf("store %q, want up: %s", s.store, s.body)
	}
	rs.Pause(t)
	s, took := waitReady(t, admin, http.StatusServiceUnavailable, 5*time.Second)
	t.Logf("503 %v after Redis hung: %s", took.Round(time.Millisecond), s.body)
	if s.store != "down" {
		t.Errorf("store %q, want down", s.store)
	}
	if s = getReady(t, lb); s.status != http.StatusServiceUnavailable {
		t.Errorf("through the load-balancer site: %d %s", s.status, s.body)
	}
	rs.Resume(t)
	s, took = waitReady(t, lb, http.StatusOK, 5*time.Second)
	t.Logf("200 %v after Redis answered again", took.Round(time.Millisecond))

	c.reload(gateway("") + lbSite)
	s = getReady(t, admin)
	if s.status != http.StatusOK || s.store != "memory" {
		t.Errorf("memory-only: %d %s", s.status, s.body)
	}
}
