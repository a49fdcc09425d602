package caddymodule

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestProvisionBounds: every number out of its bounds is a provisioning
// error naming the field, returned at once (no cache is built for it).
func TestProvisionBounds(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	neg, big := -1, 11
	hugeVersion := maxKeyVersion + 1
	longDedup := caddy.Duration(2 * time.Hour)
	for name, tc := range map[string]struct {
		edit func(a *Auth)
		want string
	}{
		"max_sessions 1e17":  {func(a *Auth) { a.MaxSessions = 99999999999999999 }, "max_sessions: 99999999999999999 is not between 1 and 100000000"},
		"max_sessions 1e9":   {func(a *Auth) { a.MaxSessions = 1_000_000_000 }, "max_sessions: 1000000000 is not between"},
		"max_sessions -1":    {func(a *Auth) { a.MaxSessions = -1 }, "max_sessions: -1 is not between"},
		"hot_sessions -1":    {func(a *Auth) { a.HotSessions = -1 }, "hot_sessions: -1 is not between 1 and max_sessions (1000000)"},
		"hot_sessions > max": {func(a *Auth) { a.MaxSessions, a.HotSessions = 100, 101 }, "hot_sessions: 101 is not between 1 and max_sessions (100)"},
		"retries -1":         {func(a *Auth) { a.Retries = &neg }, "retries: -1 is not between 0 and 10"},
		"retries 11":         {func(a *Auth) { a.Retries = &big }, "retries: 11 is not between 0 and 10"},
		"key_version -1":     {func(a *Auth) { a.KeyVersion = &neg }, "key_version: -1 is not between"},
		"key_version huge":   {func(a *Auth) { a.KeyVersion = &hugeVersion }, "key_version: 1000000 is not between"},
		"timeout 1h":         {func(a *Auth) { a.Timeout = caddy.Duration(time.Hour) }, "timeout: 1h0m0s is not between"},
		"timeout -1s":        {func(a *Auth) { a.Timeout = caddy.Duration(-time.Second) }, "timeout: must not be negative"},
		"refresh_ahead 48h":  {func(a *Auth) { a.RefreshAhead = caddy.Duration(48 * time.Hour) }, "refresh_ahead: 48h0m0s is not between"},
		"idle_timeout 1ms":   {func(a *Auth) { a.IdleTimeout = caddy.Duration(time.Millisecond) }, "idle_timeout: 1ms is shorter than 1s"},
		"idle_timeout 2y":    {func(a *Auth) { a.IdleTimeout = caddy.Duration(2 * 365 * 24 * time.Hour) }, "idle_timeout: 17520h0m0s is not between"},
		"login_dedup 2h":     {func(a *Auth) { a.LoginDedupWindow = &longDedup }, "login_dedup_window: 2h0m0s is not between"},
		"store db 1e6": {func(a *Auth) {
			a.Store = &StoreConfig{Redis: &RedisStore{Address: []string{"h:1"}, DB: 1_000_000, EncryptionKey: testStoreKey}}
		}, "store: db: 1000000 is not between"},
		"endpoint plain":     {func(a *Auth) { a.Endpoint = "http://api.rebellapp.com" }, "must be https://"},
		"endpoint LAN http":  {func(a *Auth) { a.Endpoint = "http://192.168.1.10:8081" }, "must be https://"},
		"endpoint no scheme": {func(a *Auth) { a.Endpoint = "api.rebellapp.com" }, "endpoint:"},
	} {
		t.Run(name, func(t *testing.T) {
			a := storeAuth(nil)
			a.Store = nil
			tc.edit(a)
			start := time.Now()
			err := a.Provision(ctx)
			if err == nil {
				_ = a.Cleanup()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v", took)
			}
			if a.cache != nil {
				t.Error("a cache was built for a rejected config")
			}
		})
	}
	for _, ep := range []string{"https://api.rebellapp.com", "http://localhost:8081", "http://127.0.0.1:1", "http://[::1]:8081"} {
		a := storeAuth(nil)
		a.Store, a.Endpoint = nil, ep
		if err := a.Provision(ctx); err != nil {
			t.Errorf("%s: %v", ep, err)
		}
		_ = a.Cleanup()
	}
}

// TestRecoverConstructor: a panic inside a pool constructor is an error,
// and the pool entry is usable again at once (not left locked).
func TestRecoverConstructor(t *testing.T) {
	pool := caddy.NewUsagePool()
	done := make(chan error, 1)
	go func() {
		_, _, err := pool.LoadOrNew("k", recoverConstructor("the thing", nil, func() (caddy.Destructor, error) {
			var s []int
			_ = s[len("x")] // index out of range
			return nil, nil
		}))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "the thing could not be created: runtime error: index out of range") {
			t.Fatalf("error %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("LoadOrNew did not return after a panic")
	}
	// A panic with a value that is not a runtime error does not show it.
	_, _, err := pool.LoadOrNew("k", recoverConstructor("the thing", nil, func() (caddy.Destructor, error) {
		panic(errors.New("password=hunter2"))
	}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v", err)
	}
	// The same key loads again without hanging.
	go func() {
		_, _, err := pool.LoadOrNew("k", func() (caddy.Destructor, error) { return noopDestructor{}, nil })
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pool entry stayed locked after a panic")
	}
}

type noopDestructor struct{}

func (noopDestructor) Destruct() error { return nil }
