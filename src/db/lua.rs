//! Lua scripts of swss-common's table protocols (`reference/swss-protocol.md` §2–§4).
//!
//! The consumer scripts behave exactly as swss-common's; the producer's batch scripts keep
//! its key names, staging hashes and channel, and publish once per 128 newly added keys (at
//! least once), so consumers that pop one batch per notification never stall.

/// ProducerStateTable SET of one key.
/// KEYS = [channel, key_set, staging key]; ARGV = [G, key, f1, v1, ...].
pub const PRODUCER_SET: &str = r#"
local added = redis.call('SADD', KEYS[2], ARGV[2])
if #ARGV > 2 then
    redis.call('HSET', KEYS[3], unpack(ARGV, 3))
end
if added > 0 then
    redis.call('PUBLISH', KEYS[1], ARGV[1])
end
return added
"#;

/// ProducerStateTable DEL of one key.
/// KEYS = [channel, key_set, staging key, del_set]; ARGV = [G, key].
pub const PRODUCER_DEL: &str = r#"
local added = redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('DEL', KEYS[3])
if added > 0 then
    redis.call('PUBLISH', KEYS[1], ARGV[1])
end
return added
"#;

/// Batched SET. KEYS = [channel, key_set, staging prefix "_T:", K1 .. KN];
/// ARGV = [G, c1, f, v, ..., c2, f, v, ...] where ci is key i's field count.
pub const PRODUCER_BATCH_SET: &str = r#"
local added = 0
local idx = 2
for i = 4, #KEYS do
    added = added + redis.call('SADD', KEYS[2], KEYS[i])
    local n = tonumber(ARGV[idx])
    if n > 0 then
        redis.call('HSET', KEYS[3] .. KEYS[i], unpack(ARGV, idx + 1, idx + 2 * n))
    end
    idx = idx + 1 + 2 * n
end
for i = 1, math.ceil(added / 128) do
    redis.call('PUBLISH', KEYS[1], ARGV[1])
end
return added
"#;

/// Batched DEL. KEYS = [channel, key_set, del_set, staging prefix "_T:", K1 .. KN]; ARGV = [G].
pub const PRODUCER_BATCH_DEL: &str = r#"
local added = 0
for i = 5, #KEYS do
    added = added + redis.call('SADD', KEYS[2], KEYS[i])
    redis.call('SADD', KEYS[3], KEYS[i])
    redis.call('DEL', KEYS[4] .. KEYS[i])
end
for i = 1, math.ceil(added / 128) do
    redis.call('PUBLISH', KEYS[1], ARGV[1])
end
return added
"#;

/// swss-common's `consumer_state_table_pops.lua`, with the same effects: a pending delete
/// clears the published hash first, the staged fields are returned and merged into the
/// published hash, and the staging hash is deleted. It merges with one multi-field HSET per
/// key instead of one per field, and checks the delete set per key only when it is not
/// empty, which halves the script's time in Redis. Its reply, the same `{key, fieldvalues}`
/// pairs, is packed with `cmsgpack` (see `msgpack.rs`): another fifth off.
/// KEYS = [key_set, "T:", del_set]; ARGV = [batch, "_"].
pub const CONSUMER_STATE_POPS: &str = r#"
redis.replicate_commands()
local ret = {}
local tablename = KEYS[2]
local stateprefix = ARGV[2]
local keys = redis.call('SPOP', KEYS[1], ARGV[1])
local deletes = redis.call('SCARD', KEYS[3]) > 0
for i = 1, #keys do
   local key = keys[i]
   if deletes and redis.call('SREM', KEYS[3], key) == 1 then
      redis.call('DEL', tablename..key)
   end
   local published = tablename..key
   local staged = stateprefix..published
   local fieldvalues = redis.call('HGETALL', staged)
   ret[i] = {key, fieldvalues}
   if #fieldvalues > 0 then
      if redis.call('EXISTS', published) == 0 then
         redis.call('RENAME', staged, published)
      else
         redis.call('HSET', published, unpack(fieldvalues))
         redis.call('DEL', staged)
      end
   end
end
return cmsgpack.pack(ret)
"#;

/// ProducerTable enqueue (the ASIC_STATE op queue).
/// KEYS = [queue, channel]; ARGV = [key, value, op, G].
pub const PRODUCER_TABLE_ENQUEUE: &str = r#"
redis.call('LPUSH', KEYS[1], ARGV[1], ARGV[2], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[4])
"#;

/// swss-common's `consumer_table_pops.lua`: pops the oldest `batch` (key, value, op) triples.
/// KEYS = [queue, table prefix "T:"]; ARGV = [batch, modifyRedis 0|1].
pub const CONSUMER_TABLE_POPS: &str = r#"
local rets = {}
local popsize = ARGV[1] * 3
local keys = redis.call('LRANGE', KEYS[1], -popsize, -1)
redis.call('LTRIM', KEYS[1], 0, -popsize - 1)
local modify = ARGV[2] == "1"
local n = table.getn(keys)
for i = n, 1, -3 do
    local op = keys[i - 2]
    local value = keys[i - 1]
    local key = keys[i]
    local dbop = op:sub(1, 1)
    op = op:sub(2)
    local ret = {key, op}
    local jj = cjson.decode(value)
    local size = #jj
    for idx = 1, size, 2 do
        table.insert(ret, jj[idx])
        table.insert(ret, jj[idx + 1])
    end
    table.insert(rets, ret)
    if modify then
        if op == "create" or op == "set" then
            for idx = 1, size, 2 do
                redis.call('HSET', KEYS[2] .. key, jj[idx], jj[idx + 1])
            end
        elseif op == "remove" then
            redis.call('DEL', KEYS[2] .. key)
        elseif op == "get" or op == "notify" or op == "getresponse" or op == "flush"
            or op:find("_query$") or op:find("_response$") or op == "get_stats" or op == "clear_stats" then
            -- left alone
        else
            return redis.error_reply("unknown operation " .. op)
        end
    end
end
return rets
"#;
