package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestRevokeCaddyfile: revoke takes on or off; anything else is an error
// that names it, in the Caddyfile and in JSON.
func TestRevokeCaddyfile(t *testing.T) {
	for _, v := range []string{"on", "off"} {
		var a Auth
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\trevoke " + v + "\n}")); err != nil || a.Revoke != v {
			t.Fatalf("revoke %s: %v (%q)", v, err, a.Revoke)
		}
	}
	for _, in := range []string{"revoke", "revoke yes", "revoke on off", "revoke on\n\trevoke off"} {
		var a Auth
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\t" + in + "\n}"))
		if err == nil || !strings.Contains(err.Error(), "revoke") {
			t.Errorf("%q: %v", in, err)
		}
	}
	a := Auth{Revoke: "true"}
	a.setDefaults()
	if err := a.checkBounds(); err == nil || !strings.Contains(err.Error(), "revoke") {
		t.Errorf("JSON revoke true: %v", err)
	}
	a = Auth{}
	a.setDefaults()
	if a.Revoke != "on" {
		t.Errorf("default revoke %q", a.Revoke)
	}
}
