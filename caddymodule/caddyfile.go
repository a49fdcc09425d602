package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rebell-gateway/caddy-rebell/guard"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("rebell_auth", parseAuthCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("rebell_auth", httpcaddyfile.Before, "basic_auth")
}

func parseAuthCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(Auth)
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return a, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	rebell_auth [<matcher>] {
//		endpoint               <url>
//		client_id              <id>
//		private_key_file       <path>
//		private_key            <value>
//		rebell_public_key_file <path>...
//		rebell_public_key      <value>...
//		key_version            <n>
//		signature_algorithm    RSA256|SHA256withRSA
//		api_version            v1|v2
//		reference_client_id    <id>
//		customer_belongs_to    <site>
//		timeout                <duration>
//		retries                <n>
//		login_path             <path>
//		logout_path            <path>
//		session_header         <name>
//		session_cookie         <name>|off
//		refresh_ahead          <duration>
//		idle_timeout           <duration>
//		login_dedup_window     <duration>
//		max_sessions           <n>
//		hot_sessions           <n>
//		max_concurrent_calls   <n>
//		login_calls_per_second <n>
//		access_token_header    <name>
//		customer_id_header     <name>
//		public                 <paths...>
//		login_rate             <n>/<period> [burst <n>] | off
//		allowed_origins        <origins...>
//		cookie {
//			secure    auto|always
//			same_site lax|strict|none
//			domain    <domain>
//		}
//		errors                 json|caddy
//		identity_assertion {
//			signing_key_file  <path>
//			signing_key       <value>
//			previous_key_file <path>...
//			header            <name>
//			audience          <aud>
//			issuer            <iss>
//			ttl               <duration>
//			jwks_path         <path>
//		}
//		store redis {
//			address        <host:port>...
//			master_name    <name>
//			username       <user>
//			password       <password>
//			db             <n>
//			tls
//			key_prefix     <prefix>
//			encryption_key <base64>
//			previous_encryption_keys <base64>...
//		}
//	}
//
// rebell_public_key_file and rebell_public_key may be given more than once,
// or with several values: a response verifies if any key verifies it.
//
// store redis shares sessions between several Caddy instances: address
// lists one server, the nodes of a Redis Cluster, or (with master_name) the
// Sentinels; encryption_key (32 random bytes in base64, the same on every
// instance) is required.
func (a *Auth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	strs := map[string]*string{
		"endpoint":            &a.Endpoint,
		"client_id":           &a.ClientID,
		"private_key":         &a.PrivateKey,
		"reference_client_id": &a.ReferenceClientID,
		"customer_belongs_to": &a.CustomerBelongsTo,
		"login_path":          &a.LoginPath,
		"logout_path":         &a.LogoutPath,
		"session_header":      &a.SessionHeader,
		"session_cookie":      &a.SessionCookie,
		"access_token_header": &a.AccessTokenHeader,
		"customer_id_header":  &a.CustomerIDHeader,
	}
	files := map[string]*string{
		"private_key_file": &a.PrivateKeyFile,
	}
	durations := map[string]*caddy.Duration{
		"timeout":       &a.Timeout,
		"refresh_ahead": &a.RefreshAhead,
		"idle_timeout":  &a.IdleTimeout,
	}
	seen := map[string]int{}
	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "rebell_public_key_file", "rebell_public_key":
			// May repeat (key rotation): the first value fills the
			// singular field, later ones the plural.
			if err := a.unmarshalPublicKey(d, sub); err != nil {
				return err
			}
			continue
		}
		if line, dup := seen[sub]; dup {
			return d.Errf("%s: already set on line %d", sub, line)
		}
		seen[sub] = d.Line()
		if dst, ok := strs[sub]; ok {
			if err := oneArg(d, dst); err != nil {
				return err
			}
			continue
		}
		if dst, ok := files[sub]; ok {
			if err := fileArg(d, dst); err != nil {
				return err
			}
			continue
		}
		if dst, ok := durations[sub]; ok {
			if err := durationArg(d, dst); err != nil {
				return err
			}
			continue
		}
		switch sub {
		case "key_version":
			var v int
			if err := intArg(d, &v); err != nil {
				return err
			}
			a.KeyVersion = &v
		case "retries":
			var v int
			if err := intArg(d, &v); err != nil {
				return err
			}
			if v > maxRetries {
				return d.Errf("retries: %d is more than %d", v, maxRetries)
			}
			a.Retries = &v
		case "max_sessions":
			var v int
			if err := intArg(d, &v); err != nil {
				return err
			}
			if v == 0 || v > maxMaxSessions {
				return d.Errf("max_sessions: %d is not between 1 and %d (100 million)", v, maxMaxSessions)
			}
			a.MaxSessions = int64(v)
		case "hot_sessions":
			var v int
			if err := intArg(d, &v); err != nil {
				return err
			}
			if v == 0 || v > maxMaxSessions {
				return d.Errf("hot_sessions: %d is not between 1 and %d (100 million)", v, maxMaxSessions)
			}
			a.HotSessions = int64(v)
		case "max_concurrent_calls":
			if err := intArg(d, &a.MaxConcurrentCalls); err != nil {
				return err
			}
			if a.MaxConcurrentCalls < 1 || a.MaxConcurrentCalls > guard.MaxMaxConcurrent {
				return d.Errf("max_concurrent_calls: %d is not between 1 and %d", a.MaxConcurrentCalls, guard.MaxMaxConcurrent)
			}
		case "login_calls_per_second":
			if err := intArg(d, &a.LoginCallsPerSecond); err != nil {
				return err
			}
			if a.LoginCallsPerSecond < 1 || a.LoginCallsPerSecond > guard.MaxLoginRate {
				return d.Errf("login_calls_per_second: %d is not between 1 and %d", a.LoginCallsPerSecond, guard.MaxLoginRate)
			}
		case "login_dedup_window":
			var v caddy.Duration
			if err := durationArg(d, &v); err != nil {
				return err
			}
			a.LoginDedupWindow = &v
		case "signature_algorithm":
			if err := oneArg(d, &a.SignatureAlgorithm); err != nil {
				return err
			}
			if a.SignatureAlgorithm != "RSA256" && a.SignatureAlgorithm != "SHA256withRSA" {
				return d.Errf("signature_algorithm: %q is not RSA256 or SHA256withRSA", a.SignatureAlgorithm)
			}
		case "api_version":
			if err := oneArg(d, &a.APIVersion); err != nil {
				return err
			}
			if a.APIVersion != "v1" && a.APIVersion != "v2" {
				return d.Errf("api_version: %q is not v1 or v2", a.APIVersion)
			}
		case "public":
			a.Public = d.RemainingArgs()
			if len(a.Public) == 0 {
				return d.Err("public: at least one path is required")
			}
		case "errors":
			if err := oneArg(d, &a.Errors); err != nil {
				return err
			}
			if a.Errors != "json" && a.Errors != "caddy" {
				return d.Errf("errors: %q is not json or caddy", a.Errors)
			}
		case "store":
			if err := a.unmarshalStore(d); err != nil {
				return err
			}
		case "revoke":
			if err := oneArg(d, &a.Revoke); err != nil {
				return err
			}
			if a.Revoke != "on" && a.Revoke != "off" {
				return d.Errf("revoke: %q is not on or off", a.Revoke)
			}
		case "login_rate":
			if err := a.unmarshalLoginRate(d); err != nil {
				return err
			}
		case "allowed_origins":
			a.AllowedOrigins = d.RemainingArgs()
			if len(a.AllowedOrigins) == 0 {
				return d.Err("allowed_origins: at least one origin is required")
			}
		case "cookie":
			if err := a.unmarshalCookie(d); err != nil {
				return err
			}
		case "identity_assertion":
			if err := a.unmarshalIdentity(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized subdirective %s", strconv.Quote(sub))
		}
	}
	return nil
}

