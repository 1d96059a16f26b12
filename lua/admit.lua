-- admit: commit a batch of winners against this node's lease, atomically
-- with their order-stream entries (DESIGN §1 Queue, §2 No lost winner).
--
-- KEYS[1] cfg       hash    sale settings (starts, ends, closed, ttl, elig)
-- KEYS[2] acct      hash    counters
-- KEYS[3] leases    hash    node -> "units:expires_at_ms:epoch"
-- KEYS[4] winners   hash    user -> ticket
-- KEYS[5] tickets   hash    ticket -> "state:user:issued_at_ms:expires_at_ms", state p|c|r
-- KEYS[6] expiry    zset    pending ticket -> expires_at_ms
-- KEYS[7] eligible  set     users allowed when elig = list
-- KEYS[8] orders    stream  one entry per win (contract fields)
-- KEYS[9] digests   string  8 bytes per win, in the order wins are counted
-- ARGV[1] sale id   (written into stream entries)
-- ARGV[2] node id
-- ARGV[3] epoch     lease epoch the units were taken under
-- ARGV[4] n         number of candidates, 1..1000
-- ARGV[5..4+2n]     n pairs: user, proposed ticket id
-- ARGV[5+2n]        the candidates' digests, 8 bytes each, in order (the
--                   node computes them: no hashing in Redis)
--
-- Replies:
--   {"unknown_sale"} | {"not_started"} | {"ended"} | {"closed"}   (no write)
--   {"ok", lease_units_left, digests_len, then per candidate: code, ticket, issued_at_ms, expires_at_ms}
--     digests_len: the winners digest's length in bytes after this call (the
--     batch's wins are its last 8 x wins bytes)
--     code "won"          new ticket recorded, pending, entry appended to the stream
--     code "replay"       the user already holds `ticket` (nothing written)
--     code "not_eligible" the sale has a list and the user is not on it
--     code "fenced"       the node's lease of this epoch is gone or expired
--     code "no_units"     the lease has no unit left for this candidate
--   For codes other than won/replay, ticket is "" and the times are 0.
--
-- Checks come before writes: the window and the argument shape are checked
-- for the whole batch, then each candidate is judged before it is written.
local sale, node, epoch, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if not sale or sale == '' or not node or node == '' or not epoch or not n
   or n < 1 or n > 1000 or #ARGV ~= 5 + 2 * n or #ARGV[5 + 2 * n] ~= 8 * n then
  return redis.error_reply('ERR admit: bad arguments')
end
local digests = ARGV[5 + 2 * n]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sale'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c = redis.call('HMGET', KEYS[1], 'starts', 'ends', 'closed', 'ttl', 'elig')
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

local out = {'ok', 0, 0}
local wins = 0
local won_digests = {}
for i = 0, n - 1 do
  local user, proposed = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  local held = redis.call('HGET', KEYS[4], user)
  if held then
    local rec = redis.call('HGET', KEYS[5], held) or ''
    local _, _, issued, exp = string.match(rec, '^(%a):([%w_-]+):(%d+):(%d+)$')
    out[#out + 1] = 'replay'; out[#out + 1] = held
    out[#out + 1] = tonumber(issued) or 0; out[#out + 1] = tonumber(exp) or 0
  elseif list_only and redis.call('SISMEMBER', KEYS[7], user) == 0 then
    out[#out + 1] = 'not_eligible'; out[#out + 1] = ''; out[#out + 1] = 0; out[#out + 1] = 0
  elseif units < 0 then
    out[#out + 1] = 'fenced'; out[#out + 1] = ''; out[#out + 1] = 0; out[#out + 1] = 0
  elseif units == 0 then
    out[#out + 1] = 'no_units'; out[#out + 1] = ''; out[#out + 1] = 0; out[#out + 1] = 0
  else
    local exp = now + ttl
    units = units - 1
    wins = wins + 1
    redis.call('HSET', KEYS[4], user, proposed)
    redis.call('HSET', KEYS[5], proposed, 'p:' .. user .. ':' .. now .. ':' .. exp)
    redis.call('ZADD', KEYS[6], exp, proposed)
    redis.call('XADD', KEYS[8], '*', 'ticket', proposed, 'sale', sale, 'user', user,
      'issued_at_ms', now, 'expires_at_ms', exp, 'node', node)
    won_digests[wins] = string.sub(digests, 8 * i + 1, 8 * i + 8)
    out[#out + 1] = 'won'; out[#out + 1] = proposed; out[#out + 1] = now; out[#out + 1] = exp
  end
end
if wins > 0 then
  redis.call('HSET', KEYS[3], node, units .. ':' .. lease_exp .. ':' .. epoch)
  redis.call('HINCRBY', KEYS[2], 'leased', -wins)
  redis.call('HINCRBY', KEYS[2], 'pending', wins)
  redis.call('HINCRBY', KEYS[2], 'enqueued', wins)
  -- One append per batch: the digest grows with 'enqueued', in step.
  out[3] = redis.call('APPEND', KEYS[9], table.concat(won_digests))
else
  out[3] = redis.call('STRLEN', KEYS[9])
end
out[2] = math.max(units, 0)
return out
