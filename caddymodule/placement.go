package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Where rebell_auth runs (README.md, "Header hygiene"; docs/contract.md,
// section 2): hygiene covers only the requests that reach it, and a second
// rebell_auth on a request would find the credential already removed.

// handledVar is the request variable the first rebell_auth on a request
// sets: a second one on the same request (a site-wide rebell_auth plus
// `rebell_auth /api/*`) then passes the request on untouched, keeping the
// first's identity headers and placeholders.
const handledVar = "rebell_auth_handled"

// alreadyHandled reports whether a rebell_auth already handled r, and marks
// r as handled.
func alreadyHandled(r *http.Request) bool {
	if done, _ := caddyhttp.GetVar(r.Context(), handledVar).(bool); done {
		return true
	}
	caddyhttp.SetVar(r.Context(), handledVar, true)
	return false
}

// warnSecondDirective logs, once per config, that a second rebell_auth ran
// on a request and did nothing.
func (a *Auth) warnSecondDirective() {
	if a.warnedTwice.CompareAndSwap(false, true) {
		a.logger.Warn("a request passed two rebell_auth handlers: the second does nothing and the first's identity is kept; " +
			"use one rebell_auth for the whole site, with public paths where no session is needed (README.md, Header hygiene)")
	}
}

// warnIfMatched logs one WARN at provision when this rebell_auth runs
// behind a matcher: its own (`rebell_auth /api/*`) or that of an enclosing
// handle, handle_path or route block. Caddy does not tell a handler its
// route, so this reads the routes of the enclosing subroutes (the modules
// being provisioned above this one): while a subroute provisions its
// handlers, the route being provisioned is the first one whose handlers are
// still raw JSON (Caddy drops a route's raw handlers once they are loaded).
// Matchers of the server's own routes (a site's host) are not counted, and
// neither are routes of a JSON config that puts rebell_auth directly in a
// server's route list with a matcher: that case is not detected.
func (a *Auth) warnIfMatched(ctx caddy.Context) {
	mods := ctx.Modules()
	for i := len(mods) - 2; i >= 0; i-- {
		sr, ok := mods[i].(*caddyhttp.Subroute)
		if !ok {
			continue
		}
		r := routeInProgress(sr)
		if r != nil && len(r.MatcherSets) > 0 {
			a.logger.Warn("rebell_auth runs behind a matcher: requests that do not match skip it, and header hygiene " +
				"(removing client-sent identity headers) does not cover them; use one rebell_auth for the whole site, " +
				"with public paths where no session is needed (README.md, Header hygiene)")
			return
		}
	}
}

// routeInProgress returns the route of sr whose handlers are being
// provisioned, or nil.
func routeInProgress(sr *caddyhttp.Subroute) *caddyhttp.Route {
	lists := []caddyhttp.RouteList{sr.Routes}
	if sr.Errors != nil {
		lists = append(lists, sr.Errors.Routes)
	}
	for _, routes := range lists {
		for i := range routes {
			if routes[i].HandlersRaw != nil {
				return &routes[i]
			}
		}
	}
	return nil
}
