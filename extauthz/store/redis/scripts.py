"""Every Lua script extauthz runs on Redis, in one place.

Scripts that need the time read the Redis server's clock (``TIME``) through one prologue,
:data:`CLOCK`, which defines ``now_ms`` (integer milliseconds) and ``now_s`` (float
seconds): node clocks never meet. ``p`` below is the configured key prefix; scores and TTLs
kept in Redis are milliseconds unless a script says otherwise.
"""

from __future__ import annotations

from extauthz.tokens import TAG_LENGTH

CLOCK = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_s = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# -- revocation: the sequence number and the invalidation message ------------------------------

# KEYS[1] = p+"invalidate:seq"; ARGV[1] = channel, ARGV[2] = token hash. Returns the seq.
# Runs after the change it announces, in a call of its own: the session scripts below touch the
# keys of one session's slot only (extauthz.store.redis.keys), never the sequence number.
PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], seq .. ':' .. ARGV[2])
return seq
"""

# The same on a Redis Cluster: a shard channel (SPUBLISH, Redis 7.0+), which must hash to the
# slot of KEYS[1] (p+"{inv}invalidate:seq" and p+"{inv}invalidate": extauthz.store.redis.cluster)
SHARDED_PUBLISH = PUBLISH.replace("'PUBLISH'", "'SPUBLISH'")

# -- session records (extauthz.store.redis.store) ------------------------------------------------
#
# Keys: extauthz.store.redis.keys. Every script below touches the keys of one session, so one
# slot (tagged sessions also read records found in their index: the same slot). A session's
# index entry is either a string key (sessions from before tags: GET/SET/DEL, and a subject set)
# or a field of an index hash (HGET/HSET/HDEL), its slot's or, for sids minted before slot
# indexes, its tag's: ``field`` is '' for the first. Records are MessagePack
# (Session.to_record) or, written before it, JSON.

# Defines ``index_get(key, field)``.
INDEX = """
local function index_get(key, field)
  if field == '' then return redis.call('GET', key) end
  return redis.call('HGET', key, field)
end
"""

# The stored record's version (absent in old JSON records: 1), or nil when the record is missing
# or not a record. Defines ``stored_version``.
STORED_VERSION = """
local stored_version = nil
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, rec
  if string.sub(raw, 1, 1) == '{' then
    ok, rec = pcall(cjson.decode, raw)
    if ok and type(rec) == 'table' then stored_version = tonumber(rec.version or 1) end
  else
    ok, rec = pcall(cmsgpack.unpack, raw)
    if ok and type(rec) == 'table' then stored_version = tonumber(rec.v) end
  end
end
"""

# A tagged session's creation. KEYS[1] = the record, KEYS[2] = its index hash (the slot's, or
# the tag's for a sid minted before slot indexes); ARGV[1] = the record, ARGV[2] = its TTL (ms,
# until the absolute expiry), ARGV[3] = the index field, ARGV[4] = the index value (the token
# hash without its tag), ARGV[5] = the key prefix, ARGV[6] = the index size above which
# entries whose record is gone (past its absolute expiry) are pruned, ARGV[7] = the tag of
# every entry ('': each field starts with its own tag, the slot's index), ARGV[8] = the entries
# one creation examines at most (an HSCAN COUNT; a listpack-encoded hash answers whole). The
# index expires with the last absolute expiry of its sessions. A prune starts when the index
# holds more than ARGV[6] entries and more than twice as many as the last prune left; its state
# is the field '#' = '<entries the last prune left> <HSCAN cursor, 0: no prune under way>';
# any other value (a count beyond 14 digits, a cursor beyond 19: HSCAN refuses one past 2^64,
# and the script would fail every creation in the slot) starts over from '0 0'. Records of the
# index's tags are in its slot. A slot index's fields start with their tag (tokens.TAG_LENGTH
# characters). Returns 1.
CREATE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
if redis.call('PEXPIRE', KEYS[2], ARGV[2], 'GT') == 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2], 'NX')
end
local kept, cursor = 0, '0'
local a, b = string.match(redis.call('HGET', KEYS[2], '#') or '', '^(%d+) (%d+)$')
if a and #a <= 14 and #b <= 19 then kept, cursor = tonumber(a), b end
local size = redis.call('HLEN', KEYS[2]) - redis.call('HEXISTS', KEYS[2], '#')
if cursor == '0' and size <= math.max(tonumber(ARGV[6]), 2 * kept) then return 1 end
local reply = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', ARGV[8])
local entries = reply[2]
for i = 1, #entries, 2 do
  if entries[i] ~= '#' then
    local tag = ARGV[7]
    if tag == '' then tag = string.sub(entries[i], 1, TAG_LENGTH) end
    if redis.call('EXISTS', ARGV[5] .. '{' .. tag .. '}s:' .. entries[i + 1]) == 0 then
      redis.call('HDEL', KEYS[2], entries[i])
    end
  end
end
if reply[1] == '0' then
  kept = redis.call('HLEN', KEYS[2]) - redis.call('HEXISTS', KEYS[2], '#')
end
redis.call('HSET', KEYS[2], '#', kept .. ' ' .. reply[1])
return 1
""".replace("TAG_LENGTH", str(TAG_LENGTH))

