package handler

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
)

// echoVariants are the ways an upstream might hand the access token back in
// its response headers.
var echoVariants = []string{
	"X-Rebell-Access-Token",
	"X_rebell_access_token",
	"x-rebell-access-token",
	http.TrailerPrefix + "X-Rebell-Access-Token",
}

func echoUpstream(write func(w http.ResponseWriter)) *upstream {
	return &upstream{serve: func(w http.ResponseWriter, r *http.Request) {
		for _, k := range echoVariants {
			w.Header()[k] = []string{r.Header.Get("X-Rebell-Access-Token")}
		}
		w.Header().Set("X-Upstream", "kept")
		write(w)
	}}
}

func checkNoTokenInResponse(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	res := w.Result()
	for _, hd := range []http.Header{w.Header(), res.Header, res.Trailer} {
		for k, v := range hd {
			if sameHeader(k, "x-rebell-access-token") || strings.Contains(strings.Join(v, ","), testToken) {
				t.Errorf("response carries %s: %q", k, v)
			}
		}
	}
	if strings.Contains(w.Body.String(), testToken) {
		t.Error("response body carries the token")
	}
	if res.Header.Get("X-Upstream") != "kept" {
		t.Error("other upstream headers lost")
	}
}

func TestResponseStripsAccessToken(t *testing.T) {
	tests := []struct {
		name  string
		write func(w http.ResponseWriter)
		code  int
	}{
		{"WriteHeader", func(w http.ResponseWriter) { w.WriteHeader(201); _, _ = io.WriteString(w, "x") }, 201},
		{"implicit 200 Write", func(w http.ResponseWriter) { _, _ = io.WriteString(w, "x") }, 200},
		{"ReadFrom", func(w http.ResponseWriter) {
			_, _ = w.(io.ReaderFrom).ReadFrom(strings.NewReader("x"))
		}, 200},
		{"io.Copy", func(w http.ResponseWriter) { _, _ = io.Copy(w, strings.NewReader("x")) }, 200},
		{"Flush first", func(w http.ResponseWriter) {
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			_, _ = io.WriteString(w, "x")
		}, 200},
		{"Flusher", func(w http.ResponseWriter) { w.(http.Flusher).Flush() }, 200},
		{"no write at all", func(w http.ResponseWriter) {}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			id := e.s.add()
			w, err := e.serve(get("/", "Authorization", bearer(id)), echoUpstream(tt.write))
			if err != nil || w.Code != tt.code {
				t.Fatalf("ServeHTTP = %v, status %d", err, w.Code)
			}
			checkNoTokenInResponse(t, w)
		})
	}
}

func TestFlushThroughResponseController(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	w, _ := e.serve(get("/", "Authorization", bearer(id)), echoUpstream(func(w http.ResponseWriter) {
		_, _ = io.WriteString(w, "part")
		if err := http.NewResponseController(w).Flush(); err != nil {
			panic(err)
		}
	}))
	if !w.Flushed {
		t.Error("Flush did not reach the underlying writer")
	}
	checkNoTokenInResponse(t, w)
}

