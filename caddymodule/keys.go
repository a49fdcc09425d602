package caddymodule

import (
	"crypto/rsa"
	"fmt"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// rebellPublicKeys loads every configured Rebell public key, files first,
// in the order given. Errors name the field (and, for a later key, its
// position) and never print a key.
func (a *Auth) rebellPublicKeys() ([]*rsa.PublicKey, error) {
	var pubs []*rsa.PublicKey
	load := func(field string, n int, v string, parse func(string) (*rsa.PublicKey, error)) error {
		if v == "" {
			if n > 0 {
				return fmt.Errorf("%s: entry %d is empty", field, n)
			}
			return nil
		}
		pub, err := parse(v)
		if err != nil {
			if n > 0 {
				return fmt.Errorf("%s: entry %d: %w", field, n, err)
			}
			return fmt.Errorf("%s: %w", field, err)
		}
		pubs = append(pubs, pub)
		return nil
	}
	readFile := rebell.ReadPublicKeyFile
	parse := func(v string) (*rsa.PublicKey, error) { return rebell.ParsePublicKey([]byte(v)) }
	if err := load("rebell_public_key_file", 0, a.RebellPublicKeyFile, readFile); err != nil {
		return nil, err
	}
	for i, f := range a.RebellPublicKeyFiles {
		if err := load("rebell_public_key_files", i+1, f, readFile); err != nil {
			return nil, err
		}
	}
	if err := load("rebell_public_key", 0, a.RebellPublicKey, parse); err != nil {
		return nil, err
	}
	for i, k := range a.RebellPublicKeys {
		if err := load("rebell_public_keys", i+1, k, parse); err != nil {
			return nil, err
		}
	}
	return pubs, nil
}
