package redisstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/redis/rueidis"
)

// other is one of a user's sessions a limited Rotate counts.
type other struct {
	member string
	handle string
	auth   int64 // unix ms; math.MinInt64 for none, which goes first
}

// evictionOrder sorts the sessions a limit ends first to the front: the
// earliest sign-in, then the lower handle.
func evictionOrder(a, b other) int {
	if c := cmp.Compare(a.auth, b.auth); c != 0 {
		return c
	}
	return strings.Compare(a.handle, b.handle)
}

// rotateClusterLimited is a Rotate with a limit in a Cluster, where the
// user's sessions and index are in different slots and no script can
// count and move at once. The user's lease orders it instead: with the
// lease held for its token it reads the index and the records it names,
// decides, takes the old record, then commits the decision to the index
// (new key in, evicted keys out) only if the lease is still its own, and
// goes on as rotateCluster does, deleting the evicted records before it
// creates the new one. Every other limited Rotate into the user waits for
// the lease, and every other write that adds to the index too, so the
// count cannot miss a session added meanwhile; see the package doc for
// what it can miss. It returns the handles of the sessions it evicted.
func (s *Store) rotateClusterLimited(ctx context.Context, from, to hallpass.Key, d *hallpass.Delta, lim *hallpass.Limit) ([]string, error) {
	now := s.now()
	fk, tk := s.sessionKey(from), s.sessionKey(to)
	fv, err := s.peekRotate(ctx, fk, tk, now)
	if err != nil {
		return nil, err
	}
	oldUser, newUser, sc := fv[3], fv[3], "+inf"
	if fv[2] != "" {
		sc = fv[2]
	}
	if d.Meta != nil {
		newUser, sc = d.Meta.UserID, score(d.Meta.AbsoluteDeadline)
	}
	if newUser == "" {
		return nil, s.rotateCluster(ctx, from, to, d) // guests are not limited
	}
	fm, tm := member(from), member(to)
	idx, lk := s.indexKey(newUser), s.leaseKey(newUser)
	token, ttl := newToken(), strconv.FormatInt(leaseTTL.Milliseconds(), 10)
	held := false
	defer func() {
		if held {
			s.unlock(ctx, newUser, token)
		}
	}()

	var (
		taken   []string // the old record's fields, once taken
		rec     *hallpass.Record
		victims []other
	)
	start := time.Now()
	for try := 0; ; try++ {
		held = true // from here on a failure may leave the lease taken
		code, arr, err := result(limitLockScript.Exec(ctx, s.client, []string{idx, lk}, []string{msString(now), token, ttl}))
		switch {
		case err != nil:
			return nil, s.lost(ctx, fk, from, taken, err)
		case code == codeBusy:
			held = false
			if err := wait(ctx, start, try); err != nil {
				return nil, s.lost(ctx, fk, from, taken, err)
			}
			continue
		case code != codeOK || len(arr) == 0:
			return nil, s.lost(ctx, fk, from, taken, errReply)
		}
		members, err := arr[0].AsStrSlice()
		if err != nil {
			return nil, s.lost(ctx, fk, from, taken, err)
		}
		others, err := s.limitOthers(ctx, members, fm, tm, newUser, now)
		if err != nil {
			return nil, s.lost(ctx, fk, from, taken, err)
		}
		excess := len(others) - lim.Max + 1
		if excess > 0 && lim.RefuseNew {
			return nil, s.lost(ctx, fk, from, taken, hallpass.ErrTooManySessions)
		}
		slices.SortFunc(others, evictionOrder)
		victims = others[:max(excess, 0)]

		if taken == nil {
			if taken, rec, err = s.take(ctx, fk, to, now); err != nil {
				return nil, err
			}
			s.wrote(from, 0)
			s.memo.forget(from)
			if d.Meta == nil && rec.UserID != newUser {
				// The record changed user after the peek: the count was
				// of the wrong user's sessions.
				return nil, s.lost(ctx, fk, from, taken, errRacing)
			}
		}

		args := make([]string, 0, 4+len(victims))
		args = append(args, token, ttl, tm, sc)
		for _, v := range victims {
			args = append(args, v.member)
		}
		c, err := limitIndexScript.Exec(ctx, s.client, []string{idx, lk}, args).AsInt64()
		switch {
		case err != nil:
			return nil, s.lost(ctx, fk, from, taken, err)
		case c == codeBusy:
			// The lease expired and someone else took it: nothing is
			// committed, so count again.
			held = false
			if err := wait(ctx, start, try); err != nil {
				return nil, s.lost(ctx, fk, from, taken, err)
			}
			continue
		case c != codeOK:
			return nil, s.lost(ctx, fk, from, taken, errReply)
		}
		break
	}

	// The index is committed: from here on a failure loses the session, as
	// in rotateCluster, and leaves the evicted ones ended.
	var evicted []string
	if len(victims) > 0 {
		execs := make([]rueidis.LuaExec, len(victims))
		gone := make([]string, len(victims))
		for i, v := range victims {
			k, _ := parseMember(v.member)
			execs[i] = rueidis.LuaExec{Keys: []string{s.sessionKey(k)}, Args: []string{msString(now), newUser}}
			gone[i] = v.member
		}
		for i, r := range deleteIfUserScript.ExecMulti(ctx, s.client, execs...) {
			c, err := r.AsInt64()
			if err != nil {
				s.forgetMembers(gone)
				return nil, fmt.Errorf("session lost in rotation: %w", err)
			}
			if c == 2 {
				evicted = append(evicted, victims[i].handle)
			}
		}
		s.forgetMembers(gone)
	}

	d.Apply(rec)
	rec.Version++
	args := make([]string, 0, 2+2*(16+len(rec.Data)))
	args = append(args, msString(now), tm)
	args = appendRecord(args, rec, rec.Version)
	code, err := createScript.Exec(ctx, s.client, []string{tk}, args).AsInt64()
	switch {
	case err != nil:
		return nil, fmt.Errorf("session lost in rotation: %w", err)
	case code == codeExists:
		return nil, hallpass.ErrExists // and the session is lost: see the package doc
	case code != codeOK:
		return nil, errReply
	}
	unindex := ""
	if oldUser == newUser {
		unindex = fm
	}
	ok, err := limitDoneScript.Exec(ctx, s.client, []string{idx, lk}, []string{token, tm, unindex}).AsInt64()
	if err != nil {
		return nil, err
	}
	held = false
	if rec.Expired(now) {
		s.wrote(to, 0)
	} else {
		s.wrote(to, rec.Version)
		if ok == 0 {
			// A DeleteUser ended the user's sessions meanwhile: as in
			// stillIndexed, what was written goes too.
			s.wrote(to, 0)
			if err := s.client.Do(ctx, s.client.B().Del().Key(tk).Build()).Error(); err != nil {
				return nil, err
			}
			return nil, hallpass.ErrNotFound
		}
		s.memo.hint(to, newUser)
	}
	if oldUser != "" && oldUser != newUser {
		_ = s.client.Do(ctx, s.client.B().Zrem().Key(s.indexKey(oldUser)).Member(fm).Build()).Error()
	}
	return evicted, nil
}

