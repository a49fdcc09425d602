package caddymodule

import (
	"time"

	"github.com/rebell-gateway/caddy-rebell/store/redisstore"
)

// poolIdentity is the key of a token cache in the reload pool (caches): two
// configs with equal identities serve the same sessions from the same cache,
// so `caddy reload` keeps them; a config whose identity differs gets a new,
// empty cache (README.md, "Putting it in front of a real API", step 4).
//
// Its fields are exactly the settings that need a new cache, because the
// sessions or the cache built for them would be wrong under the new value:
//
//   - whose tokens these are: endpoint, client_id, api_version,
//     reference_client_id and customer_belongs_to decide which Rebell
//     merchant and Mini App issued the tokens the cache holds, and which of
//     them a refresh may present;
//   - the cache's shape, fixed when it is made: max_sessions and
//     hot_sessions (the memory tier's sizes), refresh_ahead, idle_timeout
//     and login_dedup_window;
//   - the shared store, which the cache owns: every store setting.
//
// Left out, because they apply to a kept cache without harming its sessions:
// the keys and how applyToken is called (private_key_file, private_key,
// rebell_public_key_file(s), rebell_public_key(s), key_version,
// signature_algorithm, timeout, retries), which a reload swaps into the
// cache's Rebell client (swapExchanger); max_concurrent_calls and
// login_calls_per_second, which belong to the guard of calls to Rebell,
// pooled on its own by endpoint and client id (guard.go); and what belongs
// to one config's handler (login_path, logout_path, session_header,
// session_cookie, access_token_header, customer_id_header, public, errors,
// login_rate, allowed_origins, cookie, identity_assertion: an assertion kept
// with a grant is reused only by the signer that made it).
//
// A new setting goes in as one field here, or in the list above;
// TestPoolIdentityClassifiesEverySetting fails until it is in one of them.
// The struct must stay comparable (no slices, maps or pointers): it is a map
// key.
type poolIdentity struct {
	endpoint          string
	clientID          string
	apiVersion        string
	referenceClientID string
	customerBelongsTo string

	maxSessions      int64
	hotSessions      int64
	refreshAhead     time.Duration
	idleTimeout      time.Duration
	loginDedupWindow time.Duration

	// store is the shared store's Identity: every setting of `store
	// redis`, after defaults, secrets as their SHA-256; zero without one.
	store redisstore.Identity
}

// poolIdentity returns the identity of this config's cache. It runs after
// setDefaults and provisionStore.
func (a *Auth) poolIdentity() poolIdentity {
	return poolIdentity{
		endpoint:          a.Endpoint,
		clientID:          a.ClientID,
		apiVersion:        a.APIVersion,
		referenceClientID: a.ReferenceClientID,
		customerBelongsTo: a.CustomerBelongsTo,
		maxSessions:       a.MaxSessions,
		hotSessions:       a.HotSessions,
		refreshAhead:      time.Duration(a.RefreshAhead),
		idleTimeout:       time.Duration(a.IdleTimeout),
		loginDedupWindow:  time.Duration(*a.LoginDedupWindow),
		store:             storeIdentity(a.storeCfg),
	}
}

// storeIdentity is the Identity of cfg, zero when there is no shared store.
func storeIdentity(cfg *redisstore.Config) redisstore.Identity {
	if cfg == nil {
		return redisstore.Identity{}
	}
	return cfg.Identity()
}
