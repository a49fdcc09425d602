package caddymodule

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/cache"
	"github.com/rebell-gateway/caddy-rebell/guard"
	"github.com/rebell-gateway/caddy-rebell/handler"
	"github.com/rebell-gateway/caddy-rebell/probe"
	"github.com/rebell-gateway/caddy-rebell/rebell"
	"github.com/rebell-gateway/caddy-rebell/revoke"
	"github.com/rebell-gateway/caddy-rebell/session"
	"github.com/rebell-gateway/caddy-rebell/store/redisstore"
)

func init() {
	caddy.RegisterModule(Auth{})
}

// Defaults of the rebell_auth handler that are the gateway's own
// (docs/contract.md); the others are those of the package that owns the
// setting (handler, cache, rebell).
const (
	defaultKeyVersion       = 1
	defaultRetries          = 2
	defaultSessionCookie    = "rebell_session"
	defaultLoginDedupWindow = 60 * time.Second
)

// caches keeps token caches across config reloads, keyed by poolIdentity (the
// settings that define a cache's sessions), so `caddy reload` keeps every
// session.
var caches = caddy.NewUsagePool()

// Auth is a token gateway for a Rebell Mini App's API. The Mini App posts the
// auth code from my.getAuthCode to the login path; the gateway exchanges it
// with Rebell's applyToken (a signed server-to-server call), keeps the tokens
// and returns an opaque session id. Every other request carries that id; the
// gateway finds (or refreshes) the user's access token and injects it, with
// the customer id, into the request for the next handler (normally
// reverse_proxy), after deleting any client-supplied copies of those headers.
//
// Placeholders set on success: {http.auth.user.id} (the customer id, also
// logged as the access log's user_id), {http.rebell.customer_id},
// {http.rebell.access_token}, {http.rebell.access_token_expiry} and
// {http.rebell.session_expiry} (RFC 3339). On rejection {http.auth.user.id}
// is "" and {http.rebell.error} holds the error code.
//
// Values may use global placeholders such as {env.X} and {file./path}.
type Auth struct {
	// Base URL of Rebell's OpenAPI, e.g. https://api.rebellapp.com. A path
	// prefix (https://host/api/open) is kept and signed. Required.
	Endpoint string `json:"endpoint,omitempty"`

	// The merchant's Client-Id issued by Rebell. Required.
	ClientID string `json:"client_id,omitempty"`

	// Path of the merchant's RSA private key (2048 bits or more): PEM PKCS#1,
	// PEM PKCS#8 or bare base64 DER. Exactly one of private_key_file and
	// private_key is required. Key files are read when the config is
	// provisioned (caddy validate, run, reload), not by caddy adapt, so the
	// adapted JSON carries the path and never the key.
	PrivateKeyFile string `json:"private_key_file,omitempty"`

	// The merchant's private key inline, in the same formats, e.g.
	// {env.REBELL_PRIVATE_KEY}.
	PrivateKey string `json:"private_key,omitempty"`

	// Path of Rebell's platform public key: PEM PKIX or PKCS#1, bare base64
	// DER, or a certificate. When any Rebell public key is set (this field,
	// rebell_public_key or their plural forms), every applyToken response
	// must carry a signature that one of them verifies. When none is set,
	// responses are not verified (logged at WARN once).
	RebellPublicKeyFile string `json:"rebell_public_key_file,omitempty"`

	// More Rebell public key files, tried after rebell_public_key_file: a
	// response verifies if any key verifies it, so a key Rebell rotates to
	// can be configured before Rebell switches (docs/key-rotation.md). The
	// Caddyfile puts the second and later rebell_public_key_file paths here.
	RebellPublicKeyFiles []string `json:"rebell_public_key_files,omitempty"`

	// Rebell's platform public key inline, in the same formats.
	RebellPublicKey string `json:"rebell_public_key,omitempty"`

	// More Rebell public keys inline, as rebell_public_key_files.
	RebellPublicKeys []string `json:"rebell_public_keys,omitempty"`

	// The keyVersion written in the Signature header. Default: 1.
	KeyVersion *int `json:"key_version,omitempty"`

	// The algorithm literal written in the Signature header: RSA256 or
	// SHA256withRSA (both mean RSASSA-PKCS1-v1_5 with SHA-256). Default: RSA256.
	SignatureAlgorithm string `json:"signature_algorithm,omitempty"`

	// applyToken version, v1 or v2 (path /v2/authorizations/applyToken).
	// Default: v2.
	APIVersion string `json:"api_version,omitempty"`

	// Sent as referenceClientId (v2 only).
	ReferenceClientID string `json:"reference_client_id,omitempty"`

	// Sent in extendInfo as {"customerBelongsTo":"<value>"}: the wallet site
	// name in Mini App scenarios.
	CustomerBelongsTo string `json:"customer_belongs_to,omitempty"`

	// Timeout of one applyToken attempt. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Extra attempts for retryable results (U, rate limiting, timeouts,
	// transport errors, HTTP 5xx), with exponential backoff and jitter.
	// Default: 2.
	Retries *int `json:"retries,omitempty"`

	// Path where the Mini App posts {"authCode":"..."}. Default: /rebell/login.
	LoginPath string `json:"login_path,omitempty"`

	// Path where the Mini App ends its session. Default: /rebell/logout.
	LogoutPath string `json:"logout_path,omitempty"`

	// Request header that carries the session id. Default: Authorization,
	// as "Bearer <id>"; any other header carries the bare id.
	SessionHeader string `json:"session_header,omitempty"`

	// Name of the cookie that also carries the session id, or "off".
	// Default: rebell_session.
	SessionCookie string `json:"session_cookie,omitempty"`

	// How long before the access token expires a request starts a
	// background refresh. Default: 5m.
	RefreshAhead caddy.Duration `json:"refresh_ahead,omitempty"`

	// A session unused this long is ended. Default: 0 (none).
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// The same auth code posted again within this window after a successful
	// login (or while it is in flight) gets the same session. 0 turns it off.
	// Default: 60s.
	LoginDedupWindow *caddy.Duration `json:"login_dedup_window,omitempty"`

	// How many sessions the in-memory cache holds. Default: 1000000.
	MaxSessions int64 `json:"max_sessions,omitempty"`

	// How many of the sessions in memory keep an entry ready for requests
	// (the sessions in use). The others are kept compactly, in about 320
	// bytes each, and a request for one of them makes it an entry again (a
	// few microseconds) while the entry used least recently is folded back.
	// Raise it if more sessions than this are active at once. Default:
	// max_sessions up to 65536, and the larger of 65536 and max_sessions/16
	// beyond that. At most max_sessions.
	HotSessions int64 `json:"hot_sessions,omitempty"`

	// How many applyToken calls this instance makes toward the endpoint at
	// once, per client id; shared by every config using them, across
	// reloads. A refresh that a request waits on may take any slot; logins
	// may hold at most three quarters of them (all but one when that is
	// less), so a flood of logins cannot hold up signed-in users'
	// refreshes; both wait for a slot, refreshes first (503
	// rebell_unavailable with Retry-After if none frees in time).
	// Background refresh-ahead calls take at most three quarters of the
	// slots, only while nobody waits, and are tried later otherwise. A
	// circuit breaker stops calls while Rebell keeps failing: see
	// docs/rebell-calls.md. Between 1 and 10000. Default: 64.
	MaxConcurrentCalls int `json:"max_concurrent_calls,omitempty"`

	// How many login calls per second this instance sends toward the
	// endpoint, per client id (shared like max_concurrent_calls): a login
	// over it gets 503 rebell_unavailable with Retry-After, and its auth
	// code is not spent. It bounds the share of the merchant's Rebell quota
	// that a flood of logins from many addresses can spend. Between 1 and
	// 100000. Default: 50.
	LoginCallsPerSecond int `json:"login_calls_per_second,omitempty"`

	// Upstream request header that receives the access token, or "off":
	// no header carries it (recommended for upstreams that never call
	// Rebell; the identity assertion or the customer id tells them who the
	// user is). Default: X-Rebell-Access-Token.
	AccessTokenHeader string `json:"access_token_header,omitempty"`

	// Upstream request header that receives the customer id.
	// Default: X-Rebell-Customer-Id.
	CustomerIDHeader string `json:"customer_id_header,omitempty"`

	// A signed identity assertion for the upstream, and the JWKS that
	// verifies it (see IdentityAssertion). Absent: none.
	IdentityAssertion *IdentityAssertion `json:"identity_assertion,omitempty"`

	// Paths, in Caddy's path matcher syntax (e.g. "/health", "/public/*"),
	// where no session is required. A request there with a valid session
	// still gets its identity; any other goes on to the next handler with
	// the identity headers and the session credential removed. Use this
	// instead of a matcher on the directive: header hygiene applies only
	// to requests that reach rebell_auth.
	Public []string `json:"public,omitempty"`

	// Per-client-address limit of logins: see LoginRateConfig. In the
	// Caddyfile: login_rate <n>/<period> [burst <n>], or login_rate off.
	LoginRate *LoginRateConfig `json:"login_rate,omitempty"`

	// Web origins (scheme://host[:port]) besides the site's own from which
	// a browser may log in or out while the session cookie is on. A login
	// or logout whose Sec-Fetch-Site is cross-site, or whose Origin is a web
	// origin whose host is not the request's Host and not listed here, gets
	// 403 cross_site_request before anything else: no call to Rebell, no
	// cookie set, no session ended. Requests with neither header (a Mini
	// App's my.request) are not affected; with session_cookie off nothing
	// is checked.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

	// The session cookie's attributes: see CookieConfig.
	Cookie *CookieConfig `json:"cookie,omitempty"`

	// A shared session store, for several Caddy instances that serve the
	// same Mini App: a session created on one works on every other, a
	// logout ends it everywhere, and a refresh calls Rebell once for all of
	// them. Absent: one instance, sessions in memory only.
	Store *StoreConfig `json:"store,omitempty"`

	// Who writes the error responses: "json" (the default) writes the JSON
	// error bodies of docs/contract.md; "caddy" returns each error to Caddy
	// with its status instead, so the site's handle_errors routes render it,
	// with {http.rebell.error} (the error code), {http.rebell.error_message}
	// (its sentence) and {http.rebell.result_code} (Rebell's, or "") set.
	// The headers WWW-Authenticate, Retry-After and Allow are set in both
	// modes.
	Errors string `json:"errors,omitempty"`

	// Whether an end the gateway decides also ends the authorization at
	// Rebell: a Mini App logout, an admin end of a customer's sessions and
	// a session dropped to make room in a full memory tier cancel the
	// session's current access token (cancelToken), which revokes its
	// refresh token too. Ends Rebell decided (a dead refresh token) and
	// expired sessions call nothing. The cancel never delays the answer: it
	// runs in the background, through the same guard as applyToken but
	// never in a request's way, retried with backoff (at most 30 s apart)
	// until Rebell answers for good or the tokens expire; with store redis
	// it is kept in Redis until then, and another instance finishes it if
	// this one stops (docs/contract.md, revoke). "on" or "off".
	// Default: on.
	Revoke string `json:"revoke,omitempty"`

	logger   *zap.Logger
	handler  *handler.Handler
	cache    *pooledCache
	poolKey  poolIdentity
	pooled   bool
	storeCfg *redisstore.Config

	// httpClient, when set (by `caddy rebell check`), sends the applyToken
	// calls; nil means the Rebell client's own.
	httpClient *http.Client

	guard    *pooledGuard
	guardKey *guardKey // set once this config holds a reference to guard

	skew        *pooledSkew
	skewKey     *guardKey    // set once this config holds a reference to skew
	warnedTwice *atomic.Bool // warnSecondDirective logged; set at Provision
}

