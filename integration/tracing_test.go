package integration

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
)

// otlpReceiver is an OTLP/HTTP trace receiver on 127.0.0.1: it decodes every
// protobuf export Caddy's tracing module sends and keeps the spans.
type otlpReceiver struct {
	URL string

	mu    sync.Mutex
	spans []*tracepb.Span
	raw   bytes.Buffer // every body received, for the secrets check
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		b, err := io.ReadAll(io.LimitReader(body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var export collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &export); err != nil {
			t.Errorf("OTLP export %s %s is not an ExportTraceServiceRequest: %v", req.Method, req.URL.Path, err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.raw.Write(b)
		for _, rs := range export.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	r.URL = "http://" + l.Addr().String()
	return r
}

// find returns the spans received so far named name.
func (r *otlpReceiver) find(name string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func spanAttr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key != key {
			continue
		}
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue
		case *commonpb.AnyValue_IntValue:
			return fmt.Sprint(v.IntValue)
		case *commonpb.AnyValue_BoolValue:
			return fmt.Sprint(v.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			return fmt.Sprint(v.DoubleValue)
		}
	}
	return ""
}

// TestTracingThroughCaddy: with Caddy's tracing directive, a login through a
// real Caddy exports (OTLP/HTTP, to a receiver on 127.0.0.1) a
// rebell.applyToken span and the store's round trips as children of the
// request's span, with the call's attributes; a refresh-ahead is a root span
// linked to the request that started it, and so is the cancel a logout
// queues (rebell.cancelToken); no auth code, token, session id or
// customer id is anywhere in the export.
func TestTracingThroughCaddy(t *testing.T) {
	recv := newOTLPReceiver(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", recv.URL+"/v1/traces")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	rs := redistest.Start(t)
	mock := newMockRebell(t)
	kf := writeKeys(t, t.TempDir())
	up := newUpstream(t)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	tracing {
		span gateway_request
	}
	rebell_auth {
		endpoint %s
		client_id MERCHANT_IT
		private_key_file %s
		rebell_public_key_file %s
		store redis {
			address %s
			encryption_key AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
		}
	}
	reverse_proxy %s
}
`, port, mock.URL, kf.MerchantPrivate, kf.PlatformPublic, rs.Addr, strings.TrimPrefix(up.URL, "http://")), port)

	// Access tokens live 8 s: the refresh-ahead window opens 4 s after a
	// login, and a request waits for a new token from 6 s on
	// (docs/freshness.md).
	mock.accessTTL.Store(int64(8 * time.Second))
	const code = "trace-auth-code-0001"
	resp, err := http.Post(base+"/rebell/login", "application/json", strings.NewReader(`{"authCode":"`+code+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}

	obtained := time.Now()
	var lr loginResult
	_ = json.Unmarshal(body, &lr)
	// A request in the refresh-ahead window starts a background refresh it
	// does not wait for.
	time.Sleep(time.Until(obtained.Add(4500 * time.Millisecond)))
	get, _ := http.NewRequest(http.MethodGet, base+"/api/ahead", nil)
	get.Header.Set("Authorization", "Bearer "+lr.SessionID)
	gresp, err := http.DefaultClient.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	gresp.Body.Close()
	if gresp.StatusCode != http.StatusOK {
		t.Fatalf("request in the refresh-ahead window: %d", gresp.StatusCode)
	}

	deadline := time.Now().Add(20 * time.Second)
	var reqSpans, applySpans []*tracepb.Span
	for time.Now().Before(deadline) {
		reqSpans, applySpans = recv.find("gateway_request"), recv.find("rebell.applyToken")
		if len(reqSpans) > 1 && len(applySpans) > 1 && len(recv.find("redis.create")) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(reqSpans) != 2 || len(applySpans) != 2 {
		t.Fatalf("%d request spans and %d applyToken spans received, want 2 and 2", len(reqSpans), len(applySpans))
	}
	var req, ahead, apply, refresh *tracepb.Span
	for _, s := range reqSpans {
		if spanAttr(s, "http.request.method") == http.MethodGet {
			ahead = s
		} else {
			req = s
		}
	}
	for _, s := range applySpans {
		if spanAttr(s, "rebell.grant_type") == "REFRESH_TOKEN" {
			refresh = s
		} else {
			apply = s
		}
	}
	if req == nil || ahead == nil || apply == nil || refresh == nil {
		t.Fatalf("spans: login request %v, GET %v, login call %v, refresh %v", req != nil, ahead != nil, apply != nil, refresh != nil)
	}
	// The refresh-ahead is a root span of its own, linked to the request
	// that started it.
	if len(refresh.ParentSpanId) != 0 || len(refresh.Links) != 1 || !bytes.Equal(refresh.Links[0].SpanId, ahead.SpanId) ||
		spanAttr(refresh, "rebell.background") != "true" {
		t.Errorf("refresh-ahead span: parent %x, links %v, background %q", refresh.ParentSpanId, refresh.Links, spanAttr(refresh, "rebell.background"))
	}
	if !bytes.Equal(apply.ParentSpanId, req.SpanId) || !bytes.Equal(apply.TraceId, req.TraceId) {
		t.Errorf("applyToken's parent %s, want the request's span %s", hex.EncodeToString(apply.ParentSpanId), hex.EncodeToString(req.SpanId))
	}
	for k, want := range map[string]string{
		"rebell.grant_type": "AUTHORIZATION_CODE", "rebell.result_status": "S", "rebell.result_code": "SUCCESS",
		"rebell.breaker_state": "closed", "http.response.status_code": "200", "rebell.attempts": "1",
	} {
		if got := spanAttr(apply, k); got != want {
			t.Errorf("applyToken %s = %q, want %q", k, got, want)
		}
	}
	stores := recv.find("redis.create")
	if len(stores) == 0 || !bytes.Equal(stores[0].ParentSpanId, req.SpanId) {
		t.Errorf("no redis.create child of the request's span (%d)", len(stores))
	}

	// A logout queues the cancel of the session's tokens, which the
	// revoker works after the response: a root span rebell.cancelToken of
	// its own, linked to the logout's span.
	lo, _ := http.NewRequest(http.MethodPost, base+"/rebell/logout", nil)
	lo.Header.Set("Authorization", "Bearer "+lr.SessionID)
	loresp, err := http.DefaultClient.Do(lo)
	if err != nil {
		t.Fatal(err)
	}
	loresp.Body.Close()
	if loresp.StatusCode/100 != 2 {
		t.Fatalf("logout: %d", loresp.StatusCode)
	}
	var logout, cancelSpan *tracepb.Span
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && (logout == nil || cancelSpan == nil); time.Sleep(100 * time.Millisecond) {
		for _, s := range recv.find("gateway_request") {
			if s != req && s != ahead {
				logout = s
			}
		}
		if cs := recv.find("rebell.cancelToken"); len(cs) > 0 {
			cancelSpan = cs[0]
		}
	}
	if logout == nil || cancelSpan == nil {
		t.Fatalf("spans: logout request %v, cancelToken %v", logout != nil, cancelSpan != nil)
	}
	if n := len(recv.find("rebell.cancelToken")); n != 1 {
		t.Errorf("%d rebell.cancelToken spans, want 1", n)
	}
	if len(cancelSpan.ParentSpanId) != 0 || bytes.Equal(cancelSpan.TraceId, logout.TraceId) ||
		len(cancelSpan.Links) != 1 || !bytes.Equal(cancelSpan.Links[0].SpanId, logout.SpanId) || !bytes.Equal(cancelSpan.Links[0].TraceId, logout.TraceId) {
		t.Errorf("cancelToken span: parent %x, trace %x (logout's %x), links %v, want a root span linked to the logout's span %x",
			cancelSpan.ParentSpanId, cancelSpan.TraceId, logout.TraceId, cancelSpan.Links, logout.SpanId)
	}
	for k, want := range map[string]string{
		"rebell.background": "true", "rebell.result_status": "S", "rebell.result_code": "SUCCESS",
		"http.response.status_code": "200", "rebell.attempts": "1", "rebell.breaker_state": "closed",
	} {
		if got := spanAttr(cancelSpan, k); got != want {
			t.Errorf("cancelToken %s = %q, want %q", k, got, want)
		}
	}
	if cs := mock.cancelCalls(); len(cs) != 1 || !cs[0].signed {
		t.Errorf("cancelToken calls at Rebell: %v", cs)
	}
	recv.mu.Lock()
	raw := recv.raw.String()
	recv.mu.Unlock()
	for _, secret := range []string{code, lr.SessionID, lr.CustomerID, "AT0000", "RT0000"} {
		if secret != "" && strings.Contains(raw, secret) {
			t.Errorf("the OTLP export holds %q", secret)
		}
	}
}
