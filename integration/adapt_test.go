package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAdaptWithoutKeys: `caddy adapt` of a Caddyfile whose key files do
// not exist succeeds (CI without the production keys) and keeps the paths;
// `caddy validate` of the same file fails, naming the option and the file.
func TestAdaptWithoutKeys(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "not-mounted", "merchant.pem")
	cfg := ":0 {\n\trebell_auth {\n\t\tendpoint https://api.example.com\n\t\tclient_id C\n\t\tprivate_key_file " + missing +
		"\n\t}\n\trespond ok\n}\n"
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, caddyBin, args...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("caddy %s did not return within 30s", args[0])
		}
		if args[0] == "adapt" {
			if err != nil {
				t.Fatalf("caddy adapt: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			return stdout.String(), nil
		}
		return stdout.String() + stderr.String(), err
	}

	out, _ := run("adapt", "--config", path, "--adapter", "caddyfile")
	var adapted map[string]any
	if err := json.Unmarshal([]byte(out), &adapted); err != nil {
		t.Fatalf("adapt output is not JSON: %v\n%s", err, out)
	}
	if want := `"private_key_file":` + quoteJSON(missing); !strings.Contains(out, want) {
		t.Errorf("adapted JSON lacks %s:\n%s", want, out)
	}

	out, err := run("validate", "--config", path, "--adapter", "caddyfile")
	if err == nil {
		t.Fatalf("caddy validate accepted a missing key file:\n%s", out)
	}
	if want := "private_key_file: key " + missing + ": cannot be read"; !strings.Contains(out, want) {
		t.Errorf("caddy validate does not say %q:\n%s", want, out)
	}
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
