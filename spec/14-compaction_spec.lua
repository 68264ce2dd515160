-- Compaction: db:rewrite() and automatic rewrites replace the file with one
-- SET per live key, in the background, while the store keeps serving; the
-- data is the same before, after, in a reopened store and in redis-server;
-- faults during a rewrite leave the store on its old file; one writer per
-- file holds across the replacement. (Kills during rewrites: 08-crash_spec.)

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"
local socket = require "socket"

local FAULTS = os.getenv("HURRAHDB_FAULTS")
local contents = helpers.contents

local function fault(rule)
  assert(FAULTS, "HURRAHDB_FAULTS is not set: run the specs with make test")
  helpers.write_file(FAULTS, rule)
  helpers.write_file(FAULTS .. ".hits", "")
end
local function hits() return #(helpers.read_file(FAULTS .. ".hits") or "") end
local function no_fault() if FAULTS then helpers.write_file(FAULTS, "") end end

-- Opens the file anew and checks it holds exactly `model`.
local function assert_reopens_as(p, model, label)
  local again = assert(hurrahdb.open(p))
  helpers.assert_same_typed(model, contents(again), label or "the reopened store")
  assert(again:close())
end

-- 1,000 keys overwritten `rounds` times, every third one deleted at the end.
local function overwrite_history(db, rounds)
  local model = {}
  for r = 1, rounds do
    for i = 1, 1000 do
      local v = { i = i, r = r, name = "key " .. i, tags = { "a", "b", r % 7 } }
      assert(db:set("k" .. i, v))
      model["k" .. i] = v
    end
  end
  for i = 3, 1000, 3 do
    assert(db:delete("k" .. i))
    model["k" .. i] = nil
  end
  return model
end

-- The records of a file by key: the raw value of each SET, and how many
-- SET and DEL records it has.
local function file_records(path)
  local data = assert(helpers.read_file(path))
  local records = assert(helpers.parse_aof(data))
  local by_key, sets, dels = {}, 0, 0
  for _, r in ipairs(records) do
    if r.args[1] == "SET" then
      sets = sets + 1
      by_key[r.args[2]] = r.args[3]
    else
      dels = dels + 1
      by_key[r.args[2]] = nil
    end
  end
  return by_key, sets, dels, #data
end

