-- Child process of spec/12-exit_spec.lua: stores used by finalizers that
-- run while the interpreter closes its state at the normal end of the
-- script, after it has unloaded C modules (LuaJIT) or where the store is
-- never finalized (a store opened by a finalizer during the close). The
-- process must end normally, with stdio flushed and every write in a file.
-- Usage: lua exit_finalizers.lua <dir> <sync_time>
local dir, sync_time = arg[1], tonumber(arg[2])
local jit = rawget(_G, "jit")
local function with_finalizer(fn)
  if jit then
    local p = newproxy(true)
    getmetatable(p).__gc = fn
    return p
  end
  return setmetatable({}, { __gc = fn })
end

local early_db
-- Made before the module is loaded: finalized after it on LuaJIT.
EARLY = with_finalizer(function()
  pcall(early_db.set, early_db, "from the early finalizer", 1)
end)
local hurrahdb = require "hurrahdb"
early_db = assert(hurrahdb.open(dir .. "/early.aof", { sync_time = sync_time }))
assert(early_db:set("k", "before the end"))

LATE = with_finalizer(function()
  local db = assert(hurrahdb.open(dir .. "/late.aof", { sync_time = sync_time }))
  for i = 1, 100 do assert(db:set("k" .. i, i)) end
  LATE_DB = db
end)

io.stdout:setvbuf("full")
io.write("buffered in stdio\n")
