-- Marks a binding as confirmed by a replica (WAIT said so).
-- ARGV: 1 name_key, 2 key_hex
-- Returns 1 when the name is bound to that key (now confirmed), 0 when it
-- is not: the binding was lost (a failover promoted a replica that never
-- had it), and the registration must not be answered OK.
local bound = redis.call('HGET', K_BIND, ARGV[1])
if bound == ARGV[2] .. '*' then
  redis.call('HSET', K_BIND, ARGV[1], ARGV[2])
  return 1
end
if bound == ARGV[2] then
  return 1
end
return 0
