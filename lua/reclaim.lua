-- reclaim: return the units of every expired lease to the pool. Every node
-- runs this periodically, so a dead or paused node's units come back within
-- its lease TTL plus one reclaim interval (DESIGN §2, bounded undersell).
--
-- KEYS[1] acct      hash    counters
-- KEYS[2] leases    hash    node -> "units:expires_at_ms:epoch"
-- KEYS[3] reclaimed string  present while a scan made less than ARGV[1] ms
--                           ago by any node stands (expires by itself)
-- ARGV[1] every_ms  scan at most once per this many ms across the fleet;
--                   0: scan now, whatever the last scan
--
-- Replies: {leases_reclaimed, units_reclaimed}
--
-- The scan reads every lease record, so it costs the store the number of
-- nodes holding a lease; run by every node every interval it would cost
-- the square of the fleet. The first call of an interval scans and marks
-- it; the others of that interval return at once with {0, 0}, writing
-- nothing. A node passes a little less than its own interval, so that
-- even a lone node scans every time, and a dead node's units still come
-- back within its TTL plus one interval.
local every = tonumber(ARGV[1])
if not every or every < 0 or every ~= math.floor(every) then
  return redis.error_reply('ERR reclaim: bad arguments')
end
if every > 0 and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', every) then
  return {0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[2])
local dead, units = {}, 0
for i = 1, #all, 2 do
  local u, e = string.match(all[i + 1], '^(%d+):(%d+):%d+$')
  if not u or tonumber(e) <= now then
    dead[#dead + 1] = all[i]
    units = units + (tonumber(u) or 0)
  end
end
if #dead > 0 then
  redis.call('HDEL', KEYS[2], unpack(dead))
end
-- Spent leases move no unit (and -0 would reach HINCRBY as "-0", which
-- it refuses as not an integer).
if units > 0 then
  redis.call('HINCRBY', KEYS[1], 'avail', units)
  redis.call('HINCRBY', KEYS[1], 'leased', -units)
end
return {#dead, units}
