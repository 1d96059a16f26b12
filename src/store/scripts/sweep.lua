-- sweep: release pending tickets whose TTL has passed; their units return
-- to the pool.
--
-- KEYS[1] tickets  hash  ticket -> "state:user:issued_at_ms:expires_at_ms"
-- KEYS[2] acct     hash  counters
-- KEYS[3] expiry   zset  pending ticket -> expires_at_ms
-- ARGV[1] limit    most tickets released by one call, 1..10000
--
-- Replies: released_count
local limit = tonumber(ARGV[1])
if not limit or limit < 1 or limit > 10000 then
  return redis.error_reply('ERR sweep: bad arguments')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
local n = 0
for _, ticket in ipairs(due) do
  local rec = redis.call('HGET', KEYS[1], ticket) or ''
  local state, user, issued, exp = string.match(rec, '^(%a):([%w_-]+):(%d+):(%d+)$')
  redis.call('ZREM', KEYS[3], ticket)
  if state == 'p' then
    redis.call('HSET', KEYS[1], ticket, 'r:' .. user .. ':' .. issued .. ':' .. exp)
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[2], 'pending', -n)
  redis.call('HINCRBY', KEYS[2], 'avail', n)
  redis.call('HINCRBY', KEYS[2], 'released', n)
end
return n
