-- Drops expired registrations from one bucket, announcing each.
-- ARGV: 1 batch, 2 channel
-- Returns flat (name_key, info) pairs of what went.
local now = now_ms()
local gone = redis.call('ZRANGE', K_EXP, '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, n in ipairs(gone) do
  local info = redis.call('HGET', K_INFO, n) or ''
  redis.call('HDEL', K_LIVE, n)
  redis.call('HDEL', K_INFO, n)
  redis.call('ZREM', K_EXP, n)
  redis.call('ZREM', K_NAMES, n)
  local seq = redis.call('INCR', K_SEQ)
  redis.call('SPUBLISH', ARGV[2], 'd' .. seq .. '\n' .. 'a' .. info)
  out[#out + 1] = n
  out[#out + 1] = info
end
return out
