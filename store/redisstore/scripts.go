package redisstore

import (
	"context"
	"crypto/sha1"
	"encoding/hex"

	"github.com/redis/rueidis"
)

// The scripts only touch keys they are given in KEYS, so each runs on one
// node, and in a Cluster on one slot: the single-slot scripts serve both
// modes, the multi-key ones only standalone servers (and prefixes that pin
// every key to one slot). Times are unix milliseconds; ARGV[1] is always
// the store's clock, so that a record is live by the same rule in Go and
// in Lua, whatever Redis's own clock says.
//
// Return codes shared by the scripts.
const (
	codeOK       = 0
	codeNotFound = 1 // the record is missing or expired
	codeUser     = 2 // the caller guessed the record's user wrong; the actual one follows
	codeBusy     = 3 // a ListUser or DeleteUser of the user holds the index lease
	codeExpired  = 4 // applied, and the record expired by it, so it was deleted
	codeExists   = 5 // the target key holds a live record
	codeMembers  = 6 // the user index names records the caller did not declare; they follow
	codeTooMany  = 7 // a limit with RefuseNew refused the write
)

// prelude holds the helpers the scripts share. It is prepended to each
// script that uses them rather than loaded once, because a script may only
// rely on itself: Redis caches each whole script by SHA, and defining the
// helpers costs a few microseconds per call.
const prelude = `
local META = {'m:u', 'm:at', 'm:al', 'm:rm', 'm:ra', 'm:p', 'm:ad'}
local TOUCH = {'m:ls', 'm:id', 'm:ip', 'm:ua'}

-- expiry returns the earlier of two deadlines (strings of unix ms, or
-- false when absent), as the string it was given, or nil for neither.
local function expiry(id, ad)
  local a, b = tonumber(id), tonumber(ad)
  if a and b then
    if b < a then return ad end
    return id
  end
  if a then return id end
  if b then return ad end
  return nil
end

-- state returns {version, idle, absolute, user} of the record at k when it
-- is live at now, else nil. Every stored record has a version field.
local function state(k, now)
  local f = redis.call('HMGET', k, 'm:v', 'm:id', 'm:ad', 'm:u')
  if not f[1] then return nil end
  local e = expiry(f[2], f[3])
  if e and tonumber(e) <= now then return nil end
  return f
end

local function user(f) return f[4] or '' end

-- batch runs cmd k a[i..j] in chunks, as unpack is limited by the Lua C
-- stack. Chunks are even, so HSET pairs stay whole.
local function batch(cmd, k, a, i, j)
  while i <= j do
    local e = math.min(j, i + 999)
    redis.call(cmd, k, unpack(a, i, e))
    i = e + 1
  end
end

-- expire makes Redis delete k at the record's expiry. It deletes k now and
-- returns false if that has passed.
local function expire(k, now)
  local f = redis.call('HMGET', k, 'm:id', 'm:ad')
  local e = expiry(f[1], f[2])
  if not e then
    redis.call('PERSIST', k)
    return true
  end
  if tonumber(e) <= now then
    redis.call('DEL', k)
    return false
  end
  redis.call('PEXPIREAT', k, e)
  return true
end

-- index adds member to a user index, scored by the absolute deadline (an
-- upper bound of the expiry that activity never moves), and trims members
-- whose deadline has passed.
local function index(idx, k, member, nowarg)
  redis.call('ZADD', idx, redis.call('HGET', k, 'm:ad') or '+inf', member)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', nowarg)
end

local function put(k, f, v)
  if v == '' then redis.call('HDEL', k, f) else redis.call('HSET', k, f, v) end
end

local function newer(v, cur)
  local a = tonumber(v)
  if not a then return false end
  local b = tonumber(cur)
  return not b or a > b
end

-- apply applies the delta encoded in a from index i, as Delta.Apply does:
-- clear, nrem, nset, meta?, touch?, then the removed fields, the set
-- pairs, 7 Meta values and 4 Touch values ('' for zero values).
local function apply(k, a, i)
  local clear, nrem, nset = a[i] == '1', tonumber(a[i+1]), tonumber(a[i+2])
  local meta, touch = a[i+3] == '1', a[i+4] == '1'
  i = i + 5
  if clear then
    local del = {}
    for _, f in ipairs(redis.call('HKEYS', k)) do
      if string.sub(f, 1, 2) == 'd:' then del[#del+1] = f end
    end
    batch('HDEL', k, del, 1, #del)
  end
  batch('HDEL', k, a, i, i + nrem - 1)
  i = i + nrem
  batch('HSET', k, a, i, i + 2*nset - 1)
  i = i + 2*nset
  if meta then
    for j = 1, 7 do put(k, META[j], a[i+j-1]) end
    i = i + 7
  end
  if touch then
    if meta then
      for j = 1, 4 do put(k, TOUCH[j], a[i+j-1]) end
    else
      local cur = redis.call('HMGET', k, 'm:ls', 'm:id')
      if newer(a[i], cur[1]) then
        redis.call('HSET', k, 'm:ls', a[i])
        if a[i+2] ~= '' then redis.call('HSET', k, 'm:ip', a[i+2]) end
        if a[i+3] ~= '' then redis.call('HSET', k, 'm:ua', a[i+3]) end
      end
      if newer(a[i+1], cur[2]) then redis.call('HSET', k, 'm:id', a[i+1]) end
    end
  end
end
`

