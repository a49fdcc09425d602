package integration

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestClockSkewThroughCaddy: a Rebell whose Response-Time runs 150 s ahead
// of this machine's clock shows in caddy_rebell_clock_skew_seconds (about
// 150) after one verified answer, and the WARN is logged once, however many
// answers come within the minute.
func TestClockSkewThroughCaddy(t *testing.T) {
	g := startGuardGateway(t, "")
	g.mock.clockAhead.Store(int64(150 * time.Second))
	for i := 0; i < 3; i++ {
		if status, _, _ := g.login(noKeepAlive); status != http.StatusOK {
			t.Fatalf("login %d: %d", i, status)
		}
	}
	series := fmt.Sprintf(`caddy_rebell_clock_skew_seconds{client_id="MERCHANT_IT",endpoint=%q}`, g.mock.URL)
	got, ok := scrapeRebellMetrics(t, g.caddy.AdminAddr)[series]
	if !ok || got < 148 || got > 152 {
		t.Errorf("%s = %v (present %v), want about 150", series, got, ok)
	}
	logs := g.caddy.logs.String()
	if n := strings.Count(logs, "behind Rebell's; Rebell refuses a Request-Time"); n != 1 {
		t.Errorf("%d clock warnings, want 1:\n%s", n, logs)
	}
	if !regexp.MustCompile(`"clock_skew_seconds":1(49|50|51)[.,}]`).MatchString(logs) {
		t.Errorf("the warning does not carry clock_skew_seconds:\n%s", logs)
	}
}
