-- The public API of hurrahdb: constructors, options, methods, argument
-- checking and the life cycle of a store.

local helpers = require "spec.helpers"
local cjson = require "cjson"
local hurrahdb = require "hurrahdb"

-- Values of every Lua type that is not a valid key.
local bad_keys = {
  { "nil", nil },
  { "a boolean", true },
  { "false", false },
  { "a table", {} },
  { "a function", function() end },
  { "a coroutine", coroutine.create(function() end) },
  { "a userdata", io.stdout },
}

-- Every method of a store, with arguments that are valid for it.
local methods = {
  { "set", { "k", "v" } },
  { "get", { "k" } },
  { "delete", { "k" } },
  { "exists", { "k" } },
  { "count", {} },
  { "keys", {} },
  { "pairs", {} },
  { "sync", {} },
  { "stats", {} },
}

describe("hurrahdb", function()
  it("has a _VERSION string like 1.2.3", function()
    assert.is_string(hurrahdb._VERSION)
    assert.matches("^%d+%.%d+%.%d+", hurrahdb._VERSION)
  end)

  it("has null, equal to cjson.null", function()
    assert.equals("userdata", type(hurrahdb.null))
    assert.equals(cjson.null, hurrahdb.null)
  end)

  it("has the functions new and open", function()
    assert.is_function(hurrahdb.new)
    assert.is_function(hurrahdb.open)
  end)
end)

