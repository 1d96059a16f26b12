-- confirm: the order backend was paid for this ticket.
--
-- KEYS[1] tickets  hash  records of tickets minted before records moved (records.lua)
-- KEYS[2] acct     hash  counters
-- KEYS[3] expiry   zset  pending ticket -> expires_at_ms, of sales admitted
--                        before the sweep cursor (the ticket leaves it)
-- KEYS[4] wh       hash  per-warehouse counters; the unit returns to its own warehouse
-- KEYS[5] winners  hash  user -> record (or, for an older ticket, the ticket)
-- ARGV[1] ticket id
--
-- Replies:
--   {"unknown"}
--   {"confirmed", changed}  changed = 1 when this call confirmed it, 0 when it already was
--   {"released", changed}   too late: released before (0), or past its expiry now (1),
--                           in which case this call releases it and the unit returns.
local ticket = ARGV[1]
if not ticket or ticket == '' then return redis.error_reply('ERR confirm: bad arguments') end
local rec = find_ticket(KEYS[5], KEYS[1], ticket)
if rec == nil then return {'unknown'} end
if not rec then return redis.error_reply('ERR confirm: unreadable ticket record') end
local w = rec.w
if rec.state == 'c' then return {'confirmed', 0} end
if rec.state == 'r' then return {'released', 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[3], ticket)
redis.call('HINCRBY', KEYS[2], 'pending', -1)
if tonumber(rec.exp) <= now then
  rec.put('r')
  redis.call('HINCRBY', KEYS[2], 'avail', 1)
  redis.call('HINCRBY', KEYS[2], 'released', 1)
  redis.call('HINCRBY', KEYS[4], w .. ':sold', -1)
  return {'released', 1}
end
rec.put('c')
redis.call('HINCRBY', KEYS[2], 'confirmed', 1)
redis.call('HINCRBY', KEYS[4], w .. ':conf', 1)
return {'confirmed', 1}
