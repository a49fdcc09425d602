package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// oneArg reads exactly one argument of the current subdirective into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s takes one argument", name)
	}
	return nil
}

// fileArg reads one file path argument. Like Caddy's own directives, the
// adapter only parses: the file is read and checked when the config is
// provisioned (caddy validate, run, reload), so `caddy adapt` works where
// the keys are not mounted (CI, a build machine).
func fileArg(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if err := oneArg(d, dst); err != nil {
		return err
	}
	if strings.TrimSpace(*dst) == "" {
		return d.Errf("%s: empty path", name)
	}
	return nil
}

// durationArg reads one duration argument (Go syntax plus d for days).
func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	v, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: invalid duration %q: %v", name, s, err)
	}
	if v < 0 {
		return d.Errf("%s: duration %q must not be negative", name, s)
	}
	*dst = caddy.Duration(v)
	return nil
}

// intArg reads one non-negative integer argument.
func intArg(d *caddyfile.Dispenser, dst *int) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return d.Errf("%s: %q is not a non-negative whole number", name, s)
	}
	*dst = v
	return nil
}