// CaddyModule returns the Caddy module information.
func (Auth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.rebell_auth",
		New: func() caddy.Module { return new(Auth) },
	}
}

// pooledCache is a token cache shared by every config that defines the same
// sessions. The Rebell client is swapped on reload, so settings that do not
// change whose sessions these are (keys, timeouts) apply without losing them.
type pooledCache struct {
	*cache.Cache
	exchanger *swapExchanger
	// revoker cancels the tokens of the sessions the cache ends, while
	// revoke (the newest config's revoke setting) is on; pending is its
	// last count of pending cancels, for the gauge.
	revoker *revoke.Revoker
	revoke  atomic.Bool
	pending atomic.Int64
	// storeProbe PINGs the shared store for /rebell/ready; nil without one.
	storeProbe *probe.Prober
}

// Destruct stops the revoker and the cache when the last config using them
// is unloaded. The revoker goes first: the cache closes the store it uses.
func (p *pooledCache) Destruct() error {
	p.revoker.Close()
	if p.storeProbe != nil {
		p.storeProbe.Stop()
	}
	p.Close()
	return nil
}

// queueCancel queues the cancel of the tokens of a session the cache ended
// for reason, if revoke is on.
func (p *pooledCache) queueCancel(ctx context.Context, tok session.Cancel, reason string) {
	if p.revoke.Load() {
		p.revoker.Enqueue(ctx, tok, reason)
	}
}

