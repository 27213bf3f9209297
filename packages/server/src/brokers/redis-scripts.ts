/**
 * The Lua scripts of the Redis broker (`redis.ts` documents the key layout they work on). Each script
 * touches the keys of one generation bucket only, which share one hash tag, so every script runs in
 * one slot of a Redis Cluster. Times come from the server's clock (`TIME`), so nodes with skewed
 * clocks agree on every expiry.
 *
 * Encodings (fields separated by `\n`; channels, epochs and message types never contain one; the
 * payload comes last and is opaque):
 * - history entry (sorted-set member, score = seq): `<seq>\n<expiresAt ms>\n<type or empty>\n<data>`;
 * - live publication (pub/sub message): `P<epoch>\n<seq>\n<0|1 ephemeral><type or empty>\n<data>`;
 * - presence event (pub/sub message): `J<entry>` (join) or `L<entry>` (leave), the entry being the
 *   JSON text the node stored.
 * @module
 */

/** What differs between servers: sharded pub/sub (Redis 7+) and script flags (Redis 7+). */
export interface ScriptDialect {
  readonly sharded: boolean;
}

export interface ScriptSources {
  readonly publish: string;
  readonly read: string;
  readonly gc: string;
  readonly presenceAdd: string;
  readonly presenceRemove: string;
  readonly presenceTouch: string;
  readonly presenceList: string;
  readonly presenceSweep: string;
}

const COMMON = String.raw`
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(x) return string.format('%d', x) end
local function expiry(entry) return tonumber(string.match(entry, '^%d+\n(%d+)\n')) end
-- Releases the oldest expired entries of a history (at most bound), noting why they are gone.
local function expire(meta, hist, now, bound)
  local n = 0
  while n < bound do
    local first = redis.call('ZRANGE', hist, 0, 0)[1]
    if not first or expiry(first) > now then break end
    redis.call('ZREMRANGEBYRANK', hist, 0, 0)
    n = n + 1
  end
  if n > 0 then redis.call('HSET', meta, 'ev', 'expired') end
end
-- The whole history expired at once (its key's TTL) since the stream was last looked at.
local function vanished(meta, hist)
  if redis.call('HGET', meta, 'h') == '1' and redis.call('EXISTS', hist) == 0 then
    redis.call('HSET', meta, 'ev', 'expired', 'h', '0')
  end
end
`;

/**
 * KEYS: g, meta, hist, act[, idem]. ARGV: 1 life candidate, 2 expected life, 3 expected generation,
 * 4 epoch candidate (derived from 2 and 3; '' when the node expects the stream to exist, and then
 * 1-3 are '' too), 5 historySize, 6 historyTtl, 7 ephemeral (0|1),
 * 8 dedupWindow, 9 type ('' for none), 10 data, 11 gcAfter, 12 pub/sub channel, 13 expiry bound,
 * 14 channel.
 * Returns {'ok', epoch, seq, 1 when the stream was created} | {'dup', 'epoch:seq'} | {'retry', life, generation} (the stream does
 * not exist and no epoch was sent, or the bucket's life or generation is not the expected one:
 * nothing was changed but the bucket's life, which is created when missing; life '' when there is none).
 */
