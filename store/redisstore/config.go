package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// Config configures a Store.
type Config struct {
	// Addresses of Redis: one (standalone), several (Cluster), or the
	// Sentinels' when MasterName is set.
	Addresses []string
	// MasterName selects Sentinel: the name of the monitored master.
	MasterName string
	// Username and Password authenticate to Redis (ACL or requirepass). They
	// are not sent to the Sentinels themselves.
	Username string
	Password string
	// DB is the database number (standalone and Sentinel only).
	DB int
	// TLS connects with TLS (1.2 or later), verifying the server's
	// certificate against the host of the first address.
	TLS bool
	// KeyPrefix starts every key name. "" means "rebell:". It must not
	// contain '{' or '}', which would move the Cluster hash tag.
	KeyPrefix string
	// EncryptionKey is the AES-256-GCM key (32 bytes) that seals records.
	EncryptionKey []byte
	// PreviousEncryptionKeys are earlier EncryptionKeys (32 bytes each),
	// newest first: values sealed with them still open, and customer
	// indexes named with them are still read, but everything is written
	// with EncryptionKey. Keeping the old key here while the instances
	// change keys one by one ends no session (docs/key-rotation.md). The
	// host also uses them to accept session ids tagged under an old key:
	// an id never changes, so removing a key ends every session whose id
	// was made under it, whatever its record is sealed with now.
	PreviousEncryptionKeys [][]byte
	// Realm names whose sessions these are (the gateway uses the Rebell
	// endpoint and client id). It is part of every sealed value's associated
	// data: a record written under another realm does not open, so two
	// gateways for different merchants sharing a Redis, a key prefix and a
	// key cannot use each other's sessions.
	Realm string
	// Logger receives connection trouble. nil means none.
	Logger *zap.Logger
}

// MaxPreviousEncryptionKeys bounds Config.PreviousEncryptionKeys: each is
// tried on a value the current key does not open.
const MaxPreviousEncryptionKeys = 8

// DefaultKeyPrefix is the KeyPrefix used when Config.KeyPrefix is "".
const DefaultKeyPrefix = "rebell:"

// Client timeouts: short, so that a request fails fast while Redis is down
// (the Cache then serves from memory what it can).
const (
	dialTimeout  = 2 * time.Second
	readTimeout  = time.Second
	writeTimeout = time.Second
	poolTimeout  = 2 * time.Second
	maxRetries   = 1
)

// Store is a session.Store on Redis. It is safe for concurrent use.
type Store struct {
	client redis.UniversalClient
	log    *zap.Logger
	seal   *sealer
	keys   keys
	health health

	// Listen's goroutine.
	listenOnce     sync.Once
	healthInterval time.Duration // idle time before the subscription is PINGed
	retryMax       time.Duration // longest wait between subscription attempts
	epochEvery     time.Duration // how often a subscribed Store checks (and renews) the epoch marker

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	mu        sync.Mutex
	closed    bool
	listenWG  sync.WaitGroup
	pubsub    *redis.PubSub // the current subscription, closed by Close
	epoch     string        // the epoch seen at the last subscription; Listen's goroutine only
	droppedAt time.Time     // when the last confirmed subscription ended; Listen's goroutine only
}

var _ session.Store = (*Store)(nil)

// New validates cfg and returns a Store. It does not connect: Redis may be
// down when the gateway starts. Its errors name the faulty setting and never
// contain the password or the key.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	opts := clientOptions(&cfg)
	prefix := cfg.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	s, err := newSealer(cfg.EncryptionKey, cfg.Realm, cfg.PreviousEncryptionKeys...)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	st := &Store{
		client:         redis.NewUniversalClient(opts),
		log:            log,
		seal:           s,
		keys:           newKeys(prefix, cfg.EncryptionKey, cfg.PreviousEncryptionKeys...),
		health:         health{log: log},
		healthInterval: 3 * time.Second,
		retryMax:       time.Second,
		epochEvery:     time.Minute,
	}
	st.ctx, st.cancel = context.WithCancel(context.Background())
	return st, nil
}

// Validate checks cfg as New would. Its errors start with the name of the
// faulty setting in the Caddyfile's words ("address: ...") and never
// contain the password, the key or an address (a URL written by mistake may
// carry a password).
func (cfg *Config) Validate() error {
	if len(cfg.Addresses) == 0 {
		return errors.New("address: required")
	}
	for i, addr := range cfg.Addresses {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("address: entry %d is not host:port (write host:port, not a URL)", i+1)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("address: entry %d has no valid port", i+1)
		}
	}
	if cfg.DB < 0 {
		return fmt.Errorf("db: %d is negative", cfg.DB)
	}
	if cfg.DB != 0 && len(cfg.Addresses) > 1 && cfg.MasterName == "" {
		return errors.New("db: a Redis Cluster (several addresses without master_name) has only database 0")
	}
	if strings.ContainsAny(cfg.KeyPrefix, "{}") {
		return errors.New("key_prefix: must not contain '{' or '}' (they mark Redis Cluster hash tags)")
	}
	if len(cfg.EncryptionKey) != 32 {
		return fmt.Errorf("encryption_key: must be 32 bytes (got %d)", len(cfg.EncryptionKey))
	}
	if len(cfg.PreviousEncryptionKeys) > MaxPreviousEncryptionKeys {
		return fmt.Errorf("previous_encryption_keys: %d keys, at most %d", len(cfg.PreviousEncryptionKeys), MaxPreviousEncryptionKeys)
	}
	for i, k := range cfg.PreviousEncryptionKeys {
		if len(k) != 32 {
			return fmt.Errorf("previous_encryption_keys: entry %d must be 32 bytes (got %d)", i+1, len(k))
		}
	}
	return nil
}

// clientOptions turns the connection settings of cfg, validated, into
// go-redis options: one address is a standalone server, several a Cluster,
// and MasterName selects Sentinel.
func clientOptions(cfg *Config) *redis.UniversalOptions {
	opts := &redis.UniversalOptions{
		Addrs:                 append([]string(nil), cfg.Addresses...),
		MasterName:            cfg.MasterName,
		Username:              cfg.Username,
		Password:              cfg.Password,
		DB:                    cfg.DB,
		DialTimeout:           dialTimeout,
		DialerRetries:         1,
		ReadTimeout:           readTimeout,
		WriteTimeout:          writeTimeout,
		PoolTimeout:           poolTimeout,
		MaxRetries:            maxRetries,
		ContextTimeoutEnabled: true,
	}
	if cfg.TLS {
		host, _, _ := net.SplitHostPort(cfg.Addresses[0])
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	}
	return opts
}
