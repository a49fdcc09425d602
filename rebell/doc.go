// Package rebell speaks Rebell's OpenAPI from the merchant's side: RSA key
// loading, request signing and response verification as docs/protocol.md decides,
// the applyToken call (v1 and v2, both grants) and the cancelToken call with
// retries, and a typed taxonomy of their results.
//
// It imports nothing from Caddy: the gateway's Caddy glue and the sandbox
// emulator both build on it.
package rebell
