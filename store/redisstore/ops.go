package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/redis/rueidis"
)

// userTries bounds how often a write repeats after guessing the record's
// user wrong; the guess is corrected by each reply, so a second try fails
// only if the user changed in between.
const userTries = 4

var (
	errReply  = errors.New("unexpected reply from Redis")
	errRacing = errors.New("the session's user kept changing")
)

// result splits a script's {code, ...} reply.
func result(res rueidis.RedisResult) (int64, []rueidis.RedisMessage, error) {
	arr, err := res.ToArray()
	if err != nil {
		return 0, nil, err
	}
	if len(arr) == 0 {
		return 0, nil, errReply
	}
	code, err := arr[0].AsInt64()
	return code, arr[1:], err
}

func int64At(arr []rueidis.RedisMessage, i int) int64 {
	if i >= len(arr) {
		return 0
	}
	n, _ := arr[i].AsInt64()
	return n
}

func stringAt(arr []rueidis.RedisMessage, i int) string {
	if i >= len(arr) {
		return ""
	}
	s, _ := arr[i].ToString()
	return s
}

// score is a record's score in its user's index.
func score(absolute time.Time) string {
	if absolute.IsZero() {
		return "+inf"
	}
	return msString(absolute)
}

// Create implements hallpass.Store.
func (s *Store) Create(ctx context.Context, r *hallpass.Record) error {
	if err := ctx.Err(); err != nil {
		return fail(ctx, "create", err)
	}
	now := s.now()
	args := make([]string, 0, 2+2*(16+len(r.Data)))
	args = append(args, msString(now), member(r.Key))
	args = appendRecord(args, r, 1)
	k := s.sessionKey(r.Key)
	stored := !r.Expired(now) // a record created expired is not kept
	var err error
	if s.cluster {
		stored, err = s.createCluster(ctx, r, k, args, stored)
	} else {
		err = s.createLocal(ctx, r, k, args)
	}
	switch {
	case errors.Is(err, hallpass.ErrExists):
		return err
	case err != nil:
		return fail(ctx, "create", err)
	}
	if stored {
		s.wrote(r.Key, 1)
		s.memo.reset(r.Key, r.UserID)
	} else {
		s.wrote(r.Key, 0)
		s.memo.forget(r.Key)
	}
	return nil
}

func (s *Store) createLocal(ctx context.Context, r *hallpass.Record, k string, args []string) error {
	keys := []string{k}
	if r.UserID != "" {
		keys = append(keys, s.indexKey(r.UserID), s.leaseKey(r.UserID))
	}
	start := time.Now()
	for try := 0; ; try++ {
		code, err := createScript.Exec(ctx, s.client, keys, args).AsInt64()
		switch {
		case err != nil:
			return err
		case code == codeOK:
			return nil
		case code == codeExists:
			return hallpass.ErrExists
		case code != codeBusy:
			return errReply
		}
		if err := wait(ctx, start, try); err != nil {
			return err
		}
		args[0] = s.nowMS()
	}
}

// createCluster indexes the session before it stores it, so that no
// DeleteUser can miss it, and checks afterwards that no DeleteUser removed
// it from the index meanwhile. It reports whether the record is stored.
func (s *Store) createCluster(ctx context.Context, r *hallpass.Record, k string, args []string, live bool) (bool, error) {
	indexed := r.UserID != "" && live
	if indexed {
		if err := s.indexAdd(ctx, r.UserID, r.Key, score(r.AbsoluteDeadline)); err != nil {
			return false, err
		}
	}
	code, err := createScript.Exec(ctx, s.client, []string{k}, args).AsInt64()
	switch {
	case err != nil:
		return false, err
	case code == codeExists:
		// The member added above names another record now: a stale
		// member, which readers skip.
		return false, hallpass.ErrExists
	case code != codeOK:
		return false, errReply
	}
	if indexed {
		return s.stillIndexed(ctx, r.UserID, r.Key)
	}
	return live, nil
}

// indexAdd adds key to user's index, waiting while a DeleteUser or
// ListUser holds the user's lease.
func (s *Store) indexAdd(ctx context.Context, user string, key hallpass.Key, score string) error {
	keys := []string{s.indexKey(user), s.leaseKey(user)}
	args := []string{"", member(key), score}
	start := time.Now()
	for try := 0; ; try++ {
		args[0] = s.nowMS()
		code, err := indexAddScript.Exec(ctx, s.client, keys, args).AsInt64()
		switch {
		case err != nil:
			return err
		case code == codeOK:
			return nil
		case code != codeBusy:
			return errReply
		}
		if err := wait(ctx, start, try); err != nil {
			return err
		}
	}
}

