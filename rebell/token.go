package rebell

import (
	"context"
	"time"
)

// Grant types of applyToken.
const (
	GrantAuthorizationCode = "AUTHORIZATION_CODE"
	GrantRefreshToken      = "REFRESH_TOKEN"
)

// Token is a successful applyToken result.
type Token struct {
	// CustomerID is the user the tokens act for.
	CustomerID string
	// AccessToken and its expiry.
	AccessToken       Secret
	AccessTokenExpiry time.Time
	// RefreshToken and its expiry; RefreshToken is zero when the response
	// carried none (callers keep the one they had).
	RefreshToken       Secret
	RefreshTokenExpiry time.Time
}

// TokenExchanger is what the gateway needs from Rebell: exchanging an auth
// code for tokens and refreshing them. *Client implements it; tests use fakes.
// Errors are *Error values (see Kind), except that an exchanger which limits
// the calls to Rebell (the gateway's guard, docs/rebell-calls.md) may refuse
// a call without sending it: its error then has a RetryAfter() time.Duration
// method, by which callers recognise it. Calls made with a context marked by
// WithBackground are background work.
type TokenExchanger interface {
	// ExchangeAuthCode calls applyToken with grantType AUTHORIZATION_CODE.
	ExchangeAuthCode(ctx context.Context, authCode Secret) (*Token, error)
	// Refresh calls applyToken with grantType REFRESH_TOKEN.
	Refresh(ctx context.Context, refreshToken Secret) (*Token, error)
}

// TokenCanceller ends an authorization at Rebell: cancelling its access
// token revokes the refresh token issued with it too (docs/protocol.md).
// *Client implements it; tests use fakes.
type TokenCanceller interface {
	// CancelToken calls cancelToken with accessToken. It returns nil when
	// Rebell answered SUCCESS, and otherwise an *Error: KindNothingToCancel
	// for INVALID_ACCESS_TOKEN and EXPIRED_ACCESS_TOKEN, KindRetryable for a
	// failure worth trying again, and the other kinds as for applyToken.
	CancelToken(ctx context.Context, accessToken Secret) error
}
