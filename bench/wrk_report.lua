-- wrk script for the zonecert benchmark.
--   wrk ... -s wrk_report.lua URL -- static
--   wrk ... -s wrk_report.lua URL -- verification ZONE_IDS_FILE
-- In "verification" mode each request asks for a random zone's verification view.
-- Every mode ends with one machine-readable line, parsed by verification.sh:
--   RESULT requests=N duration_us=N p50_us=N p99_us=N status_errors=N socket_errors=N

local mode = "static"
local ids = {}
local counter = 0

function init(args)
  mode = args[1] or "static"
  if mode == "verification" then
    local file = assert(io.open(args[2], "r"), "cannot open the zone id file")
    for line in file:lines() do
      if #line > 0 then ids[#ids + 1] = line end
    end
    file:close()
    assert(#ids > 0, "no zone ids")
    -- Each wrk thread has its own Lua state; seed them apart.
    counter = tonumber(tostring({}):match("0x(%x+)"), 16) or os.time()
    math.randomseed(counter)
  end
end

function request()
  if mode == "verification" then
    local id = ids[math.random(#ids)]
    return wrk.format("GET", "/client/v4/zones/" .. id .. "/ssl/verification")
  end
  return wrk.format("GET", wrk.path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
