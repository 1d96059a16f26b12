-- add_stock: add units to a sale (delta > 0) or withdraw unleased units (delta < 0).
--
-- KEYS[1] cfg   hash  sale settings
-- KEYS[2] acct  hash  counters
-- ARGV[1] delta  non-zero integer
--
-- Replies:
--   {"unknown_sale"}
--   {"ok", stock_total, available}
--   {"insufficient", stock_total, available}   withdrawal larger than available (no write)
local delta = tonumber(ARGV[1])
if not delta or delta == 0 or delta ~= math.floor(delta) then
  return redis.error_reply('ERR add_stock: bad arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local total = tonumber(redis.call('HGET', KEYS[2], 'total')) or 0
local avail = tonumber(redis.call('HGET', KEYS[2], 'avail')) or 0
if delta < 0 and avail + delta < 0 then return {'insufficient', total, avail} end
total = redis.call('HINCRBY', KEYS[2], 'total', delta)
avail = redis.call('HINCRBY', KEYS[2], 'avail', delta)
return {'ok', total, avail}