// createScript stores a new record.
// KEYS: session [, index, lease]. ARGV: now, member, field/value pairs.
var createScript = rueidis.NewLuaScript(prelude + `
local k, now = KEYS[1], tonumber(ARGV[1])
if state(k, now) then return 5 end
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return 3 end
redis.call('DEL', k) -- a dead record the store's clock saw expire first
batch('HSET', k, ARGV, 3, #ARGV)
if not expire(k, now) then return 0 end
if KEYS[2] then index(KEYS[2], k, ARGV[2], ARGV[1]) end
return 0
`)

// updateScript applies a delta. Unindexed (ARGV[3] == '0') it touches the
// session key only and returns the previous user for the caller to index;
// indexed, it also moves the record between user indexes, which needs the
// caller to name the current user (ARGV[4]) so the keys can be declared.
// KEYS: session [, old index] [, new index, new lease].
// ARGV: now, member, indexed, old user, new user, delta...
// Returns {code, version, old user}.
var updateScript = rueidis.NewLuaScript(prelude + `
local k, now = KEYS[1], tonumber(ARGV[1])
local f = state(k, now)
if not f then return {1} end
local old, new = user(f), ARGV[5]
local indexed = ARGV[3] == '1'
local idxOld, idxNew
if indexed then
  if old ~= ARGV[4] then return {2, 0, old} end
  local n = 2
  if old ~= '' then idxOld = KEYS[n]; n = n + 1 end
  if new ~= '' then
    idxNew = KEYS[n]
    if new ~= old and redis.call('EXISTS', KEYS[n+1]) == 1 then return {3} end
  end
end
apply(k, ARGV, 6)
local v = redis.call('HINCRBY', k, 'm:v', 1)
local live = expire(k, now)
if idxOld and (new ~= old or not live) then redis.call('ZREM', idxOld, ARGV[2]) end
if idxNew and live then index(idxNew, k, ARGV[2], ARGV[1]) end
if not live then return {4, v, old} end
return {0, v, old}
`)

