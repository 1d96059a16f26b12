-- add_stock: add units to a sale (delta > 0) or withdraw unleased units
-- (delta < 0), in one of its warehouses (DESIGN §7).
--
-- KEYS[1] cfg   hash  sale settings
-- KEYS[2] acct  hash  counters
-- KEYS[3] wh    hash  per-warehouse counters "<w>:total", "<w>:sold", "<w>:conf"
-- KEYS[4] wcfg  hash  warehouse spec (field list)
-- ARGV[1] delta      non-zero integer
-- ARGV[2] warehouse  id, or "" when the sale has exactly one
--
-- Replies:
--   {"unknown_sale"}
--   {"ok", stock_total, available}
--   {"insufficient", stock_total, available}   withdrawal larger than available,
--                                              or than the warehouse's unsold units (no write)
--   {"warehouse_required"}   "" given and the sale has several (no write)
--   {"unknown_warehouse"}    the sale has no such warehouse (no write)
local delta, w = tonumber(ARGV[1]), ARGV[2]
if not delta or delta == 0 or delta ~= math.floor(delta) or not w then
  return redis.error_reply('ERR add_stock: bad arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local list = redis.call('HGET', KEYS[4], 'list')
local legacy = not list
if legacy then list = 'default' end
if w == '' then
  if string.find(list, ',', 1, true) then return {'warehouse_required'} end
  w = list
elseif not string.find(',' .. list .. ',', ',' .. w .. ',', 1, true) then
  return {'unknown_warehouse'}
end
local total = tonumber(redis.call('HGET', KEYS[2], 'total')) or 0
local avail = tonumber(redis.call('HGET', KEYS[2], 'avail')) or 0
if delta < 0 and avail + delta < 0 then return {'insufficient', total, avail} end
if delta < 0 and not legacy then
  local v = redis.call('HMGET', KEYS[3], w .. ':total', w .. ':sold')
  local unsold = (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0)
  if unsold + delta < 0 then return {'insufficient', total, avail} end
end
total = redis.call('HINCRBY', KEYS[2], 'total', delta)
avail = redis.call('HINCRBY', KEYS[2], 'avail', delta)
if not legacy then redis.call('HINCRBY', KEYS[3], w .. ':total', delta) end
return {'ok', total, avail}
