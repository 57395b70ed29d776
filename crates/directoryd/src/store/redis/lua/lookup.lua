-- One live registration. ARGV: 1 name_key
-- Returns {live, info}, or {} when the name is not online.
local now = now_ms()
local exp = redis.call('ZSCORE', K_EXP, ARGV[1])
if not exp or tonumber(exp) <= now then
  return {}
end
local live = redis.call('HGET', K_LIVE, ARGV[1])
local info = redis.call('HGET', K_INFO, ARGV[1])
if not live or not info then
  return {}
end
return {live, info}
