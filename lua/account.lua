-- account: a consistent snapshot of a sale's settings and accounting, with
-- the invariants of DESIGN §2 checked against the underlying records.
-- Read-only.
--
-- KEYS[1] cfg     hash  sale settings
-- KEYS[2] acct    hash  counters
-- KEYS[3] leases  hash  node -> "units:expires_at_ms:epoch"
-- KEYS[4] wh      hash  per-warehouse counters "<w>:total", "<w>:sold", "<w>:conf"
-- KEYS[5] wcfg    hash  warehouse spec (field list)
--
-- Replies:
--   {"unknown_sale"}
--   {"ok", now_ms, starts, ends, closed, ttl, elig, elig_version,
--    total, avail, leased, pending, confirmed, released, enqueued,
--    balanced (1|0), lease_units_sum,
--    nw, then per warehouse: id, total, unsold, pending, confirmed,
--    lease_records}
--   balanced: total = avail + leased + pending + confirmed, every counter
--   >= 0, leased equals the sum of live lease records, and every enqueued
--   order is pending, confirmed or released; and per warehouse (DESIGN §7)
--   total = unsold + pending + confirmed with each >= 0, Σ unsold = avail +
--   leased, Σ pending = pending, Σ confirmed = confirmed, Σ total = total.
--   A sale created before warehouses existed shows one, `default`, read off
--   the sale counters. (Pending records against the sweeper's reach are
--   checked by the audit, which reads every record: `bigtap sale audit`.)
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c = redis.call('HMGET', KEYS[1], 'starts', 'ends', 'closed', 'ttl', 'elig', 'elig_version')
local a = redis.call('HMGET', KEYS[2], 'total', 'avail', 'leased', 'pending', 'confirmed', 'released', 'enqueued')
for i = 1, 7 do a[i] = tonumber(a[i]) or 0 end
local sum = 0
local leases = redis.call('HVALS', KEYS[3])
for _, v in ipairs(leases) do sum = sum + (tonumber(string.match(v, '^(%d+):')) or 0) end
local total, avail, leased, pending, confirmed, released, enqueued =
  a[1], a[2], a[3], a[4], a[5], a[6], a[7]
local wlist = {}
for w in string.gmatch(redis.call('HGET', KEYS[5], 'list') or '', '[^,]+') do
  wlist[#wlist + 1] = w
end
local wout = {}
local wok = true
if #wlist == 0 then
  wout = {1, 'default', total, avail + leased, pending, confirmed}
else
  local fields = {}
  for j, w in ipairs(wlist) do
    fields[3 * j - 2] = w .. ':total'; fields[3 * j - 1] = w .. ':sold'; fields[3 * j] = w .. ':conf'
  end
  local v = redis.call('HMGET', KEYS[4], unpack(fields))
  local s_total, s_unsold, s_pending, s_conf = 0, 0, 0, 0
  wout[1] = #wlist
  for j, w in ipairs(wlist) do
    local wt, ws, wc = tonumber(v[3 * j - 2]) or 0, tonumber(v[3 * j - 1]) or 0, tonumber(v[3 * j]) or 0
    local wu, wp = wt - ws, ws - wc
    if wu < 0 or wp < 0 or wc < 0 or wt ~= wu + wp + wc then wok = false end
    s_total, s_unsold, s_pending, s_conf = s_total + wt, s_unsold + wu, s_pending + wp, s_conf + wc
    wout[#wout + 1] = w; wout[#wout + 1] = wt; wout[#wout + 1] = math.max(wu, 0)
    wout[#wout + 1] = math.max(wp, 0); wout[#wout + 1] = wc
  end
  if s_total ~= a[1] or s_unsold ~= a[2] + a[3] or s_pending ~= a[4] or s_conf ~= a[5] then
    wok = false
  end
end
local balanced = 0
if total == avail + leased + pending + confirmed and avail >= 0 and leased >= 0
   and pending >= 0 and confirmed >= 0 and leased == sum
   and enqueued == pending + confirmed + released and wok then
  balanced = 1
end
-- Last, after the warehouses (unpack expands only in the last place).
wout[#wout + 1] = #leases
return {'ok', now, tonumber(c[1]), tonumber(c[2]), tonumber(c[3]) or 0, tonumber(c[4]),
  c[5] or 'open', tonumber(c[6]) or 0, total, avail, leased, pending, confirmed, released,
  enqueued, balanced, sum, unpack(wout)}
