-- The background flusher thread: it exists only for sync_time > 0, blocks
-- every signal (inside nginx the worker's signals must reach its main
-- thread), leaves the caller's own signal mask alone, and is gone after
-- close().

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"

-- /proc/self in a child shell would be the shell: name the Lua process.
local function own_pid()
  return helpers.capture("echo $PPID"):match("%d+")
end

local function tasks_named(name)
  local pid = own_pid()
  local found = {}
  for tid in helpers.capture("ls /proc/" .. pid .. "/task"):gmatch("%d+") do
    local comm = helpers.read_file("/proc/" .. pid .. "/task/" .. tid .. "/comm")
    if comm and comm:gsub("%s+$", "") == name then
      found[#found + 1] = "/proc/" .. pid .. "/task/" .. tid
    end
  end
  return found
end

local function sig_blocked(task_dir)
  local status = helpers.read_file(task_dir .. "/status")
  local hex = status:match("SigBlk:%s*(%x+)")
  return hex
end

-- True if signal `n` is set in the hex mask (bit n-1).
local function has_signal(hex, n)
  local at = #hex - math.floor((n - 1) / 4)
  local nibble = tonumber(hex:sub(at, at), 16)
  return math.floor(nibble / 2 ^ ((n - 1) % 4)) % 2 == 1
end

describe("the flusher thread", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  it("runs while a store with sync_time > 0 is open, and stops at close()", function()
    local before = #tasks_named("hdb-flusher")
    local db = assert(hurrahdb.open(dir .. "/a.aof", { sync_time = 50 }))
    assert.equals(before + 1, #tasks_named("hdb-flusher"))
    assert.is_true(db:close())
    assert.equals(before, #tasks_named("hdb-flusher"))
  end)

  it("is not started with sync_time = 0 or for a memory-only store", function()
    local before = #tasks_named("hdb-flusher")
    local a = assert(hurrahdb.open(dir .. "/a.aof", { sync_time = 0 }))
    local b = assert(hurrahdb.new())
    assert.equals(before, #tasks_named("hdb-flusher"))
    a:close()
    b:close()
  end)

  it("blocks every signal, and the caller's mask is unchanged", function()
    local main = "/proc/" .. own_pid() .. "/task/" .. own_pid()
    local main_before = sig_blocked(main)
    local db = assert(hurrahdb.open(dir .. "/a.aof", { sync_time = 50 }))
    -- The thread names itself once it runs: wait for that (not for time).
    local tasks = tasks_named("hdb-flusher")
    for _ = 1, 200 do
      if #tasks > 0 then break end
      os.execute("sleep 0.01")
      tasks = tasks_named("hdb-flusher")
    end
    assert.equals(1, #tasks)
    local mask = sig_blocked(tasks[1])
    for _, sig in ipairs { 1, 2, 3, 10, 12, 13, 14, 15, 17, 28, 29 } do
      assert.is_true(has_signal(mask, sig), "signal " .. sig .. " is not blocked: " .. mask)
    end
    assert.equals(main_before, sig_blocked(main))
    db:close()
  end)
end)
