-- Opens the store at arg[1], waiting up to arg[2] ms for its lock, and
-- prints "store", its number of keys and the value of "last", tab-separated
-- (or what open returned).
local hurrahdb = require "hurrahdb"
local db, err = hurrahdb.open(arg[1], { lock_timeout = tonumber(arg[2]) })
if not db then
  print("nil\t" .. tostring(err))
  return
end
print("store\t" .. db:count() .. "\t" .. tostring(db:get("last")))
db:close()
