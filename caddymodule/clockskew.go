package caddymodule

import (
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// skews keeps one clock-skew measurement per endpoint and client id (the
// guard's key) across config reloads, so the gauge, the readiness report and
// the once-a-minute warning carry over `caddy reload` (docs/operations.md,
// "Clock skew").
var skews = caddy.NewUsagePool()

// pooledSkew is a clock-skew measurement in the pool.
type pooledSkew struct {
	*rebell.ClockSkew
	key guardKey
}

// Destruct has nothing to release: the gauge reads the pool.
func (*pooledSkew) Destruct() error { return nil }

// loadClockSkew finds or creates the measurement of a's endpoint and client
// id. Cleanup releases it (releaseClockSkew).
func (a *Auth) loadClockSkew() (*pooledSkew, error) {
	key := guardKey{endpoint: a.Endpoint, clientID: a.ClientID}
	logger := a.logger.With(zap.String("endpoint", key.endpoint))
	val, _, err := skews.LoadOrNew(key, func() (caddy.Destructor, error) {
		return &pooledSkew{key: key, ClockSkew: rebell.NewClockSkew(rebell.ClockSkewConfig{
			OnWarn: func(skew time.Duration) { warnClockSkew(logger, skew) },
		})}, nil
	})
	if err != nil {
		return nil, err
	}
	a.skewKey = &key
	return val.(*pooledSkew), nil
}

// releaseClockSkew drops this config's reference to its measurement.
func (a *Auth) releaseClockSkew() error {
	if a.skewKey == nil {
		return nil
	}
	_, err := skews.Delete(*a.skewKey)
	a.skewKey = nil
	return err
}

// warnClockSkew logs a clock that is more than a minute off Rebell's (at
// most once a minute, see rebell.ClockSkew).
func warnClockSkew(logger *zap.Logger, skew time.Duration) {
	logger.Warn(fmt.Sprintf("this machine's clock is %s; Rebell refuses a Request-Time more than %s off (INVALID_SIGNATURE): fix the clock (NTP)",
		skewPhrase(skew), rebell.ClockWindow),
		zap.Float64("clock_skew_seconds", skew.Seconds()))
}

// skewPhrase says which way this machine's clock is off.
func skewPhrase(skew time.Duration) string {
	if skew > 0 {
		return skew.Round(time.Second).String() + " behind Rebell's"
	}
	return (-skew).Round(time.Second).String() + " ahead of Rebell's"
}

// skewGauge reports caddy_rebell_clock_skew_seconds for every measurement
// that has one.
var skewGauge = skewCollector{desc: prometheus.NewDesc("caddy_rebell_clock_skew_seconds",
	"Rebell's clock minus this machine's, measured from the Response-Time of the last verified applyToken answer; Rebell refuses requests more than 300 s off.",
	[]string{"endpoint", "client_id"}, nil)}

type skewCollector struct{ desc *prometheus.Desc }

func (c skewCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c skewCollector) Collect(ch chan<- prometheus.Metric) {
	skews.Range(func(_, v any) bool {
		if s, ok := v.(*pooledSkew); ok {
			if d, known := s.Skew(); known {
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, d.Seconds(), s.key.endpoint, s.key.clientID)
			}
		}
		return true
	})
}

// registerSkewMetrics registers the gauge into a config's registry (nil in
// tests).
func registerSkewMetrics(reg *prometheus.Registry) {
	if reg == nil {
		return
	}
	registerMu.Lock()
	defer registerMu.Unlock()
	if err := reg.Register(skewGauge); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err)
		}
	}
}

// clockSkew is the measurement the Rebell client feeds, nil before
// Provision took one.
func (a *Auth) clockSkew() *rebell.ClockSkew {
	if a.skew == nil {
		return nil
	}
	return a.skew.ClockSkew
}
