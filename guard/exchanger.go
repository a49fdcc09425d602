package guard

import (
	"context"
	"errors"
	"time"

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

// ExchangeAuthCode calls the wrapped ExchangeAuthCode if g admits it, as a
// login (ClassLogin) unless ctx is marked as background work
// (rebell.WithBackground).
func (x *Exchanger) ExchangeAuthCode(ctx context.Context, authCode rebell.Secret) (*rebell.Token, error) {
	return x.call(ctx, ClassLogin, func() (*rebell.Token, error) { return x.next.ExchangeAuthCode(ctx, authCode) })
}

// Refresh calls the wrapped Refresh if g admits it, as a refresh a request
// waits on (ClassRefresh) unless ctx is marked as background work.
func (x *Exchanger) Refresh(ctx context.Context, refreshToken rebell.Secret) (*rebell.Token, error) {
	return x.call(ctx, ClassRefresh, func() (*rebell.Token, error) { return x.next.Refresh(ctx, refreshToken) })
}

// call runs f as a call of class c if the guard admits it, and reports its
// outcome, judged by OutcomeOfCall.
func (x *Exchanger) call(ctx context.Context, c Class, f func() (*rebell.Token, error)) (tok *rebell.Token, err error) {
	if rebell.IsBackground(ctx) {
		c = ClassBackground
	}
	asked := x.guard.now()
	t, err := x.guard.AcquireAs(ctx, c)
	if err != nil {
		return nil, err
	}
	admitted := x.guard.now()
	// Released however the call ends: a panic must not keep the slot (or
	// the probe) for good.
	defer func() {
		x.guard.Release(t, OutcomeOfCall(ctx, err, admitted.Sub(asked), x.guard.now().Sub(admitted)))
	}()
	return f()
}

// OutcomeOfCall is OutcomeOf, told where the call's time went: waited is
// the time it waited for a slot, atRebell the time from its admission to
// its result. A timeout of the caller's own deadline (ctx ended) after a
// call that waited longer for its slot than it spent at Rebell is the
// gateway's queue, not Rebell, running out of time: it is Abandoned and
// does not count toward opening the breaker (docs/rebell-calls.md). A
// timeout of Rebell's own per-attempt deadline, or after a call that had
// most of its time at Rebell, stays a failure.
func OutcomeOfCall(ctx context.Context, err error, waited, atRebell time.Duration) Outcome {
	o := OutcomeOf(ctx, err)
	if o.kind == failed && o.class == "timeout" && ctx.Err() != nil && waited > atRebell {
		return Abandoned
	}
	return o
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
