package caddymodule

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// TestRebellPublicKeysRepeat: rebell_public_key_file and rebell_public_key
// may repeat or take several values; the first fills the singular JSON
// field (so a one-key config adapts as before), the others the plural one.
func TestRebellPublicKeysRepeat(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for i := 1; i <= 3; i++ {
		f := filepath.Join(dir, "k"+string(rune('0'+i))+".pem")
		if err := os.WriteFile(f, rebell.EncodePublicKeyPEM(&testkeys.RSA(i).PublicKey), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	input := "rebell_auth {\n\trebell_public_key_file " + files[0] + "\n\trebell_public_key_file " + files[1] + " " + files[2] +
		"\n\trebell_public_key {env.A}\n\trebell_public_key {env.B}\n}"
	var a Auth
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(a)
	want := `{"rebell_public_key_file":"` + files[0] + `","rebell_public_key_files":["` + files[1] + `","` + files[2] +
		`"],"rebell_public_key":"{env.A}","rebell_public_keys":["{env.B}"]}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	t.Setenv("REBELL_TEST_PUB", string(rebell.EncodePublicKeyPEM(&testkeys.RSA(0).PublicKey)))
	b := storeAuth(nil)
	b.Store = nil
	b.RebellPublicKeyFile, b.RebellPublicKeyFiles, b.RebellPublicKeys = files[0], files[1:], []string{"{env.REBELL_TEST_PUB}"}
	if err := b.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	_ = b.Cleanup()
	if pubs, _ := b.rebellPublicKeys(); len(pubs) != 4 {
		t.Errorf("%d keys loaded, want 4", len(pubs))
	}

	for name, tc := range map[string]struct {
		edit func(*Auth)
		want string
	}{
		"bad second file": {func(a *Auth) { a.RebellPublicKeyFiles = []string{filepath.Join(dir, "nope.pem")} }, "rebell_public_key_files: entry 1:"},
		"empty entry":     {func(a *Auth) { a.RebellPublicKeys = []string{"{env.REBELL_TEST_UNSET}"} }, "rebell_public_keys: entry 1 is empty"},
		"garbage inline":  {func(a *Auth) { a.RebellPublicKeys = []string{"x", "not a key"} }, "rebell_public_keys: entry 1:"},
	} {
		c := storeAuth(nil)
		c.Store = nil
		tc.edit(c)
		err := c.Provision(ctx)
		if err == nil {
			_ = c.Cleanup()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// TestPreviousEncryptionKeys: store redis previous_encryption_keys parses
// from the Caddyfile, resolves placeholders (several keys in one variable
// too), reaches the store's configuration and enters the pool key; a bad
// entry is named without showing the key.
func TestPreviousEncryptionKeys(t *testing.T) {
	var a Auth
	input := "rebell_auth {\n\tstore redis {\n\t\taddress 127.0.0.1:1\n\t\tencryption_key " + testStoreKey +
		"\n\t\tprevious_encryption_keys {env.REBELL_TEST_OLD_KEYS} " + testStoreKey2 + "\n\t}\n}"
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	if got := a.Store.Redis.PreviousEncryptionKeys; len(got) != 2 || got[0] != "{env.REBELL_TEST_OLD_KEYS}" {
		t.Fatalf("previous keys %q", got)
	}
	t.Setenv("REBELL_TEST_OLD_KEYS", testStoreKey3+", "+testStoreKey4)
	repl := caddy.NewReplacer()
	cfg, err := a.provisionStore(repl)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.PreviousEncryptionKeys) != 3 {
		t.Fatalf("%d previous keys, want 3", len(cfg.PreviousEncryptionKeys))
	}
	b := Auth{Store: &StoreConfig{Redis: &RedisStore{Address: []string{"127.0.0.1:1"}, EncryptionKey: testStoreKey}}}
	cfgB, err := b.provisionStore(repl)
	if err != nil {
		t.Fatal(err)
	}
	a.storeCfg, b.storeCfg = cfg, cfgB
	a.setDefaults()
	b.setDefaults()
	if a.poolIdentity() == b.poolIdentity() {
		t.Error("previous keys do not enter the pool key")
	}

	bad := Auth{Store: &StoreConfig{Redis: &RedisStore{Address: []string{"127.0.0.1:1"}, EncryptionKey: testStoreKey,
		PreviousEncryptionKeys: []string{testStoreKey2, "c2hvcnQ-secretish"}}}}
	_, err = bad.provisionStore(repl)
	if err == nil || !strings.Contains(err.Error(), "previous_encryption_keys: entry 2: must be 32 bytes") || strings.Contains(err.Error(), "secretish") {
		t.Errorf("bad previous key: %v", err)
	}
	err = new(Auth).UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_auth {\n\tstore redis {\n\t\tprevious_encryption_keys\n\t}\n}"))
	if err == nil || !strings.Contains(err.Error(), "at least one key") {
		t.Errorf("empty previous_encryption_keys: %v", err)
	}
}

var (
	testStoreKey2 = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
	testStoreKey3 = "IB8eHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE="
	testStoreKey4 = "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA="
)
