package redisstore

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestConfigRedacts: a Config printed, encoded or logged shows neither the
// password nor the encryption key, in any form.
func TestConfigRedacts(t *testing.T) {
	key := newKey()
	const pw = "s3cret-redis-password"
	cfg := Config{Addresses: []string{"10.0.0.5:6379"}, Username: "gw", Password: pw, EncryptionKey: key, KeyPrefix: "p:"}
	var logged bytes.Buffer
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logged), zap.DebugLevel))
	log.Info("cfg", zap.Object("cfg", cfg), zap.Any("any", cfg), zap.Stringer("s", cfg))
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outs := []string{
		fmt.Sprint(cfg), fmt.Sprintf("%v %+v %#v %s %q %x", cfg, cfg, cfg, cfg, cfg, cfg),
		fmt.Sprintf("%v", &cfg), fmt.Sprintf("%+v", struct{ C Config }{cfg}), string(j), logged.String(),
	}
	secrets := []string{pw, string(key), base64.StdEncoding.EncodeToString(key), fmt.Sprint(key), fmt.Sprintf("%x", key)}
	for _, out := range outs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Fatalf("a secret shows in %q", out)
			}
		}
		if !strings.Contains(out, "10.0.0.5:6379") {
			t.Fatalf("the address does not show in %q", out)
		}
	}
}

// Validate names the faulty setting without quoting an address, the
// password or the key.
func TestValidate(t *testing.T) {
	key := newKey()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{EncryptionKey: key}, "address: required"},
		{Config{Addresses: []string{"redis://user:hunter2@host:6379"}, EncryptionKey: key}, "address: entry 1 is not host:port"},
		{Config{Addresses: []string{"h:1", "h:99999"}, EncryptionKey: key}, "address: entry 2 has no valid port"},
		{Config{Addresses: []string{"h:1"}, DB: -1, EncryptionKey: key}, "db: -1 is negative"},
		{Config{Addresses: []string{"h:1", "h:2"}, DB: 1, EncryptionKey: key}, "db: a Redis Cluster"},
		{Config{Addresses: []string{"h:1"}, KeyPrefix: "{app}", EncryptionKey: key}, "key_prefix: must not contain"},
		{Config{Addresses: []string{"h:1"}, Password: "hunter2", EncryptionKey: key[:31]}, "encryption_key: must be 32 bytes (got 31)"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%v) = %v, want %q", tc.cfg, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error reveals the password: %v", err)
		}
		if _, err := New(tc.cfg); err == nil || !strings.HasPrefix(err.Error(), "redisstore: "+tc.want) {
			t.Errorf("New: %v, want the same error", err)
		}
	}
	ok := Config{Addresses: []string{"10.0.0.1:6379", "[::1]:6380"}, EncryptionKey: key}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestIdentity: Configs that differ in any setting (secrets included) have
// different Identities, equal ones the same, and an Identity holds no
// secret.
func TestIdentity(t *testing.T) {
	key, old := newKey(), newKey()
	const pw = "s3cret-redis-password"
	base := func() Config {
		return Config{Addresses: []string{"10.0.0.5:6379", "10.0.0.6:6379"}, MasterName: "m", Username: "gw", Password: pw,
			DB: 1, TLS: true, KeyPrefix: "p:", EncryptionKey: key, PreviousEncryptionKeys: [][]byte{old}, Realm: "r"}
	}
	id := base().Identity()
	if base().Identity() != id || id == (Identity{}) {
		t.Fatal("equal Configs have different Identities, or a zero one")
	}
	for name, change := range map[string]func(*Config){
		"addresses":                func(c *Config) { c.Addresses = []string{"10.0.0.6:6379", "10.0.0.5:6379"} },
		"master_name":              func(c *Config) { c.MasterName = "n" },
		"username":                 func(c *Config) { c.Username = "other" },
		"password":                 func(c *Config) { c.Password = "other" },
		"db":                       func(c *Config) { c.DB = 2 },
		"tls":                      func(c *Config) { c.TLS = false },
		"key_prefix":               func(c *Config) { c.KeyPrefix = "q:" },
		"encryption_key":           func(c *Config) { c.EncryptionKey = old },
		"previous_encryption_keys": func(c *Config) { c.PreviousEncryptionKeys = nil },
		"realm":                    func(c *Config) { c.Realm = "s" },
	} {
		c := base()
		change(&c)
		if c.Identity() == id {
			t.Errorf("a change of %s keeps the Identity", name)
		}
	}
	s := fmt.Sprintf("%#v", id)
	for _, secret := range []string{pw, string(key), base64.StdEncoding.EncodeToString(key), fmt.Sprintf("%x", key), fmt.Sprintf("%x", old)} {
		if strings.Contains(s, secret) {
			t.Fatalf("a secret shows in the Identity %q", s)
		}
	}
}
