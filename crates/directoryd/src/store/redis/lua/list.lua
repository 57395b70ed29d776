-- Live registrations after a name, in name order, from one bucket.
-- ARGV: 1 after ('' for the start), 2 quota, 3 names to scan at most
-- Returns {done, cursor, entries}: entries is flat (name_key, live, info)
-- triples, at most `quota`; every name of the bucket after `after` and up
-- to `cursor` was looked at; done = 1 when there are no names past cursor.
-- The scan is bounded so that a bucket full of expired, unreaped names
-- cannot make one call long.
local now = now_ms()
local min = '-'
if ARGV[1] ~= '' then
  min = '(' .. ARGV[1]
end
local quota = tonumber(ARGV[2])
local scan = tonumber(ARGV[3])
local names = redis.call('ZRANGE', K_NAMES, min, '+', 'BYLEX', 'LIMIT', 0, scan)
local out = {}
local count = 0
local cursor = ARGV[1]
local looked = 0
for _, n in ipairs(names) do
  cursor = n
  looked = looked + 1
  local e = redis.call('ZSCORE', K_EXP, n)
  if e and tonumber(e) > now then
    local live = redis.call('HGET', K_LIVE, n)
    local info = redis.call('HGET', K_INFO, n)
    if live and info then
      out[#out + 1] = n
      out[#out + 1] = live
      out[#out + 1] = info
      count = count + 1
      if count >= quota then
        break
      end
    end
  end
end
local done = 0
if looked == #names and #names < scan then
  done = 1
end
return {done, cursor, out}
