-- status.lua: buyers refreshing the sale page, for wrk 4.x.
--
--   wrk -t T -c C -d 10s --latency -s loadtest/status.lua http://HOST:PORT -- SALE
--
-- Sends GET /v1/sales/SALE (the public sale state, cacheable for a second)
-- on every request. LOADTEST_TARGETS=host:port,host:port spreads wrk's
-- threads over several nodes, as in take.lua.
--
-- done() prints:
--   STATUS_COUNTS {"200":n,...}            responses per HTTP status
--   SALE_STATES {"open":n,"sold_out":n}    the "state" field of 200 answers
--   WRK_SUMMARY {...}                      latency (us) and errors

local threads = {}
local targets = nil

function setup(thread)
   threads[#threads + 1] = thread
   local spec = os.getenv("LOADTEST_TARGETS")
   if spec and spec ~= "" then
      if not targets then
         targets = {}
         for hostport in spec:gmatch("[^,%s]+") do
            local host, port = hostport:match("^(.+):(%d+)$")
            if not host then error("LOADTEST_TARGETS: bad entry " .. hostport) end
            local addrs = wrk.lookup(host, port)
            if not addrs or #addrs == 0 then
               error("LOADTEST_TARGETS: cannot resolve " .. hostport)
            end
            targets[#targets + 1] = addrs[1]
         end
      end
      thread.addr = targets[(#threads - 1) % #targets + 1]
   end
end

counts = {}
states = {}

local req = nil

function init(args)
   local sale = args[1]
   if not sale then error("usage: -- SALE") end
   req = wrk.format("GET", "/v1/sales/" .. sale)
end

function request()
   return req
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
   if status == 200 and body then
      local state = body:match('"state"%s*:%s*"([%w_]+)"')
      if state then states[state] = (states[state] or 0) + 1 end
   end
end

-- The shared encoder, from this script's own folder (wrk runs scripts
-- from any working directory).
local json_object = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "json.lua")

function done(summary, latency, requests)
   local total, st = {}, {}
   for _, t in ipairs(threads) do
      for k, v in pairs(t:get("counts") or {}) do
         total[tostring(k)] = (total[tostring(k)] or 0) + v
      end
      for k, v in pairs(t:get("states") or {}) do
         st[k] = (st[k] or 0) + v
      end
   end
   io.write("STATUS_COUNTS ", json_object(total), "\n")
   io.write("SALE_STATES ", json_object(st), "\n")
   local pct = {}
   for _, p in ipairs({ 50, 75, 90, 99, 99.9, 99.99 }) do
      pct[tostring(p)] = latency:percentile(p)
   end
   io.write("WRK_SUMMARY ", json_object({
      threads = #threads,
      duration_us = summary.duration,
      requests = summary.requests,
      bytes = summary.bytes,
      errors = summary.errors,
      latency_us = { min = latency.min, max = latency.max, mean = latency.mean,
                     stdev = latency.stdev, percentiles = pct },
   }), "\n")
end
