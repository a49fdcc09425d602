package caddymodule

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestAdaptWithoutKeyFiles: the Caddyfile adapter only parses, as Caddy's
// own directives do, so a Caddyfile whose key files are not there adapts
// (CI without the production keys), and the paths reach the JSON as given.
// Provisioning (caddy validate, run, reload) reads them and names the
// option and the file.
func TestAdaptWithoutKeyFiles(t *testing.T) {
	input := `:8080 {
	rebell_auth {
		endpoint https://api.example.com
		client_id C
		private_key_file /nonexistent/merchant.pem
		rebell_public_key_file /nonexistent/rebell.pem /nonexistent/rebell-next.pem
	}
	rebell_sandbox {
		merchant_public_key_file /nonexistent/merchant-public.pem
		private_key_file /nonexistent/sandbox.pem
	}
}
`
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	for _, want := range []string{
		`"private_key_file":"/nonexistent/merchant.pem"`,
		`"rebell_public_key_file":"/nonexistent/rebell.pem"`,
		`"rebell_public_key_files":["/nonexistent/rebell-next.pem"]`,
		`"merchant_public_key_file":"/nonexistent/merchant-public.pem"`,
		`"private_key_file":"/nonexistent/sandbox.pem"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("adapted JSON lacks %s:\n%s", want, out)
		}
	}

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for name, tc := range map[string]struct {
		edit func(*Auth)
		want string
	}{
		"private key": {func(a *Auth) { a.PrivateKey, a.PrivateKeyFile = "", "/nonexistent/merchant.pem" },
			"private_key_file: key /nonexistent/merchant.pem: cannot be read: no such file or directory"},
		"public key": {func(a *Auth) { a.RebellPublicKeyFile = "/nonexistent/rebell.pem" },
			"rebell_public_key_file: key /nonexistent/rebell.pem: cannot be read"},
		"second public key": {func(a *Auth) {
			a.RebellPublicKeyFile, a.RebellPublicKeyFiles = "", []string{"/nonexistent/rebell-next.pem"}
		}, "rebell_public_key_files: entry 1: key /nonexistent/rebell-next.pem: cannot be read"},
	} {
		a := storeAuth(nil)
		a.Store = nil
		tc.edit(a)
		err := a.Provision(ctx)
		if err == nil {
			_ = a.Cleanup()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: provision error %v, want %q", name, err, tc.want)
		}
	}
	for field, path := range map[string]string{
		"merchant_public_key_file": "/nonexistent/merchant-public.pem",
		"private_key_file":         "/nonexistent/sandbox.pem",
	} {
		want := field + ": key " + path + ": cannot be read"
		var s Sandbox
		if err := json.Unmarshal([]byte(`{"client_id":"C",`+quote(field)+`:`+quote(path)+`}`), &s); err != nil {
			t.Fatal(err)
		}
		err := s.Provision(ctx)
		if err == nil {
			_ = s.Cleanup()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("sandbox %s: provision error %v, want %q", field, err, want)
		}
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
