package integration

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// runCaddy runs the built Caddy with args and returns its stdout, stderr and
// exit status.
func runCaddy(t *testing.T, dir string, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	cmd := exec.Command(caddyBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			status = ee.ExitCode()
		default:
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("caddy %s did not finish in 60s:\n%s\n%s", strings.Join(args, " "), out.String(), errOut.String())
	}
	return out.String(), errOut.String(), status
}

// checkSandbox starts a Caddy serving the sandbox for client MERCHANT_IT,
// which holds the merchant key under keyVersion 1, and returns its base URL.
func checkSandbox(t *testing.T, kf keyFiles) string {
	t.Helper()
	port := freePort(t)
	startCaddy(t, sandboxSite(kf, port, 0, "merchant_key_version 1"), port)
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// gatewayConfig writes a gateway Caddyfile (never served here) and returns
// its path.
func gatewayConfig(t *testing.T, dir, name, endpoint, clientID, privateKey, rebellKey string, keyVersion int) string {
	t.Helper()
	cfg := fmt.Sprintf(`:%d {
	rebell_auth {
		endpoint %s
		client_id %s
		private_key_file %s
		rebell_public_key_file %s
		key_version %d
	}
	reverse_proxy 127.0.0.1:9
}
`, freePort(t), endpoint, clientID, privateKey, rebellKey, keyVersion)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// requireNoKeyMaterial fails if out shows any of the test keys.
func requireNoKeyMaterial(t *testing.T, out string) {
	t.Helper()
	if strings.Contains(out, "BEGIN") || strings.Contains(out, "caddyRebellCheck") {
		t.Errorf("output shows key material or the made-up code:\n%s", out)
	}
	for i := range testkeys.N {
		pem := string(rebell.EncodePrivateKeyPEM(testkeys.RSA(i)))
		body := strings.Split(pem, "\n")[1] // the first line of base64
		pub := strings.Split(string(rebell.EncodePublicKeyPEM(&testkeys.RSA(i).PublicKey)), "\n")[1]
		if strings.Contains(out, body) || strings.Contains(out, pub) {
			t.Errorf("output shows test key %d", i)
		}
	}
}

// TestCheckCommand runs `caddy rebell check` against a real Caddy serving the
// sandbox: the right settings pass, and each wrong one fails with its own
// diagnosis.
func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	kf := writeKeys(t, dir)
	base := checkSandbox(t, kf)
	other := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(other, rebell.EncodePrivateKeyPEM(testkeys.RSA(2)), 0o600); err != nil {
		t.Fatal(err)
	}
	unreachable := fmt.Sprintf("http://127.0.0.1:%d", closedPort(t))

	cases := []struct {
		name                  string
		endpoint, client      string
		private, rebellPublic string
		keyVersion            int
		status                int
		want                  []string
	}{
		{"right", base, "MERCHANT_IT", kf.MerchantPrivate, kf.PlatformPublic, 1, 0,
			[]string{"PASS (Rebell answered INVALID_CODE)", "client_id MERCHANT_IT, the merchant private key and key_version 1 are accepted", "verified with rebell_public_key", "all 1 rebell_auth handlers passed"}},
		{"wrong merchant key", base, "MERCHANT_IT", other, kf.PlatformPublic, 1, 1,
			[]string{"FAIL (Rebell answered INVALID_SIGNATURE)", "merchant private key is not the pair", `Rebell says: "The signature does not verify."`}},
		{"wrong key version", base, "MERCHANT_IT", kf.MerchantPrivate, kf.PlatformPublic, 2, 1,
			[]string{"FAIL (Rebell answered INVALID_SIGNATURE)", "key_version 2 is not the version Rebell gave that key", "keyVersion"}},
		{"wrong rebell_public_key", base, "MERCHANT_IT", kf.MerchantPrivate, kf.MerchantPublic, 1, 1,
			[]string{"does not verify with rebell_public_key: rebell_public_key is wrong", "unverified answer says INVALID_CODE"}},
		{"unknown client id", base, "NOT_A_CLIENT", kf.MerchantPrivate, kf.PlatformPublic, 1, 1,
			[]string{"FAIL (Rebell answered INVALID_AUTH_CLIENT)", "Rebell does not know client_id NOT_A_CLIENT at " + base}},
		{"unreachable endpoint", unreachable, "MERCHANT_IT", kf.MerchantPrivate, kf.PlatformPublic, 1, 1,
			[]string{"connect: cannot connect to " + strings.TrimPrefix(unreachable, "http://"), "connection refused"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := gatewayConfig(t, dir, fmt.Sprintf("Caddyfile.%d", i), c.endpoint, c.client, c.private, c.rebellPublic, c.keyVersion)
			out, errOut, status := runCaddy(t, dir, "rebell", "check", "--config", cfg, "--adapter", "caddyfile")
			if status != c.status {
				t.Errorf("exit status %d, want %d", status, c.status)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if c.status != 0 && !strings.Contains(errOut, "1 of 1 rebell_auth handlers failed the check") {
				t.Errorf("stderr does not sum up the failure:\n%s", errOut)
			}
			requireNoKeyMaterial(t, out+errOut)
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
			}
		})
	}

	t.Run("no rebell_auth", func(t *testing.T) {
		cfg := filepath.Join(dir, "Caddyfile.none")
		if err := os.WriteFile(cfg, []byte(":0 {\n\trespond ok\n}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, status := runCaddy(t, dir, "rebell", "check", "--config", cfg, "--adapter", "caddyfile")
		if status != 1 || !strings.Contains(errOut, "no rebell_auth handler") {
			t.Errorf("status %d, stderr %s", status, errOut)
		}
	})
}

// TestKeygenCommand generates a key pair with `caddy rebell keygen`, serves
// the sandbox with its public half, and checks a gateway that signs with its
// private half: the files are what the plugin loads and Rebell would take.
func TestKeygenCommand(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	out, errOut, status := runCaddy(t, dir, "rebell", "keygen", "--dir", keys)
	if status != 0 {
		t.Fatalf("keygen: status %d\n%s\n%s", status, out, errOut)
	}
	for _, w := range []string{"merchant-private.pem", "merchant-public.pem", "merchant-public.txt", "Next steps:", "caddy rebell check --config"} {
		if !strings.Contains(out, w) {
			t.Errorf("keygen output lacks %q:\n%s", w, out)
		}
	}
	requireNoKeyMaterial(t, out)
	priv := filepath.Join(keys, "merchant-private.pem")
	if st, err := os.Stat(priv); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v, mode %v", err, st.Mode())
	}
	if k, err := rebell.ReadPrivateKeyFile(priv); err != nil || strings.Contains(out, strings.Split(string(rebell.EncodePrivateKeyPEM(k)), "\n")[1]) {
		t.Fatalf("private key unreadable (%v) or printed", err)
	}

	// A second run refuses, and leaves the key as it was.
	before, _ := os.ReadFile(priv)
	_, errOut, status = runCaddy(t, dir, "rebell", "keygen", "--dir", keys)
	if status != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("second keygen: status %d, stderr %s", status, errOut)
	}
	if after, _ := os.ReadFile(priv); !bytes.Equal(before, after) {
		t.Error("the second keygen changed the private key")
	}
	if _, errOut, status = runCaddy(t, dir, "rebell", "keygen", "--dir", t.TempDir(), "--bits", "1024"); status != 1 || !strings.Contains(errOut, "2048, 3072 or 4096") {
		t.Errorf("--bits 1024: status %d, stderr %s", status, errOut)
	}

	// The sandbox holds the text form (what Rebell's console takes), the
	// gateway signs with the PEM private key.
	kf := writeKeys(t, dir)
	kf.MerchantPublic = filepath.Join(keys, "merchant-public.txt")
	base := checkSandbox(t, kf)
	cfg := gatewayConfig(t, dir, "Caddyfile", base, "MERCHANT_IT", priv, kf.PlatformPublic, 1)
	out, errOut, status = runCaddy(t, dir, "rebell", "check", "--config", cfg, "--adapter", "caddyfile")
	if status != 0 || !strings.Contains(out, "PASS") {
		t.Errorf("check with the generated keys: status %d\n%s\n%s", status, out, errOut)
	}
}

// closedPort returns a port on 127.0.0.1 that nothing listens on (a port
// freePort returns is held open, so it accepts connections). Another
// process could take it before use; the test then fails saying what it got.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}