describe("db:rewrite()", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function()
    no_fault()
    helpers.rmdir(dir)
  end)

  it("shrinks the file to one SET per live key; the store, a reopened store and redis-server hold the same data", function()
    local db = assert(hurrahdb.open(path, { sync_time = 100, auto_rewrite_percentage = 0 }))
    local model = overwrite_history(db, 100)
    assert(db:sync())
    local before = db:stats()
    assert.is_true(db:rewrite { wait = true })
    local st = db:stats()
    assert.equals(1, st.rewrites)
    assert.equals(0, st.rewrites_failed)
    assert.equals("ok", st.last_rewrite_status)
    assert.is_false(st.rewrite_running)
    assert.is_true(st.last_rewrite_seconds >= 0)
    helpers.assert_same_typed(model, contents(db), "the store after the rewrite")

    local by_key, sets, dels, size = file_records(path)
    assert.equals(667, sets)
    assert.equals(0, dels)
    assert.equals(667, helpers.count_keys(by_key))
    assert.equals(size, st.aof_bytes)
    assert.equals(size, st.rewrite_base_bytes)
    -- The live bytes the stats estimate are the records; the rest is the
    -- batch lines.
    assert.is_true(st.live_bytes <= size and size - st.live_bytes < 200,
      ("live_bytes %d against a file of %d"):format(st.live_bytes, size))
    assert.is_true(size * 50 < before.aof_bytes,
      ("a file of %d bytes after the rewrite, %d before"):format(size, before.aof_bytes))
    assert.is_false(helpers.file_exists(path .. ".rewrite"))
    assert(db:close())

    local again = assert(hurrahdb.open(path))
    helpers.assert_same_typed(model, contents(again), "the reopened store")
    assert.equals(667, again:stats().loaded_records)
    assert(again:close())

    local server
    local ok, err = pcall(function()
      helpers.copy_file(path, dir .. "/appendonly.aof")
      server = helpers.start_redis(dir)
      assert.equals(667, server.client:call("DBSIZE"))
      for k, raw in pairs(by_key) do
        assert.equals(raw, server.client:call("GET", k), "redis-server's value of " .. k)
      end
      for i = 3, 1000, 3 do
        assert.is_false(server.client:call("GET", "k" .. i))
      end
    end)
    helpers.stop_redis(server)
    assert(ok, err)
  end)

  it("keeps every write made while rewrites run, with sync_time = 0 and sync_time = 20 #slow", function()
    -- Each rewrite's syncs take 30 ms more: writes surely happen meanwhile.
    fault("rewrite fdatasync delay 30")
    for _, sync_time in ipairs { 0, 20 } do
      local p = dir .. "/busy-" .. sync_time .. ".aof"
      local db = assert(hurrahdb.open(p, { sync_time = sync_time, auto_rewrite_percentage = 0 }))
      local model = {}
      math.randomseed(sync_time + 7)
      local during, started = 0, 0
      local big = string.rep("v", 1500)
      for k = 1, 3000 do
        local v = { k = k, pad = big }
        assert(db:set("w" .. k, v))
        model["w" .. k] = v
      end
      for n = 1, 20000 do
        local k = "w" .. math.random(1, 4000)
        local op = math.random()
        if op < 0.15 then
          local existed, err = db:delete(k)
          assert(existed ~= nil, err)
          model[k] = nil
        elseif op < 0.5 then
          local v = { n = n, pad = big } -- same size as many others: in place
          assert(db:set(k, v))
          model[k] = v
        else
          local v = { n = n, s = string.rep("x", n % 300) }
          assert(db:set(k, v))
          model[k] = v
        end
        if n % 2000 == 1 then
          local ok, err = db:rewrite()
          if ok then started = started + 1 else assert.matches("already running", err, 1, true) end
        end
        if n % 10 == 0 and db:stats().rewrite_running then during = during + 1 end
      end
      assert.is_true(db:rewrite { wait = true }) -- the one running, if any
      assert.is_true(db:rewrite { wait = true }) -- one with no write meanwhile
      local st = db:stats()
      assert.is_true(during > 0, "no write happened while a rewrite ran")
      assert.is_true(st.rewrites >= started and started >= 1, "rewrites: " .. st.rewrites)
      assert.equals(0, st.rewrites_failed)
      helpers.assert_same_typed(model, contents(db), "the store, sync_time " .. sync_time)
      assert(db:close())
      assert_reopens_as(p, model, "reopened, sync_time " .. sync_time)
      local _, _, dels = file_records(p)
      assert.equals(0, dels, "the last rewrite ran with no write meanwhile")
    end
  end)

  it("returns nil and an error for a memory-only store, and when one is running #slow", function()
    local mem = hurrahdb.new()
    local ok, err = mem:rewrite()
    assert.is_nil(ok)
    assert.matches("memory%-only", err)
    ok, err = mem:rewrite { wait = true }
    assert.is_nil(ok)

    fault("rewrite fdatasync delay 400")
    local db = assert(hurrahdb.open(path, { auto_rewrite_percentage = 0 }))
    for i = 1, 100 do assert(db:set("k" .. i, i)) end
    assert.is_true(db:rewrite())
    ok, err = db:rewrite()
    assert.is_nil(ok)
    assert.matches("a rewrite of " .. path .. " is already running", err, 1, true)
    assert.is_true(db:stats().rewrite_running)
    -- wait = true waits for the running one
    assert.is_true(db:rewrite { wait = true })
    assert.is_true(hits() > 0)
    assert.equals(1, db:stats().rewrites)
    assert(db:close())
  end)

  it("raises on options it does not know", function()
    local db = hurrahdb.new()
    assert.has_error(function() db:rewrite { wiat = true } end, "rewrite: unknown option 'wiat' (known: wait)")
    assert.has_error(function() db:rewrite { wait = 1 } end, "rewrite: option 'wait' must be a boolean (got number)")
    assert.has_error(function() db:rewrite("x") end)
  end)

  it("is cancelled by close(), which leaves the old file whole and no temporary file", function()
    fault("rewrite fdatasync delay 300")
    local db = assert(hurrahdb.open(path, { auto_rewrite_percentage = 0 }))
    local model = overwrite_history(db, 3)
    assert.is_true(db:rewrite())
    assert.is_true(db:close())
    no_fault()
    assert.is_false(helpers.file_exists(path .. ".rewrite"))
    assert_reopens_as(path, model)
  end)

  it("is refused in a forked child, while the parent's rewrite completes", function()
    local testlib = require "hdb_testlib"
    local report = dir .. "/child-report"
    fault("rewrite fdatasync delay 300")
    local db = assert(hurrahdb.open(path, { auto_rewrite_percentage = 0 }))
    local model = overwrite_history(db, 2)
    assert.is_true(db:rewrite())
    local pid = testlib.fork()
    if pid == 0 then
      local ok, err = db:rewrite()
      local sok, serr = db:set("child", 1)
      local f = io.open(report, "w")
      f:write(tostring(ok), "\n", tostring(err), "\n", tostring(sok), "\n", tostring(serr), "\n",
        tostring(db:get("k1").i), "\n", tostring(db:close()), "\n")
      f:close()
      testlib._exit(0)
    end
    assert.equals(0, testlib.waitpid(pid))
    local r = {}
    for line in helpers.read_file(report):gmatch("[^\n]+") do r[#r + 1] = line end
    assert.equals("nil", r[1])
    assert.matches("cannot be rewritten from this process", r[2], 1, true)
    assert.equals("nil", r[3])
    assert.equals("1", r[5])
    assert.equals("true", r[6])
    -- Joins the parent's rewrite if it still runs, or (on a slow machine,
    -- where it ended while the child ran) runs a second one: either way none
    -- has failed.
    assert.is_true(db:rewrite { wait = true })
    local st = db:stats()
    assert.equals(0, st.rewrites_failed)
    assert.is_true(st.rewrites == 1 or st.rewrites == 2, "rewrites: " .. st.rewrites)
    helpers.assert_same_typed(model, contents(db))
    assert(db:close())
    assert_reopens_as(path, model)
  end)
