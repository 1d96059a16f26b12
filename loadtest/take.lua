-- take.lua: buyers taking tickets, for wrk 4.x.
--
--   wrk -t T -c C -d 10s --latency -s loadtest/take.lua http://HOST:PORT \
--       -- tokens.txt SALE threads=T [repeat=0.1] [bad=0.05] [seed=1] [origin=URL]
--
-- Positional arguments:
--   tokens.txt  session tokens, one per line (`bigtap users mint --count N`)
--   SALE        the sale id; requests go to POST /v1/sales/SALE/tickets
-- Options (key=value):
--   threads=T   must equal wrk's -t. Thread i of T takes lines i, i+T, i+2T...
--               so no two threads send the same buyer. Without it every thread
--               uses every line (buyers then collide across threads).
--               Each thread sends its buyers in a shuffled order (seeded),
--               not in the order of their ids: real buyers do not arrive
--               sorted, and a node's in-memory structures keyed by user
--               would look cheaper than they are if they did.
--   repeat=R    share of requests that repeat a buyer this thread already sent
--               (a buyer retrying: 200 replay if they won, 410 if not). Default 0.
--   bad=B       share of requests with a forged session (the signature's last
--               character changed): each must get 401. Default 0.
--   seed=N      seed of the random mix (default 1); the mix is reproducible.
--   origin=URL  send `Origin: URL` with every request, as a shop's page in a
--               browser does (CORS, DESIGN §3); start bigtap with
--               --cors-origins=URL to have it allowed.
--
-- Every request is built once in init() (wrk.format per token) and request()
-- only cycles through them. When a thread has sent all its buyers it starts
-- again from its first one: those requests are counted as repeats and the
-- wrap count is reported.
--
-- Multiple nodes: set LOADTEST_TARGETS=127.0.0.1:8081,127.0.0.1:8082 in the
-- environment; setup() spreads wrk's threads over them round-robin (threads
-- must be >= nodes). The URL on the command line is then only the Host header.
--
-- done() prints two machine-readable lines for loadtest/run:
--   STATUS_COUNTS {"201":n,"410":n,...}        responses per HTTP status
--   WRK_SUMMARY {...}                          sent mix, wraps, latency (us)

