-- close: stop admissions for good. Leases are returned by their nodes (or
-- reclaimed when they expire); pending tickets keep their lifecycle.
--
-- KEYS[1] cfg  hash  sale settings
-- (no ARGV)
--
-- Replies: {"unknown_sale"} | {"ok"}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
redis.call('HSET', KEYS[1], 'closed', '1')
redis.call('HINCRBY', KEYS[1], 'version', 1)
return {'ok'}
