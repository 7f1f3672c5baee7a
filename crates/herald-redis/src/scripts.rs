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

/// The whole `group_send` in one round trip, for the common single-shard, msgpack,
/// unencrypted, no-`channel_capacity` configuration.
///
/// Same effects as `core.py` `group_send` (trim the group, read it, bucket members by channel
/// key, one member per key carrying `__asgi_channel__: [names]` appended last, capacity-checked
/// `ZADD` + `EXPIRE`), done server-side: the client sends the message's msgpack map *entries*
/// and the script adds the map header, the routing entry and the random prefix. All keys get
/// the same random prefix in one call; members of one key stay unique because each call adds
/// at most one member per key. The channel keys are derived in the script (not declared in
/// `KEYS`), which standalone and Sentinel-managed Redis allow; Redis Cluster is not supported
/// by channels_redis either.
///
/// `KEYS[1]` group key; `ARGV`: layer prefix, random prefix, map entries, entry count,
/// capacity, score, expiry, trim threshold, group trim threshold.
/// Returns `{members, over_capacity}`.
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
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[9])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
if #members == 0 then
    return {0, 0}
end
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
local map_head = head(tonumber(ARGV[4]) + 1, 0x80, 15, 0xde, 0xdf)
local capacity = tonumber(ARGV[5])
local over = 0
for _, key in ipairs(order) do
    local names = buckets[key]
    local parts = {ARGV[2], map_head, ARGV[3], str('__asgi_channel__'), head(#names, 0x90, 15, 0xdc, 0xdd)}
    for _, name in ipairs(names) do
        parts[#parts + 1] = str(name)
    end
    redis.call('ZREMRANGEBYSCORE', key, 0, ARGV[8])
    if redis.call('ZCOUNT', key, '-inf', '+inf') < capacity then
        redis.call('ZADD', key, ARGV[6], table.concat(parts))
        redis.call('EXPIRE', key, ARGV[7])
    else
        over = over + 1
    end
end
return {#members, over}
"#;
