-- Child process of spec/12-exit_spec.lua: opens two stores with the default
-- sync_time (1000 ms, so nothing is flushed by the time it exits), writes
-- `count` keys to each and a line with io.open (never closed, as a script
-- that trusts exit to flush stdio would), then leaves the way `how` says.
-- Usage: lua exit_writer.lua <dir> <how> <count>
local hurrahdb = require "hurrahdb"
local dir, how, count = arg[1], arg[2], tonumber(arg[3])

local a = assert(hurrahdb.open(dir .. "/a.aof"))
local b = assert(hurrahdb.open(dir .. "/b.aof"))
for i = 1, count do
  assert(a:set("k" .. i, { i = i, s = string.rep("x", i % 50) }))
  assert(b:set("k" .. i, i * 0.5))
end
assert(b:delete("k1"))
local text = assert(io.open(dir .. "/stdio.txt", "w"))
text:write("written with io.open\n")
-- The stores stay referenced until the end: only exit can flush them.
_G.keep = { a, b }

if how == "os.exit(0)" then
  os.exit(0)
elseif how == "os.exit(3)" then
  os.exit(3)
elseif how == "os.exit(true)" then
  os.exit(true)
elseif how == "os.exit(0, true)" then
  os.exit(0, true)
elseif how == "error" then
  error("the script fails")
elseif how == "return" then
  return
else
  error("unknown way to exit: " .. tostring(how))
end
