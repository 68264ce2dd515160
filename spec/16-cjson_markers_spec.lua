-- Under the default codec, the values lua-cjson itself makes round-trip as
-- cjson's users expect: tables carrying cjson.array_mt or
-- cjson.empty_array_mt, and cjson.empty_array, are stored as JSON arrays.
--
-- Debian's lua-cjson (2.1.0) has none of these markers; OpenResty's has all
-- three. The specs put a module with OpenResty's fields in
-- package.loaded.cjson, which is where hurrahdb looks for them (it never
-- loads cjson itself), and a light userdata made in C for empty_array.

local hurrahdb = require "hurrahdb"
local helpers = require "spec.helpers"
local testlib = require "hdb_testlib"

local function openresty_like_cjson()
  return {
    array_mt = { __name = "array_mt" },
    empty_array_mt = { __name = "empty_array_mt" },
    empty_array = testlib.light_userdata(),
  }
end

-- The SET records of the file, by key: the raw text of each value.
local function stored_text(path)
  local model = helpers.replay_aof(assert(helpers.parse_aof(assert(helpers.read_file(path)))))
  return model
end

describe("lua-cjson's markers under the default codec", function()
  local dir, path, saved_cjson, saved_safe, cjson
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
    saved_cjson, saved_safe = package.loaded.cjson, package.loaded["cjson.safe"]
    cjson = openresty_like_cjson()
    package.loaded.cjson = cjson
    package.loaded["cjson.safe"] = nil
  end)
  after_each(function()
    package.loaded.cjson, package.loaded["cjson.safe"] = saved_cjson, saved_safe
    -- An unknown metatable makes the store read the markers anew: the
    -- fake ones are forgotten.
    local db = hurrahdb.new()
    assert.is_nil(db:set("x", setmetatable({}, {})))
    assert.is_nil(db:set("x", { cjson.empty_array }), "the fake markers are still taken")
    db:close()
    helpers.rmdir(dir)
  end)

  it("stores a table carrying array_mt as a JSON array and gives back a plain table", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert.is_true(db:set("list", setmetatable({ 1, "two", { x = 3 } }, cjson.array_mt)))
    local v = db:get("list")
    assert.is_nil(getmetatable(v))
    helpers.assert_same_typed({ 1, "two", { x = 3 } }, v)
    assert(db:close())
    assert.equals('[1,"two",{"x":3}]', stored_text(path).list)
  end)

  it("stores empty arrays as [] and gives back an empty table carrying empty_array_mt", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    local empties = {
      array_mt = setmetatable({}, cjson.array_mt),
      empty_array_mt = setmetatable({}, cjson.empty_array_mt),
      empty_array = cjson.empty_array,
    }
    for name, value in pairs(empties) do
      assert.is_true(db:set(name, value), name)
      local got = db:get(name)
      assert.equals("table", type(got), name)
      assert.is_nil(next(got), name)
      assert.equals(cjson.empty_array_mt, getmetatable(got), name)
    end
    assert(db:close())
    local text = stored_text(path)
    for name in pairs(empties) do assert.equals("[]", text[name], name) end
    -- and so they come back after a reopen
    db = assert(hurrahdb.open(path))
    assert.equals(cjson.empty_array_mt, getmetatable(db:get("empty_array")))
    assert(db:close())
  end)

  it("stores markers nested anywhere in a value", function()
    local db = hurrahdb.new()
    local value = {
      tags = cjson.empty_array,
      items = setmetatable({ { id = 1, seen = setmetatable({}, cjson.array_mt) } }, cjson.array_mt),
      meta = setmetatable({ a = 1 }, cjson.empty_array_mt), -- not empty: a map, as cjson writes it
    }
    assert.is_true(db:set("k", value))
    local got = db:get("k")
    assert.equals(cjson.empty_array_mt, getmetatable(got.tags))
    assert.equals(cjson.empty_array_mt, getmetatable(got.items[1].seen))
    assert.is_nil(getmetatable(got.items))
    assert.is_nil(getmetatable(got.meta))
    assert.equals(1, got.meta.a)
    assert.equals(1, got.items[1].id)
    db:close()
  end)

  it("refuses an array_mt table that JSON cannot hold as an array, and keeps the old value", function()
    local db = hurrahdb.new()
    assert(db:set("k", "old"))
    local cases = {
      { setmetatable({ 1, nil, 3 }, cjson.array_mt), "$" },
      { setmetatable({ a = 1 }, cjson.array_mt), "$" },
      { { list = setmetatable({ 1, 2, x = true }, cjson.array_mt) }, "$.list" },
    }
    for i, case in ipairs(cases) do
      local ok, err = db:set("k", case[1])
      assert.is_nil(ok, "case " .. i)
      assert.matches("at " .. case[2], err, 1, true)
      assert.equals("old", db:get("k"))
    end
    db:close()
  end)

  it("still refuses every other metatable and light userdata", function()
    local db = hurrahdb.new()
    for _, value in ipairs { setmetatable({}, {}), setmetatable({ 1 }, { __index = cjson.array_mt }),
                             { x = setmetatable({}, { __name = "array_mt" }) } } do
      local ok, err = db:set("k", value)
      assert.is_nil(ok)
      assert.matches("a table with a metatable", err, 1, true)
      assert.is_nil(db:get("k"))
    end
    db:close()
  end)

  it("takes the markers of a cjson loaded after the store was opened, and of cjson.safe", function()
    package.loaded.cjson = nil
    local db = hurrahdb.new()
    local early = openresty_like_cjson()
    assert.is_nil(db:set("k", setmetatable({}, early.array_mt)), "markers of a module that is not loaded")
    package.loaded.cjson = early
    assert.is_true(db:set("k", setmetatable({ 1 }, early.array_mt)))
    -- a reloaded module, with new markers: the old ones are no longer taken
    local later = openresty_like_cjson()
    package.loaded.cjson = later
    assert.is_true(db:set("k", setmetatable({}, later.array_mt)))
    assert.equals(later.empty_array_mt, getmetatable(db:get("k")))
    assert.is_nil(db:set("k", setmetatable({}, early.array_mt)))
    -- only cjson.safe loaded
    package.loaded.cjson = nil
    package.loaded["cjson.safe"] = early
    assert.is_true(db:set("k", early.empty_array))
    assert.equals(early.empty_array_mt, getmetatable(db:get("k")))
    db:close()
  end)

  it("gives a plain empty table for [] when no cjson with markers is loaded", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(db:set("k", cjson.empty_array))
    assert(db:close())
    package.loaded.cjson = { encode = function() end } -- as Debian's: no markers
    db = assert(hurrahdb.open(path))
    local got = db:get("k")
    assert.same({}, got)
    assert.is_nil(getmetatable(got))
    assert(db:close())
  end)
