package handler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/identity"
	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// Defaults of Config: what its zero values select.
const (
	// DefaultLoginPath is Config.LoginPath's default.
	DefaultLoginPath = "/rebell/login"
	// DefaultLogoutPath is Config.LogoutPath's default.
	DefaultLogoutPath = "/rebell/logout"
	// DefaultSessionHeader is Config.SessionHeader's default.
	DefaultSessionHeader = "Authorization"
	// DefaultAccessTokenHeader is Config.AccessTokenHeader's default.
	DefaultAccessTokenHeader = "X-Rebell-Access-Token"
	// DefaultCustomerIDHeader is Config.CustomerIDHeader's default.
	DefaultCustomerIDHeader = "X-Rebell-Customer-Id"
)

// Sessions is what the handler needs from the token cache (*cache.Cache
// implements it). Errors wrap the cache's Err* sentinels and, when Rebell
// gave a reason, a *rebell.Error.
type Sessions interface {
	// Login exchanges a Mini App's authCode for a new session and returns
	// its id and first grant.
	Login(ctx context.Context, authCode rebell.Secret) (sessionID string, g *cache.Grant, err error)
	// Get returns a fresh grant for the session with key k.
	Get(ctx context.Context, k cache.Key) (*cache.Grant, error)
	// Logout ends the session with key k; ending an unknown session is not
	// an error.
	Logout(ctx context.Context, k cache.Key) error
	// ParseSessionID checks that id is a session id the cache made (a
	// well-formed id whose tag verifies) and returns its key; it costs no
	// lookup.
	ParseSessionID(id string) (cache.Key, bool)
}

// Next is the next handler in the chain; caddyhttp.Handler has this shape.
type Next interface {
	ServeHTTP(http.ResponseWriter, *http.Request) error
}

// Config configures a Handler. The zero value of every field but Sessions
// selects the default documented on it.
type Config struct {
	// Sessions is the token cache. Required.
	Sessions Sessions
	// LoginPath is the path of the login endpoint; "" means /rebell/login.
	LoginPath string
	// LogoutPath is the path of the logout endpoint; "" means
	// /rebell/logout.
	LogoutPath string
	// SessionHeader is the request header that carries the session id. ""
	// means Authorization, which carries "Bearer <id>" (scheme
	// case-insensitive); any other header carries the bare id.
	SessionHeader string
	// SessionCookie is the name of the cookie that carries the session id
	// when the header does not. "" turns cookies off: none is read, and
	// login and logout set none. (The Caddy glue maps "off" to "" and
	// supplies the default name.)
	SessionCookie string
	// AccessTokenHeader is the upstream request header that receives the
	// access token; "" means X-Rebell-Access-Token. Authorization receives
	// "Bearer <token>" (and may then also be the session header: the
	// session credential is read and removed before the token is set).
	AccessTokenHeader string
	// CustomerIDHeader is the upstream request header that receives the
	// customer id; "" means X-Rebell-Customer-Id.
	CustomerIDHeader string
	// OmitAccessToken keeps the access token from the upstream
	// (access_token_header off in docs/contract.md): no header carries it.
	// AccessTokenHeader still names the header that hygiene removes from
	// requests and responses.
	OmitAccessToken bool
	// Identity, if not nil, signs the identity assertion that every request
	// with a session carries to the upstream in IdentityHeader, and its
	// JWKS is served at JWKSPath without a session (docs/contract.md).
	Identity *identity.Signer
	// IdentityHeader is the upstream request header that receives the
	// identity assertion; "" means X-Rebell-Identity. Used only with
	// Identity.
	IdentityHeader string
	// JWKSPath is the path of the JWKS; "" means
	// /.well-known/rebell-jwks.json. Used only with Identity.
	JWKSPath string
	// Now is the clock used for the cookie's Max-Age; nil means time.Now.
	Now func() time.Time
	// Logger receives the handler's few log lines (never a token, auth code
	// or session id); nil means no logging.
	Logger *zap.Logger
	// OnGrant, if not nil, is called with the request and its grant just
	// before a request that was let through goes to the next handler (the
	// Caddy glue sets its placeholders here).
	OnGrant func(r *http.Request, g *cache.Grant)
	// OnReject, if not nil, is called with the error code (for example
	// "session_invalid") whenever the handler writes an error response,
	// before it is written (the Caddy glue sets {http.rebell.error} and
	// clears {http.auth.user.id}).
	OnReject func(r *http.Request, code string)
	// ReturnErrors makes the handler return its error responses as *Error
	// values (with their headers set but no body) instead of writing them
	// as JSON, so its host can render them (Caddy's handle_errors).
	ReturnErrors bool
	// OnOutcome, if not nil, is called once per request with its outcome,
	// for metrics: "ok", "login", "logout", "public", or the error code.
	OnOutcome func(outcome string)
	// Public, if not nil, reports whether a request (other than login and
	// logout) is on a public path: one that needs no session. A request
	// there with a valid session goes on with its identity, as anywhere
	// else; any other goes on too, without identity headers or session
	// credential (hygiene applies as everywhere).
	Public func(r *http.Request) bool
	// OnPublic, if not nil, is called when a request on a public path goes
	// on without a session (the Caddy glue clears the identity
	// placeholders here).
	OnPublic func(r *http.Request)
	// LoginRate limits logins per client address (docs/contract.md,
	// login_rate); the zero value selects the defaults.
	LoginRate LoginRate
	// ClientIP, if not nil, returns the client's address as the host
	// resolved it (Caddy: the client_ip var, which honours the server's
	// trusted_proxies); "" or nil means the peer's address (RemoteAddr).
	ClientIP func(r *http.Request) string
	// TrustedProxy, if not nil, reports whether r came from a proxy the
	// host trusts (Caddy: the server's trusted_proxies); only then is its
	// X-Forwarded-Proto believed for the cookie's Secure attribute.
	TrustedProxy func(r *http.Request) bool
	// AllowedOrigins lists the web origins (scheme://host[:port]) besides
	// the site's own from which a browser may log in or out while the
	// session cookie is on; others get 403 cross_site_request.
	AllowedOrigins []string
	// CookieSecure is "auto" (the default: Secure over TLS, or from a
	// trusted proxy that says X-Forwarded-Proto: https) or "always".
	CookieSecure string
	// CookieSameSite is "lax" (the default), "strict" or "none" (which
	// requires CookieSecure "always").
	CookieSameSite string
	// CookieDomain, if set, is the cookie's Domain attribute.
	CookieDomain string
}

