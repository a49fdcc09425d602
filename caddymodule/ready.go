package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/rebell-gateway/caddy-rebell/probe"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/store/redisstore"
)

// Readiness (docs/operations.md, "Readiness"): GET /rebell/ready on the admin
// API answers 200 when every rebell_auth token cache can serve and 503
// otherwise. Only the shared store decides: a cache with `store redis` is
// ready while its store answers the background PING; a memory-only cache is
// ready once provisioned. Rebell's breaker, the clock and pending cancels
// are reported, not failed on: taking every instance out of a load balancer
// because Rebell is down would stop the cached sessions too.

// Store probe pacing: a PING every second, an answer within half a second.
const (
	storeProbeInterval = time.Second
	storeProbeTimeout  = 500 * time.Millisecond
)

// startStoreProbe starts PINGing st in the background; nil for no store.
// The cache's Destruct stops it.
func startStoreProbe(st *redisstore.Store) *probe.Prober {
	if st == nil {
		return nil
	}
	p := probe.New(probe.Config{Check: st.Ping, Interval: storeProbeInterval, Timeout: storeProbeTimeout})
	p.Start()
	return p
}

// readyReport is the body of GET /rebell/ready.
type readyReport struct {
	// Ready is true when every instance is ready (also when there is none).
	Ready bool `json:"ready"`
	// Instances lists each rebell_auth token cache: the settings that share
	// one cache (same endpoint, client id, store...) are one instance.
	Instances []instanceReport `json:"instances"`
}

type instanceReport struct {
	Endpoint string        `json:"endpoint"`
	ClientID string        `json:"client_id"`
	Ready    bool          `json:"ready"`
	Checks   []checkReport `json:"checks"`
}

// checkReport is one check of an instance. Only a check whose Ready is false
// makes the instance not ready; the store check is the only one that can.
type checkReport struct {
	// Name is store, breaker, clock or pending_cancels.
	Name string `json:"name"`
	// State: store memory, up, down or starting; breaker closed, open or
	// half_open; clock unknown, in_step, off (more than 60 s) or
	// outside_window (Rebell refuses); pending_cancels none or pending.
	State string `json:"state"`
	Ready bool   `json:"ready"`
	// Detail says why a store is down, in a few words (no address, no
	// password).
	Detail string `json:"detail,omitempty"`
	// LastOKSecondsAgo is how long ago the store last answered a PING.
	LastOKSecondsAgo *float64 `json:"last_ok_seconds_ago,omitempty"`
	// SkewSeconds is Rebell's clock minus this machine's.
	SkewSeconds *float64 `json:"skew_seconds,omitempty"`
	// Count is the number of pending cancels.
	Count *int `json:"count,omitempty"`
}

func handleReady(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	rep := readiness(time.Now())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	status := http.StatusOK
	if !rep.Ready {
		status = http.StatusServiceUnavailable
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	return json.NewEncoder(w).Encode(rep)
}

// readiness reads the state of every live token cache. It sends nothing to
// Redis or Rebell: the store's state is the background probe's.
func readiness(now time.Time) readyReport {
	rep := readyReport{Ready: true, Instances: []instanceReport{}}
	caches.Range(func(k, v any) bool {
		key, ok1 := k.(poolIdentity)
		c, ok2 := v.(*pooledCache)
		if !ok1 || !ok2 {
			return true
		}
		in := instanceReport{Endpoint: key.endpoint, ClientID: key.clientID, Ready: true}
		gk := guardKey{endpoint: key.endpoint, clientID: key.clientID}
		in.Checks = []checkReport{storeCheck(c, now), breakerCheck(gk), clockCheck(gk), cancelsCheck(c)}
		for _, ch := range in.Checks {
			in.Ready = in.Ready && ch.Ready
		}
		rep.Ready = rep.Ready && in.Ready
		rep.Instances = append(rep.Instances, in)
		return true
	})
	sort.SliceStable(rep.Instances, func(i, j int) bool {
		a, b := rep.Instances[i], rep.Instances[j]
		if a.Endpoint != b.Endpoint {
			return a.Endpoint < b.Endpoint
		}
		return a.ClientID < b.ClientID
	})
	return rep
}

func storeCheck(c *pooledCache, now time.Time) checkReport {
	ch := checkReport{Name: "store"}
	if c.storeProbe == nil {
		ch.State, ch.Ready = "memory", true
		return ch
	}
	s := c.storeProbe.State()
	if !s.LastOK.IsZero() {
		ago := now.Sub(s.LastOK).Seconds()
		ch.LastOKSecondsAgo = &ago
	}
	switch {
	case s.Up:
		ch.State, ch.Ready = "up", true
	case !s.Probed:
		ch.State, ch.Detail = "starting", "no PING answered yet"
	default:
		ch.State, ch.Detail = "down", storeProblem(s.Err)
	}
	return ch
}

// storeProblem names why a PING failed without quoting the error, which
// may carry an address.
func storeProblem(err error) string {
	var (
		re    redis.Error
		opErr *net.OpError
	)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, probe.ErrNoAnswer), errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer to PING within %s", storeProbeTimeout)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return "cannot connect"
	case errors.As(err, &re):
		// A Redis error reply starts with its code: LOADING, NOAUTH, ...
		msg := re.Error()
		for i, c := range msg {
			if c == ' ' {
				msg = msg[:i]
				break
			}
		}
		return "Redis answered " + msg
	}
	return "PING failed"
}

func breakerCheck(gk guardKey) checkReport {
	ch := checkReport{Name: "breaker", State: "unknown", Ready: true}
	if v, ok := lookupPool(guards, gk).(*pooledGuard); ok {
		ch.State = v.State().String()
	}
	return ch
}

func clockCheck(gk guardKey) checkReport {
	ch := checkReport{Name: "clock", State: "unknown", Ready: true}
	v, ok := lookupPool(skews, gk).(*pooledSkew)
	if !ok {
		return ch
	}
	d, known := v.Skew()
	if !known {
		return ch
	}
	secs := d.Seconds()
	ch.SkewSeconds = &secs
	switch abs := max(d, -d); {
	case abs >= rebell.ClockWindow:
		ch.State = "outside_window"
	case abs > rebell.SkewWarnThreshold:
		ch.State = "off"
	default:
		ch.State = "in_step"
	}
	return ch
}

// cancelsCheck reports the cache's revoker's last count of pending cancels
// (docs/sessions.md, pending cancels): reported, never failed on.
func cancelsCheck(c *pooledCache) checkReport {
	n := int(c.pending.Load())
	ch := checkReport{Name: "pending_cancels", State: "none", Ready: true, Count: &n}
	if n > 0 {
		ch.State = "pending"
	}
	return ch
}

// lookupPool returns the value of key in pool, nil if it has none.
func lookupPool(pool *caddy.UsagePool, key any) any {
	var found any
	pool.Range(func(k, v any) bool {
		if k == key {
			found = v
			return false
		}
		return true
	})
	return found
}
