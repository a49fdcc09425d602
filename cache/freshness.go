package cache

import "time"

// freshness is what SPEC §5 says to do with a session's tokens at a moment.
type freshness uint8

const (
	// fresh: now < A − refreshAhead; use the cached token.
	fresh freshness = iota
	// refreshAhead: A − refreshAhead ≤ now < A − m; use the cached token and
	// start a background refresh.
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
	// refresh starts.
	refreshAhead time.Duration
	// minRemaining is m = min(10s, refreshAhead/2): below this much validity
	// requests wait for a refresh instead of using the token.
	minRemaining time.Duration
	// grace is how long a record is kept past the refresh token's expiry:
	// an hour, or the idle timeout if shorter.
	grace time.Duration
}

func newPolicy(refreshAhead, idleTimeout time.Duration) policy {
	p := policy{refreshAhead: refreshAhead, minRemaining: min(10*time.Second, refreshAhead/2), grace: time.Hour}
	if idleTimeout > 0 && idleTimeout < p.grace {
		p.grace = idleTimeout
	}
	return p
}

// classify applies the table of SPEC §5 to st at now.
func (p *policy) classify(st *tokenState, now time.Time) freshness {
	if r := st.grant.SessionExpiry; !now.Before(r) {
		if !now.Before(r.Add(p.grace)) {
			return gone
		}
		return reauth
	}
	a := st.grant.AccessTokenExpiry
	switch {
	case now.Before(a.Add(-p.refreshAhead)):
		return fresh
	case now.Before(a.Add(-p.minRemaining)):
		return refreshAhead
	default:
		return mustRefresh
	}
}

// lifetime is how long the memory tier keeps a record with st from now:
// until R + grace.
func (p *policy) lifetime(st *tokenState, now time.Time) time.Duration {
	return st.grant.SessionExpiry.Add(p.grace).Sub(now)
}
