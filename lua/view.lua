-- view: a sale's settings and counters, for a node's periodic refresh.
-- Read-only, and O(1) whatever the fleet size: the cross-checks of
-- account.lua read every lease record, and run by every node several times
-- a second they would cost the store the square of the fleet. Nodes run
-- account.lua only now and then (see src/sales.rs).
--
-- KEYS[1] cfg     hash  sale settings
-- KEYS[2] acct    hash  counters
--
-- Replies:
--   {"unknown_sale"}
--   {"ok", now_ms, starts, ends, closed, ttl, elig, elig_version,
--    total, avail, leased, pending, confirmed, released, enqueued}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c = redis.call('HMGET', KEYS[1], 'starts', 'ends', 'closed', 'ttl', 'elig', 'elig_version')
local a = redis.call('HMGET', KEYS[2], 'total', 'avail', 'leased', 'pending', 'confirmed', 'released', 'enqueued')
for i = 1, 7 do a[i] = tonumber(a[i]) or 0 end
return {'ok', now, tonumber(c[1]), tonumber(c[2]), tonumber(c[3]) or 0, tonumber(c[4]),
  c[5] or 'open', tonumber(c[6]) or 0, a[1], a[2], a[3], a[4], a[5], a[6], a[7]}
