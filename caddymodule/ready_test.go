package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/rebell-gateway/caddy-rebell/probe"
)

// readyFor returns the status of GET /rebell/ready and the instance of
// clientID in its body.
func readyFor(t *testing.T, clientID string) (int, instanceReport, string) {
	t.Helper()
	w := httptest.NewRecorder()
	if err := handleReady(w, httptest.NewRequest(http.MethodGet, "/rebell/ready", nil)); err != nil {
		t.Fatal(err)
	}
	var rep readyReport
	if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if (w.Code == http.StatusOK) != rep.Ready {
		t.Errorf("status %d with ready %v", w.Code, rep.Ready)
	}
	for _, in := range rep.Instances {
		if in.ClientID == clientID {
			return w.Code, in, w.Body.String()
		}
	}
	t.Fatalf("no instance %s in %s", clientID, w.Body)
	return 0, instanceReport{}, ""
}

func checkOf(in instanceReport, name string) checkReport {
	for _, c := range in.Checks {
		if c.Name == name {
			return c
		}
	}
	return checkReport{}
}

// TestReadyMemoryOnly: a provisioned memory-only rebell_auth is ready, and
// every check is listed with its state.
func TestReadyMemoryOnly(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	a := storeAuth(nil)
	a.Store, a.ClientID = nil, "READY_MEMORY"
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	status, in, body := readyFor(t, "READY_MEMORY")
	if status != http.StatusOK || !in.Ready {
		t.Fatalf("memory-only: %d %s", status, body)
	}
	for name, want := range map[string]string{"store": "memory", "breaker": "closed", "clock": "unknown", "pending_cancels": "none"} {
		if c := checkOf(in, name); c.State != want || !c.Ready {
			t.Errorf("%s: %+v, want state %s, ready", name, c, want)
		}
	}
	a.skew.Observe(time.Now(), time.Now(), time.Now().Add(90*time.Second).UTC().Format(time.RFC3339))
	if _, in, _ = readyFor(t, "READY_MEMORY"); checkOf(in, "clock").State != "off" || checkOf(in, "clock").SkewSeconds == nil {
		t.Errorf("clock 90 s off: %+v", checkOf(in, "clock"))
	}
	w := httptest.NewRecorder()
	if err := handleReady(w, httptest.NewRequest(http.MethodHead, "/rebell/ready", nil)); err != nil || w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Errorf("HEAD: %v %d %q", err, w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	err := handleReady(w, httptest.NewRequest(http.MethodPost, "/rebell/ready", nil))
	var apiErr caddy.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v", err)
	}
}

// TestReadyStoreDown: with a store nobody answers at, the instance is not
// ready (after the first probe), says why in words without the address or
// the password, and the breaker and clock do not change that.
func TestReadyStoreDown(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	a := storeAuth(&RedisStore{Address: []string{"127.0.0.1:3"}, Password: "hunter2-secret", EncryptionKey: testStoreKey})
	a.ClientID = "READY_STORE"
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, in, body := readyFor(t, "READY_STORE")
		c := checkOf(in, "store")
		if c.State == "starting" && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if status != http.StatusServiceUnavailable || in.Ready || c.State != "down" || c.Ready || c.Detail != "cannot connect" {
			t.Fatalf("store down: %d %s", status, body)
		}
		if strings.Contains(body, "127.0.0.1:3") || strings.Contains(body, "hunter2") {
			t.Errorf("the report shows the address or the password: %s", body)
		}
		break
	}
}

func TestStoreProblem(t *testing.T) {
	for err, want := range map[error]string{
		probe.ErrNoAnswer:        "no answer to PING within 500ms",
		context.DeadlineExceeded: "no answer to PING within 500ms",
		errors.New("x 10.0.0.1"): "PING failed",
	} {
		if got := storeProblem(err); got != want {
			t.Errorf("%v: %q, want %q", err, got, want)
		}
	}
}
