package rebell

import (
	"crypto/rand"
	"crypto/rsa"
	"sync"
	"testing"
)

var (
	keysOnce sync.Once
	testKeys [3]*rsa.PrivateKey
)

// testKey returns one of three 2048-bit keys generated once per test binary.
func testKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	keysOnce.Do(func() {
		for j := range testKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			testKeys[j] = k
		}
	})
	return testKeys[i]
}
