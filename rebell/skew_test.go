package rebell_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebell-gateway/caddy-rebell/internal/fakeclock"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/sandbox"
)

func TestMeasureSkew(t *testing.T) {
	sent := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		received     time.Duration
		responseTime string
		want         time.Duration
		ok           bool
	}{
		"in step":         {2 * time.Second, "2026-12-06T10:00:01Z", 500 * time.Millisecond, true},
		"150 s ahead":     {0, "2026-12-06T10:02:30Z", 150*time.Second + 500*time.Millisecond, true},
		"behind":          {0, "2026-12-06T09:58:00.250Z", -2*time.Minute + 250*time.Millisecond, true},
		"offset zone":     {0, "2026-12-06T11:00:10+01:00", 10*time.Second + 500*time.Millisecond, true},
		"empty":           {0, "", 0, false},
		"garbage":         {0, "yesterday", 0, false},
		"overlong header": {0, "2026-12-06T10:00:00Z" + string(make([]byte, 64)), 0, false},
	} {
		got, ok := rebell.MeasureSkew(sent, sent.Add(tc.received), tc.responseTime)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %v %v, want %v %v", name, got, ok, tc.want, tc.ok)
		}
	}
}

// TestClockSkewFromVerifiedAnswers: a Rebell whose clock runs 150 s ahead of
// this machine's is measured from its verified answers (about +150 s), and
// the warning comes once, then again only after a minute; an answer that
// does not verify, or a client that verifies nothing, measures nothing.
func TestClockSkewFromVerifiedAnswers(t *testing.T) {
	local := fakeclock.New(time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC))
	sb, err := sandbox.New(sandbox.Config{
		ClientID:          "MERCHANT_1",
		MerchantPublicKey: &key(t, 0).PublicKey,
		PrivateKey:        key(t, 1),
		Now:               func() time.Time { return local.Now().Add(150 * time.Second) },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	signer, err := rebell.NewSigner("MERCHANT_1", key(t, 0), 1, rebell.AlgorithmRSA256)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		warns []time.Duration
	)
	skew := rebell.NewClockSkew(rebell.ClockSkewConfig{Now: local.Now, OnWarn: func(d time.Duration) {
		mu.Lock()
		warns = append(warns, d)
		mu.Unlock()
	}})
	newClient := func(pub bool) *rebell.Client {
		cfg := rebell.ClientConfig{Endpoint: srv.URL, Signer: signer, Now: local.Now, ClockSkew: skew}
		if pub {
			cfg.RebellPublicKey = &key(t, 1).PublicKey
		}
		c, err := rebell.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()

	if _, err := newClient(false).ExchangeAuthCode(ctx, rebell.NewSecret("not-issued")); err == nil {
		t.Fatal("a code never issued was accepted")
	}
	if d, ok := skew.Skew(); ok {
		t.Fatalf("an unverified answer measured %v", d)
	}
	resp, err := http.Post(srv.URL+"/sandbox/faults", "application/json",
		strings.NewReader(`{"count":1,"forgeSignature":true,"resultStatus":"F","resultCode":"INVALID_CODE"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c := newClient(true)
	if _, err := c.ExchangeAuthCode(ctx, rebell.NewSecret("not-issued")); err == nil {
		t.Fatal("a forged answer was accepted")
	}
	if d, ok := skew.Skew(); ok {
		t.Fatalf("an answer that does not verify measured %v", d)
	}

	for i := 0; i < 3; i++ {
		code, _ := sb.IssueAuthCode("2188000000000042")
		if _, err := c.ExchangeAuthCode(ctx, rebell.NewSecret(code)); err != nil {
			t.Fatal(err)
		}
		local.Advance(10 * time.Second)
	}
	d, ok := skew.Skew()
	if !ok || d < 149*time.Second || d > 151*time.Second {
		t.Fatalf("skew %v (measured %v), want about 150s", d, ok)
	}
	mu.Lock()
	if len(warns) != 1 || warns[0] != d {
		t.Errorf("warnings %v, want one with %v", warns, d)
	}
	mu.Unlock()
	local.Advance(time.Minute)
	if _, err := c.ExchangeAuthCode(ctx, rebell.NewSecret("not-issued")); err == nil {
		t.Fatal("a code never issued was accepted")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(warns) != 2 {
		t.Errorf("%d warnings a minute later, want 2", len(warns))
	}
}
