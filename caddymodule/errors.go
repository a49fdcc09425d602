package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rebell-gateway/caddy-rebell/handler"
)

// caddyError turns an error response the handler returned (errors caddy)
// into a Caddy error with its status, for the site's handle_errors routes,
// and sets {http.rebell.error_message} and {http.rebell.result_code} ("" when
// Rebell gave none) beside {http.rebell.error}. Any other error, and nil,
// passes unchanged.
func caddyError(r *http.Request, err error) error {
	he, ok := err.(*handler.Error)
	if !ok {
		return err
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.rebell.error_message", he.Message)
		repl.Set("http.rebell.result_code", he.ResultCode)
	}
	return caddyhttp.Error(he.Status, he)
}
