package caddymodule

import (
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestCaddyfileExampleFormatted fails when Caddyfile.example is not what
// `caddy fmt` makes of it: Caddy would print "Caddyfile input is not
// formatted" on every start of the demo. The golden adapt test
// (TestAdaptCaddyfileExample) covers that it adapts.
func TestCaddyfileExampleFormatted(t *testing.T) {
	input, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if w, different := caddyfile.FormattingDifference("Caddyfile.example", input); different {
		t.Errorf("%s: not caddy fmt-clean from line %d on; run `go run ./cmd/caddy fmt --overwrite Caddyfile.example`", w.File, w.Line)
	}
	t.Chdir("..")
	_, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(input, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatalf("Caddyfile.example does not adapt: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("adapting Caddyfile.example warns: %s", w.String())
	}
}
