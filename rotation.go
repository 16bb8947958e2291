package hallpass

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hallpass/hallpass/internal/successor"
)

// Periodic rotation.
//
// An authenticated session whose token is older than Config.RotateEvery
// gets a new token when a request ends. The old key then holds a
// tombstone: a record with no user (so no device list shows it) whose only
// data is the successor token, sealed with a key derived from the old
// token. The store cannot open it; whoever presents the old token can.
//
// A request presenting the old token within Config.RotateGrace (one sent
// before the browser had the new cookie, another tab) opens the tombstone
// and is served the successor, on any instance, and every such request
// gets the same successor. After the grace window the old token is reuse:
// its holder was not the browser that got the new cookie, so the chain is
// followed to the live session, which is revoked, with a
// suspicious{token_reuse} event. Tombstones live for Config.TheftWindow.

// Reserved data keys. Handlers should not write "hallpass." keys.
const (
	issuedKey    = "hallpass.issued"    // unix ms the current token was issued
	tombstoneKey = "hallpass.tombstone" // on a tombstone: tombstone
)

// maxChain bounds how many rotations a reused token is followed through.
const maxChain = 16

type tombstone struct {
	Sealed    []byte `json:"sealed"` // nonce || AES-256-GCM(successor token)
	RotatedAt int64  `json:"rotated_at"`
}

// successorLabel keeps rotation's tombstone keys apart from other uses
// of package successor.
const successorLabel = "hallpass rotation successor"

func sealSuccessor(old, next string) ([]byte, error) {
	return successor.Seal(successorLabel, old, next, []byte(tombstoneKey))
}

func openSuccessor(old string, sealed []byte) (string, error) {
	next, err := successor.Open(successorLabel, old, sealed, []byte(tombstoneKey))
	if err != nil {
		return "", fmt.Errorf("hallpass: tombstone: %w", err)
	}
	if _, err := ParseToken(next); err != nil {
		return "", errors.New("hallpass: tombstone holds no token")
	}
	return next, nil
}

// asTombstone returns the tombstone rec holds, if it is one.
func asTombstone(rec *Record) (tombstone, bool) {
	raw, ok := rec.Data[tombstoneKey]
	if !ok {
		return tombstone{}, false
	}
	var t tombstone
	if json.Unmarshal(raw, &t) != nil {
		return tombstone{}, true // a broken tombstone is still no session
	}
	return t, true
}

// issuedAt is when rec's current token was issued. Records from before
// rotation existed count from their sign-in.
func issuedAt(rec *Record) time.Time {
	// Every signed-in request asks, so parse the integer directly rather
	// than through encoding/json, which allocates.
	if raw, ok := rec.Data[issuedKey]; ok {
		if ms, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			return time.UnixMilli(ms)
		}
	}
	return rec.AuthTime
}

func issuedValue(now time.Time) json.RawMessage {
	b, _ := json.Marshal(now.UnixMilli())
	return b
}

// rotateDue reports whether an authenticated record's token is old enough
// to rotate.
func (m *Manager) rotateDue(rec *Record, now time.Time) bool {
	return m.rotateEvery > 0 && rec.UserID != "" && now.Sub(issuedAt(rec)) >= m.rotateEvery
}

// rotatePeriodic moves rec to a fresh token with d applied and leaves a
// tombstone at the old key. It returns the new record and token.
func (m *Manager) rotatePeriodic(ctx context.Context, rec *Record, oldToken string, d Delta, now time.Time) (*Record, string, error) {
	set := make(map[string]json.RawMessage, len(d.Set)+1)
	for k, v := range d.Set {
		set[k] = v
	}
	set[issuedKey] = issuedValue(now)
	d.Set = set
	next, token, err := m.rotate(ctx, rec, d)
	if err != nil {
		return nil, "", err
	}
	sealed, err := sealSuccessor(oldToken, token)
	if err == nil {
		ts, _ := json.Marshal(tombstone{Sealed: sealed, RotatedAt: now.UnixMilli()})
		until := minTime(now.Add(m.theftWindow), rec.AbsoluteDeadline)
		err = m.store.Create(ctx, &Record{
			Key:       rec.Key,
			Handle:    rec.Handle,
			Meta:      Meta{AbsoluteDeadline: until},
			Touch:     Touch{LastSeen: now, IdleDeadline: until},
			CreatedAt: now,
			Data:      map[string]json.RawMessage{tombstoneKey: ts},
		})
	}
	if err != nil {
		// The rotation itself stands; without the tombstone a request
		// still carrying the old token is a guest, and reuse of it goes
		// unnoticed. Worth a log line, not a failed request.
		m.cfg.Logger.Warn("hallpass: could not leave a rotation tombstone", "handle", rec.Handle, "error", err)
	}
	m.emit(ctx, EventRotated, "", next, "", "")
	return next, token, nil
}

// followTombstone handles a request whose token led to a tombstone. Within
// the grace window it returns the live successor record and its token.
// After it, it revokes the live session at the end of the chain and
// returns nil.
func (m *Manager) followTombstone(ctx context.Context, s *Session, token string, ts tombstone) (*Record, string, error) {
	within := s.requestTime.Sub(time.UnixMilli(ts.RotatedAt)) < m.rotateGrace
	for range maxChain {
		next, err := openSuccessor(token, ts.Sealed)
		if err != nil {
			m.emit(ctx, EventSuspicious, ReasonMalformedCookie, nil, s.ip, s.ua)
			return nil, "", nil
		}
		rec, err := m.store.Load(ctx, KeyOf(next))
		if errors.Is(err, ErrNotFound) {
			return nil, "", nil // ended meanwhile: nothing to serve or revoke
		}
		if err != nil {
			return nil, "", fmt.Errorf("%w: load successor: %w", ErrStore, err)
		}
		token = next
		if t, ok := asTombstone(rec); ok {
			ts = t
			continue
		}
		if within {
			return rec, token, nil
		}
		if err := m.store.Delete(ctx, rec.Key); err != nil {
			return nil, "", fmt.Errorf("%w: revoke after token reuse: %w", ErrStore, err)
		}
		m.emit(ctx, EventSuspicious, ReasonTokenReuse, rec, s.ip, s.ua)
		m.emit(ctx, EventRevoked, ReasonTokenReuse, rec, s.ip, s.ua)
		return nil, "", nil
	}
	return nil, "", nil
}
