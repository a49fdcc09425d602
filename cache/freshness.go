package cache

import "time"

// freshness is what docs/freshness.md says to do with a session's tokens at a moment.
type freshness uint8

const (
	// fresh: now < A − window; use the cached token.
	fresh freshness = iota
	// refreshAhead: A − window ≤ now < A − m; use the cached token and
	// start a background refresh. The window is min(refresh_ahead,
	// lifetime/2) and m = min(10s, window/2).
	refreshAhead
	// mustRefresh: A − m ≤ now < R; wait for a refresh.
	mustRefresh
	// reauth: R ≤ now < R + grace; the session is over, the client hears
	// reauth_required.
	reauth
	// gone: now ≥ R + grace; the record has outlived its grace.
	gone
)

// policy holds the freshness parameters derived from Config.
type policy struct {
	// refreshAhead is how long before the access token's expiry a background
	// refresh starts, as configured. A token whose lifetime is shorter than
	// twice that uses half its lifetime instead (see window).
	refreshAhead time.Duration
	// grace is how long a record is kept past the refresh token's expiry:
	// an hour, or the idle timeout if shorter.
	grace time.Duration
}

func newPolicy(refreshAhead, idleTimeout time.Duration) policy {
	p := policy{refreshAhead: refreshAhead, grace: time.Hour}
	if idleTimeout > 0 && idleTimeout < p.grace {
		p.grace = idleTimeout
	}
	return p
}

// classify applies the table of docs/freshness.md to st at now.
func (p *policy) classify(st *tokenState, now time.Time) freshness {
	if r := st.grant.SessionExpiry; !now.Before(r) {
		if !now.Before(r.Add(p.grace)) {
			return gone
		}
		return reauth
	}
	a := st.grant.AccessTokenExpiry
	ahead := p.window(st)
	switch {
	case now.Before(a.Add(-ahead)):
		return fresh
	case now.Before(a.Add(-min(maxMinRemaining, ahead/2))):
		return refreshAhead
	default:
		return mustRefresh
	}
}

// maxMinRemaining bounds m, the validity below which requests wait for a
// refresh instead of using the token: m = min(10s, window/2).
const maxMinRemaining = 10 * time.Second

// window is the refresh-ahead window of st's access token:
// min(refreshAhead, lifetime/2), so that a token living no longer than
// refreshAhead is refreshed once, half-way through its life, rather than on
// every request (docs/freshness.md).
func (p *policy) window(st *tokenState) time.Duration {
	if st.lifetime > 0 && st.lifetime/2 < p.refreshAhead {
		return st.lifetime / 2
	}
	return p.refreshAhead
}

// lifetime is how long the memory tier keeps a record with st from now:
// until R + grace.
func (p *policy) lifetime(st *tokenState, now time.Time) time.Duration {
	return st.grant.SessionExpiry.Add(p.grace).Sub(now)
}
