-- Renews a lease and records the presence; announces a change of presence.
-- KEYS: 1 live, 2 info, 3 exp, 4 seq
-- ARGV: 1 name_key, 2 lease_hash, 3 presence (a|b), 4 ttl_ms, 5 channel
-- Returns 1, or 0 when the lease is unknown or expired.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local name = ARGV[1]
local exp = redis.call('ZSCORE', KEYS[3], name)
if not exp or tonumber(exp) <= now then
  return 0
end
local live = redis.call('HGET', KEYS[1], name)
-- Hashes of leases are compared, so timing tells nothing about a lease.
if not live or string.sub(live, 2) ~= ARGV[2] then
  return 0
end
redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[4]), name)
if string.sub(live, 1, 1) ~= ARGV[3] then
  redis.call('HSET', KEYS[1], name, ARGV[3] .. ARGV[2])
  local info = redis.call('HGET', KEYS[2], name) or ''
  local seq = redis.call('INCR', KEYS[4])
  redis.call('SPUBLISH', ARGV[5], 'u' .. seq .. '\n' .. ARGV[3] .. info)
end
return 1