end)

describe("a rewrite on a failing disk", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function()
    no_fault()
    helpers.rmdir(dir)
  end)

  for _, case in ipairs {
    { "rewrite pwrite ENOSPC", "No space left on device" },
    { "rewrite pwrite partial ENOSPC", "No space left on device" },
    { "rewrite pwrite EIO", "Input/output error" },
    { "rewrite fdatasync EIO", "Input/output error" },
    { "rewrite rename EIO", "cannot rename" },
  } do
    local rule, says = case[1], case[2]
    it("fails cleanly (" .. rule .. "): the store goes on with its old file, and a later rewrite succeeds", function()
      for _, sync_time in ipairs { 0, 50 } do
        local p = path .. "-" .. sync_time .. ".aof"
        local db = assert(hurrahdb.open(p, { sync_time = sync_time, auto_rewrite_percentage = 0 }))
        local model = overwrite_history(db, 3)
        assert(db:sync())
        local size, base = db:stats().aof_bytes, db:stats().rewrite_base_bytes
        fault(rule)
        local ok, err = db:rewrite { wait = true }
        local h = hits()
        no_fault()
        assert.is_nil(ok)
        assert.is_true(h > 0, "the fault was never hit")
        assert.matches(says, err, 1, true)
        local st = db:stats()
        assert.equals(0, st.rewrites)
        assert.equals(1, st.rewrites_failed)
        assert.equals("failed", st.last_rewrite_status)
        assert.matches(says, st.last_rewrite_error, 1, true)
        assert.equals(0, st.errors, "the store's own file never failed")
        assert.equals(base, st.rewrite_base_bytes)
        assert.is_false(helpers.file_exists(p .. ".rewrite"))
        -- the store keeps working, on its old file
        assert(db:set("after", { ok = true }))
        model.after = { ok = true }
        assert(db:sync())
        assert.is_true(db:stats().aof_bytes > size)
        helpers.assert_same_typed(model, contents(db))
        -- the disk recovered
        assert.is_true(db:rewrite { wait = true })
        st = db:stats()
        assert.equals(1, st.rewrites)
        assert.equals("ok", st.last_rewrite_status)
        assert.is_nil(st.last_rewrite_error)
        assert(db:set("later", 1))
        model.later = 1
        assert(db:close())
        assert_reopens_as(p, model)
      end
    end)
  end
end)

