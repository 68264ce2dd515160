-- Child process of spec/07-durability_spec.lua: opens the store at arg[1],
-- writes a key (pending: default sync_time), forks a child that lives on
-- until the file arg[2] exists (at most 20 s), prints the child's pid and
-- leaves with os.exit, which runs no __gc.
local hurrahdb = require "hurrahdb"
local testlib = require "hdb_testlib"
io.stdout:setvbuf("no")
local path, flag = arg[1], arg[2]
local db = assert(hurrahdb.open(path))
assert(db:set("k", "before exit"))
local pid = testlib.fork()
if pid == 0 then
  for _ = 1, 400 do
    local f = io.open(flag)
    if f then f:close() break end
    os.execute("sleep 0.05")
  end
  testlib._exit(0)
end
print("child " .. pid)
_G.keep = db
os.exit(0)
