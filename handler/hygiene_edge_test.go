package handler

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// forbiddenTrailers are trailer keys, as net/http may hold them, that must
// never reach the next handler's view of the trailers.
var forbiddenTrailers = []string{
	"X-Rebell-Access-Token", "X_rebell_access_token", "X-Rebell-Customer-Id", "X_rebell_customer_id",
	"Authorization",
}

// trailerBody is a request body that, like net/http's, fills in the
// request's trailers when it reaches its end.
type trailerBody struct {
	r      *http.Request
	body   io.Reader
	values http.Header
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		if b.r.Trailer == nil {
			b.r.Trailer = http.Header{}
		}
		for k, v := range b.values {
			b.r.Trailer[k] = v
		}
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }

// bodyReader is a Next that reads the body to its end, as reverse_proxy
// does, and records the trailers and the Connection header it then sees.
type bodyReader struct {
	upstream
	announced, trailers http.Header
	connection          []string
}

func (b *bodyReader) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	b.announced = r.Trailer.Clone()
	_, _ = io.Copy(io.Discard, r.Body)
	b.trailers = r.Trailer.Clone()
	b.connection = r.Header.Values("Connection")
	return b.upstream.ServeHTTP(w, r)
}

func TestTrailerHygiene(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	for _, path := range []string{"/api", "/rebell/logout"} {
		r := httptest.NewRequest(http.MethodPost, path, nil)
		r.Header.Set("Authorization", bearer(id))
		r.ContentLength = -1
		r.Trailer = http.Header{"X-Checksum": nil}
		values := http.Header{"X-Checksum": {"abc"}}
		for _, k := range forbiddenTrailers {
			r.Trailer[k] = nil
			values[k] = []string{"spoof"}
		}
		values["Cookie"] = []string{"a=1; rebell_session=" + id}
		r.Body = &trailerBody{r: r, body: strings.NewReader("body"), values: values}
		next := &bodyReader{}
		w, err := e.serve(r, next)
		if err != nil {
			t.Fatal(err)
		}
		if path != "/api" {
			continue // logout answers itself
		}
		if w.Code != 200 || !next.called {
			t.Fatalf("status %d", w.Code)
		}
		for _, k := range forbiddenTrailers {
			if _, ok := next.announced[k]; ok {
				t.Errorf("announced trailer %q survived", k)
			}
			if v, ok := next.trailers[k]; ok {
				t.Errorf("trailer %q = %q survived", k, v)
			}
		}
		if next.trailers.Get("X-Checksum") != "abc" || next.trailers.Get("Cookie") != "a=1" {
			t.Errorf("other trailers: %v", next.trailers)
		}
	}
}

func TestConnectionHygiene(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionHeader = "X-Session" })
	id := e.s.add()
	tests := []struct {
		in   []string
		want []string
	}{
		{[]string{"keep-alive"}, []string{"keep-alive"}},
		{[]string{"X-Rebell-Access-Token, X-Rebell-Customer-Id"}, nil},
		{[]string{"keep-alive, x-rebell-access-token", "Upgrade,X_REBELL_CUSTOMER_ID , x-session"}, []string{"keep-alive", "Upgrade"}},
		{[]string{" , X-Rebell-Access-Tokens,"}, []string{" , X-Rebell-Access-Tokens,"}}, // nothing to remove: kept as sent
	}
	for _, tt := range tests {
		r := get("/api", "X-Session", id)
		r.Header["Connection"] = tt.in
		next := &bodyReader{}
		if w, _ := e.serve(r, next); w.Code != 200 {
			t.Fatalf("%q: status %d", tt.in, w.Code)
		}
		if fmt.Sprint(next.connection) != fmt.Sprint(tt.want) {
			t.Errorf("Connection %q became %q, want %q", tt.in, next.connection, tt.want)
		}
		// What reverse_proxy then does with Connection leaves the identity.
		hd := next.header.Clone()
		removeConnectionHeaders(hd)
		if hd.Get("X-Rebell-Access-Token") != testToken || hd.Get("X-Rebell-Customer-Id") == "" {
			t.Errorf("%q: identity dropped as hop-by-hop: %v", tt.in, hd)
		}
	}
}

// removeConnectionHeaders is what reverse_proxy does with the Connection
// header of the upstream request.
func removeConnectionHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
}

// TestTrailerHygieneRealServer sends chunked requests with trailers to a
// real net/http server, over HTTP/1.1 (raw bytes, so the names go as
// written) and h2c, and checks what a reader of the body then sees.
func TestTrailerHygieneRealServer(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	seen := make(chan *bodyReader, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next := &bodyReader{}
		_ = e.h.ServeHTTP(w, r, next)
		seen <- next
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	defer srv.Close()

	check := func(t *testing.T, next *bodyReader) {
		t.Helper()
		if !next.called {
			t.Fatal("not passed")
		}
		for k, v := range next.trailers {
			if sameHeader(k, "x-rebell-access-token") || sameHeader(k, "x-rebell-customer-id") || sameHeader(k, "authorization") {
				t.Errorf("trailer %q = %q reached the next handler", k, v)
			}
		}
		for k := range next.announced {
			if sameHeader(k, "x-rebell-access-token") || sameHeader(k, "x-rebell-customer-id") || sameHeader(k, "authorization") {
				t.Errorf("announced trailer %q reached the next handler", k)
			}
		}
		if next.trailers.Get("X-Checksum") != "abc" {
			t.Errorf("X-Checksum trailer lost: %v", next.trailers)
		}
	}

	t.Run("HTTP/1.1", func(t *testing.T) {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "POST /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Transfer-Encoding: chunked\r\nTrailer: X-Rebell-Customer-Id, X_rebell_access_token, Authorization, X-Checksum\r\n\r\n"+
			"4\r\nbody\r\n0\r\nX-Rebell-Customer-Id: spoof\r\nX_rebell_access_token: spoof\r\nX_rebell_customer_id: spoof\r\n"+
			"Authorization: Bearer %s\r\nX-Checksum: abc\r\n\r\n", id, id)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		check(t, <-seen)
	})

	t.Run("h2c", func(t *testing.T) {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/api", pr)
		req.Header.Set("Authorization", bearer(id))
		req.Trailer = http.Header{"X-Rebell-Customer-Id": nil, "X-Rebell-Access-Token": nil, "X-Checksum": nil}
		go func() {
			_, _ = pw.Write([]byte("body"))
			req.Trailer.Set("X-Rebell-Customer-Id", "spoof")
			req.Trailer.Set("X-Rebell-Access-Token", "spoof")
			req.Trailer.Set("X-Checksum", "abc")
			pw.Close()
		}()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
		}
		check(t, <-seen)
	})
}