describe("a rewrite whose directory cannot be synced", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function()
    no_fault()
    helpers.rmdir(dir)
  end)

  -- The new file has the name, but the name is not durable until the
  -- directory is synced: until then no write may be reported durable.
  it("refuses writes (sync_time = 0) and fails syncs (sync_time = 50) until the directory syncs, then loses nothing", function()
    for _, sync_time in ipairs { 0, 50 } do
      local p = path .. "-" .. sync_time .. ".aof"
      local db = assert(hurrahdb.open(p, { sync_time = sync_time, auto_rewrite_percentage = 0 }))
      local model = overwrite_history(db, 2)
      assert(db:sync())
      fault("dirsync EIO")
      assert.is_true(db:rewrite { wait = true })
      assert.is_true(hits() > 0, "the fault was never hit")
      assert.equals(1, db:stats().rewrites)
      if sync_time == 0 then
        local ok, err = db:set("during", 1)
        assert.is_nil(ok)
        assert.matches("cannot sync the directory of", err, 1, true)
        assert.is_nil(db:get("during"), "a refused write left its value")
        ok, err = db:set("during", 2)
        assert.is_nil(ok, "the second write was accepted while the directory still failed")
      else
        assert(db:set("during", 1))
        model.during = 1
        local ok, err = db:sync()
        assert.is_nil(ok)
        assert.matches("cannot sync the directory of", err, 1, true)
        assert.is_true(db:stats().errors > 0)
      end
      no_fault()
      assert(db:sync())
      assert(db:set("after", { ok = true }))
      model.after = { ok = true }
      helpers.assert_same_typed(model, contents(db))
      assert(db:close())
      assert_reopens_as(p, model, "the reopened store (sync_time " .. sync_time .. ")")
    end
  end)
end)

