-- Durability under the faults that really happen, short of a crash (see
-- 08-crash_spec.lua): damage found at open, files that are not ours, a
-- second writer, a forked child, a disk that fills up or fails, and a disk
-- slower than the writers. Write faults are injected by spec/fault_shim.c,
-- which `make test` preloads and controls through HURRAHDB_FAULTS.

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"

local FAULTS = os.getenv("HURRAHDB_FAULTS")

local contents = helpers.contents

local function quiet() end

describe("hurrahdb.open() with damage in the middle of the file", function()
  local dir, path, data, damaged, damage_at
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    for i = 1, 5 do assert(db:set("k" .. i, { i = i })) end
    assert(db:close())
    data = helpers.read_file(path)
    -- Flip a byte in the third batch's JSON.
    local at = data:find('{"i":3}', 1, true)
    damaged = data:sub(1, at + 4) .. "7" .. data:sub(at + 6)
    local _, batches = helpers.aof_batches(data)
    damage_at = batches[3].start -- the line announcing the third batch
    helpers.write_file(path, damaged)
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("fails with the file and the offset of the bad batch, and changes nothing on disk", function()
    local db, err = hurrahdb.open(path)
    assert.is_nil(db)
    assert.matches(path, err, 1, true)
    assert.matches("offset " .. damage_at, err, 1, true)
    assert.equals(damaged, helpers.read_file(path))
    assert.equals("", helpers.capture("ls " .. helpers.shell_quote(dir) .. " | grep damaged"))
  end)

  it("with repair = true keeps every batch before the damage and moves the rest to a side file", function()
    local warnings = {}
    local db = assert(hurrahdb.open(path, { repair = true,
      on_warning = function(w) warnings[#warnings + 1] = w end }))
    helpers.assert_same_typed({ k1 = { i = 1 }, k2 = { i = 2 } }, contents(db))
    assert.equals(1, #warnings)
    local side = warnings[1]:match("to (%S+)$")
    assert.is_string(side, warnings[1])
    assert.equals(path .. ".damaged-" .. damage_at, side)
    assert.equals(damaged:sub(damage_at + 1), helpers.read_file(side))
    assert.equals(#damaged - damage_at, db:stats().dropped_bytes)
    assert.equals(warnings[1], db:stats().warning)
    -- The store goes on from the good prefix.
    assert(db:set("after", "repair"))
    assert(db:close())
    assert.equals(damaged:sub(1, damage_at), helpers.read_file(path):sub(1, damage_at))
    local again = assert(hurrahdb.open(path))
    helpers.assert_same_typed({ k1 = { i = 1 }, k2 = { i = 2 }, after = "repair" }, contents(again))
    again:close()
    assert.is_true(helpers.file_exists(side), "the side file is never deleted")
  end)

  it("with repair = true twice keeps both side files", function()
    assert(hurrahdb.open(path, { repair = true, on_warning = quiet })):close()
    helpers.write_file(path, damaged)
    local warnings = {}
    assert(hurrahdb.open(path, { repair = true, on_warning = function(w) warnings[#warnings + 1] = w end })):close()
    local second = warnings[1]:match("to (%S+)$")
    assert.are_not.equal(path .. ".damaged-" .. damage_at, second)
    assert.is_true(helpers.file_exists(path .. ".damaged-" .. damage_at))
    assert.is_true(helpers.file_exists(second))
  end)
end)

describe("hurrahdb.open() on a file that is not a hurrahdb AOF", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  local cases = {
    { "garbage", "\0\1\2 this is not an AOF\n" },
    { "a Redis AOF without our header", "*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n" },
    { "an RDB file", "REDIS0009\250\9redis-ver\0057.0.0" },
    { "a JSON document", '{"k": 1}\n' },
    { "a later format version", "#hurrahdb aof 2\r\n" },
  }
  for _, case in ipairs(cases) do
    it("refuses " .. case[1] .. " and never writes to it", function()
      local path = dir .. "/x.aof"
      helpers.write_file(path, case[2])
      local db, err = hurrahdb.open(path, { repair = true })
      assert.is_nil(db)
      assert.matches(path, err, 1, true)
      assert.matches("hurrahdb AOF", err, 1, true)
      assert.equals(case[2], helpers.read_file(path))
    end)
  end

  it("refuses a directory", function()
    local db, err = hurrahdb.open(dir)
    assert.is_nil(db)
    assert.matches(dir, err, 1, true)
  end)

  it("refuses a file it may not open, naming the reason", function()
    local path = dir .. "/locked.aof"
    helpers.write_file(path, "#hurrahdb aof 1\r\n")
    helpers.execute("chmod 000 " .. helpers.shell_quote(path) .. " && chmod 755 " .. helpers.shell_quote(dir))
    -- As root every file is readable: run the open as nobody, with copies
    -- of the module and the script in the test's directory (nobody may not
    -- be able to enter the checkout), without the test-only preloads.
    local module = assert(package.searchpath("hurrahdb", package.cpath))
    helpers.copy_file(module, dir .. "/hurrahdb.so")
    helpers.copy_file("spec/support/open_and_report.lua", dir .. "/open_and_report.lua")
    helpers.execute("chmod 644 " .. helpers.shell_quote(dir) .. "/hurrahdb.so " .. helpers.shell_quote(dir) .. "/open_and_report.lua")
    local preload = (os.getenv("LD_PRELOAD") or ""):gsub("%S*fault_shim%.so", "")
    local out = helpers.capture("setpriv --reuid=65534 --regid=65534 --clear-groups "
      .. helpers.lua_command_env({ LUA_CPATH = dir .. "/?.so", LD_PRELOAD = preload },
        dir .. "/open_and_report.lua", path) .. " 2>&1")
    assert.matches("nil\tcannot open " .. path .. ": Permission denied", out, 1, true)
    helpers.execute("chmod 600 " .. helpers.shell_quote(path))
  end)
end)

describe("one writer per file", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("refuses a second store on a path already open in this process, naming this pid", function()
    local db = assert(hurrahdb.open(path))
    local second, err = hurrahdb.open(path)
    assert.is_nil(second)
    assert.matches(" is locked by process %d+ %(this process", err)
    assert.equals(1, err:find(path, 1, true))
    assert(db:close())
    assert(hurrahdb.open(path)):close()
  end)

  it("refuses a store in another process while one holds the file, naming the holder's pid", function()
    local db = assert(hurrahdb.open(path))
    local out = helpers.capture(helpers.lua_command("spec/support/open_and_report.lua", path) .. " 2>&1")
    local my_pid = helpers.capture("echo $PPID"):match("%d+")
    assert.matches("nil\t" .. path .. " is locked by process " .. my_pid .. ": one writer per file", out, 1, true)
    db:close()
  end)

  it("with lock_timeout waits until the holder closes the file", function()
    -- A child holds the file for a moment, then closes it.
    local child = io.popen(helpers.lua_command("spec/support/hold_file.lua", path, "0.3"), "r")
    assert.equals("holding", child:read("l"))
    local db, err = hurrahdb.open(path, { lock_timeout = 0 })
    assert.is_nil(db)
    assert.matches("is locked by process %d+", err)
    db = assert(hurrahdb.open(path, { lock_timeout = 20000 }))
    assert.equals("released", child:read("l"))
    child:close()
    assert.equals("from the child", db:get("child"))
    db:close()
  end)
end)

describe("a store used in a forked child", function()
  local testlib = require "hdb_testlib"
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  for _, sync_time in ipairs { 0, 50 } do
    it("refuses writes, keeps reads working, and leaves the parent's file alone (sync_time = "
       .. sync_time .. ")", function()
      local path = dir .. "/data.aof"
      local report = dir .. "/child-report"
      local db = assert(hurrahdb.open(path, { sync_time = sync_time }))
      assert(db:set("a", 1))
      local pid = testlib.fork()
      if pid == 0 then
        local ok, err = db:set("child", 1)
        local dok, derr = db:delete("a")
        local sok, serr = db:sync()
        local lines = {
          tostring(ok), tostring(err), tostring(dok), tostring(derr), tostring(sok), tostring(serr),
          tostring(db:get("a")), tostring(db:count()), tostring(db:close()),
        }
        local f = io.open(report, "w")
        f:write(table.concat(lines, "\n"))
        f:close()
        testlib._exit(0)
      end
      assert.equals(0, testlib.waitpid(pid))
      local r = {}
      for line in helpers.read_file(report):gmatch("[^\n]+") do r[#r + 1] = line end
      assert.equals("nil", r[1])
      assert.matches("writes from this process are refused", r[2], 1, true)
      assert.equals("nil", r[3])
      assert.matches("writes from this process are refused", r[4], 1, true)
      assert.equals("nil", r[5])
      assert.equals("1", r[7])
      assert.equals("1", r[8])
      assert.equals("true", r[9])
      -- The child's close left the parent's lock in place.
      local other, lerr = hurrahdb.open(path)
      assert.is_nil(other)
      assert.matches("is locked by process %d+ %(this process", lerr)
      -- The parent goes on writing to its file.
      assert(db:set("b", 2))
      assert(db:close())
      local again = assert(hurrahdb.open(path))
      helpers.assert_same_typed({ a = 1, b = 2 }, contents(again))
      again:close()
    end)
  end
end)

describe("a disk that fails", function()
  local dir, path
  local function fault(rule)
    assert(FAULTS, "HURRAHDB_FAULTS is not set: run the specs with make test")
    helpers.write_file(FAULTS, rule)
    helpers.write_file(FAULTS .. ".hits", "")
  end
  local function hits() return #(helpers.read_file(FAULTS .. ".hits") or "") end

  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function()
    if FAULTS then helpers.write_file(FAULTS, "") end
    helpers.rmdir(dir)
  end)

  local failing = {
    { "pwrite ENOSPC", "No space left on device" },
    { "pwrite EIO", "Input/output error" },
    { "pwrite partial ENOSPC", "No space left on device" },
    { "fdatasync EIO", "Input/output error" },
  }

  describe("with sync_time = 0", function()
    for _, case in ipairs(failing) do
      it("refuses a write with nil, err on '" .. case[1] .. "', unchanged, and accepts writes again after", function()
        local db = assert(hurrahdb.open(path, { sync_time = 0 }))
        assert(db:set("a", 1))
        local before = helpers.read_file(path)
        fault(case[1])
        local ok, err = db:set("b", 2)
        assert.is_nil(ok)
        assert.matches(case[2], err, 1, true)
        assert.matches(path, err, 1, true)
        assert.is_true(hits() > 0, "the fault was not hit")
        assert.is_nil(db:get("b"))
        assert.equals(1, db:count())
        -- already off the file: a crash now cannot bring the refused write back
        assert.equals(before, helpers.read_file(path))
        -- sync() has nothing to write but the refused record's bytes to cut
        -- off the file: that needs the disk's fdatasync too
        local sok, serr = db:sync()
        if case[1]:match("^fdatasync") then
          assert.is_nil(sok)
          assert.matches(case[2], serr, 1, true)
        else
          assert.is_true(sok, serr)
        end
        local dok, derr = db:delete("a")
        assert.is_nil(dok)
        assert.matches(case[2], derr, 1, true)
        assert.equals(1, db:get("a"))
        assert.is_true(db:stats().errors > 0)
        assert.matches(case[2], db:stats().last_error, 1, true)
        fault("")
        assert(db:set("c", 3))
        assert(db:close())
        -- The refused records left nothing behind: the file is the old one
        -- plus the last record.
        assert.equals(before, helpers.read_file(path):sub(1, #before))
        local warned = false
        local again = assert(hurrahdb.open(path, { on_warning = function() warned = true end }))
        helpers.assert_same_typed({ a = 1, c = 3 }, contents(again))
        assert.is_false(warned)
        again:close()
      end)
    end

    it("refuses writes while the bytes of a failed one cannot be cut off the file (ftruncate EIO), then recovers", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert(db:set("a", 1))
      local before = helpers.read_file(path)
      fault("pwrite partial ENOSPC")
      assert.is_nil(db:set("b", 2))
      -- every later write first cuts the file back to its last good batch;
      -- while that fails, so do they, and nothing changes
      fault("ftruncate EIO")
      local ok, err = db:set("c", 3)
      assert.is_nil(ok)
      assert.matches("cannot truncate " .. path .. ": Input/output error", err, 1, true)
      assert.is_true(hits() > 0, "the fault was not hit")
      assert.is_nil(db:get("c"))
      local sok, serr = db:sync()
      assert.is_nil(sok)
      assert.matches("Input/output error", serr, 1, true)
      fault("")
      assert(db:set("d", 4))
      assert(db:close())
      assert.equals(before, helpers.read_file(path):sub(1, #before))
      local warned = false
      local again = assert(hurrahdb.open(path, { on_warning = function() warned = true end }))
      helpers.assert_same_typed({ a = 1, d = 4 }, contents(again))
      assert.is_false(warned)
      again:close()
    end)

    it("completes a write that the disk takes in short pieces", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      fault("pwrite short")
      assert(db:set("big", string.rep("x", 10000)))
      assert.is_true(hits() > 5)
      fault("")
      assert(db:close())
      local again = assert(hurrahdb.open(path))
      assert.equals(string.rep("x", 10000), again:get("big"))
      again:close()
    end)
  end)

  describe("with sync_time > 0", function()
    for _, case in ipairs(failing) do
      it("keeps acknowledged records through '" .. case[1] .. "', refuses writes meanwhile, and writes them all once the disk recovers", function()
        local socket = require "socket"
        local db = assert(hurrahdb.open(path, { sync_time = 20 }))
        assert(db:set("a", 1))
        assert(db:sync())
        fault(case[1])
        assert.is_true(db:set("b", 2)) -- acknowledged: buffered before the failure is known
        local deadline = socket.gettime() + 10
        while db:stats().errors == 0 and socket.gettime() < deadline do socket.sleep(0.005) end
        assert.is_true(db:stats().errors > 0, "the flusher never met the fault")
        local ok, err = db:set("c", 3)
        assert.is_nil(ok)
        assert.matches(case[2], err, 1, true)
        local sok, serr = db:sync()
        assert.is_nil(sok)
        assert.matches(case[2], serr, 1, true)
        -- close() on a failing disk keeps the store open and the records.
        local cok, cerr = db:close()
        assert.is_nil(cok)
        assert.matches(case[2], cerr, 1, true)
        assert.equals(2, db:get("b"))
        assert.matches(case[2], db:stats().last_error, 1, true)
        fault("")
        assert.is_true(db:sync())
        assert.is_true(db:set("c", 3))
        assert.is_true(db:close())
        local again = assert(hurrahdb.open(path))
        helpers.assert_same_typed({ a = 1, b = 2, c = 3 }, contents(again))
        again:close()
      end)
    end
  end)
end)

describe("a disk slower than the writers", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function()
    if FAULTS then helpers.write_file(FAULTS, "") end
    helpers.rmdir(dir)
  end)

  it("never holds more than max_pending unwritten bytes: set waits for the disk", function()
    assert(FAULTS, "HURRAHDB_FAULTS is not set: run the specs with make test")
    local path = dir .. "/data.aof"
    -- No timed flush within the test: only max_pending can bound memory.
    -- The thread still writes early, at half of max_pending; each of its
    -- fdatasyncs takes 10 ms, so the writers reach max_pending meanwhile
    -- (about 30 sets) and must wait, however fast the machine.
    helpers.write_file(FAULTS, "fdatasync delay 10")
    local db = assert(hurrahdb.open(path, { sync_time = 86400000, max_pending = 8192 }))
    local value = string.rep("v", 100)
    local record = #("*3\r\n$3\r\nSET\r\n$5\r\nk1000\r\n$102\r\n") + 102 + 2
    for i = 1, 2000 do
      assert(db:set("k" .. i, value))
      assert.is_true(db:stats().aof_pending_bytes <= 8192 + record,
        "pending " .. db:stats().aof_pending_bytes .. " after set " .. i)
    end
    assert.is_true(db:stats().backpressure_waits > 0)
    assert.is_true(db:stats().aof_bytes > 2000 * record - 8192 - record)
    assert(db:close())
    local again = assert(hurrahdb.open(path))
    assert.equals(2000, again:count())
    again:close()
  end)
end)

describe("a forked child", function()
  local testlib = require "hdb_testlib"
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  it("never blocks in set, delete, sync or stats on a lock the parent's flusher held at the fork #slow", function()
    local forks = tonumber(os.getenv("HURRAHDB_FORKS") or "300")
    if forks == 0 then
      pending("HURRAHDB_FORKS=0: not run in this build (see the Makefile)")
      return
    end
    -- fork_stress.lua bounds the wait for each child; the outer timeout only
    -- guards against the parent itself hanging.
    local out = helpers.capture("timeout 1200 " .. helpers.lua_command("spec/support/fork_stress.lua", dir, 100, forks)
      .. " 2>&1; echo \"exit $?\"")
    assert.equals("forks done\nexit 0\n", out)
  end)

  it("does not keep the parent's lock after the parent's close", function()
    local path = dir .. "/data.aof"
    local flag = dir .. "/child-may-go"
    local db = assert(hurrahdb.open(path))
    assert(db:set("a", 1))
    local pid = testlib.fork()
    if pid == 0 then
      -- Lives on, holding its copy of the descriptor, until told to go.
      for _ = 1, 400 do
        if helpers.file_exists(flag) then break end
        os.execute("sleep 0.05")
      end
      testlib._exit(0)
    end
    local ok, err = pcall(function()
      assert.is_true(db:close())
      -- this process, and another one, can open the file again at once
      local again = assert(hurrahdb.open(path))
      assert.equals(1, again:get("a"))
      assert(again:set("b", 2))
      assert.is_true(again:close())
      local out = helpers.capture(helpers.lua_command("spec/support/open_and_report.lua", path) .. " 2>&1")
      assert.equals("store\tnil\n", out)
    end)
    helpers.write_file(flag, "")
    assert.equals(0, testlib.waitpid(pid))
    assert(ok, err)
  end)
end)

describe("hurrahdb.open() on a path that is a symbolic link", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  local function roundtrip(link, target)
    local db, err = hurrahdb.open(link, { sync_time = 0 })
    assert.is_not_nil(db, err)
    assert(db:set("k", "v"))
    assert.is_true(db:close())
    assert.is_true(helpers.file_exists(target))
    assert.equals("600", helpers.file_mode(target))
    db = assert(hurrahdb.open(link))
    assert.equals("v", db:get("k"))
    db:close()
  end

  it("to a file that does not exist yet creates that file (relative link)", function()
    helpers.execute("ln -s target.aof " .. helpers.shell_quote(dir .. "/link.aof"))
    roundtrip(dir .. "/link.aof", dir .. "/target.aof")
  end)

  it("to a file that does not exist yet creates that file (absolute link, through a chain)", function()
    helpers.execute("mkdir " .. helpers.shell_quote(dir .. "/sub"))
    helpers.execute("ln -s " .. helpers.shell_quote(dir .. "/sub/target.aof") .. " " .. helpers.shell_quote(dir .. "/one"))
    helpers.execute("ln -s one " .. helpers.shell_quote(dir .. "/two.aof"))
    roundtrip(dir .. "/two.aof", dir .. "/sub/target.aof")
  end)

  it("into a directory that does not exist fails with the reason", function()
    helpers.execute("ln -s nowhere/target.aof " .. helpers.shell_quote(dir .. "/link.aof"))
    local db, err = hurrahdb.open(dir .. "/link.aof")
    assert.is_nil(db)
    assert.matches("cannot open " .. dir .. "/link.aof: No such file or directory", err, 1, true)
  end)

  it("that loops fails with the reason", function()
    helpers.execute("ln -s b.aof " .. helpers.shell_quote(dir .. "/a.aof"))
    helpers.execute("ln -s a.aof " .. helpers.shell_quote(dir .. "/b.aof"))
    local db, err = hurrahdb.open(dir .. "/a.aof")
    assert.is_nil(db)
    assert.matches("symbolic links", err, 1, true)
  end)
end)

describe("hurrahdb.open() on a file of /proc", function()
  for _, path in ipairs { "/proc/self/status", "/proc/self/timers", "/sys/kernel/mm/transparent_hugepage/enabled" } do
    it("is refused before anything is written to it (" .. path .. ")", function()
      if not helpers.file_exists(path) then
        pending(path .. " does not exist on this system")
        return
      end
      local db, err = hurrahdb.open(path)
      assert.is_nil(db)
      assert.equals("cannot open " .. path .. ": not a regular file (it is on a file system of "
        .. "the kernel's, like /proc or /sys)", err)
    end)
  end
end)

describe("a race for the file", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function()
    if FAULTS then helpers.write_file(FAULTS, "") end
    helpers.rmdir(dir)
  end)

  -- Each process reads its own rules: a child gets a control file of its own.
  local function child_with_rule(rule, script, ...)
    local control = dir .. "/child-faults"
    helpers.write_file(control, rule)
    return helpers.lua_command_env({ HURRAHDB_FAULTS = control }, script, ...)
  end

  local function wait_for_file(p)
    for _ = 1, 500 do
      if helpers.file_exists(p) then return true end
      os.execute("sleep 0.01")
    end
    return false
  end

  it("lost by a store that created the file never removes it from the winner #slow", function()
    -- The child creates the file, then is held for a second before it
    -- locks it; this process opens it meanwhile and writes.
    local child = io.popen(child_with_rule("flock delay 1000", "spec/support/open_and_report.lua", path) .. " 2>&1", "r")
    assert.is_true(wait_for_file(path))
    local db, err = hurrahdb.open(path, { sync_time = 0 })
    assert.is_not_nil(db, err)
    assert(db:set("written-by", "the winner"))
    local out = child:read("a")
    child:close()
    assert.equals(1, out:find("nil\t" .. path .. " is locked by process", 1, true), out)
    assert.is_true(db:close())
    assert.is_true(helpers.file_exists(path), "the loser removed the winner's file")
    db = assert(hurrahdb.open(path))
    assert.equals("the winner", db:get("written-by"))
    db:close()
  end)

  it("does not make a waiting opener take a file being created for a /proc file", function()
    -- An empty file, locked by another program, which then fills it with a
    -- store's contents; the open reads the file's first byte late (after
    -- the filling) and must wait for the lock before it judges the file.
    local source = dir .. "/source.aof"
    local db = assert(hurrahdb.open(source, { sync_time = 0 }))
    assert(db:set("k", "v"))
    db:close()
    helpers.write_file(path, "")
    local holder = io.popen("flock -x " .. helpers.shell_quote(path) .. " sh -c 'echo locked; sleep 0.3; cat "
      .. helpers.shell_quote(source) .. " > " .. helpers.shell_quote(path) .. "'", "r")
    assert.equals("locked", holder:read("l"))
    helpers.write_file(FAULTS, "pread delay 700")
    local opened, err = hurrahdb.open(path, { lock_timeout = 5000 })
    helpers.write_file(FAULTS, "")
    holder:close()
    assert.is_not_nil(opened, err)
    assert.equals("v", opened:get("k"))
    opened:close()
  end)
end)

describe("hurrahdb.open() with a long path", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  it("names side files in full and never runs out of names for them", function()
    local path = dir .. "/" .. string.rep("p", 250 - #dir) .. ".aof"
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(db:set("k", 1))
    db:close()
    local good = helpers.read_file(path)
    local sides = {}
    for round = 1, 3 do
      helpers.write_file(path, good .. "garbage\r\n")
      local warning
      db = assert(hurrahdb.open(path, { on_warning = function(w) warning = w end }))
      assert.equals(1, db:get("k"))
      db:close()
      local side = warning:match("to (%S+)$")
      assert.equals(path .. ".damaged-" .. #good .. (round > 1 and ("." .. (round - 1)) or ""), side)
      assert.equals("garbage\r\n", helpers.read_file(side))
      sides[round] = side
    end
  end)
end)

describe("db:close() when the file system reports an error at close(2)", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function()
    if FAULTS then helpers.write_file(FAULTS, "") end
    helpers.rmdir(dir)
  end)

  it("returns nil, err and the store is closed (nothing to retry), its records written", function()
    local path = dir .. "/data.aof"
    local db = assert(hurrahdb.open(path))
    for i = 1, 100 do assert(db:set("k" .. i, i)) end
    helpers.write_file(FAULTS, "close EIO")
    local ok, err = db:close()
    helpers.write_file(FAULTS, "")
    assert.is_nil(ok)
    assert.matches("cannot close " .. path .. ": Input/output error (the store is closed)", err, 1, true)
    assert.has_error(function() db:set("late", 1) end, "store is closed")
    assert.is_true(db:close())
    local again = assert(hurrahdb.open(path))
    assert.equals(100, again:count())
    again:close()
  end)
end)

describe("a file another process forked from its holder keeps open", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  it("is released when the holder exits with os.exit, though the forked child lives on", function()
    local path = dir .. "/data.aof"
    local flag = dir .. "/child-may-go"
    -- Output to a file: the forked child keeps the descriptor, so a pipe
    -- would not end before it does.
    helpers.execute(helpers.lua_command("spec/support/exit_with_child.lua", path, flag)
      .. " > " .. helpers.shell_quote(dir .. "/out") .. " 2>&1")
    local out = helpers.read_file(dir .. "/out")
    local child_pid = tonumber(out:match("child (%d+)"))
    assert.is_number(child_pid, out)
    local ok, err = pcall(function()
      assert.is_true(helpers.process_alive(child_pid))
      local db, oerr = hurrahdb.open(path)
      assert.is_not_nil(db, oerr)
      assert.equals("before exit", db:get("k"))
      db:close()
    end)
    helpers.write_file(flag, "")
    assert(ok, err)
  end)
end)
