-- add_eligible: add users to a sale's eligibility list.
--
-- KEYS[1] cfg       hash  sale settings (elig_version is bumped so nodes reload)
-- KEYS[2] eligible  set   users
-- ARGV[1..]         user ids (validated by the caller), at least one
--
-- Replies: {"unknown_sale"} | {"ok", newly_added}
if #ARGV < 1 then return redis.error_reply('ERR add_eligible: bad arguments') end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local added = redis.call('SADD', KEYS[2], unpack(ARGV))
redis.call('HINCRBY', KEYS[1], 'elig_version', 1)
return {'ok', added}