describe("a rewrite whose directory cannot be opened or synced", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function()
    no_fault()
    helpers.rmdir(dir)
  end)

  -- With sync_time = 0 a write appends its record, then writes it; the
  -- rewrite must never put into its file a record whose write is then
  -- refused (here: by the failing sync of the directory). The race is
  -- between two threads, so each round runs a rewrite under a stream of
  -- writes; before the fix about one round in seven lost the race.
  it("never leaves in the file a write it refused while the rewritten file took the name (sync_time = 0) #slow", function()
    for round = 1, 20 do
      local p = path .. "-" .. round .. ".aof"
      local db = assert(hurrahdb.open(p, { sync_time = 0, fsync = false, auto_rewrite_percentage = 0 }))
      for i = 1, 20000 do assert(db:set("k" .. i, i)) end
      fault("dirsync EIO")
      assert.is_true(db:rewrite())
      local refused, accepted, i = {}, {}, 0
      while db:stats().rewrite_running or i % 50 ~= 0 do
        i = i + 1
        if db:set("w" .. i, i) then accepted["w" .. i] = i else refused[#refused + 1] = "w" .. i end
      end
      no_fault()
      assert.equals(1, db:stats().rewrites, "round " .. round .. ": the rewrite did not complete")
      assert(db:sync())
      assert(db:close())
      local again = assert(hurrahdb.open(p))
      for _, k in ipairs(refused) do
        assert.is_nil(again:get(k), "round " .. round .. ": " .. k .. " was refused, yet is in the file")
      end
      for k, v in pairs(accepted) do
        assert.equals(v, again:get(k), "round " .. round .. ": " .. k .. " was accepted, yet is lost")
      end
      assert(again:close())
      os.remove(p)
    end
  end)

  it("fails before the rename when the directory cannot be opened; the store keeps writing its file", function()
    for _, sync_time in ipairs { 0, 50 } do
      local p = path .. "-" .. sync_time .. ".aof"
      local db = assert(hurrahdb.open(p, { sync_time = sync_time, auto_rewrite_percentage = 0 }))
      local model = overwrite_history(db, 2)
      assert(db:sync())
      local before = helpers.read_file(p)
      fault("diropen EACCES")
      local ok, err = db:rewrite { wait = true }
      assert.is_true(hits() > 0, "the fault was never hit")
      no_fault()
      assert.is_nil(ok)
      assert.matches("cannot open directory " .. dir .. ": Permission denied", err, 1, true)
      assert.equals(0, db:stats().rewrites)
      assert.equals(before, helpers.read_file(p), "the store's file changed")
      assert.is_nil(io.open(p .. ".rewrite"), "the temporary file was left")
      assert(db:set("after", 1))
      model.after = 1
      assert(db:sync())
      assert.is_true(db:rewrite { wait = true })
      assert(db:close())
      assert_reopens_as(p, model)
    end
  end)

  -- The descriptor of a directory whose sync failed is kept for the retry;
  -- the flusher's thread closes it once the retry succeeds. A child forked
  -- just then must not find the number of a closed descriptor in the store
  -- (its close of the store would close whatever it opened under it since).
  it("never leaves a forked child the number of a closed directory descriptor", function()
    local testlib = require "hdb_testlib"
    local report = dir .. "/child-report"
    local db = assert(hurrahdb.open(path, { sync_time = 50, auto_rewrite_percentage = 0 }))
    overwrite_history(db, 1)
    assert(db:sync())
    fault("dirsync EIO")
    assert.is_true(db:rewrite { wait = true })
    fault("dirclose delay 1500")
    assert(db:set("x", 1)) -- the next flush syncs the directory, then lets its descriptor go
    local deadline = socket.gettime() + 10
    while hits() == 0 and socket.gettime() < deadline do socket.sleep(0.005) end
    assert.is_true(hits() > 0, "the directory's descriptor was never closed")
    -- The thread is inside the window: the descriptor is closed, its close
    -- has not returned.
    local pid = testlib.fork()
    if pid == 0 then
      no_fault()
      local ok, err = pcall(function()
        -- Files on the lowest free numbers, the closed descriptor's among
        -- them: each must still be open after the store's close.
        local files = {}
        for i = 1, 16 do files[i] = assert(io.open(dir .. "/child-" .. i .. ".txt", "w")) end
        assert(db:close()) -- the parent's store, in this child
        for i, f in ipairs(files) do
          assert(f:write("child"))
          assert(f:flush(), "the store's close closed the child's file " .. i)
          f:close()
          assert(helpers.read_file(dir .. "/child-" .. i .. ".txt") == "child")
        end
      end)
      helpers.write_file(report, ok and "ok" or tostring(err))
      testlib._exit(0)
    end
    assert.equals(0, testlib.waitpid(pid))
    no_fault()
    assert.equals("ok", helpers.read_file(report))
    assert(db:close())
  end)

  it("does not rename over a symbolic link put in the place of the store's file", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
    local model = overwrite_history(db, 1)
    assert(helpers.execute("mkdir " .. dir .. "/elsewhere && mv " .. path .. " " .. dir .. "/elsewhere/ && ln -s "
      .. dir .. "/elsewhere/data.aof " .. path))
    local ok, err = db:rewrite { wait = true }
    assert.is_nil(ok)
    assert.matches("is no longer this store's file", err, 1, true)
    assert.equals(dir .. "/elsewhere/data.aof", (helpers.capture("readlink " .. path):gsub("%s+$", "")))
    assert(db:set("after", 1))
    model.after = 1
    assert(db:close())
    assert_reopens_as(path, model)
  end)

  it("completes on a file system that cannot sync directories (EINVAL), and writes go on", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
    local model = overwrite_history(db, 2)
    fault("dirsync EINVAL")
    assert.is_true(db:rewrite { wait = true })
    assert.is_true(hits() > 0, "the fault was never hit")
    assert(db:set("after", 1))
    model.after = 1
    assert(db:sync())
    no_fault()
    assert.equals(0, db:stats().errors)
    assert(db:close())
    assert_reopens_as(path, model)
  end)
end)

