-- hurrahdb benchmark: set/get throughput against a plain Lua table holding
-- cjson.encode output (the ceiling a Lua user could write by hand), replay
-- time of a large file, and memory per key.
--
-- Usage: lua5.4 bench/bench.lua [--keys N] [--rounds R] [--open-keys M]
-- Figures are from one run on one machine; compare ratios, not absolutes.

local hurrahdb = require "hurrahdb"
local cjson = require "cjson"
local socket = require "socket"

local now = socket.gettime

local opts = { keys = 200000, rounds = 5, ["open-keys"] = 1000000 }
do
  local i = 1
  while arg[i] do
    local name = arg[i]:match("^%-%-(.+)$")
    if not name or opts[name] == nil or not tonumber(arg[i + 1]) then
      io.stderr:write("usage: bench.lua [--keys N] [--rounds R] [--open-keys M]\n")
      os.exit(2)
    end
    opts[name] = math.tointeger(tonumber(arg[i + 1])) or tonumber(arg[i + 1])
    i = i + 2
  end
end

local N = opts.keys
local keys, values = {}, {}
for i = 1, N do
  keys[i] = "user:" .. i
  values[i] = { value = "some-value", n = i, tags = { "a", "b" } }
end

local tmp = os.tmpname()
os.remove(tmp)
assert(os.execute("mkdir -p " .. tmp))
local function cleanup() os.execute("rm -rf " .. tmp) end

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

-- Runs fn(round) `rounds` times; returns the median operations per second.
local function measure(fn)
  local rates = {}
  for r = 1, opts.rounds do
    collectgarbage()
    collectgarbage("stop")
    local t0 = now()
    fn(r)
    local dt = now() - t0
    collectgarbage("restart")
    rates[#rates + 1] = N / dt
  end
  return median(rates)
end

local cases = {}

local function table_case()
  local store = {}
  local encode, decode = cjson.encode, cjson.decode
  local set = measure(function()
    for i = 1, N do store[keys[i]] = encode(values[i]) end
  end)
  local sink
  local get = measure(function()
    for i = 1, N do sink = decode(store[keys[i]]) end
  end)
  assert(sink)
  return { name = "Lua table + cjson (ceiling)", set = set, get = get }
end

local function store_case(name, options)
  local db = assert(hurrahdb.new(options))
  local set = measure(function()
    for i = 1, N do db:set(keys[i], values[i]) end
  end)
  local sink
  local get = measure(function()
    for i = 1, N do sink = db:get(keys[i]) end
  end)
  assert(sink and sink.n == N)
  local st = db:stats()
  assert(db:close())
  return { name = name, set = set, get = get, memory = st.memory / st.keys }
end

cases[#cases + 1] = table_case()
cases[#cases + 1] = store_case("hurrahdb memory-only", nil)
cases[#cases + 1] = store_case("hurrahdb AOF sync_time=1000",
  { path = tmp .. "/bench.aof", sync_time = 1000 })

local ceiling = cases[1]
print(("%d keys, %d rounds (median), Lua %s"):format(N, opts.rounds, _VERSION))
print()
print("| case | set/s | get/s | set ratio | get ratio |")
print("|---|---:|---:|---:|---:|")
for _, c in ipairs(cases) do
  print(("| %s | %.0f | %.0f | %.2f | %.2f |"):format(c.name, c.set, c.get,
    c.set / ceiling.set, c.get / ceiling.get))
end

-- Replay: write a file of M keys, then time opening it.
local M = opts["open-keys"]
local path = tmp .. "/open.aof"
do
  local db = assert(hurrahdb.new { path = path, sync_time = 1000 })
  for i = 1, M do
    assert(db:set("user:" .. i, { value = "some-value", n = i, tags = { "a", "b" } }))
  end
  assert(db:close())
end
collectgarbage()
local function rss_bytes()
  local f = io.open("/proc/self/statm")
  if not f then return nil end
  local pages = f:read("n") and f:read("n")
  f:close()
  return pages and pages * 4096
end
local rss0 = rss_bytes()
local t0 = now()
local db = assert(hurrahdb.open(path))
local open_s = now() - t0
local rss1 = rss_bytes()
local st = db:stats()
assert(st.keys == M)
local f = io.open(path, "rb")
local file_bytes = f:seek("end")
f:close()
print()
print(("open (replay) of %d keys (%.1f MB file): %.3f s, %.0f records/s"):format(
  M, file_bytes / 1e6, open_s, st.loaded_records / open_s))
print(("memory per key: %.1f bytes by stats(), %.1f bytes RSS growth; %.1f bytes on disk per key"):format(
  st.memory / M, rss1 and (rss1 - rss0) / M or 0 / 0, file_bytes / M))
db:close()
cleanup()