// dataScript applies a delta without a Meta, which is what nearly every
// write is: changed data keys, and activity. It is updateScript's plain
// case with less work, as its cost is on every write request's path: one
// HMGET and one HSET (the version goes in with the data), and the expiry
// is set only when the idle deadline moved, as nothing else can move it
// (every write keeps the hash's expiry exact, so an unchanged deadline
// means an unchanged expiry). With ARGV[2] set it ends by reading the key
// again, for the writer's tracking connection (see writer).
// KEYS: session. ARGV: now, track, clear, nrem, touch, last seen, idle,
// ip, ua, the removed fields, "m:v", "", the set pairs.
// Returns {code, version, handle}.
var dataScript = newScript(`
local k = KEYS[1]
local f = redis.call('HMGET', k, 'm:v', 'm:id', 'm:ad', 'm:ls', 'm:h')
if not f[1] then return {1} end
local now, id, ad = tonumber(ARGV[1]), tonumber(f[2]), tonumber(f[3])
if id and id <= now or ad and ad <= now then return {1} end
local function each(cmd, a, i, j)
  while i <= j do
    local e = math.min(j, i + 999)
    redis.call(cmd, k, unpack(a, i, e))
    i = e + 1
  end
end
if ARGV[3] == '1' then
  local del = {}
  for _, x in ipairs(redis.call('HKEYS', k)) do
    if string.sub(x, 1, 2) == 'd:' then del[#del+1] = x end
  end
  each('HDEL', del, 1, #del)
end
local i = 10 + tonumber(ARGV[4])
if i > 10 then each('HDEL', ARGV, 10, i - 1) end
local v = tonumber(f[1]) + 1
ARGV[i+1] = string.format('%d', v)
local n, moved = #ARGV, false
if ARGV[5] == '1' then
  local ls, cur = tonumber(ARGV[6]), tonumber(f[4])
  if ls and (not cur or ls > cur) then
    ARGV[n+1] = 'm:ls'
    ARGV[n+2] = ARGV[6]
    n = n + 2
    if ARGV[8] ~= '' then
      ARGV[n+1] = 'm:ip'
      ARGV[n+2] = ARGV[8]
      n = n + 2
    end
    if ARGV[9] ~= '' then
      ARGV[n+1] = 'm:ua'
      ARGV[n+2] = ARGV[9]
      n = n + 2
    end
  end
  local nid = tonumber(ARGV[7])
  if nid and (not id or nid > id) then
    ARGV[n+1] = 'm:id'
    ARGV[n+2] = ARGV[7]
    n = n + 2
    id, moved = nid, true
  end
end
each('HSET', ARGV, i, n)
if moved then
  local e = id
  if ad and ad < e then e = ad end
  if e <= now then
    redis.call('DEL', k)
    return {4, v}
  end
  redis.call('PEXPIREAT', k, e)
end
if ARGV[2] == '1' then redis.call('EXISTS', k) end
return {0, v, f[5]}
`)

// script is a Lua script that can also run on a dedicated connection,
// which rueidis.Lua cannot take.
type script struct {
	*rueidis.Lua
	src, sha string
}

func newScript(src string) script {
	sum := sha1.Sum([]byte(src))
	return script{Lua: rueidis.NewLuaScript(src), src: src, sha: hex.EncodeToString(sum[:])}
}

