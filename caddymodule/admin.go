package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI adds rebell_auth's endpoints to Caddy's admin API:
//
//	GET    /rebell/sessions                      → {"sessions": <n in memory>}
//	DELETE /rebell/customers/<customerId>/sessions → ends every session of that customer
//	GET    /rebell/ready                         → 200 or 503 with each instance's checks (ready.go)
//
// They never show a token, a session id or a customer id that was not asked for.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.rebell",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/rebell/sessions", Handler: caddy.AdminHandlerFunc(handleSessions)},
		{Pattern: "/rebell/customers/", Handler: caddy.AdminHandlerFunc(handleCustomerSessions)},
		{Pattern: "/rebell/ready", Handler: caddy.AdminHandlerFunc(handleReady)},
	}
}

func handleSessions(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]int{"sessions": sessionsInMemory()})
}

func handleCustomerSessions(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/rebell/customers/")
	customerID, tail, ok := strings.Cut(rest, "/")
	if !ok || tail != "sessions" || customerID == "" || len(customerID) > 64 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("not found: use DELETE /rebell/customers/<customerId>/sessions")}
	}
	if r.Method != http.MethodDelete {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	// Collect first: the pool's lock is not held while sessions end.
	var live []*pooledCache
	caches.Range(func(_, v any) bool {
		if c, ok := v.(*pooledCache); ok {
			live = append(live, c)
		}
		return true
	})
	ended := 0
	var firstErr error
	for _, c := range live {
		n, err := c.EndCustomer(r.Context(), customerID)
		ended += n
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: firstErr}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]int{"ended": ended})
}

var _ caddy.AdminRouter = adminAPI{}
