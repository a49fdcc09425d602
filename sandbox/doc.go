// Package sandbox is a strict emulator of Rebell's OpenAPI applyToken and
// cancelToken calls
// (docs/contract.md, docs/protocol.md), served by a plain http.Handler. It is used for
// the demo, local development and the gateway's tests.
//
// Routes are matched on the end of the request path, so the handler works
// under any path prefix:
//
//	POST   .../v1/authorizations/applyToken   applyToken, v1 body
//	POST   .../v2/authorizations/applyToken   applyToken, v2 body
//	POST   .../v1/authorizations/cancelToken  cancelToken (revokes the authorization)
//	POST   .../sandbox/authcode                issue an auth code (my.getAuthCode)
//	POST   .../sandbox/faults                  queue injected failures
//	DELETE .../sandbox/faults                  clear them
//	GET    .../sandbox/stats                   call counters
//	DELETE .../sandbox/stats                   reset the counters
//	GET    .../sandbox/public-key              PEM of the response-signing key
//
// The package does not import Caddy and runs no goroutines: expired state is
// purged lazily while requests are served.
package sandbox
