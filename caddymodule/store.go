package caddymodule

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/session"
	"github.com/rebell-gateway/caddy-rebell/store/redisstore"
)

// StoreConfig selects the shared session store that lets several Caddy
// instances serve the same sessions (docs/sessions.md). Without it, sessions live in
// this instance's memory only.
type StoreConfig struct {
	// Redis (or Valkey) as the record of truth of every session: standalone,
	// Sentinel or Cluster. Each instance keeps its own in-memory copy, so a
	// request whose session it already holds costs no Redis round trip.
	Redis *RedisStore `json:"redis,omitempty"`
}

// RedisStore configures the Redis store. Sessions are sealed with
// AES-256-GCM before they are written, logouts and ended sessions are
// announced to every instance on a Redis channel, and a refresh takes a
// lease in Redis, so exactly one instance calls Rebell for it. When Redis
// is down, sessions already held in memory are served while their access
// token is valid; logins and sessions not in memory get 503
// store_unavailable. Caddy starts even when Redis is unreachable and
// reconnects by itself.
type RedisStore struct {
	// Addresses as host:port: one for a standalone server, several for a
	// Redis Cluster (any of its nodes), or the Sentinels' when master_name
	// is set. An entry may hold several addresses separated by commas or
	// spaces, e.g. {env.REDIS_ADDRESSES}. Required.
	Address []string `json:"address,omitempty"`

	// The name of the master the Sentinels at address monitor. Setting it
	// selects Sentinel.
	MasterName string `json:"master_name,omitempty"`

	// Username for Redis ACL authentication (Redis 6 and later).
	Username string `json:"username,omitempty"`

	// Password for Redis (ACL or requirepass), e.g. {env.REDIS_PASSWORD}.
	Password string `json:"password,omitempty"`

	// Database number. Standalone and Sentinel only: a Cluster has only
	// database 0. Default: 0.
	DB int `json:"db,omitempty"`

	// Connect to Redis with TLS, verifying its certificate against the
	// system's roots.
	TLS bool `json:"tls,omitempty"`

	// Starts the name of every key the gateway writes, so several gateways
	// (or other applications) can share one Redis. Default: "rebell:".
	KeyPrefix string `json:"key_prefix,omitempty"`

	// The key that seals sessions at rest: 32 random bytes in base64 (e.g.
	// the output of `openssl rand -base64 32`), the same on every instance,
	// usually {env.REBELL_STORE_KEY} or {file./path}. Changing it alone
	// ends every session; change it with previous_encryption_keys, as
	// docs/key-rotation.md says. Required.
	EncryptionKey string `json:"encryption_key,omitempty"`

	// Earlier (or, during the first step of a rotation, upcoming) encryption
	// keys, in the same format, at most 8: records sealed with them are
	// still read, and everything is written with encryption_key, so a
	// rolling change of encryption_key ends no session
	// (docs/key-rotation.md).
	PreviousEncryptionKeys []string `json:"previous_encryption_keys,omitempty"`
}