// stillIndexed checks after a Cluster write that key is still in user's
// index. If a DeleteUser removed it while the write was under way, the
// user has been signed out everywhere since, and the record written is
// deleted.
func (s *Store) stillIndexed(ctx context.Context, user string, key hallpass.Key) (bool, error) {
	err := s.client.Do(ctx, s.client.B().Zscore().Key(s.indexKey(user)).Member(member(key)).Build()).Error()
	if err == nil {
		return true, nil
	}
	if !rueidis.IsRedisNil(err) {
		return false, err
	}
	s.wrote(key, 0)
	return false, s.client.Do(ctx, s.client.B().Del().Key(s.sessionKey(key)).Build()).Error()
}

// Update implements hallpass.Store.
func (s *Store) Update(ctx context.Context, key hallpass.Key, d hallpass.Delta) error {
	if err := ctx.Err(); err != nil {
		return fail(ctx, "update", err)
	}
	var err error
	switch {
	case d.Meta == nil:
		err = s.updateData(ctx, key, &d)
	case s.cluster:
		err = s.updateCluster(ctx, key, &d)
	default:
		err = s.updateIndexed(ctx, key, &d)
	}
	if err != nil && !errors.Is(err, hallpass.ErrNotFound) {
		return fail(ctx, "update", err)
	}
	return err
}

// updateArgs returns the update script's arguments.
func (s *Store) updateArgs(key hallpass.Key, d *hallpass.Delta, indexed bool, oldUser, newUser string) []string {
	args := make([]string, 0, 5+deltaArgs(d))
	m, idx := "", "0"
	if indexed {
		m, idx = member(key), "1"
	}
	args = append(args, s.nowMS(), m, idx, oldUser, newUser)
	return appendDelta(args, d)
}

// updateData runs an Update without a Meta, which leaves the user and the
// index score alone, with dataScript on the session key. With the cache
// on, it goes through the writer's connection when that is up, and the
// record it leaves becomes this instance's current copy if the record
// read before was its predecessor: same handle (the same record, not one
// created again at the key), one version less.
func (s *Store) updateData(ctx context.Context, key hallpass.Key, d *hallpass.Delta) error {
	keys := []string{s.sessionKey(key)}
	args := make([]string, 2, 2+7+len(d.Remove)+2+2*len(d.Set))
	args[0] = s.nowMS()
	args, at := appendData(args, d)
	var c *wconn
	if s.writer != nil {
		c = s.writer.conn()
	}
	if c == nil {
		code, arr, err := result(dataScript.Exec(ctx, s.client, keys, args))
		if s.writer != nil {
			s.writer.done(key, s.writer.ticket(key), nil)
		}
		return s.updated(key, code, arr, err)
	}
	args[1] = "1"
	base := s.memo.base(key)
	t := s.writer.ticket(key)
	code, arr, err := result(s.writer.exec(ctx, c, keys, args))
	var next *hallpass.Record
	if err == nil && code == codeOK && base != nil && base.Version == int64At(arr, 0)-1 && base.Handle == stringAt(arr, 1) {
		next = nextRecord(base, d, int64At(arr, 0), args, at)
	}
	err = s.updated(key, code, arr, err)
	s.writer.done(key, t, next)
	return err
}

// updated records the outcome of dataScript.
func (s *Store) updated(key hallpass.Key, code int64, arr []rueidis.RedisMessage, err error) error {
	switch {
	case err != nil:
		return err
	case code == codeOK:
		s.wrote(key, int64At(arr, 0))
	case code == codeExpired:
		s.wrote(key, 0)
	case code == codeNotFound:
		s.wrote(key, 0)
		return hallpass.ErrNotFound
	default:
		return errReply
	}
	return nil
}

// updatePlain runs the update script on the session key alone, for the
// middle step of a Cluster Update with a Meta. It returns the previous
// user.
func (s *Store) updatePlain(ctx context.Context, key hallpass.Key, d *hallpass.Delta) (string, error) {
	code, arr, err := result(updateScript.Exec(ctx, s.client, []string{s.sessionKey(key)}, s.updateArgs(key, d, false, "", "")))
	if err := s.updated(key, code, arr, err); err != nil {
		return "", err
	}
	return stringAt(arr, 1), nil
}