// Handler serves the gateway's behaviour for every request under the
// directive. It is safe for concurrent use.
type Handler struct {
	sessions   Sessions
	loginPath  string
	logoutPath string

	// Header names in canonical form (map keys), and lower-cased with '_'
	// read as '-' (for hygiene comparisons).
	sessionHeader, sessionNorm   string
	accessHeader, accessNorm     string
	customerHeader, customerNorm string
	identityHeader, identityNorm string // "" without Identity
	bearer                       bool   // sessionHeader is Authorization
	accessBearer                 bool   // accessHeader is Authorization: "Bearer <token>"
	accessIsSession              bool   // accessHeader and sessionHeader are the same header
	cookie                       string
	omitAccess                   bool
	upstreamValues               int // 2, or 3 with Identity: what pass allocates
	identity                     *identity.Signer
	jwksPath                     string // "" without Identity

	now       func() time.Time
	log       *zap.Logger
	onGrant   func(*http.Request, *cache.Grant)
	onReject  func(*http.Request, string)
	onOutcome func(string)
	public    func(*http.Request) bool
	onPublic  func(*http.Request)

	loginLimit *loginLimiter
	clientIP   func(*http.Request) string

	trustedProxy       func(*http.Request) bool
	allowedOrigins     map[string]struct{}
	cookieAttrs        string // "; SameSite=…[; Domain=…]"
	cookieAlwaysSecure bool

	returnErrors bool
}

