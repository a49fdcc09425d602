package handler

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzLoginBody: any body with any Content-Type gets 200, 400 or 413, and
// Login only ever sees a valid authCode.
func FuzzLoginBody(f *testing.F) {
	for _, seed := range []struct{ body, ct string }{
		{`{"authCode":"abc"}`, "application/json"},
		{`{"authCode":"abc","x":[1,{"y":null}]}`, "application/json; charset=utf-8"},
		{`{"authCode":"a\u0062c"}`, ""},
		{`{"authCode":"abc","authCode":"abc"}`, "application/json"},
		{`{"authCode":1}`, "application/json"},
		{`[`, "application/json"},
		{`authCode=abc`, "application/x-www-form-urlencoded"},
		{`authCode=a%2Bb&x=%zz`, "application/x-www-form-urlencoded"},
		{strings.Repeat("a", 8193), "text/plain"},
		{"", ""},
	} {
		f.Add([]byte(seed.body), seed.ct)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		e := newEnv(t, nil)
		r := httptest.NewRequest(http.MethodPost, "/rebell/login", strings.NewReader(string(body)))
		r.Header["Content-Type"] = []string{contentType}
		w, err := e.serve(r, nil)
		if err != nil {
			t.Fatalf("ServeHTTP = %v", err)
		}
		switch w.Code {
		case 200, 400, 413:
		default:
			t.Fatalf("status %d for %q (%q)", w.Code, body, contentType)
		}
		if w.Code == 413 && len(body) <= maxLoginBody {
			t.Fatalf("413 for %d bytes", len(body))
		}
		calls := e.s.loginCalls()
		if (w.Code == 200) != (len(calls) == 1) || len(calls) > 1 {
			t.Fatalf("status %d with Login calls %q", w.Code, calls)
		}
		for _, c := range calls {
			if !validAuthCode(c) {
				t.Fatalf("Login called with invalid code %q", c)
			}
		}
	})
}

// FuzzSessionCredential: any Authorization and Cookie values either pass
// with the credential gone from the upstream request, or get a 401; and the
// known session is found whenever a canonical credential names it.
func FuzzSessionCredential(f *testing.F) {
	id, _ := testIDs.New()
	for _, seed := range [][2]string{
		{"Bearer " + id, ""},
		{"bearer\t" + id + " ", "a=1"},
		{"Basic x", "rebell_session=" + id},
		{"", "a=1; rebell_session=\"" + id + "\"; b"},
		{"", "rebell_session=;rebell_session=" + id},
		{"Bearer", ";;=;"},
		{"Bearer " + id + ", Bearer x", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, auth, cookie string) {
		e := newEnv(t, nil)
		k, _ := testIDs.Parse(id)
		e.s.sessions[k] = testGrant()
		r := get("/api")
		if auth != "" {
			r.Header["Authorization"] = []string{auth}
		}
		if cookie != "" {
			r.Header["Cookie"] = []string{cookie}
		}
		up := &upstream{}
		w, err := e.serve(r, up)
		if err != nil {
			t.Fatalf("ServeHTTP = %v", err)
		}
		switch {
		case w.Code == 200:
			if !up.called {
				t.Fatal("200 without next")
			}
			if _, ok := up.header["Authorization"]; ok {
				t.Fatal("upstream saw Authorization")
			}
			for _, line := range up.header["Cookie"] {
				if hasCookie(line, "rebell_session") {
					t.Fatalf("upstream saw the session cookie: %q", line)
				}
			}
			if up.header.Get("X-Rebell-Access-Token") != testToken {
				t.Fatal("no access token injected")
			}
		case w.Code == 401:
			if up.called {
				t.Fatal("401 after next")
			}
			if auth == "Bearer "+id {
				t.Fatal("canonical credential rejected")
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
		if _, ok := r.Header["Authorization"]; ok {
			t.Fatal("Authorization left on the request")
		}
	})
}

// FuzzEdgeHygiene extends the hygiene to a request's trailers and its
// Connection header: whatever trailer names (announced or not) and
// Connection tokens a client sends, the next handler sees no trailer that
// names an identity header or the session header, and reverse_proxy's
// hop-by-hop removal leaves the injected identity on the request.
func FuzzEdgeHygiene(f *testing.F) {
	for _, seed := range [][4]string{
		{"X-Rebell-Customer-Id", "X-Rebell-Customer-Id", "X-Rebell-Access-Token, X-Rebell-Customer-Id", "spoof"},
		{"X_rebell_customer_id", "", "keep-alive", "spoof"},
		{"Authorization", "Authorization", "authorization", "Bearer AAAA"},
		{"X-Checksum", "X-Checksum, X-Rebell-Access-Token", ",, x_rebell_access_token ,upgrade", "abc"},
		{"x-rebell-access-token\t", "X-Rebell-Access-Token ", "X-REBELL-CUSTOMER-ID\t, keep-alive", ""},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	f.Fuzz(func(t *testing.T, trailer, announce, connection, value string) {
		e := newEnv(t, nil)
		id := e.s.add()
		r := httptest.NewRequest(http.MethodPost, "/api", nil)
		r.Header.Set("Authorization", bearer(id))
		r.Header["Connection"] = []string{connection}
		r.ContentLength = -1
		if announce != "" {
			r.Trailer = http.Header{}
			for name := range strings.SplitSeq(announce, ",") {
				r.Trailer[http.CanonicalHeaderKey(strings.TrimSpace(name))] = nil
			}
		}
		r.Body = &trailerBody{r: r, body: strings.NewReader("body"), values: http.Header{trailer: {value}}}
		next := &bodyReader{}
		w, err := e.serve(r, next)
		if err != nil || w.Code != 200 || !next.called {
			t.Fatalf("status %d, err %v", w.Code, err)
		}
		for _, hd := range []http.Header{next.announced, next.trailers} {
			for k := range hd {
				n := strings.TrimRight(normalizeHeaderName(k), " \t")
				if n == "x-rebell-access-token" || n == "x-rebell-customer-id" || n == "authorization" {
					t.Fatalf("trailer %q reached the next handler", k)
				}
			}
		}
		hd := next.header.Clone()
		removeConnectionHeaders(hd)
		if hd.Get("X-Rebell-Access-Token") != testToken || hd.Get("X-Rebell-Customer-Id") == "" {
			t.Fatalf("Connection %q dropped the identity", connection)
		}
	})
}
