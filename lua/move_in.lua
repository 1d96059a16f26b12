-- move_in: step 2 of a move: credit the units to this sale, once. The
-- move id is remembered, so sending this again (a re-run after a crash)
-- changes nothing. A warehouse this sale does not have yet is added.
--
-- KEYS[1] cfg       hash  sale settings
-- KEYS[2] acct      hash  counters
-- KEYS[3] wh        hash  per-warehouse counters "<w>:total", "<w>:sold", "<w>:conf"
-- KEYS[4] wcfg      hash  warehouse spec (field list)
-- KEYS[5] moves_in  hash  move id -> "from_sale:units:warehouse"
-- ARGV[1] move id
-- ARGV[2] from sale
-- ARGV[3] units      >= 1
-- ARGV[4] warehouse  id
--
-- Replies:
--   {"unknown_sale"} | {"too_many_warehouses"}   (no write)
--   {"already"}                                  credited before (no write)
--   {"ok"}
local id, from, units, w = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if not id or id == '' or not from or from == '' or not units or units < 1
   or units ~= math.floor(units) or not w or w == '' then
  return redis.error_reply('ERR move_in: bad arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
if redis.call('HEXISTS', KEYS[5], id) == 1 then return {'already'} end
local list = redis.call('HGET', KEYS[4], 'list')
local is_new = list and not string.find(',' .. list .. ',', ',' .. w .. ',', 1, true)
if is_new then
  local count = 1
  for _ in string.gmatch(list, ',') do count = count + 1 end
  if count >= 64 then return {'too_many_warehouses'} end
end
if is_new then
  redis.call('HSET', KEYS[4], 'list', list .. ',' .. w)
  redis.call('HSET', KEYS[3], w .. ':total', 0, w .. ':sold', 0, w .. ':conf', 0)
end
redis.call('HINCRBY', KEYS[2], 'total', units)
redis.call('HINCRBY', KEYS[2], 'avail', units)
if list then redis.call('HINCRBY', KEYS[3], w .. ':total', units) end
redis.call('HSET', KEYS[5], id, from .. ':' .. units .. ':' .. w)
return {'ok'}
