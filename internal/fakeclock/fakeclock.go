// Package fakeclock is a clock for tests that moves only when told to, for
// the packages whose time is injected (cache, guard).
package fakeclock

import (
	"sync/atomic"
	"time"
)

// Clock is a clock that stands still until Advance or Set moves it. It is
// safe for concurrent use.
type Clock struct{ ns atomic.Int64 }

// New returns a Clock that reads start.
func New(start time.Time) *Clock {
	c := &Clock{}
	c.Set(start)
	return c
}

// Now returns the clock's time, in UTC.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }
