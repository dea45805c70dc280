-- wrk script of the caddy-apikey load harness (bench/).
--
--   wrk -t2 -c64 -d10s -s bench/wrk.lua http://127.0.0.1:18001/ -- <keys file> [header]
--
-- init() reads the keys file (one credential a line) in every wrk thread;
-- request() sends each request with a random one of them in X-API-Key (or
-- the header given as the second argument), so that the load spreads over
-- the whole sample. Every site of a pair gets the same script and the same
-- header, so the load generator does the same work for A and B.
-- done() prints one machine-readable line that the harness parses:
--   WRKBENCH requests=... duration_us=... p50=... p99=... (latencies in µs)

local keys = {}
local n = 0
local header = "X-API-Key"
local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

function init(args)
   local path = args[1]
   if path == nil then
      error("wrk.lua: give the keys file after --")
   end
   if args[2] ~= nil then
      header = args[2]
   end
   for line in io.lines(path) do
      if line ~= "" then
         n = n + 1
         keys[n] = line
      end
   end
   if n == 0 then
      error("wrk.lua: no keys in " .. path)
   end
   math.randomseed(os.time() * 7919 + (tid or 0) * 104729)
   math.random(); math.random(); math.random()
end

function request()
   return wrk.format("GET", "/", { [header] = keys[math.random(n)] })
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRKBENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d " ..
      "p50=%d p90=%d p99=%d p999=%d max=%d mean=%.2f stdev=%.2f\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
      math.floor(latency:percentile(99)), math.floor(latency:percentile(99.9)),
      math.floor(latency.max), latency.mean, latency.stdev))
end
