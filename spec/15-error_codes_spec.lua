-- Error codes: every runtime failure returns nil, a message and a short
-- stable code ("io", "locked", ...) a program can decide by (README, "Error
-- codes"). Each code a test can provoke for real is provoked here: another
-- process holding the file, damaged files, a failing disk (through the
-- fault shim `make test` preloads), a forked child, rewrites, refused
-- values. Each case also checks that the store is as it was where that is
-- promised.

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

-- Asserts that the values a call returned (packed) are nil, a message that
-- contains `text` (plain) and the code `code`, and nothing more.
local function assert_failure(code, text, r, what)
  what = what or "the call"
  assert.equals(3, r.n, what .. " returned " .. r.n .. " values")
  assert.is_nil(r[1], what .. " succeeded")
  assert.equals("string", type(r[2]), what)
  assert.equals(code, r[3], what .. ": " .. tostring(r[2]))
  if text then assert.matches(text, r[2], 1, true) end
end
local pack = helpers.pack

-- Opens the file anew and checks it holds exactly `model`.
local function assert_reopens_as(p, model)
  local again = assert(hurrahdb.open(p))
  helpers.assert_same_typed(model, contents(again), "the reopened store")
  assert(again:close())
end

describe("error codes", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function()
    no_fault()
    helpers.rmdir(dir)
  end)

  describe("at open", function()
    it("'locked': another process holds the file; the file is untouched", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert(db:set("a", 1))
      assert(db:close())
      -- The holder writes only once the checks are done (it waits for
      -- the release file): the file must be as it was after the refusal.
      local release = dir .. "/release"
      local child = io.popen(helpers.lua_command("spec/support/hold_file.lua", path, release), "r")
      assert.equals("holding", child:read("l"))
      local before = helpers.read_file(path)
      local r = pack(hurrahdb.open(path))
      assert_failure("locked", " is locked by process ", r, "open")
      assert.is_nil(r[2]:find("(this process", 1, true), r[2])
      assert.equals(before, helpers.read_file(path))
      helpers.write_file(release, "")
      assert.equals("released", child:read("l"))
      child:close()
      assert_reopens_as(path, { a = 1, child = "from the child" })
    end)

    it("'already open': this process holds the file; the open store goes on", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert(db:set("a", 1))
      local before = helpers.read_file(path)
      assert_failure("already open", "(this process: the file is already open here)",
        pack(hurrahdb.open(path)), "the second open")
      assert.equals(before, helpers.read_file(path))
      assert(db:set("b", 2))
      assert(db:close())
      assert_reopens_as(path, { a = 1, b = 2 })
    end)

    -- Files that fail the checks at open, each left as it was.
    local damaged = {
      { "not a hurrahdb file", function() return "hello, world\n" end, "not a hurrahdb AOF" },
      { "a newer format version", function()
          return "#hurrahdb aof 9 " .. string.rep("0", 32) .. " 00000000\r\n"
        end, "made by a newer hurrahdb" },
      { "a bad batch followed by good ones", function(p)
          local db = assert(hurrahdb.open(p, { sync_time = 0 }))
          assert(db:set("first", 1))
          assert(db:set("second", 2))
          assert(db:close())
          local data = helpers.read_file(p)
          local _, batches = helpers.aof_batches(data)
          local at = batches[1].records + 5 -- inside the first batch's records
          return data:sub(1, at) .. string.char((data:byte(at + 1) + 1) % 256) .. data:sub(at + 2)
        end, "followed by good batches" },
    }
    for _, case in ipairs(damaged) do
      it("'damaged': " .. case[1] .. "; the file is left as it was", function()
        local data = case[2](path)
        helpers.write_file(path, data)
        assert_failure("damaged", case[3], pack(hurrahdb.open(path)), "open")
        assert.equals(data, helpers.read_file(path))
        assert.same({ "data.aof" }, helpers.dir_entries(dir))
      end)
    end

    it("'io': a directory that does not exist; nothing is created", function()
      assert_failure("io", "No such file or directory", pack(hurrahdb.open(dir .. "/missing/data.aof")),
        "open")
      assert.same({}, helpers.dir_entries(dir))
    end)

    it("'io': the new file's directory cannot be synced; no file is left", function()
      fault("dirsync EIO")
      local r = pack(hurrahdb.open(path))
      assert.is_true(hits() > 0, "the fault was not hit")
      no_fault()
      assert_failure("io", "Input/output error", r, "open")
      assert.same({}, helpers.dir_entries(dir))
    end)

    it("'invalid': a name reserved for rewrites, a directory, a FIFO; nothing is created", function()
      assert_failure("invalid", "must not be named \"*.rewrite\"",
        pack(hurrahdb.open(path .. ".rewrite")), "open *.rewrite")
      assert.same({}, helpers.dir_entries(dir))
      assert(helpers.execute("mkdir " .. helpers.shell_quote(dir .. "/sub")))
      assert_failure("invalid", "Is a directory", pack(hurrahdb.open(dir .. "/sub")), "open a directory")
      assert(helpers.execute("mkfifo " .. helpers.shell_quote(dir .. "/fifo")))
      assert_failure("invalid", "not a regular file", pack(hurrahdb.open(dir .. "/fifo")), "open a FIFO")
      assert.same({ "fifo", "sub" }, helpers.dir_entries(dir))
    end)
  end)

  describe("of writes", function()
    it("'value': a value the codec refuses; the old value and the file stay", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert(db:set("k", "old"))
      local before = helpers.read_file(path)
      assert_failure("value", nil, pack(db:set("k", function() end)), "set of a function")
      assert_failure("value", nil, pack(db:set("k", { nested = { f = print } })), "set of a table with a function")
      assert.equals("old", db:get("k"))
      assert.equals(1, db:count())
      assert.equals(before, helpers.read_file(path))
      assert(db:close())
    end)

    it("'too large': a value whose text passes the limit, refused before it is copied #slow", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert(db:set("k", "old"))
      local before = helpers.read_file(path)
      -- 100 MiB of "\1", each escaped to the 6 bytes of \u0001: 600 MiB of
      -- text, over the 512 MiB limit.
      local r = pack(db:set("k", string.rep("\1", 100 * 1024 * 1024)))
      collectgarbage()
      assert_failure("too large", "value too long", r, "set")
      assert.equals("old", db:get("k"))
      assert.equals(before, helpers.read_file(path))
      assert(db:close())
    end)

    for _, rule in ipairs { "pwrite EIO", "pwrite ENOSPC", "fdatasync EIO" } do
      it("'io': the disk refuses a write ('" .. rule .. "', sync_time = 0); the store is unchanged", function()
        local db = assert(hurrahdb.open(path, { sync_time = 0 }))
        assert(db:set("a", 1))
        local before = helpers.read_file(path)
        fault(rule)
        local r = pack(db:set("b", 2))
        local d = pack(db:delete("a"))
        assert.is_true(hits() > 0, "the fault was not hit")
        no_fault()
        assert_failure("io", path, r, "set")
        assert_failure("io", path, d, "delete")
        assert.is_nil(db:get("b"))
        assert.equals(1, db:get("a"))
        assert.equals(before, helpers.read_file(path))
        assert(db:close())
        assert_reopens_as(path, { a = 1 })
      end)
    end

    it("'io' stays the code of a failure the flusher met, for every call that reports it (sync_time > 0)", function()
      local db = assert(hurrahdb.open(path, { sync_time = 20 }))
      assert(db:set("a", 1))
      assert(db:sync())
      fault("pwrite EIO")
      assert.is_true(db:set("b", 2)) -- acknowledged: buffered before the failure is known
      local deadline = socket.gettime() + 10
      while db:stats().errors == 0 and socket.gettime() < deadline do socket.sleep(0.005) end
      assert.is_true(db:stats().errors > 0, "the flusher never met the fault")
      local last_error = db:stats().last_error
      local r = pack(db:set("c", 3))
      assert_failure("io", nil, r, "set")
      assert.equals(last_error, r[2])
      assert_failure("io", "Input/output error", pack(db:sync()), "sync")
      assert_failure("io", "Input/output error", pack(db:close()), "close")
      assert.is_nil(db:get("c"))
      no_fault()
      assert.is_true(db:close())
      assert_reopens_as(path, { a = 1, b = 2 })
    end)

    it("'io' from close() when close(2) fails after everything was written; the store is closed", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert(db:set("a", 1))
      fault("close EIO")
      local r = pack(db:close())
      no_fault()
      assert_failure("io", "(the store is closed)", r, "close")
      assert.has_error(function() db:set("late", 1) end, "store is closed")
      assert_reopens_as(path, { a = 1 })
    end)

    it("a closed store raises 'store is closed' rather than returning a code", function()
      local db = assert(hurrahdb.open(path))
      assert(db:close())
      assert.has_error(function() db:set("k", 1) end, "store is closed")
      assert.has_error(function() db:get("k") end, "store is closed")
      assert.has_error(function() db:sync() end, "store is closed")
      assert.has_error(function() db:rewrite() end, "store is closed")
    end)
  end)

  describe("of reads", function()
    -- A version-1 file (converted at open, values copied as they are) with
    -- a value that is no JSON: the engine keeps it, the codec cannot read it.
    local function file_with_bad_value(p)
      local body = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\n{bad\r\n"
        .. "*3\r\n$3\r\nSET\r\n$2\r\nok\r\n$1\r\n1\r\n"
      local crc = assert(require("hdb_testlib").crc32c(body))
      helpers.write_file(p, "#hurrahdb aof 1\r\n" .. body .. string.format("#hdb batch %d %08x\r\n", #body, crc))
    end

    it("'value': get and pairs of a stored value the codec cannot decode", function()
      file_with_bad_value(path)
      local db = assert(hurrahdb.open(path))
      assert_failure("value", "cannot decode stored value", pack(db:get("k")), "get")
      local seen = {}
      for k, v, err, code in db:pairs() do
        seen[k] = { v = v, err = err, code = code }
      end
      assert.equals(1, seen.ok.v)
      assert.is_nil(seen.ok.code)
      assert.is_nil(seen.k.v)
      assert.matches("cannot decode stored value", seen.k.err, 1, true)
      assert.equals("value", seen.k.code)
      -- the step gives exactly key, nil, err, code
      local step, state = db:pairs()
      local r = pack(step(state, nil))
      if r[1] ~= "k" then r = pack(step(state, r[1])) end
      assert.equals("k", r[1])
      assert.equals(4, r.n)
      assert.equals(2, db:count())
      assert(db:close())
    end)
  end)

  describe("of rewrites", function()
    it("'memory only': a store without a file", function()
      local db = hurrahdb.new()
      assert(db:set("a", 1))
      assert_failure("memory only", "memory-only", pack(db:rewrite()), "rewrite")
      assert_failure("memory only", "memory-only", pack(db:rewrite { wait = true }), "rewrite { wait = true }")
      assert.equals(1, db:get("a"))
      assert(db:close())
    end)

    it("'busy': a rewrite is already running; it completes all the same", function()
      fault("rewrite fdatasync delay 300")
      local db = assert(hurrahdb.open(path, { auto_rewrite_percentage = 0 }))
      for i = 1, 100 do assert(db:set("k" .. i, i)) end
      assert.is_true(db:rewrite())
      assert_failure("busy", "is already running", pack(db:rewrite()), "the second rewrite")
      assert.is_true(db:rewrite { wait = true })
      assert.equals(1, db:stats().rewrites)
      assert(db:close())
    end)

    it("'outpaced': writes passed max_pending while the rewrite ran; the store keeps its old file", function()
      fault("rewrite fdatasync delay 300")
      local db = assert(hurrahdb.open(path, { auto_rewrite_percentage = 0, max_pending = 4096 }))
      local model = {}
      for i = 1, 100 do
        assert(db:set("k" .. i, i))
        model["k" .. i] = i
      end
      assert.is_true(db:rewrite())
      -- Once the rewrite syncs its file, it has taken the writes' tail at
      -- least once: what is written now is copied for it, past max_pending.
      local deadline = socket.gettime() + 10
      while hits() == 0 and socket.gettime() < deadline do socket.sleep(0.002) end
      assert.is_true(hits() > 0, "the rewrite never synced its file")
      for i = 1, 20 do
        local v = string.rep("w", 1000)
        assert(db:set("w" .. i, v))
        model["w" .. i] = v
      end
      assert_failure("outpaced", "writes outpaced the rewrite", pack(db:rewrite { wait = true }), "rewrite")
      assert.equals(0, db:stats().rewrites)
      helpers.assert_same_typed(model, contents(db))
      no_fault()
      assert(db:close())
      assert_reopens_as(path, model)
    end)

    it("'moved': the store's file was replaced from outside; the rewrite leaves both files alone", function()
      local a = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
      assert(a:set("owner", "A"))
      assert(os.rename(path, dir .. "/archived.aof"))
      local b = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert(b:set("owner", "B"))
      assert_failure("moved", "is no longer this store's file", pack(a:rewrite { wait = true }), "rewrite")
      assert.is_false(helpers.file_exists(path .. ".rewrite"))
      assert(a:close())
      assert(b:close())
      assert_reopens_as(path, { owner = "B" })
      assert_reopens_as(dir .. "/archived.aof", { owner = "A" })
    end)

    it("'locked': another process holds a file at the temporary file's name", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
      assert(db:set("a", 1))
      -- No store can be opened at that name: flock(1) holds it as one would.
      local child = io.popen("env -u LD_PRELOAD flock -x " .. helpers.shell_quote(path .. ".rewrite")
        .. " sh -c 'echo holding; sleep 0.5; echo released'", "r")
      assert.equals("holding", child:read("l"))
      assert_failure("locked", "the name of this store's temporary file, is in use",
        pack(db:rewrite { wait = true }), "rewrite")
      assert.equals("released", child:read("l"))
      child:close()
      assert.equals(1, db:get("a"))
      assert(db:close())
      assert_reopens_as(path, { a = 1 })
    end)
  end)

  describe("in a forked child", function()
    local testlib = require "hdb_testlib"

    it("'forked': writes, sync and rewrite are refused; the parent's store is unchanged", function()
      local report = dir .. "/child-report"
      local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
      assert(db:set("a", 1))
      local pid = testlib.fork()
      if pid == 0 then
        local lines = {}
        local function note(name, ...)
          local r = pack(...)
          lines[#lines + 1] = table.concat({ name, r.n, tostring(r[1]), tostring(r[3]), tostring(r[2]) }, "\t")
        end
        note("set", db:set("child", 1))
        note("delete", db:delete("a"))
        note("sync", db:sync())
        note("rewrite", db:rewrite())
        note("rewrite wait", db:rewrite { wait = true })
        local f = io.open(report, "w")
        f:write(table.concat(lines, "\n"), "\n")
        f:close()
        testlib._exit(0)
      end
      assert.equals(0, testlib.waitpid(pid))
      local seen = 0
      for line in helpers.read_file(report):gmatch("[^\n]+") do
        local name, n, first, code, msg = line:match("^([^\t]*)\t(%d+)\t([^\t]*)\t([^\t]*)\t(.*)$")
        assert.equals("3", n, line)
        assert.equals("nil", first, line)
        assert.equals("forked", code, line)
        assert.matches("from this process", msg, 1, true)
        assert.is_not_nil(name)
        seen = seen + 1
      end
      assert.equals(5, seen)
      assert(db:set("b", 2))
      assert(db:close())
      assert_reopens_as(path, { a = 1, b = 2 })
    end)
  end)
end)
