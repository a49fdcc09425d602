// Package caddyrebell is the root of the caddy-rebell plugin. Importing it
// registers the rebell_auth and rebell_sandbox modules, so that
// `xcaddy build --with github.com/rebell-gateway/caddy-rebell` (or `=.` for a
// local checkout) builds a Caddy that has them.
package caddyrebell

import (
	_ "github.com/rebell-gateway/caddy-rebell/caddymodule"
)
