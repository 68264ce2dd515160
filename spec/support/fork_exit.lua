-- Run by spec/12-exit_spec.lua in a process of its own: a store with one
-- record pending (its period far longer than the run), then a forked child
-- that calls exit(), which runs the exit handlers in the child. Prints the
-- file's size before the fork and after the child ended, and the child's
-- exit status; the parent then closes the store (writing the record).
-- A process of its own, because a child forked from the test runner
-- inherits whatever locks that runner's other threads held (the sanitizers'
-- allocator's among them) and may never finish its exit.

local hurrahdb = require "hurrahdb"
local testlib = require "hdb_testlib"

local path = arg[1]
local function size()
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

local db = assert(hurrahdb.open(path, { sync_time = 3600000 }))
assert(db:set("parent", 1))
local before = size()
local pid = testlib.fork()
if pid == 0 then
  os.exit(0) -- exit(), not _exit(): the exit handlers run in the child
end
local status = testlib.waitpid(pid)
local after = size()
assert(db:close())
io.write(before, " ", after, " ", status, "\n")
