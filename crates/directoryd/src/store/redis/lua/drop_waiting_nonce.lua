-- Drops a challenge nonce that still waits for its Register (its value
-- is still the issued mark); a spent one keeps its spender's mark, which
-- a resent spend must find, until it expires.
-- KEYS: 1 the nonce's key. ARGV: 1 the issued mark.
-- Returns 1 if it was dropped, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
