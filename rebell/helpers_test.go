package rebell

import (
	"crypto/rsa"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
)

// testKey returns one of the shared test keys.
func testKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	return testkeys.RSA(i)
}