local threads = {}
local thread_count = 0
local targets = nil

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   threads[#threads + 1] = thread

   local spec = os.getenv("LOADTEST_TARGETS")
   if spec and spec ~= "" then
      if not targets then
         targets = {}
         for hostport in spec:gmatch("[^,%s]+") do
            local host, port = hostport:match("^(.+):(%d+)$")
            if not host then
               error("LOADTEST_TARGETS: bad entry " .. hostport)
            end
            local addrs = wrk.lookup(host, port)
            if not addrs or #addrs == 0 then
               error("LOADTEST_TARGETS: cannot resolve " .. hostport)
            end
            targets[#targets + 1] = addrs[1]
         end
      end
      thread.addr = targets[(thread_count - 1) % #targets + 1]
   end
end

-- Thread-local state (globals so that done() can read them with thread:get).
counts = {}        -- HTTP status -> responses
ended = 0          -- 410 answers whose outcome was "ended" rather than "sold_out"
sent_fresh = 0     -- requests of a buyer's first pass
sent_repeat = 0    -- requests repeating a buyer (repeat share and wraps)
sent_bad = 0       -- requests with a forged session
wraps = 0          -- times this thread cycled through all of its buyers
buyers = 0         -- distinct tokens this thread owns

local reqs = {}
local kinds = {}   -- 1 fresh, 2 repeat, 3 bad
local nreq = 0
local idx = 0

-- Change the signature's last character so that its significant bits change:
-- the last base64url character of a 32-byte MAC carries 4 data bits and two
-- zero bits, so swapping 'A' <-> 'E' always alters the decoded MAC.
local function forge(token)
   local last = token:sub(-1)
   local repl = (last == "A") and "E" or "A"
   return token:sub(1, -2) .. repl
end

local function parse_share(opts, name)
   local v = opts[name]
   if v == nil then return 0 end
   local n = tonumber(v)
   if not n or n < 0 or n >= 1 then
      error(name .. "= must be a number in [0, 1), got " .. tostring(v))
   end
   return n
end

function init(args)
   local file, sale = args[1], args[2]
   if not file or not sale then
      error("usage: -- TOKENS_FILE SALE threads=T [repeat=R] [bad=B] [seed=N] [origin=URL]")
   end
   local opts = {}
   for i = 3, #args do
      local k, v = args[i]:match("^([%w_]+)=(.*)$")
      if not k then error("bad script argument " .. args[i]) end
      opts[k] = v
   end
   local rep = parse_share(opts, "repeat")
   local bad = parse_share(opts, "bad")
   if rep + bad >= 1 then error("repeat + bad must be below 1") end
   local nthreads = tonumber(opts.threads)
   if not nthreads then
      io.stderr:write("take.lua: no threads=T argument; every thread uses every token\n")
      nthreads = 1
   end
   local me = (thread_index or 0) % nthreads
   math.randomseed((tonumber(opts.seed) or 1) * 7919 + me)

   local own = {}
   local line_no = 0
   local fh = io.open(file, "r")
   if not fh then error("cannot open tokens file " .. file) end
   for line in fh:lines() do
      local tok = line:match("^%s*(%S+)")
      if tok then
         if line_no % nthreads == me then own[#own + 1] = tok end
         line_no = line_no + 1
      end
   end
   fh:close()
   if #own == 0 then
      error("tokens file " .. file .. " has no token for thread " .. me .. " of " .. nthreads)
   end
   buyers = #own
   -- Buyers arrive in no particular order of their ids: shuffle this
   -- thread's (seeded, so the mix is reproducible).
   for j = #own, 2, -1 do
      local k = math.random(j)
      own[j], own[k] = own[k], own[j]
   end

   local path = "/v1/sales/" .. sale .. "/tickets"
   local origin = opts.origin
   local function build(tok)
      local headers = { ["Authorization"] = "Bearer " .. tok }
      if origin then headers["Origin"] = origin end
      return wrk.format("POST", path, headers)
   end

   local built = {}
   local i = 1
   while i <= #own do
      local r = math.random()
      if r < rep and #built > 0 then
         reqs[#reqs + 1] = built[math.random(#built)]
         kinds[#kinds + 1] = 2
      elseif r >= rep and r < rep + bad then
         reqs[#reqs + 1] = build(forge(own[i]))
         kinds[#kinds + 1] = 3
         i = i + 1
      else
         local req = build(own[i])
         built[#built + 1] = req
         reqs[#reqs + 1] = req
         kinds[#kinds + 1] = 1
         i = i + 1
      end
   end
   nreq = #reqs
end

function request()
   idx = idx + 1
   if idx > nreq then
      idx = 1
      wraps = wraps + 1
   end
   local k = kinds[idx]
   if k == 3 then
      sent_bad = sent_bad + 1
   elseif k == 1 and wraps == 0 then
      sent_fresh = sent_fresh + 1
   else
      sent_repeat = sent_repeat + 1
   end
   return reqs[idx]
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
   if status == 410 and body and body:find("ended", 1, true) then
      ended = ended + 1
   end
end

-- The shared encoder, from this script's own folder (wrk runs scripts
-- from any working directory).
local json_object = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "json.lua")

function done(summary, latency, requests)
   local total = {}
   local agg = { sent_fresh = 0, sent_repeat = 0, sent_bad = 0, wraps = 0, buyers = 0, ended = 0 }
   for _, t in ipairs(threads) do
      local c = t:get("counts") or {}
      for k, v in pairs(c) do
         local key = tostring(k)
         total[key] = (total[key] or 0) + v
      end
      for name in pairs(agg) do
         agg[name] = agg[name] + (t:get(name) or 0)
      end
   end
   io.write("STATUS_COUNTS ", json_object(total), "\n")

   local pct = {}
   for _, p in ipairs({ 50, 75, 90, 99, 99.9, 99.99 }) do
      pct[tostring(p)] = latency:percentile(p)
   end
   local s = {
      threads = #threads,
      duration_us = summary.duration,
      requests = summary.requests,
      bytes = summary.bytes,
      errors = summary.errors,
      latency_us = { min = latency.min, max = latency.max, mean = latency.mean,
                     stdev = latency.stdev, percentiles = pct },
   }
   for k, v in pairs(agg) do s[k] = v end
   io.write("WRK_SUMMARY ", json_object(s), "\n")
end