// New validates cfg and returns a Handler. Header and cookie names must be
// HTTP tokens, paths must start with "/", the login and logout paths must
// differ, and the session, access-token and customer-id headers must be
// three different headers, except that the access token may go in
// Authorization while the session comes in it.
func New(cfg Config) (*Handler, error) {
	if cfg.Sessions == nil {
		return nil, errors.New("handler: Sessions is required")
	}
	h := &Handler{
		sessions:   cfg.Sessions,
		loginPath:  orDefault(cfg.LoginPath, DefaultLoginPath),
		logoutPath: orDefault(cfg.LogoutPath, DefaultLogoutPath),
		cookie:     cfg.SessionCookie,
		now:        cfg.Now,
		log:        cfg.Logger,
		onGrant:    cfg.OnGrant,
		onReject:   cfg.OnReject,
		onOutcome:  cfg.OnOutcome,
		public:     cfg.Public,
		onPublic:   cfg.OnPublic,
		clientIP:   cfg.ClientIP,

		trustedProxy:       cfg.TrustedProxy,
		cookieAlwaysSecure: strings.EqualFold(cfg.CookieSecure, CookieSecureAlways),
		omitAccess:         cfg.OmitAccessToken,
		identity:           cfg.Identity,
		upstreamValues:     2,

		returnErrors: cfg.ReturnErrors,
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	paths := []struct{ field, path string }{
		{"login_path", h.loginPath},
		{"logout_path", h.logoutPath},
	}
	if h.identity != nil {
		h.upstreamValues = 3
		h.jwksPath = orDefault(cfg.JWKSPath, identity.DefaultJWKSPath)
		paths = append(paths, struct{ field, path string }{"jwks_path", h.jwksPath})
	}
	for i, p := range paths {
		if p.path[0] != '/' {
			return nil, fmt.Errorf("handler: %s %q must start with /", p.field, p.path)
		}
		for _, prev := range paths[:i] {
			if prev.path == p.path {
				return nil, fmt.Errorf("handler: %s and %s are both %q", prev.field, p.field, p.path)
			}
		}
	}

	headers := []struct {
		field, name string
		canon, norm *string
	}{
		{"session_header", orDefault(cfg.SessionHeader, DefaultSessionHeader), &h.sessionHeader, &h.sessionNorm},
		{"access_token_header", orDefault(cfg.AccessTokenHeader, DefaultAccessTokenHeader), &h.accessHeader, &h.accessNorm},
		{"customer_id_header", orDefault(cfg.CustomerIDHeader, DefaultCustomerIDHeader), &h.customerHeader, &h.customerNorm},
	}
	if h.identity != nil {
		headers = append(headers, struct {
			field, name string
			canon, norm *string
		}{"identity_assertion header", orDefault(cfg.IdentityHeader, identity.DefaultHeader), &h.identityHeader, &h.identityNorm})
	}
	for i, hd := range headers {
		if err := CheckHeaderName(hd.field, hd.name); err != nil {
			return nil, fmt.Errorf("handler: %w", err)
		}
		*hd.canon = http.CanonicalHeaderKey(hd.name)
		*hd.norm = normalizeHeaderName(hd.name)
		for _, prev := range headers[:i] {
			// The token may go out in the Authorization header the session
			// came in.
			tokenInSession := prev.field == "session_header" && hd.field == "access_token_header" && *hd.norm == "authorization"
			if *prev.norm == *hd.norm && !tokenInSession {
				return nil, fmt.Errorf("handler: %s and %s name the same header %q", prev.field, hd.field, hd.name)
			}
		}
	}
	h.bearer = h.sessionNorm == "authorization"
	h.accessBearer = h.accessNorm == "authorization"
	h.accessIsSession = h.accessNorm == h.sessionNorm
	if h.cookie != "" && !validToken(h.cookie) {
		return nil, fmt.Errorf("handler: session_cookie %q is not a valid cookie name", h.cookie)
	}
	var err error
	if h.loginLimit, err = newLoginLimiter(cfg.LoginRate); err != nil {
		return nil, err
	}
	if h.cookieAttrs, err = cookieAttrs(cfg); err != nil {
		return nil, err
	}
	if h.allowedOrigins, err = allowedOriginSet(cfg.AllowedOrigins); err != nil {
		return nil, err
	}
	return h, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ServeHTTP serves r. Login and logout requests are answered here; any other
// request with a valid session goes to next with the identity headers set,
// and next's error is returned unchanged. Every error response is written
// here as JSON, and ServeHTTP returns nil for it; with Config.ReturnErrors it
// is returned as an *Error instead.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next Next) error {
	h.stripSpoofed(r.Header)
	h.stripEdges(r)
	switch r.URL.Path {
	case h.loginPath:
		return h.serveLogin(w, r)
	case h.logoutPath:
		return h.serveLogout(w, r)
	}
	if h.identity != nil && r.URL.Path == h.jwksPath {
		return h.serveJWKS(w, r)
	}

	k, cred := h.credential(r)
	h.stripCredential(r.Header)
	// A session that can be served is served the same on every path, so
	// the public paths are consulted only for a request that has none.
	if cred == credValid {
		g, err := h.sessions.Get(r.Context(), k)
		switch {
		case err == nil && g != nil:
			return h.pass(w, r, next, g, k)
		case h.isPublic(r):
			return h.servePublic(w, r, next)
		}
		return h.refuseErr(w, r, err, &k)
	}
	if h.isPublic(r) {
		return h.servePublic(w, r, next)
	}
	if cred == credAbsent {
		return h.refuse(w, r, errSessionRequired)
	}
	return h.refuse(w, r, errSessionInvalid)
}

func (h *Handler) isPublic(r *http.Request) bool { return h.public != nil && h.public(r) }

// pass sends r, which carries the session of grant g (key k), to next with
// the identity headers set.
func (h *Handler) pass(w http.ResponseWriter, r *http.Request, next Next, g *cache.Grant, k cache.Key) error {
	// One allocation for every value, sized to the headers this config
	// sends (the assertion's slot only with Identity); each slice is capped
	// so that an append by a later handler cannot overwrite its neighbour.
	vals := make([]string, h.upstreamValues)
	vals[1] = g.CustomerID
	r.Header[h.customerHeader] = vals[1:2:2]
	if !h.omitAccess {
		vals[0] = g.AccessToken.Reveal()
		if h.accessBearer {
			vals[0] = g.BearerAccessToken()
		}
		r.Header[h.accessHeader] = vals[0:1:1]
	}
	if h.identity != nil {
		// Signed once per grant and host, and reused until it has used
		// half its ttl (docs/contract.md).
		a, err := h.identity.Assertion(g, k, g.CustomerID, r.Host)
		if err != nil {
			return h.refuseErr(w, r, err, &k)
		}
		vals[2] = a
		r.Header[h.identityHeader] = vals[2:3:3]
	}
	if h.onGrant != nil {
		h.onGrant(r, g)
	}
	h.outcome(outcomeOK)
	return h.serveNext(w, r, next)
}

// servePublic serves a request on a public path that has no session that
// can be served (no credential, an invalid one, or a session that cannot be
// served right now): it goes on without identity, its identity headers and
// session credential already removed.
func (h *Handler) servePublic(w http.ResponseWriter, r *http.Request, next Next) error {
	if h.onPublic != nil {
		h.onPublic(r)
	}
	h.outcome(outcomePublic)
	return h.serveNext(w, r, next)
}

// serveNext runs next with a response writer that keeps the access-token
// header out of the response.
func (h *Handler) serveNext(w http.ResponseWriter, r *http.Request, next Next) error {
	rw := getResponseWriter(w, h.accessNorm, h.identityNorm)
	err := next.ServeHTTP(rw, r)
	rw.finish()
	putResponseWriter(rw)
	return err
}

// Outcomes reported to OnOutcome besides the error codes.
const (
	outcomeOK     = "ok"
	outcomeLogin  = "login"
	outcomeLogout = "logout"
	outcomePublic = "public"
)

// Outcomes returns every outcome Config.OnOutcome can report: ok, login,
// logout, public, jwks and the error codes of docs/contract.md.
func Outcomes() []string {
	return append([]string{outcomeOK, outcomeLogin, outcomeLogout, outcomePublic, outcomeJWKS}, errorCodes...)
}

func (h *Handler) outcome(o string) {
	if h.onOutcome != nil {
		h.onOutcome(o)
	}
}

// logRejection logs why a cache call failed. Errors that wrap none of the
// cache's sentinels are a bug somewhere and go out at ERROR; the others at
// DEBUG (the cache logs Rebell's failures itself). Error strings of the
// cache and rebell packages never hold a token, code or session id.
func (h *Handler) logRejection(e *apiError, unexpected bool, err error, k *cache.Key) {
	lvl := zap.DebugLevel
	msg := "request rejected"
	if unexpected {
		lvl = zap.ErrorLevel
		msg = "unexpected answer from the session cache"
	}
	ce := h.log.Check(lvl, msg)
	if ce == nil {
		return
	}
	fields := []zap.Field{zap.String("error_code", e.code)}
	if k != nil {
		fields = append(fields, zap.String("session", k.Tag()))
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	ce.Write(fields...)
}
