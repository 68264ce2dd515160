-- Opens the store at arg[1] and prints what open returned, tab-separated.
local hurrahdb = require "hurrahdb"
local db, err = hurrahdb.open(arg[1])
print(tostring(db and "store" or nil) .. "\t" .. tostring(err))
if db then db:close() end
