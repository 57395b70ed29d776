-- Renews a lease and records the presence, or keeps the listed one when
-- ARGV[3] is empty; announces a change of presence.
-- ARGV: 1 name_key, 2 lease_hash, 3 presence (a|b|empty), 4 ttl_ms, 5 channel
-- Returns {} when the lease is unknown or expired, else {presence listed
-- now, 1 if this call changed it else 0}.
local now = now_ms()
local name = ARGV[1]
local exp = redis.call('ZSCORE', K_EXP, name)
if not exp or tonumber(exp) <= now then
  return {}
end
local live = redis.call('HGET', K_LIVE, name)
-- Hashes of leases are compared, so timing tells nothing about a lease.
if not live or string.sub(live, 2) ~= ARGV[2] then
  return {}
end
redis.call('ZADD', K_EXP, 'XX', now + tonumber(ARGV[4]), name)
local listed = string.sub(live, 1, 1)
if ARGV[3] == '' or ARGV[3] == listed then
  return {listed, 0}
end
redis.call('HSET', K_LIVE, name, ARGV[3] .. ARGV[2])
local info = redis.call('HGET', K_INFO, name) or ''
local seq = redis.call('INCR', K_SEQ)
redis.call('SPUBLISH', ARGV[5], 'u' .. seq .. '\n' .. ARGV[3] .. info)
return {ARGV[3], 1}
