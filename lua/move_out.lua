-- move_out: step 1 of moving units from this sale to another (`bigtap sale
-- move`, DESIGN §7 channels): debit unleased unsold units and journal the
-- move, in one atomic step. The other sale may live on another shard, so
-- the credit is a separate step (move_in) and the journal entry says what
-- is owed until move_end closes it.
--
-- KEYS[1] cfg        hash  sale settings
-- KEYS[2] acct       hash  counters
-- KEYS[3] wh         hash  per-warehouse counters "<w>:total", "<w>:sold", "<w>:conf"
-- KEYS[4] wcfg       hash  warehouse spec (field list)
-- KEYS[5] moves_out  hash  move id -> "state:to_sale:units:warehouse", state out|done|undone
-- ARGV[1] move id
-- ARGV[2] to sale
-- ARGV[3] units      >= 1
-- ARGV[4] warehouse  id, or "" when the sale has exactly one
--
-- Replies:
--   {"unknown_sale"} | {"warehouse_required"} | {"unknown_warehouse"}   (no write)
--   {"exists", state}                the move id is journaled already (no write)
--   {"insufficient", available, unsold_of_warehouse}                     (no write)
--   {"ok", warehouse}
local id, to, units, w = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if not id or id == '' or not to or to == '' or not units or units < 1
   or units ~= math.floor(units) or not w then
  return redis.error_reply('ERR move_out: bad arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local prior = redis.call('HGET', KEYS[5], id)
if prior then return {'exists', string.match(prior, '^(%a+):') or ''} end
local list = redis.call('HGET', KEYS[4], 'list')
local legacy = not list
if legacy then list = 'default' end
if w == '' then
  if string.find(list, ',', 1, true) then return {'warehouse_required'} end
  w = list
elseif not string.find(',' .. list .. ',', ',' .. w .. ',', 1, true) then
  return {'unknown_warehouse'}
end
local avail = tonumber(redis.call('HGET', KEYS[2], 'avail')) or 0
local unsold = avail
if not legacy then
  local v = redis.call('HMGET', KEYS[3], w .. ':total', w .. ':sold')
  unsold = (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0)
end
if avail < units or unsold < units then return {'insufficient', avail, math.max(unsold, 0)} end
redis.call('HINCRBY', KEYS[2], 'total', -units)
redis.call('HINCRBY', KEYS[2], 'avail', -units)
if not legacy then redis.call('HINCRBY', KEYS[3], w .. ':total', -units) end
redis.call('HSET', KEYS[5], id, 'out:' .. to .. ':' .. units .. ':' .. w)
return {'ok', w}
