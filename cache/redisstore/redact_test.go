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
