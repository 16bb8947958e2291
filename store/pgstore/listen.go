package pgstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

const (
	// listenPingEvery is how long the listener waits in silence before it
	// checks its connection. A connection can die without a word (a NAT
	// forgetting it, a peer that stopped answering), and only a round trip
	// tells; until one fails the cache stays on, bounded by its TTL.
	listenPingEvery = time.Second
	// listenPingTimeout is how long that check may take.
	listenPingTimeout = time.Second
	// Reconnects back off from minBackoff to maxBackoff, with jitter, so
	// that instances cut off together do not storm the database together.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// listenLoop keeps a LISTEN connection up for as long as ctx lasts. The
// cache is usable only while it is, and subscribers hear broadcasts only
// while it is.
func (s *Store) listenLoop(ctx context.Context) {
	backoff := minBackoff
	lost := false
	for {
		err := s.listen(ctx, func() {
			backoff = minBackoff
			if lost {
				s.log.Info("pgstore: notification connection back", "table", s.q.table)
			}
		})
		lost = true
		// Notifications may have been missed: nothing cached can be
		// trusted, and nothing may be cached until LISTEN is back.
		// Subscribers are told when it is: what they would reload now
		// could change again before then, unheard.
		s.cache.setLive(false)
		s.cache.dropAll()
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("pgstore: lost the notification connection; local cache off and broadcasts unheard until it is back",
			"table", s.q.table, "err", err)
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// listen takes a connection out of the pool, LISTENs on it, turns the
// cache on, and evicts what notifications name, and hands broadcasts to
// the subscribers, until the connection fails or ctx ends; up runs once
// LISTEN is in effect. Without a cache it does not LISTEN for writes:
// every write on the table would be sent to it for nothing.
func (s *Store) listen(ctx context.Context, up func()) error {
	cctx, cancel := s.opCtx(ctx)
	pc, err := s.pool.Acquire(cctx)
	if err != nil {
		cancel()
		return err
	}
	// Hijacked, the connection is no longer the pool's: a LISTEN must not
	// be left on a connection other code will use, nor this one be handed
	// out.
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	listen := s.q.listenBroadcast
	if s.cache != nil {
		listen += "; " + s.q.listen
	}
	_, err = conn.Exec(cctx, listen)
	cancel()
	if err != nil {
		return err
	}
	// Whatever was read before LISTEN took effect may be stale, and fills
	// in flight read it: dropping bumps every generation, so they are
	// refused; reads from now on see every change or hear of it.
	// Subscribers reload for the same reason.
	s.cache.dropAll()
	s.cache.setLive(true)
	s.subs.reload()
	up()

	for {
		wctx, cancel := context.WithTimeout(ctx, listenPingEvery)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case n == nil:
		case n.Channel == s.q.broadcastChannel:
			s.subs.deliver(n.Payload)
		default:
			s.cache.evictPayload(n.Payload)
		}
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, context.DeadlineExceeded):
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, listenPingTimeout)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return err
		}
	}
}

// sweepLoop sweeps every interval until ctx ends. A failed sweep is
// retried at the next tick; until then the expired rows are invisible
// anyway.
func (s *Store) sweepLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.Sweep(ctx)
		switch {
		case err == nil:
			if n > 0 {
				s.log.Debug("pgstore: swept expired sessions", "table", s.q.table, "deleted", n)
			}
		case errors.Is(err, ErrSweepLocked), ctx.Err() != nil:
		default:
			s.log.Warn("pgstore: sweep failed", "table", s.q.table, "err", err)
		}
	}
}
