// Package testkeys hands tests 2048-bit RSA keys generated once per test
// binary (key generation is slow). No key is ever committed.
package testkeys

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"sync"
)

// N is how many distinct keys RSA hands out.
const N = 4

var (
	once sync.Once
	keys [N]*rsa.PrivateKey
)

// RSA returns the i-th test key (0 ≤ i < N), generating all of them on first
// use.
func RSA(i int) *rsa.PrivateKey {
	if i < 0 || i >= N {
		panic(fmt.Sprintf("testkeys: key %d out of range [0,%d)", i, N))
	}
	once.Do(func() {
		var wg sync.WaitGroup
		for j := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					panic(err)
				}
				keys[j] = k
			}()
		}
		wg.Wait()
	})
	return keys[i]
}
