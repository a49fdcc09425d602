package handler

import "testing"

// TestOutcomesListsEveryCode: Outcomes, from which the gateway builds its
// request counters, names every outcome and error code, each once.
func TestOutcomesListsEveryCode(t *testing.T) {
	seen := map[string]bool{}
	for _, o := range Outcomes() {
		if seen[o] {
			t.Errorf("%q listed twice", o)
		}
		seen[o] = true
	}
	for _, want := range []string{outcomeOK, outcomeLogin, outcomeLogout, outcomePublic, outcomeJWKS,
		errSessionRequired.code, errSessionInvalid.code, errReauthRequired.code, errStoreUnavailable.code,
		errRebellUnavailable.code, errRebellRejected.code, errMethodNotAllowed.code} {
		if !seen[want] {
			t.Errorf("%q missing from Outcomes", want)
		}
	}
}
