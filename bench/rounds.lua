-- Timing in rounds, shared by bench/bench.lua (Lua 5.4) and
-- bench/nginx_worker.lua (LuaJIT inside nginx).

local M = {}

-- Median of rates and their spread: half the range, relative to the median.
function M.summarize(rates)
  local s = {}
  for i, v in ipairs(rates) do s[i] = v end
  table.sort(s)
  local median = s[math.floor((#s + 1) / 2)]
  return { median = median, spread = (s[#s] - s[1]) / 2 / median, rounds = #s }
end

-- Runs fn(round) for `rounds` rounds of n operations each, timing each round
-- by now() with the collector stopped; returns summarize() of the rates.
function M.measure(now, n, rounds, fn)
  local rates = {}
  for r = 1, rounds do
    collectgarbage()
    collectgarbage("stop")
    local t0 = now()
    fn(r)
    local dt = now() - t0
    collectgarbage("restart")
    rates[#rates + 1] = n / dt
  end
  return M.summarize(rates)
end

return M
