-- Child process of spec/07-durability_spec.lua: opens `stores` stores at
-- sync_time = 1 (their flusher threads take their locks every millisecond),
-- then forks `forks` times; each child uses every store (set, delete, sync,
-- stats, count) and leaves with _exit. A child that blocks on a lock the
-- parent's thread held at the fork never returns: this process gives each
-- child CHILD_LIMIT seconds, then reports it and fails.
-- Usage: lua fork_stress.lua <dir> <stores> <forks>
local hurrahdb = require "hurrahdb"
local testlib = require "hdb_testlib"
local dir, nstores, nforks = arg[1], tonumber(arg[2]), tonumber(arg[3])
local CHILD_LIMIT = 60

local stores = {}
for i = 1, nstores do
  stores[i] = assert(hurrahdb.open(dir .. "/s" .. i .. ".aof", { sync_time = 1 }))
  assert(stores[i]:set("k", i))
end
for _ = 1, nforks do
  local pid = testlib.fork()
  if pid == 0 then
    local status = 0
    for i, db in ipairs(stores) do
      local ok, err = db:set("child", 1)
      if ok or not err:find("writes from this process are refused", 1, true) then status = 10 end
      if db:delete("k") ~= nil then status = 11 end
      if db:sync() ~= nil then status = 12 end
      if db:stats().keys ~= 1 or db:count() ~= 1 or db:get("k") ~= i then status = 13 end
    end
    testlib._exit(status)
  end
  -- A child's work takes milliseconds; one still running after CHILD_LIMIT
  -- seconds is blocked for good. The bound is per child, so a slow machine
  -- (forks of a sanitized process with 100 threads take tens of ms each)
  -- makes the run longer, never a failure.
  local status = testlib.waitpid(pid, CHILD_LIMIT)
  if status == nil then
    io.stderr:write("a child is still running after ", CHILD_LIMIT, " s: blocked\n")
    testlib.kill(pid, 9)
    testlib.waitpid(pid)
    os.exit(1)
  end
  if status ~= 0 then
    io.stderr:write("a child exited with ", status, "\n")
    os.exit(1)
  end
end
for _, db in ipairs(stores) do assert(db:close()) end
print("forks done")
