-- Marks a binding as confirmed by a replica (WAIT said so).
-- ARGV: 1 name_key, 2 key_hex
if redis.call('HGET', K_BIND, ARGV[1]) == ARGV[2] .. '*' then
  redis.call('HSET', K_BIND, ARGV[1], ARGV[2])
end
return 1
