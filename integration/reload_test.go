package integration

// Reload tests of the cache pool's identity (caddymodule/pool.go): a reload
// that changes a setting in the identity starts a new, empty cache; one that
// changes any other setting keeps every session (README.md, "Putting it in
// front of a real API", step 4, and "Several instances"). One Caddy process
// per test, reloaded through the admin API as `caddy reload` does.

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
)

// option is one line of a rebell_auth block.
type option struct{ name, value string }

// reloadGateway is one Caddy process running the sandbox (at the root of
// sbPort and under /api/open on prefixPort) and a gateway whose options the
// test changes between reloads.
type reloadGateway struct {
	*gateway
	prefixPort int
	base       []option
	store      []option // the store block's options, or nil
}

func newReloadGateway(t *testing.T, base, store []option) *reloadGateway {
	g := &reloadGateway{
		gateway:    &gateway{t: t, up: newUpstream(t), kf: writeKeys(t, t.TempDir()), gwPort: freePort(t), sbPort: freePort(t)},
		prefixPort: freePort(t),
		base:       base,
		store:      store,
	}
	g.base = append([]option{
		{"endpoint", fmt.Sprintf("http://127.0.0.1:%d", g.sbPort)},
		{"client_id", "MERCHANT_IT"},
		{"private_key_file", g.kf.MerchantPrivate},
		{"rebell_public_key_file", g.kf.PlatformPublic},
	}, base...)
	g.gateway.base = fmt.Sprintf("http://127.0.0.1:%d", g.gwPort)
	g.sandbox = fmt.Sprintf("http://127.0.0.1:%d", g.sbPort)
	g.caddy = startCaddy(t, g.caddyfileWith(), g.gwPort, g.sbPort, g.prefixPort)
	return g
}

// caddyfileWith is the base configuration with changes applied: a change's
// value replaces the option of that name (or is added); "" removes it. A
// name "store.<option>" is an option of the store block.
func (g *reloadGateway) caddyfileWith(changes ...option) string {
	apply := func(base []option, prefix string) []string {
		changed := map[string]bool{}
		var lines []string
		for _, o := range base {
			for _, c := range changes {
				if c.name == prefix+o.name {
					o.value, changed[c.name] = c.value, true
				}
			}
			if o.value != "" {
				lines = append(lines, o.name+" "+o.value)
			}
		}
		for _, c := range changes {
			name, ok := strings.CutPrefix(c.name, prefix)
			if ok && !changed[c.name] && c.value != "" && (prefix != "" || !strings.HasPrefix(name, "store.")) {
				lines = append(lines, name+" "+c.value)
			}
		}
		return lines
	}
	lines := apply(g.base, "")
	store := ""
	if g.store != nil {
		store = "\n\t\tstore redis {\n\t\t\t" + strings.Join(apply(g.store, "store."), "\n\t\t\t") + "\n\t\t}"
	}
	return sandboxSite(g.kf, g.sbPort, g.prefixPort, "") + fmt.Sprintf(`
http://127.0.0.1:%d {
	rebell_auth {
		%s%s
	}
	reverse_proxy %s
}
`, g.gwPort, strings.Join(lines, "\n\t\t"), store, strings.TrimPrefix(g.up.URL, "http://"))
}

// sessions is the number of sessions the gateway holds in memory, from the
// admin API.
func (g *reloadGateway) sessions() int {
	g.t.Helper()
	resp, err := http.Get("http://" + g.caddy.AdminAddr + "/rebell/sessions")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Sessions *int }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Sessions == nil {
		g.t.Fatalf("admin /rebell/sessions: %d %v", resp.StatusCode, err)
	}
	return *body.Sessions
}

// use sends a request with the session in every place a changed
// session_header or session_cookie could look for it.
func (g *reloadGateway) use(sessionID string) (int, map[string]any) {
	g.t.Helper()
	resp, body := g.call(http.MethodGet, "/api/reload", map[string]string{
		"Authorization": "Bearer " + sessionID,
		"X-Session":     sessionID,
		"Cookie":        "rebell_sid=" + sessionID,
	})
	return resp.StatusCode, body
}

// reloadCase is one reload: changed options, and whether it must start a
// new, empty cache. status is what a request with the session logged in
// before the reload gets (0: 200 if kept, 401 if not; -1: not checked).
type reloadCase struct {
	change   []option
	newCache bool
	status   int
}

// runReloads logs in under the base configuration, reloads with the case's
// change, and checks the sessions in memory and the session's next request.
func (g *reloadGateway) runReloads(cases []reloadCase) {
	t := g.t
	for i, c := range cases {
		g.caddy.reload(g.caddyfileWith())
		lr := g.mustLogin(fmt.Sprintf("21880000000012%02d", i))
		if status, body := g.use(lr.SessionID); status != http.StatusOK {
			t.Fatalf("%v: before the reload: %d %v", c.change, status, body)
		}
		before := g.sessions()
		g.caddy.reload(g.caddyfileWith(c.change...))
		after := g.sessions()
		status, body := g.use(lr.SessionID)
		want := c.status
		if want == 0 {
			want = http.StatusOK
			if c.newCache {
				want = http.StatusUnauthorized
			}
		}
		switch {
		case c.newCache && after != 0:
			t.Errorf("changing %v kept the cache (%d sessions in memory after the reload), want a new, empty one", c.change, after)
		case !c.newCache && (before < 1 || after != before):
			t.Errorf("changing %v: %d sessions in memory before the reload, %d after; want them kept", c.change, before, after)
		}
		if want != -1 && status != want {
			t.Errorf("changing %v: the session then got %d %v, want %d", c.change, status, body, want)
		}
	}
}

