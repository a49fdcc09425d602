package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rebell-gateway/caddy-rebell/handler"
)

// LoginRateConfig limits the logins of one client address (Caddy's client
// IP, which honours the server's trusted_proxies) with a token bucket: Count
// logins per Period refill it, Burst is its size. A login over it gets 429
// too_many_logins with Retry-After before its body is read: its auth code
// is not spent and Rebell is not called. IPv6 addresses share the bucket of
// their /64. The gateway remembers the 65,536 addresses seen most recently.
// Default: 10 per minute, burst 20.
type LoginRateConfig struct {
	// Logins per Period. Default: 10.
	Count int `json:"count,omitempty"`
	// The period of Count. Default: 1m.
	Period caddy.Duration `json:"period,omitempty"`
	// How many logins an address may make at once. Default: 20 (and at
	// least Count).
	Burst int `json:"burst,omitempty"`
	// Turns the limit off (for example behind a proxy that is not in
	// trusted_proxies, where every client has the proxy's address).
	Off bool `json:"off,omitempty"`
}

// CookieConfig sets the session cookie's attributes.
type CookieConfig struct {
	// "auto" (the default): Secure when the request came over TLS, or from
	// a trusted proxy (the server's trusted_proxies) that says
	// X-Forwarded-Proto: https; never because an untrusted client says so.
	// "always": always Secure.
	Secure string `json:"secure,omitempty"`
	// "lax" (the default), "strict" or "none"; none requires secure always.
	SameSite string `json:"same_site,omitempty"`
	// The cookie's Domain attribute, to share it with subdomains. Default:
	// none (the cookie goes only to the host that set it).
	Domain string `json:"domain,omitempty"`
}

// maxLoginRateCount bounds login_rate's count and burst.
const maxLoginRateCount = 1_000_000

// unmarshalLoginRate reads `login_rate <n>/<period> [burst <n>]` or
// `login_rate off`.
func (a *Auth) unmarshalLoginRate(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 1 && args[0] == "off" {
		a.LoginRate = &LoginRateConfig{Off: true}
		return nil
	}
	if len(args) != 1 && (len(args) != 3 || args[1] != "burst") {
		return d.Err("login_rate: want <n>/<period> [burst <n>], or off")
	}
	lr, err := parseRate(args[0])
	if err != nil {
		return d.Errf("login_rate: %v", err)
	}
	if len(args) == 3 {
		b, err := strconv.Atoi(args[2])
		if err != nil || b < 1 || b > maxLoginRateCount {
			return d.Errf("login_rate: burst %q is not between 1 and %d", args[2], maxLoginRateCount)
		}
		lr.Burst = b
	}
	a.LoginRate = lr
	return nil
}

// parseRate parses "<n>/<period>": 10/1m, 10/m, 5/30s.
func parseRate(s string) (*LoginRateConfig, error) {
	n, per, ok := strings.Cut(s, "/")
	if !ok {
		return nil, fmt.Errorf("%q is not <n>/<period>", s)
	}
	count, err := strconv.Atoi(n)
	if err != nil || count < 1 || count > maxLoginRateCount {
		return nil, fmt.Errorf("count %q is not between 1 and %d", n, maxLoginRateCount)
	}
	if per != "" && (per[0] < '0' || per[0] > '9') {
		per = "1" + per // "m" means "1m"
	}
	period, err := caddy.ParseDuration(per)
	if err != nil || period <= 0 {
		return nil, fmt.Errorf("period %q is not a positive duration", per)
	}
	return &LoginRateConfig{Count: count, Period: caddy.Duration(period)}, nil
}

// unmarshalCookie reads the cookie block.
func (a *Auth) unmarshalCookie(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	c := new(CookieConfig)
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("cookie: %s: already set", sub)
		}
		seen[sub] = true
		var dst *string
		switch sub {
		case "secure":
			dst = &c.Secure
		case "same_site":
			dst = &c.SameSite
		case "domain":
			dst = &c.Domain
		default:
			return d.Errf("cookie: unrecognized subdirective %s", strconv.Quote(sub))
		}
		if err := oneArg(d, dst); err != nil {
			return err
		}
	}
	a.Cookie = c
	return nil
}

// checkAbuseSettings checks login_rate's numbers (the cookie block and
// allowed_origins are checked by handler.New, with the same messages).
func (a *Auth) checkAbuseSettings() error {
	if lr := a.LoginRate; lr != nil && !lr.Off {
		switch {
		case lr.Count < 0 || lr.Count > maxLoginRateCount:
			return fmt.Errorf("login_rate: count %d is not between 1 and %d", lr.Count, maxLoginRateCount)
		case lr.Burst < 0 || lr.Burst > maxLoginRateCount:
			return fmt.Errorf("login_rate: burst %d is not between 1 and %d", lr.Burst, maxLoginRateCount)
		case lr.Period < 0:
			return fmt.Errorf("login_rate: period must not be negative")
		}
	}
	return nil
}

// abuseConfig fills the handler's login limit, cross-site and cookie
// settings, with the client address and the trust in the peer that Caddy's
// server resolved from its trusted_proxies.
func (a *Auth) abuseConfig(cfg *handler.Config) {
	if lr := a.LoginRate; lr != nil {
		cfg.LoginRate = handler.LoginRate{Count: lr.Count, Period: time.Duration(lr.Period), Burst: lr.Burst, Off: lr.Off}
	}
	cfg.ClientIP = clientIP
	cfg.TrustedProxy = fromTrustedProxy
	cfg.AllowedOrigins = a.AllowedOrigins
	if c := a.Cookie; c != nil {
		cfg.CookieSecure, cfg.CookieSameSite, cfg.CookieDomain = c.Secure, c.SameSite, c.Domain
	}
}

// clientIP is the client's address as Caddy's server determined it (the
// peer, or with trusted_proxies the address a trusted proxy forwarded).
func clientIP(r *http.Request) string {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	return s
}

// fromTrustedProxy reports whether the peer is one of the server's
// trusted_proxies.
func fromTrustedProxy(r *http.Request) bool {
	b, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return b
}
