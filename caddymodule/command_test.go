package caddymodule

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckDefaultCaddyfile: without --config, caddy rebell check reads
// ./Caddyfile, as caddy validate does, and says what to do when there is
// none.
func TestCheckDefaultCaddyfile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	var out bytes.Buffer
	_, err := runCheck(&out, "", "")
	if err == nil || !strings.Contains(err.Error(), "no Caddyfile in the current directory (use --config)") {
		t.Errorf("without a Caddyfile: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(":0 {\n\trespond ok\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = runCheck(&out, "", "")
	if err == nil || err.Error() != "Caddyfile: no rebell_auth handler in the config" {
		t.Errorf("with ./Caddyfile: %v", err)
	}
}
