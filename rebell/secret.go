package rebell

import (
	"fmt"
	"io"
)

// Redacted is what a Secret prints instead of its value.
const Redacted = "[REDACTED]"

// Secret holds a credential (an access token, a refresh token, an auth code, a
// signature) that must never reach a log, an error string, a metric label or a
// response by accident. It prints as [REDACTED] through fmt (every verb),
// encoding/json, encoding.TextMarshaler and zap; only Reveal gives the value.
//
// The zero Secret is empty.
//
// The value sits behind a pointer: fmt cannot call String on a Secret held in
// an unexported struct field, and prints a nested pointer as an address, so
// even a struct that embeds a Secret privately does not print the value.
type Secret struct{ v *string }

// NewSecret wraps s.
func NewSecret(s string) Secret {
	if s == "" {
		return Secret{}
	}
	return Secret{v: &s}
}

// Reveal returns the secret's value. Call it only where the value goes on the
// wire or into a header for the upstream.
func (s Secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == nil }

// Len returns the length of the value in bytes.
func (s Secret) Len() int { return len(s.Reveal()) }

// Equal reports whether s and o hold the same value.
func (s Secret) Equal(o Secret) bool { return s.Reveal() == o.Reveal() }

// String implements fmt.Stringer and returns [REDACTED].
func (s Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer and returns [REDACTED].
func (s Secret) GoString() string { return Redacted }

// Format implements fmt.Formatter, so that no verb prints the value.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// MarshalText implements encoding.TextMarshaler and returns [REDACTED].
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// MarshalJSON implements json.Marshaler and returns "[REDACTED]".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }
