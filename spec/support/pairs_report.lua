-- Opens the store at arg[1], loops over it with `for k, v, err in
-- db:pairs()` and prints one line per visit: the key, the value's type (and
-- the value itself when it is a number or a string) and the error, then
-- "get" with what db:get(arg[2]) returned, and "done" if the loop ended.
local hurrahdb = require "hurrahdb"
local db = assert(hurrahdb.open(arg[1]))
local function show(v)
  if type(v) == "number" then return string.format("number %.17g", v) end
  if type(v) == "string" then return "string " .. v end
  return type(v)
end
for k, v, err in db:pairs() do
  print(k .. "\t" .. show(v) .. "\t" .. tostring(err))
end
local v, err = db:get(arg[2])
print("get\t" .. show(v) .. "\t" .. tostring(err))
print("done")
db:close()