// swapExchanger forwards to the Rebell client of the newest config.
type swapExchanger struct{ client atomic.Pointer[rebell.Client] }

func (s *swapExchanger) ExchangeAuthCode(ctx context.Context, code rebell.Secret) (*rebell.Token, error) {
	markAdmitted(ctx) // the guard let it through (tracing.go)
	return s.client.Load().ExchangeAuthCode(ctx, code)
}

func (s *swapExchanger) Refresh(ctx context.Context, rt rebell.Secret) (*rebell.Token, error) {
	markAdmitted(ctx)
	return s.client.Load().Refresh(ctx, rt)
}

func (s *swapExchanger) CancelToken(ctx context.Context, at rebell.Secret) error {
	markAdmitted(ctx)
	return s.client.Load().CancelToken(ctx, at)
}

// Provision sets defaults, loads the keys, builds the Rebell client and finds
// or creates the token cache.
func (a *Auth) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	registerMetrics(ctx.GetMetricsRegistry())
	registerSkewMetrics(ctx.GetMetricsRegistry())
	repl := caddy.NewReplacer()
	for _, f := range []*string{
		&a.Endpoint, &a.ClientID, &a.PrivateKeyFile, &a.PrivateKey, &a.RebellPublicKeyFile, &a.RebellPublicKey,
		&a.SignatureAlgorithm, &a.APIVersion, &a.ReferenceClientID, &a.CustomerBelongsTo,
		&a.LoginPath, &a.LogoutPath, &a.SessionHeader, &a.SessionCookie, &a.AccessTokenHeader, &a.CustomerIDHeader,
	} {
		*f = strings.TrimSpace(repl.ReplaceKnown(*f, ""))
	}
	for _, list := range [][]string{a.RebellPublicKeyFiles, a.RebellPublicKeys} {
		for i := range list {
			list[i] = strings.TrimSpace(repl.ReplaceKnown(list[i], ""))
		}
	}
	a.setDefaults()
	if err := a.checkBounds(); err != nil {
		return err
	}
	if err := a.checkAbuseSettings(); err != nil {
		return err
	}
	a.warnDebugToken()
	a.warnIfMatched(ctx)
	a.warnedTwice = new(atomic.Bool)

	var err error
	if a.guard, err = a.loadGuard(); err != nil {
		return err
	}
	if a.skew, err = a.loadClockSkew(); err != nil {
		return err
	}
	client, err := a.newClient()
	if err != nil {
		return err
	}
	if a.storeCfg, err = a.provisionStore(repl); err != nil {
		return err
	}
	if a.storeCfg != nil {
		// Records of another merchant (or Rebell environment) sharing this
		// Redis, prefix and key do not open here.
		a.storeCfg.Realm = a.Endpoint + "\x00" + a.ClientID
	}
	key := a.poolIdentity()
	val, _, err := caches.LoadOrNew(key, recoverConstructor("the session cache", a.logger, func() (caddy.Destructor, error) {
		ex := &swapExchanger{}
		ex.client.Store(client)
		// The store is made here, so a pooled cache has exactly one; the
		// cache owns it from now on and closes it.
		sessionKeys, err := sessionKeys(a.storeCfg)
		if err != nil {
			return nil, err
		}
		var (
			store      session.Store
			redisStore *redisstore.Store
		)
		if a.storeCfg != nil {
			st, err := newStore(a.storeCfg, a.logger.Named("store"))
			if err != nil {
				return nil, err
			}
			store, redisStore = tracedStore{st}, st
		}
		guarded := guard.NewExchanger(ex, a.guard.Guard)
		// Calls made under a traced context get spans (tracing.go).
		traced := &tracingExchanger{next: guarded, breaker: a.guard.State}
		p := &pooledCache{exchanger: ex}
		var queue session.PendingCancels
		if store != nil {
			queue = store
		}
		if p.revoker, err = revoke.New(revoke.Config{
			Queue:     queue,
			Canceller: traced,
			Refresher: traced,
			// A request's trace goes with the cancel it queues (tracing.go).
			Carry:     carryLink,
			Logger:    a.logger,
			OnResult:  func(result string) { metrics.cancels.WithLabelValues(result).Inc() },
			OnPending: func(n int) { p.pending.Store(int64(n)) },
		}); err != nil {
			if store != nil {
				_ = store.Close()
			}
			return nil, err
		}
		if store != nil {
			// The revoker hears the store's announcements of pending
			// cancels; the cache hears the rest.
			store = p.revoker.Watch(store)
		}
		c, err := cache.New(cache.Config{
			Store:            store,
			SessionKeys:      sessionKeys,
			Exchanger:        traced,
			MaxSessions:      a.MaxSessions,
			HotSessions:      a.HotSessions,
			RefreshAhead:     time.Duration(a.RefreshAhead),
			IdleTimeout:      time.Duration(a.IdleTimeout),
			LoginDedupWindow: time.Duration(*a.LoginDedupWindow),
			Logger:           a.logger,
			OnLogin:          func(result string) { metrics.logins.WithLabelValues(result).Inc() },
			OnRefresh:        func(result string) { metrics.refreshes.WithLabelValues(result).Inc() },
			OnSessionEnded:   func(reason string) { metrics.ended.WithLabelValues(reason).Inc() },
			OnThawed:         metrics.thawed.Inc,
			Revoke:           p.queueCancel,
			Carry:            carrySpan, // a request's trace goes with the work it starts (tracing.go)
		})
		if err != nil {
			if store != nil {
				_ = store.Close()
			}
			return nil, err
		}
		p.Cache = c
		p.storeProbe = startStoreProbe(redisStore)
		p.revoker.Start()
		return p, nil
	}))
	if err != nil {
		return err
	}
	a.poolKey, a.pooled = key, true
	a.cache = val.(*pooledCache)

	cookie := a.SessionCookie
	if cookie == "off" {
		cookie = ""
	}
	hcfg := handler.Config{
		Sessions:          a.cache,
		LoginPath:         a.LoginPath,
		LogoutPath:        a.LogoutPath,
		SessionHeader:     a.SessionHeader,
		SessionCookie:     cookie,
		AccessTokenHeader: a.AccessTokenHeader,
		CustomerIDHeader:  a.CustomerIDHeader,
		Logger:            a.logger,
		OnGrant:           setGrantPlaceholders,
		OnReject:          setRejectPlaceholders,
		OnOutcome:         countRequest,
		Public:            publicPredicate(a.Public),
		OnPublic:          setPublicPlaceholders,
		ReturnErrors:      a.Errors == "caddy",
	}
	a.abuseConfig(&hcfg)
	if err := a.provisionIdentity(repl, &hcfg); err != nil {
		return err
	}
	if a.handler, err = handler.New(hcfg); err != nil {
		return err
	}
	// Only now that everything is in place does this config's client serve
	// the (possibly shared) cache, and its bound apply to the shared guard.
	a.cache.exchanger.client.Store(client)
	a.cache.revoke.Store(a.Revoke == "on")
	if err := a.guard.SetLoginRate(a.LoginCallsPerSecond); err != nil {
		return err
	}
	return a.guard.SetLimit(a.MaxConcurrentCalls)
}

