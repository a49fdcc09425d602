package cache

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rebell-gateway/caddy-rebell/rebell"
)

// entry is one session as the memory tier holds it. ristretto stores a
// pointer to it; the token state is an immutable snapshot swapped atomically,
// so a cached request reads it without taking a lock.
type entry struct {
	// key is the session's full Key; ristretto only knows its first 8 bytes.
	key Key
	// gen is the generation of the session in the memory tier's slab (see
	// slab.go): an entry of another generation under the same key is not
	// the one held.
	gen uint64
	// frozen is set once the memory tier wrote the entry's session into its
	// slot and took the entry out of its hot table (memory.go): the entry is
	// a snapshot from then on, and a refresh or a state adopted from the
	// store goes to the session's current entry. It is set under mu.
	frozen atomic.Bool
	// state is the current token snapshot; never nil.
	state atomic.Pointer[tokenState]
	// lastUsed is when a request last used the session (Unix ns), written at
	// most once per second, and at the first use after a newer session
	// entered the memory tier (see touch).
	lastUsed atomic.Int64
	// created is when the session was created (Unix ns).
	created int64
	// until is when the memory tier stops holding the session (Unix ns on
	// the wall clock): its record lifetime, R + grace.
	until atomic.Int64
	// pinned is set while the login that creates the session has not handed
	// its id out: the memory tier does not end it for room meanwhile.
	pinned atomic.Bool
	// shortened is set once the INFO that the refresh-ahead window of the
	// session's tokens is shorter than configured was logged.
	shortened atomic.Bool
	// ended is set once, when the session ends (logout, customer ended, idle,
	// expired, dead refresh token, evicted for room without a shared store).
	// Holders of the pointer see it. With a shared store a copy the memory
	// tier drops for room is not ended: the session lives on in its record.
	ended atomic.Bool

	// mu serialises starting and finishing refreshes. flight and failure are
	// written under mu and may be read without it.
	mu sync.Mutex
	// flight is the refresh in progress, nil when none.
	flight atomic.Pointer[refreshCall]
	// failure is the last refresh failure, nil after a success: no
	// background refresh starts before its cooldown ends.
	failure atomic.Pointer[refreshFailure]

	// With a shared store only:
	// checked is when the entry was last compared with the store's record
	// (Unix ns); a copy older than replica.recheckEvery is compared again before
	// use.
	checked atomic.Int64
	// checking is held by the request that compares the entry with the store.
	checking atomic.Bool
	// storing is the highest version this instance has asked the store to
	// write for the session: the store's announcement of it is not news.
	storing atomic.Uint64
	// restored is set once this instance wrote the session back to a store
	// that lost its data.
	restored atomic.Bool
	// wake, guarded by mu, is closed (and cleared) when a newer state is
	// adopted from the store; a refresh waiting on another instance's lease
	// waits on it.
	wake chan struct{}
}

// tokenState is an immutable snapshot of a session's tokens.
type tokenState struct {
	// grant is handed to requests by pointer; it must not be modified.
	grant        Grant
	refreshToken rebell.Secret
	// version is the store record's version this state is (docs/sessions.md); 0
	// without a shared store.
	version uint64
	// lifetime is the access token's lifetime: its expiry minus when it was
	// obtained (for a state read from the store, when it was read, which
	// never makes it longer). It sizes the refresh-ahead window.
	lifetime time.Duration
}

// refreshFailure remembers a failed refresh: background refreshes of the
// session wait until it passes.
type refreshFailure struct {
	until int64 // Unix ns: no background refresh before then
}

// touchInterval is how stale lastUsed may get before a request writes it.
const touchInterval = int64(time.Second)

func newEntry(k Key, st *tokenState, now time.Time) *entry {
	e := &entry{key: k, created: now.UnixNano()}
	e.state.Store(st)
	e.lastUsed.Store(now.UnixNano())
	return e
}