describe("automatic rewrites", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function()
    no_fault()
    helpers.rmdir(dir)
  end)

  -- Overwrites 100 keys with ~200-byte values until the file passes
  -- `upto` bytes, calling check(stats) after every 10 writes.
  local function grow(db, upto, check)
    local n = 0
    while true do
      for _ = 1, 10 do
        n = n + 1
        assert(db:set("k" .. (n % 100), { n = n, pad = string.rep("p", 180) }))
      end
      local st = db:stats()
      if check(st) == false or st.aof_bytes >= upto then return st end
    end
  end

  -- Growth between two checks of the engine: about 256 KiB of records.
  local SLACK = 400 * 1024

  it("start when the file passes auto_rewrite_min_size and has doubled, and not before #slow", function()
    local min = 1024 * 1024
    local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_min_size = min }))
    -- Not before the minimum size.
    local st = grow(db, min, function(s)
      assert.equals(0, s.rewrites + s.rewrites_failed, "a rewrite at " .. s.aof_bytes .. " bytes")
      assert.is_false(s.rewrite_running, "a rewrite at " .. s.aof_bytes .. " bytes")
    end)
    -- Then within the slack.
    st = grow(db, min + SLACK, function(s)
      if s.rewrite_running or s.rewrites > 0 then return false end
    end)
    assert.is_true(st.rewrite_running or st.rewrites > 0,
      "no rewrite at " .. st.aof_bytes .. " bytes")
    assert.is_true(db:rewrite { wait = true })
    st = db:stats()
    assert.is_true(st.rewrite_base_bytes < 30 * 1024, "base " .. st.rewrite_base_bytes)
    local rewrites = st.rewrites
    -- After it, the minimum size holds again (the file is far below it).
    grow(db, min - 1024, function(s)
      assert.equals(rewrites, s.rewrites, "a rewrite at " .. s.aof_bytes .. " bytes")
      assert.is_false(s.rewrite_running)
    end)
    assert(db:close())
  end)

  it("measure growth from the size after the last rewrite (auto_rewrite_percentage) #slow", function()
    -- A live set of about 600 KB, written with automatic rewrites off: one
    -- that started during the writes would end with a base of only the keys
    -- written by then (how much depends on the machine's speed).
    local fill = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
    for i = 1, 3000 do assert(fill:set("live" .. i, { i = i, pad = string.rep("l", 180) })) end
    assert(fill:close())
    local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_min_size = 0,
      auto_rewrite_percentage = 50 }))
    -- Rewritten: the base.
    assert.is_true(db:rewrite { wait = true })
    local base = db:stats().rewrite_base_bytes
    assert.is_true(base > 500 * 1024, "base " .. base)
    local rewrites = db:stats().rewrites
    grow(db, base * 1.5, function(s)
      assert.equals(rewrites, s.rewrites, "a rewrite at " .. s.aof_bytes .. " of base " .. base)
      assert.is_false(s.rewrite_running)
    end)
    local st = grow(db, base * 1.5 + SLACK, function(s)
      if s.rewrite_running or s.rewrites > rewrites then return false end
    end)
    assert.is_true(st.rewrite_running or st.rewrites > rewrites)
    assert(db:close())
  end)

  it("never start with auto_rewrite_percentage = 0 #slow", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_min_size = 0,
      auto_rewrite_percentage = 0 }))
    grow(db, 2 * 1024 * 1024, function(s)
      assert.equals(0, s.rewrites + s.rewrites_failed)
      assert.is_false(s.rewrite_running)
    end)
    assert(db:close())
  end)

  it("back off after a failure instead of retrying at once #slow", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_min_size = 256 * 1024 }))
    fault("rewrite pwrite ENOSPC")
    local st = grow(db, 4 * 1024 * 1024, function(s)
      if s.rewrites_failed > 0 then return false end
    end)
    assert.equals(1, st.rewrites_failed, "the automatic rewrite did not fail")
    -- The file keeps growing far past every threshold: no new attempt.
    st = grow(db, st.aof_bytes + 2 * 1024 * 1024, function(s)
      assert.equals(1, s.rewrites_failed)
      assert.equals(0, s.rewrites)
      assert.is_false(s.rewrite_running)
    end)
    no_fault()
    -- An explicit rewrite does not wait for the back-off.
    assert.is_true(db:rewrite { wait = true })
    assert(db:close())
  end)
end)

