-- sweep: release pending tickets whose TTL has passed; their units return
-- to the pool.
--
-- KEYS[1] tickets  hash  ticket -> "state:user:issued_at_ms:expires_at_ms[:warehouse]"
-- KEYS[2] acct     hash  counters
-- KEYS[3] expiry   zset  pending ticket -> expires_at_ms
-- KEYS[4] wh       hash  per-warehouse counters; the unit returns to its own warehouse
-- (the record's 5th field; a record without one is of warehouse `default`)
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
local n, back = 0, {}
for _, ticket in ipairs(due) do
  local rec = redis.call('HGET', KEYS[1], ticket) or ''
  local state, user, issued, exp, w = string.match(rec, '^(%a):([%w_-]+):(%d+):(%d+):?([%w_-]*)$')
  redis.call('ZREM', KEYS[3], ticket)
  if state == 'p' then
    local wsuffix = (w ~= '' and (':' .. w)) or ''
    if w == '' then w = 'default' end
    redis.call('HSET', KEYS[1], ticket, 'r:' .. user .. ':' .. issued .. ':' .. exp .. wsuffix)
    back[w] = (back[w] or 0) + 1
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[2], 'pending', -n)
  redis.call('HINCRBY', KEYS[2], 'avail', n)
  redis.call('HINCRBY', KEYS[2], 'released', n)
  -- One write per warehouse the released units return to.
  for w, k in pairs(back) do redis.call('HINCRBY', KEYS[4], w .. ':sold', -k) end
end
return n
