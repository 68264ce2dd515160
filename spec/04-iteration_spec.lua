-- Iteration: db:pairs() visits each key once, also while the loop body
-- changes the store, and db:keys() lists keys by prefix.

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"

local function fill(db, n, prefix)
  prefix = prefix or "k"
  for i = 1, n do assert(db:set(prefix .. i, i)) end
end

describe("db:pairs()", function()
  local db
  before_each(function() db = hurrahdb.new() end)
  after_each(function() db:close() end)

  it("visits nothing in an empty store", function()
    for _ in db:pairs() do
      error("visited a key in an empty store")
    end
  end)

  it("visits every key once with its decoded value", function()
    local want = {
      n = 1, f = 2.0, s = "str", t = { a = { 1, 2 } }, b = false,
      z = hurrahdb.null, [""] = "empty key", ["\0\r\n"] = { "bin" },
    }
    for k, v in pairs(want) do db:set(k, v) end
    local seen, visits = {}, 0
    for k, v in db:pairs() do
      visits = visits + 1
      assert.is_nil(seen[k], "visited twice: " .. k)
      seen[k] = v
    end
    assert.equals(helpers.count_keys(want), visits)
    helpers.assert_same_typed(want, seen)
  end)

  it("visits every key of a large store once", function()
    fill(db, 5000)
    local seen, visits = {}, 0
    for k, v in db:pairs() do
      visits = visits + 1
      assert.is_nil(seen[k])
      seen[k] = true
      assert.equals("k" .. v, k)
    end
    assert.equals(5000, visits)
  end)

  it("can be used in a generic for with a break, then again", function()
    fill(db, 100)
    for _ in db:pairs() do break end
    local visits = 0
    for _ in db:pairs() do visits = visits + 1 end
    assert.equals(100, visits)
  end)

  it("runs two loops over the same store at once", function()
    fill(db, 50)
    local pairs_seen = 0
    for _ in db:pairs() do
      for _ in db:pairs() do pairs_seen = pairs_seen + 1 end
    end
    assert.equals(50 * 50, pairs_seen)
  end)

  it("visits each key once while the loop deletes the key it is on", function()
    fill(db, 1000)
    local seen, visits = {}, 0
    for k in db:pairs() do
      visits = visits + 1
      assert.is_nil(seen[k])
      seen[k] = true
      assert.is_true(db:delete(k))
    end
    assert.equals(1000, visits)
    assert.equals(0, db:count())
  end)

  it("does not visit a key deleted before the loop reached it", function()
    fill(db, 1000)
    local seen, first = {}, nil
    for k in db:pairs() do
      assert.is_nil(seen[k])
      seen[k] = true
      if not first then
        first = k
        -- delete every even key at once, except the one we are on
        for i = 2, 1000, 2 do
          if "k" .. i ~= k then db:delete("k" .. i) end
        end
      end
    end
    for i = 1, 1000 do
      local k = "k" .. i
      if i % 2 == 1 then
        assert.is_true(seen[k], "missed " .. k)
      elseif k ~= first then
        assert.is_nil(seen[k], "visited deleted " .. k)
      end
    end
  end)

  it("visits every old key once while the loop inserts 20000 keys", function()
    fill(db, 1000, "old")
    local seen, added = {}, 0
    for k, v in db:pairs() do
      if k:sub(1, 3) == "old" then
        assert.is_nil(seen[k], "visited twice: " .. k)
        seen[k] = true
        assert.equals("old" .. v, k)
      else
        -- a key added during the loop may or may not be visited
        assert.equals("new" .. v, k)
      end
      for _ = 1, 20 do
        if added < 20000 then
          added = added + 1
          db:set("new" .. added, added)
        end
      end
    end
    assert.equals(20000, added)
    assert.equals(1000, helpers.count_keys(seen))
    assert.equals(21000, db:count())
  end)

  it("visits every untouched key once while the loop deletes, inserts and overwrites", function()
    fill(db, 2000)
    -- keys 1..1000 stay untouched, 1001..2000 are deleted or overwritten
    local seen, step = {}, 0
    for k, v in db:pairs() do
      step = step + 1
      local i = tonumber(k:match("^k(%d+)$"))
      if i and i <= 1000 then
        assert.is_nil(seen[k], "visited twice: " .. k)
        seen[k] = true
        assert.equals(i, v)
      end
      -- bounded: the loop may visit the keys it adds
      if step <= 1000 then
        for j = 1, 10 do db:set("n" .. step .. ":" .. j, j) end
      end
      local victim = 1000 + step
      if victim <= 2000 then
        if step % 2 == 0 then
          db:delete("k" .. victim)
        else
          db:set("k" .. victim, { overwritten = true })
        end
      end
    end
    for i = 1, 1000 do
      assert.is_true(seen["k" .. i], "missed k" .. i)
    end
    assert.equals(1000, helpers.count_keys(seen))
  end)

  it("survives the store shrinking to nothing and growing again during the loop", function()
    fill(db, 3000)
    local visits = 0
    for k in db:pairs() do
      visits = visits + 1
      if visits == 1 then
        for _, key in ipairs(db:keys()) do db:delete(key) end
        fill(db, 5000, "again")
        db:set(k, "back")
      end
      if visits > 100000 then error("iteration does not end") end
    end
    assert.is_true(visits >= 1)
    assert.equals(5001, db:count())
  end)

  it("raises or ends, without a crash, when the store is closed during the loop", function()
    fill(db, 100)
    local other = hurrahdb.new()
    fill(other, 100)
    local ok, err = pcall(function()
      for _ in other:pairs() do
        other:close()
      end
    end)
    if not ok then
      assert.matches("store is closed", err, 1, true)
    end
  end)
end)

