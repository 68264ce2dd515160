-- Values: what you get is what you set, exactly, or the set is refused
-- with nil, err naming where in the value the problem is.

local helpers = require "spec.helpers"
local cjson = require "cjson"
local hurrahdb = require "hurrahdb"

local null = hurrahdb.null

local function nested_arrays(depth)
  local root = {}
  local cur = root
  for _ = 2, depth do
    local child = {}
    cur[1] = child
    cur = child
  end
  return root
end

local function nested_maps(depth)
  local root = {}
  local cur = root
  for _ = 2, depth do
    local child = {}
    cur.next = child
    cur = child
  end
  return root
end

local megabyte = string.rep(helpers.all_bytes(), 4096)

-- { description, value }: each must come back deep-equal, with the same
-- math.type for every number and the same sign for every zero.
local accepted = {
  -- strings
  { "the empty string", "" },
  { "a plain string", "hello, world" },
  { "a string that looks like a number", "123" },
  { "a string that looks like JSON", '{"a":[1,2]}' },
  { "a NUL byte", "\0" },
  { "NUL bytes inside a string", "a\0b\0\0c" },
  { "all 256 bytes", helpers.all_bytes() },
  { "invalid UTF-8", "\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc" },
  { "valid UTF-8 with escapes JSON cares about", "\"\\/\b\f\n\r\t\u{2028}\u{2029}\127\u{10FFFF}" },
  { "a 1 MB string of every byte", megabyte },
  -- integers
  { "integer 0", 0 },
  { "integer 1", 1 },
  { "integer -1", -1 },
  -- floats
  { "float 0.5", 0.5 },
  { "float 1/3", 1 / 3 },
  { "float 0.1 + 0.2", 0.1 + 0.2 },
  { "float 2^53", 2 ^ 53 },
  { "float 2^63", 2.0 ^ 63 },
  { "float 1e300", 1e300 },
  { "float -1e300", -1e300 },
  { "float 1e16", 1e16 },
  { "float 0.0", 0.0 },
  { "float -0.0", -0.0 },
  { "float 5e-324 (smallest subnormal)", 5e-324 },
  { "float 2.2250738585072014e-308 (smallest normal)", 2.2250738585072014e-308 },
  { "float 1.7976931348623157e308 (largest)", 1.7976931348623157e308 },
  { "float 2.0", 2.0 },
  { "float -3.0", -3.0 },
  { "float 100.0", 100.0 },
  { "float -1.5", -1.5 },
  -- booleans and null
  { "true", true },
  { "false", false },
  { "hurrahdb.null", null },
  { "cjson.null", cjson.null },
  -- arrays
  { "an empty table", {} },
  { "an array of integers", { 1, 2, 3 } },
  { "an array of mixed scalars", { "a", 1, 2.0, 0.5, true, false, null, -0.0 } },
  { "an array with null holes", { null, 1, null, null } },
  { "nested arrays", { { 1, 2 }, { 3, { 4, { 5 } } }, {} } },
  { "an array of tables", { { id = 1, name = "a" }, { id = 2, tags = { "x", "y" } }, {} } },
  { "an array of floats that look like integers", { 1.0, 2.0, 3.0 } },
  { "an array of extreme numbers", { 5e-324, 1e300, 2 ^ 53, -2 ^ 53, 2 ^ 63, 1.7976931348623157e308 } },
  { "a long array", (function() local t = {} for i = 1, 10000 do t[i] = i * 1.5 end return t end)() },
  -- maps
  { "a map", { name = "hurrah", size = 3, ratio = 0.75, ok = true } },
  { "a map with number-like keys", { ["1"] = "one", ["2"] = "two" } },
  { "a map with an empty key", { [""] = "empty" } },
  { "a map with keys needing escapes", { ["a b"] = 1, ["\0"] = 2, ['"q"'] = 3, ["\n"] = 4, ["\255"] = 5 } },
  { "a map with null and false values", { a = null, b = false } },
  { "a map with float values", { whole = 2.0, half = 0.5, negzero = -0.0 } },
  { "nested maps and arrays", { user = { name = "ann", roles = { "admin", "dev" },
                                         limits = { daily = 10, ratio = 1.0 } }, list = { { a = {} } } } },
  { "arrays nested 100 deep", nested_arrays(100) },
  { "maps nested 100 deep", nested_maps(100) },
}

