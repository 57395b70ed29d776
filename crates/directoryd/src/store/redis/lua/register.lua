-- Binds a name (if free) and grants its lease, atomically, in one bucket.
-- ARGV: 1 name_key, 2 key_hex, 3 lease_hash, 4 presence (a|b), 5 info,
--       6 ttl_ms, 7 channel, 8 bindings allowed in this bucket,
--       9 '1' if the claim may bind a free name, else '0'
-- Returns {'taken'}, {'full'}, {'quota'} (a free name, and the claim may
-- not bind one) or {'ok', pending, old_info, new}: pending = 1
-- when the binding is not yet confirmed by a replica (new, or an earlier
-- attempt's confirmation never came), so the caller must WAIT for it;
-- new = 1 when this call bound the name.
local now = now_ms()
local name = ARGV[1]
local bound = redis.call('HGET', K_BIND, name)
if bound and string.sub(bound, 1, 64) ~= ARGV[2] then
  return {'taken'}
end
local exp = redis.call('ZSCORE', K_EXP, name)
local old = redis.call('HGET', K_INFO, name)
if exp and tonumber(exp) > now and old and string.sub(old, 1, 64) ~= ARGV[2] then
  -- Only possible after `forget`: a live holder keeps its name until it goes.
  return {'taken'}
end
local pending = 0
local new = 0
if not bound then
  if ARGV[9] ~= '1' then
    return {'quota'}
  end
  if redis.call('HLEN', K_BIND) >= tonumber(ARGV[8]) then
    return {'full'}
  end
  redis.call('HSET', K_BIND, name, ARGV[2] .. '*')
  pending = 1
  new = 1
elseif string.len(bound) > 64 then
  pending = 1
end
redis.call('HSET', K_LIVE, name, ARGV[4] .. ARGV[3])
redis.call('HSET', K_INFO, name, ARGV[5])
redis.call('ZADD', K_EXP, now + tonumber(ARGV[6]), name)
redis.call('ZADD', K_NAMES, 0, name)
local seq = redis.call('INCR', K_SEQ)
redis.call('SPUBLISH', ARGV[7], 'u' .. seq .. '\n' .. ARGV[4] .. ARGV[5])
return {'ok', pending, old or '', new}
