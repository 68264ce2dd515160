-- Opens the store at arg[1], says "holding", keeps it open, writes a key,
-- closes it and says "released". arg[2] says how long it holds the file: a
-- number of seconds (for a spec in which a waiter must see it released
-- while it waits), or the path of a file whose creation releases it (for a
-- spec that must finish its checks before the holder writes, whatever the
-- machine's speed; given up after 120 s).
local hurrahdb = require "hurrahdb"
local socket = require "socket"
io.stdout:setvbuf("line")
local db = assert(hurrahdb.open(arg[1], { sync_time = 0 }))
print("holding")
local seconds = tonumber(arg[2])
if seconds then
  socket.sleep(seconds)
else
  local deadline = socket.gettime() + 120
  while not io.open(arg[2]) do
    assert(socket.gettime() < deadline, "nobody created " .. arg[2])
    socket.sleep(0.01)
  end
end
assert(db:set("child", "from the child"))
assert(db:close())
print("released")
