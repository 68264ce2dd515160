-- wrk script of `make bench` (bench/nginx.lua): requests <path>?k=user:<i>&n=<i>
-- for i drawn at random (seeded) among the preloaded keys, made in advance
-- so that wrk spends no time building them; stops the thread after
-- <max> requests (a bound the runs are not meant to reach: wrk's -d is what
-- ends them); prints one line for bench/nginx.lua.
--
--   wrk ... -s nginx_wrk.lua <url> -- <path> <keys> <seed> <max>

local requests, count, max, next_request = {}, 0, math.huge, 0

function init(args)
  local path, keys, seed = args[1], tonumber(args[2]), tonumber(args[3])
  max = tonumber(args[4])
  math.randomseed(seed)
  for j = 1, 4096 do
    local i = math.random(keys)
    requests[j] = wrk.format("GET", ("%s?k=user:%d&n=%d"):format(path, i, i))
  end
end

function request()
  count = count + 1
  if count >= max then wrk.thread:stop() end
  next_request = next_request % #requests + 1
  return requests[next_request]
end

-- requests, microseconds, latency p50 and p99 in microseconds, then the
-- errors: connect, read, write, status (above 399), timeout
function done(summary, latency)
  local e = summary.errors
  io.write(("HURRAHDB_WRK %d %d %.0f %.0f %d %d %d %d %d\n"):format(summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
