-- Publishes a probe on a bucket's shard channel, so that a replica can
-- check that its subscription still hears that bucket.
-- ARGV: 1 channel, 2 payload
return redis.call('SPUBLISH', ARGV[1], ARGV[2])
