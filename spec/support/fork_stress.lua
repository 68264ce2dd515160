-- Child process of spec/07-durability_spec.lua: opens `stores` stores at
-- sync_time = 1 (their flusher threads take their locks every millisecond),
-- then forks `forks` times; each child uses every store (set, delete, sync,
-- stats, count) and leaves with _exit. A child that blocks on a lock the
-- parent's thread held at the fork never returns. The child never sleeps of
-- its own accord, so one found asleep (state S or D in /proc) at every look
-- for ASLEEP_LIMIT seconds is blocked: this process reports it and fails.
-- A child that is runnable is only slow: on a slow machine, 100 flusher
-- threads waking every millisecond (under the sanitizers, tens of
-- microseconds each) leave a new process little of the CPU, for tens of
-- seconds. RUN_LIMIT only ends a run that would never end.
-- Usage: lua fork_stress.lua <dir> <stores> <forks>
local hurrahdb = require "hurrahdb"
local testlib = require "hdb_testlib"
local dir, nstores, nforks = arg[1], tonumber(arg[2]), tonumber(arg[3])
local ASLEEP_LIMIT, RUN_LIMIT, LOOK = 10, 900, 0.1

local function state_of(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  return stat:match("%) (%a)")
end

-- The child's exit status, or nil and why it was given up on.
local function wait_child(pid)
  local asleep, looks = 0, 0
  while true do
    local status = testlib.waitpid(pid, LOOK)
    if status ~= nil then return status end
    looks = looks + 1
    local state = state_of(pid)
    asleep = (state == "S" or state == "D") and asleep + 1 or 0
    if asleep * LOOK >= ASLEEP_LIMIT then
      return nil, "a child has been asleep for " .. ASLEEP_LIMIT .. " s: blocked"
    end
    if looks * LOOK >= RUN_LIMIT then
      return nil, "a child is still running after " .. RUN_LIMIT .. " s"
    end
  end
end

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
  local status, why = wait_child(pid)
  if status == nil then
    io.stderr:write(why, "\n")
    -- Where it sleeps: the kernel's view, and gdb's if it is installed.
    for _, what in ipairs({ "wchan", "syscall", "stack" }) do
      local f = io.open("/proc/" .. pid .. "/" .. what)
      if f then
        io.stderr:write(what, ": ", f:read("a") or "", "\n")
        f:close()
      end
    end
    os.execute("command -v gdb >/dev/null && gdb -p " .. pid .. " -batch -ex 'thread apply all bt' 1>&2 2>/dev/null")
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