const PUBLISH = String.raw`
local now = now_ms()
local meta, hist, idem = KEYS[2], KEYS[3], KEYS[5]
if idem then
  local seen = redis.call('GET', idem)
  if seen then return {'dup', seen} end
end
local m = redis.call('HMGET', meta, 'epoch', 'h', 'k')
local epoch = m[1]
local seq, created = nil, 0
if not epoch then
  if ARGV[4] == '' then
    -- The node expected the stream to exist and sent no epoch: it asks again with one.
    local lg = redis.call('HMGET', KEYS[1], 'life', 'gen')
    return {'retry', lg[1] or '', lg[2] or '0'}
  end
  redis.call('HSETNX', KEYS[1], 'life', ARGV[1])
  local lg = redis.call('HMGET', KEYS[1], 'life', 'gen')
  local gen = lg[2] or '0'
  if lg[1] ~= ARGV[2] or gen ~= ARGV[3] then return {'retry', lg[1], gen} end
  epoch = ARGV[4]
  seq = 1
  created = 1
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 1)
else
  seq = redis.call('HINCRBY', meta, 'seq', 1)
end
local size, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
if ARGV[7] ~= '1' and size > 0 then
  redis.call('ZADD', hist, seq, int(seq) .. '\n' .. int(now + ttl) .. '\n' .. ARGV[9] .. '\n' .. ARGV[10])
  local card = redis.call('ZCARD', hist)
  if m[2] ~= '1' then
    redis.call('HSET', meta, 'h', '1')
  elseif card == 1 then
    -- History was stored before and the key is gone: it expired whole (its TTL).
    redis.call('HSET', meta, 'ev', 'expired')
  end
  if card > size then
    redis.call('ZREMRANGEBYRANK', hist, 0, card - size - 1)
    redis.call('HSET', meta, 'ev', 'trimmed')
  end
  expire(meta, hist, now, tonumber(ARGV[13]))
  if redis.call('PTTL', hist) < ttl then redis.call('PEXPIRE', hist, ttl) end
end
local window = tonumber(ARGV[8])
if idem and window > 0 then
  redis.call('SET', idem, epoch .. ':' .. int(seq), 'PX', window)
  if now + window > tonumber(m[3] or '0') then redis.call('HSET', meta, 'k', int(now + window)) end
end
redis.call('ZADD', KEYS[4], int(now + tonumber(ARGV[11])), ARGV[14])
redis.call('$PUBLISH', ARGV[12], 'P' .. epoch .. '\n' .. int(seq) .. '\n' .. ARGV[7] .. ARGV[9] .. '\n' .. ARGV[10])
return {'ok', epoch, seq, created}
`;

/**
 * KEYS: g, meta, hist. ARGV: 1 life candidate, 2 since epoch ('' for none), 3 since seq,
 * 4 limit (-1: the top only, no expiry), 5 expiry bound.
 * Returns {life, generation} when the channel has no stream (creating the bucket's life if
 * missing), else {'', '', epoch, seq, evicted or '', entry...}.
 */
const READ = String.raw`
local m = redis.call('HMGET', KEYS[2], 'epoch', 'seq')
if not m[1] then
  redis.call('HSETNX', KEYS[1], 'life', ARGV[1])
  local lg = redis.call('HMGET', KEYS[1], 'life', 'gen')
  return {lg[1], lg[2] or '0'}
end
local limit = tonumber(ARGV[4])
if limit < 0 then return {'', '', m[1], m[2], ''} end
local now = now_ms()
vanished(KEYS[2], KEYS[3])
expire(KEYS[2], KEYS[3], now, tonumber(ARGV[5]))
local out = {'', '', m[1], m[2], redis.call('HGET', KEYS[2], 'ev') or ''}
if limit > 0 and (ARGV[2] == '' or ARGV[2] == m[1]) then
  local offset = 0
  while limit > 0 do
    local asked = limit
    local items = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[3], '+inf', 'LIMIT', offset, asked)
    for i = 1, #items do
      if expiry(items[i]) > now then
        out[#out + 1] = items[i]
        limit = limit - 1
      else
        out[5] = 'expired'
      end
    end
    if #items < asked then break end
    offset = offset + #items
  end
end
return out
`;

/**
 * KEYS: act, g. ARGV: 1 key base of the bucket, 2 most candidates examined, 3 recheck delay (ms).
 * Drops the streams whose time in `act` has come and that hold nothing protected (no history, no
 * unexpired idempotency key, no subscriber), each drop incrementing the bucket's generation; a
 * protected candidate is rescheduled to when its protection ends. Returns {dropped, examined}.
 */
