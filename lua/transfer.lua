-- transfer: move unsold units of one warehouse to another (which may be
-- new) in one atomic step (DESIGN §7). Units in node leases count as
-- unsold: a lease holds fungible units and the warehouse is assigned at
-- commit, so only the warehouses' totals move; the pool does not change.
--
-- KEYS[1] cfg   hash  sale settings
-- KEYS[2] wh    hash  per-warehouse counters "<w>:total", "<w>:sold", "<w>:conf"
-- KEYS[3] wcfg  hash  warehouse spec (field list)
-- ARGV[1] from   warehouse id
-- ARGV[2] to     warehouse id, different from `from`
-- ARGV[3] units  >= 1
--
-- Replies:
--   {"unknown_sale"} | {"unknown_warehouse"} | {"too_many_warehouses"}   (no write)
--   {"insufficient", unsold_of_from}                                    (no write)
--   {"ok", unsold_of_from, unsold_of_to}
local from, to, units = ARGV[1], ARGV[2], tonumber(ARGV[3])
if not from or from == '' or not to or to == '' or from == to or not units or units < 1
   or units ~= math.floor(units) then
  return redis.error_reply('ERR transfer: bad arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local list = redis.call('HGET', KEYS[3], 'list')
if not list then return {'unknown_warehouse'} end
local padded = ',' .. list .. ','
if not string.find(padded, ',' .. from .. ',', 1, true) then return {'unknown_warehouse'} end
local is_new = not string.find(padded, ',' .. to .. ',', 1, true)
if is_new then
  local count = 1
  for _ in string.gmatch(list, ',') do count = count + 1 end
  if count >= 64 then return {'too_many_warehouses'} end
end
local v = redis.call('HMGET', KEYS[2], from .. ':total', from .. ':sold')
local unsold = (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0)
if unsold < units then return {'insufficient', math.max(unsold, 0)} end
if is_new then
  redis.call('HSET', KEYS[3], 'list', list .. ',' .. to)
  redis.call('HSET', KEYS[2], to .. ':total', 0, to .. ':sold', 0, to .. ':conf', 0)
end
redis.call('HINCRBY', KEYS[2], from .. ':total', -units)
local tt = redis.call('HINCRBY', KEYS[2], to .. ':total', units)
local ts = tonumber(redis.call('HGET', KEYS[2], to .. ':sold')) or 0
return {'ok', unsold - units, tt - ts}