// peekRotate reads the fields of both keys of a Cluster Rotate and checks
// that from is live and to is not. It returns from's m:v m:id m:ad m:u.
func (s *Store) peekRotate(ctx context.Context, fk, tk string, now time.Time) ([]string, error) {
	peek := func(k string) rueidis.Completed {
		return s.client.B().Hmget().Key(k).Field(fVersion, fIdle, fAbsolute, fUser).Build()
	}
	res := s.client.DoMulti(ctx, peek(fk), peek(tk))
	fv, err := fieldValues(res[0])
	if err != nil {
		return nil, err
	}
	tv, err := fieldValues(res[1])
	if err != nil {
		return nil, err
	}
	if !liveFields(fv, now) {
		return nil, hallpass.ErrNotFound
	}
	if liveFields(tv, now) {
		return nil, hallpass.ErrExists
	}
	return fv, nil
}

// take reads and deletes the live record at fk, for a Cluster Rotate to
// key to. It returns the stored fields and the record they decode to.
func (s *Store) take(ctx context.Context, fk string, to hallpass.Key, now time.Time) ([]string, *hallpass.Record, error) {
	code, arr, err := result(takeScript.Exec(ctx, s.client, []string{fk}, []string{msString(now)}))
	switch {
	case err != nil:
		return nil, nil, err
	case code == codeNotFound:
		return nil, nil, hallpass.ErrNotFound // another Rotate or a Delete won
	case code != codeOK || len(arr) == 0:
		return nil, nil, errReply
	}
	pairs, err := arr[0].AsStrSlice()
	if err != nil {
		return nil, nil, err
	}
	rec, err := decodePairs(to, pairs)
	if err != nil {
		return nil, nil, err
	}
	if rec == nil {
		return nil, nil, errReply
	}
	return pairs, rec, nil
}

// lost ends a limited Cluster Rotate that fails with err before it
// committed anything to the index. If it had taken the old record, it
// puts it back as it was (its index entry was never removed), so that a
// refused or failed Rotate changes nothing.
func (s *Store) lost(ctx context.Context, fk string, from hallpass.Key, taken []string, err error) error {
	if taken == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	args := make([]string, 0, 2+len(taken))
	args = append(args, s.nowMS(), member(from))
	args = append(args, taken...)
	code, rerr := createScript.Exec(ctx, s.client, []string{fk}, args).AsInt64()
	if rerr != nil || code != codeOK {
		return fmt.Errorf("session lost in rotation: %w", err)
	}
	return err
}

// limitOthers reads the records the index members name, other than from
// and to, and returns those that are live and the user's. A member whose
// record is missing is not counted: it is stale, or a write that indexed
// it has not stored it yet (see the package doc).
func (s *Store) limitOthers(ctx context.Context, members []string, fm, tm, user string, now time.Time) ([]other, error) {
	cmds := make(rueidis.Commands, 0, len(members))
	named := make([]string, 0, len(members))
	for _, m := range members {
		if m == fm || m == tm {
			continue
		}
		k, ok := parseMember(m)
		if !ok {
			return nil, errCorrupt
		}
		named = append(named, m)
		cmds = append(cmds, s.client.B().Hmget().Key(s.sessionKey(k)).Field(fVersion, fIdle, fAbsolute, fUser, fAuthTime, fHandle).Build())
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	var out []other
	for i, r := range s.client.DoMulti(ctx, cmds...) {
		f, err := fieldValues(r)
		if err != nil {
			return nil, err
		}
		if len(f) != 6 || !liveFields(f[:4], now) || f[3] != user {
			continue
		}
		o := other{member: named[i], handle: f[5], auth: math.MinInt64}
		if f[4] != "" {
			if o.auth, err = strconv.ParseInt(f[4], 10, 64); err != nil {
				return nil, errors.Join(errCorrupt, err)
			}
		}
		out = append(out, o)
	}
	return out, nil
}
