//! Lua scripts, as `const &str`. Interop needs only their *effects* to match Python's (each
//! client ships its own script text); they are written here from the behaviour described in
//! the wire spec, not copied.

/// Capacity-checked write of one message, used by `send`.
///
/// Mirrors the four round trips of `channels_redis/core.py` `RedisChannelLayer.send`
/// (`ZREMRANGEBYSCORE key 0 <int(now) - expiry>`, `ZCOUNT key -inf +inf` compared with the
/// capacity → `ChannelFull`, `ZADD key <float now> <member>`, `EXPIRE key <expiry>`), done
/// atomically in one script.
///
/// `KEYS[1]` channel key; `ARGV`: member, capacity, score, expiry (s), trim threshold.
/// Returns 1 if stored, 0 if the channel was full (nothing written).
pub(crate) const SEND: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[5])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// Per-shard delivery of a `group_send`: one member per channel key, each capacity-checked.
///
/// Mirrors the `group_send` Lua script of `channels_redis/core.py`
/// `RedisChannelLayer.group_send` (`KEYS[1..n]`, `ARGV[1..n]` members, `ARGV[n+1..2n]`
/// capacities, `ARGV[2n+1]` the float score shared by all, `ARGV[2n+2]` the expiry; returns
/// how many keys were over capacity), plus `ARGV[2n+3]` = `int(now) - expiry`: the expired-member
/// trim that Python runs as a separate MULTI pipeline (sometimes on the wrong shard) is done
/// here, on the right shard, before each count.
pub(crate) const GROUP_SEND: &str = r#"
local n = #KEYS
local over = 0
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[2 * n + 3])
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], ARGV[2 * n + 1], ARGV[i])
        redis.call('EXPIRE', KEYS[i], ARGV[2 * n + 2])
    else
        over = over + 1
    end
end
return over
"#;