-- On a Lua without 64-bit integers (LuaJIT) a value that Lua 5.4 stored
-- may hold an integer no double holds exactly (2^53 + 1). The loop gives
-- that key with nil and the error, as get gives nil and the error, and goes
-- on with the other keys.
describe("db:pairs() over a value this Lua cannot decode", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(dir) end)

  local function check_visits(visits)
    assert.same({ "a", "big", "c", "d" }, helpers.sorted((function()
      local keys = {}
      for k in pairs(visits) do keys[#keys + 1] = k end
      return keys
    end)()))
    assert.is_nil(visits.big.v)
    assert.matches("cannot hold exactly", visits.big.err, 1, true)
    for _, k in ipairs{ "a", "c", "d" } do
      assert.is_not_nil(visits[k].v, k)
      assert.is_nil(visits[k].err, k)
    end
  end

  if helpers.HAS_INTEGERS then
    it("in a LuaJIT process: gives key, nil, err for it and goes on (the file written here, by Lua 5.4) #luajit", function()
      local cpath = os.getenv("HURRAHDB_LUAJIT_CPATH")
      assert(cpath, "HURRAHDB_LUAJIT_CPATH is not set: run the specs with `make test`")
      local path = dir .. "/from54.aof"
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert(db:set("a", 1))
      assert(db:set("big", { 1, 9007199254740993 }))
      assert(db:set("c", "text"))
      assert(db:set("d", 2 ^ 60))
      assert(db:close())
      local out = helpers.capture("LUA_CPATH=" .. helpers.shell_quote(cpath .. "/?.so;;")
        .. " luajit spec/support/pairs_report.lua " .. helpers.shell_quote(path) .. " big 2>&1")
      local visits, get, done = {}, nil, false
      for line in out:gmatch("[^\n]+") do
        local k, v, err = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
        if k == "get" then
          get = { v = v, err = err }
        elseif k then
          assert.is_nil(visits[k], "visited twice: " .. k)
          visits[k] = { v = v ~= "nil" and v or nil, err = err ~= "nil" and err or nil }
        elseif line == "done" then
          done = true
        end
      end
      assert.is_true(done, out)
      check_visits(visits)
      assert.equals("number 1", visits.a.v)
      assert.equals("string text", visits.c.v)
      assert.equals(2 ^ 60, tonumber(visits.d.v:match("^number (.*)$")))
      assert.equals("nil", get.v)
      assert.matches("cannot hold exactly", get.err, 1, true)
    end)
  else
    -- The bytes a Lua 5.4 store writes, in a file of one batch.
    local function file_with(records)
      local path = dir .. "/from54.aof"
      local body = {}
      for _, r in ipairs(records) do
        body[#body + 1] = "*3\r\n$3\r\nSET\r\n$" .. #r[1] .. "\r\n" .. r[1] .. "\r\n$"
          .. #r[2] .. "\r\n" .. r[2] .. "\r\n"
      end
      body = table.concat(body)
      local crc = assert(require("hdb_testlib").crc32c(body))
      helpers.write_file(path, "#hurrahdb aof 1\r\n" .. body
        .. string.format("#hdb batch %d %08x\r\n", #body, crc))
      return path
    end

    it("gives key, nil, err for it and goes on with the other keys", function()
      local db = assert(hurrahdb.open(file_with{
        { "a", "1" }, { "big", "[1,9007199254740993]" }, { "c", '"text"' }, { "d", "1152921504606846976" },
      }))
      local visits = {}
      for k, v, err in db:pairs() do
        assert.is_nil(visits[k], "visited twice: " .. k)
        visits[k] = { v = v, err = err }
      end
      check_visits(visits)
      assert.equals(1, visits.a.v)
      assert.equals("text", visits.c.v)
      assert.equals(2 ^ 60, visits.d.v)
      local v, err = db:get("big")
      assert.is_nil(v)
      assert.equals(visits.big.err, err)
      db:close()
    end)
  end
end)

describe("db:keys()", function()
  local db
  before_each(function() db = hurrahdb.new() end)
  after_each(function() db:close() end)

  it("returns every key once", function()
    fill(db, 3000)
    local keys = db:keys()
    assert.equals(3000, #keys)
    local seen = {}
    for _, k in ipairs(keys) do
      assert.is_nil(seen[k])
      seen[k] = true
    end
    for i = 1, 3000 do assert.is_true(seen["k" .. i]) end
  end)

  it("returns only the keys with the prefix", function()
    fill(db, 100, "user:")
    fill(db, 100, "session:")
    fill(db, 5, "use")
    local keys = db:keys("user:")
    assert.equals(100, #keys)
    for _, k in ipairs(keys) do
      assert.equals("user:", k:sub(1, 5))
    end
    assert.equals(105, #db:keys("use"))
    assert.equals(1, #db:keys("user:100"))
    assert.same({}, db:keys("user:1000"))
  end)

  it("does not list deleted keys", function()
    fill(db, 10)
    db:delete("k3")
    db:set("k4", nil)
    local keys = helpers.sorted(db:keys())
    assert.same({ "k1", "k10", "k2", "k5", "k6", "k7", "k8", "k9" }, keys)
  end)

  it("returns a snapshot that later changes do not affect", function()
    fill(db, 10)
    local keys = db:keys()
    for _, k in ipairs(keys) do db:delete(k) end
    assert.equals(10, #keys)
    assert.equals(0, db:count())
  end)
end)
