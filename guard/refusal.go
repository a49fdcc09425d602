package guard

import (
	"errors"
	"time"
)

// Reasons of a Refusal, also the reason label of the refused-calls metric.
const (
	// ReasonNoSlot: no slot became free in time, too many calls were
	// waiting, or a background call found no free slot.
	ReasonNoSlot = "no_slot"
	// ReasonBreakerOpen: the breaker is open, or (for a background call)
	// half-open with its probe in flight.
	ReasonBreakerOpen = "breaker_open"
	// ReasonLoginRate: a login over the cap of login calls per second
	// (Config.LoginRate).
	ReasonLoginRate = "login_rate"
)

// Refusal is the error of a call the Guard did not let through to Rebell:
// nothing was sent, so no auth code or refresh token was spent.
type Refusal struct {
	// Reason is ReasonNoSlot, ReasonBreakerOpen or ReasonLoginRate.
	Reason string
	// After is when the caller may try again (at least one second).
	After time.Duration
	// Err is the context's error when the call gave up waiting, else nil.
	Err error
}

func (r *Refusal) Error() string {
	msg := "rebell calls: refused: "
	switch r.Reason {
	case ReasonBreakerOpen:
		msg += "circuit breaker open"
	case ReasonLoginRate:
		msg += "over the login rate"
	default:
		msg += "no free slot"
	}
	if r.Err != nil {
		msg += ": " + r.Err.Error()
	}
	return msg
}

// Unwrap returns the context's error, if the call gave up waiting.
func (r *Refusal) Unwrap() error { return r.Err }

// RetryAfter is when the caller may try again: the time left until the
// breaker's next probe, and at least one second.
func (r *Refusal) RetryAfter() time.Duration { return r.After }

// IsRefusal reports whether err is or wraps a *Refusal.
func IsRefusal(err error) bool {
	var r *Refusal
	return errors.As(err, &r)
}

// refuse builds a refusal, counts it and unlocks g.mu.
func (g *Guard) refuse(reason string, after time.Duration, err error) *Refusal {
	g.count(reason)
	g.unlock()
	return &Refusal{Reason: reason, After: after, Err: err}
}

func (g *Guard) count(reason string) {
	if g.onRefused != nil {
		g.onRefused(reason)
	}
}
