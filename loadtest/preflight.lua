-- preflight.lua: browsers asking whether a shop's page may take tickets, for wrk 4.x.
--
--   wrk -t T -c C -d 10s --latency -s loadtest/preflight.lua http://HOST:PORT \
--       -- SALE origin=URL [headers=authorization]
--
-- Sends the CORS preflight a browser sends before a page's POST (DESIGN §3):
--   OPTIONS /v1/sales/SALE/tickets
--   Origin: URL
--   Access-Control-Request-Method: POST
--   Access-Control-Request-Headers: authorization   (or headers=...)
-- bigtap answers it from memory: 204 with the allow headers when URL is in
-- --cors-origins, 204 without them when it is not, 403 for a method or header
-- that is not allowed.
--
-- done() prints, as take.lua does:
--   STATUS_COUNTS {"204":n,...}     responses per HTTP status
--   ALLOWED n                       204 answers that carried Access-Control-Allow-Origin
--   WRK_SUMMARY {...}               latency (us) and errors

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
end

counts = {}
allowed = 0

local req = nil

function init(args)
   local sale = args[1]
   local opts = {}
   for i = 2, #args do
      local k, v = args[i]:match("^([%w_]+)=(.*)$")
      if not k then error("bad script argument " .. args[i]) end
      opts[k] = v
   end
   if not sale or not opts.origin then
      error("usage: -- SALE origin=URL [headers=authorization]")
   end
   req = wrk.format("OPTIONS", "/v1/sales/" .. sale .. "/tickets", {
      ["Origin"] = opts.origin,
      ["Access-Control-Request-Method"] = "POST",
      ["Access-Control-Request-Headers"] = opts.headers or "authorization",
   })
end

function request()
   return req
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
   if headers["access-control-allow-origin"] or headers["Access-Control-Allow-Origin"] then
      allowed = allowed + 1
   end
end

-- The shared encoder, from this script's own folder (wrk runs scripts
-- from any working directory).
local json_object = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "json.lua")

function done(summary, latency, requests)
   local total, ok = {}, 0
   for _, t in ipairs(threads) do
      for k, v in pairs(t:get("counts") or {}) do
         total[tostring(k)] = (total[tostring(k)] or 0) + v
      end
      ok = ok + (t:get("allowed") or 0)
   end
   io.write("STATUS_COUNTS ", json_object(total), "\n")
   io.write("ALLOWED ", ok, "\n")
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
