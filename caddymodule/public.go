package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// publicPredicate turns the public paths into the handler's predicate,
// with the semantics of Caddy's path matcher (case-insensitive, cleaned
// path, * wildcards, placeholders). nil when there are none.
func publicPredicate(paths []string) func(*http.Request) bool {
	if len(paths) == 0 {
		return nil
	}
	m := caddyhttp.MatchPath(append([]string(nil), paths...))
	_ = m.Provision(caddy.Context{}) // lower-cases; never fails
	return func(r *http.Request) bool {
		if _, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); !ok {
			return false // not served by Caddy: nothing is public
		}
		ok, err := m.MatchWithError(r)
		return ok && err == nil
	}
}

// setPublicPlaceholders clears the identity placeholders of a request that
// goes on without a session on a public path, so that a header_up using
// them sends nothing rather than a literal placeholder.
func setPublicPlaceholders(r *http.Request) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	for _, k := range []string{"http.auth.user.id", "http.rebell.customer_id", "http.rebell.access_token",
		"http.rebell.access_token_expiry", "http.rebell.session_expiry"} {
		repl.Set(k, "")
	}
}
