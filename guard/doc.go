// Package guard protects Rebell's applyToken from the gateway and the
// gateway from a failing Rebell: it bounds the calls in flight toward one
// endpoint and client id, lets logins and refreshes that are needed now go
// before background refresh-ahead calls, and runs one circuit breaker that
// stops calling while Rebell keeps failing and lets one real call probe it
// when the open period ends (docs/rebell-calls.md). Cancels of ended
// sessions (cancelToken) pass as quiet background work: only while the
// breaker is closed, never waiting, never the probe, their outcomes not
// counted.
//
// It does not import Caddy: the Caddy glue keeps one Guard per endpoint and
// client id across config reloads and wraps the cache's TokenExchanger with
// NewExchanger.
package guard
