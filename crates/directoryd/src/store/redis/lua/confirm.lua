-- Marks a binding as confirmed by a replica (WAIT said so).
-- KEYS: 1 bind ; ARGV: 1 name_key, 2 key_hex
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] .. '*' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