func (a *Auth) setDefaults() {
	if a.KeyVersion == nil {
		v := defaultKeyVersion
		a.KeyVersion = &v
	}
	if a.SignatureAlgorithm == "" {
		a.SignatureAlgorithm = rebell.AlgorithmRSA256
	}
	if a.APIVersion == "" {
		a.APIVersion = "v2"
	}
	if a.Timeout == 0 {
		a.Timeout = caddy.Duration(rebell.DefaultTimeout)
	}
	if a.Retries == nil {
		v := defaultRetries
		a.Retries = &v
	}
	if a.LoginPath == "" {
		a.LoginPath = handler.DefaultLoginPath
	}
	if a.LogoutPath == "" {
		a.LogoutPath = handler.DefaultLogoutPath
	}
	if a.SessionHeader == "" {
		a.SessionHeader = handler.DefaultSessionHeader
	}
	if a.SessionCookie == "" {
		a.SessionCookie = defaultSessionCookie
	}
	if a.RefreshAhead == 0 {
		a.RefreshAhead = caddy.Duration(cache.DefaultRefreshAhead)
	}
	if a.LoginDedupWindow == nil {
		v := caddy.Duration(defaultLoginDedupWindow)
		a.LoginDedupWindow = &v
	}
	if a.MaxSessions == 0 {
		a.MaxSessions = cache.DefaultMaxSessions
	}
	if a.AccessTokenHeader == "" {
		a.AccessTokenHeader = handler.DefaultAccessTokenHeader
	}
	if a.CustomerIDHeader == "" {
		a.CustomerIDHeader = handler.DefaultCustomerIDHeader
	}
	if a.Revoke == "" {
		a.Revoke = "on"
	}
}

