-- retire: forget a consumer name at shutdown, only if it holds no entry.
--
-- XGROUP DELCONSUMER drops the consumer's pending entries with it, which
-- would lose them, so it runs only when the consumer has none. Other
-- consumers can only take entries away from it (XAUTOCLAIM), never add, so
-- the check cannot be overtaken.
--
-- KEYS[1]  order stream  P:{S}:orders
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
--
-- Replies:
--   1 the consumer was removed
--   0 it still holds pending entries and was kept

local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