// updateIndexed runs an Update with a Meta on a standalone server, moving
// the record between user indexes in the same script.
func (s *Store) updateIndexed(ctx context.Context, key hallpass.Key, d *hallpass.Delta) error {
	k := s.sessionKey(key)
	newUser := d.Meta.UserID
	oldUser, _ := s.memo.user(key)
	start := time.Now()
	for try, guesses := 0, 0; ; try++ {
		keys := []string{k}
		if oldUser != "" {
			keys = append(keys, s.indexKey(oldUser))
		}
		if newUser != "" {
			keys = append(keys, s.indexKey(newUser), s.leaseKey(newUser))
		}
		code, arr, err := result(updateScript.Exec(ctx, s.client, keys, s.updateArgs(key, d, true, oldUser, newUser)))
		switch {
		case err != nil:
			return err
		case code == codeOK:
			s.wrote(key, int64At(arr, 0))
			s.memo.hint(key, newUser)
			return nil
		case code == codeExpired:
			s.wrote(key, 0)
			return nil
		case code == codeNotFound:
			s.wrote(key, 0)
			return hallpass.ErrNotFound
		case code == codeUser:
			if guesses++; guesses == userTries {
				return errRacing
			}
			oldUser = stringAt(arr, 1)
		case code == codeBusy:
			if err := wait(ctx, start, try); err != nil {
				return err
			}
		default:
			return errReply
		}
	}
}

// updateCluster runs an Update with a Meta in a Cluster: index under the
// new user, update, check the index, unindex from the old user.
func (s *Store) updateCluster(ctx context.Context, key hallpass.Key, d *hallpass.Delta) error {
	newUser := d.Meta.UserID
	if newUser != "" {
		if err := s.indexAdd(ctx, newUser, key, score(d.Meta.AbsoluteDeadline)); err != nil {
			return err
		}
	}
	oldUser, err := s.updatePlain(ctx, key, d)
	if err != nil {
		// An index entry added above is stale: readers skip it.
		return err
	}
	if newUser != "" {
		if _, err := s.stillIndexed(ctx, newUser, key); err != nil {
			return err
		}
	}
	if oldUser != "" && oldUser != newUser {
		// Best effort: a stale entry is skipped by readers and dropped by
		// DeleteUser, so failing the Update for it would be wrong.
		_ = s.client.Do(ctx, s.client.B().Zrem().Key(s.indexKey(oldUser)).Member(member(key)).Build()).Error()
	}
	s.memo.hint(key, newUser)
	return nil
}

// Rotate implements hallpass.Store.
func (s *Store) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	if err := ctx.Err(); err != nil {
		return fail(ctx, "rotate", err)
	}
	lim := d.Limit
	if lim != nil && lim.Max <= 0 {
		lim = nil
	}
	var evicted []string
	var err error
	switch {
	case s.cluster && lim != nil:
		evicted, err = s.rotateClusterLimited(ctx, from, to, &d, lim)
	case s.cluster:
		err = s.rotateCluster(ctx, from, to, &d)
	default:
		evicted, err = s.rotateLocal(ctx, from, to, &d, lim)
	}
	if err != nil && !errors.Is(err, hallpass.ErrNotFound) && !errors.Is(err, hallpass.ErrExists) && !errors.Is(err, hallpass.ErrTooManySessions) {
		return fail(ctx, "rotate", err)
	}
	if err == nil && lim != nil && lim.Evicted != nil {
		for _, h := range evicted {
			lim.Evicted(h)
		}
	}
	return err
}

