-- Stores "old" under "k" in the store at arg[2], then tries to set "k" to a
-- value whose JSON text is far over the 512 MiB limit (arg[1]: "nested" or
-- "control"), and prints what happened as name=value lines: the result of
-- the set, the process's memory peak during it, and what the store and its
-- file hold afterwards. Run by spec/02-values_spec.lua in a child process
-- with bounded memory, so that an encoder that grows without bound fails
-- with an out-of-memory error instead of taking the machine's memory.
local hurrahdb = require "hurrahdb"

local case, path = arg[1], arg[2]

local function status_kb(field)
  local f = assert(io.open("/proc/self/status", "r"))
  local text = f:read("a")
  f:close()
  return assert(tonumber(text:match(field .. ":%s*(%d+) kB")), field)
end

local function read_file(p)
  local f = assert(io.open(p, "rb"))
  local data = f:read("a")
  f:close()
  return data
end

local value
if case == "nested" then
  -- 30 levels of { t, t } over a 1 KiB string: 2^30 copies of the string,
  -- a terabyte of JSON, from 31 tables.
  value = string.rep("x", 1024)
  for _ = 1, 30 do value = { value, value } end
elseif case == "control" then
  -- 100 MiB of "\1", each byte escaped to the 6 bytes of \u0001: 600 MiB.
  value = string.rep("\1", 100 * 1024 * 1024)
else
  error("unknown case " .. tostring(case))
end

local db = assert(hurrahdb.new { path = path, sync_time = 0 })
assert(db:set("k", "old"))
assert(db:sync())
local file_before = read_file(path)

-- Resets the peak resident size (VmHWM) to the current one, so that the
-- peak read afterwards is the peak during the set alone.
local clear = assert(io.open("/proc/self/clear_refs", "w"))
assert(clear:write("5"))
assert(clear:close())
local rss_before = status_kb("VmRSS")

local started = os.clock()
local ok, err = db:set("k", value)
local seconds = os.clock() - started
local peak_growth_kb = status_kb("VmHWM") - rss_before

value = nil
collectgarbage()
assert(db:sync())
print("ok=" .. tostring(ok))
print("err=" .. tostring(err))
print(string.format("seconds=%.2f", seconds))
print("peak_growth_mib=" .. math.floor(peak_growth_kb / 1024))
print("old=" .. tostring(db:get("k")))
print("count=" .. db:count())
print("file_unchanged=" .. tostring(read_file(path) == file_before))
assert(db:close())
print("done=true")
