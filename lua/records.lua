-- records: where a win's record lives. Prepended to the scripts that read
-- or change records (admit, confirm, release, sweep); it has no KEYS or
-- ARGV of its own and writes only through the functions its caller calls.
--
-- One record per win. A ticket `<tag>-<user>` (tag: 16 lowercase hex)
-- keeps it in the winners hash, under its user:
--   winners  user -> "state:tag:issued_at_ms:expires_at_ms:warehouse"
-- so the one-ticket-per-user check, the buyer's lookup and the order
-- backend's lookup by ticket all read one field, and a win writes one.
-- A ticket of 32 hex (minted before records moved) keeps its record in the
-- tickets hash, and its user's winners entry is the bare ticket:
--   tickets  ticket -> "state:user:issued_at_ms:expires_at_ms[:warehouse]"
--   winners  user -> ticket
-- state is p (pending), c (confirmed) or r (released); an older record
-- without a warehouse ships from `default`.

local TAGGED = '^(' .. string.rep('%x', 16) .. ')%-([%w_-]+)$'

-- A winners value read as a record: state, tag, issued, expires, warehouse;
-- nothing for the bare ticket of an older win.
local function winner_record(v)
  return string.match(v, '^(%a):(%x+):(%d+):(%d+):([%w_-]+)$')
end

-- The record of `ticket`: a table {state, user, issued, exp, w} with
-- put(state), which rewrites it in another state; nil when there is none;
-- false when a record in the tickets hash cannot be read. A ticket that
-- names its holder is looked for under them first, then in the tickets hash.
local function find_ticket(winners, tickets, ticket)
  local tag, user = string.match(ticket, TAGGED)
  if tag then
    local state, t, issued, exp, w = winner_record(redis.call('HGET', winners, user) or '')
    if t == tag then
      local r = {state = state, user = user, issued = issued, exp = exp, w = w}
      r.put = function(s)
        redis.call('HSET', winners, user, s .. ':' .. tag .. ':' .. issued .. ':' .. exp .. ':' .. w)
      end
      return r
    end
    -- Not under its holder: look where older records are.
  end
  local rec = redis.call('HGET', tickets, ticket)
  if not rec then return nil end
  local state, user, issued, exp, w =
    string.match(rec, '^(%a):([%w_-]+):(%d+):(%d+):?([%w_-]*)$')
  if not state then return false end
  local wsuffix = (w ~= '' and (':' .. w)) or ''
  local r = {state = state, user = user, issued = issued, exp = exp, w = (w ~= '' and w) or 'default'}
  r.put = function(s)
    redis.call('HSET', tickets, ticket, s .. ':' .. user .. ':' .. issued .. ':' .. exp .. wsuffix)
  end
  return r
end
