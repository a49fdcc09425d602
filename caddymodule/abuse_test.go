package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestAbuseSettingsCaddyfile(t *testing.T) {
	var a Auth
	in := `rebell_auth {
	login_rate 5/30s burst 8
	allowed_origins https://shop.example http://localhost:3000
	cookie {
		secure always
		same_site none
		domain example.com
	}
}`
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if lr := a.LoginRate; lr == nil || lr.Count != 5 || lr.Period != caddy.Duration(30*time.Second) || lr.Burst != 8 || lr.Off {
		t.Fatalf("login_rate %+v", a.LoginRate)
	}
	if len(a.AllowedOrigins) != 2 || a.AllowedOrigins[1] != "http://localhost:3000" {
		t.Fatalf("allowed_origins %v", a.AllowedOrigins)
	}
	if c := a.Cookie; c == nil || *c != (CookieConfig{Secure: "always", SameSite: "none", Domain: "example.com"}) {
		t.Fatalf("cookie %+v", a.Cookie)
	}
	for in, want := range map[string]*LoginRateConfig{
		"10/m":  {Count: 10, Period: caddy.Duration(time.Minute)},
		"10/1h": {Count: 10, Period: caddy.Duration(time.Hour)},
		"off":   {Off: true},
	} {
		var a Auth
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\tlogin_rate " + in + "\n}")); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if *a.LoginRate != *want {
			t.Errorf("%s: %+v, want %+v", in, a.LoginRate, want)
		}
	}
	for in, want := range map[string]string{
		"login_rate":                                "login_rate: want <n>/<period> [burst <n>], or off",
		"login_rate 10":                             `login_rate: "10" is not <n>/<period>`,
		"login_rate 0/m":                            `login_rate: count "0" is not between 1`,
		"login_rate 10/0s":                          `login_rate: period "0s" is not a positive duration`,
		"login_rate 10/fortnight":                   `period "1fortnight" is not a positive duration`,
		"login_rate 10/m burst":                     "login_rate: want",
		"login_rate 10/m burst 0":                   `login_rate: burst "0" is not between 1`,
		"login_rate 10/m bursts 3":                  "login_rate: want",
		"allowed_origins":                           "allowed_origins: at least one origin is required",
		"cookie {\n\t\tsecure\n\t}":                 "wrong argument count",
		"cookie {\n\t\tflavour choc\n\t}":           `cookie: unrecognized subdirective "flavour"`,
		"cookie {\n\t\tdomain a\n\t\tdomain b\n\t}": "cookie: domain: already set",
	} {
		var a Auth
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\t" + in + "\n}"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}