// rotateLocal rotates in one script. With a limit it first reads the new
// user's index, as the script must declare every session it may count or
// evict, and repeats with the index's members if they changed meanwhile.
// It returns the handles of the sessions it evicted.
func (s *Store) rotateLocal(ctx context.Context, from, to hallpass.Key, d *hallpass.Delta, lim *hallpass.Limit) ([]string, error) {
	fk, tk := s.sessionKey(from), s.sessionKey(to)
	fm, tm := member(from), member(to)
	oldUser, _ := s.memo.user(from)
	var (
		token     string
		members   []string
		membersOf string // whose index members lists; "" before the first read
		leased    bool   // a script took the lease for token and has not released it
	)
	if lim != nil {
		token = newToken()
	}
	defer func() {
		if leased {
			s.unlock(ctx, membersOf, token)
		}
	}()
	start := time.Now()
	for try, guesses, lists := 0, 0, 0; ; try++ {
		newUser := oldUser
		if d.Meta != nil {
			newUser = d.Meta.UserID
		}
		limited := lim != nil && newUser != ""
		if limited && membersOf != newUser {
			m, err := s.client.Do(ctx, s.client.B().Zrange().Key(s.indexKey(newUser)).Min("0").Max("-1").Build()).AsStrSlice()
			if err != nil {
				return nil, err
			}
			members, membersOf = m, newUser
		}
		keys := make([]string, 0, 5+len(members))
		keys = append(keys, fk, tk)
		if oldUser != "" {
			keys = append(keys, s.indexKey(oldUser))
		}
		if newUser != "" {
			keys = append(keys, s.indexKey(newUser), s.leaseKey(newUser))
		}
		args := make([]string, 0, 10+len(members)+deltaArgs(d))
		args = append(args, s.nowMS(), fm, tm, oldUser, newUser)
		if limited {
			for _, m := range members {
				k, ok := parseMember(m)
				if !ok {
					return nil, errCorrupt
				}
				keys = append(keys, s.sessionKey(k))
			}
			args = append(args, strconv.Itoa(lim.Max), boolString(lim.RefuseNew), token,
				strconv.FormatInt(leaseTTL.Milliseconds(), 10), strconv.Itoa(len(members)))
			args = append(args, members...)
		} else {
			args = append(args, "0", "", "", "", "0")
		}
		args = appendDelta(args, d)
		code, arr, err := result(rotateScript.Exec(ctx, s.client, keys, args))
		if err != nil {
			// If leased, the script did not run, or ran and released the
			// lease: releasing it again (deferred) is harmless, leaving it
			// would make the user's writers wait.
			return nil, err
		}
		leased = code == codeMembers
		switch code {
		case codeOK, codeExpired:
			s.wrote(from, 0)
			s.memo.forget(from)
			if code == codeOK {
				s.wrote(to, int64At(arr, 0))
				s.memo.hint(to, newUser)
			} else {
				s.wrote(to, 0)
			}
			return s.evicted(arr), nil
		case codeNotFound:
			s.wrote(from, 0)
			return nil, hallpass.ErrNotFound
		case codeExists:
			return nil, hallpass.ErrExists
		case codeTooMany:
			return nil, hallpass.ErrTooManySessions
		case codeMembers:
			if lists++; lists == listTries || len(arr) == 0 {
				return nil, errBusy // the deferred unlock releases the lease
			}
			if members, err = arr[0].AsStrSlice(); err != nil {
				return nil, err
			}
		case codeUser:
			if guesses++; guesses == userTries {
				return nil, errRacing
			}
			oldUser = stringAt(arr, 0)
		case codeBusy:
			if err := wait(ctx, start, try); err != nil {
				return nil, err
			}
		default:
			return nil, errReply
		}
	}
}

// evicted forgets the sessions a limited rotation evicted, listed in its
// reply after the version as {members}, {handles}, and returns their
// handles.
func (s *Store) evicted(arr []rueidis.RedisMessage) []string {
	if len(arr) < 3 {
		return nil
	}
	members, _ := arr[1].AsStrSlice()
	handles, _ := arr[2].AsStrSlice()
	s.forgetMembers(members)
	return handles
}

