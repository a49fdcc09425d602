package redisstore

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// keys names the Redis keys and the announcement channel.
//
//	<prefix>{<hex k>}          session record: hash v, d, u
//	<prefix>{<hex k>}:lease    its refresh lease (same slot)
//	<prefix>c:{<hex hmac>}     customer index: set of hex session keys
//	<prefix>l:{<hex hmac>}     login memo of an auth code
//	<prefix>events             announcements: e:<hex k>, u:<hex k>:<version>, q: (a pending cancel queued)
//
// Customer ids and auth codes are named by HMAC-SHA256 under indexKey (itself
// derived from the encryption key), since a plain hash of a guessable
// customer number would be reversible. An index is written under the
// current key's name and read and cleaned under every key's (previous keys
// of a rotation included).
type keys struct {
	prefix   string
	indexKey []byte
	// previousIndexKeys are derived from Config.PreviousEncryptionKeys.
	previousIndexKeys [][]byte
	channel           string
	// epoch names the store's epoch marker: a random value set when the
	// key is missing, so a Redis that lost its data shows a new epoch.
	epoch string
}

func newKeys(prefix string, encryptionKey []byte, previous ...[]byte) keys {
	ks := keys{prefix: prefix, indexKey: deriveIndexKey(encryptionKey), channel: prefix + "events", epoch: prefix + "epoch"}
	for _, k := range previous {
		ks.previousIndexKeys = append(ks.previousIndexKeys, deriveIndexKey(k))
	}
	return ks
}

func deriveIndexKey(encryptionKey []byte) []byte {
	m := hmac.New(sha256.New, encryptionKey)
	m.Write([]byte("caddy-rebell index key"))
	return m.Sum(nil)
}

// record is the key name of session k's record.
func (ks keys) record(k session.Key) string {
	return ks.prefix + "{" + hex.EncodeToString(k[:]) + "}"
}

// lease is the key name of session k's refresh lease.
func (ks keys) lease(k session.Key) string { return ks.record(k) + ":lease" }

// ended is the key name of session k's end mark (same hash slot).
func (ks keys) ended(k session.Key) string { return ks.record(k) + ":ended" }

// customer is the key name of customerID's index.
func (ks keys) customer(customerID string) string {
	return ks.prefix + "c:{" + ks.mac(customerID) + "}"
}

// previousCustomers are the key names customerID's index had under the
// previous encryption keys.
func (ks keys) previousCustomers(customerID string) []string {
	names := make([]string, 0, len(ks.previousIndexKeys))
	for _, k := range ks.previousIndexKeys {
		names = append(names, ks.prefix+"c:{"+macWith(k, customerID)+"}")
	}
	return names
}

// login is the key name of authCode's login memo.
func (ks keys) login(authCode string) string {
	return ks.prefix + "l:{" + ks.mac(authCode) + "}"
}

func (ks keys) mac(s string) string { return macWith(ks.indexKey, s) }

func macWith(key []byte, s string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))
}

// Announcements on the channel.
func endedMessage(k session.Key) string { return "e:" + hex.EncodeToString(k[:]) }

func updatedMessage(k session.Key, version uint64) string {
	return "u:" + hex.EncodeToString(k[:]) + ":" + strconv.FormatUint(version, 10)
}

// cancelQueuedMessage announces that a pending cancel was queued.
const cancelQueuedMessage = "q:"

// parseMessage reads an announcement: "q:", "e:<hex>", "u:<hex>" or
// "u:<hex>:<version>".
func parseMessage(msg string) (session.Event, bool) {
	if msg == cancelQueuedMessage {
		return session.Event{Kind: session.EventCancelQueued}, true
	}
	kind, rest, ok := strings.Cut(msg, ":")
	if !ok {
		return session.Event{}, false
	}
	var ev session.Event
	switch kind {
	case "e":
		ev.Kind = session.EventEnded
	case "u":
		ev.Kind = session.EventUpdated
		if h, v, ok := strings.Cut(rest, ":"); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return session.Event{}, false
			}
			rest, ev.Version = h, n
		}
	default:
		return session.Event{}, false
	}
	k, ok := parseKey(rest)
	if !ok {
		return session.Event{}, false
	}
	ev.Key = k
	return ev, true
}

// parseKey reads a session key in hex.
func parseKey(s string) (session.Key, bool) {
	var k session.Key
	if len(s) != 2*len(k) {
		return k, false
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, false
	}
	return k, true
}
