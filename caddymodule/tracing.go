package caddymodule

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/rebell-gateway/caddy-rebell/guard"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// Tracing (docs/operations.md, "Tracing"). When Caddy's `tracing` directive
// runs before rebell_auth, a request's context carries a recording span; the
// calls toward Rebell and the shared-store round trips made for it become
// its child spans, from the tracer provider of that span (Caddy's tracing
// module sets up its own, not the global one). Without a recording span
// nothing is traced and nothing is allocated. Spans carry classes and codes,
// never a token, an auth code, a session id or a customer id.

// tracerName names the instrumentation scope of the spans.
const tracerName = "github.com/rebell-gateway/caddy-rebell"

// Span names.
const (
	spanApplyToken  = "rebell.applyToken"
	spanCancelToken = "rebell.cancelToken"
)

// Attribute keys of the spans.
const (
	attrGrantType    = attribute.Key("rebell.grant_type")
	attrResultStatus = attribute.Key("rebell.result_status")
	attrResultCode   = attribute.Key("rebell.result_code") // only when verified
	attrResult       = attribute.Key("rebell.result")
	attrVerified     = attribute.Key("rebell.verified")
	attrHTTPStatus   = attribute.Key("http.response.status_code")
	attrAttempt      = attribute.Key("rebell.attempt")
	attrAttempts     = attribute.Key("rebell.attempts")
	attrBreaker      = attribute.Key("rebell.breaker_state")
	attrSlotWait     = attribute.Key("rebell.slot_wait_seconds")
	attrRefused      = attribute.Key("rebell.refused")
	attrBackground   = attribute.Key("rebell.background")
	attrDBSystem     = attribute.Key("db.system.name")
	attrDBOperation  = attribute.Key("db.operation.name")
	attrFound        = attribute.Key("rebell.found")
	attrErrorType    = attribute.Key("error.type")
)

// requestLinkKey marks a context of work a request started but does not wait
// on (refresh-ahead): its Rebell call becomes a root span linked to the
// request's.
type requestLinkKey struct{}

type requestLink struct {
	sc trace.SpanContext
	tp trace.TracerProvider
}

// carrySpan gives work that a request starts in the cache's own goroutine
// (work) what it needs of the request's trace (from): the request's span as
// parent when the request waits for the work (a login, a refresh it needs
// now), or a link to it for background work (refresh-ahead). Without a
// recording span it returns work unchanged.
func carrySpan(from, work context.Context, background bool) context.Context {
	span := trace.SpanFromContext(from)
	if !span.IsRecording() {
		return work
	}
	if background {
		return context.WithValue(work, requestLinkKey{}, &requestLink{sc: span.SpanContext(), tp: span.TracerProvider()})
	}
	return trace.ContextWithSpan(work, span)
}

// carryLink is the revoker's Config.Carry: a request that queues a cancel
// (a logout, an admin end, an eviction) gives the cancel's work a link to
// its span and its tracer provider, and nothing else (not the request's
// context, which is cancelled after the response); the revoker keeps that
// and gives it, as from, to each try of the cancel, which then runs under
// a root span linked to the request. Without a recording span it returns
// work unchanged, and nothing is allocated.
func carryLink(from, work context.Context) context.Context {
	if l, ok := from.Value(requestLinkKey{}).(*requestLink); ok {
		return context.WithValue(work, requestLinkKey{}, l)
	}
	return carrySpan(from, work, true)
}

// tracer returns the tracer for a span started under ctx, and the options
// that make it a root span linked to a request for background work; ok is
// false when ctx is not traced.
func tracer(ctx context.Context) (t trace.Tracer, opts []trace.SpanStartOption, ok bool) {
	if parent := trace.SpanFromContext(ctx); parent.IsRecording() {
		return parent.TracerProvider().Tracer(tracerName), nil, true
	}
	if l, found := ctx.Value(requestLinkKey{}).(*requestLink); found {
		return l.tp.Tracer(tracerName), []trace.SpanStartOption{
			trace.WithNewRoot(),
			trace.WithLinks(trace.Link{SpanContext: l.sc}),
			trace.WithAttributes(attrBackground.Bool(true)),
		}, true
	}
	return nil, nil, false
}

