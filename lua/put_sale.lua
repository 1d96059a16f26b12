-- put_sale: create a sale, or update its window, ticket TTL and eligibility
-- mode. An update never changes stock (use add_stock).
--
-- KEYS[1] cfg   hash  sale settings
-- KEYS[2] acct  hash  counters
-- KEYS[3] wh    hash  per-warehouse counters "<w>:total", "<w>:sold", "<w>:conf"
-- KEYS[4] wcfg  hash  warehouse spec: list, r:<region>, default_order (comma-joined ids)
-- KEYS[5] orders stream  the sale's order stream (DESIGN §5)
-- ARGV[1] stock          units for a new sale, >= 0; -1 when not given
-- ARGV[2] starts_at_ms   >= 0
-- ARGV[3] ends_at_ms     > starts_at_ms
-- ARGV[4] ticket_ttl_ms  >= 1
-- ARGV[5] eligibility    "open" | "list"
-- ARGV[6] nw             warehouses, 1..64, then nw pairs: id, units (summing to stock)
-- then    nr             regions, then per region: id, k, k warehouse ids
-- then    nd             ids of the default order (0: most unsold first), then nd ids
-- The warehouse part is validated by the caller (every id known) and
-- applies to a new sale only: an update never changes stock or warehouses.
--
-- A new sale's order stream is made here with its consumer group `orders`
-- reading from the start, so the consumer never has to create the group
-- itself: that takes memory, and a store that filled up after the sale was
-- made would refuse it while every winner waits (`bigtap orders` still
-- creates the group of a sale made before this script did).
--
-- Replies: {"created"} | {"updated"} | {"stock_required"} (no write)
local stock, starts, ends, ttl, elig =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if not stock or stock < -1 or not starts or starts < 0 or not ends or ends <= starts
   or not ttl or ttl < 1 or (elig ~= 'open' and elig ~= 'list') then
  return redis.error_reply('ERR put_sale: bad arguments')
end
local bad = function() return redis.error_reply('ERR put_sale: bad warehouse arguments') end
local i = 6
local nw = tonumber(ARGV[i])
if not nw or nw < 1 or nw > 64 then return bad() end
local ws, wsum, wfields = {}, 0, {}
for j = 1, nw do
  local w, u = ARGV[i + 2 * j - 1], tonumber(ARGV[i + 2 * j])
  if not w or w == '' or not u or u < 0 then return bad() end
  ws[#ws + 1] = w
  wsum = wsum + u
  wfields[#wfields + 1] = w .. ':total'; wfields[#wfields + 1] = u
  wfields[#wfields + 1] = w .. ':sold'; wfields[#wfields + 1] = 0
  wfields[#wfields + 1] = w .. ':conf'; wfields[#wfields + 1] = 0
end
i = i + 2 * nw + 1
local nr = tonumber(ARGV[i])
if not nr or nr < 0 then return bad() end
local spec = {'list', table.concat(ws, ',')}
for _ = 1, nr do
  local r, k = ARGV[i + 1], tonumber(ARGV[i + 2])
  if not r or r == '' or not k or k < 1 then return bad() end
  local order = {}
  for j = 1, k do order[j] = ARGV[i + 2 + j] end
  spec[#spec + 1] = 'r:' .. r; spec[#spec + 1] = table.concat(order, ',')
  i = i + 2 + k
end
i = i + 1
local nd = tonumber(ARGV[i])
if not nd or nd < 0 or #ARGV ~= i + nd then return bad() end
if nd > 0 then
  local order = {}
  for j = 1, nd do order[j] = ARGV[i + j] end
  spec[#spec + 1] = 'default_order'; spec[#spec + 1] = table.concat(order, ',')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'starts', starts, 'ends', ends, 'ttl', ttl, 'elig', elig)
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  return {'updated'}
end
if stock < 0 then return {'stock_required'} end
if wsum ~= stock then return bad() end
-- A stream left from an earlier sale of the same id may have the group.
local has_group = false
if redis.call('EXISTS', KEYS[5]) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[5])) do
    for j = 1, #g, 2 do
      if g[j] == 'name' and g[j + 1] == 'orders' then has_group = true end
    end
  end
end
redis.call('HSET', KEYS[1], 'starts', starts, 'ends', ends, 'ttl', ttl, 'elig', elig,
  'closed', '0', 'version', 1, 'elig_version', 0)
redis.call('HSET', KEYS[2], 'total', stock, 'avail', stock, 'leased', 0, 'pending', 0,
  'confirmed', 0, 'released', 0, 'enqueued', 0, 'epoch', 0)
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[3], unpack(wfields))
redis.call('HSET', KEYS[4], unpack(spec))
if not has_group then
  redis.call('XGROUP', 'CREATE', KEYS[5], 'orders', '0', 'MKSTREAM')
end
return {'created'}
