package pgstore

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

	// probeTimeout is how long a notification sent on another connection
	// may take to reach a new listening connection. A connection can
	// LISTEN without error and still never be told anything, as through
	// PgBouncer in transaction mode: LISTEN lands on whichever server
	// connection the pooler picked, and what is sent to it is lost. The
	// cache must not be used on such a connection, and retrying soon
	// would only find the pooler again, so a failed probe backs off to
	// probeBackoff.
	probeTimeout = 2 * time.Second
	probeBackoff = time.Minute
)

// errNoDelivery is the listener's error when its probe did not arrive.
var errNoDelivery = errors.New("a notification sent from another connection did not reach the listening connection; " +
	"it needs a session-level connection (behind PgBouncer, session pooling), so the local cache stays off and broadcasts go unheard")

// listenLoop keeps a LISTEN connection up for as long as ctx lasts. The
// cache is usable only while it is, and subscribers hear broadcasts only
// while it is.
func (s *Store) listenLoop(ctx context.Context) {
	backoff := minBackoff
	lost, deaf := false, false
	for {
		err := s.listen(ctx, func() {
			backoff = minBackoff
			if lost || deaf {
				s.log.Info("pgstore: notification connection back", "table", s.q.table)
			}
			lost, deaf = false, false
		})
		// Notifications may have been missed: nothing cached can be
		// trusted, and nothing may be cached until LISTEN is back.
		// Subscribers are told when it is: what they would reload now
		// could change again before then, unheard.
		s.cache.setLive(false)
		s.cache.dropAll()
		if ctx.Err() != nil {
			return
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxBackoff)
		switch {
		case errors.Is(err, errNoDelivery):
			// Only this retry waits long: a later failure of another kind
			// backs off as ever.
			wait = s.probeBackoff/2 + rand.N(s.probeBackoff/2+1)
			// Said once: where it is the pooler, it stays so.
			level := slog.LevelWarn
			if deaf {
				level = slog.LevelDebug
			}
			deaf = true
			s.log.Log(ctx, level, "pgstore: notifications do not reach the listening connection; local cache off and broadcasts unheard. "+
				"Behind PgBouncer use session pooling for the store, or set Options.CacheTTL to -1",
				"table", s.q.table, "err", err)
		default:
			s.log.Warn("pgstore: lost the notification connection; local cache off and broadcasts unheard until it is back",
				"table", s.q.table, "err", err)
			lost = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// listen takes a connection out of the pool, LISTENs on it, proves that
// notifications reach it, turns the cache on, and evicts what
// notifications name, and hands broadcasts to the subscribers, until the
// connection fails or ctx ends; up runs once LISTEN is in effect. Without
// a cache it does not LISTEN for writes: every write on the table would
// be sent to it for nothing.
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
	// The probe's channel is this connection's alone, so that no other
	// listener hears the probe, and no later connection an earlier one.
	var nonce [16]byte
	crand.Read(nonce[:])
	probe := "hallpass_probe_" + hex.EncodeToString(nonce[:])
	listen := s.q.listenBroadcast + "; LISTEN " + pgx.Identifier{probe}.Sanitize()
	if s.cache != nil {
		listen += "; " + s.q.listen
	}
	_, err = conn.Exec(cctx, listen)
	cancel()
	if err != nil {
		return err
	}
	if err := s.awaitProbe(ctx, conn, probe); err != nil {
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
		s.handle(n)
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

// handle acts on a notification heard on the listening connection.
func (s *Store) handle(n *pgconn.Notification) {
	switch {
	case n == nil:
	case n.Channel == s.q.broadcastChannel:
		s.subs.deliver(n.Payload)
	case n.Channel == s.q.channel:
		s.cache.evictPayload(n.Payload)
	}
}

// awaitProbe sends a notification on channel from another connection of
// the pool and waits for it on conn, which LISTENs on channel. What else
// arrives meanwhile is dropped: the cache is not in use yet, and is
// emptied once the probe is back, and subscribers are told to reload
// then, which covers every message sent before; delivering one now would
// put it before that reload.
func (s *Store) awaitProbe(ctx context.Context, conn *pgx.Conn, channel string) error {
	to := channel
	if s.loseProbes != nil && s.loseProbes.Load() {
		to += "_lost"
	}
	pctx, cancel := s.opCtx(ctx)
	_, err := s.pool.Exec(pctx, "SELECT pg_notify($1, '')", to)
	cancel()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	for {
		n, err := conn.WaitForNotification(wctx)
		switch {
		case err == nil && n.Channel == channel:
			return nil
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			return errNoDelivery
		default:
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