// execOn runs the script on c as Exec does on a client: EVALSHA, and
// EVAL if the server does not know the script yet.
func (s script) execOn(ctx context.Context, c rueidis.DedicatedClient, keys, args []string) rueidis.RedisResult {
	res := c.Do(ctx, c.B().Evalsha().Sha1(s.sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
	if err, ok := rueidis.IsRedisErr(res.Error()); ok && err.IsNoScript() {
		res = c.Do(ctx, c.B().Eval().Script(s.src).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
	}
	return res
}

// rotateScript moves a record to a new key (standalone only: the two
// session keys are in different slots). With a limit (ARGV[6] > 0) it
// also counts the new user's other live records and refuses or evicts in
// the same step. It must declare those records, so the caller passes the
// index members it read; if the index now holds one it did not declare,
// the script takes the user's lease with the caller's token, so that
// nothing can be added until the caller asks again with the new list,
// and returns that list. A lease held by the caller's own token does not
// block it, and the script releases it on every other outcome.
// KEYS: from, to [, old index] [, new index, new lease] [, sessions of
// the members...].
// ARGV: now, from member, to member, old user, new user, max, refuse,
// token, lease ms, nmembers, members..., delta...
// Returns {code, version or actual user [, evicted members, their handles]},
// or {6, members}.
var rotateScript = rueidis.NewLuaScript(prelude + `
local from, to, now = KEYS[1], KEYS[2], tonumber(ARGV[1])
local max, token, nm = tonumber(ARGV[6]), ARGV[8], tonumber(ARGV[10])
-- The layout of KEYS follows from what the caller named, right or wrong.
local n, idxNew, lk = 3
if ARGV[4] ~= '' then n = 4 end
if ARGV[5] ~= '' then idxNew, lk = KEYS[n], KEYS[n+1] end

-- before reports whether a is to be evicted before b: earlier auth time
-- (none is earliest), then the lower handle in byte order, as Go compares.
local function before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  local x, y = a[2], b[2]
  for i = 1, math.min(#x, #y) do
    local p, q = string.byte(x, i), string.byte(y, i)
    if p ~= q then return p < q end
  end
  return #x < #y
end

local function main()
  local f = state(from, now)
  if not f then return {1} end
  local old, new = user(f), ARGV[5]
  if old ~= ARGV[4] then return {2, old} end
  if state(to, now) then return {5} end
  local idxOld
  if old ~= '' then idxOld = KEYS[3] end
  local evicted, handles = {}, {}
  if new ~= '' then
    local held = redis.call('GET', lk)
    if held and held ~= token then return {3} end
    if max > 0 then
      local at = {}
      for i = 1, nm do at[ARGV[10+i]] = KEYS[n+1+i] end
      redis.call('ZREMRANGEBYSCORE', idxNew, '-inf', ARGV[1])
      local cur = redis.call('ZRANGE', idxNew, 0, -1)
      for _, m in ipairs(cur) do
        if not at[m] then
          redis.call('SET', lk, token, 'PX', ARGV[9])
          return {6, cur}
        end
      end
      local others = {}
      for _, m in ipairs(cur) do
        if m ~= ARGV[2] and m ~= ARGV[3] then
          local k = at[m]
          local g = redis.call('HMGET', k, 'm:v', 'm:id', 'm:ad', 'm:u', 'm:at', 'm:h')
          local e = expiry(g[2], g[3])
          if g[1] and user(g) == new and not (e and tonumber(e) <= now) then
            others[#others+1] = {tonumber(g[5]) or -math.huge, g[6] or '', m, k}
          else
            redis.call('ZREM', idxNew, m) -- stale: gone, expired or another user's
          end
        end
      end
      local excess = #others - max + 1
      if excess > 0 then
        if ARGV[7] == '1' then return {7} end
        table.sort(others, before)
        for i = 1, excess do
          redis.call('DEL', others[i][4])
          redis.call('ZREM', idxNew, others[i][3])
          evicted[i], handles[i] = others[i][3], others[i][2]
        end
      end
    end
  end
  redis.call('RENAME', from, to) -- replaces a dead record at to
  apply(to, ARGV, 11 + nm)
  local v = redis.call('HINCRBY', to, 'm:v', 1)
  if idxOld then redis.call('ZREM', idxOld, ARGV[2]) end
  if not expire(to, now) then return {4, v, evicted, handles} end
  if idxNew then index(idxNew, to, ARGV[3], ARGV[1]) end
  return {0, v, evicted, handles}
end

local r = main()
if r[1] ~= 6 and token ~= '' and redis.call('GET', lk) == token then
  redis.call('DEL', lk)
end
return r
`)

// listScript reads a user's live records in one step (standalone only).
// The caller declares the sessions it read from the index; if the index
// now holds a session it did not declare (a Rotate or Create came
// between), the script takes the user's lease, so that nothing can be
// added until the caller asks again with the new list, and returns that
// list. Members whose record is gone or no longer the user's are dropped.
// KEYS: index, lease, sessions... ARGV: now, user, token, lease ms, members...
// Returns {0, {member, fields, ...}} or {1, members}.
var listScript = rueidis.NewLuaScript(prelude + `
local idx, lk, now = KEYS[1], KEYS[2], tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', idx, '-inf', ARGV[1])
local cur = redis.call('ZRANGE', idx, 0, -1)
local at = {}
for i = 5, #ARGV do at[ARGV[i]] = i - 2 end
for _, m in ipairs(cur) do
  if not at[m] then
    redis.call('SET', lk, ARGV[3], 'PX', ARGV[4])
    return {1, cur}
  end
end
local out = {}
for _, m in ipairs(cur) do
  local k = KEYS[at[m]]
  local f = state(k, now)
  if f and user(f) == ARGV[2] then
    out[#out+1] = m
    out[#out+1] = redis.call('HGETALL', k)
  else
    redis.call('ZREM', idx, m)
  end
end
if redis.call('GET', lk) == ARGV[3] then redis.call('DEL', lk) end
return {0, out}
`)

// deleteUserScript deletes a user's records in one step (standalone only),
// declaring sessions and taking the lease as listScript does.
// KEYS: index, lease, sessions... ARGV: now, user, token, lease ms, nkeep,
// kept members..., members...
// Returns {0, removed, {deleted members}} or {1, members}.
var deleteUserScript = rueidis.NewLuaScript(prelude + `
local idx, lk, now, u = KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2]
local nkeep = tonumber(ARGV[5])
local keep, at = {}, {}
for i = 6, 5 + nkeep do keep[ARGV[i]] = true end
for i = 6 + nkeep, #ARGV do at[ARGV[i]] = i - 3 - nkeep end
local cur = redis.call('ZRANGE', idx, 0, -1)
local targets = {}
for _, m in ipairs(cur) do
  if not keep[m] then
    if not at[m] then
      redis.call('SET', lk, ARGV[3], 'PX', ARGV[4])
      return {1, cur}
    end
    targets[#targets+1] = m
  end
end
local n, gone = 0, {}
for _, m in ipairs(targets) do
  local k = KEYS[at[m]]
  local f = redis.call('HMGET', k, 'm:v', 'm:id', 'm:ad', 'm:u')
  if f[1] and user(f) == u then
    local e = expiry(f[2], f[3])
    if not e or tonumber(e) > now then n = n + 1 end
    redis.call('DEL', k)
    gone[#gone+1] = m
  end
  redis.call('ZREM', idx, m)
end
if redis.call('GET', lk) == ARGV[3] then redis.call('DEL', lk) end
return {0, n, gone}
`)

// unlockScript removes members from an index and then releases the lease
// if the caller still holds it. KEYS: index, lease. ARGV: token, members...
var unlockScript = rueidis.NewLuaScript(prelude + `
batch('ZREM', KEYS[1], ARGV, 2, #ARGV)
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 0
`)

// The scripts below serve the Cluster path: each touches one slot.

// indexAddScript adds a session to a user index unless the user's lease
// is held. KEYS: index, lease. ARGV: now, member, score.
var indexAddScript = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return 0
`)

// lockScript takes a user's lease and returns the index's members.
// KEYS: index, lease. ARGV: now, token, lease ms.
var lockScript = rueidis.NewLuaScript(`
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
`)

// takeScript reads and deletes a live record in one step, so that of
// concurrent Rotates from one key exactly one gets it.
// KEYS: session. ARGV: now. Returns {0, fields} or {1}.
var takeScript = rueidis.NewLuaScript(prelude + `
if not state(KEYS[1], tonumber(ARGV[1])) then return {1} end
local r = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return {0, r}
`)

// deleteIfUserScript deletes a record if it belongs to the user.
// KEYS: session. ARGV: now, user. Returns 0 (not the user's), 1 (deleted,
// had expired) or 2 (deleted, was live).
var deleteIfUserScript = rueidis.NewLuaScript(prelude + `
local f = redis.call('HMGET', KEYS[1], 'm:v', 'm:id', 'm:ad', 'm:u')
if not f[1] or user(f) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
local e = expiry(f[2], f[3])
if e and tonumber(e) <= tonumber(ARGV[1]) then return 1 end
return 2
`)

// The scripts below serve a limited Rotate in a Cluster (see
// rotateClusterLimited): the user's lease, taken with a token and checked
// at each step on the index's slot, orders it against every other limited
// Rotate into the same user.

// limitLockScript takes a user's lease for a token, unless another token
// holds it, and returns the index's members.
// KEYS: index, lease. ARGV: now, token, lease ms.
// Returns {0, members} or {3}.
var limitLockScript = rueidis.NewLuaScript(`
local held = redis.call('GET', KEYS[2])
if held and held ~= ARGV[2] then return {3} end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return {0, redis.call('ZRANGE', KEYS[1], 0, -1)}
`)

// limitIndexScript commits a limited Rotate's decision to the index, if
// the caller's token still holds the lease: the new key in, the evicted
// ones out, and the lease renewed for the steps that follow.
// KEYS: index, lease. ARGV: token, lease ms, new member, score, evicted
// members... Returns 0, or 3 if the lease is no longer the caller's.
var limitIndexScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 3 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
for i = 5, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 0
`)

// limitDoneScript ends a limited Rotate: it reports whether the new key
// is still indexed (a DeleteUser may have removed it), unindexes the old
// key if it was the same user's, and releases the lease.
// KEYS: index, lease. ARGV: token, new member, and the old member or an
// empty string.
// Returns 1 if the new key is indexed, else 0.
var limitDoneScript = rueidis.NewLuaScript(`
local ok = redis.call('ZSCORE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[1], ARGV[3]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
if ok then return 1 end
return 0
`)
