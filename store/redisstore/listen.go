package redisstore

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/rebell-gateway/caddy-rebell/session"
)

// Listen implements session.Store. Its goroutine subscribes to the channel,
// delivers EventResync on every subscription confirmation, PINGs a quiet
// subscription every healthInterval (a missing answer, like any error,
// drops the connection) and subscribes again, with a backoff up to retryMax,
// for as long as Redis is unreachable. fn must not call Close (Close waits
// for fn to return).
//
// It drives go-redis's PubSub.ReceiveTimeout itself rather than
// PubSub.ChannelWithSubscriptions, whose goroutine hides connection errors
// (nothing to log), reads without a deadline (a half-open connection is only
// noticed by TCP keepalive) and drops messages when fn is slow.
func (s *Store) Listen(fn func(session.Event)) {
	s.listenOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return
		}
		s.listenWG.Add(1)
		go s.listen(fn)
	})
}

func (s *Store) listen(fn func(session.Event)) {
	defer s.listenWG.Done()
	const firstWait = 100 * time.Millisecond
	wait := firstWait
	for {
		ps := s.client.Subscribe(s.ctx, s.keys.channel)
		if !s.setPubSub(ps) {
			_ = ps.Close()
			return
		}
		subscribed := s.receive(ps, fn)
		_ = ps.Close()
		if !s.setPubSub(nil) {
			return
		}
		if subscribed {
			wait = firstWait
			s.droppedAt = time.Now()
		}
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, s.retryMax)
	}
}

// setPubSub records the current subscription for Close; it reports false
// if the Store is closed.
func (s *Store) setPubSub(ps *redis.PubSub) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.pubsub = ps
	return true
}

// receive delivers what ps receives until its connection fails or the
// Store closes. It reports whether the subscription was confirmed.
func (s *Store) receive(ps *redis.PubSub, fn func(session.Event)) (subscribed bool) {
	pinged := false
	var epochAt time.Time // when the epoch marker was last checked
	for {
		msg, err := ps.ReceiveTimeout(s.ctx, min(s.healthInterval, s.epochEvery))
		if s.ctx.Err() != nil {
			return subscribed
		}
		if subscribed && time.Since(epochAt) >= s.epochEvery {
			// Renews the marker, and notices data lost without the
			// subscription dropping (FLUSHALL, a marker evicted).
			epochAt = time.Now()
			if s.checkEpoch(true) {
				fn(session.Event{Kind: session.EventResync, Lost: true})
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && subscribed {
				if pinged {
					s.health.fail("subscribe", errors.New("no answer to PING"))
					return subscribed
				}
				if err := ps.Ping(s.ctx); err != nil {
					s.health.fail("subscribe", err)
					return subscribed
				}
				pinged = true
				continue
			}
			s.health.fail("subscribe", err)
			return subscribed
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == s.keys.channel {
				subscribed = true
				s.health.ok()
				epochAt = time.Now()
				fn(session.Event{Kind: session.EventResync, Lost: s.checkEpoch(false)})
			}
		case *redis.Message:
			ev, ok := parseMessage(m.Payload)
			if !ok {
				s.log.Debug("redis store: ignoring a malformed announcement", zap.Int("length_bytes", len(m.Payload)))
				continue
			}
			fn(ev)
		}
	}
}

// epochTTL is the lifetime of the epoch marker, renewed at every
// subscription and every epochEvery while subscribed.
const epochTTL = 30 * 24 * time.Hour

// checkEpoch reads (or sets) the store's epoch marker and reports whether it
// changed since this Store last read it while it either is still subscribed
// (subscribed: it heard every end since, so nothing it holds was ended) or
// was subscribed less than session.EndMarkLifetime ago (the end marks of
// sessions ended since outlive the outage): Redis lost its data. It reports
// false when the marker cannot be read.
func (s *Store) checkEpoch(subscribed bool) bool {
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	v, err := s.run(ctx, epochScript, []string{s.keys.epoch}, newOwner(), millis(epochTTL)).Text()
	if err != nil {
		s.log.Debug("redis store: epoch marker unreadable", zap.Error(err))
		return false
	}
	lost := s.epoch != "" && v != s.epoch && (subscribed || time.Since(s.droppedAt) < session.EndMarkLifetime)
	s.epoch = v
	if lost {
		s.log.Warn("redis store came back without its data; sessions held in memory are written back")
	}
	return lost
}

// health logs connection trouble: one WARN when an outage starts (at most
// one per warnEvery; DEBUG otherwise), and when it ends, INFO if its start
// was a WARN (DEBUG otherwise), so a flapping connection writes at most two
// lines per warnEvery.
type health struct {
	log      *zap.Logger
	down     atomic.Bool
	mu       sync.Mutex
	lastWarn time.Time
	// warned is whether the current outage's start was logged as a WARN;
	// down and warned change under mu.
	warned bool
}

// warnEvery limits the WARNs of a flapping connection.
const warnEvery = time.Minute

// fail records trouble with Redis (err contains no key names or values).
func (h *health) fail(op string, err error) {
	if errors.Is(err, context.Canceled) || h.down.Load() {
		return // the caller gave up, or the outage is known
	}
	h.mu.Lock()
	if h.down.Load() {
		h.mu.Unlock()
		return
	}
	h.down.Store(true)
	now := time.Now()
	warn := h.lastWarn.IsZero() || now.Sub(h.lastWarn) >= warnEvery
	if warn {
		h.lastWarn = now
	}
	h.warned = warn
	h.mu.Unlock()
	msg := "redis store unavailable: sessions not held in memory cannot be served until it returns"
	if warn {
		h.log.Warn(msg, zap.String("op", op), zap.Error(err))
	} else {
		h.log.Debug(msg, zap.String("op", op), zap.Error(err))
	}
}

// ok records a successful exchange with Redis.
func (h *health) ok() {
	if !h.down.Load() {
		return
	}
	h.mu.Lock()
	if !h.down.Load() {
		h.mu.Unlock()
		return
	}
	h.down.Store(false)
	warned := h.warned
	h.mu.Unlock()
	if warned {
		h.log.Info("redis store reachable again")
	} else {
		h.log.Debug("redis store reachable again")
	}
}
