-- release: the order backend gives the ticket up (payment failed); the unit
-- returns to the pool. The buyer keeps the ticket record (one ticket per
-- user per sale), so a retry replays the released ticket.
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
--   {"released", changed}   changed = 1 when this call released it
--   {"confirmed", 0}        too late: it was confirmed first
local ticket = ARGV[1]
if not ticket or ticket == '' then return redis.error_reply('ERR release: bad arguments') end
local rec = find_ticket(KEYS[5], KEYS[1], ticket)
if rec == nil then return {'unknown'} end
if not rec then return redis.error_reply('ERR release: unreadable ticket record') end
local w = rec.w
if rec.state == 'c' then return {'confirmed', 0} end
if rec.state == 'r' then return {'released', 0} end
rec.put('r')
redis.call('ZREM', KEYS[3], ticket)
redis.call('HINCRBY', KEYS[2], 'pending', -1)
redis.call('HINCRBY', KEYS[2], 'avail', 1)
redis.call('HINCRBY', KEYS[2], 'released', 1)
redis.call('HINCRBY', KEYS[4], w .. ':sold', -1)
return {'released', 1}
