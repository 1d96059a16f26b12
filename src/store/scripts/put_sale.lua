-- put_sale: create a sale, or update its window, ticket TTL and eligibility
-- mode. An update never changes stock (use add_stock).
--
-- KEYS[1] cfg   hash  sale settings
-- KEYS[2] acct  hash  counters
-- ARGV[1] stock          units for a new sale, >= 0; -1 when not given
-- ARGV[2] starts_at_ms   >= 0
-- ARGV[3] ends_at_ms     > starts_at_ms
-- ARGV[4] ticket_ttl_ms  >= 1
-- ARGV[5] eligibility    "open" | "list"
--
-- Replies: {"created"} | {"updated"} | {"stock_required"} (no write)
local stock, starts, ends, ttl, elig =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if not stock or stock < -1 or not starts or starts < 0 or not ends or ends <= starts
   or not ttl or ttl < 1 or (elig ~= 'open' and elig ~= 'list') then
  return redis.error_reply('ERR put_sale: bad arguments')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'starts', starts, 'ends', ends, 'ttl', ttl, 'elig', elig)
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  return {'updated'}
end
if stock < 0 then return {'stock_required'} end
redis.call('HSET', KEYS[1], 'starts', starts, 'ends', ends, 'ttl', ttl, 'elig', elig,
  'closed', '0', 'version', 1, 'elig_version', 0)
redis.call('HSET', KEYS[2], 'total', stock, 'avail', stock, 'leased', 0, 'pending', 0,
  'confirmed', 0, 'released', 0, 'enqueued', 0, 'epoch', 0)
return {'created'}
