-- confirm: the order backend was paid for this ticket.
--
-- KEYS[1] tickets  hash  ticket -> "state:user:issued_at_ms:expires_at_ms[:warehouse]"
-- KEYS[2] acct     hash  counters
-- KEYS[3] expiry   zset  pending ticket -> expires_at_ms, of sales admitted
--                        before the sweep cursor (the ticket leaves it)
-- KEYS[4] wh       hash  per-warehouse counters; the unit returns to its own warehouse
-- (the record's 5th field; a record without one is of warehouse `default`)
-- ARGV[1] ticket id
--
-- Replies:
--   {"unknown"}
--   {"confirmed", changed}  changed = 1 when this call confirmed it, 0 when it already was
--   {"released", changed}   too late: released before (0), or past its expiry now (1),
--                           in which case this call releases it and the unit returns.
local ticket = ARGV[1]
if not ticket or ticket == '' then return redis.error_reply('ERR confirm: bad arguments') end
local rec = redis.call('HGET', KEYS[1], ticket)
if not rec then return {'unknown'} end
local state, user, issued, exp, w = string.match(rec, '^(%a):([%w_-]+):(%d+):(%d+):?([%w_-]*)$')
if not state then return redis.error_reply('ERR confirm: unreadable ticket record') end
local wsuffix = (w ~= '' and (':' .. w)) or ''
if w == '' then w = 'default' end
if state == 'c' then return {'confirmed', 0} end
if state == 'r' then return {'released', 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[3], ticket)
redis.call('HINCRBY', KEYS[2], 'pending', -1)
if tonumber(exp) <= now then
  redis.call('HSET', KEYS[1], ticket, 'r:' .. user .. ':' .. issued .. ':' .. exp .. wsuffix)
  redis.call('HINCRBY', KEYS[2], 'avail', 1)
  redis.call('HINCRBY', KEYS[2], 'released', 1)
  redis.call('HINCRBY', KEYS[4], w .. ':sold', -1)
  return {'released', 1}
end
redis.call('HSET', KEYS[1], ticket, 'c:' .. user .. ':' .. issued .. ':' .. exp .. wsuffix)
redis.call('HINCRBY', KEYS[2], 'confirmed', 1)
redis.call('HINCRBY', KEYS[4], w .. ':conf', 1)
return {'confirmed', 1}
