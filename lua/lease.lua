-- lease: grant this node up to `want` units from the sale's pool.
--
-- KEYS[1] cfg     hash   sale settings (starts, ends, closed)
-- KEYS[2] acct    hash   counters (total, avail, leased, pending, confirmed, released, enqueued, epoch)
-- KEYS[3] leases  hash   node -> "units:expires_at_ms:epoch"
-- ARGV[1] node id
-- ARGV[2] want    units wanted, >= 1
-- ARGV[3] ttl_ms  lease lifetime, >= 1
--
-- Replies:
--   {"unknown_sale"} | {"not_started"} | {"ended"} | {"closed"}   (no write)
--   {"ok", granted, epoch, lease_units, expires_at_ms, available, leased, enqueued}
--     granted = 0 with epoch = 0: the pool is empty and this node holds no lease.
--     leased and enqueued (sale-wide, after this call) let a node that finds
--     the pool empty tell at once whether any unit is still out anywhere.
--
-- A node that still holds a live lease gets its units topped up under the
-- same epoch. A node whose own lease expired is treated like any dead node:
-- its units go back to the pool and a new lease carries a new epoch, so
-- commits made under the old one are refused by `admit` (fencing).
local node, want, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if node == nil or node == '' or not want or want < 1 or not ttl or ttl < 1 then
  return redis.error_reply('ERR lease: bad arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c = redis.call('HMGET', KEYS[1], 'starts', 'ends', 'closed')
if c[3] == '1' then return {'closed'} end
if now < tonumber(c[1]) then return {'not_started'} end
if now >= tonumber(c[2]) then return {'ended'} end

local avail = tonumber(redis.call('HGET', KEYS[2], 'avail')) or 0
local units, epoch = 0, 0
local cur = redis.call('HGET', KEYS[3], node)
if cur then
  local u, e, ep = string.match(cur, '^(%d+):(%d+):(%d+)$')
  if u and tonumber(e) > now then
    units, epoch = tonumber(u), tonumber(ep)
  else
    -- Expired (or unreadable) lease of this very node: reclaim it first.
    -- A spent lease moves no unit; and in Lua -0 is "-0", which HINCRBY
    -- refuses as not an integer, aborting the script before the HDEL.
    local stale = tonumber(u) or 0
    if stale > 0 then
      redis.call('HINCRBY', KEYS[2], 'avail', stale)
      redis.call('HINCRBY', KEYS[2], 'leased', -stale)
    end
    redis.call('HDEL', KEYS[3], node)
    avail = avail + stale
  end
end

local grant = math.min(want, avail)
if epoch == 0 and grant == 0 then
  local a = redis.call('HMGET', KEYS[2], 'leased', 'enqueued')
  return {'ok', 0, 0, 0, 0, avail, tonumber(a[1]) or 0, tonumber(a[2]) or 0}
end
if epoch == 0 then
  epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
end
units = units + grant
local expires = now + ttl
redis.call('HSET', KEYS[3], node, units .. ':' .. expires .. ':' .. epoch)
if grant > 0 then
  redis.call('HINCRBY', KEYS[2], 'avail', -grant)
  redis.call('HINCRBY', KEYS[2], 'leased', grant)
end
local a = redis.call('HMGET', KEYS[2], 'leased', 'enqueued')
return {'ok', grant, epoch, units, expires, avail - grant, tonumber(a[1]) or 0, tonumber(a[2]) or 0}
