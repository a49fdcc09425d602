package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestErrorsSubdirective(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"errors caddy", "caddy", ""},
		{"errors json", "json", ""},
		{"errors html", "", `"html" is not json or caddy`},
		{"errors", "", "wrong argument count"},
		{"errors caddy json", "", "takes one argument"},
	} {
		var a Auth
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n" + c.in + "\n}"))
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: error %v, want %q", c.in, err, c.err)
		case c.err == "" && a.Errors != c.want:
			t.Errorf("%q: Errors = %q", c.in, a.Errors)
		}
	}
}

func TestSandboxMerchantKeyVersion(t *testing.T) {
	var s Sandbox
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_sandbox {\nmerchant_key_version 2\n}")); err != nil {
		t.Fatal(err)
	}
	if s.MerchantKeyVersion == nil || *s.MerchantKeyVersion != 2 {
		t.Fatalf("MerchantKeyVersion = %v", s.MerchantKeyVersion)
	}
	for _, bad := range []string{"merchant_key_version", "merchant_key_version -1", "merchant_key_version x"} {
		var s Sandbox
		if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_sandbox {\n" + bad + "\n}")); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