// rotateCluster moves a record in steps, each on one slot: check both
// keys, index the new key, take the old record, store the new one, check
// that no DeleteUser unindexed it meanwhile, unindex the old key. The old
// record is gone before the new one exists, so a failure in between loses
// the session rather than leaving two valid keys.
func (s *Store) rotateCluster(ctx context.Context, from, to hallpass.Key, d *hallpass.Delta) error {
	now := s.now()
	fk, tk := s.sessionKey(from), s.sessionKey(to)
	fv, err := s.peekRotate(ctx, fk, tk, now)
	if err != nil {
		return err
	}
	oldUser, newUser, sc := fv[3], fv[3], "+inf"
	if fv[2] != "" {
		sc = fv[2]
	}
	if d.Meta != nil {
		newUser, sc = d.Meta.UserID, score(d.Meta.AbsoluteDeadline)
	}
	if newUser != "" {
		if err := s.indexAdd(ctx, newUser, to, sc); err != nil {
			return err
		}
	}
	_, rec, err := s.take(ctx, fk, to, now)
	if err != nil {
		return err
	}
	s.wrote(from, 0)
	s.memo.forget(from)
	d.Apply(rec)
	rec.Version++
	args := make([]string, 0, 2+2*(16+len(rec.Data)))
	args = append(args, msString(now), member(to))
	args = appendRecord(args, rec, rec.Version)
	code2, err := createScript.Exec(ctx, s.client, []string{tk}, args).AsInt64()
	switch {
	case err != nil:
		return fmt.Errorf("session lost in rotation: %w", err)
	case code2 == codeExists:
		return hallpass.ErrExists // and the session is lost: see the package doc
	case code2 != codeOK:
		return errReply
	}
	if rec.Expired(now) {
		s.wrote(to, 0)
	} else {
		s.wrote(to, rec.Version)
		if newUser != "" {
			ok, err := s.stillIndexed(ctx, newUser, to)
			if err != nil {
				return err
			}
			if !ok {
				return hallpass.ErrNotFound
			}
		}
		s.memo.hint(to, newUser)
	}
	if oldUser != "" {
		_ = s.client.Do(ctx, s.client.B().Zrem().Key(s.indexKey(oldUser)).Member(member(from)).Build()).Error()
	}
	return nil
}

// fieldValues returns an HMGET reply, with "" for missing fields.
func fieldValues(r rueidis.RedisResult) ([]string, error) {
	arr, err := r.ToArray()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(arr))
	for i := range arr {
		if !arr[i].IsNil() {
			if out[i], err = arr[i].ToString(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// liveFields reports whether HMGET m:v m:id m:ad m:u found a live record.
func liveFields(f []string, now time.Time) bool {
	if len(f) != 4 || f[0] == "" {
		return false
	}
	nowMS := now.UnixMilli()
	for _, v := range f[1:3] {
		if v == "" {
			continue
		}
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms <= nowMS {
			return false
		}
	}
	return true
}

// Delete implements hallpass.Store. It also drops the keys from their
// users' indexes when this instance knows the users; otherwise the entries
// go stale and the next ListUser or DeleteUser drops them.
func (s *Store) Delete(ctx context.Context, keys ...hallpass.Key) error {
	if err := ctx.Err(); err != nil {
		return fail(ctx, "delete", err)
	}
	if len(keys) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, 0, 1+len(keys))
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = s.sessionKey(k)
		if s.cluster {
			// A multi-key DEL must stay in one slot.
			cmds = append(cmds, s.client.B().Del().Key(names[i]).Build())
		}
	}
	if !s.cluster {
		cmds = append(cmds, s.client.B().Del().Key(names...).Build())
	}
	for _, k := range keys {
		if u, ok := s.memo.user(k); ok && u != "" {
			cmds = append(cmds, s.client.B().Zrem().Key(s.indexKey(u)).Member(member(k)).Build())
		}
	}
	res := s.client.DoMulti(ctx, cmds...)
	for _, k := range keys {
		s.wrote(k, 0)
		s.memo.forget(k)
	}
	for _, r := range res {
		if err := r.Error(); err != nil {
			return fail(ctx, "delete", err)
		}
	}
	return nil
}

// ListUser implements hallpass.Store. It returns no records for the empty
// user ID: guests are not indexed.
func (s *Store) ListUser(ctx context.Context, userID string) ([]*hallpass.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fail(ctx, "list user", err)
	}
	if userID == "" {
		return nil, nil
	}
	var recs []*hallpass.Record
	var err error
	if s.cluster {
		recs, err = s.listCluster(ctx, userID)
	} else {
		recs, err = s.listLocal(ctx, userID)
	}
	if err != nil {
		return nil, fail(ctx, "list user", err)
	}
	return recs, nil
}

