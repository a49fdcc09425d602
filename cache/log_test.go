package cache

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// TestLogsNameSessionsByTagAndLeakNoSecret drives a session through login,
// refresh, a configuration failure, a dead refresh token and logout, and
// checks every log line: no token, auth code or session id at any level, no
// customer id above DEBUG, and a session named only by its tag.
func TestLogsNameSessionsByTagAndLeakNoSecret(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	h := newHarness(t, func(c *Config) { c.Logger = zap.New(core) })
	ctx := context.Background()

	const code = "auth-code-secret"
	id, g, err := h.Login(ctx, rebell.NewSecret(code))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := h.ParseSessionID(id)
	h.atAccessExpiry(g, 0)
	mustGet(t, h, k) // refresh
	h.fake.scriptRefresh(result{err: errConfig}, result{err: errUsedRefresh})
	h.clock.Advance(accessTTL)
	if _, err := h.get(t, k); err == nil {
		t.Fatal("config failure on an expired token served")
	}
	h.clock.Advance(DefaultRetryCooldown)
	if _, err := h.get(t, k); err == nil {
		t.Fatal("dead refresh token served")
	}
	id2, _, _ := h.Login(ctx, rebell.NewSecret("other-code"))
	k2, _ := h.ParseSessionID(id2)
	_ = h.Logout(ctx, k2)
	_, _ = h.EndCustomer(ctx, "customer-1")

	secrets := []string{code, "other-code", id, id2, "access-", "refresh-", hex.EncodeToString(k[:])}
	var seen = map[string]bool{}
	for _, e := range logs.All() {
		line := e.Message
		for _, f := range e.Context {
			line += fmt.Sprintf(" %s=%v%s%d", f.Key, f.Interface, f.String, f.Integer)
		}
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("log line leaks %q: %s", s, line)
			}
		}
		if e.Level > zapcore.DebugLevel && strings.Contains(line, "customer-1") {
			t.Errorf("customer id above DEBUG: %s", line)
		}
		seen[e.Level.String()+" "+e.Message] = true
		if e.Message == "rebell token refresh rejected" {
			if e.ContextMap()["result_code"] != rebell.CodeInvalidAuthClient || e.ContextMap()["session"] != k.Tag() {
				t.Errorf("refresh rejection logged as %v", e.ContextMap())
			}
		}
	}
	for _, want := range []string{
		"info rebell session created",
		"debug rebell token refreshed",
		"error rebell token refresh rejected",
		"info rebell refresh token rejected; session ended",
		"info rebell session ended",
	} {
		if !seen[want] {
			t.Errorf("no %q line; got %v", want, seen)
		}
	}
}

// TestHotPathDoesNotLog checks that serving a cached grant writes no log line.
func TestHotPathDoesNotLog(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	h := newHarness(t, func(c *Config) { c.Logger = zap.New(core) })
	k, _ := h.login(t, "code-1")
	n := logs.Len()
	for range 100 {
		h.clock.Advance(time.Second)
		mustGet(t, h, k)
	}
	if logs.Len() != n {
		t.Fatalf("%d log lines on the hot path", logs.Len()-n)
	}
}