// unmarshalPublicKey reads the values of a rebell_public_key_file or
// rebell_public_key line (one or more).
func (a *Auth) unmarshalPublicKey(d *caddyfile.Dispenser, sub string) error {
	single, more := &a.RebellPublicKeyFile, &a.RebellPublicKeyFiles
	if sub == "rebell_public_key" {
		single, more = &a.RebellPublicKey, &a.RebellPublicKeys
	}
	vals := d.RemainingArgs()
	if len(vals) == 0 {
		return d.ArgErr()
	}
	for _, v := range vals {
		// A file is read at provisioning, not here (see fileArg).
		if *single == "" {
			*single = v
		} else {
			*more = append(*more, v)
		}
	}
	return nil
}

// unmarshalStore parses `store redis { ... }`. Its errors name the field and
// never contain a password or an encryption key.
func (a *Auth) unmarshalStore(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("store: missing the store type (redis)")
	}
	if typ := d.Val(); typ != "redis" {
		return d.Errf("store: unknown store type %s (only redis)", strconv.Quote(typ))
	}
	if d.NextArg() {
		return d.Err("store redis: settings go in a block: store redis { ... }")
	}
	rs := &RedisStore{}
	strs := map[string]*string{
		"master_name":    &rs.MasterName,
		"username":       &rs.Username,
		"password":       &rs.Password,
		"key_prefix":     &rs.KeyPrefix,
		"encryption_key": &rs.EncryptionKey,
	}
	seen := map[string]int{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if line, dup := seen[sub]; dup {
			return d.Errf("store redis: %s: already set on line %d", sub, line)
		}
		seen[sub] = d.Line()
		if dst, ok := strs[sub]; ok {
			if err := oneArg(d, dst); err != nil {
				return err
			}
			if *dst == "" {
				return d.Errf("store redis: %s: empty", sub)
			}
			continue
		}
		switch sub {
		case "previous_encryption_keys":
			rs.PreviousEncryptionKeys = d.RemainingArgs()
			if len(rs.PreviousEncryptionKeys) == 0 {
				return d.Err("store redis: previous_encryption_keys: at least one key is required")
			}
		case "address":
			rs.Address = d.RemainingArgs()
			if len(rs.Address) == 0 {
				return d.Err("store redis: address: at least one host:port is required")
			}
		case "db":
			if err := intArg(d, &rs.DB); err != nil {
				return err
			}
		case "tls":
			if d.NextArg() {
				return d.Err("store redis: tls takes no arguments")
			}
			rs.TLS = true
		default:
			return d.Errf("store redis: unrecognized subdirective %s", strconv.Quote(sub))
		}
	}
	if len(rs.Address) == 0 {
		return d.Err("store redis: address: required")
	}
	if rs.EncryptionKey == "" {
		return d.Err("store redis: encryption_key: required (32 random bytes in base64)")
	}
	a.Store = &StoreConfig{Redis: rs}
	return nil
}

var _ caddyfile.Unmarshaler = (*Auth)(nil)