// tracingExchanger puts a span around every applyToken call made under a
// traced context, including the wait for a slot of the guard it wraps.
type tracingExchanger struct {
	next    rebell.TokenExchanger // the guard's exchanger
	breaker func() guard.State
}

func (x *tracingExchanger) ExchangeAuthCode(ctx context.Context, code rebell.Secret) (*rebell.Token, error) {
	ctx, ct := x.start(ctx, rebell.GrantAuthorizationCode)
	if ct == nil {
		return x.next.ExchangeAuthCode(ctx, code)
	}
	tok, err := x.next.ExchangeAuthCode(ctx, code)
	ct.end(err)
	return tok, err
}

func (x *tracingExchanger) Refresh(ctx context.Context, rt rebell.Secret) (*rebell.Token, error) {
	ctx, ct := x.start(ctx, rebell.GrantRefreshToken)
	if ct == nil {
		return x.next.Refresh(ctx, rt)
	}
	tok, err := x.next.Refresh(ctx, rt)
	ct.end(err)
	return tok, err
}

// CancelToken puts a span rebell.cancelToken around a cancel worked under
// a traced context: in practice a root span linked to the request that
// queued it (carryLink), as the revoker works cancels in the background.
func (x *tracingExchanger) CancelToken(ctx context.Context, at rebell.Secret) error {
	next, ok := x.next.(rebell.TokenCanceller)
	if !ok {
		return &rebell.Error{Op: rebell.OpCancelToken, Kind: rebell.KindConfiguration, Err: errors.New("the exchanger cannot cancel tokens")}
	}
	ctx, ct := x.startSpan(ctx, spanCancelToken, "")
	if ct == nil {
		return next.CancelToken(ctx, at)
	}
	err := next.CancelToken(ctx, at)
	ct.end(err)
	return err
}

// callTraceKey carries the *callTrace of a traced call to the hooks below.
type callTraceKey struct{}

// callTrace is the span of one call toward Rebell and what the hooks learned
// about it. The call's attempts run one after the other, in one goroutine.
type callTrace struct {
	span     trace.Span
	start    time.Time
	admitted time.Time // when the guard let the call through
	attempts int
	last     rebell.AttemptInfo
}

func (x *tracingExchanger) start(ctx context.Context, grantType string) (context.Context, *callTrace) {
	return x.startSpan(ctx, spanApplyToken, grantType)
}

