package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/guard"
	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/revoke"
	"github.com/rebell-gateway/caddy-rebell/sandbox"
	"github.com/rebell-gateway/caddy-rebell/session"
)

// traceRig is the gateway's chain of calls toward Rebell (tracing exchanger,
// guard, swap exchanger, Rebell client) in front of a sandbox on 127.0.0.1,
// with an OpenTelemetry SDK provider that records every span.
type traceRig struct {
	sb       *sandbox.Sandbox
	srv      *httptest.Server
	ex       *tracingExchanger
	rec      *tracetest.SpanRecorder
	provider *sdktrace.TracerProvider
}

func newTraceRig(t *testing.T) *traceRig {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{ClientID: "TRACE", MerchantPublicKey: &testkeys.RSA(0).PublicKey, PrivateKey: testkeys.RSA(1)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	signer, err := rebell.NewSigner("TRACE", testkeys.RSA(0), 1, rebell.AlgorithmRSA256)
	if err != nil {
		t.Fatal(err)
	}
	client, err := rebell.NewClient(rebell.ClientConfig{
		Endpoint: srv.URL, Signer: signer, RebellPublicKey: &testkeys.RSA(1).PublicKey,
		Retries: 1, BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond,
		OnAttempt: traceAttempt,
	})
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(guard.Config{})
	if err != nil {
		t.Fatal(err)
	}
	swap := &swapExchanger{}
	swap.client.Store(client)
	rec := tracetest.NewSpanRecorder()
	return &traceRig{
		sb: sb, srv: srv, rec: rec,
		ex:       &tracingExchanger{next: guard.NewExchanger(swap, g), breaker: g.State},
		provider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
	}
}

// request starts the span Caddy's tracing handler would give a request.
func (r *traceRig) request() (context.Context, trace.Span) {
	return r.provider.Tracer("caddy").Start(context.Background(), "handler")
}

func (r *traceRig) fault(t *testing.T, spec string) {
	t.Helper()
	resp, err := http.Post(r.srv.URL+"/sandbox/faults", "application/json", strings.NewReader(spec))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fault %s: %d", spec, resp.StatusCode)
	}
}

