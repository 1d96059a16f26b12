-- account: a consistent snapshot of a sale's settings and accounting, with
-- the invariants of DESIGN §2 checked against the underlying records.
-- Read-only.
--
-- KEYS[1] cfg     hash  sale settings
-- KEYS[2] acct    hash  counters
-- KEYS[3] leases  hash  node -> "units:expires_at_ms:epoch"
-- KEYS[4] expiry  zset  pending tickets
--
-- Replies:
--   {"unknown_sale"}
--   {"ok", now_ms, starts, ends, closed, ttl, elig, elig_version,
--    total, avail, leased, pending, confirmed, released, enqueued,
--    balanced (1|0), lease_units_sum, pending_records}
--   balanced: total = avail + leased + pending + confirmed, every counter
--   >= 0, leased equals the sum of live lease records, pending equals the
--   pending-ticket index, and every enqueued order is pending, confirmed or
--   released.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c = redis.call('HMGET', KEYS[1], 'starts', 'ends', 'closed', 'ttl', 'elig', 'elig_version')
local a = redis.call('HMGET', KEYS[2], 'total', 'avail', 'leased', 'pending', 'confirmed', 'released', 'enqueued')
for i = 1, 7 do a[i] = tonumber(a[i]) or 0 end
local sum = 0
local leases = redis.call('HVALS', KEYS[3])
for _, v in ipairs(leases) do sum = sum + (tonumber(string.match(v, '^(%d+):')) or 0) end
local pending_records = redis.call('ZCARD', KEYS[4])
local total, avail, leased, pending, confirmed, released, enqueued =
  a[1], a[2], a[3], a[4], a[5], a[6], a[7]
local balanced = 0
if total == avail + leased + pending + confirmed and avail >= 0 and leased >= 0
   and pending >= 0 and confirmed >= 0 and leased == sum and pending == pending_records
   and enqueued == pending + confirmed + released then
  balanced = 1
end
return {'ok', now, tonumber(c[1]), tonumber(c[2]), tonumber(c[3]) or 0, tonumber(c[4]),
  c[5] or 'open', tonumber(c[6]) or 0, total, avail, leased, pending, confirmed, released,
  enqueued, balanced, sum, pending_records}
