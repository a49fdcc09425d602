package handler

import (
	"strings"
	"testing"
)

func TestUnusableHeaderNamesRefused(t *testing.T) {
	bad := []string{
		"Connection", "keep-alive", "Proxy-Authorization", "Proxy-Connection", "proxy_x", "TE", "Trailer",
		"Transfer-Encoding", "Upgrade", "Content-Length", "Host", "Cookie", "Set-Cookie", "Forwarded",
		"X-Forwarded-For", "x_forwarded_proto", "X-Forwarded-Host",
	}
	for _, name := range bad {
		for _, field := range []string{"session_header", "access_token_header", "customer_id_header"} {
			cfg := Config{Sessions: newFakeSessions()}
			switch field {
			case "session_header":
				cfg.SessionHeader = name
			case "access_token_header":
				cfg.AccessTokenHeader = name
			default:
				cfg.CustomerIDHeader = name
			}
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), field+" "+`"`+name+`" cannot be used`) {
				t.Errorf("%s %s: %v", field, name, err)
			}
		}
		if err := CheckHeaderName("identity_header", name); err == nil {
			t.Errorf("CheckHeaderName accepted %s", name)
		}
	}
	for _, name := range []string{"Authorization", "X-Rebell-Identity", "X-Session", "Proxied-By", "X-Forwarded"} {
		if err := CheckHeaderName("f", name); err != nil {
			t.Errorf("CheckHeaderName(%s): %v", name, err)
		}
	}
	if err := CheckHeaderName("f", "Bad Name"); err == nil || !strings.Contains(err.Error(), "not a valid header name") {
		t.Errorf("a name with a space: %v", err)
	}
	// Authorization stays allowed for the session and the access token.
	if _, err := New(Config{Sessions: newFakeSessions(), SessionHeader: "Authorization", AccessTokenHeader: "Authorization"}); err != nil {
		t.Fatal(err)
	}
}

// TestIdentityHeaderNameChecked: the identity assertion's header goes
// through the same check as the others.
func TestIdentityHeaderNameChecked(t *testing.T) {
	s := testSigner(t, "api")
	for _, name := range []string{"Connection", "X-Forwarded-User", "Cookie", "Host"} {
		_, err := New(Config{Sessions: newFakeSessions(), Identity: s, IdentityHeader: name})
		if err == nil || !strings.Contains(err.Error(), "cannot be used") {
			t.Errorf("identity header %s: %v", name, err)
		}
	}
}
