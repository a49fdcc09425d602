// Package onboard does the merchant's set-up chores behind the `caddy rebell`
// commands: generating the merchant key pair in the forms the gateway and
// Rebell's console want (keygen), and probing a configured Rebell endpoint
// with one signed applyToken call to say in plain words whether the client
// id, keys, key version and clock are right (check).
//
// The package does not import Caddy; the commands are registered in
// caddymodule.
package onboard