// touch records a use at now (Unix ns). newest is the latest last use of a
// session the memory tier took in (memoryTier.newest). It writes at most once
// per second, so the requests of a busy session do not all write the same
// cache line, except that the first use after a session newer than the
// recorded last use arrived always writes: a session used since the
// newcomers arrived then reads as more recent than they do, and the least
// recently used one ended for room is never it (docs/sessions.md).
func (e *entry) touch(now, newest int64) {
	if last := e.lastUsed.Load(); now-last >= touchInterval || last < newest {
		e.lastUsed.Store(now)
	}
}

// errBadToken is wrapped in a rebell.Error of KindBadResponse when applyToken
// succeeded but its tokens cannot make a session.
var errBadToken = errors.New("unusable token in applyToken response")

func badResponse(msg string) error {
	return &rebell.Error{Kind: rebell.KindBadResponse, Err: fmt.Errorf("%w: %s", errBadToken, msg)}
}

// loginState validates a login's tokens at now and makes the session's first
// snapshot. Tokens that cannot make a session (no customer, no token, an
// expiry not in the future, an access token outliving its refresh token) are
// a bad response.
func loginState(tok *rebell.Token, now time.Time) (*tokenState, error) {
	switch {
	case tok == nil:
		return nil, badResponse("no token")
	case tok.CustomerID == "":
		return nil, badResponse("empty customerId")
	case tok.AccessToken.IsZero():
		return nil, badResponse("empty accessToken")
	case tok.RefreshToken.IsZero():
		return nil, badResponse("empty refreshToken")
	case !tok.RefreshTokenExpiry.After(now):
		return nil, badResponse("refreshTokenExpiryTime not in the future")
	case !tok.AccessTokenExpiry.After(now):
		return nil, badResponse("accessTokenExpiryTime not in the future")
	case tok.AccessTokenExpiry.After(tok.RefreshTokenExpiry):
		return nil, badResponse("accessTokenExpiryTime after refreshTokenExpiryTime")
	case len(tok.CustomerID) > slabTextMax || tok.AccessToken.Len() > slabTextMax || tok.RefreshToken.Len() > slabTextMax:
		return nil, badResponse("customerId or a token longer than 255 bytes")
	}
	return &tokenState{
		grant: Grant{
			CustomerID:        tok.CustomerID,
			AccessToken:       tok.AccessToken,
			AccessTokenExpiry: tok.AccessTokenExpiry,
			SessionExpiry:     tok.RefreshTokenExpiry,
		},
		refreshToken: tok.RefreshToken,
		lifetime:     tok.AccessTokenExpiry.Sub(now),
	}, nil
}

// refreshedState validates a refresh's tokens at now and makes the snapshot
// that follows old. A response without a refresh token keeps the old one and
// its expiry. A response naming another customer is refused: a refresh never
// changes whom a session acts for.
func refreshedState(old *tokenState, tok *rebell.Token, now time.Time) (*tokenState, error) {
	if tok == nil {
		return nil, badResponse("no token")
	}
	if tok.AccessToken.IsZero() {
		return nil, badResponse("empty accessToken")
	}
	if tok.CustomerID != "" && tok.CustomerID != old.grant.CustomerID {
		return nil, badResponse("customerId changed on refresh")
	}
	rt, rexp := old.refreshToken, old.grant.SessionExpiry
	if !tok.RefreshToken.IsZero() {
		rt, rexp = tok.RefreshToken, tok.RefreshTokenExpiry
	}
	if !rexp.After(now) {
		return nil, badResponse("refreshTokenExpiryTime not in the future")
	}
	if !tok.AccessTokenExpiry.After(now) {
		return nil, badResponse("accessTokenExpiryTime not in the future")
	}
	if tok.AccessTokenExpiry.After(rexp) {
		return nil, badResponse("accessTokenExpiryTime after refreshTokenExpiryTime")
	}
	if tok.AccessToken.Len() > slabTextMax || rt.Len() > slabTextMax {
		return nil, badResponse("a token longer than 255 bytes")
	}
	return &tokenState{
		grant: Grant{
			CustomerID:        old.grant.CustomerID,
			AccessToken:       tok.AccessToken,
			AccessTokenExpiry: tok.AccessTokenExpiry,
			SessionExpiry:     rexp,
		},
		refreshToken: rt,
		lifetime:     tok.AccessTokenExpiry.Sub(now),
	}, nil
}
