package redisstore

import (
	"encoding/json"
	"fmt"
	"io"

	"go.uber.org/zap/zapcore"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// redacted is Config as it may be shown: the password and the encryption
// key replaced.
type redacted struct {
	Addresses     []string `json:"addresses"`
	MasterName    string   `json:"master_name,omitempty"`
	Username      string   `json:"username,omitempty"`
	Password      string   `json:"password,omitempty"`
	DB            int      `json:"db,omitempty"`
	TLS           bool     `json:"tls,omitempty"`
	KeyPrefix     string   `json:"key_prefix,omitempty"`
	EncryptionKey string   `json:"encryption_key"`
	Realm         string   `json:"realm,omitempty"`
}

func (c Config) redacted() redacted {
	r := redacted{
		Addresses: c.Addresses, MasterName: c.MasterName, Username: c.Username, DB: c.DB, TLS: c.TLS,
		KeyPrefix: c.KeyPrefix, EncryptionKey: rebell.Redacted, Realm: c.Realm,
	}
	if c.Password != "" {
		r.Password = rebell.Redacted
	}
	return r
}

// String shows the Config without its password and encryption key.
func (c Config) String() string { return fmt.Sprintf("%+v", c.redacted()) }

// GoString is String, so %#v does not show the secrets either.
func (c Config) GoString() string { return c.String() }

// Format writes String for every verb.
func (c Config) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// MarshalJSON encodes the Config without its password and encryption key.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.redacted()) }

// MarshalLogObject logs the Config without its password and encryption key.
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
