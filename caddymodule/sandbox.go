package caddymodule

import (
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/sandbox"
)

func init() {
	caddy.RegisterModule(Sandbox{})
	httpcaddyfile.RegisterHandlerDirective("rebell_sandbox", parseSandboxCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("rebell_sandbox", httpcaddyfile.Before, "respond")
}

// sandboxes keeps each sandbox's state (issued codes and tokens) across
// config reloads, keyed by the configuration that defines it.
var sandboxes = caddy.NewUsagePool()

// Sandbox is a Rebell OpenAPI emulator for local development, demos and
// tests: it answers applyToken (v1 and v2, under any path prefix) as strictly
// as Rebell does, signs every response, and offers test endpoints under
// /sandbox/ to issue auth codes, inject faults, read statistics and fetch its
// public key. It answers every request that reaches it and never calls the
// next handler. Never expose it in production: /sandbox/authcode gives an
// auth code for any customer to whoever asks, so bind its site to the
// loopback interface (`bind 127.0.0.1`, as Caddyfile.example does).
type Sandbox struct {
	// The only Client-Id accepted. Default: SANDBOX_CLIENT.
	ClientID string `json:"client_id,omitempty"`

	// Path of the merchant's public key (PEM PKIX or PKCS#1, bare base64 DER,
	// or a certificate), used to verify request signatures. When absent,
	// request signatures are not checked (logged at WARN).
	MerchantPublicKeyFile string `json:"merchant_public_key_file,omitempty"`

	// The keyVersion the merchant key is registered under. When set, a
	// request whose Signature header names another keyVersion gets
	// INVALID_SIGNATURE, as Rebell answers for a key it does not hold.
	// Default: any keyVersion is accepted.
	MerchantKeyVersion *int `json:"merchant_key_version,omitempty"`

	// Path of the private key that signs responses. When absent, an
	// ephemeral key is generated; its public half is served at
	// GET /sandbox/public-key.
	PrivateKeyFile string `json:"private_key_file,omitempty"`

	// Lifetime of issued access tokens. Default: 30m.
	AccessTokenTTL caddy.Duration `json:"access_token_ttl,omitempty"`

	// Lifetime of issued refresh tokens. Default: 720h.
	RefreshTokenTTL caddy.Duration `json:"refresh_token_ttl,omitempty"`

	// Lifetime of issued auth codes. Default: 5m.
	AuthCodeTTL caddy.Duration `json:"auth_code_ttl,omitempty"`

	sb     *sandbox.Sandbox
	poolID string
}

// CaddyModule returns the Caddy module information.
func (Sandbox) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.rebell_sandbox",
		New: func() caddy.Module { return new(Sandbox) },
	}
}

type pooledSandbox struct{ *sandbox.Sandbox }

func (pooledSandbox) Destruct() error { return nil }