end)

describe("Debian's lua-cjson, which has no markers", function()
  it("changes nothing: plain tables round-trip, and their metatables are refused", function()
    local real = require "cjson"
    local db = hurrahdb.new()
    local value = real.decode('{"a":[1,2],"b":{}}')
    assert.is_true(db:set("k", value))
    helpers.assert_same_typed(value, db:get("k"))
    local ok, err = db:set("k", setmetatable({}, {}))
    assert.is_nil(ok)
    assert.matches("metatable", err, 1, true)
    db:close()
  end)
end)

-- With OpenResty's lua-cjson installed (CI has Debian's), the real markers.
local real_cjson = require "cjson"
if real_cjson.array_mt then
  describe("OpenResty's lua-cjson", function()
    it("round-trips what cjson.decode_array_with_array_mt(true) makes, and cjson.encode writes [] again", function()
      local c = real_cjson.new()
      c.decode_array_with_array_mt(true)
      local value = c.decode('{"list":[1,2],"empty":[],"map":{}}')
      local db = hurrahdb.new()
      assert.is_true(db:set("k", value))
      local got = db:get("k")
      assert.same({ 1, 2 }, got.list)
      assert.equals("[]", real_cjson.encode(got.empty))
      assert.equals("{}", real_cjson.encode(got.map))
      assert.is_true(db:set("e", real_cjson.empty_array))
      assert.equals("[]", real_cjson.encode(db:get("e")))
      db:close()
    end)
  end)
end
