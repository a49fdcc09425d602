// Package handler is the gateway's HTTP behaviour (docs/contract.md) on
// plain net/http: the login and logout endpoints, reading the session
// credential, header hygiene, injecting the upstream identity headers and
// the JSON errors the Mini App sees.
//
// It talks to the token cache through the Sessions interface and hands
// identity to its host (the Caddy glue) through callbacks, so it imports
// nothing from Caddy.
//
// Error responses that mean "try again later" (503 rebell_unavailable and
// store_unavailable) carry Retry-After: 5. Rebell has already been retried
// with backoff by then, and a shared store that is down reconnects by
// itself; five seconds keeps a Mini App from hammering either while letting
// it recover quickly. An error that carries its own delay (a
// RetryAfter() time.Duration method, as the refusals of the circuit breaker
// toward Rebell have: docs/rebell-calls.md) sets the value instead.
//
// Before a login's body is read, it may be refused without spending its
// code: 403 cross_site_request when the session cookie is on and a browser
// sent it from another site (crosssite.go), and 429 too_many_logins, with
// Retry-After set to the seconds until the address's next login, when its
// client address is over the login rate (loginrate.go).
package handler
