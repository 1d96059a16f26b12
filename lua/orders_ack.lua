-- orders_ack: acknowledge delivered order entries and forget their attempt
-- counters, in one step.
--
-- KEYS[1]  order stream   P:{S}:orders
-- KEYS[2]  attempts hash  P:{S}:orders:attempts   (entry id -> attempts)
-- ARGV[1]  consumer group
-- ARGV[2..] entry ids
--
-- Replies:
--   the number of entries acknowledged by this call (a repeat acknowledges 0)
if #ARGV < 2 then return 0 end
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('HDEL', KEYS[2], unpack(ids))
return n
