package handler

import (
	"context"
	"net/http"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// fixedSessions answers every Get with one grant, like a cache hit.
type fixedSessions struct{ g *cache.Grant }

func (s fixedSessions) Get(context.Context, cache.Key) (*cache.Grant, error) { return s.g, nil }
func (fixedSessions) Login(context.Context, rebell.Secret) (string, *cache.Grant, error) {
	return "", nil, cache.ErrStoreUnavailable
}
func (fixedSessions) Logout(context.Context, cache.Key) error { return nil }
func (fixedSessions) ParseSessionID(id string) (cache.Key, bool) {
	return testIDs.Parse(id)
}

type nopNext struct{}

func (nopNext) ServeHTTP(w http.ResponseWriter, _ *http.Request) error {
	w.WriteHeader(http.StatusOK)
	return nil
}

// nopWriter is a ResponseWriter that keeps one header map.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// cachedRequest returns what one cached request needs: the handler, a
// request with a typical Mini App header set, and a function that restores
// the request's credential after a run (without allocating).
func cachedRequest(tb testing.TB, mutate ...func(*Config)) (*Handler, *http.Request, func()) {
	cfg := Config{Sessions: fixedSessions{testGrant()}, SessionCookie: "rebell_session"}
	for _, m := range mutate {
		m(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	id, _ := testIDs.New()
	auth := []string{"Bearer " + id}
	r, _ := http.NewRequest(http.MethodGet, "https://gw.example/api/orders?page=2", nil)
	r.Header = http.Header{
		"Accept":          {"application/json"},
		"Accept-Encoding": {"gzip"},
		"User-Agent":      {"Mozilla/5.0 AlipayClient/10.5 MiniProgram"},
		"X-Forwarded-For": {"203.0.113.9"},
		"Authorization":   auth,
	}
	return h, r, func() { r.Header["Authorization"] = auth }
}

// BenchmarkServeHTTPCached measures a request whose session is in the cache:
// hygiene, credential parse and SHA-256, lookup, header injection, the
// wrapped next.
func BenchmarkServeHTTPCached(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		h, r, reset := cachedRequest(b)
		w := &nopWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			reset()
			if err := h.ServeHTTP(w, r, nopNext{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			h, r, reset := cachedRequest(b)
			w := &nopWriter{h: http.Header{}}
			for pb.Next() {
				reset()
				if err := h.ServeHTTP(w, r, nopNext{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// TestServeHTTPCachedAllocs holds the hot path to its allocation budget
// (DESIGN: nothing that can be avoided; brief: at most 4).
func TestServeHTTPCachedAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	h, r, reset := cachedRequest(t)
	w := &nopWriter{h: http.Header{}}
	allocs := testing.AllocsPerRun(1000, func() {
		reset()
		_ = h.ServeHTTP(w, r, nopNext{})
	})
	if allocs > 1 {
		t.Errorf("a cached request allocates %v times, want at most 1 (the injected header values)", allocs)
	}
	// The access token in Authorization: "Bearer <token>" is made once per
	// grant, not per request.
	h, r, reset = cachedRequest(t, func(c *Config) { c.AccessTokenHeader = "Authorization" })
	allocs = testing.AllocsPerRun(1000, func() {
		reset()
		_ = h.ServeHTTP(w, r, nopNext{})
	})
	if allocs > 1 {
		t.Errorf("a cached request with the token in Authorization allocates %v times, want at most 1", allocs)
	}
}
