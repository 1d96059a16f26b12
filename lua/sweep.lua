-- sweep: release pending tickets whose TTL has passed; their units return
-- to the pool.
--
-- KEYS[1] tickets  hash    records of tickets minted before records moved (records.lua)
-- KEYS[2] acct     hash    counters
-- KEYS[3] expiry   zset    pending ticket -> expires_at_ms, from before the
--                          cursor (admit no longer writes it; drained here)
-- KEYS[4] wh       hash    per-warehouse counters; the unit returns to its own warehouse
-- KEYS[5] orders   stream  the order stream, in issue order
-- KEYS[6] swept    string  the sweep cursor: id of the last entry passed
-- KEYS[7] winners  hash    user -> record (or, for an older ticket, the ticket)
-- ARGV[1] limit    most stream entries judged (and tickets released) by one call, 1..10000
--
-- Replies: {released_count, next, wait_ms}
--   next = "more": the call stopped at its limit; sweep again now
--          "due":  the first pending ticket left falls due in wait_ms
--          "none": no pending ticket is left after the cursor; a ticket
--                  issued from now on falls due one TTL after its win
--   wait_ms is 0 unless next is "due".
--
-- The walk: the stream is in issue order and a sale's tickets share one
-- TTL, so tickets fall due in stream order. From the cursor, each entry's
-- ticket is judged: confirmed or released (or unknown) -> pass it; pending
-- and due -> release it and pass it; pending and not yet due -> stop there.
-- The cursor moves past every entry passed, so each entry is judged once
-- after it falls due. If the TTL was shortened mid-sale, a later ticket may
-- fall due before an earlier one and waits for it: released late by at most
-- the difference, never early, never lost. The consumer's trim keeps every
-- entry after the cursor (orders_trim.lua), so no pending ticket leaves the
-- walk's reach. The first read is one entry: a sweep with nothing due reads
-- one entry and one record. The reply says when the next ticket falls due,
-- so a node need not call again before then (src/lifecycle.rs).
local limit = tonumber(ARGV[1])
if not limit or limit < 1 or limit > 10000 then
  return redis.error_reply('ERR sweep: bad arguments')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n, back = 0, {}
-- The expiry of the first pending ticket found not yet due.
local next_due = nil

-- Releases the ticket if it is pending and due. False when it is pending
-- and not yet due (the walk stops there); true otherwise, a ticket without
-- a readable record included (nothing to release, nothing to wait for).
local function release(ticket)
  local rec = find_ticket(KEYS[7], KEYS[1], ticket)
  if not rec or rec.state ~= 'p' then return true end
  local exp = tonumber(rec.exp)
  if exp > now then
    if not next_due or exp < next_due then next_due = exp end
    return false
  end
  rec.put('r')
  back[rec.w] = (back[rec.w] or 0) + 1
  n = n + 1
  return true
end

-- The index of sales admitted before the cursor existed.
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
for _, ticket in ipairs(due) do
  redis.call('ZREM', KEYS[3], ticket)
  release(ticket)
end
local more = #due == limit
if not more then
  -- The index's next entry (it holds pending tickets only).
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if first[2] then
    local exp = tonumber(first[2])
    if not next_due or exp < next_due then next_due = exp end
  end
end

-- The walk.
local cursor = redis.call('GET', KEYS[6]) or '0-0'
local moved, judged, chunk, stop = false, 0, 1, false
while not stop and judged < limit do
  local entries = redis.call('XRANGE', KEYS[5], '(' .. cursor, '+', 'COUNT', math.min(chunk, limit - judged))
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local f, ticket = e[2], nil
    for i = 1, #f, 2 do
      if f[i] == 'ticket' then ticket = f[i + 1]; break end
    end
    if ticket and not release(ticket) then stop = true; break end
    cursor, moved, judged = e[1], true, judged + 1
  end
  chunk = 100
end
if moved then redis.call('SET', KEYS[6], cursor) end
if not stop and judged >= limit then more = true end

if n > 0 then
  redis.call('HINCRBY', KEYS[2], 'pending', -n)
  redis.call('HINCRBY', KEYS[2], 'avail', n)
  redis.call('HINCRBY', KEYS[2], 'released', n)
  -- One write per warehouse the released units return to.
  for w, k in pairs(back) do redis.call('HINCRBY', KEYS[4], w .. ':sold', -k) end
end
if more then return {n, 'more', 0} end
if next_due then return {n, 'due', math.max(0, next_due - now)} end
return {n, 'none', 0}