// startSpan starts the span name of a call under a traced context (nil
// when it is not traced); grantType is applyToken's ("" for cancelToken,
// which has none).
func (x *tracingExchanger) startSpan(ctx context.Context, name, grantType string) (context.Context, *callTrace) {
	t, opts, ok := tracer(ctx)
	if !ok {
		return ctx, nil
	}
	attrs := make([]attribute.KeyValue, 0, 2)
	if grantType != "" {
		attrs = append(attrs, attrGrantType.String(grantType))
	}
	if x.breaker != nil {
		attrs = append(attrs, attrBreaker.String(x.breaker().String()))
	}
	opts = append(opts, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	ctx, span := t.Start(ctx, name, opts...)
	ct := &callTrace{span: span, start: time.Now()}
	return context.WithValue(ctx, callTraceKey{}, ct), ct
}

// markAdmitted records, in a traced call, that the guard let it through.
func markAdmitted(ctx context.Context) {
	if ct, ok := ctx.Value(callTraceKey{}).(*callTrace); ok && ct.admitted.IsZero() {
		ct.admitted = time.Now()
	}
}

// traceAttempt is the Rebell client's OnAttempt hook: an event per attempt
// on the call's span.
func traceAttempt(ctx context.Context, a rebell.AttemptInfo) {
	ct, ok := ctx.Value(callTraceKey{}).(*callTrace)
	if !ok {
		return
	}
	ct.attempts++
	ct.last = a
	attrs := []attribute.KeyValue{
		attrAttempt.Int(ct.attempts),
		attrResult.String(a.Result),
		attribute.Float64("rebell.duration_seconds", a.Took.Seconds()),
	}
	if a.HTTPStatus != 0 {
		attrs = append(attrs, attrHTTPStatus.Int(a.HTTPStatus))
	}
	ct.span.AddEvent("attempt", trace.WithAttributes(attrs...))
}

func (ct *callTrace) end(err error) {
	attrs := []attribute.KeyValue{attrAttempts.Int(ct.attempts)}
	wait := time.Since(ct.start)
	if !ct.admitted.IsZero() {
		wait = ct.admitted.Sub(ct.start)
	}
	attrs = append(attrs, attrSlotWait.Float64(wait.Seconds()))
	var refusal *guard.Refusal
	if errors.As(err, &refusal) {
		attrs = append(attrs, attrRefused.String(refusal.Reason))
	}
	if ct.attempts > 0 {
		a := ct.last
		attrs = append(attrs, attrVerified.Bool(a.Verified))
		if a.HTTPStatus != 0 {
			attrs = append(attrs, attrHTTPStatus.Int(a.HTTPStatus))
		}
		if a.ResultStatus != "" {
			attrs = append(attrs, attrResultStatus.String(a.ResultStatus))
		}
		// An unverified body may say anything: its code is not recorded.
		if a.Verified && a.ResultCode != "" {
			attrs = append(attrs, attrResultCode.String(a.ResultCode))
		}
	}
	ct.span.SetAttributes(attrs...)
	switch {
	case refusal != nil:
		ct.span.SetStatus(codes.Error, "refused: "+refusal.Reason)
	case err != nil:
		ct.span.SetStatus(codes.Error, rebell.MetricResult(err))
	}
	ct.span.End()
}

// tracedStore puts a span around every shared-store round trip made under a
// traced context (a request waiting on it). Methods it does not override
// (Listen, Close) pass through the embedded Store.
type tracedStore struct {
	session.Store
}

// storeSpan starts the span of a store operation, nil when ctx is not
// traced by a request (background work's round trips are not traced).
func storeSpan(ctx context.Context, op string) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, nil
	}
	return parent.TracerProvider().Tracer(tracerName).Start(ctx, "redis."+op,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrDBSystem.String("redis"), attrDBOperation.String(op)))
}

// endStoreSpan ends a store span with the error's class (never its text).
func endStoreSpan(span trace.Span, err error, attrs ...attribute.KeyValue) {
	if err != nil {
		class := "store_error"
		switch {
		case errors.Is(err, session.ErrRecordCorrupt):
			class = "record_corrupt"
		case errors.Is(err, context.DeadlineExceeded):
			class = "timeout"
		case errors.Is(err, context.Canceled):
			class = "canceled"
		}
		attrs = append(attrs, attrErrorType.String(class))
		span.SetStatus(codes.Error, class)
	}
	span.SetAttributes(attrs...)
	span.End()
}

func (s tracedStore) Create(ctx context.Context, k session.Key, rec *session.Record, ttl time.Duration) (bool, error) {
	ctx, span := storeSpan(ctx, "create")
	if span == nil {
		return s.Store.Create(ctx, k, rec, ttl)
	}
	ok, err := s.Store.Create(ctx, k, rec, ttl)
	endStoreSpan(span, err, attribute.Bool("rebell.created", ok))
	return ok, err
}

func (s tracedStore) Load(ctx context.Context, k session.Key, used time.Time, ttl time.Duration) (*session.Record, error) {
	ctx, span := storeSpan(ctx, "load")
	if span == nil {
		return s.Store.Load(ctx, k, used, ttl)
	}
	rec, err := s.Store.Load(ctx, k, used, ttl)
	endStoreSpan(span, err, attrFound.Bool(rec != nil))
	return rec, err
}

