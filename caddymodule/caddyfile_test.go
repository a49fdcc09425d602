package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/rebell-gateway/caddy-rebell/internal/testkeys"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestAuthCaddyfileGood(t *testing.T) {
	input := `rebell_auth {
		endpoint https://api.rebellapp.com/api/open
		client_id 2022091495540562874792
		private_key {env.REBELL_PRIVATE_KEY}
		rebell_public_key {env.REBELL_PUBLIC_KEY}
		key_version 0
		signature_algorithm SHA256withRSA
		api_version v2
		reference_client_id 3333010071465913001
		customer_belongs_to REBELL
		timeout 3s
		retries 0
		login_path /auth/login
		logout_path /auth/logout
		session_header X-Session
		session_cookie off
		refresh_ahead 2m
		idle_timeout 1d
		login_dedup_window 0
		max_sessions 5000
		hot_sessions 500
		access_token_header X-Token
		customer_id_header X-Customer
	}`
	var a Auth
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(a)
	want := `{"endpoint":"https://api.rebellapp.com/api/open","client_id":"2022091495540562874792","private_key":"{env.REBELL_PRIVATE_KEY}",` +
		`"rebell_public_key":"{env.REBELL_PUBLIC_KEY}","key_version":0,"signature_algorithm":"SHA256withRSA","api_version":"v2",` +
		`"reference_client_id":"3333010071465913001","customer_belongs_to":"REBELL","timeout":3000000000,"retries":0,` +
		`"login_path":"/auth/login","logout_path":"/auth/logout","session_header":"X-Session","session_cookie":"off",` +
		`"refresh_ahead":120000000000,"idle_timeout":86400000000000,"login_dedup_window":0,"max_sessions":5000,"hot_sessions":500,` +
		`"access_token_header":"X-Token","customer_id_header":"X-Customer"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestAuthCaddyfileBad(t *testing.T) {
	for name, tc := range map[string]struct{ input, want string }{
		"inline arg":       {"rebell_auth foo {\n}", "wrong argument count"},
		"unknown":          {"rebell_auth {\n\tclient_secret x\n}", `unrecognized subdirective "client_secret", at Testfile:2`},
		"missing arg":      {"rebell_auth {\n\tendpoint\n}", "wrong argument count"},
		"two args":         {"rebell_auth {\n\tclient_id a b\n}", "client_id takes one argument, at Testfile:2"},
		"bad duration":     {"rebell_auth {\n\ttimeout soon\n}", `timeout: invalid duration "soon"`},
		"negative dur":     {"rebell_auth {\n\n\trefresh_ahead -1m\n}", "must not be negative, at Testfile:3"},
		"bad retries":      {"rebell_auth {\n\tretries many\n}", `retries: "many" is not a non-negative whole number`},
		"too many retries": {"rebell_auth {\n\tretries 11\n}", "retries: 11 is more than 10"},
		"zero sessions":    {"rebell_auth {\n\tmax_sessions 0\n}", "max_sessions: 0 is not between 1 and 100000000"},
		"zero hot":         {"rebell_auth {\n\thot_sessions 0\n}", "hot_sessions: 0 is not between 1 and 100000000"},
		"bad algorithm":    {"rebell_auth {\n\tsignature_algorithm SHA1withRSA\n}", "is not RSA256 or SHA256withRSA"},
		"bad version":      {"rebell_auth {\n\tapi_version v3\n}", `api_version: "v3" is not v1 or v2`},
		"empty file":       {"rebell_auth {\n\tclient_id x\n\tprivate_key_file \"\"\n}", "private_key_file: empty path, at Testfile:3"},
		"duplicate":        {"rebell_auth {\n\tclient_id x\n\tclient_id y\n}", "client_id: already set on line 2, at Testfile:3"},
	} {
		t.Run(name, func(t *testing.T) {
			var a Auth
			err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSandboxCaddyfile(t *testing.T) {
	var s Sandbox
	err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("rebell_sandbox {\n\tclient_id C\n\taccess_token_ttl 1m\n\trefresh_token_ttl 30d\n\tauth_code_ttl 90s\n}"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(s)
	if want := `{"client_id":"C","access_token_ttl":60000000000,"refresh_token_ttl":2592000000000000,"auth_code_ttl":90000000000}`; string(got) != want {
		t.Errorf("got %s", got)
	}
	for name, tc := range map[string]struct{ input, want string }{
		"unknown":      {"rebell_sandbox {\n\tclient_secret x\n}", "unrecognized subdirective client_secret, at Testfile:2"},
		"bad duration": {"rebell_sandbox {\n\tauth_code_ttl 5 minutes\n}", "auth_code_ttl takes one argument, at Testfile:2"},
		"not duration": {"rebell_sandbox {\n\taccess_token_ttl forever\n}", `access_token_ttl: invalid duration "forever"`},
		"empty file":   {"rebell_sandbox {\n\tprivate_key_file \"\"\n}", "private_key_file: empty path, at Testfile:2"},
		"inline arg":   {"rebell_sandbox x", "wrong argument count"},
	} {
		t.Run(name, func(t *testing.T) {
			var s Sandbox
			err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestDirectivesNeedNoOrder adapts a site that uses both directives directly,
// with a matcher, and no order option. rebell_auth is ordered right before
// basic_auth (README.md, "Caddyfile"): written after it, it still runs first.
func TestDirectivesNeedNoOrder(t *testing.T) {
	input := `:8080 {
	basic_auth /admin/* {
		Bob $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG
	}
	rebell_auth /api/* {
		endpoint http://127.0.0.1:8081
		client_id C
	}
	reverse_proxy 127.0.0.1:9000
}
:8081 {
	rebell_sandbox
}
`
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{`"handler":"rebell_auth"`, `"handler":"rebell_sandbox"`, `"path":["/api/*"]`} {
		if !strings.Contains(s, want) {
			t.Errorf("adapted config lacks %s: %s", want, s)
		}
	}
	auth, basic, proxy := strings.Index(s, `"handler":"rebell_auth"`), strings.Index(s, `"handler":"authentication"`), strings.Index(s, `"handler":"reverse_proxy"`)
	if basic < 0 || auth > basic || auth > proxy {
		t.Errorf("rebell_auth is not ordered before basic_auth and reverse_proxy: %s", s)
	}
}

// TestAdaptCaddyfileExample is the golden adapt test of the demo. Run with
// -update to rewrite testdata/Caddyfile.example.json.
func TestAdaptCaddyfileExample(t *testing.T) {
	t.Chdir("..") // the demo's key paths are relative to the repository root
	input, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("caddymodule", "testdata", "Caddyfile.example.json")
	if *update {
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(input, nil)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_ = json.Indent(&buf, out, "", "\t")
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	caddytest.AssertAdapt(t, string(input), "caddyfile", string(want))
}

// testStoreKey is a well-formed encryption_key (32 bytes of base64).
const testStoreKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

func TestAuthCaddyfileStore(t *testing.T) {
	input := `rebell_auth {
		client_id C
		store redis {
			address 10.0.0.1:6379 10.0.0.2:6379 {env.REDIS_EXTRA}
			username gateway
			password {env.REDIS_PASSWORD}
			db 0
			tls
			key_prefix shop1:
			encryption_key {env.REBELL_STORE_KEY}
		}
		max_sessions 10
	}`
	var a Auth
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(a)
	want := `{"client_id":"C","max_sessions":10,"store":{"redis":{"address":["10.0.0.1:6379","10.0.0.2:6379","{env.REDIS_EXTRA}"],` +
		`"username":"gateway","password":"{env.REDIS_PASSWORD}","tls":true,"key_prefix":"shop1:","encryption_key":"{env.REBELL_STORE_KEY}"}}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	// Sentinel, and JSON that goes back to the same struct.
	input = "rebell_auth {\n\tstore redis {\n\t\taddress s1:26379\n\t\tmaster_name mymaster\n\t\tdb 3\n\t\tencryption_key " + testStoreKey + "\n\t}\n}"
	a = Auth{}
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, _ = json.Marshal(a)
	want = `{"store":{"redis":{"address":["s1:26379"],"master_name":"mymaster","db":3,"encryption_key":"` + testStoreKey + `"}}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	var back Auth
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if again, _ := json.Marshal(back); string(again) != want {
		t.Errorf("round trip: %s", again)
	}
}

func TestAuthCaddyfileStoreBad(t *testing.T) {
	const secretPassword, secretKey = "hunter2-secret", "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk="
	block := func(lines string) string {
		return "rebell_auth {\n\tstore redis {\n" + lines + "\t}\n}"
	}
	const ok = "\t\taddress 127.0.0.1:6379\n\t\tencryption_key " + testStoreKey + "\n"
	for name, tc := range map[string]struct{ input, want string }{
		"no type":          {"rebell_auth {\n\tstore {\n\t}\n}", "store: missing the store type (redis), at Testfile:2"},
		"unknown type":     {"rebell_auth {\n\tstore memcached {\n\t}\n}", `store: unknown store type "memcached" (only redis), at Testfile:2`},
		"inline settings":  {"rebell_auth {\n\tstore redis 127.0.0.1:6379\n}", "store redis: settings go in a block"},
		"unknown sub":      {block(ok + "\t\tpool_size 10\n"), `store redis: unrecognized subdirective "pool_size", at Testfile:5`},
		"no address":       {block("\t\tencryption_key " + testStoreKey + "\n"), "store redis: address: required"},
		"empty address":    {block("\t\taddress\n" + "\t\tencryption_key " + testStoreKey + "\n"), "store redis: address: at least one host:port is required, at Testfile:3"},
		"no key":           {block("\t\taddress 127.0.0.1:6379\n"), "store redis: encryption_key: required"},
		"duplicate":        {block(ok + "\t\taddress 127.0.0.1:6380\n"), "store redis: address: already set on line 3, at Testfile:5"},
		"duplicate store":  {"rebell_auth {\n\tstore redis {\n" + ok + "\t}\n\tstore redis {\n" + ok + "\t}\n}", "store: already set on line 2, at Testfile:6"},
		"bad db":           {block(ok + "\t\tdb one\n"), `db: "one" is not a non-negative whole number, at Testfile:5`},
		"tls arg":          {block(ok + "\t\ttls on\n"), "store redis: tls takes no arguments, at Testfile:5"},
		"password args":    {block(ok + "\t\tpassword " + secretPassword + " " + secretPassword + "\n"), "password takes one argument, at Testfile:5"},
		"key args":         {block("\t\taddress 127.0.0.1:6379\n\t\tencryption_key " + secretKey + " " + secretKey + "\n"), "encryption_key takes one argument, at Testfile:4"},
		"duplicate secret": {block(ok + "\t\tpassword " + secretPassword + "\n\t\tpassword " + secretPassword + "\n"), "store redis: password: already set on line 5, at Testfile:6"},
		"password no arg":  {block(ok + "\t\tpassword\n"), "wrong argument count"},
	} {
		t.Run(name, func(t *testing.T) {
			var a Auth
			err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secretPassword) || strings.Contains(err.Error(), secretKey) {
				t.Fatalf("error shows a secret: %v", err)
			}
		})
	}
}

func TestDecodeEncryptionKey(t *testing.T) {
	raw := []byte("0123456789abcdef0123456789abcdef")
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		key, err := decodeEncryptionKey(enc.EncodeToString(raw))
		if err != nil || !bytes.Equal(key, raw) {
			t.Errorf("%v: %v", key, err)
		}
	}
	// A key with + and / in standard base64, and its URL-safe spelling.
	odd := bytes.Repeat([]byte{0xfb, 0xff}, 16)
	for _, s := range []string{base64.StdEncoding.EncodeToString(odd), base64.RawURLEncoding.EncodeToString(odd)} {
		if key, err := decodeEncryptionKey(s); err != nil || !bytes.Equal(key, odd) {
			t.Errorf("%s: %v %v", s, key, err)
		}
	}
	for in, want := range map[string]string{
		"": "store: encryption_key: required",
		base64.StdEncoding.EncodeToString(raw[:16]):             "store: encryption_key: must be 32 bytes of base64 (got 16 bytes)",
		base64.StdEncoding.EncodeToString(append(raw, 'x')):     "store: encryption_key: must be 32 bytes of base64 (got 33 bytes)",
		"not base64 at all! secret-" + string(raw):              "store: encryption_key: must be 32 bytes of base64 (it is not valid base64)",
		hex.EncodeToString(raw[:24]) /* 48 hex chars → 36 B */ : "store: encryption_key: must be 32 bytes of base64 (got 36 bytes)",
	} {
		_, err := decodeEncryptionKey(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
		if in != "" && err != nil && strings.Contains(err.Error(), in) {
			t.Errorf("error shows the key: %v", err)
		}
	}
}

