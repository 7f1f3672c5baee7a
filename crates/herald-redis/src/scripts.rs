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
pub const SEND: &str = r#"
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
pub const GROUP_SEND: &str = r#"
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
pub const FLUSH: &str = r#"
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 5000 do
    redis.call('DEL', unpack(keys, i, math.min(i + 4999, #keys)))
end
return #keys
"#;
