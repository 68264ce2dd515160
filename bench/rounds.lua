-- Rounds of `make bench`, shared by bench/bench.lua and bench/nginx.lua
-- (Lua 5.4) and bench/nginx_worker.lua (LuaJIT inside nginx).
--
-- Every round runs every case once, in a new random order drawn from
-- math.random (the caller seeds it and prints the seed), so that no case
-- always runs first on a fresh heap, or always right after a given other
-- case. Nothing here stops the collector: the cases run with the garbage
-- collector as users run it.

local M = {}

-- The median of a list of numbers (of the two middle ones for an even count).
function M.median(xs)
  local s = {}
  for i, v in ipairs(xs) do s[i] = v end
  table.sort(s)
  local h = math.floor(#s / 2)
  if #s % 2 == 1 then return s[h + 1] end
  return (s[h] + s[h + 1]) / 2
end

-- Median of rates and their spread: half the range, relative to the median.
function M.summarize(rates)
  local median = M.median(rates)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(rates) do
    lo, hi = math.min(lo, v), math.max(hi, v)
  end
  return { median = median, spread = (hi - lo) / 2 / median, rounds = #rates }
end

-- A copy of list in a random order (Fisher-Yates on math.random).
function M.shuffled(list)
  local c = {}
  for i, v in ipairs(list) do c[i] = v end
  for i = #c, 2, -1 do
    local j = math.random(i)
    c[i], c[j] = c[j], c[i]
  end
  return c
end

-- A random permutation of 1..n.
function M.permutation(n)
  local p = {}
  for i = 1, n do p[i] = i end
  for i = n, 2, -1 do
    local j = math.random(i)
    p[i], p[j] = p[j], p[i]
  end
  return p
end

-- Runs `rounds` rounds of every case of `cases` (case.repeats times, 1 by
-- default), each round in a new random order: fn(case, round) for each.
-- Returns the orders, as lists of the cases' `id`s (or names), one per
-- round, for the report.
function M.run(cases, rounds, fn)
  local list = {}
  for _, case in ipairs(cases) do
    for _ = 1, case.repeats or 1 do list[#list + 1] = case end
  end
  local orders = {}
  for r = 1, rounds do
    local order = M.shuffled(list)
    local ids = {}
    for i, case in ipairs(order) do ids[i] = case.id or case.name end
    orders[r] = ids
    for _, case in ipairs(order) do fn(case, r) end
  end
  return orders
end

return M
