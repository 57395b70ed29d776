-- Drops a name's count from a source's set, unless it was counted again
-- since the recount read it (its score changed): a registration that
-- raced the recount keeps its count.
-- KEYS: 1 the source's set. ARGV: 1 name_key, 2 the score read
-- Returns 1 if it was dropped, else 0.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
