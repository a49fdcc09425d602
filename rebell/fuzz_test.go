package rebell

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"testing"
)

func FuzzParseSignatureHeader(f *testing.F) {
	for _, seed := range []string{
		"algorithm=RSA256, keyVersion=1, signature=abc%2B%2F%3D",
		"algorithm=SHA256withRSA,keyVersion=0,signature=AAAA",
		"signature=====, algorithm=rsa256",
		"algorithm=RSA256, signature=%",
		",,,=,=,",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h, err := ParseSignatureHeader(v)
		if err == nil && len(h.Signature) == 0 {
			t.Fatal("accepted a header without signature bytes")
		}
	})
}

func FuzzParseApplyTokenResponse(f *testing.F) {
	f.Add(200, []byte(okBody), true)
	f.Add(200, []byte(`{"result":{"resultStatus":"F","resultCode":"USED_CODE"}}`), false)
	f.Add(503, []byte(`{}`), false)
	f.Add(200, []byte(`{"result":null}`), true)
	f.Add(200, []byte(`{"result":{"resultStatus":"S","resultCode":"SUCCESS"},"accessToken":"a","accessTokenExpiryTime":"2025-01-01T00:00:00Z"}`), false)
	f.Fuzz(func(t *testing.T, status int, body []byte, authCode bool) {
		grant := GrantRefreshToken
		if authCode {
			grant = GrantAuthorizationCode
		}
		tok, err := ParseApplyTokenResponse(status, body, grant)
		if (tok == nil) == (err == nil) {
			t.Fatalf("token %v and error %v", tok, err)
		}
		if err != nil {
			if ErrorKind(err) == 0 {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if tok.AccessToken.IsZero() || tok.AccessTokenExpiry.IsZero() || tok.AccessToken.Len() > 128 {
			t.Fatalf("accepted an unusable token")
		}
		if authCode && (tok.CustomerID == "" || tok.RefreshToken.IsZero()) {
			t.Fatal("accepted an auth code answer without customer or refresh token")
		}
	})
}

func FuzzParseKeys(f *testing.F) {
	key := testKey(f, 0)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	pkix, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	f.Add(EncodePrivateKeyPEM(key))
	f.Add(EncodePublicKeyPEM(&key.PublicKey))
	f.Add([]byte(base64.StdEncoding.EncodeToString(pkcs8)))
	f.Add([]byte(base64.StdEncoding.EncodeToString(pkix)))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if k, err := ParsePrivateKey(data); err == nil && k.N.BitLen() < MinKeyBits {
			t.Fatal("accepted a small private key")
		} else if err != nil && bytes.Contains([]byte(err.Error()), data) && len(data) > 16 {
			t.Fatal("error quotes the input")
		}
		if k, err := ParsePublicKey(data); err == nil && k.N.BitLen() < MinKeyBits {
			t.Fatal("accepted a small public key")
		}
	})
}

func FuzzParseCancelTokenResponse(f *testing.F) {
	f.Add(200, []byte(`{"result":{"resultStatus":"S","resultCode":"SUCCESS","resultMessage":"ok"}}`))
	f.Add(200, []byte(`{"result":{"resultStatus":"F","resultCode":"INVALID_ACCESS_TOKEN"}}`))
	f.Add(429, []byte(`{"result":{"resultStatus":"U","resultCode":"REQUEST_TRAFFIC_EXCEED_LIMIT"}}`))
	f.Add(200, []byte(`{"result":{"resultStatus":"S","resultCode":"SUCCESS"},"extendInfo":"{}"} x`))
	f.Add(503, []byte(`<html>`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		err := ParseCancelTokenResponse(status, body)
		if err == nil {
			if status < 200 || status >= 300 {
				t.Fatalf("SUCCESS with HTTP %d", status)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || e.Kind == 0 || e.Op != OpCancelToken {
			t.Fatalf("untyped error %v", err)
		}
		if e.Kind == KindNothingToCancel && e.ResultCode != CodeInvalidAccessToken && e.ResultCode != CodeExpiredAccessToken {
			t.Fatalf("nothing to cancel for %s", e.ResultCode)
		}
	})
}
