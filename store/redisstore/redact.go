package redisstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// shown is Config as it may be shown: every setting but the logger, with
// each secret replaced (see Config.shown). Both the redacted form (String,
// MarshalJSON, MarshalLogObject) and Identity are this view.
type shown struct {
	Addresses     []string `json:"addresses"`
	MasterName    string   `json:"master_name,omitempty"`
	Username      string   `json:"username,omitempty"`
	Password      string   `json:"password,omitempty"`
	DB            int      `json:"db,omitempty"`
	TLS           bool     `json:"tls,omitempty"`
	KeyPrefix     string   `json:"key_prefix,omitempty"`
	EncryptionKey string   `json:"encryption_key"`
	// PreviousEncryptionKeys stands for all of them at once, in order.
	PreviousEncryptionKeys string `json:"previous_encryption_keys,omitempty"`
	Realm                  string `json:"realm,omitempty"`
}

// shown returns c with each secret replaced by hide's result: the password,
// the encryption key, and the previous encryption keys (as the
// concatenation of their SHA-256s, in order; left out when there are none).
func (c Config) shown(hide func(secret []byte) string) shown {
	s := shown{
		Addresses: c.Addresses, MasterName: c.MasterName, Username: c.Username,
		Password: hide([]byte(c.Password)), DB: c.DB, TLS: c.TLS, KeyPrefix: c.KeyPrefix,
		EncryptionKey: hide(c.EncryptionKey), Realm: c.Realm,
	}
	if len(c.PreviousEncryptionKeys) > 0 {
		var sums bytes.Buffer
		for _, k := range c.PreviousEncryptionKeys {
			sum := sha256.Sum256(k)
			sums.Write(sum[:])
		}
		s.PreviousEncryptionKeys = hide(sums.Bytes())
	}
	return s
}

// redacted is c as it may be shown: each secret set is rebell.Redacted.
func (c Config) redacted() shown {
	return c.shown(func(secret []byte) string {
		if len(secret) == 0 {
			return ""
		}
		return rebell.Redacted
	})
}

// Identity is a Config as a comparable value: two Configs with the same
// Identity make Stores of the same sessions (the same Redis, prefix, keys
// and realm). Secrets enter it as their SHA-256. It is meant to be
// compared (the gateway keys its pool of caches with it), not shown. The
// zero Identity is that of no Config.
type Identity struct{ v string }

// Identity returns c's Identity.
func (c Config) Identity() Identity {
	// Strings, ints and bools always encode.
	j, _ := json.Marshal(c.shown(func(secret []byte) string {
		sum := sha256.Sum256(secret)
		return hex.EncodeToString(sum[:])
	}))
	return Identity{string(j)}
}

// String shows the Config without its password and encryption keys.
func (c Config) String() string { return fmt.Sprintf("%+v", c.redacted()) }

// GoString is String, so %#v does not show the secrets either.
func (c Config) GoString() string { return c.String() }

// Format writes String for every verb.
func (c Config) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// MarshalJSON encodes the Config without its password and encryption keys.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.redacted()) }

// MarshalLogObject logs the Config without its password and encryption
// keys.
func (c Config) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	r := c.redacted()
	enc.AddString("addresses", fmt.Sprint(r.Addresses))
	enc.AddString("master_name", r.MasterName)
	enc.AddString("username", r.Username)
	enc.AddString("password", r.Password)
	enc.AddInt("db", r.DB)
	enc.AddBool("tls", r.TLS)
	enc.AddString("key_prefix", r.KeyPrefix)
	enc.AddString("encryption_key", r.EncryptionKey)
	return nil
}
