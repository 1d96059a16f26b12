-- naive: the store side of the naive peer (loadtest/naive.rs), one atomic
-- script per request. Also the baseline of benches/store_cpu.rs.
--
-- KEYS[1] stock    string  units left
-- KEYS[2] winners  set     users who won
-- KEYS[3] orders   stream  one entry per win
-- ARGV[1] user, ARGV[2] proposed ticket, ARGV[3] sale,
-- ARGV[4] issued_at_ms, ARGV[5] expires_at_ms
--
-- Replies: 1 won (written), 0 the user had already won, -1 sold out.
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end
if tonumber(redis.call('GET', KEYS[1]) or '0') <= 0 then return -1 end
redis.call('DECR', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], '*', 'ticket', ARGV[2], 'sale', ARGV[3], 'user', ARGV[1],
  'issued_at_ms', ARGV[4], 'expires_at_ms', ARGV[5])
return 1
