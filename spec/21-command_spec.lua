-- The `hurrahdb` command, run as a user runs it: a separate process, its
-- exit status, its stdout and its stderr. HURRAHDB_COMMAND names an
-- installed command to run instead of the checkout's lua/bin/hurrahdb.

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"

local INSTALLED = os.getenv("HURRAHDB_COMMAND")

-- Runs the command with args (each quoted); returns status, stdout, stderr.
local function run(dir, ...)
  local out, err = dir .. "/.stdout", dir .. "/.stderr"
  local cmd
  if INSTALLED then
    local args = {}
    for i, a in ipairs { ... } do args[i] = helpers.shell_quote(a) end
    cmd = helpers.shell_quote(INSTALLED) .. " " .. table.concat(args, " ")
  else
    cmd = helpers.lua_command("lua/bin/hurrahdb", ...)
  end
  local status = helpers.capture(("%s > %s 2> %s; echo $?"):format(cmd, helpers.shell_quote(out),
    helpers.shell_quote(err)))
  return tonumber(status), helpers.read_file(out), helpers.read_file(err)
end

describe("hurrahdb command", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  local function make_store(n)
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    for i = 1, n do assert.is_true(db:set("k" .. i, { i = i })) end
    assert.is_true(db:set("t", 1, { ttl = 1000 }))
    assert.is_true(db:close())
  end

  describe("usage", function()
    it("exits 2 with the usage on stderr for no command, an unknown one or a missing file", function()
      for _, args in ipairs({ {}, { "frobnicate" }, { "check" }, { "check", "a", "b" } }) do
        local status, out, err = run(dir, helpers.unpack(args))
        assert.equals(2, status, table.concat(args, " "))
        assert.equals("", out)
        assert.matches("Usage: hurrahdb", err)
        assert.matches("Error:", err)
      end
    end)

    it("has --help for the command and each subcommand, exiting 0", function()
      local status, out = run(dir, "--help")
      assert.equals(0, status)
      assert.matches("check", out)
      assert.matches("stats", out)
      assert.matches("Exit status", out)
      for _, sub in ipairs({ "check", "stats" }) do
        status, out = run(dir, sub, "--help")
        assert.equals(0, status, sub)
        assert.matches("Usage: hurrahdb " .. sub, out)
      end
    end)
  end)

  describe("check", function()
    it("says what a good file holds and exits 0, leaving it unchanged", function()
      make_store(100)
      local before = helpers.read_file(path)
      local status, out, err = run(dir, "check", path)
      assert.equals(0, status, err)
      assert.equals("", err)
      assert.matches("101 keys, 1 of them with an expiry", out, 1, true)
      assert.matches(path .. ": ok", out, 1, true)
      assert.equals(before, helpers.read_file(path))
    end)

    it("gives one JSON object with --json", function()
      make_store(10)
      local status, out = run(dir, "check", "--json", path)
      assert.equals(0, status)
      local r = assert(hurrahdb.decode(out))
      assert.equals(11, r.keys)
      assert.is_true(r.ok)
      assert.equals(path, r.file)
    end)

    it("works while a store holds the file", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert.is_true(db:set("a", 1))
      local status, out = run(dir, "check", path)
      assert.equals(0, status)
      assert.matches("1 keys", out, 1, true)
      assert.is_true(db:set("b", 1))
      status, out = run(dir, "check", path)
      assert.equals(0, status)
      assert.matches("2 keys", out, 1, true)
      assert.is_true(db:close())
    end)

    it("exits 1 for a torn last batch, naming the file and the offset on stderr", function()
      make_store(10)
      local data = helpers.read_file(path)
      helpers.write_file(path, data:sub(1, #data - 5))
      local cut = helpers.read_file(path)
      local status, out, err = run(dir, "check", path)
      assert.equals(1, status)
      local r = assert(hurrahdb.check(path))
      assert.matches(("%s: torn last batch: %d bytes at offset %d"):format(path, r.tail_bytes, r.good_bytes),
        err, 1, true)
      assert.matches("10 keys", out, 1, true)
      assert.equals(cut, helpers.read_file(path))
    end)

    it("exits 1 for damage, naming the offset where it starts", function()
      make_store(10)
      local data = helpers.read_file(path)
      local _, batches = helpers.aof_batches(data)
      local at = batches[3].records + 1
      helpers.write_file(path, data:sub(1, at - 1) .. "X" .. data:sub(at + 1))
      local status, _, err = run(dir, "check", path)
      assert.equals(1, status)
      assert.matches(("%s: damaged at offset %d"):format(path, batches[3].start), err, 1, true)
      local jstatus, jout = run(dir, "check", "--json", path)
      assert.equals(1, jstatus)
      local r = assert(hurrahdb.decode(jout))
      assert.is_false(r.ok)
      assert.is_true(r.damaged)
      assert.equals(batches[3].start, r.damage_at)
    end)

    it("exits 1 for a file that cannot be read or is not a store's, saying why", function()
      local status, out, err = run(dir, "check", dir .. "/absent.aof")
      assert.equals(1, status)
      assert.equals("", out)
      assert.matches("absent.aof", err, 1, true)
      helpers.write_file(path, "hello\n")
      status, _, err = run(dir, "check", path)
      assert.equals(1, status)
      assert.matches(path, err, 1, true)
    end)
  end)

  describe("stats", function()
    it("prints keys, sizes and expiry counts, as text or JSON", function()
      make_store(20)
      local status, out = run(dir, "stats", path)
      assert.equals(0, status)
      assert.matches("21 keys (1 with an expiry, 0 expired)", out, 1, true)
      status, out = run(dir, "stats", "--json", path)
      assert.equals(0, status)
      local r = assert(hurrahdb.decode(out))
      assert.equals(21, r.keys)
      assert.equals(1, r.keys_with_ttl)
      assert.equals(helpers.file_size and helpers.file_size(path) or #helpers.read_file(path), r.file_bytes)
    end)
  end)
end)
