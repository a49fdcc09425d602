package handler

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
)

// responseWriter is what the next handler writes to. It deletes the
// access-token header (and its '_' and case variants, and trailers of that
// name) from the response headers before they go out, so an upstream that
// echoes request headers cannot hand the token to the Mini App.
//
// Headers go out at WriteHeader (1xx included: 103 Early Hints sends the
// current headers), at the first Write, ReadFrom or Flush without one, and
// trailers when the handler returns (finish). Hijack, deadlines and full
// duplex reach the underlying writer through Unwrap.
type responseWriter struct {
	http.ResponseWriter
	norm        string // normalized access-token header name
	norm2       string // normalized identity-assertion header name, or ""
	wroteHeader bool
}

var responseWriterPool = sync.Pool{New: func() any { return new(responseWriter) }}

func getResponseWriter(w http.ResponseWriter, norm, norm2 string) *responseWriter {
	rw := responseWriterPool.Get().(*responseWriter)
	rw.ResponseWriter = w
	rw.norm, rw.norm2 = norm, norm2
	return rw
}

func putResponseWriter(rw *responseWriter) {
	*rw = responseWriter{}
	responseWriterPool.Put(rw)
}

// strip deletes the access-token header (and the identity-assertion
// header) and trailers of that name.
func (w *responseWriter) strip() {
	hd := w.ResponseWriter.Header()
	for k := range hd {
		if w.forbidden(k) ||
			len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix &&
				w.forbidden(k[len(http.TrailerPrefix):]) {
			delete(hd, k)
		}
	}
}

func (w *responseWriter) forbidden(k string) bool {
	return sameHeader(k, w.norm) || w.norm2 != "" && sameHeader(k, w.norm2)
}

// beforeBody strips the headers if the final header has not gone out yet.
func (w *responseWriter) beforeBody() {
	if !w.wroteHeader {
		w.strip()
		w.wroteHeader = true
	}
}

// finish strips once more after the handler returned: net/http sends
// trailers (values set after WriteHeader) only then.
func (w *responseWriter) finish() { w.strip() }

// WriteHeader implements http.ResponseWriter.
func (w *responseWriter) WriteHeader(code int) {
	w.strip()
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.wroteHeader = true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (w *responseWriter) Write(p []byte) (int, error) {
	w.beforeBody()
	return w.ResponseWriter.Write(p)
}

// ReadFrom implements io.ReaderFrom, keeping the underlying writer's fast
// path (sendfile) when it has one.
func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	w.beforeBody()
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(w.ResponseWriter, src)
}

// Flush implements http.Flusher. It does nothing if the underlying writer
// cannot flush.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError flushes the underlying writer (http.ResponseController uses it).
func (w *responseWriter) FlushError() error {
	w.beforeBody()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker for handlers that type-assert it; it
// fails with an error wrapping http.ErrNotSupported when the underlying
// writer cannot hijack.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
