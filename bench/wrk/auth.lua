-- wrk script for the Portcullis bench (run with -t1 so one Lua state walks the list).
-- Environment:
--   BENCH_TOKENS  file with one token per line; request i sends token i (wrapping)
--   BENCH_SCHEME  "Bearer" (default), or e.g. "Basic" to send a header of the same
--                 size that is not a bearer token (the "no token" baseline)
--   BENCH_PATH    request path (default "/")
-- At the end it prints one line "BENCHJSON {...}" with exact figures (microseconds).
local path = os.getenv("BENCH_PATH") or "/"
local scheme = os.getenv("BENCH_SCHEME") or "Bearer"
local file = os.getenv("BENCH_TOKENS")
local values = {}
if file then
  for line in io.lines(file) do
    if #line > 0 then values[#values + 1] = scheme .. " " .. line end
  end
end
local n = #values
local i = 0

request = function()
  if n == 0 then
    return wrk.format("GET", path)
  end
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("GET", path, { ["Authorization"] = values[i] })
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"mean_us":%.2f,"stdev_us":%.2f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"non2xx":%d,"tokens":%d}\n',
    summary.requests, summary.duration, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status, n))
end
