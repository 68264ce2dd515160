-- The codec option: "json" (the default, exact), "cjson" (a private
-- cjson.new() instance of the installed lua-cjson, at the most precision it
-- takes), or a table { name = ..., encode = f, decode = f }. What comes back
-- under "cjson" is measured here for the lua-cjson that is installed: Debian's
-- 2.1.0 (14 digits, integers read as floats in Lua 5.4) or OpenResty's fork
-- (16 digits, integers read as integers), told apart by cjson.array_mt, which
-- only the fork has. The codec is recorded in the file (unless the values are
-- JSON), and a store is refused by a codec of another name.

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"
local cjson = require "cjson"

local OPENRESTY_CJSON = cjson.array_mt ~= nil
local mtype = math.type or function() return "float" end
-- 2^53 + 1 as an integer (Lua 5.4 only; LuaJIT cannot parse the operators)
local BIG = math.type and load("return (1 << 53) + 1")()

-- A toy serializer whose text is not JSON: the value's Lua type and its
-- text, for strings and integers only.
local function rev_codec(name)
  return {
    name = name or "rev",
    encode = function(v)
      if type(v) == "string" then return "s" .. v:reverse() end
      if mtype(v) == "integer" or (type(v) == "number" and v % 1 == 0) then return "i" .. tostring(v) end
      error("rev cannot encode a " .. type(v))
    end,
    decode = function(s)
      local tag, body = s:sub(1, 1), s:sub(2)
      if tag == "s" then return body:reverse() end
      if tag == "i" then return math.tointeger and math.tointeger(tonumber(body)) or tonumber(body) end
      error("rev cannot decode " .. s)
    end,
  }
end

describe("codec = \"cjson\"", function()
  local db
  before_each(function() db = assert(hurrahdb.new { codec = "cjson" }) end)
  after_each(function() if db then db:close() end end)

  local function roundtrip(v)
    assert(db:set("k", v))
    return db:get("k")
  end

  it("keeps the digits lua-cjson keeps: " .. (OPENRESTY_CJSON and "16" or "14"), function()
    if OPENRESTY_CJSON then
      assert.equals(3.141592653589793, roundtrip(math.pi))
    else
      assert.equals(3.1415926535898, roundtrip(math.pi))
      assert.are_not.equal(math.pi, roundtrip(math.pi))
    end
    -- 0.1 + 0.2 needs 17 digits, which no lua-cjson writes
    assert.equals(0.3, roundtrip(0.1 + 0.2))
    assert.equals(1e300, roundtrip(1e300))
  end)

  if math.type then
    it("reads integers back as " .. (OPENRESTY_CJSON and "integers" or "floats") .. " in Lua 5.4", function()
      local v = roundtrip({ 2, 2.0, -0.0 })
      if OPENRESTY_CJSON then
        assert.equals("integer", math.type(v[1]))
        assert.equals("integer", math.type(v[2])) -- 2.0 is written "2"
        assert.equals("integer", math.type(v[3]))
      else
        for i = 1, 3 do assert.equals("float", math.type(v[i])) end
      end
      -- integers are written as integers by the fork, with 14 digits by 2.1.0
      if OPENRESTY_CJSON then
        assert.equals(math.maxinteger, roundtrip(math.maxinteger))
        assert.equals("integer", math.type(roundtrip(BIG)))
        assert.equals(BIG, roundtrip(BIG))
      else
        assert.equals(9007199254741000, roundtrip(BIG))
        assert.are_not.equal(math.maxinteger, roundtrip(math.maxinteger))
      end
    end)
  end

  it("gives cjson's own shapes for sparse, mixed and other tables, and refuses what it refuses", function()
    local sparse = roundtrip({ 1, nil, 3 })
    assert.equals(1, sparse[1])
    assert.equals(cjson.null, sparse[2])
    assert.equals(3, sparse[3])
    local mixed = roundtrip({ 1, a = 2 })
    assert.equals(1, mixed["1"])
    assert.equals(2, mixed.a)
    assert.is_nil(mixed[1])
    assert.same({}, roundtrip({}))
    assert.equals(1, roundtrip(setmetatable({ a = 1 }, {})).a) -- metatables are ignored
    for _, refused in ipairs { { [1000] = 1 }, { [true] = 1 }, 0 / 0, math.huge, function() end } do
      assert(db:set("k", "old"))
      local ok, err, code = db:set("k", refused)
      assert.is_nil(ok)
      assert.is_string(err)
      assert.equals("value", code)
      assert.equals("old", db:get("k"))
    end
  end)

  it("never changes the settings of the cjson module other code uses", function()
    local before = { cjson.encode_number_precision(), cjson.decode_max_depth() }
    cjson.encode_number_precision(3)
    local ok, err = pcall(function()
      assert.equals(0.123456789, roundtrip(0.123456789))
      assert.equals(3, cjson.encode_number_precision())
    end)
    cjson.encode_number_precision(before[1])
    assert(ok, err)
    assert.same(before, { cjson.encode_number_precision(), cjson.decode_max_depth() })
  end)

  it("reads a file the default codec wrote, and the default codec reads its file", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/data.aof"
    local json = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(json:set("a", { list = { 1, 2 }, name = "x" }))
    assert(json:close())
    local c = assert(hurrahdb.open(path, { codec = "cjson", sync_time = 0 }))
    assert.same({ list = { 1, 2 }, name = "x" }, c:get("a"))
    assert(c:set("b", { ok = true }))
    assert(c:close())
    json = assert(hurrahdb.open(path))
    assert.same({ ok = true }, json:get("b"))
    assert(json:close())
    helpers.rmdir(dir)
  end)
end)

