-- move_end: step 3 of a move: close its journal entry, as done (the other
-- sale was credited) or undone (it could not be: the units come back to
-- this sale and its warehouse).
--
-- KEYS[1] acct       hash  counters
-- KEYS[2] wh         hash  per-warehouse counters
-- KEYS[3] wcfg       hash  warehouse spec (field list)
-- KEYS[4] moves_out  hash  move id -> "state:to_sale:units:warehouse"
-- ARGV[1] move id
-- ARGV[2] "done" | "undone"
--
-- Replies: {"unknown"} | {"already", state} (no write) | {"ok"}
local id, outcome = ARGV[1], ARGV[2]
if not id or id == '' or (outcome ~= 'done' and outcome ~= 'undone') then
  return redis.error_reply('ERR move_end: bad arguments')
end
local rec = redis.call('HGET', KEYS[4], id)
if not rec then return {'unknown'} end
local state, to, units, w = string.match(rec, '^(%a+):([%w_-]+):(%d+):([%w_-]+)$')
if not state then return redis.error_reply('ERR move_end: unreadable journal entry') end
if state ~= 'out' then return {'already', state} end
if outcome == 'undone' then
  redis.call('HINCRBY', KEYS[1], 'total', units)
  redis.call('HINCRBY', KEYS[1], 'avail', units)
  if redis.call('HEXISTS', KEYS[3], 'list') == 1 then
    redis.call('HINCRBY', KEYS[2], w .. ':total', units)
  end
end
redis.call('HSET', KEYS[4], id, outcome .. ':' .. to .. ':' .. units .. ':' .. w)
return {'ok'}