# KEYS[1] = the session record, KEYS[2] = its index key, KEYS[3] = the subject's set (sessions
# from before tags; else the index again); ARGV[1] = the index value of the token hash
# (SessionKeys.index_value), ARGV[2] = the sid,
# ARGV[3] = the index field. Deletes the record; the index entry (and the subject's set entry)
# only while it still names this token (a rotation since the record was read moved it to the
# new token, whose revocation follows). Returns 1 if the record was deleted, else 0.
REVOKE_RECORD = (
    INDEX
    + """
local deleted = redis.call('DEL', KEYS[1])
if index_get(KEYS[2], ARGV[3]) == ARGV[1] then
  if ARGV[3] == '' then
    redis.call('DEL', KEYS[2])
    redis.call('SREM', KEYS[3], ARGV[2])
  else
    redis.call('HDEL', KEYS[2], ARGV[3])
  end
end
return deleted
"""
)

# KEYS[1] = the session record, KEYS[2] = its index key; ARGV[1] = the touched record, ARGV[2] =
# its TTL (ms), ARGV[3] = the version it replaces, ARGV[4] = the index field. 1: written; 0:
# missing (revoked) or changed meanwhile (a session update): never re-created, never
# overwritten. A string index entry expires with the record; an index hash outlives it.
TOUCH = (
    STORED_VERSION
    + """
if stored_version == nil or stored_version ~= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] == '' then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""
)

# KEYS[1] = the session record, KEYS[2] = its index key; ARGV[1] = the new record, ARGV[2] =
# the version it replaces, ARGV[3] = the index value of the token hash, ARGV[4] = the index
# field. Writes (TTL
# kept); the caller then publishes it like a revocation. Returns 1: written; 0: the record
# changed meanwhile, or the sid names another token now (a token rotation): read again; -1:
# the session is gone.
REPLACE_IF_VERSION = (
    STORED_VERSION
    + INDEX
    + """
local current = index_get(KEYS[2], ARGV[4])
if not current then return -1 end
if current ~= ARGV[3] then return 0 end
if stored_version == nil then return -1 end
if stored_version ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return 1
"""
)

# -- token rotation (RedisSessionStore.rotate) --------------------------------------------------

# KEYS[1] = the old hash's record, KEYS[2] = its successor, KEYS[3] = the new hash's record,
# KEYS[4] = the sid's index key, KEYS[5] = the old hash's tombstone, KEYS[6] = the new hash's
# issued marker (sessions from before tags; a tagged record is its own marker). ARGV[1] = the
# version the caller read, ARGV[2] = the new record, ARGV[3] = its TTL (ms), ARGV[4] = the
# successor record, ARGV[5] = the grace (ms), ARGV[6] = the TTL (ms, until the absolute
# expiry) of the old hash's tombstone and of the new hash's issued marker, ARGV[7] = the index
# value of the new hash, ARGV[8] = the index field. The caller publishes the old hash's
# invalidation after {1, ...}. Returns {1, successor} (rotated now), {0, successor} (rotated
# earlier: nothing written) or {-1} (no record of that version: nothing written).
ROTATE = (
    STORED_VERSION
    + """
local earlier = redis.call('GET', KEYS[2])
if earlier then return {0, earlier} end
if stored_version == nil or stored_version ~= tonumber(ARGV[1]) then return {-1} end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
if ARGV[8] == '' then
  redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[3])
else
  redis.call('HSET', KEYS[4], ARGV[8], ARGV[7])
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
if tonumber(ARGV[6]) > 0 then
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[6])
  if ARGV[8] == '' then redis.call('SET', KEYS[6], '1', 'PX', ARGV[6]) end
