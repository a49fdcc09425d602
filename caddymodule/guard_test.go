package caddymodule

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rebell-gateway/caddy-rebell/guard"
	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

func TestMaxConcurrentCallsCaddyfile(t *testing.T) {
	var a Auth
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\tmax_concurrent_calls 8\n}")); err != nil {
		t.Fatal(err)
	}
	if a.MaxConcurrentCalls != 8 {
		t.Fatalf("MaxConcurrentCalls %d", a.MaxConcurrentCalls)
	}
	for in, want := range map[string]string{
		"0":     "max_concurrent_calls: 0 is not between 1 and 10000, at Testfile:2",
		"10001": "max_concurrent_calls: 10001 is not between 1 and 10000",
		"-1":    `max_concurrent_calls: "-1" is not a non-negative whole number`,
		"many":  `max_concurrent_calls: "many" is not a non-negative whole number`,
	} {
		var a Auth
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\tmax_concurrent_calls " + in + "\n}"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

func guardAuth(clientID string, limit int) *Auth {
	return &Auth{
		Endpoint:           "http://127.0.0.1:1",
		ClientID:           clientID,
		PrivateKey:         string(rebell.EncodePrivateKeyPEM(testkeys.RSA(0))),
		MaxConcurrentCalls: limit,
	}
}

// TestGuardPooled: configs of one endpoint and client id share one guard
// (the one loaded last sets the bound); another client id gets its own; the
// guard goes when its last config is cleaned up, and so do its metrics.
func TestGuardPooled(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	provision := func(a *Auth) *Auth {
		t.Helper()
		if err := a.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a1 := provision(guardAuth("GUARD_A", 0))
	if a1.guard.Limit() != guard.DefaultMaxConcurrent {
		t.Fatalf("default bound %d", a1.guard.Limit())
	}
	a2 := provision(guardAuth("GUARD_A", 3)) // a reload with a new bound
	b := provision(guardAuth("GUARD_B", 5))
	if a1.guard != a2.guard || a1.guard == b.guard {
		t.Fatal("guards not shared by endpoint and client id")
	}
	if a1.guard.Limit() != 3 || b.guard.Limit() != 5 {
		t.Fatalf("bounds %d, %d", a1.guard.Limit(), b.guard.Limit())
	}
	countRefused(a1.guard.key, guard.ReasonNoSlot)
	reg := prometheus.NewPedanticRegistry()
	registerMetrics(reg)
	if n := countSeries(t, reg, "caddy_rebell_breaker_state", "caddy_rebell_calls_in_flight"); n != 4 {
		t.Fatalf("%d gauges, want 2 per guard", n)
	}
	if n := countSeries(t, reg, "caddy_rebell_calls_refused_total"); n != 1 {
		t.Fatalf("%d refused counters, want 1", n)
	}
	for _, a := range []*Auth{a1, a2, b} {
		if err := a.Cleanup(); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := guards.References(guardKey{"http://127.0.0.1:1", "GUARD_A"}); ok {
		t.Fatal("guard kept after its last config was cleaned up")
	}
	if n := countSeries(t, reg, "caddy_rebell_calls_refused_total"); n != 0 {
		t.Fatalf("%d refused counters left after the guard went", n)
	}
	// Cleanup after a failed Provision releases what it took.
	bad := guardAuth("GUARD_C", 0)
	bad.PrivateKey = "not a key"
	if err := bad.Provision(ctx); err == nil {
		t.Fatal("provisioned with a bad key")
	}
	if err := bad.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, ok := guards.References(guardKey{"http://127.0.0.1:1", "GUARD_C"}); ok {
		t.Fatal("a failed Provision's guard was kept")
	}
	if err := guardAuth("GUARD_D", guard.MaxMaxConcurrent+1).Provision(ctx); err == nil {
		t.Fatal("provisioned with max_concurrent_calls over the bound")
	}
}

// countSeries counts the series of the named metrics in reg.
func countSeries(t *testing.T, reg *prometheus.Registry, names ...string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// Only this file's guards count (client ids GUARD_*): other tests of the
	// package provision configs of their own, whose guards live in the same
	// process-wide pool.
	n := 0
	for _, mf := range mfs {
		for _, name := range names {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "client_id" && strings.HasPrefix(l.GetValue(), "GUARD_") {
						n++
					}
				}
			}
		}
	}
	return n
}

func TestLoginCallsPerSecondCaddyfile(t *testing.T) {
	var a Auth
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\tlogin_calls_per_second 20\n}")); err != nil {
		t.Fatal(err)
	}
	if a.LoginCallsPerSecond != 20 {
		t.Fatalf("LoginCallsPerSecond %d", a.LoginCallsPerSecond)
	}
	for in, want := range map[string]string{
		"0":      "login_calls_per_second: 0 is not between 1 and 100000",
		"100001": "login_calls_per_second: 100001 is not between 1 and 100000",
		"fast":   `login_calls_per_second: "fast" is not a non-negative whole number`,
	} {
		var a Auth
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\tlogin_calls_per_second " + in + "\n}"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
	bad := guardAuth("GUARD_RATE", 0)
	bad.LoginCallsPerSecond = guard.MaxLoginRate + 1
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := bad.Provision(ctx); err == nil || !strings.Contains(err.Error(), "login_calls_per_second") {
		t.Fatalf("Provision: %v", err)
	}
}
