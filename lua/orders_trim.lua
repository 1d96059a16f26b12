-- trim: remove order entries every consumer group is finished with.
--
-- An entry may go once every group has read it (its id is at or below the
-- group's last-delivered-id) and no group still holds it pending. The floor
-- is therefore the smallest, over all groups, of the oldest pending id and
-- the last-delivered-id; XTRIM MINID removes only ids below it. The floor
-- itself is kept (one spare entry) so no id arithmetic is needed. A stream
-- without groups is never trimmed: nobody has consumed anything yet.
--
-- The sweeper walks the same stream to find tickets that fall due
-- (sweep.lua), so the floor is also at most its cursor: an entry the
-- sweeper has not passed may be a pending ticket still to be released.
-- Before the first sweep the cursor is absent and nothing is trimmed.
--
-- KEYS[1]  order stream  P:{S}:orders
-- KEYS[2]  sweep cursor  P:{S}:swept (string: id of the last entry passed)
--
-- Replies:
--   the number of entries removed

local stream = KEYS[1]
if redis.call('EXISTS', stream) == 0 then
  return 0
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end

local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups == 0 then
  return 0
end
local floor = nil
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then
      name = g[i + 1]
    elseif g[i] == 'last-delivered-id' then
      last = g[i + 1]
    end
  end
  local keep = last
  local summary = redis.call('XPENDING', stream, name)
  if summary[1] > 0 and less(summary[2], keep) then
    keep = summary[2]
  end
  if floor == nil or less(keep, floor) then
    floor = keep
  end
end
local swept = redis.call('GET', KEYS[2])
if not swept then
  return 0
end
if less(swept, floor) then
  floor = swept
end
return redis.call('XTRIM', stream, 'MINID', floor)
