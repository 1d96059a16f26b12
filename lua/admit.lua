-- admit: commit a batch of winners against this node's lease, atomically
-- with their order-stream entries (DESIGN §1 Queue, §2 No lost winner).
--
-- KEYS[1] cfg       hash    sale settings (starts, ends, closed, ttl, elig)
-- KEYS[2] acct      hash    counters
-- KEYS[3] leases    hash    node -> "units:expires_at_ms:epoch"
-- KEYS[4] winners   hash    user -> record "p:tag:issued_at_ms:expires_at_ms:warehouse"
--                           (records.lua; an older win's entry is its bare ticket)
-- KEYS[5] tickets   hash    records of tickets minted before records moved (read only)
-- KEYS[6] eligible  set     users allowed when elig = list
-- KEYS[7] orders    stream  one entry per win (contract fields)
-- KEYS[8] wh        hash    per-warehouse counters "<w>:total", "<w>:sold", "<w>:conf"
-- KEYS[9] wcfg      hash    warehouse spec: list, r:<region>, default_order
-- KEYS[10] digests string  8 bytes per win, in the order wins are counted
-- ARGV[1] sale id   (written into stream entries)
-- ARGV[2] node id
-- ARGV[3] epoch     lease epoch the units were taken under
-- ARGV[4] n         number of candidates, 1..1000
-- ARGV[5..4+3n]     n triples: user, tag (16 lowercase hex, the node's random part of
--                   the ticket `<tag>-<user>`), ship_to region ("" for none)
-- ARGV[5+3n]        the candidates' digests, 8 bytes each, in order (the
--                   node computes them: no hashing in Redis)
--
-- Replies:
--   {"unknown_sale"} | {"not_started"} | {"ended"} | {"closed"}   (no write)
--   {"ok", lease_units_left, digests_len, issued_at_ms, expires_at_ms, warehouse,
--    then one string per candidate, in order}
--     digests_len: the winners digest's length in bytes after this call (the
--     batch's wins are its last 8 x wins bytes)
--     issued_at_ms, expires_at_ms: the times of every win of this call
--     warehouse: where every win of this call ships from when the sale has one
--     warehouse, else ""
--   Per candidate (one string each, so a batch's reply costs Redis one
--   element per buyer; a win, the common case, is one character):
--     "w"                                  won: ticket `<tag>-<user>`, times
--                                          and warehouse from the header, cross 0
--     "w:<warehouse>:<cross>"              won, sale with several warehouses;
--                                          cross = 1 when the unit ships from a
--                                          warehouse other than the buyer's first
--     "r:<ticket>:<issued>:<expires>:<warehouse>"
--                                          replay: the user already holds this
--                                          ticket (nothing written)
--     "not_eligible"                       the sale has a list and the user is not on it
--     "fenced"                             the node's lease of this epoch is gone or expired
--     "no_units"                           the lease has no unit left for this candidate
--                                          (or, against the invariant, no warehouse
--                                          has an unsold unit)
--
-- Checks come before writes: the window and the argument shape are checked
-- for the whole batch, then each candidate is judged before it is written.
--
-- Warehouses (DESIGN §7): leases are fungible units; each winner is given
-- the first warehouse of their region's order (else the default order,
-- else the one with most unsold units) that has an unsold unit, else any
-- with one. unsold(w) = total - sold, read once per batch; the counters
-- are written once per warehouse per batch, and the warehouse rides in the
-- ticket record and the stream entry, so a single-warehouse sale does no
-- extra write per winner.
local sale, node, epoch, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if not sale or sale == '' or not node or node == '' or not epoch or not n
   or n < 1 or n > 1000 or #ARGV ~= 5 + 3 * n or #ARGV[5 + 3 * n] ~= 8 * n then
  return redis.error_reply('ERR admit: bad arguments')
end
local digests = ARGV[5 + 3 * n]
for i = 0, n - 1 do
  local tag = ARGV[6 + 3 * i]
  if #tag ~= 16 or not string.find(tag, '^[0-9a-f]+$') then
    return redis.error_reply('ERR admit: bad arguments')
  end