// Provision loads the keys and finds or creates the sandbox state.
func (s *Sandbox) Provision(ctx caddy.Context) error {
	logger := ctx.Logger()
	repl := caddy.NewReplacer()
	cfg := sandbox.Config{
		ClientID:        repl.ReplaceKnown(s.ClientID, ""),
		AccessTokenTTL:  time.Duration(s.AccessTokenTTL),
		RefreshTokenTTL: time.Duration(s.RefreshTokenTTL),
		AuthCodeTTL:     time.Duration(s.AuthCodeTTL),
		Logger:          logger,

		MerchantKeyVersion: s.MerchantKeyVersion,
	}
	for _, d := range []struct {
		name string
		v    caddy.Duration
	}{{"access_token_ttl", s.AccessTokenTTL}, {"refresh_token_ttl", s.RefreshTokenTTL}, {"auth_code_ttl", s.AuthCodeTTL}} {
		if err := checkDuration(d.name, time.Duration(d.v), 0, maxSandboxTTL); err != nil {
			return err
		}
	}
	var (
		pub  *rsa.PublicKey
		priv *rsa.PrivateKey
		err  error
	)
	if path := repl.ReplaceKnown(s.MerchantPublicKeyFile, ""); path != "" {
		if pub, err = rebell.ReadPublicKeyFile(path); err != nil {
			return fmt.Errorf("merchant_public_key_file: %w", err)
		}
		cfg.MerchantPublicKey = pub
	}
	if path := repl.ReplaceKnown(s.PrivateKeyFile, ""); path != "" {
		if priv, err = rebell.ReadPrivateKeyFile(path); err != nil {
			return fmt.Errorf("private_key_file: %w", err)
		}
		cfg.PrivateKey = priv
	}
	// The pool key covers everything that shapes the sandbox, including the
	// keys' public halves, so a reload with the same settings keeps the
	// issued codes and tokens.
	h := sha256.New()
	fmt.Fprintf(h, "%s|%d|%d|%d|", cfg.ClientID, cfg.AccessTokenTTL, cfg.RefreshTokenTTL, cfg.AuthCodeTTL)
	if v := cfg.MerchantKeyVersion; v != nil {
		fmt.Fprintf(h, "v%d|", *v)
	}
	if pub != nil {
		h.Write(rebell.EncodePublicKeyPEM(pub))
	}
	h.Write([]byte{'|'})
	if priv != nil {
		h.Write(rebell.EncodePublicKeyPEM(&priv.PublicKey))
	}
	key := "sandbox:" + hex.EncodeToString(h.Sum(nil))
	val, _, err := sandboxes.LoadOrNew(key, recoverConstructor("the sandbox", logger, func() (caddy.Destructor, error) {
		sb, err := sandbox.New(cfg)
		if err != nil {
			return nil, err
		}
		return pooledSandbox{sb}, nil
	}))
	if err != nil {
		return err
	}
	s.poolID = key
	s.sb = val.(pooledSandbox).Sandbox
	return nil
}

// Cleanup releases this instance's reference to the sandbox state.
func (s *Sandbox) Cleanup() error {
	if s.poolID == "" {
		return nil
	}
	_, err := sandboxes.Delete(s.poolID)
	s.poolID = ""
	return err
}

// ServeHTTP answers the request as Rebell's OpenAPI would.
func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	s.sb.ServeHTTP(w, r)
	return nil
}

// UnmarshalCaddyfile sets up the sandbox from Caddyfile tokens. Syntax:
//
//	rebell_sandbox [<matcher>] {
//		client_id                <id>
//		merchant_public_key_file <path>
//		merchant_key_version     <n>
//		private_key_file         <path>
//		access_token_ttl         <duration>
//		refresh_token_ttl        <duration>
//		auth_code_ttl            <duration>
//	}
func (s *Sandbox) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "client_id":
			if err := oneArg(d, &s.ClientID); err != nil {
				return err
			}
		case "merchant_public_key_file":
			if err := fileArg(d, &s.MerchantPublicKeyFile); err != nil {
				return err
			}
		case "merchant_key_version":
			var v int
			if err := intArg(d, &v); err != nil {
				return err
			}
			s.MerchantKeyVersion = &v
		case "private_key_file":
			if err := fileArg(d, &s.PrivateKeyFile); err != nil {
				return err
			}
		case "access_token_ttl":
			if err := durationArg(d, &s.AccessTokenTTL); err != nil {
				return err
			}
		case "refresh_token_ttl":
			if err := durationArg(d, &s.RefreshTokenTTL); err != nil {
				return err
			}
		case "auth_code_ttl":
			if err := durationArg(d, &s.AuthCodeTTL); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized subdirective %s", sub)
		}
	}
	return nil
}

func parseSandboxCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(Sandbox)
	err := s.UnmarshalCaddyfile(h.Dispenser)
	return s, err
}

var (
	_ caddy.Provisioner           = (*Sandbox)(nil)
	_ caddy.CleanerUpper          = (*Sandbox)(nil)
	_ caddyhttp.MiddlewareHandler = (*Sandbox)(nil)
	_ caddyfile.Unmarshaler       = (*Sandbox)(nil)
)