describe("hurrahdb.new()", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  it("without arguments returns a memory-only store", function()
    local db = assert(hurrahdb.new())
    assert.is_true(db:set("k", "v"))
    assert.equals("v", db:get("k"))
    assert.is_true(db:close())
  end)

  it("with an empty table returns a memory-only store", function()
    local db = assert(hurrahdb.new{})
    assert.equals(0, db:count())
    db:close()
  end)

  it("with path, sync_time and fsync returns a store on that file", function()
    local path = dir .. "/data.aof"
    local db = assert(hurrahdb.new{ path = path, sync_time = 100, fsync = true })
    assert.is_true(db:set("k", "v"))
    assert.is_true(db:close())
    assert.is_true(helpers.file_exists(path))
  end)

  it("accepts sync_time = 0 and fsync = false", function()
    local db = assert(hurrahdb.new{ path = dir .. "/data.aof", sync_time = 0, fsync = false })
    assert.is_true(db:set("k", "v"))
    db:close()
  end)

  it("raises bad argument when the argument is not a table", function()
    for _, arg in ipairs{ "x", 1, true, function() end } do
      assert.has_error(function() hurrahdb.new(arg) end)
      local ok, err = pcall(hurrahdb.new, arg)
      assert.is_false(ok)
      assert.matches("bad argument", err)
    end
  end)

  it("raises naming an unknown option", function()
    local ok, err = pcall(hurrahdb.new, { sync_tme = 100 })
    assert.is_false(ok)
    assert.matches("unknown option 'sync_tme'", err, 1, true)
  end)

  it("raises bad argument naming an embedded NUL in option path, and opens nothing", function()
    for _, opts in ipairs{
      { path = dir .. "/x.aof\0.bak" },
      setmetatable({}, { __index = { path = dir .. "/x.aof\0.bak" } }),
    } do
      local ok, err = pcall(hurrahdb.new, opts)
      assert.is_false(ok)
      assert.matches("^bad argument #1 to '[^']*' %(option 'path' contains an embedded NUL at byte "
        .. #dir + 7 .. "%)$", err)
      assert.is_false(helpers.file_exists(dir .. "/x.aof"))
    end
  end)

  it("returns nil, err with the path when the directory does not exist", function()
    local path = dir .. "/no/such/dir/data.aof"
    local db, err = hurrahdb.new{ path = path }
    assert.is_nil(db)
    assert.is_string(err)
    assert.matches(path, err, 1, true)
  end)

  it("returns nil, err with the path when the file is not a hurrahdb AOF", function()
    local path = dir .. "/notes.txt"
    helpers.write_file(path, "these are my notes\nnothing to see here\n")
    local db, err = hurrahdb.new{ path = path }
    assert.is_nil(db)
    assert.is_string(err)
    assert.matches(path, err, 1, true)
    -- the file is left as it was
    assert.equals("these are my notes\nnothing to see here\n", helpers.read_file(path))
  end)
end)

describe("hurrahdb.open()", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  it("opens a store on a file, like new{ path = ... }", function()
    local path = dir .. "/data.aof"
    local db = assert(hurrahdb.open(path, { sync_time = 100 }))
    assert.is_true(db:set("k", "v"))
    db:close()
    local again = assert(hurrahdb.new{ path = path })
    assert.equals("v", again:get("k"))
    again:close()
  end)

  it("works without options", function()
    local db = assert(hurrahdb.open(dir .. "/data.aof"))
    assert.equals(0, db:count())
    db:close()
  end)

  it("raises bad argument when the path is not a string", function()
    for _, arg in ipairs{ { "nil", nil }, { "boolean", true }, { "table", {} } } do
      local ok, err = pcall(hurrahdb.open, arg[2])
      assert.is_false(ok, arg[1])
      assert.matches("bad argument", err)
    end
  end)

  it("raises when the options are not a table", function()
    local ok, err = pcall(hurrahdb.open, dir .. "/data.aof", "fast")
    assert.is_false(ok)
    assert.matches("bad argument", err)
  end)

  it("raises when the options contain path", function()
    local ok, err = pcall(hurrahdb.open, dir .. "/a.aof", { path = dir .. "/b.aof" })
    assert.is_false(ok)
    assert.matches("path", err)
  end)

  it("raises naming an unknown option", function()
    local ok, err = pcall(hurrahdb.open, dir .. "/data.aof", { fsnyc = true })
    assert.is_false(ok)
    assert.matches("'fsnyc'", err, 1, true)
  end)

  it("raises bad argument naming an embedded NUL in the path, and opens nothing", function()
    local ok, err = pcall(hurrahdb.open, dir .. "/x.aof\0.bak")
    assert.is_false(ok)
    assert.matches("^bad argument #1 to '[^']*' %(path contains an embedded NUL at byte "
      .. #dir + 7 .. "%)$", err)
    assert.is_false(helpers.file_exists(dir .. "/x.aof"))
  end)

  it("raises when the options inherit path", function()
    local opts = setmetatable({}, { __index = { path = dir .. "/b.aof" } })
    local ok, err = pcall(hurrahdb.open, dir .. "/a.aof", opts)
    assert.is_false(ok)
    assert.matches("give the path as the first argument", err, 1, true)
  end)

  it("returns nil, err with the path when the directory does not exist", function()
    local path = dir .. "/missing/data.aof"
    local db, err = hurrahdb.open(path)
    assert.is_nil(db)
    assert.matches(path, err, 1, true)
  end)
end)

-- Every option, the Lua type it takes and, for numbers, the whole numbers
-- it takes: each other type and each value out of range raises naming the
-- option, whether the options table holds it or inherits it (__index).
describe("options", function()
  local types = {
    { "path", "string" }, { "sync_time", "number" }, { "fsync", "boolean" },
    { "repair", "boolean" }, { "lock_timeout", "number" }, { "max_pending", "number" },
    { "auto_rewrite_percentage", "number" }, { "auto_rewrite_min_size", "number" },
    { "codec", "string or a table", { string = true, table = true } },
    { "on_warning", "function" },
  }
  local samples = {
    { "string", "fast" }, { "number", 1 }, { "boolean", true }, { "table", {} },
    { "function", print }, { "userdata", io.stdout },
  }
  local ranges = {
    sync_time = { 0, 86400000 }, lock_timeout = { 0, 86400000 }, max_pending = { 4096, 1099511627776 },
    auto_rewrite_percentage = { 0, 1000000 }, auto_rewrite_min_size = { 0, 1125899906842624 },
  }
  local KNOWN = "path, sync_time, fsync, repair, lock_timeout, max_pending, auto_rewrite_percentage, auto_rewrite_min_size, codec, on_warning, max_memory, eviction"

  -- { description, function(opts) that calls it, its name in messages }
  local callers = {
    { "hurrahdb.new", function(opts) return hurrahdb.new(opts) end },
    { "hurrahdb.open", function(opts) return hurrahdb.open("/nonexistent-dir/data.aof", opts) end },
  }
  local holders = {
    { "holds", function(name, v) return { [name] = v } end },
    { "inherits", function(name, v) return setmetatable({}, { __index = { [name] = v } }) end },
  }

  -- Calls the constructor and returns its error without the position of
  -- the caller; a call that does not raise fails the spec.
  local function raised(call, opts)
    local ok, err = pcall(call, opts)
    assert.is_false(ok, "did not raise")
    return (err:gsub("^[^:]*:%d+: ", ""))
  end

  for _, caller in ipairs(callers) do
    local fn, call = caller[1], caller[2]
    describe(fn .. "()", function()
      for _, holder in ipairs(holders) do
        local how, make = holder[1], holder[2]
        for _, option in ipairs(types) do
          local name, want = option[1], option[2]
          local accepted = option[3] or { [want] = true }
          if not (name == "path" and fn == "hurrahdb.open") then
            for _, sample in ipairs(samples) do
              local got, value = sample[1], sample[2]
              if not accepted[got] then
                it("raises when the options " .. how .. " " .. name .. " = a " .. got, function()
                  assert.equals(string.format("%s: option '%s' must be a %s (got %s)", fn, name, want, got),
                    raised(call, make(name, value)))
                end)
              end
            end
          end
          local range = ranges[name]
          if range then
            local min, max = range[1], range[2]
            for _, value in ipairs{ min - 1, max + 1, min + 0.5, -0.5, 0 / 0, math.huge, -math.huge } do
              it("raises when the options " .. how .. " " .. name .. " = " .. tostring(value), function()
                assert.equals(string.format("%s: option '%s' must be a whole number from %d to %.0f (got %s)",
                  fn, name, min, max, tostring(value)), raised(call, make(name, value)))
              end)
            end
          end
        end
      end

      it("raises naming an unknown option and listing the known ones", function()
        assert.equals(fn .. ": unknown option 'sync_tme' (known: " .. KNOWN .. ")",
          raised(call, { sync_tme = 100 }))
      end)

      it("raises when an option name is not a string", function()
        assert.equals(fn .. ": option names must be strings (got a number key)",
          raised(call, { true }))
      end)
    end)
  end

  describe("inherited through __index", function()
    local dir
    before_each(function() dir = helpers.tmpdir() end)
    after_each(function() helpers.rmdir(dir) end)

    local function inheriting(defaults) return setmetatable({}, { __index = defaults }) end

    it("sync_time = 0 makes every write synchronous", function()
      local db = assert(hurrahdb.open(dir .. "/data.aof", inheriting{ sync_time = 0 }))
      for i = 1, 20 do
        assert(db:set("k" .. i, i))
        assert.equals(0, db:stats().aof_pending_bytes)
      end
      assert(db:close())
    end)

    it("sync_time = 86400000 leaves writes pending", function()
      local db = assert(hurrahdb.open(dir .. "/data.aof", inheriting{ sync_time = 86400000 }))
      assert(db:set("k", "v"))
      assert.is_true(db:stats().aof_pending_bytes > 0)
      assert(db:close())
    end)

    it("from an __index function: sync_time = 0 makes every write synchronous", function()
      local opts = setmetatable({}, { __index = function(_, k) if k == "sync_time" then return 0 end end })
      local db = assert(hurrahdb.open(dir .. "/data.aof", opts))
      assert(db:set("k", "v"))
      assert.equals(0, db:stats().aof_pending_bytes)
      assert(db:close())
    end)

    it("path gives new() its file", function()
      local db = assert(hurrahdb.new(inheriting{ path = dir .. "/data.aof" }))
      assert.equals(dir .. "/data.aof", db:stats().path)
      assert(db:close())
      assert.is_true(helpers.file_exists(dir .. "/data.aof"))
    end)

    it("own options take precedence over inherited ones", function()
      local opts = inheriting{ sync_time = 86400000 }
      opts.sync_time = 0
      local db = assert(hurrahdb.open(dir .. "/data.aof", opts))
      assert(db:set("k", "v"))
      assert.equals(0, db:stats().aof_pending_bytes)
      assert(db:close())
    end)
  end)
end)

describe("option on_warning", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(db:set("k", "v"))
    assert(db:close())
    -- A torn last batch (an append cut short by a crash): the open warns.
    local f = assert(io.open(path, "ab"))
    assert(f:write("*3\r\n$3\r\nSET\r\n$1\r\nx"))
    assert(f:close())
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("is called with what the open repaired", function()
    local warnings = {}
    local db = assert(hurrahdb.open(path, { on_warning = function(w) warnings[#warnings + 1] = w end }))
    assert.equals(1, #warnings)
    assert.equals(warnings[1], db:stats().warning)
    assert(db:close())
  end)

  it("that raises: open raises that error and has closed the store, so the file can be opened at once", function()
    local ok, err = pcall(hurrahdb.open, path, { on_warning = function(w) error("refused: " .. w, 0) end })
    assert.is_false(ok)
    assert.matches("^refused: ", err)
    -- no collection in between: nothing else releases the file
    local db, err2 = hurrahdb.open(path)
    assert.is_not_nil(db, err2)
    assert.equals("v", db:get("k"))
    assert(db:close())
  end)

  it("that raises a table: open raises that same table", function()
    local thrown = { reason = "no" }
    local ok, err = pcall(hurrahdb.new, { path = path, on_warning = function() error(thrown) end })
    assert.is_false(ok)
    assert.equals(thrown, err)
    assert(assert(hurrahdb.open(path)):close())
  end)
end)

describe("a store", function()
  local db
  before_each(function() db = hurrahdb.new() end)
  after_each(function() db:close() end)

  describe("db:set()", function()
    it("returns true and stores the value", function()
      assert.is_true(db:set("name", "hurrah"))
      assert.equals("hurrah", db:get("name"))
    end)

    it("overwrites the previous value", function()
      db:set("k", "one")
      assert.is_true(db:set("k", "two"))
      assert.equals("two", db:get("k"))
      assert.equals(1, db:count())
    end)

    it("deletes the key when the value is nil", function()
      db:set("k", "v")
      assert.is_true(db:set("k", nil))
      assert.is_false(db:exists("k"))
      assert.equals(0, db:count())
    end)

    it("deletes the key when the value is missing", function()
      db:set("k", "v")
      assert.is_true(db:set("k"))
      assert.is_nil(db:get("k"))
    end)

    it("converts a number key like tostring", function()
      assert.is_true(db:set(1, "x"))
      assert.equals("x", db:get("1"))
      assert.equals("x", db:get(1))
      assert.is_true(db:set(1.5, "y"))
      assert.equals("y", db:get(tostring(1.5)))
      assert.same(helpers.sorted{ "1", tostring(1.5) }, helpers.sorted(db:keys()))
    end)

    for _, row in ipairs(bad_keys) do
      it("raises bad argument when the key is " .. row[1], function()
        local ok, err = pcall(db.set, db, row[2], "v")
        assert.is_false(ok)
        assert.matches("bad argument", err)
        assert.equals(0, db:count())
      end)
    end

    it("returns nil, err (a string) when the value cannot be stored", function()
      local ok, err = db:set("k", function() end)
      assert.is_nil(ok)
      assert.is_string(err)
    end)
  end)

  describe("a key", function()
    local binary_keys = {
      { "the empty string", "" },
      { "a NUL byte", "\0" },
      { "NUL in the middle", "a\0b" },
      { "a trailing NUL", "a\0" },
      { "a newline", "line\nbreak" },
      { "CR LF", "\r\n" },
      { "RESP framing", "*3\r\n$3\r\nSET\r\n" },
      { "bytes 128-255", "\128\200\255" },
      { "invalid UTF-8", "\xc3\x28" },
      { "a long key", string.rep("k", 10000) },
      { "the prefix of another key", "a" },
      { "a key with spaces", "a b" },
    }

    it("is binary-safe and distinct from the others", function()
      for i, row in ipairs(binary_keys) do
        assert.is_true(db:set(row[2], i), row[1])
      end
      assert.equals(#binary_keys, db:count())
      for i, row in ipairs(binary_keys) do
        assert.equals(i, db:get(row[2]), row[1])
        assert.is_true(db:exists(row[2]), row[1])
      end
      local expected = {}
      for i, row in ipairs(binary_keys) do expected[i] = row[2] end
      assert.same(helpers.sorted(expected), helpers.sorted(db:keys()))
    end)

    for _, row in ipairs(binary_keys) do
      it("can be " .. row[1] .. " and deleted alone", function()
        for _, other in ipairs(binary_keys) do db:set(other[2], other[1]) end
        assert.is_true(db:delete(row[2]))
        assert.is_false(db:exists(row[2]))
        assert.equals(#binary_keys - 1, db:count())
        for _, other in ipairs(binary_keys) do
          if other[2] ~= row[2] then
            assert.equals(other[1], db:get(other[2]))
          end
        end
      end)
    end
  end)

  describe("db:get()", function()
    it("returns nil for a missing key", function()
      assert.is_nil(db:get("missing"))
    end)

    it("returns the stored value", function()
      db:set("k", { a = 1 })
      assert.same({ a = 1 }, db:get("k"))
    end)

    it("returns a fresh table each time", function()
      db:set("k", { a = 1 })
      local first = db:get("k")
      first.a = 2
      assert.same({ a = 1 }, db:get("k"))
    end)

    for _, row in ipairs(bad_keys) do
      it("raises bad argument when the key is " .. row[1], function()
        local ok, err = pcall(db.get, db, row[2])
        assert.is_false(ok)
        assert.matches("bad argument", err)
      end)
    end
  end)

  describe("db:delete()", function()
    it("returns true when the key existed", function()
      db:set("k", "v")
      assert.is_true(db:delete("k"))
      assert.is_nil(db:get("k"))
      assert.equals(0, db:count())
    end)

    it("returns false when the key did not exist", function()
      assert.is_false(db:delete("missing"))
      db:set("k", "v")
      db:delete("k")
      assert.is_false(db:delete("k"))
    end)

    for _, row in ipairs(bad_keys) do
      it("raises bad argument when the key is " .. row[1], function()
        local ok, err = pcall(db.delete, db, row[2])
        assert.is_false(ok)
        assert.matches("bad argument", err)
      end)
    end
  end)

  describe("db:exists()", function()
    it("returns true for a key that is set", function()
      db:set("k", false)
      assert.is_true(db:exists("k"))
    end)

    it("returns true for a key whose value is null", function()
      db:set("k", hurrahdb.null)
      assert.is_true(db:exists("k"))
    end)

    it("returns false for a missing key", function()
      assert.is_false(db:exists("missing"))
    end)

    for _, row in ipairs(bad_keys) do
      it("raises bad argument when the key is " .. row[1], function()
        local ok, err = pcall(db.exists, db, row[2])
        assert.is_false(ok)
        assert.matches("bad argument", err)
      end)
    end
  end)

  describe("db:count() and #db", function()
    it("return the number of keys", function()
      assert.equals(0, db:count())
      assert.equals(0, #db)
      for i = 1, 100 do db:set("k" .. i, i) end
      assert.equals(100, db:count())
      assert.equals(100, #db)
      for i = 1, 40 do db:delete("k" .. i) end
      assert.equals(60, db:count())
      assert.equals(60, #db)
    end)

    it("return a whole number (an integer where Lua has them)", function()
      db:set("k", 1)
      assert.equals(helpers.HAS_INTEGERS and "integer" or "float", helpers.math_type(db:count()))
      assert.equals(helpers.HAS_INTEGERS and "integer" or "float", helpers.math_type(#db))
      assert.equals(1, db:count())
    end)
  end)

  describe("db:keys()", function()
    it("returns an empty array for an empty store", function()
      assert.same({}, db:keys())
    end)

    it("returns all keys", function()
      for _, k in ipairs{ "a", "b", "user:1" } do db:set(k, true) end
      assert.same({ "a", "b", "user:1" }, helpers.sorted(db:keys()))
    end)

    it("returns only the keys with the given prefix", function()
      for _, k in ipairs{ "user:1", "user:2", "users", "session:1", "user:" } do db:set(k, 1) end
      assert.same({ "user:", "user:1", "user:2" }, helpers.sorted(db:keys("user:")))
      assert.same({}, db:keys("nothing"))
    end)

    it("treats the prefix as bytes, not as a pattern", function()
      for _, k in ipairs{ "a.b", "axb", "a%", "a\0x", "a\0y", "a" } do db:set(k, 1) end
      assert.same({ "a.b" }, db:keys("a."))
      assert.same({ "a%" }, db:keys("a%"))
      assert.same({ "a\0x", "a\0y" }, helpers.sorted(db:keys("a\0")))
    end)

    it("with the empty prefix returns all keys", function()
      for _, k in ipairs{ "", "a", "b" } do db:set(k, 1) end
      assert.same({ "", "a", "b" }, helpers.sorted(db:keys("")))
    end)

    for _, row in ipairs{ { "a boolean", true }, { "a table", {} }, { "a function", print } } do
      it("raises bad argument when the prefix is " .. row[1], function()
        local ok, err = pcall(db.keys, db, row[2])
        assert.is_false(ok)
        assert.matches("bad argument", err)
      end)
    end
  end)

  describe("db:pairs()", function()
    it("iterates keys and decoded values", function()
      db:set("a", { 1, 2 })
      db:set("b", "text")
      local seen = {}
      for k, v in db:pairs() do seen[k] = v end
      assert.same({ a = { 1, 2 }, b = "text" }, seen)
    end)
  end)

  describe("db:sync()", function()
    it("returns true on a memory-only store", function()
      db:set("k", "v")
      assert.is_true(db:sync())
    end)
  end)

  describe("db:stats()", function()
    it("returns a table with the documented fields", function()
      db:set("a", 1)
      db:set("b", string.rep("x", 1000))
      local s = db:stats()
      assert.is_table(s)
      assert.equals(2, s.keys)
      assert.is_number(s.memory)
      assert.is_true(s.memory > 1000)
      assert.is_number(s.aof_bytes)
      assert.is_number(s.aof_pending_bytes)
      assert.is_number(s.loaded_records)
      assert.equals(0, s.loaded_records)
      assert.equals(0, s.errors)
      assert.is_nil(s.last_error)
    end)
  end)

  describe("tostring(db)", function()
    it("describes the store before and after close", function()
      local s = tostring(db)
      assert.is_string(s)
      assert.matches("hurrahdb", s)
      db:close()
      assert.is_string(tostring(db))
    end)
  end)
end)

describe("methods called without a store", function()
  local db = hurrahdb.new()
  local not_stores = {
    { "nil", nil },
    { "a string", "db" },
    { "a number", 1 },
    { "a table", {} },
    { "another userdata", io.stdout },
  }
  local all = { { "close", {} } }
  for _, m in ipairs(methods) do all[#all + 1] = m end
  for _, m in ipairs(all) do
    local name, args = m[1], m[2]
    for _, row in ipairs(not_stores) do
      it("db." .. name .. "() raises bad argument when self is " .. row[1], function()
        local fn = db[name]
        assert.is_function(fn)
        local ok, err = pcall(fn, row[2], helpers.unpack(args))
        assert.is_false(ok)
        assert.matches("bad argument", err)
      end)
    end
    -- Light userdata share one metatable, which the debug library can make
    -- the stores' own: a pointer that is no store must still be refused.
    it("db." .. name .. "() raises bad argument when self is a light userdata given the stores' metatable", function()
      local ok_lib, testlib = pcall(require, "hdb_testlib")
      if not ok_lib then
        pending("needs make test (hdb_testlib)")
        return
      end
      local lud = testlib.light_userdata()
      debug.setmetatable(lud, getmetatable(db))
      local ok, err = pcall(db[name], lud, helpers.unpack(args))
      debug.setmetatable(lud, nil)
      assert.is_false(ok)
      assert.matches("bad argument", err)
    end)
  end
end)

describe("db:close()", function()
  it("returns true, and true again when called twice", function()
    local db = hurrahdb.new()
    assert.is_true(db:close())
    assert.is_true(db:close())
  end)

  for _, m in ipairs(methods) do
    local name, args = m[1], m[2]
    it("makes db:" .. name .. "() raise 'store is closed'", function()
      local db = hurrahdb.new()
      db:set("k", "v")
      db:close()
      local ok, err = pcall(db[name], db, helpers.unpack(args))
      assert.is_false(ok)
      assert.matches("store is closed", err, 1, true)
    end)
  end

  it("makes #db raise 'store is closed'", function()
    local db = hurrahdb.new()
    db:close()
    local ok, err = pcall(function() return #db end)
    assert.is_false(ok)
    assert.matches("store is closed", err, 1, true)
  end)

  -- to-be-closed variables are Lua 5.4 syntax: compiled only there
  if _VERSION == "Lua 5.4" then it("is called by a <close> variable at the end of its scope", function()
    local kept = assert(load([[
      local hurrahdb = ...
      local kept
      do
        local db <close> = hurrahdb.new()
        kept = db
        db:set("k", "v")
      end
      return kept
    ]]))(hurrahdb)
    local ok, err = pcall(kept.get, kept, "k")
    assert.is_false(ok)
    assert.matches("store is closed", err, 1, true)
  end) end
end)
