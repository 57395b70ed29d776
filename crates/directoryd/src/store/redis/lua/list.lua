-- Live registrations after a name, in name order, from one bucket.
-- KEYS: 1 live, 2 info, 3 exp, 4 names
-- ARGV: 1 after ('' for the start), 2 quota, 3 names to scan at most
-- Returns {done, cursor, entries}: entries is flat (name_key, live, info)
-- triples, at most `quota`; every name of the bucket after `after` and up
-- to `cursor` was looked at; done = 1 when there are no names past cursor.
-- The scan is bounded so that a bucket full of expired, unreaped names
-- cannot make one call long.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local min = '-'
if ARGV[1] ~= '' then
  min = '(' .. ARGV[1]
end
local quota = tonumber(ARGV[2])
local scan = tonumber(ARGV[3])
local names = redis.call('ZRANGE', KEYS[4], min, '+', 'BYLEX', 'LIMIT', 0, scan)
local out = {}
local count = 0
local cursor = ARGV[1]
local looked = 0
for _, n in ipairs(names) do
  cursor = n
  looked = looked + 1
  local e = redis.call('ZSCORE', KEYS[3], n)
  if e and tonumber(e) > now then
    local live = redis.call('HGET', KEYS[1], n)
    local info = redis.call('HGET', KEYS[2], n)
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
