-- Crashes: a child process writes a known sequence of operations and reports
-- each acknowledged one; the spec kills it with SIGKILL at a random moment,
-- reopens the file and checks what each sync_time promises (README,
-- "Durability"). The same file takes every kill, so each run also recovers
-- from the crash before it. HURRAHDB_KILLS sets the number of kills per
-- setting (default 100 for sync_time = 0, 40 for sync_time = 50).

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"
local socket = require "socket"

local KILLS = tonumber(os.getenv("HURRAHDB_KILLS") or "")

-- The keys (under prefix) and values after operations 1..m of crash_writer.lua.
local function state_after(prefix, m)
  local t = {}
  for n = 1, m do
    if n % 10 == 0 then
      t[prefix .. (n - 5)] = nil
    else
      t[prefix .. n] = { n = n, pad = string.rep("x", n % 50) }
    end
  end
  return t
end

local contents = helpers.contents

-- Runs the writer until it has acknowledged `target` operations, kills it,
-- and returns the last acknowledged and last synced operation numbers.
-- With `pace` (ms after each write), also returns the highest operation
-- acknowledged at least `age` seconds before the kill.
local function run_and_kill(path, sync_time, fsync, prefix, sync_every, target, pace, age,
                            rewrite_every)
  -- exec: the pid the shell prints is the writer's, and no shell is left
  -- to report the kill.
  local cmd = "echo $$; exec " .. helpers.lua_command("spec/support/crash_writer.lua",
    path, sync_time, prefix, sync_every, tostring(fsync), pace or 0, rewrite_every or 0)
  local child = assert(io.popen(cmd, "r"))
  local pid = assert(tonumber(child:read("l")), "no pid from the writer")
  local acked, synced, killed = 0, 0, false
  local ack_time, killed_at = {}, nil
  local function take(line)
    local a, t = line:match("^ack (%d+) ?(%S*)$")
    local s = line:match("^synced (%d+)$")
    if a then
      acked = tonumber(a)
      ack_time[acked] = tonumber(t)
    end
    if s then synced = tonumber(s) end
  end
  for line in child:lines() do
    take(line)
    if not killed and (line == "ready" and target == 0 or acked >= target and target > 0) then
      killed_at = socket.gettime()
      helpers.kill(pid, "KILL")
      killed = true
    end
  end
  child:close()
  assert.is_true(killed, "the writer ended before it was killed")
  local old = 0
  if pace then
    for n = 1, acked do
      if ack_time[n] and ack_time[n] <= killed_at - age then old = n end
    end
  end
  return acked, synced, old
end

-- options.pace / options.age: see run_and_kill; every operation
-- acknowledged `age` seconds before the kill must then have survived.
local function crash_loop(sync_time, fsync, kills, max_ops, sync_every, options)
  options = options or {}
  local dir = helpers.tmpdir()
  local path = dir .. "/crash.aof"
  local ok, err = pcall(function()
    local expected = {}
    math.randomseed(os.time())
    for run = 1, kills do
      local prefix = "r" .. run .. ":"
      local target = options.pace and max_ops or math.random(0, max_ops)
      local acked, synced, old = run_and_kill(path, sync_time, fsync, prefix, sync_every, target,
        options.pace, options.age, options.rewrite_every)

      local db = assert(hurrahdb.open(path, { on_warning = function() end }))
      local got = contents(db)
      assert(db:close())
      -- A rewrite the kill interrupted leaves its temporary file; the open
      -- removes it.
      assert.is_false(helpers.file_exists(path .. ".rewrite"), "run " .. run
        .. ": the temporary file of an interrupted rewrite is still there after the open")

      -- Earlier runs' data is exactly as it was.
      local mine = {}
      for k, v in pairs(got) do
        if k:sub(1, #prefix) == prefix then
          mine[k] = v
        else
          helpers.assert_same_typed(expected[k], v, "run " .. run .. ", key " .. k)
        end
      end
      for k in pairs(expected) do
        assert.is_not_nil(got[k], "run " .. run .. " lost key " .. k .. " of an earlier run")
      end

      -- This run: exactly operations 1..m for one m, with every operation
      -- the promise covers (all acknowledged ones for sync_time = 0, all
      -- synced ones otherwise) and at most the one in flight beyond.
      local lower = math.max(sync_time == 0 and acked or synced, old)
      if options.pace then
        assert.is_true(old > 0, "no write was acknowledged long enough before the kill to test")
      end
      local highest = 0
      for k in pairs(mine) do
        highest = math.max(highest, tonumber(k:sub(#prefix + 1)))
      end
      local matched
      for m = math.max(lower, highest), math.min(acked + 1, highest + 6) do
        if helpers.deep_equal_typed(state_after(prefix, m), mine) then matched = m break end
      end
      assert.is_not_nil(matched, ("run %d (sync_time %d): the file holds no prefix of the "
        .. "operations from %d to %d (acked %d, synced %d, highest key %d)"):format(
        run, sync_time, lower, acked + 1, acked, synced, highest))
      for k, v in pairs(mine) do expected[k] = v end
    end
  end)
  helpers.rmdir(dir)
  assert(ok, err)
end

describe("after kill -9 of the writing process", function()
  it("a store with sync_time = 0 holds every acknowledged write and nothing unexpected", function()
    crash_loop(0, true, KILLS or 100, 40, 0)
  end)

  it("a store with sync_time = 50 holds a prefix of the writes, in order, without gaps, and every synced one", function()
    crash_loop(50, true, KILLS or 40, 400, 25)
  end)

  it("a store with sync_time = 50 loses at most the writes of about the last 50 ms (plus a flush)", function()
    -- The writer writes about one record a millisecond for about 1.6 s;
    -- whatever it acknowledged more than a second before the kill (sync_time
    -- plus a wide margin for a flush on a shared, busy machine) must be in
    -- the file, with no sync() from the writer.
    crash_loop(50, true, 3, 1500, 0, { pace = 1, age = 1.0 })
  end)

  it("a store with sync_time = 0 rewritten in the background every 7 writes holds every acknowledged write", function()
    crash_loop(0, true, KILLS or 30, 60, 0, { rewrite_every = 7 })
  end)

  it("a store with sync_time = 50 rewritten in the background every 20 writes holds a prefix with every synced write", function()
    crash_loop(50, true, KILLS or 30, 400, 25, { rewrite_every = 20 })
  end)

  it("a store with fsync = false and sync_time = 0 holds every acknowledged write", function()
    -- Killing the process does not lose what the kernel already has.
    crash_loop(0, false, KILLS or 20, 40, 0)
  end)
end)