describe("codec = \"cjson\" without lua-cjson", function()
  it("fails the open with nil, err naming lua-cjson, code \"codec\"", function()
    local saved = { loaded = package.loaded.cjson, path = package.path, cpath = package.cpath,
                    preload = package.preload.cjson }
    package.loaded.cjson, package.preload.cjson = nil, nil
    package.path, package.cpath = "", ""
    local ok, db, err, code = pcall(hurrahdb.new, { codec = "cjson" })
    package.loaded.cjson, package.preload.cjson = saved.loaded, saved.preload
    package.path, package.cpath = saved.path, saved.cpath
    assert.is_true(ok, tostring(db))
    assert.is_nil(db)
    assert.matches("codec 'cjson' needs lua-cjson", err, 1, true)
    assert.equals("codec", code)
  end)
end)

describe("a codec table", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("stores what its encode returns and gives back what its decode returns", function()
    local db = assert(hurrahdb.open(path, { codec = rev_codec(), sync_time = 0 }))
    assert(db:set("a", "hello"))
    assert(db:set("b", 42))
    assert.equals("hello", db:get("a"))
    assert.equals(42, db:get("b"))
    local seen = {}
    for k, v in db:pairs() do seen[k] = v end
    assert.same({ a = "hello", b = 42 }, seen)
    assert(db:close())
    local text = helpers.read_file(path)
    assert.truthy(text:find("$6\r\nsolleh\r\n", 1, true), "the file holds encode's text")
  end)

  it("refuses a set whose encode raises or returns no string, and changes nothing", function()
    local db = assert(hurrahdb.open(path, { codec = rev_codec(), sync_time = 0 }))
    assert(db:set("k", "old"))
    local size = #helpers.read_file(path)
    local ok, err, code = db:set("k", { 1 })
    assert.is_nil(ok)
    assert.matches("rev cannot encode a table", err, 1, true)
    assert.equals("value", code)
    assert.equals("old", db:get("k"))
    assert.equals(size, #helpers.read_file(path))
    assert(db:close())

    for _, bad in ipairs {
      { function() return nil, "refused by the serializer" end, "refused by the serializer" },
      { function() return 12 end, "encode returned a number, not a string" },
      { function() return {} end, "encode returned a table, not a string" },
    } do
      local c = rev_codec()
      c.encode = bad[1]
      db = assert(hurrahdb.open(path, { codec = c }))
      ok, err, code = db:set("k", "new")
      assert.is_nil(ok)
      assert.matches(bad[2], err, 1, true)
      assert.equals("value", code)
      assert.equals("old", db:get("k"))
      assert(db:close())
    end
  end)

  it("makes get and pairs return nil, err, \"value\" when its decode fails", function()
    local c, failure = rev_codec(), nil
    local decode = c.decode
    c.decode = function(text)
      if failure then return failure() end
      return decode(text)
    end
    local db = assert(hurrahdb.open(path, { codec = c }))
    assert(db:set("k", "v"))
    assert.equals("v", db:get("k"))
    failure = function() error("broken decoder") end
    local v, err, code = db:get("k")
    assert.is_nil(v)
    assert.matches("broken decoder", err, 1, true)
    assert.equals("value", code)
    failure = function() return nil, "cannot read that" end
    v, err, code = db:get("k")
    assert.is_nil(v)
    assert.matches("cannot read that", err, 1, true)
    assert.equals("value", code)
    for k, pv, perr, pcode in db:pairs() do
      assert.equals("k", k)
      assert.is_nil(pv)
      assert.matches("cannot read that", perr, 1, true)
      assert.equals("value", pcode)
    end
    assert.is_true(db:exists("k"))
    assert(db:close())
  end)

  it("may close the store from encode: the set raises 'store is closed' and writes nothing", function()
    local c = rev_codec()
    local db
    c.encode = function(v) db:close() return "s" .. v end
    db = assert(hurrahdb.open(path, { codec = c, sync_time = 0 }))
    local ok, err = pcall(db.set, db, "k", "v")
    assert.is_false(ok)
    assert.matches("store is closed", err, 1, true)
    local again = assert(hurrahdb.open(path, { codec = rev_codec() }))
    assert.is_nil(again:get("k"))
    assert(again:close())
  end)

  it("is recorded in the file: another codec is refused with code \"codec\"", function()
    local db = assert(hurrahdb.open(path, { codec = rev_codec(), sync_time = 0 }))
    assert(db:set("k", "v"))
    assert(db:close())
    for _, other in ipairs { "json", "cjson", rev_codec("other"), rev_codec("json") } do
      local again, err, code = hurrahdb.open(path, { codec = other })
      assert.is_nil(again)
      assert.matches("was written with codec 'rev'", err, 1, true)
      assert.equals("codec", code)
    end
    local again = assert(hurrahdb.open(path, { codec = rev_codec() }))
    assert.equals("v", again:get("k"))
    assert.equals("rev", again:stats().codec)
    -- a rewrite keeps it
    assert.is_true(again:rewrite { wait = true })
    assert(again:close())
    assert.is_nil(hurrahdb.open(path))
    again = assert(hurrahdb.open(path, { codec = rev_codec() }))
    assert.equals("v", again:get("k"))
    assert(again:close())
  end)

  it("named \"json\" opens JSON files; of another name, it refuses them", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(db:set("k", { a = 1 }))
    assert(db:close())
    local as_json = { name = "json", encode = cjson.encode, decode = cjson.decode }
    db = assert(hurrahdb.open(path, { codec = as_json }))
    assert.equals(1, db:get("k").a)
    assert(db:close())
    local again, err, code = hurrahdb.open(path, { codec = rev_codec() })
    assert.is_nil(again)
    assert.matches("was written with codec 'json'", err, 1, true)
    assert.equals("codec", code)
  end)

  it("is refused when malformed, by a raise naming the option", function()
    local cases = {
      { 42, "option 'codec' must be a string or a table" },
      { "yaml", "option 'codec' must be \"json\", \"cjson\" or a table" },
      { { encode = tostring, decode = tostring }, "option 'codec' needs a name" },
      { { name = "x y", encode = tostring, decode = tostring }, "option 'codec': name" },
      { { name = ("n"):rep(65), encode = tostring, decode = tostring }, "option 'codec': name" },
      { { name = "n", decode = tostring }, "option 'codec' needs an encode function" },
      { { name = "n", encode = tostring, decode = 1 }, "option 'codec' needs a decode function" },
      { { name = "cjson", encode = tostring, decode = tostring }, "name \"cjson\" is codec = \"cjson\"'s" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(hurrahdb.new, { codec = case[1] })
      assert.is_false(ok)
      assert.matches(case[2], err, 1, true)
    end
  end)
end)

describe("a file with a codec recorded", function()
  it("still loads into redis-server, values as encode wrote them", function()
    local dir, redis_dir = helpers.tmpdir(), helpers.tmpdir()
    local path = dir .. "/data.aof"
    local db = assert(hurrahdb.open(path, { codec = rev_codec(), sync_time = 0 }))
    assert(db:set("a", "hello"))
    assert(db:set("b", 7))
    assert(db:close())
    helpers.copy_file(path, redis_dir .. "/appendonly.aof")
    local server = helpers.start_redis(redis_dir)
    local ok, err = pcall(function()
      assert.equals("solleh", server.client:call("GET", "a"))
      assert.equals("i7", server.client:call("GET", "b"))
    end)
    helpers.stop_redis(server)
    helpers.rmdir(redis_dir)
    helpers.rmdir(dir)
    assert(ok, err)
  end)
end)

describe("the codec field of a header", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  local function header_of(codec)
    local db = assert(hurrahdb.open(path, { codec = codec, sync_time = 0 }))
    assert(db:close())
    local text = helpers.read_file(path)
    return text:sub(1, text:find("\r\n", 1, true) + 1)
  end

  it("cut short by a crash at any byte is written again, with the opener's codec", function()
    local header = header_of(rev_codec())
    -- version 3: a build that reads only version 2 refuses it as newer, and
    -- never repairs it away as a damaged version-2 header
    assert.matches("^#hurrahdb aof 3 %x+ %x+ codec rev %x+\r\n$", header)
    for cut = #"#hurrahdb aof " , #header - 1 do
      helpers.write_file(path, header:sub(1, cut))
      local warning
      local db = assert(hurrahdb.open(path, { codec = rev_codec(), on_warning = function(w) warning = w end }))
      assert.matches("the header was cut short", warning, 1, true)
      assert(db:set("k", "v"))
      assert(db:close())
      local again = assert(hurrahdb.open(path, { codec = rev_codec() }))
      assert.equals("v", again:get("k"))
      assert(again:close())
    end
  end)

  it("whose name or checksum was changed is a damaged header, never another codec", function()
    local header = header_of(rev_codec())
    local at = header:find(" codec rev ", 1, true)
    for _, damaged in ipairs {
      header:sub(1, at + 6) .. "rew" .. header:sub(at + 10),       -- the name, not its checksum
      header:sub(1, #header - 3) .. (header:sub(-3, -3) == "0" and "1" or "0") .. "\r\n", -- the checksum
      header:sub(1, at + 6) .. "json " .. string.format("%08x", require("hdb_testlib").crc32c("json")) .. "\r\n",
      header:sub(1, at + 6) .. "r v " .. header:sub(at + 11),       -- a byte no name has
      header:sub(1, at - 1) .. "\r\n",                                 -- version 3 without the field
      "#hurrahdb aof 2" .. header:sub(16),                              -- the field in version 2
    } do
      helpers.write_file(path, damaged)
      for _, codec in ipairs { "json", rev_codec(), rev_codec("rew") } do
        local db, err, code = hurrahdb.open(path, { codec = codec })
        assert.is_nil(db)
        assert.matches("damaged header at offset 0", err, 1, true)
        assert.equals("damaged", code)
      end
      assert.equals(damaged, helpers.read_file(path), "the file was changed")
    end
  end)

  it("is never on a version-1 file, whose values are JSON", function()
    helpers.write_v1_file(path, { { "k", '"v"' } })
    local before = helpers.read_file(path)
    local db, err, code = hurrahdb.open(path, { codec = rev_codec() })
    assert.is_nil(db)
    assert.matches("was written with codec 'json'", err, 1, true)
    assert.equals("codec", code)
    assert.equals(before, helpers.read_file(path), "the refused open converted the file")
  end)
end)

describe("a Lua codec and the collector", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("lets a store whose encode refers to it be collected, releasing its file", function()
    local holder = {}
    holder.db = assert(hurrahdb.open(path, { sync_time = 0, codec = {
      name = "rev",
      encode = function(v) assert(holder.db) return "s" .. v end,
      decode = function(s) return s:sub(2) end,
    } }))
    assert(holder.db:set("k", "v"))
    holder = nil
    collectgarbage()
    collectgarbage()
    local again, err = hurrahdb.open(path, { codec = rev_codec() })
    assert(again, err)
    assert.equals("v", again:get("k"))
    assert(again:close())
  end)

  -- LuaJIT runs a collection step while it makes the encoded text a Lua
  -- string: a finalizer's set there must not change the text of the set
  -- under way (lua-cjson's shared encode buffer did). Lua 5.4 copies the
  -- text before it collects, so the spec runs in LuaJIT.
  if rawget(_G, "jit") then it("with codec \"cjson\", a finalizer that sets another key never changes the value of a set under way", function()
    local db = assert(hurrahdb.new { codec = "cjson" })
    local armed = true
    local function arm()
      local p = newproxy(true)
      getmetatable(p).__gc = function() if armed then db:set("other", { b = "YYYYYYYY" }) arm() end end
    end
    collectgarbage("restart")
    arm()
    -- a new cycle at every allocation, each step a whole cycle
    local pause, stepmul = collectgarbage("setpause", 0), collectgarbage("setstepmul", 1000000)
    local wrong = 0
    for i = 1, 300 do
      local _ = {}
      assert(db:set("k", { a = "XXXXXXXX", i = i }))
      local got = db:get("k")
      if not (got and got.a == "XXXXXXXX" and got.i == i) then wrong = wrong + 1 end
    end
    armed = false
    collectgarbage("setpause", pause)
    collectgarbage("setstepmul", stepmul)
    assert.equals(0, wrong)
    assert.same({ b = "YYYYYYYY" }, db:get("other"), "no finalizer ran")
    db:close()
  end) end
end)

describe("incr under a Lua codec that writes the store", function()
  local db
  after_each(function() if db then db:close() end db = nil end)

  -- A codec whose decode (run by incr on the value it read) calls `hook`
  -- once per decode while it is set.
  local function hooked_codec(state)
    local c = rev_codec()
    local decode = c.decode
    c.decode = function(s)
      if state.hook then state.hook() end
      return decode(s)
    end
    return c
  end

  it("adds to the value written meanwhile, never to the one it read before", function()
    local state = {}
    db = assert(hurrahdb.new { codec = hooked_codec(state) })
    assert.is_true(db:set("n", 1))
    local once = true
    state.hook = function()
      if once then
        once = false
        assert(db:set("n", 100))
      end
    end
    assert.equals(101, db:incr("n", 1))
    state.hook = nil
    assert.equals(101, db:get("n"))
  end)

  it("keeps an expiry set meanwhile and a delete made meanwhile", function()
    local state = {}
    db = assert(hurrahdb.new { codec = hooked_codec(state) })
    assert.is_true(db:set("n", 1))
    local once = true
    state.hook = function()
      if once then once = false assert(db:delete("n")) end
    end
    local v, err, code = db:incr("n", 1)
    assert.is_nil(v)
    assert.equals("not found", err)
    assert.equals("not found", code)
    state.hook = nil
    assert.is_nil(db:get("n"))
    assert.is_true(db:set("n", 1))
    once = true
    state.hook = function()
      if once then once = false assert(db:expire("n", 100)) end
    end
    assert.equals(2, db:incr("n"))
    state.hook = nil
    local left = db:ttl("n")
    assert.is_true(left > 99 and left <= 100, tostring(left))
  end)

  it("gives up with busy, changing nothing, when every decode writes the store", function()
    local state = {}
    db = assert(hurrahdb.new { codec = hooked_codec(state) })
    assert.is_true(db:set("n", 1))
    local writes = 0
    state.hook = function()
      writes = writes + 1
      assert(db:set("other", writes))
    end
    local v, err, code = db:incr("n", 1)
    assert.is_nil(v)
    assert.equals("busy", code)
    assert.matches("kept changing", err)
    state.hook = nil
    assert.equals(1, db:get("n"))
    assert.is_true(writes > 1)
  end)
end)
