package sandbox

import "crypto/rand"

const (
	alphanumeric = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	digits       = "0123456789"
)

// newAuthCode returns 32 random alphanumeric characters.
func newAuthCode() string { return randomString(authCodeLen, alphanumeric) }

// newToken returns prefix followed by 40 random alphanumeric characters.
func newToken(prefix string) string { return prefix + randomString(tokenRandomLen, alphanumeric) }

// newCustomerID returns 16 random digits, the first not 0, like Rebell's
// numeric ids.
func newCustomerID() string {
	return randomString(1, digits[1:]) + randomString(customerIDLen-1, digits)
}

// randomString returns n characters drawn uniformly from alphabet (at most
// 256 characters) with crypto/rand, by rejection sampling.
func randomString(n int, alphabet string) string {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		_, _ = rand.Read(buf[:]) // never fails (it crashes the program instead)
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			out = append(out, alphabet[int(b)%len(alphabet)])
			if len(out) == n {
				break
			}
		}
	}
	return string(out)
}
