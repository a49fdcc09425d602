// Package caddymodule is the Caddy glue of caddy-rebell: module registration,
// JSON configuration, Caddyfile parsing and the Caddy lifecycle for the
// rebell_auth and rebell_sandbox HTTP handlers.
package caddymodule