end
-- Every sale's cfg has starts, ends and ttl (put_sale.lua): no starts, no sale.
local c = redis.call('HMGET', KEYS[1], 'starts', 'ends', 'closed', 'ttl', 'elig')
if not c[1] then return {'unknown_sale'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if c[3] == '1' then return {'closed'} end
if now < tonumber(c[1]) then return {'not_started'} end
if now >= tonumber(c[2]) then return {'ended'} end
local ttl = tonumber(c[4])
local list_only = c[5] == 'list'

local units, lease_exp = -1, 0
local cur = redis.call('HGET', KEYS[3], node)
if cur then
  local u, e, ep = string.match(cur, '^(%d+):(%d+):(%d+)$')
  if u and tonumber(ep) == epoch and tonumber(e) > now then
    units, lease_exp = tonumber(u), e
  end
end

-- Warehouses: read once per batch (reads only; written after the loop).
-- One warehouse (or a sale from before warehouses: `default`) needs no
-- counter read: its unsold units are available + leased, so a lease with
-- a unit left implies one. Several: read their counters and the orders of
-- the regions this batch names, in one call each.
local wtxt = redis.call('HGET', KEYS[9], 'list') or 'default'
local single = not string.find(wtxt, ',', 1, true)
local wlist, unsold, taken, orders = {}, {}, {}, {}
if not single then
  for w in string.gmatch(wtxt, '[^,]+') do wlist[#wlist + 1] = w end
  local fields = {}
  for j, w in ipairs(wlist) do
    fields[2 * j - 1] = w .. ':total'; fields[2 * j] = w .. ':sold'
  end
  local v = redis.call('HMGET', KEYS[8], unpack(fields))
  for j, w in ipairs(wlist) do
    unsold[w] = (tonumber(v[2 * j - 1]) or 0) - (tonumber(v[2 * j]) or 0)
  end
  local okeys, seen = {'default_order'}, {}
  for i = 0, n - 1 do
    local r = ARGV[7 + 3 * i]
    if r ~= '' and not seen[r] then seen[r] = true; okeys[#okeys + 1] = 'r:' .. r end
  end
  local ov = redis.call('HMGET', KEYS[9], unpack(okeys))
  for j, key in ipairs(okeys) do
    if ov[j] then
      local o = {}
      for w in string.gmatch(ov[j], '[^,]+') do o[#o + 1] = w end
      orders[key] = o
    end
  end
end
-- The warehouse for one winner and whether it is a cross-shipment: the
-- first of the region's order (else the default order) with an unsold
-- unit, else the warehouse with most unsold units.
local function assign(region)
  if single then return wtxt, 0 end
  local o = orders['r:' .. region] or orders['default_order'] or {}
  for j, w in ipairs(o) do
    if (unsold[w] or 0) > 0 then return w, (j > 1) and 1 or 0 end
  end
  local best, most = nil, 0
  for _, w in ipairs(wlist) do
    if unsold[w] > most then best, most = w, unsold[w] end
  end
  return best, (best and #o > 0) and 1 or 0
end

-- Per winner the script makes one call, its XADD, and writes one record.
-- The winners hash holds the record under the user (records.lua), so the
-- "one ticket per user" check is one HMGET for the whole batch and the
-- records one HSET; a sale with a list reads it with one SMISMEMBER;
-- everything a batch shares (times, record tail, stream values as strings)
-- is built once. There is no expiry index: the order stream is in issue
-- order, so the sweeper walks it (sweep.lua).
local exp = now + ttl
local now_s, exp_s = tostring(now), tostring(exp)
local times = ':' .. now_s .. ':' .. exp_s .. ':'
-- A one-warehouse sale's records share their whole tail.
local tail = single and (times .. wtxt) or nil
local users = {}
for i = 0, n - 1 do users[i + 1] = ARGV[5 + 3 * i] end
local held_by = redis.call('HMGET', KEYS[4], unpack(users))
local allowed = list_only and redis.call('SMISMEMBER', KEYS[6], unpack(users)) or nil
local out, o = {'ok', 0, 0, now, exp, single and wtxt or ''}, 6
local wins = 0
local won_at, wfields, f = {}, {}, 0
-- A user twice in one batch: the second is a replay of the first's win.
local won_here = {}
local function refuse(code)
  o = o + 1; out[o] = code
end
-- `held`: the user's winners entry (a record, or an older bare ticket),
-- or the ticket this batch just gave them.
local function replay(user, held)
  local here = won_here[held]
  local ticket, issued, hexp, hw = held, now, exp, here
  if not here then
    local _, tag
    _, tag, issued, hexp, hw = winner_record(held)
    if tag then
      ticket = tag .. '-' .. user
    else
      local rec = redis.call('HGET', KEYS[5], held) or ''
      _, _, issued, hexp, hw = string.match(rec, '^(%a):([%w_-]+):(%d+):(%d+):?([%w_-]*)$')
    end
  end
  o = o + 1
  out[o] = 'r:' .. ticket .. ':' .. (tonumber(issued) or 0) .. ':' .. (tonumber(hexp) or 0)
    .. ':' .. ((hw ~= nil and hw ~= '' and hw) or 'default')
end
local won_by = {}
for i = 0, n - 1 do
  local user, tag, ship_to = users[i + 1], ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  -- The order of DESIGN §3: a held ticket answers before eligibility and
  -- stock.
  local held = held_by[i + 1] or won_by[user]
  if held then
    replay(user, held)
  elseif allowed and allowed[i + 1] == 0 then
    refuse('not_eligible')
  elseif units < 0 then
    refuse('fenced')
  else
    local w, cross
    if units > 0 then w, cross = assign(ship_to) end
    if not w then
      -- units == 0, or no warehouse has an unsold unit although the lease
      -- has one: the counters disagree, so sell nothing rather than guess.
      refuse('no_units')
    else
      units = units - 1
      wins = wins + 1
      if not single then unsold[w] = unsold[w] - 1 end
      taken[w] = (taken[w] or 0) + 1
      local ticket = tag .. '-' .. user
      won_by[user], won_here[ticket] = ticket, w
      wfields[f + 1] = user; wfields[f + 2] = 'p:' .. tag .. (tail or (times .. w))
      f = f + 2
      redis.call('XADD', KEYS[7], '*', 'ticket', ticket, 'sale', sale, 'user', user,
        'issued_at_ms', now_s, 'expires_at_ms', exp_s, 'node', node, 'warehouse', w)
      won_at[wins] = i
      o = o + 1
      if single then out[o] = 'w' else out[o] = 'w:' .. w .. ':' .. cross end
    end
  end
end
if wins > 0 then
  redis.call('HSET', KEYS[4], unpack(wfields))
  redis.call('HSET', KEYS[3], node, units .. ':' .. lease_exp .. ':' .. epoch)
  redis.call('HINCRBY', KEYS[2], 'leased', -wins)
  redis.call('HINCRBY', KEYS[2], 'pending', wins)
  redis.call('HINCRBY', KEYS[2], 'enqueued', wins)
  -- Per-warehouse counters: one write per warehouse used by this batch.
  for w, k in pairs(taken) do redis.call('HINCRBY', KEYS[8], w .. ':sold', k) end
  -- One append per batch: the digest grows with 'enqueued', in step. When
  -- every candidate won (the common case) their digests are the argument
  -- as sent.
  local d = digests
  if wins < n then
    local parts = {}
    for j = 1, wins do
      parts[j] = string.sub(digests, 8 * won_at[j] + 1, 8 * won_at[j] + 8)
    end
    d = table.concat(parts)
  end
  out[3] = redis.call('APPEND', KEYS[10], d)
else
  out[3] = redis.call('STRLEN', KEYS[10])
end
out[2] = math.max(units, 0)
return out