// newClient checks the Rebell settings, loads the keys and returns the
// applyToken client.
func (a *Auth) newClient() (*rebell.Client, error) {
	if a.Endpoint == "" {
		return nil, errors.New("endpoint: required")
	}
	if a.ClientID == "" {
		return nil, errors.New("client_id: required")
	}
	var (
		priv *rsa.PrivateKey
		err  error
	)
	switch {
	case a.PrivateKeyFile != "" && a.PrivateKey != "":
		return nil, errors.New("private_key_file and private_key: set only one")
	case a.PrivateKeyFile != "":
		if priv, err = rebell.ReadPrivateKeyFile(a.PrivateKeyFile); err != nil {
			return nil, fmt.Errorf("private_key_file: %w", err)
		}
	case a.PrivateKey != "":
		if priv, err = rebell.ParsePrivateKey([]byte(a.PrivateKey)); err != nil {
			return nil, fmt.Errorf("private_key: %w", err)
		}
	default:
		return nil, errors.New("private_key_file or private_key: one is required")
	}
	pubs, err := a.rebellPublicKeys()
	if err != nil {
		return nil, err
	}
	if len(pubs) == 0 {
		a.logger.Warn("no Rebell public key configured: applyToken responses are NOT verified; set rebell_public_key_file")
	}
	signer, err := rebell.NewSigner(a.ClientID, priv, *a.KeyVersion, a.SignatureAlgorithm)
	if err != nil {
		return nil, fmt.Errorf("signature_algorithm: %w", err)
	}
	if a.APIVersion != "v1" && a.APIVersion != "v2" {
		return nil, fmt.Errorf("api_version: %q is not v1 or v2", a.APIVersion)
	}
	if a.ReferenceClientID != "" && a.APIVersion != "v2" {
		return nil, errors.New("reference_client_id: only sent with api_version v2")
	}
	client, err := rebell.NewClient(rebell.ClientConfig{
		Endpoint:          a.Endpoint,
		Signer:            signer,
		RebellPublicKeys:  pubs,
		APIVersion:        a.APIVersion,
		ReferenceClientID: a.ReferenceClientID,
		CustomerBelongsTo: a.CustomerBelongsTo,
		Timeout:           time.Duration(a.Timeout),
		Retries:           *a.Retries,
		HTTPClient:        a.httpClient,
		Transport:         a.guard.transport,
		MayRetry:          a.guard.MayRetry,
		ClockSkew:         a.clockSkew(),
		OnAttempt:         traceAttempt,
		Observe: func(grantType, _ string, took time.Duration) {
			metrics.applyToken.WithLabelValues(grantType).Observe(took.Seconds())
		},
	})
	if err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	return client, nil
}

