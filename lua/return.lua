-- return: give this node's unspent lease back to the pool (idle node,
-- sale closed, or graceful shutdown).
--
-- KEYS[1] acct    hash  counters
-- KEYS[2] leases  hash  node -> "units:expires_at_ms:epoch"
-- ARGV[1] node id
-- ARGV[2] epoch   the lease epoch being returned
--
-- Replies:
--   {"ok", units_returned}
--   {"fenced"}  no lease of this epoch (already reclaimed: nothing to do)
local node, epoch = ARGV[1], tonumber(ARGV[2])
if node == nil or node == '' or not epoch then
  return redis.error_reply('ERR return: bad arguments')
end
local cur = redis.call('HGET', KEYS[2], node)
if not cur then return {'fenced'} end
local u, _, ep = string.match(cur, '^(%d+):(%d+):(%d+)$')
if not u or tonumber(ep) ~= epoch then return {'fenced'} end
u = tonumber(u)
redis.call('HDEL', KEYS[2], node)
-- A spent lease moves no unit (and -0 would reach HINCRBY as "-0", which
-- it refuses as not an integer).
if u > 0 then
  redis.call('HINCRBY', KEYS[1], 'avail', u)
  redis.call('HINCRBY', KEYS[1], 'leased', -u)
end
return {'ok', u}
