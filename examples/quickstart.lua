-- hurrahdb quickstart: a memory-only store, a store backed by an
-- append-only file, and a reopen that shows the data survived.
--
-- Run from the checkout with `make demo`.

local hurrahdb = require "hurrahdb"

print("hurrahdb " .. hurrahdb._VERSION)

-- 1. Memory only (the seed's Storage::new(None)).
do
  local db = hurrahdb.new()
  assert(db:set("greeting", { text = "hello", lang = "en" }))
  local v = db:get("greeting")
  print(("memory: greeting = %s (%s)"):format(v.text, v.lang))
  assert(db:delete("greeting"))
  print("memory: after delete, exists =", db:exists("greeting"))
  db:close()
end

-- 2. Backed by an AOF, flushed every 100 ms (the seed's AofConfig).
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))
local path = dir .. "/quickstart.aof"

do
  local db = assert(hurrahdb.open(path, { sync_time = 100 }))
  assert(db:set("user:1", { name = "Ada", langs = { "lua", "c" }, visits = 42 }))
  assert(db:set("user:2", { name = "Grace", visits = 7, score = 0.1 + 0.2 }))
  assert(db:set("counter", 1))
  assert(db:set("counter", 2))           -- overwrite
  assert(db:set("session:9", { user = 1 }, { ttl = 3600 }))  -- expires in an hour
  print(("aof: session:9 expires in %.0f s; hits = %d"):format(db:ttl("session:9"),
    db:incr("hits", 1, 0)))                                -- a counter, from 0
  assert(db:set("temp", "gone soon"))
  assert(db:delete("temp"))
  local ok, err = db:set("bad", { 1, nil, 3 })  -- refused, store unchanged
  print("aof: refused a sparse array:", ok, err)
  print(("aof: %d keys written to %s"):format(db:count(), path))
  assert(db:close())                      -- flush, fsync, stop the flusher
end

-- 3. Reopen: the file is replayed before open returns.
do
  local db = assert(hurrahdb.open(path))
  local st = db:stats()
  print(("reopen: %d keys from %d records, %d bytes on disk"):format(
    st.keys, st.loaded_records, st.aof_bytes))
  for _, key in ipairs { "user:1", "user:2", "counter", "temp" } do
    local v = db:get(key)
    if type(v) == "table" then
      print(("  %s -> name=%s visits=%d (%s)"):format(key, v.name, v.visits, math.type and math.type(v.visits) or "number"))
    else
      print(("  %s -> %s"):format(key, tostring(v)))
    end
  end
  assert(db:get("user:2").score == 0.1 + 0.2, "floats come back exactly")
  assert(db:get("counter") == 2 and db:get("temp") == nil)
  print(("  session:9 still expires in %.0f s (the expiry is a time in the file)"):format(db:ttl("session:9")))
  db:close()
end

os.remove(path)
os.remove(dir)
print("the data survived the reopen")
