-- Releases a name from its key, and ends any registration under it.
-- KEYS: 1 bind, 2 live, 3 info, 4 exp, 5 names, 6 seq
-- ARGV: 1 name_key, 2 channel
-- Returns the key it was bound to (hex), or '' when it had no binding.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local name = ARGV[1]
local bound = redis.call('HGET', KEYS[1], name)
if not bound then
  return ''
end
redis.call('HDEL', KEYS[1], name)
local exp = redis.call('ZSCORE', KEYS[4], name)
if exp then
  local info = redis.call('HGET', KEYS[3], name) or ''
  redis.call('HDEL', KEYS[2], name)
  redis.call('HDEL', KEYS[3], name)
  redis.call('ZREM', KEYS[4], name)
  redis.call('ZREM', KEYS[5], name)
  if tonumber(exp) > now then
    local seq = redis.call('INCR', KEYS[6])
    redis.call('SPUBLISH', ARGV[2], 'd' .. seq .. '\n' .. 'a' .. info)
  end
end
return string.sub(bound, 1, 64)
