-- One live registration. KEYS: 1 live, 2 info, 3 exp ; ARGV: 1 name_key
-- Returns {live, info}, or {} when the name is not online.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not exp or tonumber(exp) <= now then
  return {}
end
local live = redis.call('HGET', KEYS[1], ARGV[1])
local info = redis.call('HGET', KEYS[2], ARGV[1])
if not live or not info then
  return {}
end
return {live, info}
