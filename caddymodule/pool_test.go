package caddymodule

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// poolSetting is one setting of rebell_auth (or of its `store redis`) as the
// reload pool sees it: in the cache's identity or not, and a change to it.
type poolSetting struct {
	identity bool
	change   func(*Auth)
}

// poolSettings classifies every JSON setting of Auth and RedisStore. The
// README promises that changing keys, timeouts or retries keeps every
// session, and that changing the endpoint, client id, API version,
// reference client id, customer site, cache settings or the store block
// starts a new, empty cache.
var poolSettings = map[string]poolSetting{
	"endpoint":                {true, func(a *Auth) { a.Endpoint = "http://127.0.0.1:2" }},
	"client_id":               {true, func(a *Auth) { a.ClientID = "OTHER" }},
	"api_version":             {true, func(a *Auth) { a.APIVersion = "v1" }},
	"reference_client_id":     {true, func(a *Auth) { a.ReferenceClientID = "3333" }},
	"customer_belongs_to":     {true, func(a *Auth) { a.CustomerBelongsTo = "REBELL" }},
	"max_sessions":            {true, func(a *Auth) { a.MaxSessions = 5000 }},
	"hot_sessions":            {true, func(a *Auth) { a.HotSessions = 500 }},
	"refresh_ahead":           {true, func(a *Auth) { a.RefreshAhead = caddy.Duration(time.Minute) }},
	"idle_timeout":            {true, func(a *Auth) { a.IdleTimeout = caddy.Duration(time.Hour) }},
	"login_dedup_window":      {true, func(a *Auth) { d := caddy.Duration(0); a.LoginDedupWindow = &d }},
	"store":                   {true, func(a *Auth) { a.Store = nil }},
	"private_key_file":        {false, func(a *Auth) { a.PrivateKey, a.PrivateKeyFile = "", "/etc/caddy/rebell/merchant.pem" }},
	"private_key":             {false, func(a *Auth) { a.PrivateKey = "another key" }},
	"rebell_public_key_file":  {false, func(a *Auth) { a.RebellPublicKeyFile = "/etc/caddy/rebell/rebell.pem" }},
	"rebell_public_key":       {false, func(a *Auth) { a.RebellPublicKey = "a key" }},
	"key_version":             {false, func(a *Auth) { v := 7; a.KeyVersion = &v }},
	"signature_algorithm":     {false, func(a *Auth) { a.SignatureAlgorithm = "SHA256withRSA" }},
	"timeout":                 {false, func(a *Auth) { a.Timeout = caddy.Duration(time.Second) }},
	"retries":                 {false, func(a *Auth) { v := 0; a.Retries = &v }},
	"login_path":              {false, func(a *Auth) { a.LoginPath = "/auth/login" }},
	"logout_path":             {false, func(a *Auth) { a.LogoutPath = "/auth/logout" }},
	"session_header":          {false, func(a *Auth) { a.SessionHeader = "X-Session" }},
	"session_cookie":          {false, func(a *Auth) { a.SessionCookie = "off" }},
	"access_token_header":     {false, func(a *Auth) { a.AccessTokenHeader = "X-Token" }},
	"customer_id_header":      {false, func(a *Auth) { a.CustomerIDHeader = "X-Customer" }},
	"rebell_public_key_files": {false, func(a *Auth) { a.RebellPublicKeyFiles = []string{"/etc/caddy/rebell/next.pem"} }},
	"rebell_public_keys":      {false, func(a *Auth) { a.RebellPublicKeys = []string{"another key"} }},
	"max_concurrent_calls":    {false, func(a *Auth) { a.MaxConcurrentCalls = 8 }},
	"login_calls_per_second":  {false, func(a *Auth) { a.LoginCallsPerSecond = 5 }},
	"login_rate":              {false, func(a *Auth) { a.LoginRate = &LoginRateConfig{Off: true} }},
	"allowed_origins":         {false, func(a *Auth) { a.AllowedOrigins = []string{"https://shop.example"} }},
	"cookie":                  {false, func(a *Auth) { a.Cookie = &CookieConfig{SameSite: "strict"} }},
	"public":                  {false, func(a *Auth) { a.Public = []string{"/health"} }},
	"errors":                  {false, func(a *Auth) { a.Errors = "caddy" }},
	"revoke":                  {false, func(a *Auth) { a.Revoke = "off" }},
	"identity_assertion": {false, func(a *Auth) {
		a.IdentityAssertion = &IdentityAssertion{SigningKeyFile: "/etc/caddy/rebell/identity.pem"}
	}},

	"store.address":        {true, func(a *Auth) { a.Store.Redis.Address = []string{"10.0.0.1:6379"} }},
	"store.master_name":    {true, func(a *Auth) { a.Store.Redis.MasterName = "m" }},
	"store.username":       {true, func(a *Auth) { a.Store.Redis.Username = "u" }},
	"store.password":       {true, func(a *Auth) { a.Store.Redis.Password = "pw-other" }},
	"store.db":             {true, func(a *Auth) { a.Store.Redis.MasterName, a.Store.Redis.DB = "m", 1 }},
	"store.tls":            {true, func(a *Auth) { a.Store.Redis.TLS = true }},
	"store.key_prefix":     {true, func(a *Auth) { a.Store.Redis.KeyPrefix = "other:" }},
	"store.encryption_key": {true, func(a *Auth) { a.Store.Redis.EncryptionKey = base64.StdEncoding.EncodeToString(make([]byte, 32)) }},
	"store.previous_encryption_keys": {true, func(a *Auth) {
		a.Store.Redis.PreviousEncryptionKeys = []string{base64.StdEncoding.EncodeToString(make([]byte, 32))}
	}},
}

