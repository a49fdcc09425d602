package redisstore

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/session"
)

func TestSealRoundTrip(t *testing.T) {
	s, err := newSealer(newKey(), "realm")
	if err != nil {
		t.Fatal(err)
	}
	ss := newSession("cust-1")
	sealed, err := s.sealRecord("rebell:{x}", ss.rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.openRecord("rebell:{x}", 1, sealed)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, got, ss.rec)

	for name, open := range map[string]func() error{
		"other key name": func() error { _, err := s.openRecord("rebell:{y}", 1, sealed); return err },
		"other version":  func() error { _, err := s.openRecord("rebell:{x}", 2, sealed); return err },
		"flipped byte": func() error {
			b := append([]byte(nil), sealed...)
			b[len(b)/2] ^= 1
			_, err := s.openRecord("rebell:{x}", 1, b)
			return err
		},
		"truncated": func() error { _, err := s.openRecord("rebell:{x}", 1, sealed[:10]); return err },
		"wrong key": func() error {
			o, _ := newSealer(newKey(), "realm")
			_, err := o.openRecord("rebell:{x}", 1, sealed)
			return err
		},
		"other realm": func() error {
			o := &sealer{aead: s.aead, realm: "another merchant"}
			_, err := o.openRecord("rebell:{x}", 1, sealed)
			return err
		},
	} {
		if err := open(); !errors.Is(err, session.ErrRecordCorrupt) {
			t.Errorf("%s: %v, want ErrRecordCorrupt", name, err)
		}
	}

	// Two seals of one value differ (random nonce).
	again, _ := s.sealRecord("rebell:{x}", ss.rec)
	if string(again) == string(sealed) {
		t.Error("two seals are equal")
	}
}

func TestParseMessage(t *testing.T) {
	_, k := session.RandomIDs().New()
	for _, tc := range []struct {
		msg  string
		want session.Event
		ok   bool
	}{
		{endedMessage(k), session.Event{Kind: session.EventEnded, Key: k}, true},
		{updatedMessage(k, 7), session.Event{Kind: session.EventUpdated, Key: k, Version: 7}, true},
		{"u:" + endedMessage(k)[2:], session.Event{Kind: session.EventUpdated, Key: k}, true},
		{"x:" + endedMessage(k)[2:], session.Event{}, false},
		{"e:abc", session.Event{}, false},
		{"e:" + strings.Repeat("zz", 32), session.Event{}, false},
		{updatedMessage(k, 7) + "x", session.Event{}, false},
		{"", session.Event{}, false},
	} {
		got, ok := parseMessage(tc.msg)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseMessage(%q) = %v %v, want %v %v", tc.msg, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNewValidates(t *testing.T) {
	key := newKey()
	const pw = "hunter2-very-secret"
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{EncryptionKey: key}, "address"},
		{Config{Addresses: []string{"redis://u:" + pw + "@h:1"}, EncryptionKey: key, Password: pw}, "address"},
		{Config{Addresses: []string{"h"}, EncryptionKey: key}, "address"},
		{Config{Addresses: []string{"h:0"}, EncryptionKey: key}, "address"},
		{Config{Addresses: []string{"h:1"}, EncryptionKey: key[:16], Password: pw}, "encryption_key"},
		{Config{Addresses: []string{"h:1"}, EncryptionKey: key, DB: -1}, "db"},
		{Config{Addresses: []string{"h:1", "h:2"}, EncryptionKey: key, DB: 1}, "db"},
		{Config{Addresses: []string{"h:1"}, EncryptionKey: key, KeyPrefix: "a{b}:"}, "key_prefix"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error about %s", err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), string(key[:16])) {
			t.Errorf("error reveals a secret: %v", err)
		}
	}

	// Valid configurations do not connect (nothing listens on port 1).
	for _, cfg := range []Config{
		{Addresses: []string{"127.0.0.1:1"}, EncryptionKey: key, DB: 3, Password: pw, TLS: true},
		{Addresses: []string{"127.0.0.1:1", "127.0.0.1:2"}, EncryptionKey: key},
		{Addresses: []string{"127.0.0.1:1"}, MasterName: "m", EncryptionKey: key, DB: 2},
	} {
		s, err := New(cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if s.keys.prefix != DefaultKeyPrefix {
			t.Errorf("prefix %q", s.keys.prefix)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
}

func TestDownFailsFast(t *testing.T) {
	s, err := New(Config{Addresses: []string{"127.0.0.1:1"}, EncryptionKey: newKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, k := session.RandomIDs().New()
	if _, err := s.Load(context.Background(), k, timeZero, 0); err == nil {
		t.Fatal("Load on a down Redis succeeded")
	}
}
