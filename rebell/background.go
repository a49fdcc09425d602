package rebell

import "context"

type backgroundKey struct{}

// WithBackground marks the calls a TokenExchanger makes with ctx as
// background work (a refresh-ahead call that no request waits on). An
// exchanger that limits the calls to Rebell (the gateway's guard,
// docs/rebell-calls.md) never lets them wait for a slot, and lets them
// yield to the logins and refreshes that a request waits on.
func WithBackground(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// IsBackground reports whether ctx was marked by WithBackground.
func IsBackground(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}
