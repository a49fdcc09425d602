package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestAuthCaddyfileGood(t *testing.T) {
	input := `rebell_auth {
		endpoint https://api.rebellapp.com/api/open
		client_id 2022091495540562874792
		private_key {env.REBELL_PRIVATE_KEY}
		rebell_public_key {env.REBELL_PUBLIC_KEY}
		key_version 0
		signature_algorithm SHA256withRSA
		api_version v2
		reference_client_id 3333010071465913001
		customer_belongs_to REBELL
		timeout 3s
		retries 0
		login_path /auth/login
		logout_path /auth/logout
		session_header X-Session
		session_cookie off
		refresh_ahead 2m
		idle_timeout 1d
		login_dedup_window 0
		max_sessions 5000
		access_token_header X-Token
		customer_id_header X-Customer
	}`
	var a Auth
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(a)
	want := `{"endpoint":"https://api.rebellapp.com/api/open","client_id":"2022091495540562874792","private_key":"{env.REBELL_PRIVATE_KEY}",` +
		`"rebell_public_key":"{env.REBELL_PUBLIC_KEY}","key_version":0,"signature_algorithm":"SHA256withRSA","api_version":"v2",` +
		`"reference_client_id":"3333010071465913001","customer_belongs_to":"REBELL","timeout":3000000000,"retries":0,` +
		`"login_path":"/auth/login","logout_path":"/auth/logout","session_header":"X-Session","session_cookie":"off",` +
		`"refresh_ahead":120000000000,"idle_timeout":86400000000000,"login_dedup_window":0,"max_sessions":5000,` +
		`"access_token_header":"X-Token","customer_id_header":"X-Customer"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestAuthCaddyfileBad(t *testing.T) {
	for name, tc := range map[string]struct{ input, want string }{
		"inline arg":       {"rebell_auth foo {\n}", "wrong argument count"},
		"unknown":          {"rebell_auth {\n\tclient_secret x\n}", `unrecognized subdirective "client_secret", at Testfile:2`},
		"missing arg":      {"rebell_auth {\n\tendpoint\n}", "wrong argument count"},
		"two args":         {"rebell_auth {\n\tclient_id a b\n}", "client_id takes one argument, at Testfile:2"},
		"bad duration":     {"rebell_auth {\n\ttimeout soon\n}", `timeout: invalid duration "soon"`},
		"negative dur":     {"rebell_auth {\n\n\trefresh_ahead -1m\n}", "must not be negative, at Testfile:3"},
		"bad retries":      {"rebell_auth {\n\tretries many\n}", `retries: "many" is not a non-negative whole number`},
		"too many retries": {"rebell_auth {\n\tretries 11\n}", "retries: 11 is more than 10"},
		"zero sessions":    {"rebell_auth {\n\tmax_sessions 0\n}", "max_sessions: must be at least 1"},
		"bad algorithm":    {"rebell_auth {\n\tsignature_algorithm SHA1withRSA\n}", "is not RSA256 or SHA256withRSA"},
		"bad version":      {"rebell_auth {\n\tapi_version v3\n}", `api_version: "v3" is not v1 or v2`},
		"missing file":     {"rebell_auth {\n\tclient_id x\n\tprivate_key_file /nonexistent/merchant.pem\n}", "private_key_file: open /nonexistent/merchant.pem: no such file or directory, at Testfile:3"},
		"duplicate":        {"rebell_auth {\n\tclient_id x\n\tclient_id y\n}", "client_id: already set on line 2, at Testfile:3"},
	} {
		t.Run(name, func(t *testing.T) {
			var a Auth
			err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSandboxCaddyfile(t *testing.T) {
	var s Sandbox
	err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_sandbox {\n\tclient_id C\n\taccess_token_ttl 1m\n\trefresh_token_ttl 30d\n\tauth_code_ttl 90s\n}"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(s)
	if want := `{"client_id":"C","access_token_ttl":60000000000,"refresh_token_ttl":2592000000000000,"auth_code_ttl":90000000000}`; string(got) != want {
		t.Errorf("got %s", got)
	}
	for name, tc := range map[string]struct{ input, want string }{
		"unknown":      {"rebell_sandbox {\n\tclient_secret x\n}", "unrecognized subdirective client_secret, at Testfile:2"},
		"bad duration": {"rebell_sandbox {\n\tauth_code_ttl 5 minutes\n}", "auth_code_ttl takes one argument, at Testfile:2"},
		"not duration": {"rebell_sandbox {\n\taccess_token_ttl forever\n}", `access_token_ttl: invalid duration "forever"`},
		"missing file": {"rebell_sandbox {\n\tprivate_key_file /nope.pem\n}", "private_key_file: open /nope.pem: no such file or directory, at Testfile:2"},
		"inline arg":   {"rebell_sandbox x", "wrong argument count"},
	} {
		t.Run(name, func(t *testing.T) {
			var s Sandbox
			err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestDirectivesNeedNoOrder adapts a site that uses both directives directly,
// with a matcher, and no order option.
func TestDirectivesNeedNoOrder(t *testing.T) {
	input := `:8080 {
	rebell_auth /api/* {
		endpoint http://127.0.0.1:8081
		client_id C
	}
	reverse_proxy 127.0.0.1:9000
}
:8081 {
	rebell_sandbox
}
`
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{`"handler":"rebell_auth"`, `"handler":"rebell_sandbox"`, `"path":["/api/*"]`} {
		if !strings.Contains(s, want) {
			t.Errorf("adapted config lacks %s: %s", want, s)
		}
	}
	if strings.Index(s, `"handler":"rebell_auth"`) > strings.Index(s, `"handler":"reverse_proxy"`) {
		t.Error("rebell_auth is not ordered before reverse_proxy")
	}
}

// TestAdaptCaddyfileExample is the golden adapt test of the demo. Run with
// -update to rewrite testdata/Caddyfile.example.json.
func TestAdaptCaddyfileExample(t *testing.T) {
	t.Chdir("..") // the demo's key paths are relative to the repository root
	input, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("caddymodule", "testdata", "Caddyfile.example.json")
	if *update {
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(input, nil)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_ = json.Indent(&buf, out, "", "\t")
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	caddytest.AssertAdapt(t, string(input), "caddyfile", string(want))
}