// jsonSettings lists the JSON names of t's fields, with prefix.
func jsonSettings(t reflect.Type, prefix string) []string {
	var names []string
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, prefix+name)
		}
	}
	return names
}

// TestPoolIdentityClassifiesEverySetting: every setting is either in the
// pool identity (changing it gives another identity, so a reload starts a
// new cache) or outside it (the identity stays, so a reload keeps every
// session), as poolSettings says; a setting added to Auth or RedisStore
// fails here until it is classified.
func TestPoolIdentityClassifiesEverySetting(t *testing.T) {
	settings := append(jsonSettings(reflect.TypeFor[Auth](), ""), jsonSettings(reflect.TypeFor[StoreConfig](), "")...)
	settings = append(settings, jsonSettings(reflect.TypeFor[RedisStore](), "store.")...)
	for _, name := range settings {
		if _, ok := poolSettings[name]; !ok && name != "redis" {
			t.Errorf("setting %s is not classified: add it to poolIdentity or to the settings left out of it (caddymodule/pool.go), and to poolSettings", name)
		}
	}

	base := func() *Auth {
		a := storeAuth(&RedisStore{Address: []string{"10.0.0.1:6379", "10.0.0.2:6379"}, Password: "pw-secret", EncryptionKey: testStoreKey})
		a.logger = caddy.Log()
		return a
	}
	identity := func(a *Auth) poolIdentity {
		t.Helper()
		a.setDefaults()
		var err error
		if a.storeCfg, err = a.provisionStore(caddy.NewReplacer()); err != nil {
			t.Fatal(err)
		}
		return a.poolIdentity()
	}
	id0 := identity(base())
	if id0 != identity(base()) {
		t.Fatal("the same settings gave another identity")
	}
	if s := fmt.Sprintf("%#v", id0); strings.Contains(s, "pw-secret") || strings.Contains(s, testStoreKey) {
		t.Errorf("the pool identity shows a secret: %s", s)
	}
	for name, s := range poolSettings {
		a := base()
		s.change(a)
		if changed := identity(a) != id0; changed != s.identity {
			if s.identity {
				t.Errorf("changing %s keeps the pool identity: a reload would keep the old cache and ignore it", name)
			} else {
				t.Errorf("changing %s changes the pool identity: a reload would drop every session", name)
			}
		}
	}
}
