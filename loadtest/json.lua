-- json.lua: the one JSON encoder of the wrk scripts (take.lua, status.lua,
-- preflight.lua), loaded with dofile from the scripts' own folder. Keys are
-- sorted, so the same table always gives the same text; whole numbers
-- below 2^53 print as integers, others with three decimals.
local json_object
function json_object(t)
   local keys = {}
   for k in pairs(t) do keys[#keys + 1] = k end
   table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
   local parts = {}
   for _, k in ipairs(keys) do
      local v = t[k]
      local s
      if type(v) == "table" then
         s = json_object(v)
      elseif type(v) == "number" and v == math.floor(v) and math.abs(v) < 2^53 then
         s = string.format("%d", v)
      elseif type(v) == "number" then
         s = string.format("%.3f", v)
      else
         s = string.format("%q", tostring(v))
      end
      parts[#parts + 1] = string.format("%q:%s", tostring(k), s)
   end
   return "{" .. table.concat(parts, ",") .. "}"
end
return json_object
