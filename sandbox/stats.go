package sandbox

import (
	"maps"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// grantUnknown is the grant type counted when a request named none of the
// two grant types (none, an unsupported one, or an unreadable body).
const grantUnknown = "UNKNOWN"

// Stats is a snapshot of the sandbox's counters, as GET /sandbox/stats
// serves it.
type Stats struct {
	// ApplyTokenCalls counts applyToken responses of every kind: successes,
	// failures, authentication failures and injected faults.
	ApplyTokenCalls int64 `json:"applyTokenCalls"`
	// ByGrantType counts applyToken responses by grant type
	// (AUTHORIZATION_CODE, REFRESH_TOKEN or UNKNOWN) and then result code.
	ByGrantType map[string]map[string]int64 `json:"byGrantType"`
	// ByResultCode counts applyToken responses by result code.
	ByResultCode map[string]int64 `json:"byResultCode"`
	// AuthCodesIssued counts auth codes issued.
	AuthCodesIssued int64 `json:"authCodesIssued"`
	// LiveAuthCodes is the number of auth codes that can still be redeemed.
	LiveAuthCodes int `json:"liveAuthCodes"`
	// LiveRefreshTokens is the number of refresh tokens that can still be
	// redeemed.
	LiveRefreshTokens int `json:"liveRefreshTokens"`
	// StoredAuthCodes is the number of auth codes held in memory: live ones
	// plus used or expired ones not purged yet.
	StoredAuthCodes int `json:"storedAuthCodes"`
	// StoredRefreshTokens is the number of refresh tokens held in memory:
	// live ones plus used or expired ones not purged yet.
	StoredRefreshTokens int `json:"storedRefreshTokens"`
	// PendingFaults is the number of applyToken and cancelToken calls that
	// queued faults will still answer.
	PendingFaults int `json:"pendingFaults"`
	// CancelTokenCalls counts cancelToken responses of every kind. It and
	// the two fields below are left out of the JSON until the first
	// cancelToken call (since the last reset).
	CancelTokenCalls int64 `json:"cancelTokenCalls,omitempty"`
	// CancelByResultCode counts cancelToken responses by result code.
	CancelByResultCode map[string]int64 `json:"cancelByResultCode,omitempty"`
	// AuthorizationsCancelled counts the cancelToken calls that revoked an
	// authorization (SUCCESS).
	AuthorizationsCancelled int64 `json:"authorizationsCancelled,omitempty"`
}

// counters are the resettable parts of Stats. The caller holds Sandbox.mu.
type counters struct {
	applyTokenCalls int64
	byGrantType     map[string]map[string]int64
	byResultCode    map[string]int64
	authCodesIssued int64
	cancelCalls     int64
	cancelByCode    map[string]int64
}

func newCounters() counters {
	return counters{
		byGrantType:  make(map[string]map[string]int64),
		byResultCode: make(map[string]int64),
	}
}

// record counts one applyToken response.
func (c *counters) record(grantType, resultCode string) {
	c.applyTokenCalls++
	c.byResultCode[resultCode]++
	g := c.byGrantType[grantType]
	if g == nil {
		g = make(map[string]int64)
		c.byGrantType[grantType] = g
	}
	g[resultCode]++
}

// recordCancel counts one cancelToken response.
func (c *counters) recordCancel(resultCode string) {
	c.cancelCalls++
	if c.cancelByCode == nil {
		c.cancelByCode = make(map[string]int64)
	}
	c.cancelByCode[resultCode]++
}

// snapshot returns the counters as a Stats whose maps the caller owns.
func (c *counters) snapshot() Stats {
	st := Stats{
		ApplyTokenCalls: c.applyTokenCalls,
		ByGrantType:     make(map[string]map[string]int64, len(c.byGrantType)),
		ByResultCode:    maps.Clone(c.byResultCode),
		AuthCodesIssued: c.authCodesIssued,
		// The maps stay nil until the first cancelToken call.
		CancelTokenCalls:        c.cancelCalls,
		CancelByResultCode:      maps.Clone(c.cancelByCode),
		AuthorizationsCancelled: c.cancelByCode[rebell.CodeSuccess],
	}
	for g, m := range c.byGrantType {
		st.ByGrantType[g] = maps.Clone(m)
	}
	return st
}
