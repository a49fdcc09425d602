package guard

import (
	"context"
	"errors"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Exchanger is a rebell.TokenExchanger that asks a Guard before each call
// and reports the call's outcome to it. A refused call returns a *Refusal
// and sends nothing to Rebell. Whatever the breaker decides meanwhile, a
// call that was let through runs to its end and its result is returned:
// a refresh token sent to Rebell is never thrown away by the Guard.
//
// It is also a rebell.TokenCanceller when next is one (see CancelToken).
type Exchanger struct {
	next   rebell.TokenExchanger
	cancel rebell.TokenCanceller // next, if it cancels; else nil
	guard  *Guard
}

// NewExchanger returns next guarded by g.
func NewExchanger(next rebell.TokenExchanger, g *Guard) *Exchanger {
	c, _ := next.(rebell.TokenCanceller)
	return &Exchanger{next: next, cancel: c, guard: g}
}

// CancelToken calls the wrapped CancelToken as background work that the
// breaker does not hear (Guard.AcquireQuiet): it runs only while the
// breaker is closed, never waits for a slot or takes one a waiting request
// needs, never is the half-open probe, and its outcome is not counted, so
// cancels neither open the breaker on their own nor keep it closed
// (docs/rebell-calls.md). A refusal is a *Refusal; the caller retries
// later. It fails with KindConfiguration when next does not cancel.
func (x *Exchanger) CancelToken(ctx context.Context, accessToken rebell.Secret) error {
	if x.cancel == nil {
		return &rebell.Error{Op: rebell.OpCancelToken, Kind: rebell.KindConfiguration, Err: errors.New("the exchanger cannot cancel tokens")}
	}
	t, err := x.guard.AcquireQuiet()
	if err != nil {
		return err
	}
	defer x.guard.Release(t, Abandoned)
	return x.cancel.CancelToken(ctx, accessToken)
}

// ExchangeAuthCode calls the wrapped ExchangeAuthCode if g admits it.
func (x *Exchanger) ExchangeAuthCode(ctx context.Context, authCode rebell.Secret) (tok *rebell.Token, err error) {
	t, err := x.guard.Acquire(ctx, rebell.IsBackground(ctx))
	if err != nil {
		return nil, err
	}
	// Released however the call ends: a panic must not keep the slot (or
	// the probe) for good.
	defer func() { x.guard.Release(t, OutcomeOf(ctx, err)) }()
	return x.next.ExchangeAuthCode(ctx, authCode)
}

// Refresh calls the wrapped Refresh if g admits it.
func (x *Exchanger) Refresh(ctx context.Context, refreshToken rebell.Secret) (tok *rebell.Token, err error) {
	t, err := x.guard.Acquire(ctx, rebell.IsBackground(ctx))
	if err != nil {
		return nil, err
	}
	// Released however the call ends: a panic must not keep the slot (or
	// the probe) for good.
	defer func() { x.guard.Release(t, OutcomeOf(ctx, err)) }()
	return x.next.Refresh(ctx, refreshToken)
}

// OutcomeOf judges the result err of a call made with ctx: nil and every
// answer that is not a retryable failure are a Success; a retryable
// *rebell.Error is a Failure, unless ctx was cancelled (the gateway gave up,
// Rebell did not fail); any other error is Abandoned.
func OutcomeOf(ctx context.Context, err error) Outcome {
	if err == nil {
		return Success
	}
	var re *rebell.Error
	if !errors.As(err, &re) {
		return Abandoned
	}
	if re.Kind != rebell.KindRetryable {
		return Success
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return Abandoned
	}
	if errors.Is(err, context.DeadlineExceeded) || re.ResultCode == "" && re.HTTPStatus == 0 && isTimeout(err) {
		return Failure("timeout")
	}
	return Failure(rebell.MetricResult(err))
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
