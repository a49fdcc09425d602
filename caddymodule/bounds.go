package caddymodule

import (
	"fmt"
	"runtime"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/guard"
)

// Bounds of the numbers a configuration may hold. A value outside them is
// a provisioning error that names the field and the range, so nothing a
// config contains can make Caddy allocate without limit, overflow a
// duration, or panic (README.md, "Caddyfile").
const (
	// maxMaxSessions bounds max_sessions. A session held in memory takes
	// about 370 bytes at a million sessions (README.md, "Performance"), so
	// 100 million sessions are about 37 GB, more than a gateway host is
	// given. The memory tier allocates nothing up front from max_sessions,
	// but a larger number is a typo, and the bound keeps the slab's 32-bit
	// slot numbers and text offsets (per shard) far from overflow.
	maxMaxSessions = 100_000_000
	// maxRetries bounds retries: each retry waits up to 2 s of backoff
	// plus one timeout, and a Mini App's call gives up after 30 s.
	maxRetries = 10
	// maxKeyVersion bounds key_version, a small integer Rebell assigns at
	// onboarding.
	maxKeyVersion = 999_999
	// maxTimeout bounds timeout (one applyToken attempt): a Mini App's
	// my.request gives up after 30 s.
	maxTimeout = time.Minute
	// maxRefreshAhead bounds refresh_ahead: the refresh window is at most
	// half a token's lifetime anyway.
	maxRefreshAhead = 24 * time.Hour
	// minIdleTimeout and maxIdleTimeout bound a non-zero idle_timeout: the
	// shared store compares copies at most 4 times a second, and a refresh
	// token lives 30 days.
	minIdleTimeout = time.Second
	maxIdleTimeout = 365 * 24 * time.Hour
	// maxLoginDedupWindow bounds login_dedup_window: an auth code lives 5
	// minutes.
	maxLoginDedupWindow = time.Hour
	// maxRedisDB bounds store redis db (Redis has 16 databases unless its
	// databases setting says otherwise).
	maxRedisDB = 65535
	// maxSandboxTTL bounds the sandbox's token and code lifetimes, far
	// beyond anything Rebell issues but short of overflowing a time.
	maxSandboxTTL = 10 * 365 * 24 * time.Hour
)

// checkBounds checks every number of the rebell_auth configuration, after
// defaults were applied, and the shape of the public paths.
func (a *Auth) checkBounds() error {
	switch {
	case a.Revoke != "on" && a.Revoke != "off":
		return fmt.Errorf("revoke: %q is not on or off", a.Revoke)
	case *a.KeyVersion < 0 || *a.KeyVersion > maxKeyVersion:
		return fmt.Errorf("key_version: %d is not between 0 and %d", *a.KeyVersion, maxKeyVersion)
	case *a.Retries < 0 || *a.Retries > maxRetries:
		return fmt.Errorf("retries: %d is not between 0 and %d", *a.Retries, maxRetries)
	case a.MaxSessions < 1 || a.MaxSessions > maxMaxSessions:
		return fmt.Errorf("max_sessions: %d is not between 1 and %d (100 million)", a.MaxSessions, maxMaxSessions)
	case a.HotSessions < 0 || a.HotSessions > a.MaxSessions:
		return fmt.Errorf("hot_sessions: %d is not between 1 and max_sessions (%d)", a.HotSessions, a.MaxSessions)
	case a.MaxConcurrentCalls < 0 || a.MaxConcurrentCalls > guard.MaxMaxConcurrent:
		return fmt.Errorf("max_concurrent_calls: %d is not between 1 and %d", a.MaxConcurrentCalls, guard.MaxMaxConcurrent)
	case a.LoginCallsPerSecond < 0 || a.LoginCallsPerSecond > guard.MaxLoginRate:
		return fmt.Errorf("login_calls_per_second: %d is not between 1 and %d", a.LoginCallsPerSecond, guard.MaxLoginRate)
	case a.Errors != "" && a.Errors != "json" && a.Errors != "caddy":
		return fmt.Errorf("errors: %q is not json or caddy", a.Errors)
	}
	for _, d := range []struct {
		field    string
		v        caddy.Duration
		min, max time.Duration
	}{
		{"timeout", a.Timeout, 1, maxTimeout},
		{"refresh_ahead", a.RefreshAhead, 1, maxRefreshAhead},
		{"idle_timeout", a.IdleTimeout, 0, maxIdleTimeout},
		{"login_dedup_window", *a.LoginDedupWindow, 0, maxLoginDedupWindow},
	} {
		if err := checkDuration(d.field, time.Duration(d.v), d.min, d.max); err != nil {
			return err
		}
	}
	if a.IdleTimeout != 0 && time.Duration(a.IdleTimeout) < minIdleTimeout {
		return fmt.Errorf("idle_timeout: %v is shorter than %v (0 turns it off)", time.Duration(a.IdleTimeout), minIdleTimeout)
	}
	for _, p := range a.Public {
		if p == "" || p[0] != '/' && p[0] != '*' {
			return fmt.Errorf("public: %q is not a path (it must start with / or *)", p)
		}
	}
	if a.Store != nil && a.Store.Redis != nil {
		if db := a.Store.Redis.DB; db < 0 || db > maxRedisDB {
			return fmt.Errorf("store: db: %d is not between 0 and %d", db, maxRedisDB)
		}
	}
	return nil
}

// checkDuration checks that v is within [min, max].
func checkDuration(field string, v, min, max time.Duration) error {
	if v < min || v > max {
		if v < 0 {
			return fmt.Errorf("%s: must not be negative", field)
		}
		return fmt.Errorf("%s: %v is not between %v and %v", field, v, min, max)
	}
	return nil
}

// recoverConstructor wraps a caddy.UsagePool constructor so that a panic
// inside it (a dependency such as ristretto may still panic on input it
// dislikes) becomes a provisioning error. A panic that escaped would leave
// the pool's entry locked: every later config load needing the same entry,
// and with it the admin API, would hang. The panic's value is named only
// when it is a runtime error (it could otherwise carry configuration, a
// secret included); its stack goes to the log.
func recoverConstructor(what string, log *zap.Logger, construct caddy.Constructor) caddy.Constructor {
	return func() (d caddy.Destructor, err error) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			d = nil
			if re, ok := r.(runtime.Error); ok {
				err = fmt.Errorf("%s could not be created: %v", what, re)
			} else {
				err = fmt.Errorf("%s could not be created: panic of type %T", what, r)
			}
			if log != nil {
				log.Error("panic while creating "+what, zap.Error(err), zap.Stack("stack"))
			}
		}()
		return construct()
	}
}
