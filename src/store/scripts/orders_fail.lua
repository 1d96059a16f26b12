-- fail: record one failed delivery attempt of a pending order entry, and
-- dead-letter the entry once it has used up its attempts.
--
-- The dead-letter XADD, the XACK and the counter cleanup happen here together,
-- so an entry is always either pending in the order stream or in the
-- dead-letter stream, never in both and never in neither.
--
-- KEYS[1]  order stream        P:{S}:orders
-- KEYS[2]  dead-letter stream  P:{S}:orders:dead
-- KEYS[3]  attempts hash       P:{S}:orders:attempts   (entry id -> attempts)
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name (the caller)
-- ARGV[3]  entry id
-- ARGV[4]  attempts allowed (>= 1)
-- ARGV[5]  error text of this attempt
-- ARGV[6]  mode: "count" - the attempt reached the sink and counts;
--                "free"  - it did not reach the sink: keep the entry, do not count;
--                "dead"  - the entry can never be delivered: dead-letter it now.
--
-- Replies:
--   {"retry", attempts}           still the caller's; its idle time was reset so
--                                 no other consumer claims it during the backoff
--   {"dead", attempts, dead_id}   moved to the dead-letter stream and acknowledged
--   {"gone"}                      not pending any more (acknowledged elsewhere, or
--                                 deleted from the stream; a stale pending entry
--                                 is acknowledged)
--   {"lost", owner}               pending, but another consumer claimed it: the
--                                 caller must stop working on it

local stream, dead, attempts = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, id = ARGV[1], ARGV[2], ARGV[3]
local max, err, mode = tonumber(ARGV[4]), ARGV[5], ARGV[6]

-- Validate everything before the first write: Redis does not roll back.
if not max or max < 1 then
  return redis.error_reply('ERR attempts allowed must be >= 1')
end
if mode ~= 'count' and mode ~= 'free' and mode ~= 'dead' then
  return redis.error_reply('ERR unknown mode ' .. tostring(mode))
end
local dead_type = redis.call('TYPE', dead).ok
if dead_type ~= 'none' and dead_type ~= 'stream' then
  return redis.error_reply('WRONGTYPE ' .. dead .. ' is not a stream')
end

local p = redis.call('XPENDING', stream, group, id, id, 1)
if #p == 0 then
  return {'gone'}
end
if p[1][2] ~= consumer then
  return {'lost', p[1][2]}
end
local entry = redis.call('XRANGE', stream, id, id)
if #entry == 0 then
  redis.call('XACK', stream, group, id)
  redis.call('HDEL', attempts, id)
  return {'gone'}
end

local n
if mode == 'free' then
  n = tonumber(redis.call('HGET', attempts, id) or '0')
else
  n = redis.call('HINCRBY', attempts, id, 1)
end

if mode == 'dead' or n >= max then
  local args = {dead, '*'}
  local fields = entry[1][2]
  for i = 1, #fields, 2 do
    local k = fields[i]
    -- The dead letter's own fields win over same-named original ones.
    if k ~= 'error' and k ~= 'attempts' and k ~= 'original_id' then
      args[#args + 1] = k
      args[#args + 1] = fields[i + 1]
    end
  end
  args[#args + 1] = 'error'
  args[#args + 1] = err
  args[#args + 1] = 'attempts'
  args[#args + 1] = tostring(n)
  args[#args + 1] = 'original_id'
  args[#args + 1] = id
  local dead_id = redis.call('XADD', unpack(args))
  redis.call('XACK', stream, group, id)
  redis.call('HDEL', attempts, id)
  return {'dead', n, dead_id}
end

-- Still ours: reset the idle time (JUSTID does not bump the delivery count).
redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
return {'retry', n}
