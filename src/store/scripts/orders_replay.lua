-- replay: move one dead letter back into the order stream.
--
-- The XADD to the order stream and the XDEL from the dead-letter stream
-- happen together, so a replayed entry exists in exactly one of the two.
-- The original order entry (acknowledged when it was dead-lettered) is
-- deleted in the same step, so the ticket keeps exactly one entry in the
-- order stream (DESIGN §2).
-- The new entry carries the original fields, without the dead letter's
-- error/attempts/original_id, plus `replay_of` = the original entry id, so
-- readers of the stream can tell a replay from a new win of the same ticket.
--
-- KEYS[1]  order stream        P:{S}:orders
-- KEYS[2]  dead-letter stream  P:{S}:orders:dead
-- ARGV[1]  dead-letter id
--
-- Replies:
--   the new order entry id
--   nil when there is no such dead letter

local stream, dead, id = KEYS[1], KEYS[2], ARGV[1]

local stream_type = redis.call('TYPE', stream).ok
if stream_type ~= 'none' and stream_type ~= 'stream' then
  return redis.error_reply('WRONGTYPE ' .. stream .. ' is not a stream')
end
local entry = redis.call('XRANGE', dead, id, id)
if #entry == 0 then
  return false
end

local args = {stream, '*'}
local fields = entry[1][2]
local original = nil
for i = 1, #fields, 2 do
  local k = fields[i]
  if k == 'original_id' then
    original = fields[i + 1]
  elseif k ~= 'error' and k ~= 'attempts' and k ~= 'replay_of' then
    args[#args + 1] = k
    args[#args + 1] = fields[i + 1]
  end
end
if original then
  args[#args + 1] = 'replay_of'
  args[#args + 1] = original
end
local new_id = redis.call('XADD', unpack(args))
redis.call('XDEL', dead, id)
if original then
  redis.call('XDEL', stream, original)
end
return new_id
