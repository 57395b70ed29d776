-- Releases a name from its key, and ends any registration under it.
-- ARGV: 1 name_key, 2 channel
-- Returns the key it was bound to (hex), or '' when it had no binding.
local name = ARGV[1]
local bound = redis.call('HGET', K_BIND, name)
if not bound then
  return ''
end
redis.call('HDEL', K_BIND, name)
local exp = redis.call('ZSCORE', K_EXP, name)
if exp then
  local info = redis.call('HGET', K_INFO, name) or ''
  redis.call('HDEL', K_LIVE, name)
  redis.call('HDEL', K_INFO, name)
  redis.call('ZREM', K_EXP, name)
  redis.call('ZREM', K_NAMES, name)
  -- Expired too: watchers list it until it is announced gone.
  local seq = redis.call('INCR', K_SEQ)
  redis.call('SPUBLISH', ARGV[2], 'd' .. seq .. '\n' .. 'a' .. info)
end
return string.sub(bound, 1, 64)
