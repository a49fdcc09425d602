package caddymodule

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rebell-gateway/caddy-rebell/guard"
	"github.com/rebell-gateway/caddy-rebell/handler"
)

// metrics are created once and registered into every config's registry, so
// counters keep counting across reloads, like the caches they describe.
var metrics = struct {
	logins     *prometheus.CounterVec
	refreshes  *prometheus.CounterVec
	requests   *prometheus.CounterVec
	applyToken *prometheus.HistogramVec
	sessions   prometheus.GaugeFunc
	ended      *prometheus.CounterVec
	cancels    *prometheus.CounterVec
	pending    prometheus.GaugeFunc
	thawed     prometheus.Counter
}{
	logins: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "logins_total",
		Help: "Logins by result: a Rebell resultCode (other_result_code for one the gateway does not know), or transport_error, bad_signature, bad_response, store_error, deduplicated.",
	}, []string{"result"}),
	refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "refreshes_total",
		Help: "Token refreshes by result: a Rebell resultCode (other_result_code for one the gateway does not know), or transport_error, bad_signature, bad_response.",
	}, []string{"result"}),
	requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "requests_total",
		Help: "Requests through rebell_auth by outcome: ok, login, logout, public (a public path served without a session), or the error code sent.",
	}, []string{"outcome"}),
	applyToken: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "apply_token_duration_seconds",
		Help:    "Duration of applyToken attempts by grant type.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"grant_type"}),
	sessions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "sessions",
		Help: "Sessions held in memory, over all token caches.",
	}, func() float64 { return float64(sessionsInMemory()) }),
	ended: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "sessions_ended_total",
		Help: "Sessions ended in this instance's memory by reason: logout, customer, idle, expired, evicted (max_sessions reached), refresh_token_dead, record_corrupt, ended_elsewhere.",
	}, []string{"reason"}),
	cancels: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "cancels_total",
		Help: "Tries to cancel the tokens of a session the gateway ended (docs/contract.md, revoke), by result: a Rebell resultCode of cancelToken (other_result_code for one the gateway does not know), transport_error, bad_signature, bad_response, http_error, refused (the guard sent nothing), and given_up once per cancel given up.",
	}, []string{"result"}),
	pending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "pending_cancels",
		Help: "Cancels of ended sessions' tokens not confirmed by Rebell yet: with store redis, those of every instance.",
	}, func() float64 { return float64(pendingCancels()) }),
	thawed: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "sessions_thawed_total",
		Help: "Sessions in memory that a request found without an entry ready (more than hot_sessions were used since it last was), and made one for.",
	}),
}

// requestOutcomes are the outcomes a request can have (handler.Outcomes).
// Their counters are looked up once, so counting a request costs one read of
// a map that never changes instead of hashing label values.
var requestOutcomes = func() map[string]prometheus.Counter {
	m := map[string]prometheus.Counter{}
	for _, o := range handler.Outcomes() {
		m[o] = metrics.requests.WithLabelValues(o)
	}
	return m
}()

// countRequest counts one request with its outcome.
func countRequest(outcome string) {
	if c, ok := requestOutcomes[outcome]; ok {
		c.Inc()
		return
	}
	metrics.requests.WithLabelValues(outcome).Inc()
}

var registerMu sync.Mutex

// registerMetrics registers the collectors into a config's registry (nil for
// a zero caddy.Context, as in tests).
func registerMetrics(reg *prometheus.Registry) {
	if reg == nil {
		return
	}
	registerMu.Lock()
	defer registerMu.Unlock()
	for _, c := range []prometheus.Collector{metrics.logins, metrics.refreshes, metrics.requests, metrics.applyToken, metrics.sessions, metrics.ended,
		metrics.cancels, metrics.pending, metrics.thawed,
		guardMetrics.transitions, guardMetrics.refused, guardMetrics.gauges} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				// Only a programming error (a clashing descriptor) gets here.
				panic(err)
			}
		}
	}
}

// sessionsInMemory sums the sessions of every live token cache.
func sessionsInMemory() int {
	n := 0
	caches.Range(func(_, v any) bool {
		if c, ok := v.(*pooledCache); ok {
			n += c.Len()
		}
		return true
	})
	return n
}

// pendingCancels sums the pending cancels of every live token cache's
// revoker, as each last counted them.
func pendingCancels() int64 {
	var n int64
	caches.Range(func(_, v any) bool {
		if c, ok := v.(*pooledCache); ok {
			n += c.pending.Load()
		}
		return true
	})
	return n
}

// guardMetrics describe the guards of calls to Rebell (docs/rebell-calls.md),
// labelled by endpoint and client id (neither is a secret).
var guardMetrics = struct {
	transitions *prometheus.CounterVec
	refused     *prometheus.CounterVec
	gauges      guardCollector
}{
	transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "breaker_transitions_total",
		Help: "Changes of the circuit breaker toward Rebell, by the state entered: open, half_open, closed.",
	}, []string{"endpoint", "client_id", "state"}),
	refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "rebell", Name: "calls_refused_total",
		Help: "applyToken calls not sent to Rebell, by reason: no_slot (the bound of calls in flight), breaker_open or login_rate (login_calls_per_second).",
	}, []string{"endpoint", "client_id", "reason"}),
	gauges: guardCollector{
		state: prometheus.NewDesc("caddy_rebell_breaker_state",
			"State of the circuit breaker toward Rebell: 0 closed, 1 open, 2 half-open.",
			[]string{"endpoint", "client_id"}, nil),
		inFlight: prometheus.NewDesc("caddy_rebell_calls_in_flight",
			"applyToken calls in flight toward Rebell.",
			[]string{"endpoint", "client_id"}, nil),
	},
}

// guardCollector reports the state and the calls in flight of every live
// guard when scraped.
type guardCollector struct {
	state, inFlight *prometheus.Desc
}

func (c guardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.inFlight
}

func (c guardCollector) Collect(ch chan<- prometheus.Metric) {
	guards.Range(func(_, v any) bool {
		if g, ok := v.(*pooledGuard); ok {
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, float64(g.State()), g.key.endpoint, g.key.clientID)
			ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(g.InFlight()), g.key.endpoint, g.key.clientID)
		}
		return true
	})
}

func countTransition(k guardKey, to guard.State) {
	guardMetrics.transitions.WithLabelValues(k.endpoint, k.clientID, to.String()).Inc()
}

func countRefused(k guardKey, reason string) {
	guardMetrics.refused.WithLabelValues(k.endpoint, k.clientID, reason).Inc()
}

// forgetGuardMetrics drops the counters of a guard no config uses any more.
func forgetGuardMetrics(k guardKey) {
	labels := prometheus.Labels{"endpoint": k.endpoint, "client_id": k.clientID}
	guardMetrics.transitions.DeletePartialMatch(labels)
	guardMetrics.refused.DeletePartialMatch(labels)
}
