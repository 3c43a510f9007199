-- wrk script of bench/peers/run.py: POSTs one chat completion body, over and over, and
-- prints one line of results that run.py reads.
--   PEERS_BODY     path of the JSON body to send
--   PEERS_HEADERS  extra request headers, one "Name: value" per line
local f = assert(io.open(os.getenv("PEERS_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
for name, value in (os.getenv("PEERS_HEADERS") or ""):gmatch("([^:\n]+):%s*([^\n]*)") do
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "PEERS_RESULT requests=%d duration_us=%d non2xx=%d socket_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
