-- renew: extend this node's live lease.
--
-- KEYS[1] leases  hash  node -> "units:expires_at_ms:epoch"
-- ARGV[1] node id
-- ARGV[2] epoch   the lease epoch the node believes it holds
-- ARGV[3] ttl_ms  new lifetime from now, >= 1
--
-- Replies:
--   {"ok", lease_units, expires_at_ms}
--   {"fenced"}  no live lease of this epoch: it expired or was reclaimed.
--               The node must drop its local units and lease anew.
local node, epoch, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if node == nil or node == '' or not epoch or not ttl or ttl < 1 then
  return redis.error_reply('ERR renew: bad arguments')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HGET', KEYS[1], node)
if not cur then return {'fenced'} end
local u, e, ep = string.match(cur, '^(%d+):(%d+):(%d+)$')
if not u or tonumber(ep) ~= epoch or tonumber(e) <= now then return {'fenced'} end
local expires = now + ttl
redis.call('HSET', KEYS[1], node, u .. ':' .. expires .. ':' .. ep)
return {'ok', tonumber(u), expires}