// Cleanup releases this config's reference to the token cache; the cache
// stops when no config uses it any more.
func (a *Auth) Cleanup() error {
	a.releaseIdentity()
	gerr := errors.Join(a.releaseGuard(), a.releaseClockSkew())
	if !a.pooled {
		return gerr
	}
	_, err := caches.Delete(a.poolKey)
	a.pooled = false
	return errors.Join(err, gerr)
}

// ServeHTTP handles login, logout and every other request as docs/contract.md says.
func (a *Auth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if alreadyHandled(r) {
		a.warnSecondDirective()
		return next.ServeHTTP(w, r)
	}
	return caddyError(r, a.handler.ServeHTTP(w, r, next))
}

// grantPlaceholders answers the identity placeholders of one grant. It is
// built once per grant (see cache.Grant.Attach), so a request that passes
// costs no allocation for its placeholders.
type grantPlaceholders struct {
	customerID, accessToken, accessExpiry, sessionExpiry any
}

func (p *grantPlaceholders) replace(key string) (any, bool) {
	switch key {
	case "http.auth.user.id", "http.rebell.customer_id":
		return p.customerID, true
	case "http.rebell.access_token":
		return p.accessToken, true
	case "http.rebell.access_token_expiry":
		return p.accessExpiry, true
	case "http.rebell.session_expiry":
		return p.sessionExpiry, true
	}
	return nil, false
}

func setGrantPlaceholders(r *http.Request, g *cache.Grant) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	f, _ := g.Attachment().(caddy.ReplacerFunc)
	if f == nil {
		p := &grantPlaceholders{
			customerID:    g.CustomerID,
			accessToken:   g.AccessToken.Reveal(),
			accessExpiry:  g.AccessTokenExpiry.UTC().Format(time.RFC3339),
			sessionExpiry: g.SessionExpiry.UTC().Format(time.RFC3339),
		}
		f, _ = g.Attach(caddy.ReplacerFunc(p.replace)).(caddy.ReplacerFunc)
	}
	repl.Map(f)
}

func setRejectPlaceholders(r *http.Request, code string) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	repl.Set("http.auth.user.id", "")
	repl.Set("http.rebell.error", code)
}

var (
	_ caddy.Provisioner           = (*Auth)(nil)
	_ caddy.CleanerUpper          = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Auth)(nil)
)
