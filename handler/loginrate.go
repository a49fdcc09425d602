package handler

import (
	"container/list"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of LoginRate (docs/contract.md): a real Mini App user logs in
// once per session, so 10 a minute with a burst of 20 is never reached by
// one, while a flood from one address gets 20 logins and then one every
// six seconds.
const (
	DefaultLoginRateCount  = 10
	DefaultLoginRatePeriod = time.Minute
	DefaultLoginRateBurst  = 20
	// DefaultLoginRateTable is how many client addresses the limiter
	// remembers; the least recently seen is forgotten first. An entry
	// takes about 100 bytes, so the table stays under 7 MB.
	DefaultLoginRateTable = 65536
)

// LoginRate limits the logins of one client address with a token bucket
// (docs/contract.md, login_rate). The zero value selects the defaults.
type LoginRate struct {
	// Count logins per Period refill the bucket; 0 means 10.
	Count int
	// Period is the period of Count; 0 means a minute.
	Period time.Duration
	// Burst is the size of the bucket: how many logins an address may make
	// at once; 0 means 20 (and at least Count).
	Burst int
	// Off turns the limit off.
	Off bool
	// Table is how many addresses are remembered; 0 means 65536.
	Table int
}

// loginLimiter is a token bucket per client address in a fixed-size table:
// when the table is full, the address seen least recently is forgotten
// (and starts again with a full bucket). IPv6 addresses share the bucket of
// their /64, the block one subscriber usually holds. It is safe for
// concurrent use.
type loginLimiter struct {
	perToken time.Duration // time to refill one token
	burst    float64
	size     int

	mu      sync.Mutex
	entries map[netip.Addr]*list.Element // of *bucketEntry
	lru     list.List                    // most recently used first
}

type bucketEntry struct {
	addr   netip.Addr
	tokens float64
	last   time.Time
}

// newLoginLimiter checks cfg and returns its limiter, nil when it is off.
func newLoginLimiter(cfg LoginRate) (*loginLimiter, error) {
	if cfg.Off {
		return nil, nil
	}
	if cfg.Count < 0 || cfg.Period < 0 || cfg.Burst < 0 || cfg.Table < 0 {
		return nil, fmt.Errorf("handler: login_rate: numbers must not be negative")
	}
	count := orDefaultInt(cfg.Count, DefaultLoginRateCount)
	period := cfg.Period
	if period == 0 {
		period = DefaultLoginRatePeriod
	}
	burst := orDefaultInt(cfg.Burst, max(DefaultLoginRateBurst, count))
	if period/time.Duration(count) < time.Microsecond {
		return nil, fmt.Errorf("handler: login_rate: %d per %v is more than one a microsecond", count, period)
	}
	return &loginLimiter{
		perToken: period / time.Duration(count),
		burst:    float64(burst),
		size:     orDefaultInt(cfg.Table, DefaultLoginRateTable),
		entries:  make(map[netip.Addr]*list.Element),
	}, nil
}

func orDefaultInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// allow takes a token from addr's bucket at now. When there is none it
// returns how long until there is one.
func (l *loginLimiter) allow(addr netip.Addr, now time.Time) (time.Duration, bool) {
	addr = bucketAddr(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	var e *bucketEntry
	if el, ok := l.entries[addr]; ok {
		l.lru.MoveToFront(el)
		e = el.Value.(*bucketEntry)
		if d := now.Sub(e.last); d > 0 {
			e.tokens = min(l.burst, e.tokens+float64(d)/float64(l.perToken))
			e.last = now
		}
	} else {
		var el *list.Element
		if l.lru.Len() >= l.size {
			// Forget the address seen least recently, reusing its entry
			// and list element: a full table allocates nothing.
			el = l.lru.Back()
			e = el.Value.(*bucketEntry)
			delete(l.entries, e.addr)
			l.lru.MoveToFront(el)
		} else {
			e = new(bucketEntry)
			el = l.lru.PushFront(e)
		}
		*e = bucketEntry{addr: addr, tokens: l.burst, last: now}
		l.entries[addr] = el
	}
	if e.tokens >= 1 {
		e.tokens--
		return 0, true
	}
	return time.Duration((1 - e.tokens) * float64(l.perToken)), false
}

// bucketAddr is the key of addr's bucket: the address, or for IPv6 its /64.
func bucketAddr(addr netip.Addr) netip.Addr {
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.Addr()
	}
	return addr
}

// clientAddr is the address r's login is counted against: what
// Config.ClientIP says, else the peer's address. ok is false when neither
// parses (a host that set neither): such a login is not limited per
// address.
func (h *Handler) clientAddr(r *http.Request) (netip.Addr, bool) {
	s := ""
	if h.clientIP != nil {
		s = h.clientIP(r)
	}
	if s == "" {
		s = r.RemoteAddr
		if host, _, err := net.SplitHostPort(s); err == nil {
			s = host
		}
	}
	s, _, _ = strings.Cut(s, "%") // an IPv6 zone
	addr, err := netip.ParseAddr(s)
	return addr, err == nil
}

// admitLogin applies the per-address limit of logins: it answers 429
// too_many_logins with Retry-After and returns false when r's address has
// no token left.
func (h *Handler) admitLogin(w http.ResponseWriter, r *http.Request) (bool, error) {
	if h.loginLimit == nil {
		return true, nil
	}
	addr, ok := h.clientAddr(r)
	if !ok {
		return true, nil
	}
	wait, ok := h.loginLimit.allow(addr, h.now())
	if ok {
		return true, nil
	}
	secs := max(1, int64((wait+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	return false, h.refuse(w, r, errTooManyLogins)
}
