// Package revoke ends at Rebell the authorizations of sessions the gateway
// ended (docs/contract.md, revoke): it queues a cancel of the session's
// access token, durably in the shared store when there is one
// (session.PendingCancels), and works the queue in the background through
// the guarded client, refreshing first when the access token expired,
// retrying with capped backoff until Rebell answers for good or nothing is
// left to cancel. A lease lets one instance at a time work on a pending
// cancel; one that an instance left behind is finished by another.
//
// It does not import Caddy.
package revoke
