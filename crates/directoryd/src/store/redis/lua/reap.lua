-- Drops expired registrations from one bucket, announcing each.
-- KEYS: 1 live, 2 info, 3 exp, 4 names, 5 seq ; ARGV: 1 batch, 2 channel
-- Returns flat (name_key, info) pairs of what went.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, n in ipairs(gone) do
  local info = redis.call('HGET', KEYS[2], n) or ''
  redis.call('HDEL', KEYS[1], n)
  redis.call('HDEL', KEYS[2], n)
  redis.call('ZREM', KEYS[3], n)
  redis.call('ZREM', KEYS[4], n)
  local seq = redis.call('INCR', KEYS[5])
  redis.call('SPUBLISH', ARGV[2], 'd' .. seq .. '\n' .. 'a' .. info)
  out[#out + 1] = n
  out[#out + 1] = info
end
return out
