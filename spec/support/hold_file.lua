-- Opens the store at arg[1], says "holding", keeps it open arg[2] seconds,
-- writes a key, closes it and says "released".
local hurrahdb = require "hurrahdb"
local socket = require "socket"
io.stdout:setvbuf("line")
local db = assert(hurrahdb.open(arg[1], { sync_time = 0 }))
print("holding")
socket.sleep(tonumber(arg[2]))
assert(db:set("child", "from the child"))
assert(db:close())
print("released")