func (s tracedStore) Swap(ctx context.Context, k session.Key, lease string, old uint64, rec *session.Record, ttl time.Duration) (bool, error) {
	ctx, span := storeSpan(ctx, "swap")
	if span == nil {
		return s.Store.Swap(ctx, k, lease, old, rec, ttl)
	}
	ok, err := s.Store.Swap(ctx, k, lease, old, rec, ttl)
	endStoreSpan(span, err, attribute.Bool("rebell.swapped", ok))
	return ok, err
}

func (s tracedStore) End(ctx context.Context, k session.Key, customerID string) (bool, error) {
	ctx, span := storeSpan(ctx, "end")
	if span == nil {
		return s.Store.End(ctx, k, customerID)
	}
	ok, err := s.Store.End(ctx, k, customerID)
	endStoreSpan(span, err, attribute.Bool("rebell.ended", ok))
	return ok, err
}

func (s tracedStore) Acquire(ctx context.Context, k session.Key, version uint64, ttl time.Duration) (string, session.LeaseResult, error) {
	ctx, span := storeSpan(ctx, "acquire")
	if span == nil {
		return s.Store.Acquire(ctx, k, version, ttl)
	}
	lease, res, err := s.Store.Acquire(ctx, k, version, ttl)
	endStoreSpan(span, err, attribute.Int("rebell.lease_result", int(res)))
	return lease, res, err
}

func (s tracedStore) Renew(ctx context.Context, k session.Key, lease string, ttl time.Duration) (bool, error) {
	ctx, span := storeSpan(ctx, "renew")
	if span == nil {
		return s.Store.Renew(ctx, k, lease, ttl)
	}
	ok, err := s.Store.Renew(ctx, k, lease, ttl)
	endStoreSpan(span, err, attribute.Bool("rebell.renewed", ok))
	return ok, err
}

func (s tracedStore) Release(ctx context.Context, k session.Key, lease string) error {
	ctx, span := storeSpan(ctx, "release")
	if span == nil {
		return s.Store.Release(ctx, k, lease)
	}
	err := s.Store.Release(ctx, k, lease)
	endStoreSpan(span, err)
	return err
}

func (s tracedStore) ClaimLogin(ctx context.Context, authCode rebell.Secret, ttl time.Duration) (bool, string, error) {
	ctx, span := storeSpan(ctx, "claimLogin")
	if span == nil {
		return s.Store.ClaimLogin(ctx, authCode, ttl)
	}
	claimed, sid, err := s.Store.ClaimLogin(ctx, authCode, ttl)
	endStoreSpan(span, err, attribute.Bool("rebell.claimed", claimed))
	return claimed, sid, err
}

func (s tracedStore) FinishLogin(ctx context.Context, authCode rebell.Secret, sessionID string, ttl time.Duration) error {
	ctx, span := storeSpan(ctx, "finishLogin")
	if span == nil {
		return s.Store.FinishLogin(ctx, authCode, sessionID, ttl)
	}
	err := s.Store.FinishLogin(ctx, authCode, sessionID, ttl)
	endStoreSpan(span, err)
	return err
}

func (s tracedStore) CustomerSessions(ctx context.Context, customerID string) ([]session.Key, error) {
	ctx, span := storeSpan(ctx, "customerSessions")
	if span == nil {
		return s.Store.CustomerSessions(ctx, customerID)
	}
	keys, err := s.Store.CustomerSessions(ctx, customerID)
	endStoreSpan(span, err, attribute.Int("rebell.sessions", len(keys)))
	return keys, err
}

var (
	_ session.Store         = tracedStore{}
	_ rebell.TokenExchanger = (*tracingExchanger)(nil)
	_ rebell.TokenCanceller = (*tracingExchanger)(nil)
)