if helpers.HAS_INTEGERS then
  -- 64-bit integers, which come back as integers. (Integer operators are
  -- Lua 5.3+ syntax, hence the chunk.)
  local big = assert(load("return (1 << 53) + 1"))()
  local more = {
    { "math.maxinteger", math.maxinteger },
    { "math.mininteger", math.mininteger },
    { "2^53 + 1 as an integer", big },
    { "-(2^53 + 1) as an integer", -big },
    { "a large integer", math.tointeger(123456789012345678) or 123456789012345678 },
    { "an array of extreme integers", { math.maxinteger, math.mininteger, big, -big, 5e-324 } },
    { "a map with integer values", { max = math.maxinteger, min = math.mininteger } },
  }
  for _, row in ipairs(more) do accepted[#accepted + 1] = row end
else
  -- LuaJIT: every number is a double, and every double round-trips,
  -- whole ones beyond 2^53 included.
  local more = {
    { "2^53 - 1", 2 ^ 53 - 1 },
    { "-(2^53 - 1)", -(2 ^ 53 - 1) },
    { "2^60 (whole, beyond 2^53)", 2 ^ 60 },
    { "-2^63", -2 ^ 63 },
    { "2^64", 2 ^ 64 },
    { "1e21 (whole, printed with an exponent)", 1e21 },
    { "123456789012345680 (the double nearest 123456789012345678)", 123456789012345680 },
    { "a map of whole doubles", { a = 2 ^ 53, b = -2 ^ 53, c = 1e15 + 1 } },
  }
  for _, row in ipairs(more) do accepted[#accepted + 1] = row end
end

describe("db:set() and db:get()", function()
  describe("round-trip exactly in memory", function()
    local db
    setup(function() db = hurrahdb.new() end)
    teardown(function() db:close() end)

    for _, row in ipairs(accepted) do
      local description, value = row[1], row[2]
      it(description, function()
        assert.is_true(db:set("k", value))
        local got = db:get("k")
        assert.same(value, got)
        helpers.assert_same_typed(value, got, description)
      end)
    end
  end)

  describe("round-trip exactly through the file", function()
    local dir, db
    setup(function()
      dir = helpers.tmpdir()
      local path = dir .. "/values.aof"
      local writer = assert(hurrahdb.new{ path = path, sync_time = 0 })
      for i, row in ipairs(accepted) do
        assert(writer:set("v" .. i, row[2]))
      end
      assert.is_true(writer:close())
      db = assert(hurrahdb.open(path))
    end)
    teardown(function()
      if db then db:close() end
      helpers.rmdir(dir)
    end)

    for i, row in ipairs(accepted) do
      local description, value = row[1], row[2]
      it(description, function()
        local got = db:get("v" .. i)
        assert.same(value, got)
        helpers.assert_same_typed(value, got, description)
      end)
    end
  end)

  it("keep -0.0 negative", function()
    local db = hurrahdb.new()
    db:set("z", -0.0)
    local v = db:get("z")
    assert.equals("float", helpers.math_type(v))
    assert.equals(-math.huge, 1 / v)
    db:set("z", { -0.0 })
    assert.equals(-math.huge, 1 / db:get("z")[1])
    db:close()
  end)

  if helpers.HAS_INTEGERS then
    it("keep 2.0 a float and 2 an integer", function()
      local db = hurrahdb.new()
      db:set("f", 2.0)
      db:set("i", 2)
      assert.equals("float", math.type(db:get("f")))
      assert.equals("integer", math.type(db:get("i")))
      db:close()
    end)
  end
end)

if not helpers.HAS_INTEGERS then
  describe("on a Lua without integers (LuaJIT)", function()
    local dir
    before_each(function() dir = helpers.tmpdir() end)
    after_each(function() helpers.rmdir(dir) end)

    -- A file written by Lua 5.4 may hold integers a double cannot hold.
    local function file_with(json)
      return helpers.write_v1_file(dir .. "/from54.aof", { { "k", json } })
    end

    it("get returns nil, err for an integer beyond 2^53 that a Lua 5.4 store wrote", function()
      local db = assert(hurrahdb.open(file_with("[1,9007199254740993]")))
      local v, err = db:get("k")
      assert.is_nil(v)
      assert.matches("cannot hold exactly", err, 1, true)
      db:close()
    end)

    it("get reads an integer a double holds exactly as that double", function()
      local db = assert(hurrahdb.open(file_with("[9007199254740992,-42,0]")))
      helpers.assert_same_typed({ 2 ^ 53, -42, 0 }, db:get("k"))
      db:close()
    end)

    it("get returns nil, err for 2^63 - 1, which no double holds", function()
      local db = assert(hurrahdb.open(file_with("9223372036854775807")))
      local v, err = db:get("k")
      assert.is_nil(v)
      assert.matches("cannot hold exactly", err, 1, true)
      db:close()
    end)
  end)
end

local function cycle()
  local t = { name = "loop" }
  t.self = t
  return t
end

local function indirect_cycle()
  local a, b = {}, {}
  a.b = b
  b.list = { 1, a }
  return a
end

-- { description, value, path }: set must return nil, err with err naming
-- the path, and leave the store as it was.
local refused = {
  { "a function", function() end, "$" },
  { "a coroutine", coroutine.create(function() end), "$" },
  { "a userdata", io.stdout, "$" },
  { "NaN", 0 / 0, "$" },
  { "inf", math.huge, "$" },
  { "-inf", -math.huge, "$" },
  { "a table that contains itself", cycle(), "$.self" },
  { "an indirect cycle", indirect_cycle(), "$" },
  { "arrays nested deeper than 1000 levels", nested_arrays(1100), "$" },
  { "maps nested deeper than 1000 levels", nested_maps(1100), "$" },
  { "a mixed table", { [1] = "a", b = 2 }, "$" },
  { "a table with a float key", { [1.5] = 1 }, "$" },
  { "a sparse array", { [1] = 1, [3] = 3 }, "$" },
  { "an array starting at 2", { [2] = "b", [3] = "c" }, "$" },
  { "an array with a 0 index", { [0] = "z", [1] = "a" }, "$" },
  { "a negative index", { [-1] = "a" }, "$" },
  { "a table with a boolean key", { [true] = 1 }, "$" },
  { "a table with a table key", { [{}] = 1 }, "$" },
  { "a table with a metatable", setmetatable({}, {}), "$" },
  { "a function in an array", { 1, function() end }, "$[2]" },
  { "NaN in a map", { x = 0 / 0 }, "$.x" },
  { "inf deep inside", { a = { b = { 1, 2, math.huge } } }, "$.a.b[3]" },
  { "a function deep inside", { a = { b = { 1, 2, function() end } } }, "$.a.b[3]" },
  { "a userdata in an array of maps", { { ok = 1 }, { file = io.stderr } }, "$[2].file" },
  { "a sparse array inside", { list = { 1, 2, { x = { [1] = 1, [3] = 3 } } } }, "$.list[3].x" },
  { "a metatable inside", { a = { setmetatable({}, { __index = {} }) } }, "$.a[1]" },
}

describe("strings with a byte to escape", function()
  -- The encoder and the decoder look at plain bytes sixteen and eight at a
  -- time: a byte to escape at every place of two blocks of sixteen, after
  -- plain runs of every length, must be seen.
  it("come back unchanged wherever the byte stands, and are escaped in the file", function()
    local dir = helpers.tmpdir()
    local db = assert(hurrahdb.open(dir .. "/data.aof", { sync_time = 1000 }))
    local specials = { "\0", "\1", "\n", "\31", '"', "\\" }
    local plain = { "\127", "\128", "\255", " ", "!", "#", "[", "]", "~" }
    local n = 0
    for before = 0, 40 do
      for _, ch in ipairs(specials) do
        for after = 0, 9 do
          local v = string.rep("a", before) .. ch .. string.rep("z", after) .. ch
          n = n + 1
          assert(db:set("k" .. n, v))
          assert.equals(v, db:get("k" .. n))
        end
      end
      for _, ch in ipairs(plain) do
        local v = string.rep("a", before) .. ch .. string.rep("z", 17) .. ch .. "\n"
        n = n + 1
        assert(db:set("k" .. n, v))
        assert.equals(v, db:get("k" .. n))
      end
    end
    db:close()
    -- what the file holds is JSON that cjson reads back to the same strings
    local model = helpers.replay_aof(assert(helpers.parse_aof(helpers.read_file(dir .. "/data.aof"))))
    db = assert(hurrahdb.open(dir .. "/data.aof"))
    for k, json in pairs(model) do
      assert.equals(db:get(k), cjson.decode(json))
      assert.is_nil(json:find("[%z\1-\31]"), "a control byte written as it is")
    end
    db:close()
    helpers.rmdir(dir)
  end)
end)

describe("db:set()", function()
  local db
  before_each(function()
    db = hurrahdb.new()
    db:set("k", "old")
    db:set("other", { 1, 2 })
  end)
  after_each(function() db:close() end)

  for _, row in ipairs(refused) do
    local description, value, path = row[1], row[2], row[3]

    it("returns nil, err naming " .. path .. " for " .. description, function()
      local ok, err = db:set("k", value)
      assert.is_nil(ok)
      assert.is_string(err)
      assert.matches(path, err, 1, true)
      -- the store is unchanged
      assert.equals("old", db:get("k"))
      assert.same({ 1, 2 }, db:get("other"))
      assert.equals(2, db:count())
    end)

    it("does not create the key for " .. description, function()
      local ok = db:set("fresh", value)
      assert.is_nil(ok)
      assert.is_false(db:exists("fresh"))
      assert.equals(2, db:count())
    end)
  end

  it("writes nothing to the file for a refused value", function()
    local dir = helpers.tmpdir()
    finally(function() helpers.rmdir(dir) end)
    local path = dir .. "/refused.aof"
    local store = assert(hurrahdb.new{ path = path, sync_time = 0 })
    assert.is_true(store:set("k", "old"))
    assert.is_true(store:sync())
    local before = helpers.read_file(path)
    for _, row in ipairs(refused) do
      assert.is_nil(store:set("k", row[2]), row[1])
      assert.is_nil(store:set("fresh", row[2]), row[1])
    end
    assert.is_true(store:sync())
    assert.equals(before, helpers.read_file(path))
    assert.is_true(store:close())
    local again = assert(hurrahdb.open(path))
    assert.equals("old", again:get("k"))
    assert.equals(1, again:count())
    again:close()
  end)
end)

describe("hurrahdb", function()
  local settings = {
    "encode_number_precision", "encode_sparse_array", "encode_max_depth",
    "decode_max_depth", "encode_invalid_numbers", "decode_invalid_numbers",
    "encode_keep_buffer",
  }

  local function snapshot()
    local s = {}
    for _, name in ipairs(settings) do
      if cjson[name] then s[name] = helpers.pack(cjson[name]()) end
    end
    return s
  end

  it("does not change the settings of the global cjson module", function()
    local before = snapshot()
    local db = hurrahdb.new()
    db:set("n", { 1 / 3, 2.0, 2 ^ 53, 5e-324 })
    db:set("s", { [1] = 1, [2] = 2 })
    db:set("sparse", { [1] = 1, [5] = 5 })
    db:set("nan", 0 / 0)
    db:set("deep", nested_arrays(1100))
    db:get("n")
    db:close()
    assert.same(before, snapshot())
    assert.equals('[1,2]', cjson.encode({ 1, 2 }))
  end)

  it("is not affected by the settings of the global cjson module", function()
    local before = snapshot()
    finally(function()
      cjson.encode_number_precision(before.encode_number_precision[1])
      cjson.encode_sparse_array(helpers.unpack(before.encode_sparse_array, 1, before.encode_sparse_array.n))
      cjson.encode_invalid_numbers(before.encode_invalid_numbers[1])
    end)
    cjson.encode_number_precision(3)
    cjson.encode_sparse_array(true)
    cjson.encode_invalid_numbers(true)
    local db = hurrahdb.new()
    assert.is_true(db:set("third", 1 / 3))
    assert.equals(1 / 3, db:get("third"))
    assert.is_nil(db:set("sparse", { [1] = 1, [5] = 5 }))
    assert.is_nil(db:set("nan", 0 / 0))
    db:close()
  end)
end)

describe("db:set() of a value whose JSON text passes the 512 MiB limit", function()
  -- Each value is set in a child process with bounded memory: ulimit -v of
  -- 1.5 GiB, or under AddressSanitizer (which needs a vast address space) a
  -- cap of 768 MiB on any one allocation. An encoder that grew its buffer to
  -- the end of the value would fail there with out of memory, or be killed
  -- by the time bound, instead of eating the machine's memory.
  local LIMIT = 512 * 1024 * 1024
  local sanitized = os.getenv("ASAN_OPTIONS") ~= nil
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  local function set_in_child(case)
    local script, path = "spec/support/huge_value.lua", dir .. "/data.aof"
    local cmd
    if sanitized then
      cmd = "timeout -s KILL 60 " .. helpers.lua_command_env({
        ASAN_OPTIONS = os.getenv("ASAN_OPTIONS") .. ":allocator_may_return_null=1:max_allocation_size_mb=768",
      }, script, case, path)
    else
      cmd = "ulimit -v 1572864 && timeout -s KILL 60 " .. helpers.lua_command(script, case, path)
    end
    local out = helpers.capture(cmd .. " 2>&1; echo exit=$?")
    local report = {}
    for name, value in out:gmatch("([%w_]+)=([^\n]*)") do report[name] = value end
    assert.equals("true", report.done, "the child did not finish within 60 s:\n" .. out)
    assert.equals("0", report.exit, out)
    return report, out
  end

  -- What every refusal must leave: the old value, and a file unchanged.
  local function assert_store_unchanged(report)
    assert.equals("old", report.old)
    assert.equals("1", report.count)
    assert.equals("true", report.file_unchanged, "bytes were appended to the AOF")
  end

  it("refuses 30 levels of { t, t } over a 1 KiB string (a terabyte of JSON) as soon as the text "
     .. "passes the limit, with memory growing by about the limit #slow", function()
    local report, out = set_in_child("nested")
    assert.equals("nil", report.ok, out)
    assert.matches("value too long", report.err, 1, true)
    assert.matches(tostring(LIMIT), report.err, 1, true) -- names the limit
    assert.is_true(tonumber(report.seconds) < 30, "the refusal took " .. report.seconds .. " s")
    -- The buffer stops at the limit instead of doubling past it. Under
    -- AddressSanitizer realloc holds the old and the new block at once.
    local bound = sanitized and 2 * 512 or 512 + 64
    assert.is_true(tonumber(report.peak_growth_mib) <= bound,
      "memory grew by " .. report.peak_growth_mib .. " MiB during the set (bound " .. bound .. " MiB)")
    assert_store_unchanged(report)
  end)

  it("refuses a string of 100 MiB of \"\\1\" (600 MiB once escaped) before copying it #slow", function()
    local report, out = set_in_child("control")
    assert.equals("nil", report.ok, out)
    assert.matches("value too long", report.err, 1, true)
    assert.matches(tostring(LIMIT), report.err, 1, true) -- names the limit
    assert.is_true(tonumber(report.seconds) < 30, "the refusal took " .. report.seconds .. " s")
    assert.is_true(tonumber(report.peak_growth_mib) <= 16,
      "memory grew by " .. report.peak_growth_mib .. " MiB during the set")
    assert_store_unchanged(report)
  end)
end)

describe("hurrahdb.encode and hurrahdb.decode", function()
  it("give the text the store keeps and the value get returns, exactly", function()
    local db = assert(hurrahdb.new())
    local values = { 1, -0.0, 0.1 + 0.2, "a\0b", { 1, 2, { x = hurrahdb.null } }, { k = { 1.5 } }, true }
    if helpers.HAS_INTEGERS then values[#values + 1] = math.maxinteger end
    for i, v in ipairs(values) do
      local text = assert(hurrahdb.encode(v))
      helpers.assert_same_typed(v, hurrahdb.decode(text))
      assert.is_true(db:set("k" .. i, hurrahdb.decode(text)))
      helpers.assert_same_typed(db:get("k" .. i), hurrahdb.decode(text))
    end
    db:close()
  end)

  it("return nil, err, code for what cannot be encoded or decoded", function()
    local r, err, code = hurrahdb.encode({ f = function() end })
    assert.is_nil(r)
    assert.equals("value", code)
    assert.matches("function", err)
    r, err, code = hurrahdb.decode("[1,")
    assert.is_nil(r)
    assert.equals("value", code, err)
    assert.has_error(function() hurrahdb.encode(nil) end)
    assert.has_error(function() hurrahdb.decode({}) end)
  end)
end)
