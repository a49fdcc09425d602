// Command caddy is Caddy with its standard modules and the caddy-rebell plugin:
// what `xcaddy build --with github.com/rebell-gateway/caddy-rebell` produces,
// so `go run ./cmd/caddy run --config Caddyfile.example` works from a checkout.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rebell-gateway/caddy-rebell"
)

func main() {
	caddycmd.Main()
}
