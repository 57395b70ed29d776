-- Releases a name's registration; idempotent.
-- ARGV: 1 name_key, 2 lease_hash, 3 channel
-- Returns {'wrong'} when a live registration holds another lease, else
-- {'ok', info} (info empty when there was nothing to release).
local now = now_ms()
local name = ARGV[1]
local exp = redis.call('ZSCORE', K_EXP, name)
if not exp then
  return {'ok', ''}
end
local alive = tonumber(exp) > now
local live = redis.call('HGET', K_LIVE, name)
if alive and (not live or string.sub(live, 2) ~= ARGV[2]) then
  return {'wrong'}
end
local info = redis.call('HGET', K_INFO, name) or ''
redis.call('HDEL', K_LIVE, name)
redis.call('HDEL', K_INFO, name)
redis.call('ZREM', K_EXP, name)
redis.call('ZREM', K_NAMES, name)
-- Announced expired too: watchers list it until the reaper says it went,
-- and the reaper will not find it now.
local seq = redis.call('INCR', K_SEQ)
redis.call('SPUBLISH', ARGV[3], 'd' .. seq .. '\n' .. 'a' .. info)
return {'ok', info}