func (s *Store) listLocal(ctx context.Context, user string) ([]*hallpass.Record, error) {
	idx, lk := s.indexKey(user), s.leaseKey(user)
	members, err := s.client.Do(ctx, s.client.B().Zrange().Key(idx).Min("0").Max("-1").Build()).AsStrSlice()
	if err != nil {
		return nil, err
	}
	// leased: a script may hold the lease for token. Every return with it
	// set releases it.
	token, leased := newToken(), false
	defer func() {
		if leased {
			s.unlock(ctx, user, token)
		}
	}()
	for range listTries {
		if len(members) == 0 {
			return nil, nil
		}
		keys := make([]string, 0, 2+len(members))
		keys = append(keys, idx, lk)
		for _, m := range members {
			k, ok := parseMember(m)
			if !ok {
				return nil, errCorrupt
			}
			keys = append(keys, s.sessionKey(k))
		}
		args := make([]string, 0, 4+len(members))
		args = append(args, s.nowMS(), user, token, strconv.FormatInt(leaseTTL.Milliseconds(), 10))
		args = append(args, members...)
		code, arr, err := result(listScript.Exec(ctx, s.client, keys, args))
		if err != nil {
			leased = true // the script may have run and taken it
			return nil, err
		}
		// Only a reply other than codeOK leaves the lease taken.
		leased = code != codeOK
		if len(arr) == 0 {
			return nil, errReply
		}
		if code != codeOK {
			if members, err = arr[0].AsStrSlice(); err != nil {
				return nil, err
			}
			continue
		}
		out, err := arr[0].ToArray()
		if err != nil {
			return nil, err
		}
		recs := make([]*hallpass.Record, 0, len(out)/2)
		for i := 0; i+1 < len(out); i += 2 {
			m, _ := out[i].ToString()
			k, ok := parseMember(m)
			if !ok {
				return nil, errCorrupt
			}
			pairs, err := out[i+1].AsStrSlice()
			if err != nil {
				return nil, err
			}
			rec, err := decodePairs(k, pairs)
			if err != nil {
				return nil, err
			}
			if rec != nil {
				recs = append(recs, rec)
			}
		}
		return recs, nil
	}
	return nil, errBusy
}

// unlock releases the user's lease if token still holds it, after a
// ListUser or DeleteUser that took it fails. Best effort: the lease
// expires anyway.
func (s *Store) unlock(ctx context.Context, user, token string, members ...string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 100*time.Millisecond)
	defer cancel()
	_ = unlockScript.Exec(ctx, s.client, []string{s.indexKey(user), s.leaseKey(user)}, append([]string{token}, members...)).Error()
}

// listCluster reads the index, then every record it names. A record in the
// middle of a Rotate may be in neither place, and is missed.
func (s *Store) listCluster(ctx context.Context, user string) ([]*hallpass.Record, error) {
	idx := s.indexKey(user)
	now := s.now()
	res := s.client.DoMulti(ctx,
		s.client.B().Zremrangebyscore().Key(idx).Min("-inf").Max(msString(now)).Build(),
		s.client.B().Zrange().Key(idx).Min("0").Max("-1").Build())
	if err := res[0].Error(); err != nil {
		return nil, err
	}
	members, err := res[1].AsStrSlice()
	if err != nil || len(members) == 0 {
		return nil, err
	}
	keys := make([]hallpass.Key, len(members))
	cmds := make(rueidis.Commands, len(members))
	for i, m := range members {
		k, ok := parseMember(m)
		if !ok {
			return nil, errCorrupt
		}
		keys[i] = k
		cmds[i] = s.client.B().Hgetall().Key(s.sessionKey(k)).Build()
	}
	recs := make([]*hallpass.Record, 0, len(members))
	for i, r := range s.client.DoMulti(ctx, cmds...) {
		m, err := r.AsStrMap()
		if err != nil {
			return nil, err
		}
		rec, _, err := decodeMap(keys[i], m)
		if err != nil {
			return nil, err
		}
		if rec != nil && rec.UserID == user && !rec.Expired(now) {
			recs = append(recs, rec)
		}
	}
	return recs, nil
}

// DeleteUser implements hallpass.Store. For the empty user ID it removes
// nothing: guests are not indexed. Expired records it removes are not
// counted.
func (s *Store) DeleteUser(ctx context.Context, userID string, keep ...hallpass.Key) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fail(ctx, "delete user", err)
	}
	if userID == "" {
		return 0, nil
	}
	kept := make(map[string]bool, len(keep))
	for _, k := range keep {
		kept[member(k)] = true
	}
	var n int
	var err error
	if s.cluster {
		n, err = s.deleteUserCluster(ctx, userID, kept)
	} else {
		n, err = s.deleteUserLocal(ctx, userID, kept)
	}
	if err != nil {
		return 0, fail(ctx, "delete user", err)
	}
	return n, nil
}