// storeAuth returns an Auth whose Rebell settings are valid (the endpoint is
// never called), with the given store.
func storeAuth(rs *RedisStore) *Auth {
	return &Auth{
		Endpoint:   "http://127.0.0.1:1",
		ClientID:   "STORE_TEST",
		PrivateKey: string(rebell.EncodePrivateKeyPEM(testkeys.RSA(0))),
		Store:      &StoreConfig{Redis: rs},
	}
}

func TestProvisionStoreErrors(t *testing.T) {
	t.Setenv("REBELL_TEST_STORE_KEY", base64.StdEncoding.EncodeToString(make([]byte, 16)))
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for name, tc := range map[string]struct {
		store *StoreConfig
		want  string
	}{
		"short key": {&StoreConfig{Redis: &RedisStore{Address: []string{"127.0.0.1:6379"}, EncryptionKey: "{env.REBELL_TEST_STORE_KEY}"}},
			"store: encryption_key: must be 32 bytes of base64 (got 16 bytes)"},
		"no key":       {&StoreConfig{Redis: &RedisStore{Address: []string{"127.0.0.1:6379"}}}, "store: encryption_key: required"},
		"no address":   {&StoreConfig{Redis: &RedisStore{EncryptionKey: testStoreKey}}, "store: address: required"},
		"env empty":    {&StoreConfig{Redis: &RedisStore{Address: []string{"{env.REBELL_TEST_UNSET_ADDR}"}, EncryptionKey: testStoreKey}}, "store: address: required"},
		"bad address":  {&StoreConfig{Redis: &RedisStore{Address: []string{"redis-host"}, EncryptionKey: testStoreKey}}, `store: address: entry 1 is not host:port`},
		"negative db":  {&StoreConfig{Redis: &RedisStore{Address: []string{"h:1"}, DB: -1, EncryptionKey: testStoreKey}}, "store: db: -1 is not between 0 and 65535"},
		"cluster db":   {&StoreConfig{Redis: &RedisStore{Address: []string{"h:1", "h:2"}, DB: 2, EncryptionKey: testStoreKey}}, "store: db: a Redis Cluster"},
		"no type":      {&StoreConfig{}, "store: no store type set"},
		"brace prefix": {&StoreConfig{Redis: &RedisStore{Address: []string{"h:1"}, KeyPrefix: "{app}:", EncryptionKey: testStoreKey}}, "store: key_prefix: must not contain"},
	} {
		t.Run(name, func(t *testing.T) {
			a := storeAuth(nil)
			a.Store = tc.store
			err := a.Provision(ctx)
			if err == nil {
				_ = a.Cleanup()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if err := a.Cleanup(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestStorePoolKey: the pool key changes with every store setting, secrets
// included, without containing them; placeholders are resolved first.
func TestStorePoolKey(t *testing.T) {
	t.Setenv("REBELL_TEST_REDIS", "10.0.0.1:6379, 10.0.0.2:6379")
	t.Setenv("REBELL_TEST_KEY", testStoreKey)
	base := func() *RedisStore {
		return &RedisStore{Address: []string{"{env.REBELL_TEST_REDIS}"}, Password: "pw-secret", EncryptionKey: "{env.REBELL_TEST_KEY}"}
	}
	key := func(rs *RedisStore) poolIdentity {
		t.Helper()
		a := storeAuth(rs)
		if rs == nil {
			a.Store = nil
		}
		a.setDefaults()
		var err error
		if a.storeCfg, err = a.provisionStore(caddy.NewReplacer()); err != nil {
			t.Fatal(err)
		}
		return a.poolIdentity()
	}
	rs := base()
	k0 := key(rs)
	if got := rs.Address; len(got) != 2 || got[0] != "10.0.0.1:6379" || got[1] != "10.0.0.2:6379" {
		t.Errorf("addresses %q", got)
	}
	if rs.KeyPrefix != "rebell:" {
		t.Errorf("key_prefix default %q", rs.KeyPrefix)
	}
	if s := fmt.Sprintf("%#v", k0); strings.Contains(s, "pw-secret") || strings.Contains(s, testStoreKey) {
		t.Fatal("pool key shows a secret")
	}
	if k := key(base()); k != k0 {
		t.Error("the same store settings gave another pool key")
	}
	explicit := base()
	explicit.KeyPrefix = "rebell:"
	if k := key(explicit); k != k0 {
		t.Error("the default key_prefix spelled out gave another pool key")
	}
	seen := map[poolIdentity]string{k0: "base", key(nil): "no store"}
	for name, change := range map[string]func(*RedisStore){
		"address":        func(r *RedisStore) { r.Address = []string{"10.0.0.1:6379"} },
		"master_name":    func(r *RedisStore) { r.MasterName = "m" },
		"username":       func(r *RedisStore) { r.Username = "u" },
		"password":       func(r *RedisStore) { r.Password = "pw-other" },
		"db":             func(r *RedisStore) { r.MasterName, r.DB = "m", 1 },
		"tls":            func(r *RedisStore) { r.TLS = true },
		"key_prefix":     func(r *RedisStore) { r.KeyPrefix = "other:" },
		"encryption_key": func(r *RedisStore) { r.EncryptionKey = base64.StdEncoding.EncodeToString(make([]byte, 32)) },
	} {
		rs := base()
		change(rs)
		k := key(rs)
		if prev, dup := seen[k]; dup {
			t.Errorf("changing %s gave the pool key of %s", name, prev)
		}
		seen[k] = name
	}
}

// TestProvisionStorePooled provisions with a store (Redis need not be up:
// the store does not connect at provisioning). The same settings share one
// cache; another password gets its own.
func TestProvisionStorePooled(t *testing.T) {
	t.Setenv("REBELL_TEST_STORE_KEY", testStoreKey)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	provision := func(password string) *Auth {
		t.Helper()
		a := storeAuth(&RedisStore{Address: []string{"127.0.0.1:1"}, Password: password, EncryptionKey: "{env.REBELL_TEST_STORE_KEY}"})
		if err := a.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Cleanup() })
		return a
	}
	a1, a2, a3 := provision("one"), provision("one"), provision("two")
	if a1.cache != a2.cache {
		t.Error("the same store settings did not share the cache")
	}
	if a1.cache == a3.cache {
		t.Error("another password shared the cache")
	}
	if a1.Store.Redis.KeyPrefix != "rebell:" || a1.Store.Redis.EncryptionKey != testStoreKey {
		t.Errorf("provisioned store %+v", a1.Store.Redis)
	}
}