end
return {1, ARGV[4]}
"""
)

# -- membership (extauthz.store.redis.membership) ----------------------------------------------

# KEYS[1] = a role's members (zset: instance -> Redis ms), KEYS[2] = its acks (hash: instance
# -> seq); ARGV[1] = instance, ARGV[2] = forget after (ms). Records the instance as live now
# and removes members silent for longer than ARGV[2]. Returns now (ms).
BEAT = (
    CLOCK
    + """
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[2]))
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return now_ms
"""
)

# KEYS[1] = p+"replica-readers" (instance -> lease expiry, Redis ms), KEYS[2] =
# p+"replica-acks" (instance -> newest revocation seq its replica has applied),
# KEYS[3] = p+"invalidate:seq". ARGV[1] = instance, ARGV[2] = lease (ms), ARGV[3] = a seq
# the replica has applied (0 for none), ARGV[4] = forget after (ms).
# Returns {1 when this continues a lease that had not expired else 0, the current seq}.
RENEW_LEASE = (
    CLOCK
    + """
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
local continued = 0
if old and old >= now_ms then continued = 1 end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
if tonumber(ARGV[3]) > tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[4]))
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return {continued, tonumber(redis.call('GET', KEYS[3]) or '0')}
"""
)

# KEYS[1] = acks hash; ARGV[1] = instance, ARGV[2] = seq. Acknowledgements only grow.
ACK_GROWING = """
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""

# KEYS[1] = a role's members, KEYS[2] = its acks; ARGV[1] = seq, ARGV[2] = how long (ms) a
# member stays live after its score (0 when scores are expiries). Returns the live members
# that have not acknowledged seq.
PENDING = (
    CLOCK
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], now_ms - tonumber(ARGV[2]), '+inf')
local out = {}
for _, id in ipairs(ids) do
  if tonumber(redis.call('HGET', KEYS[2], id) or '0') < tonumber(ARGV[1]) then
    out[#out + 1] = id
  end
end
return out
"""
)

# KEYS[1] = a role's members; ARGV[1] = how long (ms) a member stays live after its score (as
# for PENDING). Returns how many members are live.
LIVE_COUNT = (
    CLOCK
    + """
return redis.call('ZCOUNT', KEYS[1], now_ms - tonumber(ARGV[1]), '+inf')
"""
)

# KEYS[1] = p+"nodes" (hash: node id -> JSON record, times in Unix seconds); ARGV = node id,
# strategy, version, ttl (s), topology, mode, instance. Mode "check": do not register when a
# live node runs another strategy. Returns {registered 0/1, "<node id>=<strategy>", ...} of
# the conflicting live nodes; entries dead for ten ttls (at least a minute) are removed.
REGISTER_NODE = (
    CLOCK
    + """
local entries = redis.call('HGETALL', KEYS[1])
local conflicts = {}
local started = now_s
for i = 1, #entries, 2 do
  local id = entries[i]
  local ok, rec = pcall(cjson.decode, entries[i + 1])
  if not ok or type(rec) ~= 'table' then
    redis.call('HDEL', KEYS[1], id)
  elseif id == ARGV[1] then
    if rec.strategy == ARGV[2] and tonumber(rec.started) then started = tonumber(rec.started) end
  else
    local age = now_s - (tonumber(rec.heartbeat) or 0)
    local ttl = tonumber(rec.ttl) or 0
    if age <= ttl then
      if rec.strategy ~= ARGV[2] then
        table.insert(conflicts, id .. '=' .. tostring(rec.strategy))
      end
    elseif age > math.max(ttl * 10, 60) then
      redis.call('HDEL', KEYS[1], id)
    end
  end
end
if #conflicts > 0 and ARGV[6] == 'check' then
  return {0, unpack(conflicts)}
end
local record = cjson.encode({strategy = ARGV[2], version = ARGV[3], ttl = tonumber(ARGV[4]),
  topology = ARGV[5], started = started, heartbeat = now_s, instance = ARGV[7]})
redis.call('HSET', KEYS[1], ARGV[1], record)
return {1, unpack(conflicts)}
"""
)

# -- users (extauthz.store.redis.users) --------------------------------------------------------

# Only touch an existing hash: HSET on a missing key would create a record without roles.
SET_HASH_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'password_hash', ARGV[1])
  return 1
end
return 0
"""

# -- second factors (extauthz.store.redis.factors) ----------------------------------------------

# compare-and-set of one factor: write ARGV[3] to field ARGV[1] only if it still holds ARGV[2]
SET_FIELD_IF_UNCHANGED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# -- rate limits (extauthz.store.redis.ratelimit) ----------------------------------------------

# INCR and the expiry in one atomic step. A key without a TTL (left by a crash between two
# non-atomic commands in older code, or created by hand) would never expire: repair it.
RATE_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

RATE_PEEK = """
local count = redis.call('GET', KEYS[1])
if not count then
  return {0, 0}
end
return {tonumber(count), redis.call('PTTL', KEYS[1])}
"""

# DECR keeps the key's TTL; a missing key (window over, or reset) is left alone
RATE_REFUND = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
"""