func (s *Store) deleteUserLocal(ctx context.Context, user string, kept map[string]bool) (int, error) {
	idx, lk := s.indexKey(user), s.leaseKey(user)
	members, err := s.client.Do(ctx, s.client.B().Zrange().Key(idx).Min("0").Max("-1").Build()).AsStrSlice()
	if err != nil {
		return 0, err
	}
	// leased: a script may hold the lease for token. Every return with it
	// set releases it.
	token, leased := newToken(), false
	defer func() {
		if leased {
			s.unlock(ctx, user, token)
		}
	}()
	keepArgs := make([]string, 0, len(kept))
	for m := range kept {
		keepArgs = append(keepArgs, m)
	}
	for range listTries {
		keys := []string{idx, lk}
		args := make([]string, 0, 5+len(keepArgs)+len(members))
		args = append(args, s.nowMS(), user, token, strconv.FormatInt(leaseTTL.Milliseconds(), 10), strconv.Itoa(len(keepArgs)))
		args = append(args, keepArgs...)
		for _, m := range members {
			if kept[m] {
				continue
			}
			k, ok := parseMember(m)
			if !ok {
				return 0, errCorrupt
			}
			keys = append(keys, s.sessionKey(k))
			args = append(args, m)
		}
		if len(keys) == 2 {
			// Nothing to delete. An earlier attempt that saw a new
			// session took the lease, which the script would have freed:
			// the deferred unlock releases it.
			return 0, nil
		}
		code, arr, err := result(deleteUserScript.Exec(ctx, s.client, keys, args))
		if err != nil {
			leased = true // the script may have run and taken it
			return 0, err
		}
		// Only a reply other than codeOK leaves the lease taken.
		leased = code != codeOK
		if code != codeOK {
			if len(arr) == 0 {
				return 0, errReply
			}
			if members, err = arr[0].AsStrSlice(); err != nil {
				return 0, err
			}
			continue
		}
		if len(arr) < 2 {
			return 0, errReply
		}
		gone, err := arr[1].AsStrSlice()
		if err != nil {
			return 0, err
		}
		s.forgetMembers(gone)
		return int(int64At(arr, 0)), nil
	}
	return 0, errBusy
}

func (s *Store) forgetMembers(members []string) {
	for _, m := range members {
		if k, ok := parseMember(m); ok {
			s.wrote(k, 0)
			s.memo.forget(k)
		}
	}
}

// deleteUserCluster takes the user's lease, so that nothing is added to
// the index meanwhile, deletes every record the index names, then drops
// them from the index and releases the lease. A Create or Rotate that
// indexed its key before the lease finds it unindexed when it checks, and
// deletes what it wrote.
func (s *Store) deleteUserCluster(ctx context.Context, user string, kept map[string]bool) (int, error) {
	token := newToken()
	members, err := lockScript.Exec(ctx, s.client, []string{s.indexKey(user), s.leaseKey(user)},
		[]string{s.nowMS(), token, strconv.FormatInt(leaseTTL.Milliseconds(), 10)}).AsStrSlice()
	if err != nil {
		s.unlock(ctx, user, token)
		return 0, err
	}
	now := s.nowMS()
	targets := make([]string, 0, len(members))
	execs := make([]rueidis.LuaExec, 0, len(members))
	for _, m := range members {
		if kept[m] {
			continue
		}
		k, ok := parseMember(m)
		if !ok {
			s.unlock(ctx, user, token)
			return 0, errCorrupt
		}
		targets = append(targets, m)
		execs = append(execs, rueidis.LuaExec{Keys: []string{s.sessionKey(k)}, Args: []string{now, user}})
	}
	n := 0
	if len(execs) > 0 {
		for _, r := range deleteIfUserScript.ExecMulti(ctx, s.client, execs...) {
			c, err := r.AsInt64()
			if err != nil {
				s.unlock(ctx, user, token)
				return 0, err
			}
			if c == 2 {
				n++
			}
		}
		s.forgetMembers(targets)
	}
	err = unlockScript.Exec(ctx, s.client, []string{s.indexKey(user), s.leaseKey(user)}, append([]string{token}, targets...)).Error()
	return n, err
}
