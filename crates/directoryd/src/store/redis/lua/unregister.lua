-- Releases a name's registration; idempotent.
-- KEYS: 1 live, 2 info, 3 exp, 4 names, 5 seq
-- ARGV: 1 name_key, 2 lease_hash, 3 channel
-- Returns {'wrong'} when a live registration holds another lease, else
-- {'ok', info} (info empty when there was nothing to release).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local name = ARGV[1]
local exp = redis.call('ZSCORE', KEYS[3], name)
if not exp then
  return {'ok', ''}
end
local alive = tonumber(exp) > now
local live = redis.call('HGET', KEYS[1], name)
if alive and (not live or string.sub(live, 2) ~= ARGV[2]) then
  return {'wrong'}
end
local info = redis.call('HGET', KEYS[2], name) or ''
redis.call('HDEL', KEYS[1], name)
redis.call('HDEL', KEYS[2], name)
redis.call('ZREM', KEYS[3], name)
redis.call('ZREM', KEYS[4], name)
if alive then
  local seq = redis.call('INCR', KEYS[5])
  redis.call('SPUBLISH', ARGV[3], 'd' .. seq .. '\n' .. 'a' .. info)
end
return {'ok', info}