// TestResponseOverNetwork runs the wrapper behind a real server: headers,
// declared trailers and TrailerPrefix trailers never carry the token, and
// Hijack works through the wrapper.
func TestResponseOverNetwork(t *testing.T) {
	e := newEnv(t, nil)
	id := e.s.add()
	var up Next
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := e.h.ServeHTTP(w, r, up); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}))
	defer srv.Close()

	do := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header.Set("Authorization", bearer(id))
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	t.Run("trailers", func(t *testing.T) {
		up = &upstream{serve: func(w http.ResponseWriter, r *http.Request) {
			tok := r.Header.Get("X-Rebell-Access-Token")
			w.Header().Set("Trailer", "X-Rebell-Access-Token, X-Other")
			w.Header().Set("X-Rebell-Access-Token", tok)
			w.WriteHeader(200)
			_, _ = io.WriteString(w, "body")
			http.NewResponseController(w).Flush()
			w.Header().Set("X-Rebell-Access-Token", tok)
			w.Header().Set(http.TrailerPrefix+"X_Rebell_Access_Token", tok)
			w.Header().Set("X-Other", "trailer")
		}}
		res := do()
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "body" {
			t.Fatalf("body %q", b)
		}
		for _, hd := range []http.Header{res.Header, res.Trailer} {
			for k, v := range hd {
				if sameHeader(k, "x-rebell-access-token") && len(v) > 0 && v[0] != "" ||
					strings.Contains(strings.Join(v, ","), testToken) {
					t.Errorf("%s: %q reached the client", k, v)
				}
			}
		}
		if res.Trailer.Get("X-Other") != "trailer" {
			t.Errorf("other trailers lost: %v", res.Trailer)
		}
	})

	t.Run("early hints", func(t *testing.T) {
		up = &upstream{serve: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Rebell-Access-Token", r.Header.Get("X-Rebell-Access-Token"))
			w.Header().Set("Link", "</app.js>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Set("X_Rebell_Access_Token", r.Header.Get("X-Rebell-Access-Token"))
			w.WriteHeader(http.StatusOK)
		}}
		var hints []textproto.MIMEHeader
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header.Set("Authorization", bearer(id))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				hints = append(hints, h)
				return nil
			},
		}))
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if len(hints) != 1 || hints[0].Get("Link") == "" {
			t.Fatalf("1xx responses: %v", hints)
		}
		for _, hd := range []http.Header{http.Header(hints[0]), res.Header} {
			for k, v := range hd {
				if strings.Contains(strings.Join(v, ","), testToken) {
					t.Errorf("%s: %q reached the client", k, v)
				}
			}
		}
	})

	t.Run("hijack", func(t *testing.T) {
		up = &upstream{serve: func(w http.ResponseWriter, r *http.Request) {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("Hijack: %v", err)
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
			_ = brw.Flush()
		}}
		res := do()
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "hijacked" {
			t.Errorf("body %q", b)
		}
	})

	t.Run("hijacker assertion", func(t *testing.T) {
		up = &upstream{serve: func(w http.ResponseWriter, r *http.Request) {
			conn, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("Hijack: %v", err)
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			_ = brw.Flush()
		}}
		res := do()
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "ok" {
			t.Errorf("body %q", b)
		}
	})
}

func TestHijackNotSupported(t *testing.T) {
	rw := getResponseWriter(httptest.NewRecorder(), "x-rebell-access-token", "")
	defer putResponseWriter(rw)
	if _, _, err := rw.Hijack(); !errors.Is(err, http.ErrNotSupported) {
		t.Errorf("Hijack on a recorder = %v, want ErrNotSupported", err)
	}
	if rw.Unwrap() == nil {
		t.Error("Unwrap returned nil")
	}
}

// plainWriter is a ResponseWriter with nothing but the three methods.
type plainWriter struct {
	h    http.Header
	body strings.Builder
	code int
}

func (p *plainWriter) Header() http.Header         { return p.h }
func (p *plainWriter) Write(b []byte) (int, error) { return p.body.Write(b) }
func (p *plainWriter) WriteHeader(code int)        { p.code = code }

func TestReadFromWithoutUnderlyingReaderFrom(t *testing.T) {
	pw := &plainWriter{h: http.Header{"X-Rebell-Access-Token": {"t"}}}
	rw := getResponseWriter(pw, "x-rebell-access-token", "")
	defer putResponseWriter(rw)
	n, err := rw.ReadFrom(strings.NewReader("hello"))
	if err != nil || n != 5 || pw.body.String() != "hello" {
		t.Fatalf("ReadFrom = %d, %v; body %q", n, err, pw.body.String())
	}
	if _, ok := pw.h["X-Rebell-Access-Token"]; ok {
		t.Error("header not stripped before ReadFrom")
	}
	if err := rw.FlushError(); !errors.Is(err, http.ErrNotSupported) {
		t.Errorf("FlushError = %v, want ErrNotSupported", err)
	}
	rw.Flush() // must not panic
}

// TestWriterPoolReset: a pooled writer keeps nothing of its last request.
func TestWriterPoolReset(t *testing.T) {
	rw := getResponseWriter(httptest.NewRecorder(), "x", "")
	_, _ = rw.Write([]byte("x"))
	putResponseWriter(rw)
	if rw.ResponseWriter != nil || rw.wroteHeader || rw.norm != "" {
		t.Errorf("writer not reset: %+v", rw)
	}
}

var _ interface {
	http.ResponseWriter
	http.Flusher
	http.Hijacker
	io.ReaderFrom
	Unwrap() http.ResponseWriter
} = (*responseWriter)(nil)
