-- Binds a name (if free) and grants its lease, atomically, in one bucket.
-- KEYS: 1 bind, 2 live, 3 info, 4 exp, 5 names, 6 seq
-- ARGV: 1 name_key, 2 key_hex, 3 lease_hash, 4 presence (a|b), 5 info,
--       6 ttl_ms, 7 channel, 8 bindings allowed in this bucket
-- Returns {'taken'}, {'full'} or {'ok', pending, old_info}: pending = 1
-- when the binding is not yet confirmed by a replica (new, or an earlier
-- attempt's confirmation never came), so the caller must WAIT for it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local name = ARGV[1]
local bound = redis.call('HGET', KEYS[1], name)
if bound and string.sub(bound, 1, 64) ~= ARGV[2] then
  return {'taken'}
end
local exp = redis.call('ZSCORE', KEYS[4], name)
local old = redis.call('HGET', KEYS[3], name)
if exp and tonumber(exp) > now and old and string.sub(old, 1, 64) ~= ARGV[2] then
  -- Only possible after `forget`: a live holder keeps its name until it goes.
  return {'taken'}
end
local pending = 0
if not bound then
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[8]) then
    return {'full'}
  end
  redis.call('HSET', KEYS[1], name, ARGV[2] .. '*')
  pending = 1
elseif string.len(bound) > 64 then
  pending = 1
end
redis.call('HSET', KEYS[2], name, ARGV[4] .. ARGV[3])
redis.call('HSET', KEYS[3], name, ARGV[5])
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[6]), name)
redis.call('ZADD', KEYS[5], 0, name)
local seq = redis.call('INCR', KEYS[6])
redis.call('SPUBLISH', ARGV[7], 'u' .. seq .. '\n' .. ARGV[4] .. ARGV[5])
return {'ok', pending, old or ''}
