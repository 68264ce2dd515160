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

local function rss_bytes()
  local f = io.open("/proc/self/statm")
  if not f then return nil end
  local _, resident = f:read("n", "n")
  f:close()
  return resident and resident * 4096
end

-- Child mode: open the file given, print seconds, keys, records, RSS growth
-- and stats().memory. Run in a fresh process so that RSS growth is the
-- store's alone.
if arg[1] == "--measure-open" then
  collectgarbage()
  local rss0 = rss_bytes()
  local t0 = now()
  local db = assert(hurrahdb.open(arg[2]))
  local dt = now() - t0
  local st = db:stats()
  print(dt, st.keys, st.loaded_records, (rss_bytes() or 0) - (rss0 or 0), st.memory)
  db:close()
  os.exit(0)
end

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

local function first_line(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  local out = p and p:read("l") or nil
  if p then p:close() end
  return out or "?"
end
local cpu = first_line("grep -m1 'model name' /proc/cpuinfo"):gsub("^.-:%s*", "")
print(("machine: %s, %s cores, Linux %s, %s, disk: %s"):format(cpu, first_line("nproc"),
  first_line("uname -r"), _VERSION, first_line("df -h " .. tmp .. " | awk 'NR==2 {print $1\" (\"$2\")\"}'")))
print(("%d keys, values like {value=\"some-value\", n=42, tags={\"a\",\"b\"}}; median of %d rounds"):format(N, opts.rounds))
print()
print("| case | set/s | get/s | set vs ceiling | get vs ceiling |")
print("|---|---:|---:|---:|---:|")
for _, c in ipairs(cases) do
  print(("| %s | %.0f | %.0f | %.2f | %.2f |"):format(c.name, c.set, c.get,
    c.set / ceiling.set, c.get / ceiling.get))
end

-- Replay: write a file of M keys, then time opening it in a fresh process.
local M = opts["open-keys"]
local path = tmp .. "/open.aof"
do
  local db = assert(hurrahdb.new { path = path, sync_time = 1000 })
  for i = 1, M do
    assert(db:set("user:" .. i, { value = "some-value", n = i, tags = { "a", "b" } }))
  end
  assert(db:close())
end
local interpreter = arg[-1] or "lua5.4"
local line = first_line(("%s %s --measure-open %s"):format(interpreter, arg[0], path))
local open_s, keys, records, rss, mem = line:match("^(%S+)%s+(%S+)%s+(%S+)%s+(%S+)%s+(%S+)")
assert(open_s and tonumber(keys) == M, "measuring the open failed: " .. line)
local f = assert(io.open(path, "rb"))
local file_bytes = f:seek("end")
f:close()
print()
print("| measure | result |")
print("|---|---|")
print(("| open (replay) %d keys, %.1f MB file | %.3f s (%.2f M records/s) |"):format(
  M, file_bytes / 1e6, tonumber(open_s), tonumber(records) / tonumber(open_s) / 1e6))
print(("| memory per key after open | %.0f bytes RSS growth, %.0f bytes by stats().memory |"):format(
  tonumber(rss) / M, tonumber(mem) / M))
print(("| file bytes per key | %.1f |"):format(file_bytes / M))
cleanup()
