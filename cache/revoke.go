package cache

import (
	"context"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// Reasons given to Config.Revoke: the ends the gateway decides
// (docs/contract.md, revoke).
const (
	RevokeLogout   = "logout"
	RevokeCustomer = "customer"
	RevokeEvicted  = "evicted"
)

// revokeState hands the tokens of st, a session this cache just ended for
// reason, to Config.Revoke.
func (s *settings) revokeState(ctx context.Context, st *tokenState, reason string) {
	if s.revoke == nil || st == nil {
		return
	}
	s.revoke(ctx, session.Cancel{
		AccessToken:        st.grant.AccessToken,
		AccessTokenExpiry:  st.grant.AccessTokenExpiry,
		RefreshToken:       st.refreshToken,
		RefreshTokenExpiry: st.grant.SessionExpiry,
	}, reason)
}

// revokeRecord hands the tokens of rec, a record whose end this cache just
// stored, to Config.Revoke.
func (s *settings) revokeRecord(ctx context.Context, rec *session.Record, reason string) {
	if s.revoke == nil || rec == nil {
		return
	}
	s.revoke(ctx, session.Cancel{
		AccessToken:        rec.AccessToken,
		AccessTokenExpiry:  rec.AccessTokenExpiry,
		RefreshToken:       rec.RefreshToken,
		RefreshTokenExpiry: rec.RefreshTokenExpiry,
	}, reason)
}

// memoryOnlyBack reports whether memory is the sessions' only home (no
// shared store): then ending the copy ends the session, and this cache
// hands its tokens to Config.Revoke itself.
func (c *Cache) memoryOnlyBack() bool {
	_, ok := c.back.(*memoryOnly)
	return ok
}