const GC = String.raw`
local now = now_ms()
local base, recheck = ARGV[1], tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(now), 'LIMIT', 0, tonumber(ARGV[2]))
local dropped = 0
for _, ch in ipairs(due) do
  local meta, hist = base .. 'm:' .. ch, base .. 'h:' .. ch
  if redis.call('EXISTS', meta) == 0 then
    redis.call('ZREM', KEYS[1], ch)
  else
    local hold = 0
    local pttl = redis.call('PTTL', hist)
    if pttl == -1 then hold = now + recheck elseif pttl > 0 then hold = now + pttl end
    local k = tonumber(redis.call('HGET', meta, 'k') or '0')
    if k > now and k > hold then hold = k end
    if redis.call('PUBSUB', '$NUMSUB', base .. 'p:' .. ch)[2] > 0 and now + recheck > hold then hold = now + recheck end
    if hold > now then
      redis.call('ZADD', KEYS[1], int(hold), ch)
    else
      redis.call('DEL', meta, hist)
      redis.call('ZREM', KEYS[1], ch)
      redis.call('HINCRBY', KEYS[2], 'gen', 1)
      dropped = dropped + 1
    end
  end
end
return {dropped, #due}
`;

/** KEYS: r, rx. ARGV: client, entry, ttl, rx member, pub/sub channel. Returns 1 when the client joined. */
const PRESENCE_ADD = String.raw`
local now = now_ms()
local fresh = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], int(now + tonumber(ARGV[3])), ARGV[4])
if fresh == 1 then redis.call('$PUBLISH', ARGV[5], 'J' .. ARGV[2]) end
return fresh
`;

/** KEYS: r, rx. ARGV: client, rx member, pub/sub channel. Returns 1 when the client was present. */
const PRESENCE_REMOVE = String.raw`
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('$PUBLISH', ARGV[3], 'L' .. entry)
return 1
`;

/**
 * KEYS: rx. ARGV: ttl, rx member... Extends the entries that exist; returns the (0-based) indices of
 * the members that do not (swept meanwhile: their node adds them again).
 */
const PRESENCE_TOUCH = String.raw`
local until_ = int(now_ms() + tonumber(ARGV[1]))
local args = {'ZADD', KEYS[1], 'XX'}
local gone = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    args[#args + 1] = until_
    args[#args + 1] = ARGV[i]
  else
    gone[#gone + 1] = i - 2
  end
end
if #args > 3 then redis.call(unpack(args)) end
return gone
`;

/** KEYS: r, rx. ARGV: channel, pub/sub channel. Returns the entries present; expired ones leave. */
const PRESENCE_LIST = String.raw`
local now = now_ms()
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local member = ARGV[1] .. ' ' .. all[i]
  local s = redis.call('ZSCORE', KEYS[2], member)
  if s and tonumber(s) > now then
    out[#out + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('ZREM', KEYS[2], member)
    redis.call('$PUBLISH', ARGV[2], 'L' .. all[i + 1])
  end
end
return out
`;

/** KEYS: rx. ARGV: key base of the bucket, most entries examined. Expired entries leave; returns how many. */
const PRESENCE_SWEEP = String.raw`
local now = now_ms()
local base = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(now), 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local sp = string.find(m, ' ', 1, true)
  local ch, client = string.sub(m, 1, sp - 1), string.sub(m, sp + 1)
  local r = base .. 'r:' .. ch
  local entry = redis.call('HGET', r, client)
  redis.call('ZREM', KEYS[1], m)
  if entry then
    redis.call('HDEL', r, client)
    redis.call('$PUBLISH', base .. 'p:' .. ch, 'L' .. entry)
  end
end
return #due
`;

/** The scripts for a server: sharded pub/sub and a `#!lua` header (so Redis checks OOM before running a script, not halfway) on Redis 7+. */
export function scriptSources(dialect: ScriptDialect): ScriptSources {
  const make = (body: string): string => {
    const lua = (COMMON + body).replaceAll('$PUBLISH', dialect.sharded ? 'SPUBLISH' : 'PUBLISH').replaceAll('$NUMSUB', dialect.sharded ? 'SHARDNUMSUB' : 'NUMSUB');
    return dialect.sharded ? `#!lua\n${lua}` : lua;
  };
  return {
    publish: make(PUBLISH),
    read: make(READ),
    gc: make(GC),
    presenceAdd: make(PRESENCE_ADD),
    presenceRemove: make(PRESENCE_REMOVE),
    presenceTouch: make(PRESENCE_TOUCH),
    presenceList: make(PRESENCE_LIST),
    presenceSweep: make(PRESENCE_SWEEP),
  };
}
