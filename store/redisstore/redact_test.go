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