// provisionStore replaces placeholders in the store settings, applies their
// defaults and checks them. It returns the configuration of the Redis store
// (without its logger), or nil when there is no shared store.
func (a *Auth) provisionStore(repl *caddy.Replacer) (*redisstore.Config, error) {
	if a.Store == nil {
		return nil, nil
	}
	rs := a.Store.Redis
	if rs == nil {
		return nil, errors.New("store: no store type set (redis is the only one)")
	}
	var addrs []string
	for _, entry := range rs.Address {
		entry = repl.ReplaceKnown(entry, "")
		addrs = append(addrs, splitList(entry)...)
	}
	rs.Address = addrs
	for _, f := range []*string{&rs.MasterName, &rs.Username, &rs.Password, &rs.KeyPrefix, &rs.EncryptionKey} {
		*f = strings.TrimSpace(repl.ReplaceKnown(*f, ""))
	}
	if rs.KeyPrefix == "" {
		rs.KeyPrefix = redisstore.DefaultKeyPrefix
	}
	key, err := decodeEncryptionKey(rs.EncryptionKey)
	if err != nil {
		return nil, err
	}
	previous, err := decodePreviousKeys(repl, rs.PreviousEncryptionKeys)
	if err != nil {
		return nil, err
	}
	cfg := &redisstore.Config{
		Addresses:     addrs,
		MasterName:    rs.MasterName,
		Username:      rs.Username,
		Password:      rs.Password,
		DB:            rs.DB,
		TLS:           rs.TLS,
		KeyPrefix:     rs.KeyPrefix,
		EncryptionKey: key,
		// They verify session ids too (sessionKeys).
		PreviousEncryptionKeys: previous,
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	routeRedisLogs()
	return cfg, nil
}

// redisLogOnce routes go-redis's own log lines (dial failures, pool trouble),
// which it prints to stderr through a package-level logger, into Caddy's
// log at DEBUG: the store itself reports an outage at WARN once.
var redisLogOnce sync.Once

func routeRedisLogs() {
	redisLogOnce.Do(func() {
		redis.SetLogger(redisLogger{})
	})
}

// redisLogger writes to Caddy's default logger as it is when a line is
// written: the logging config may change on reload after the logger is set.
type redisLogger struct{}

// Printf implements go-redis's logging interface.
func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := caddy.Log().Named("http.handlers.rebell_auth.redis").Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}

// decodeEncryptionKey decodes encryption_key: standard or URL base64, padded
// or not, of exactly 32 bytes. Its errors never contain the value.
func decodeEncryptionKey(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("store: encryption_key: required (32 random bytes in base64, e.g. from `openssl rand -base64 32`)")
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(s); err == nil {
			if len(key) != 32 {
				return nil, fmt.Errorf("store: encryption_key: must be 32 bytes of base64 (got %d bytes)", len(key))
			}
			return key, nil
		}
	}
	return nil, errors.New("store: encryption_key: must be 32 bytes of base64 (it is not valid base64)")
}

// decodePreviousKeys resolves placeholders in previous_encryption_keys and
// decodes each as encryption_key is decoded. An entry may hold several keys
// separated by commas or blanks (e.g. {env.REBELL_STORE_OLD_KEYS}). Errors
// name the entry and never contain a key.
func decodePreviousKeys(repl *caddy.Replacer, entries []string) ([][]byte, error) {
	var keys [][]byte
	for _, entry := range entries {
		entry = repl.ReplaceKnown(entry, "")
		for _, s := range splitList(entry) {
			key, err := decodeEncryptionKey(s)
			if err != nil {
				return nil, fmt.Errorf("store: previous_encryption_keys: entry %d: %s", len(keys)+1,
					strings.TrimPrefix(err.Error(), "store: encryption_key: "))
			}
			keys = append(keys, key)
		}
	}
	return keys, nil // their number is checked by redisstore.Config.Validate
}

// splitList splits a configured list of values separated by commas or
// blanks.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
}

// newStore builds the Redis store of cfg; it does not connect.
func newStore(cfg *redisstore.Config, logger *zap.Logger) (*redisstore.Store, error) {
	c := *cfg
	c.Logger = logger
	st, err := redisstore.New(c)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return st, nil
}

// sessionKeys returns the keys that tag session ids: with a shared store,
// derived from its encryption key and realm, so every instance accepts the
// ids of every other (the first signs, all verify); without one, nil (the
// cache draws a random key and keeps it across reloads).
func sessionKeys(cfg *redisstore.Config) ([][]byte, error) {
	if cfg == nil {
		return nil, nil
	}
	// The current key signs new ids; ids signed under a previous
	// encryption_key keep verifying during a rotation (docs/key-rotation.md).
	keys := make([][]byte, 0, 1+len(cfg.PreviousEncryptionKeys))
	for _, ek := range append([][]byte{cfg.EncryptionKey}, cfg.PreviousEncryptionKeys...) {
		k, err := session.DeriveKey(ek, cfg.Realm)
		if err != nil {
			return nil, fmt.Errorf("store: session key: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
