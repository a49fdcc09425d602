package caddymodule

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/guard"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// guards keeps one guard of calls to Rebell per endpoint and client id
// (docs/rebell-calls.md) across config reloads, so the bound on calls in
// flight and the circuit breaker's state survive `caddy reload`, and two
// sites calling Rebell as the same merchant share them.
var guards = caddy.NewUsagePool()

// guardKey names a guard: the Rebell endpoint and the merchant's client id.
// Nothing else enters it on purpose: the bound (max_concurrent_calls) is a
// setting of the guard, applied by the config loaded last, and keys,
// timeouts or the session store do not change whom the calls go to.
type guardKey struct {
	endpoint, clientID string
}

// pooledGuard is a guard in the pool, with the transport of the calls it
// admits.
type pooledGuard struct {
	*guard.Guard
	key guardKey
	// transport carries the applyToken calls of every config using the
	// guard, so they reuse its connections, across reloads too. It keeps as
	// many idle connections as the guard's largest bound: idle connections
	// are at most the calls that were in flight at once, which the guard
	// bounds by max_concurrent_calls, so the bound in force sizes the pool.
	transport *http.Transport
}

// Destruct forgets the guard's metrics and closes its idle connections when
// no config uses it any more.
func (p *pooledGuard) Destruct() error {
	forgetGuardMetrics(p.key)
	p.transport.CloseIdleConnections()
	return nil
}

// loadGuard finds or creates the guard of a's endpoint and client id. The
// caller releases it with releaseGuard (Cleanup does).
func (a *Auth) loadGuard() (*pooledGuard, error) {
	key := guardKey{endpoint: a.Endpoint, clientID: a.ClientID}
	logger := a.logger.With(zap.String("endpoint", key.endpoint))
	val, _, err := guards.LoadOrNew(key, func() (caddy.Destructor, error) {
		g, err := guard.New(guard.Config{
			MaxConcurrent: a.MaxConcurrentCalls,
			OnTransition:  func(t guard.Transition) { onGuardTransition(logger, key, t) },
			OnRefused:     func(reason string) { countRefused(key, reason) },
		})
		if err != nil {
			return nil, err
		}
		return &pooledGuard{Guard: g, key: key, transport: rebell.NewTransport(guard.MaxMaxConcurrent)}, nil
	})
	if err != nil {
		return nil, err
	}
	a.guardKey = &key
	return val.(*pooledGuard), nil
}

// releaseGuard drops this config's reference to its guard, if it took one.
func (a *Auth) releaseGuard() error {
	if a.guardKey == nil {
		return nil
	}
	_, err := guards.Delete(*a.guardKey)
	a.guardKey = nil
	return err
}

// onGuardTransition counts and logs a change of the breaker's state: WARN
// when it opens, INFO when it closes, both with the class of the last
// failure; DEBUG when a probe starts.
func onGuardTransition(logger *zap.Logger, key guardKey, t guard.Transition) {
	countTransition(key, t.To)
	fields := []zap.Field{zap.String("from", t.From.String()), zap.String("last_failure", t.LastFailure)}
	switch t.To {
	case guard.Open:
		logger.Warn("rebell circuit breaker open: no applyToken calls until the probe",
			append(fields, zap.Float64("open_for_seconds", t.OpenFor.Seconds()), zap.Time("probe_at", time.Now().Add(t.OpenFor)))...)
	case guard.Closed:
		logger.Info("rebell circuit breaker closed: applyToken calls resume", fields...)
	default:
		logger.Debug("rebell circuit breaker half-open: the next call probes Rebell", fields...)
	}
}
