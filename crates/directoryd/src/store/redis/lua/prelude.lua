-- Prepended to every script. Each script works on one bucket, and is
-- given all of the bucket's keys, in this order, so that every key it
-- touches is declared (all six share one hash tag, hence one slot).
local K_BIND, K_LIVE, K_INFO, K_EXP, K_NAMES, K_SEQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

-- Milliseconds since the epoch by this master's clock: leases are timed
-- by the store, so directory replicas' clocks do not matter.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