// ended returns the ended spans named name.
func (r *traceRig) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[string]any {
	m := map[string]any{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

// noSecrets fails if any attribute, event attribute or status of any span
// recorded holds one of secrets.
func noSecrets(t *testing.T, rec *tracetest.SpanRecorder, secrets ...string) {
	t.Helper()
	var all []string
	for _, s := range rec.Ended() {
		all = append(all, s.Name(), s.Status().Description)
		for _, kv := range s.Attributes() {
			all = append(all, kv.Value.Emit())
		}
		for _, e := range s.Events() {
			all = append(all, e.Name)
			for _, kv := range e.Attributes {
				all = append(all, kv.Value.Emit())
			}
		}
	}
	joined := strings.Join(all, "\n")
	for _, secret := range secrets {
		if secret != "" && strings.Contains(joined, secret) {
			t.Errorf("a span holds %q", secret)
		}
	}
}

// TestTraceApplyToken: a login and a refresh made under a request's span are
// its child spans rebell.applyToken, with grant type, result, verified code,
// HTTP status, attempts, breaker state and slot wait; a retried call has an
// event per attempt; an unverified answer's code is not recorded; no span
// holds a code, a token or a customer id.
func TestTraceApplyToken(t *testing.T) {
	r := newTraceRig(t)
	ctx, reqSpan := r.request()
	code, customer := r.sb.IssueAuthCode("2188000000000077")
	tok, err := r.ex.ExchangeAuthCode(ctx, rebell.NewSecret(code))
	if err != nil {
		t.Fatal(err)
	}
	r.fault(t, `{"count":1,"grantType":"REFRESH_TOKEN","httpStatus":503}`)
	tok2, err := r.ex.Refresh(ctx, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	r.fault(t, `{"count":1,"grantType":"AUTHORIZATION_CODE","forgeSignature":true,"resultStatus":"F","resultCode":"INVALID_CODE"}`)
	code3, _ := r.sb.IssueAuthCode("")
	if _, err := r.ex.ExchangeAuthCode(ctx, rebell.NewSecret(code3)); err == nil {
		t.Fatal("a forged answer was accepted")
	}
	reqSpan.End()

	spans := r.ended(spanApplyToken)
	if len(spans) != 3 {
		t.Fatalf("%d %s spans, want 3", len(spans), spanApplyToken)
	}
	for _, s := range spans {
		if s.Parent().SpanID() != reqSpan.SpanContext().SpanID() || s.SpanContext().TraceID() != reqSpan.SpanContext().TraceID() {
			t.Errorf("%s is not a child of the request's span", s.Name())
		}
		if s.SpanKind() != trace.SpanKindClient {
			t.Errorf("span kind %v", s.SpanKind())
		}
	}
	login, refresh, forged := attrs(spans[0]), attrs(spans[1]), attrs(spans[2])
	for k, want := range map[string]any{
		"rebell.grant_type": "AUTHORIZATION_CODE", "rebell.result_status": "S", "rebell.result_code": "SUCCESS",
		"rebell.verified": true, "http.response.status_code": int64(200), "rebell.attempts": int64(1), "rebell.breaker_state": "closed",
	} {
		if login[k] != want {
			t.Errorf("login %s = %v, want %v", k, login[k], want)
		}
	}
	if w, ok := login["rebell.slot_wait_seconds"].(float64); !ok || w < 0 || w > 1 {
		t.Errorf("login slot wait %v", login["rebell.slot_wait_seconds"])
	}
	if refresh["rebell.grant_type"] != "REFRESH_TOKEN" || refresh["rebell.attempts"] != int64(2) || refresh["rebell.result_code"] != "SUCCESS" {
		t.Errorf("refresh: %v", refresh)
	}
	if ev := spans[1].Events(); len(ev) != 2 || ev[0].Name != "attempt" {
		t.Errorf("refresh events %v, want 2 attempts", ev)
	} else if a := ev[0].Attributes; len(a) == 0 || a[0].Value.AsInt64() != 1 {
		t.Errorf("first attempt's event %v", a)
	}
	if _, ok := forged["rebell.result_code"]; ok || forged["rebell.verified"] != false {
		t.Errorf("an unverified answer's code was recorded: %v", forged)
	}
	if spans[2].Status().Code.String() != "Error" || spans[2].Status().Description != "bad_signature" {
		t.Errorf("forged: status %v", spans[2].Status())
	}
	noSecrets(t, r.rec, code, code3, customer, tok.AccessToken.Reveal(), tok.RefreshToken.Reveal(),
		tok2.AccessToken.Reveal(), tok2.RefreshToken.Reveal())
}

// TestTraceBackgroundLinked: work a request starts without waiting
// (refresh-ahead) gets a root span of its own, linked to the request's; work
// it waits on is its child; an untraced request carries nothing.
func TestTraceBackgroundLinked(t *testing.T) {
	r := newTraceRig(t)
	reqCtx, reqSpan := r.request()
	code, _ := r.sb.IssueAuthCode("2188000000000078")
	work := carrySpan(reqCtx, context.Background(), false)
	tok, err := r.ex.ExchangeAuthCode(work, rebell.NewSecret(code))
	if err != nil {
		t.Fatal(err)
	}
	bg := rebell.WithBackground(carrySpan(reqCtx, context.Background(), true))
	if _, err := r.ex.Refresh(bg, tok.RefreshToken); err != nil {
		t.Fatal(err)
	}
	reqSpan.End()
	spans := r.ended(spanApplyToken)
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	if spans[0].Parent().SpanID() != reqSpan.SpanContext().SpanID() {
		t.Error("waited-on work is not the request's child")
	}
	b := spans[1]
	if b.Parent().IsValid() || b.SpanContext().TraceID() == reqSpan.SpanContext().TraceID() {
		t.Error("background work is not a root span of its own")
	}
	if l := b.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != reqSpan.SpanContext().SpanID() {
		t.Errorf("background links %v", l)
	}
	if attrs(b)["rebell.background"] != true {
		t.Errorf("background attrs %v", attrs(b))
	}
	if got := carrySpan(context.Background(), bg, false); got != bg {
		t.Error("an untraced request changed the work's context")
	}
}

// TestTraceOffCostsNothing: with no recording span, a call through the
// tracing exchanger allocates no more than the call itself.
func TestTraceOffCostsNothing(t *testing.T) {
	next := &countingExchanger{}
	x := &tracingExchanger{next: next, breaker: func() guard.State { return guard.Closed }}
	ctx := context.Background()
	rt := rebell.NewSecret("rt")
	direct := testing.AllocsPerRun(100, func() { _, _ = next.Refresh(ctx, rt) })
	wrapped := testing.AllocsPerRun(100, func() { _, _ = x.Refresh(ctx, rt) })
	if wrapped != direct {
		t.Errorf("untraced call: %v allocations, %v without the wrapper", wrapped, direct)
	}
	s := tracedStore{Store: fakeLoadStore{}}
	if n := testing.AllocsPerRun(100, func() { _, _ = s.Load(ctx, session.Key{}, time.Time{}, time.Minute) }); n != 0 {
		t.Errorf("untraced store round trip: %v allocations", n)
	}
}

type countingExchanger struct{ n int }

func (c *countingExchanger) ExchangeAuthCode(context.Context, rebell.Secret) (*rebell.Token, error) {
	c.n++
	return nil, nil
}

func (c *countingExchanger) Refresh(context.Context, rebell.Secret) (*rebell.Token, error) {
	c.n++
	return nil, nil
}

// fakeLoadStore answers Load with a fixed record; other methods are not
// called.
type fakeLoadStore struct {
	session.Store
	rec *session.Record
}

func (f fakeLoadStore) Load(context.Context, session.Key, time.Time, time.Duration) (*session.Record, error) {
	return f.rec, nil
}

// TestTraceStore: a store round trip made under a request's span is its child
// span redis.<op> with the operation and its outcome, and no customer id.
func TestTraceStore(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, reqSpan := tp.Tracer("caddy").Start(context.Background(), "handler")
	s := tracedStore{Store: fakeLoadStore{rec: &session.Record{CustomerID: "2188000000000099"}}}
	if got, err := s.Load(ctx, session.Key{1}, time.Now(), time.Minute); err != nil || got == nil {
		t.Fatal(got, err)
	}
	reqSpan.End()
	var load sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		if sp.Name() == "redis.load" {
			load = sp
		}
	}
	if load == nil {
		t.Fatal("no redis.load span")
	}
	a := attrs(load)
	if load.Parent().SpanID() != reqSpan.SpanContext().SpanID() || a["db.system.name"] != "redis" || a["db.operation.name"] != "load" || a["rebell.found"] != true {
		t.Errorf("redis.load: parent %v, %v", load.Parent(), a)
	}
	noSecrets(t, rec, "2188000000000099")
}

// TestTraceCancelLinked: a logout under a request's span queues a cancel
// that the revoker works after the request is over (its context cancelled):
// the cancel runs under a root span rebell.cancelToken linked to the
// logout's span, from the request's tracer provider, with the call's
// attributes and one event per attempt, and no span holds a code, a token,
// a session id or a customer id. Once the cancel settled, the revoker keeps
// nothing of the request.
func TestTraceCancelLinked(t *testing.T) {
	r := newTraceRig(t)
	rv, err := revoke.New(revoke.Config{Canceller: r.ex, Refresher: r.ex, Carry: carryLink})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(cache.Config{Exchanger: r.ex, Revoke: rv.Enqueue, Carry: carrySpan})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	code, customer := r.sb.IssueAuthCode("2188000000000079")
	sid, g, err := c.Login(context.Background(), rebell.NewSecret(code))
	if err != nil {
		t.Fatal(err)
	}
	k, ok := c.ParseSessionID(sid)
	if !ok {
		t.Fatal("session id does not parse")
	}
	reqCtx, cancelReq := context.WithCancel(context.Background())
	reqCtx, reqSpan := r.provider.Tracer("caddy").Start(reqCtx, "logout")
	if err := c.Logout(reqCtx, k); err != nil {
		t.Fatal(err)
	}
	reqSpan.End()
	cancelReq() // the request is over before the cancel is worked

	rv.Drain(context.Background())
	if n, err := rv.Pending(context.Background()); err != nil || n != 0 {
		t.Fatalf("pending cancels %d, %v", n, err)
	}
	spans := r.ended(spanCancelToken)
	if len(spans) != 1 {
		t.Fatalf("%d %s spans, want 1", len(spans), spanCancelToken)
	}
	s := spans[0]
	if s.Parent().IsValid() || s.SpanContext().TraceID() == reqSpan.SpanContext().TraceID() {
		t.Error("the cancel is not a root span of its own")
	}
	if l := s.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != reqSpan.SpanContext().SpanID() ||
		l[0].SpanContext.TraceID() != reqSpan.SpanContext().TraceID() {
		t.Errorf("cancel links %v, want the logout's span", l)
	}
	if s.SpanKind() != trace.SpanKindClient || s.Status().Code.String() != "Unset" {
		t.Errorf("kind %v, status %v", s.SpanKind(), s.Status())
	}
	a := attrs(s)
	for k, want := range map[string]any{
		"rebell.background": true, "rebell.result_status": "S", "rebell.result_code": "SUCCESS", "rebell.verified": true,
		"http.response.status_code": int64(200), "rebell.attempts": int64(1), "rebell.breaker_state": "closed",
	} {
		if a[k] != want {
			t.Errorf("cancel %s = %v, want %v", k, a[k], want)
		}
	}
	if _, ok := a["rebell.grant_type"]; ok {
		t.Errorf("a cancel has a grant type: %v", a)
	}
	if _, ok := a["rebell.slot_wait_seconds"]; !ok {
		t.Errorf("no slot wait: %v", a)
	}
	if ev := s.Events(); len(ev) != 1 || ev[0].Name != "attempt" {
		t.Errorf("cancel events %v, want 1 attempt", ev)
	}
	if st := r.sb.Stats(); st.CancelTokenCalls != 1 || st.CancelByResultCode["SUCCESS"] != 1 {
		t.Errorf("Rebell saw cancels %d, %v", st.CancelTokenCalls, st.CancelByResultCode)
	}
	noSecrets(t, r.rec, code, customer, sid, g.AccessToken.Reveal())
}

// TestTraceCancelUntraced: a cancel queued without a recording span gets no
// span, and Carry adds nothing to the work (no allocation).
func TestTraceCancelUntraced(t *testing.T) {
	bg := context.Background()
	if got := carryLink(bg, bg); got != bg {
		t.Error("an untraced request gave the cancel something to keep")
	}
	if n := testing.AllocsPerRun(100, func() { _ = carryLink(bg, bg) }); n != 0 {
		t.Errorf("untraced carry: %v allocations", n)
	}
}

// TestTraceCancelOfEvictedLinked: a login into a full memory tier ends the
// least recently used session to make room; the cancel of that session's
// tokens is a root span linked to the login's request, like a logout's.
func TestTraceCancelOfEvictedLinked(t *testing.T) {
	r := newTraceRig(t)
	rv, err := revoke.New(revoke.Config{Canceller: r.ex, Refresher: r.ex, Carry: carryLink})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(cache.Config{Exchanger: r.ex, MaxSessions: 1, Revoke: rv.Enqueue, Carry: carrySpan})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	code, customer := r.sb.IssueAuthCode("2188000000000078")
	sid, g, err := c.Login(context.Background(), rebell.NewSecret(code))
	if err != nil {
		t.Fatal(err)
	}
	code2, _ := r.sb.IssueAuthCode("2188000000000077")
	reqCtx, reqSpan := r.provider.Tracer("caddy").Start(context.Background(), "login")
	if _, _, err := c.Login(reqCtx, rebell.NewSecret(code2)); err != nil {
		t.Fatal(err)
	}
	reqSpan.End()

	rv.Drain(context.Background())
	spans := r.ended(spanCancelToken)
	if len(spans) != 1 {
		t.Fatalf("%d %s spans, want 1 (the evicted session's cancel)", len(spans), spanCancelToken)
	}
	s := spans[0]
	if s.Parent().IsValid() || s.SpanContext().TraceID() == reqSpan.SpanContext().TraceID() {
		t.Error("the cancel is not a root span of its own")
	}
	if l := s.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != reqSpan.SpanContext().SpanID() {
		t.Errorf("cancel links %v, want the login's span", l)
	}
	if st := r.sb.Stats(); st.CancelTokenCalls != 1 || st.CancelByResultCode["SUCCESS"] != 1 {
		t.Errorf("Rebell saw cancels %d, %v", st.CancelTokenCalls, st.CancelByResultCode)
	}
	noSecrets(t, r.rec, code, customer, sid, g.AccessToken.Reveal())
}