describe("one writer per file, across a rewrite's replacement", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function()
    no_fault()
    helpers.rmdir(dir)
  end)

  local function open_elsewhere(p)
    return helpers.capture(helpers.lua_command("spec/support/open_and_report.lua", p) .. " 2>&1")
  end

  it("refuses another process before, during and after the replacement, naming the holder #slow", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
    local model = overwrite_history(db, 2)
    local function refused(when)
      local out = open_elsewhere(path)
      assert.matches("^nil\t.*is locked by process %d+", out, nil, false, when .. ": " .. out)
    end
    refused("before")
    fault("rewrite fdatasync delay 600")
    assert.is_true(db:rewrite())
    refused("during")
    assert.is_true(db:rewrite { wait = true })
    no_fault()
    assert.equals(1, db:stats().rewrites)
    refused("after")
    -- A waiting opener that started before the replacement, on the old
    -- file, never gets the store while it is open, and opens the new file
    -- once it is closed.
    fault("rewrite fdatasync delay 600")
    assert.is_true(db:rewrite())
    local waiter = assert(io.popen(helpers.lua_command("spec/support/wait_and_report.lua", path, 8000)
      .. " 2>&1", "r"))
    socket.sleep(0.2) -- the waiter has opened the old file and waits for its lock
    assert.is_true(db:rewrite { wait = true })
    no_fault()
    assert.equals(2, db:stats().rewrites)
    socket.sleep(0.5) -- the old file is unlocked now: the waiter must not take it
    assert(db:set("last", "written after the replacement"))
    model.last = "written after the replacement"
    assert(db:close())
    local out = waiter:read("a")
    waiter:close()
    local keys, last = out:match("^store\t(%d+)\t(.*)\n$")
    assert.is_not_nil(keys, out)
    assert.equals(helpers.count_keys(model), tonumber(keys))
    assert.equals("written after the replacement", last)
    assert.equals("store\tnil\n", open_elsewhere(path))
  end)
  it("does not take the name of a file that replaced the store's own (moved away since the open)", function()
    local a = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
    assert(a:set("owner", "A"))
    assert(os.rename(path, dir .. "/archived.aof"))
    local b = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(b:set("owner", "B"))
    local ok, err = a:rewrite { wait = true }
    assert.is_nil(ok)
    assert.matches("is no longer this store's file", err, 1, true)
    assert.is_nil(io.open(path .. ".rewrite"), "the temporary file was left")
    assert(a:set("after", "A"))
    assert(b:set("b_late", "B"))
    assert(a:close())
    assert(b:close())
    local r = assert(hurrahdb.open(path))
    assert.same({ owner = "B", b_late = "B" }, contents(r))
    assert(r:close())
    r = assert(hurrahdb.open(dir .. "/archived.aof"))
    assert.same({ owner = "A", after = "A" }, contents(r))
    assert(r:close())
  end)

  it("refuses a store file named like a temporary file (*.rewrite), creating nothing", function()
    local db, err = hurrahdb.open(path .. ".rewrite")
    assert.is_nil(db)
    assert.matches("must not be named \"*.rewrite\"", err, 1, true)
    assert.is_nil(io.open(path .. ".rewrite"), "the file was created")
    -- Through a symbolic link to a missing one: the link stays, no file is left.
    assert(helpers.execute("ln -s " .. dir .. "/target.rewrite " .. dir .. "/link.aof"))
    db, err = hurrahdb.open(dir .. "/link.aof")
    assert.is_nil(db)
    assert.matches("must not be named \"*.rewrite\"", err, 1, true)
    assert.equals(dir .. "/target.rewrite", (helpers.capture("readlink " .. dir .. "/link.aof"):gsub("%s+$", "")))
    assert.is_nil(io.open(dir .. "/target.rewrite"), "the link's target was left")
    -- Names that only contain the suffix are ordinary.
    for _, name in ipairs { "x.rewrite.aof", ".rewrite" } do
      db = assert(hurrahdb.open(dir .. "/" .. name))
      assert(db:close())
    end
  end)

  it("never removes a file at the temporary name that another process holds locked; the rewrite fails naming it", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
    assert(db:set("a", 1))
    assert(db:close())
    helpers.write_file(path .. ".rewrite", "somebody else's data")
    local testlib = require "hdb_testlib"
    local fd = testlib.flock(path .. ".rewrite")
    db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
    assert.equals("somebody else's data", helpers.read_file(path .. ".rewrite"))
    local ok, err = db:rewrite { wait = true }
    assert.is_nil(ok)
    assert.matches(path .. ".rewrite, the name of this store's temporary file, is in use: ", err, 1, true)
    assert.matches("is locked by process %d+", err)
    assert.equals("somebody else's data", helpers.read_file(path .. ".rewrite"))
    testlib.unlock(fd)
    -- Unlocked, it is a crash's leftover: removed, and the rewrite proceeds.
    assert.is_true(db:rewrite { wait = true })
    assert.is_nil(io.open(path .. ".rewrite"))
    assert.equals(1, db:get("a"))
    assert(db:close())
  end)
end)