// TestReloadPoolIdentity changes, one reload at a time, every setting in the
// pool's identity (a new, empty cache: the session is unknown after the
// reload) and every setting outside it (the session is kept).
func TestReloadPoolIdentity(t *testing.T) {
	g := newReloadGateway(t, []option{
		{"api_version", "v2"},
		{"max_sessions", "1000"},
		{"refresh_ahead", "5m"},
		{"login_dedup_window", "60s"},
		{"timeout", "5s"},
		{"retries", "1"},
	}, nil)
	// The same keys in other files and spellings.
	copyKey := filepath.Join(t.TempDir(), "merchant-copy.pem")
	pem, err := os.ReadFile(g.kf.MerchantPrivate)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyKey, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	_, platform := testKeys(t)
	pubDER, err := x509.MarshalPKIXPublicKey(&platform.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	g.runReloads([]reloadCase{
		{[]option{{"endpoint", fmt.Sprintf("http://127.0.0.1:%d/api/open", g.prefixPort)}}, true, 0},
		{[]option{{"client_id", "MERCHANT_OTHER"}}, true, 0},
		{[]option{{"api_version", "v1"}}, true, 0},
		{[]option{{"reference_client_id", "3333010071465913001"}}, true, 0},
		{[]option{{"customer_belongs_to", "REBELL"}}, true, 0},
		{[]option{{"max_sessions", "2000"}}, true, 0},
		{[]option{{"refresh_ahead", "4m"}}, true, 0},
		{[]option{{"idle_timeout", "1h"}}, true, 0},
		{[]option{{"login_dedup_window", "30s"}}, true, 0},

		{[]option{{"private_key_file", copyKey}}, false, 0},
		{[]option{{"rebell_public_key_file", ""}}, false, 0}, // responses not verified (WARN)
		{[]option{{"rebell_public_key_file", ""}, {"rebell_public_key", base64.StdEncoding.EncodeToString(pubDER)}}, false, 0},
		{[]option{{"key_version", "2"}}, false, 0},
		{[]option{{"signature_algorithm", "SHA256withRSA"}}, false, 0},
		{[]option{{"timeout", "4s"}}, false, 0},
		{[]option{{"retries", "2"}}, false, 0},
		{[]option{{"login_path", "/auth/login"}}, false, 0},
		{[]option{{"logout_path", "/auth/logout"}}, false, 0},
		{[]option{{"session_header", "X-Session"}}, false, 0},
		{[]option{{"session_cookie", "rebell_sid"}}, false, 0},
		{[]option{{"access_token_header", "X-Token"}}, false, 0},
		{[]option{{"customer_id_header", "X-Customer"}}, false, 0},
	})

	// The one config without a Rebell public key said, at WARN, that
	// responses are not verified (README.md, "Caddyfile").
	var warns []string
	for _, line := range strings.Split(g.caddy.logs.String(), "\n") {
		if strings.Contains(line, "no Rebell public key configured") {
			warns = append(warns, line)
		}
	}
	if len(warns) != 1 || !strings.Contains(warns[0], `"level":"warn"`) {
		t.Errorf("want one WARN for the config without rebell_public_key_file, got %d lines: %q", len(warns), warns)
	}
}

// TestReloadPoolIdentityStore: every setting of `store redis` is in the
// identity: a reload that changes one starts a new, empty memory tier. The
// sessions in Redis stay: the same Redis under another address still has
// the session; another key prefix, key or database does not; a store that
// cannot be used answers 503 store_unavailable.
func TestReloadPoolIdentityStore(t *testing.T) {
	rs := redistest.Start(t)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	port := rs.Addr[strings.LastIndexByte(rs.Addr, ':')+1:]
	g := newReloadGateway(t, []option{{"retries", "0"}, {"max_sessions", "1000"}}, []option{
		{"address", rs.Addr},
		{"key_prefix", "rl:"},
		{"db", "0"},
		{"encryption_key", base64.StdEncoding.EncodeToString(key)},
	})
	other := make([]byte, 32)
	if _, err := rand.Read(other); err != nil {
		t.Fatal(err)
	}
	const unavailable, unchecked = http.StatusServiceUnavailable, -1
	g.runReloads([]reloadCase{
		{[]option{{"store.address", "localhost:" + port}}, true, http.StatusOK},
		{[]option{{"store.key_prefix", "rl2:"}}, true, 0},
		{[]option{{"store.encryption_key", base64.StdEncoding.EncodeToString(other)}}, true, 0},
		{[]option{{"store.db", "1"}}, true, 0},
		// This Redis has no users or password: what a request gets depends on
		// the client library, not on the pool.
		{[]option{{"store.username", "gateway"}}, true, unchecked},
		{[]option{{"store.password", "secret"}}, true, unchecked},
		{[]option{{"store.tls", " "}}, true, unavailable},         // a flag: " " writes it without a value
		{[]option{{"max_sessions", "2000"}}, true, http.StatusOK}, // a new memory tier, the same Redis

		{[]option{{"retries", "1"}}, false, 0},
		{[]option{{"timeout", "4s"}}, false, 0},
	})
}
