-- reclaim: return the units of every expired lease to the pool. Any node
-- runs this periodically, so a dead or paused node's units come back within
-- its lease TTL plus one reclaim interval (DESIGN §2, bounded undersell).
--
-- KEYS[1] acct    hash  counters
-- KEYS[2] leases  hash  node -> "units:expires_at_ms:epoch"
-- (no ARGV)
--
-- Replies: {leases_reclaimed, units_reclaimed}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[2])
local dead, units = {}, 0
for i = 1, #all, 2 do
  local u, e = string.match(all[i + 1], '^(%d+):(%d+):%d+$')
  if not u or tonumber(e) <= now then
    dead[#dead + 1] = all[i]
    units = units + (tonumber(u) or 0)
  end
end
if #dead > 0 then
  redis.call('HDEL', KEYS[2], unpack(dead))
  redis.call('HINCRBY', KEYS[1], 'avail', units)
  redis.call('HINCRBY', KEYS[1], 'leased', -units)
end
return {#dead, units}
