package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestPublicPredicate: public paths match as Caddy's path matcher does.
func TestPublicPredicate(t *testing.T) {
	match := publicPredicate([]string{"/health", "/Public/*", "*.css"})
	for path, want := range map[string]bool{
		"/health":               true,
		"/HEALTH":               true,
		"/health/x":             false,
		"/public/a/b":           true,
		"/public":               false,
		"/public/../api/orders": false, // cleaned first, as Caddy does
		"//public/x":            true,  // slashes merged
		"/public/%2e%2e/api/x":  false, // decoded, then cleaned: /api/x
		"/api/%2e%2e/public/x":  true,  // /public/x: goes on without identity, whatever the upstream makes of it
		"/static/site.css":      true,
		"/api/orders":           false,
		"/rebell/login":         false,
	} {
		r := httptest.NewRequest(http.MethodGet, "http://x"+path, nil)
		repl := caddy.NewReplacer()
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
		if got := match(r); got != want {
			t.Errorf("%s: public = %v, want %v", path, got, want)
		}
	}
	if publicPredicate(nil) != nil {
		t.Error("no public paths gave a predicate")
	}
	// Outside Caddy (no replacer), nothing is public.
	if match(httptest.NewRequest(http.MethodGet, "/health", nil)) {
		t.Error("public without a replacer")
	}
}

func TestPublicCaddyfile(t *testing.T) {
	a := new(Auth)
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\tpublic /health /docs/*\n}")); err != nil {
		t.Fatal(err)
	}
	if strings.Join(a.Public, " ") != "/health /docs/*" {
		t.Errorf("public %q", a.Public)
	}
	err := new(Auth).UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\tpublic\n}"))
	if err == nil || !strings.Contains(err.Error(), "public: at least one path") {
		t.Errorf("empty public: %v", err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	b := storeAuth(nil)
	b.Store, b.Public = nil, []string{"health"}
	if err := b.Provision(ctx); err == nil || !strings.Contains(err.Error(), `public: "health" is not a path`) {
		t.Errorf("relative public path: %v", err)
		_ = b.Cleanup()
	}
}
