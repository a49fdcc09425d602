package rebell

import (
	"sync"
	"sync/atomic"
	"time"
)

// Clock skew toward Rebell (docs/operations.md, "Clock skew"). Rebell refuses
// a request whose Request-Time is more than ClockWindow from its own clock,
// as INVALID_SIGNATURE; the gateway measures the offset from the
// Response-Time of every verified answer, so a drifting clock shows before
// Rebell starts refusing.
const (
	// ClockWindow is how far Request-Time may be from Rebell's clock
	// (docs/protocol.md).
	ClockWindow = 5 * time.Minute
	// SkewWarnThreshold is the offset from which ClockSkew warns.
	SkewWarnThreshold = time.Minute
	// SkewWarnInterval is the least time between two warnings.
	SkewWarnInterval = time.Minute
	// maxTimeHeader bounds the Response-Time value parsed.
	maxTimeHeader = 64
)

// MeasureSkew returns Rebell's clock minus this machine's: the Response-Time
// of an answer minus the middle of the round trip (sent to received, both
// read from the clock that writes Request-Time). Positive means this
// machine's clock is behind. ok is false when responseTime is empty or not an
// RFC 3339 time. Response-Time has whole seconds, so a value without a
// fraction counts from the middle of its second.
func MeasureSkew(sent, received time.Time, responseTime string) (skew time.Duration, ok bool) {
	if responseTime == "" || len(responseTime) > maxTimeHeader {
		return 0, false
	}
	server, err := time.Parse(time.RFC3339Nano, responseTime)
	if err != nil {
		return 0, false
	}
	if server.Nanosecond() == 0 {
		server = server.Add(500 * time.Millisecond)
	}
	mid := sent.Add(received.Sub(sent) / 2)
	return server.Sub(mid), true
}

// ClockSkewConfig configures a ClockSkew.
type ClockSkewConfig struct {
	// Now is the clock that paces the warnings (nil means time.Now).
	Now func() time.Time
	// OnWarn, if set, is called when a measured offset is larger than
	// SkewWarnThreshold either way, at most once per SkewWarnInterval. It
	// logs; keep it cheap.
	OnWarn func(skew time.Duration)
}

// ClockSkew keeps the last clock offset measured toward Rebell. It is safe
// for concurrent use; a nil *ClockSkew measures nothing.
type ClockSkew struct {
	now    func() time.Time
	onWarn func(time.Duration)

	skew  atomic.Int64 // ns
	known atomic.Bool

	warnMu   sync.Mutex
	lastWarn time.Time
}

// NewClockSkew returns a ClockSkew with nothing measured yet.
func NewClockSkew(cfg ClockSkewConfig) *ClockSkew {
	s := &ClockSkew{now: cfg.Now, onWarn: cfg.OnWarn}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Observe records the offset measured from one verified answer (see
// MeasureSkew), and warns if it is large. An answer without a readable
// Response-Time changes nothing.
func (s *ClockSkew) Observe(sent, received time.Time, responseTime string) {
	if s == nil {
		return
	}
	skew, ok := MeasureSkew(sent, received, responseTime)
	if !ok {
		return
	}
	s.skew.Store(int64(skew))
	s.known.Store(true)
	if s.onWarn == nil || (skew <= SkewWarnThreshold && skew >= -SkewWarnThreshold) {
		return
	}
	now := s.now()
	s.warnMu.Lock()
	due := s.lastWarn.IsZero() || now.Sub(s.lastWarn) >= SkewWarnInterval
	if due {
		s.lastWarn = now
	}
	s.warnMu.Unlock()
	if due {
		s.onWarn(skew)
	}
}

// Skew returns the last offset measured (Rebell's clock minus this
// machine's) and whether one was measured at all.
func (s *ClockSkew) Skew() (time.Duration, bool) {
	if s == nil || !s.known.Load() {
		return 0, false
	}
	return time.Duration(s.skew.Load()), true
}