/// Deletes every key matching `ARGV[1]` (`prefix*`) in batches of 5000; returns the count.
///
/// Mirrors the delete script of `channels_redis/core.py` `RedisChannelLayer.flush`.
pub(crate) const FLUSH: &str = r#"
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 5000 do
    redis.call('DEL', unpack(keys, i, math.min(i + 4999, #keys)))
end
return #keys
"#;

/// Whole `group_send`s in one round trip, one or many per call, for the common single-shard,
/// msgpack, unencrypted, no-`channel_capacity` configuration.
///
/// Each message has the effects of `core.py` `group_send` (trim the group, read it, bucket
/// members by channel key, one member per key carrying `__asgi_channel__: [names]` appended
/// last, capacity-checked `ZADD` + `EXPIRE`), done server-side: the client sends the message's
/// msgpack map *entries* and the script adds the map header, the routing entry and the random
/// prefix. Members of one key stay unique because every message has its own random prefix.
/// The channel keys are derived in the script (not declared in `KEYS`), which standalone and
/// Sentinel-managed Redis allow; Redis Cluster is not supported by channels_redis either.
///
/// Messages run in `KEYS` order. A channel key is trimmed and counted at its first message of
/// the call and counted on from there, and gets its `EXPIRE` once, after the last, if anything
/// was added to it: the call is atomic, so that is what as many single `group_send`s in a row
/// leave, for a fraction of the calls when many messages share a key (herald's group keys).
///
/// `KEYS[i]` the group key of message `i`; `ARGV`: layer prefix, capacity, expiry, trim
/// threshold, group trim threshold, then per message `i` (from `ARGV[6]`, four each): random
/// prefix, map entries, entry count, score.
/// Returns `{members_1, over_capacity_1, members_2, over_capacity_2, ...}`.
pub(crate) const GROUP_SEND_ONE_TRIP: &str = r#"
local function head(len, fix, fixmax, b16, b32)
    if len <= fixmax then
        return string.char(fix + len)
    elseif len < 65536 then
        return string.char(b16, math.floor(len / 256), len % 256)
    end
    return string.char(b32, math.floor(len / 16777216) % 256, math.floor(len / 65536) % 256,
        math.floor(len / 256) % 256, len % 256)
end
local function str(s)
    local len = #s
    if len < 32 then
        return string.char(0xa0 + len) .. s
    elseif len < 256 then
        return string.char(0xd9, len) .. s
    end
    return head(len, 0, -1, 0xda, 0xdb) .. s
end
local capacity = tonumber(ARGV[2])
local routing = str('__asgi_channel__')
local counts, added, out = {}, {}, {}
for i = 1, #KEYS do
    local arg = 5 + 4 * (i - 1)
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[5])
    local members = redis.call('ZRANGE', KEYS[i], 0, -1)
    local over = 0
    if #members > 0 then
        local order, buckets = {}, {}
        for _, name in ipairs(members) do
            local bang = string.find(name, '!', 1, true)
            local key = ARGV[1] .. (bang and string.sub(name, 1, bang) or name)
            local bucket = buckets[key]
            if not bucket then
                bucket = {}
                buckets[key] = bucket
                order[#order + 1] = key
            end
            bucket[#bucket + 1] = name
        end
        local map_head = head(tonumber(ARGV[arg + 3]) + 1, 0x80, 15, 0xde, 0xdf)
        for _, key in ipairs(order) do
            local names = buckets[key]
            local parts = {ARGV[arg + 1], map_head, ARGV[arg + 2], routing, head(#names, 0x90, 15, 0xdc, 0xdd)}
            for _, name in ipairs(names) do
                parts[#parts + 1] = str(name)
            end
            local stored = counts[key]
            if stored == nil then
                redis.call('ZREMRANGEBYSCORE', key, 0, ARGV[4])
                stored = redis.call('ZCOUNT', key, '-inf', '+inf')
            end
            if stored < capacity then
                redis.call('ZADD', key, ARGV[arg + 4], table.concat(parts))
                stored = stored + 1
                added[key] = true
            else
                over = over + 1
            end
            counts[key] = stored
        end
    end
    out[#out + 1] = #members
    out[#out + 1] = over
end
for key in pairs(added) do
    redis.call('EXPIRE', key, ARGV[3])
end
return out
"#;

/// Herald presence: records (or refreshes) a batch of connections on one shard; no Python
/// counterpart.
///
/// `KEYS[1]` the shard's announced set, then for entry `i` (1-based) `KEYS[2i]` the user's
/// record key and `KEYS[2i+1]` its details hash. `ARGV[1]` the Unix time the records lapse,
/// `ARGV[2]` the keys' expiry (s), `ARGV[3]` `"1"` to announce; then for entry `i`
/// `ARGV[3i+1]` user, `ARGV[3i+2]` connection, `ARGV[3i+3]` details JSON (`""` = keep).
///
/// Announcing, a user not in the announced set is added (scored by the lapse time) and
/// returned: the script runs atomically, so of two instances racing to record a user's first
/// connection exactly one gets the user back. An announced user's score only grows (`GT`),
/// so it is never looked at by the offline sweep before the newest record could lapse.
pub(crate) const PRESENCE_TOUCH: &str = r#"
local online = {}
local n = (#KEYS - 1) / 2
for i = 1, n do
    local ukey, ikey = KEYS[2 * i], KEYS[2 * i + 1]
    local user, conn, info = ARGV[3 * i + 1], ARGV[3 * i + 2], ARGV[3 * i + 3]
    redis.call('ZADD', ukey, ARGV[1], conn)
    redis.call('EXPIRE', ukey, ARGV[2])
    if info ~= '' then
        redis.call('HSET', ikey, conn, info)
    end
    redis.call('EXPIRE', ikey, ARGV[2])
    if ARGV[3] == '1' then
        if redis.call('ZADD', KEYS[1], 'NX', ARGV[1], user) == 1 then
            online[#online + 1] = user
        else
            redis.call('ZADD', KEYS[1], 'GT', ARGV[1], user)
        end
    end
end
return online
"#;

/// Herald presence: forgets one connection and its details, trims the user's lapsed records,
/// and returns how many live ones are left; no Python counterpart.
///
/// `KEYS[1]` the user's record key, `KEYS[2]` its details hash, `KEYS[3]` the shard's
/// announced set. `ARGV[1]` connection, `ARGV[2]` now (Unix time), `ARGV[3]` user, `ARGV[4]`
/// when the offline announcement falls due (`""` = not announcing). With none left and the
/// user announced, their score becomes that due time: the offline sweep looks then, and a
/// connection recorded before moves the score past it again.
pub(crate) const PRESENCE_REMOVE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
for _, conn in ipairs(lapsed) do
    redis.call('HDEL', KEYS[2], conn)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local live = redis.call('ZCARD', KEYS[1])
if live == 0 and ARGV[4] ~= '' and redis.call('ZSCORE', KEYS[3], ARGV[3]) then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
return live
"#;

/// Herald presence: announces one user offline if their offline fell due and no live record is
/// left; no Python counterpart.
///
/// `KEYS[1]` the shard's announced set, `KEYS[2]` the user's record key. `ARGV[1]` user,
/// `ARGV[2]` now (Unix time). Returns 1 if the user was taken out of the announced set (the
/// caller fires "offline"; atomic, so only one instance can), else 0. A user who is live again
/// (back within the debounce, with a TTL shorter than it) gets the newest record's lapse time
/// as score instead.
pub(crate) const PRESENCE_OFFLINE: &str = r#"
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then
    return 0
end
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '+inf', 'WITHSCORES')
if #live == 0 then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 1
end
redis.call('ZADD', KEYS[1], live[#live], ARGV[1])
return 0
"#;
