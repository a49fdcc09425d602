// Package cache keeps the gateway's sessions: who each opaque session id acts
// for and the Rebell tokens it acts with. It applies the freshness rules of
// docs/freshness.md (refresh-ahead, blocking refresh, one refresh in flight
// per session, idle timeout, ending a session whose refresh token is dead)
// with an injected clock, deduplicates logins, and holds sessions in a
// memory tier with a store's semantics (docs/sessions.md), optionally
// behind a shared store (package session's Store).
//
// It imports nothing from Caddy.
package cache
