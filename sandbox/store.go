package sandbox

import (
	"errors"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Bounds of the state the sandbox holds.
const (
	// sweepInterval is how often, on the sandbox clock, a request also purges
	// what has been dead for markerGrace.
	sweepInterval = time.Minute
	// forcedSweepInterval is how often a store at capacity may sweep early.
	forcedSweepInterval = time.Second
	// markerGrace is how long a used or expired code or token is remembered
	// after its expiry, so that USED_* and EXPIRED_* are answered for it;
	// after that it is INVALID_*.
	markerGrace = 10 * time.Minute
	// maxLiveAuthCodes bounds the unused auth codes held.
	maxLiveAuthCodes = 100_000
	// maxStoredAuthCodes bounds the auth codes held, markers included.
	maxStoredAuthCodes = 4 * maxLiveAuthCodes
	// maxStoredRefreshTokens bounds the refresh tokens held, markers included.
	maxStoredRefreshTokens = 1_000_000
)

// Lengths of what the sandbox issues.
const (
	authCodeLen     = 32 // alphanumeric
	tokenRandomLen  = 40 // alphanumeric, after the prefix
	accessPrefix    = "SBXAT"
	refreshPrefix   = "SBXRT"
	customerIDLen   = 16 // digits
	maxCustomerID   = 64
	maxAuthCodeIn   = 64
	maxRefreshTokIn = 128
)

// errTooManyAuthCodes is returned when the auth code store is full.
var errTooManyAuthCodes = errors.New("sandbox: too many auth codes held; use some or wait for them to expire")

// entry is an auth code, a refresh token or an access token.
type entry struct {
	customerID string
	expires    time.Time
	// used: a code or refresh token redeemed, an access token cancelled.
	used bool
	// auth names the authorization a token belongs to (0 for a code): a
	// login starts one, refreshes carry it on, cancelToken revokes it.
	auth uint64
}

// dead reports whether e can be forgotten at now: it expired markerGrace ago.
func (e entry) dead(now time.Time) bool { return !now.Before(e.expires.Add(markerGrace)) }

// live reports whether e can still be redeemed at now.
func (e entry) live(now time.Time) bool { return !e.used && now.Before(e.expires) }

// session is the result of a successful applyToken.
type session struct {
	accessToken   string
	accessExpiry  time.Time
	refreshToken  string
	refreshExpiry time.Time
	customerID    string
}

// store holds auth codes, refresh tokens and access tokens (which only
// cancelToken consumes). The caller holds Sandbox.mu.
type store struct {
	codeTTL, accessTTL, refreshTTL time.Duration

	codes       map[string]entry
	refresh     map[string]entry
	access      map[string]entry
	unusedCodes int // entries of codes not used yet (expired or not)
	lastSweep   time.Time
	// lastAuth numbers authorizations; revoked holds the cancelled ones
	// until every token of theirs has expired (then markerGrace).
	lastAuth uint64
	revoked  map[uint64]time.Time

	// Limits, lowered by tests.
	maxLiveCodes, maxStoredCodes, maxStoredRefresh int
}

func newStore(codeTTL, accessTTL, refreshTTL time.Duration) store {
	return store{
		codeTTL:          codeTTL,
		accessTTL:        accessTTL,
		refreshTTL:       refreshTTL,
		codes:            make(map[string]entry),
		refresh:          make(map[string]entry),
		access:           make(map[string]entry),
		revoked:          make(map[uint64]time.Time),
		maxLiveCodes:     maxLiveAuthCodes,
		maxStoredCodes:   maxStoredAuthCodes,
		maxStoredRefresh: maxStoredRefreshTokens,
	}
}

// maybeSweep purges dead entries if sweepInterval has passed since the last
// sweep, or forcedSweepInterval when force is set (a store at capacity). A
// clock that went backwards also allows a sweep.
func (st *store) maybeSweep(now time.Time, force bool) {
	every := sweepInterval
	if force {
		every = forcedSweepInterval
	}
	if since := now.Sub(st.lastSweep); since >= 0 && since < every {
		return
	}
	st.lastSweep = now
	for k, e := range st.codes {
		if e.dead(now) {
			delete(st.codes, k)
			if !e.used {
				st.unusedCodes--
			}
		}
	}
	for k, e := range st.refresh {
		if e.dead(now) {
			delete(st.refresh, k)
		}
	}
	for k, e := range st.access {
		if e.dead(now) {
			delete(st.access, k)
		}
	}
	for a, until := range st.revoked {
		if !now.Before(until.Add(markerGrace)) {
			delete(st.revoked, a)
		}
	}
}

// issueCode stores a new auth code for customerID.
func (st *store) issueCode(now time.Time, customerID string) (string, error) {
	st.maybeSweep(now, false)
	if st.unusedCodes >= st.maxLiveCodes || len(st.codes) >= st.maxStoredCodes {
		st.maybeSweep(now, true)
		if st.unusedCodes >= st.maxLiveCodes || len(st.codes) >= st.maxStoredCodes {
			return "", errTooManyAuthCodes
		}
	}
	code := newAuthCode()
	for _, taken := st.codes[code]; taken; _, taken = st.codes[code] {
		code = newAuthCode()
	}
	st.codes[code] = entry{customerID: customerID, expires: now.Add(st.codeTTL)}
	st.unusedCodes++
	return code, nil
}

// exchangeCode redeems an auth code. It returns a result code and, on
// SUCCESS, the new session; the code is consumed only on SUCCESS.
func (st *store) exchangeCode(now time.Time, code string) (session, string) {
	st.maybeSweep(now, false)
	e, ok := st.codes[code]
	switch {
	case !ok:
		return session{}, rebell.CodeInvalidCode
	case e.used:
		return session{}, rebell.CodeUsedCode
	case !now.Before(e.expires):
		return session{}, rebell.CodeExpiredCode
	case !st.roomForRefreshToken(now):
		return session{}, rebell.CodeRequestTrafficExceedLimit
	}
	e.used = true
	st.codes[code] = e
	st.unusedCodes--
	st.lastAuth++
	return st.newSession(now, e.customerID, st.lastAuth), rebell.CodeSuccess
}

// refreshSession redeems a refresh token: it becomes used and a new access
// token and refresh token are issued for the same customer.
func (st *store) refreshSession(now time.Time, token string) (session, string) {
	st.maybeSweep(now, false)
	e, ok := st.refresh[token]
	_, revoked := st.revoked[e.auth]
	switch {
	case !ok, revoked:
		return session{}, rebell.CodeInvalidRefreshToken
	case e.used:
		return session{}, rebell.CodeUsedRefreshToken
	case !now.Before(e.expires):
		return session{}, rebell.CodeExpiredRefreshToken
	case !st.roomForRefreshToken(now):
		return session{}, rebell.CodeRequestTrafficExceedLimit
	}
	e.used = true
	st.refresh[token] = e
	return st.newSession(now, e.customerID, e.auth), rebell.CodeSuccess
}

// cancelToken cancels an access token, which revokes its authorization:
// every refresh token and access token of it stops working. An access
// token unknown, cancelled already or of a revoked authorization is
// INVALID_ACCESS_TOKEN (so a second cancel is harmless), an expired one
// EXPIRED_ACCESS_TOKEN.
func (st *store) cancelToken(now time.Time, token string) string {
	st.maybeSweep(now, false)
	e, ok := st.access[token]
	_, revoked := st.revoked[e.auth]
	switch {
	case !ok, e.used, revoked:
		return rebell.CodeInvalidAccessToken
	case !now.Before(e.expires):
		return rebell.CodeExpiredAccessToken
	}
	e.used = true
	st.access[token] = e
	// No token of the authorization outlives one issued now.
	st.revoked[e.auth] = now.Add(max(st.refreshTTL, st.accessTTL))
	return rebell.CodeSuccess
}

func (st *store) roomForRefreshToken(now time.Time) bool {
	if len(st.refresh) < st.maxStoredRefresh && len(st.access) < st.maxStoredRefresh {
		return true
	}
	st.maybeSweep(now, true)
	return len(st.refresh) < st.maxStoredRefresh && len(st.access) < st.maxStoredRefresh
}

func (st *store) newSession(now time.Time, customerID string, auth uint64) session {
	rt := newToken(refreshPrefix)
	for _, taken := st.refresh[rt]; taken; _, taken = st.refresh[rt] {
		rt = newToken(refreshPrefix)
	}
	at := newToken(accessPrefix)
	for _, taken := st.access[at]; taken; _, taken = st.access[at] {
		at = newToken(accessPrefix)
	}
	s := session{
		accessToken:   at,
		accessExpiry:  now.Add(st.accessTTL),
		refreshToken:  rt,
		refreshExpiry: now.Add(st.refreshTTL),
		customerID:    customerID,
	}
	st.refresh[rt] = entry{customerID: customerID, expires: s.refreshExpiry, auth: auth}
	st.access[at] = entry{customerID: customerID, expires: s.accessExpiry, auth: auth}
	return s
}

// counts returns the live (redeemable) and stored (held, markers included)
// numbers of auth codes and refresh tokens.
func (st *store) counts(now time.Time) (liveCodes, storedCodes, liveRefresh, storedRefresh int) {
	for _, e := range st.codes {
		if e.live(now) {
			liveCodes++
		}
	}
	for _, e := range st.refresh {
		if _, revoked := st.revoked[e.auth]; e.live(now) && !revoked {
			liveRefresh++
		}
	}
	return liveCodes, len(st.codes), liveRefresh, len(st.refresh)
}
