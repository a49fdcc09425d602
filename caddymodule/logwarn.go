package caddymodule

import (
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// warnDebugToken logs one WARN when Caddy's default logger is at DEBUG and
// the access token goes upstream in a header other than Authorization (and
// not when access_token_header is off: no token goes upstream):
// reverse_proxy's DEBUG line "upstream roundtrip" then writes it in clear
// (Caddy redacts only Authorization, Cookie, Set-Cookie and
// Proxy-Authorization). See README.md, "Operations".
func (a *Auth) warnDebugToken() {
	if strings.EqualFold(a.AccessTokenHeader, "Authorization") || a.AccessTokenHeader == accessTokenOff {
		return
	}
	if !caddy.Log().Core().Enabled(zapcore.DebugLevel) {
		return
	}
	a.logger.Warn("Caddy's default logger is at DEBUG: reverse_proxy writes upstream request headers there, "+
		"the access token included; use access_token_header Authorization (Caddy redacts it) "+
		"or filter the header out of the logs (README.md, Operations)",
		zap.String("access_token_header", a.AccessTokenHeader))
}
