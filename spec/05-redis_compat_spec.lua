-- Redis compatibility: a hurrahdb AOF is a file redis-server loads as its
-- own append-only file, with the same keys and, for every key, the JSON
-- text hurrahdb wrote as the string value.

local helpers = require "spec.helpers"
local cjson = require "cjson"
local hurrahdb = require "hurrahdb"

local null = hurrahdb.null

-- Writes a varied history to `db`; returns the final state as a table
-- key -> value and the list of keys deleted along the way.
local function write_history(db, sync_midway)
  local want, deleted = {}, {}
  local function set(k, v)
    assert.is_true(db:set(k, v))
    want[tostring(k)] = v
  end
  local function del(k)
    assert.is_true(db:delete(k))
    want[k] = nil
    deleted[#deleted + 1] = k
  end

  set("plain", "hello")
  set("", "the empty key")
  set("\0", "a NUL key")
  set("a\0b", { "NUL", "inside" })
  set("\r\n", "CR LF key")
  set("line\nbreak", 1)
  set("\128\200\255", "high bytes")
  set("*3\r\n$3\r\nSET\r\n", "looks like RESP")
  set(string.rep("long", 250), "a 1000 byte key")
  set(42, "a number key")
  if helpers.HAS_INTEGERS then
    set("int", math.maxinteger)
    set("negint", math.mininteger)
    set("big", math.tointeger(2 ^ 53) + 1)
  else
    set("int", 2 ^ 53 - 1)
    set("big", 2 ^ 60)
  end
  set("float", 0.1 + 0.2)
  set("whole float", 2.0)
  set("negzero", -0.0)
  set("tiny", 5e-324)
  set("huge", 1e300)
  set("yes", true)
  set("no", false)
  set("nothing", null)
  set("binary", helpers.all_bytes())
  set("large", string.rep("0123456789abcdef", 8192))
  set("nested", {
    user = { name = "ann", roles = { "admin", "dev" }, limits = { daily = 10, ratio = 1.0 } },
    list = { { a = {} }, { 1, 2.5, null, false } },
    [""] = "empty", ["\0"] = "nul",
  })
  set("empty", {})
  if sync_midway then assert.is_true(db:sync()) end
  -- overwrites, also with other types
  set("plain", "hello again")
  set("line\nbreak", { now = "a map" })
  set("\0", 0.5)
  set("nested", { 1, { 2, { 3 } } })
  -- deletes, by delete() and by set(k, nil)
  del("yes")
  del("\r\n")
  assert.is_true(db:set("huge", nil))
  want["huge"] = nil
  deleted[#deleted + 1] = "huge"
  -- a deleted key set again
  set("yes", "back")
  -- many keys with a mix of everything
  for i = 1, 300 do set("user:" .. i, { id = i, score = i / 7, name = "u" .. i }) end
  for i = 1, 300, 3 do set("user:" .. i, i) end
  for i = 2, 300, 5 do del("user:" .. i) end
  if sync_midway then assert.is_true(db:sync()) end
  set("last", "written last")
  return want, deleted
end

local runs = {
  { "sync_time = 0", { sync_time = 0 } },
  { "sync_time = 0 without fsync", { sync_time = 0, fsync = false } },
  { "a large sync_time, written at close", { sync_time = 100000 } },
  { "a large sync_time and db:sync() between writes", { sync_time = 100000 }, true },
  { "a small sync_time", { sync_time = 5 } },
}

describe("an AOF written by hurrahdb", function()
  for _, run in ipairs(runs) do
    local description, opts, sync_midway = run[1], run[2], run[3]

    it("loads into redis-server with the same data, written with " .. description, function()
      local dir = helpers.tmpdir()
      local redis_dir = helpers.tmpdir()
      local server, db
      finally(function()
        helpers.stop_redis(server)
        if db then db:close() end
        helpers.rmdir(dir)
        helpers.rmdir(redis_dir)
      end)

      local path = dir .. "/data.aof"
      local writer = assert(hurrahdb.open(path, opts))
      local want, deleted = write_history(writer, sync_midway)
      assert.is_true(writer:close())

      -- what the file says, record by record
      local records = assert(helpers.parse_aof(assert(helpers.read_file(path))))
      local raw = helpers.replay_aof(records)

      db = assert(hurrahdb.open(path))
      assert.equals(helpers.count_keys(want), db:count())
      assert.equals(#records, db:stats().loaded_records)

      helpers.copy_file(path, redis_dir .. "/appendonly.aof")
      server = helpers.start_redis(redis_dir)
      local redis = server.client

      assert.equals(db:count(), redis:call("DBSIZE"))

      local redis_keys = assert(redis:call("KEYS", "*"))
      assert.same(helpers.sorted(db:keys()), helpers.sorted(redis_keys))

      for k, v in pairs(want) do
        local got = redis:call("GET", k)
        assert.is_string(got, "redis has no string for key " .. string.format("%q", k))
        -- redis holds exactly the JSON of the last SET of the key
        assert.equals(raw[k], got)
        -- which decodes to the value hurrahdb returns
        local ok, why = helpers.deep_equal_numeric(db:get(k), cjson.decode(got))
        assert(ok, string.format("key %q: %s", k, tostring(why)))
        ok, why = helpers.deep_equal_numeric(v, cjson.decode(got))
        assert(ok, string.format("key %q: %s", k, tostring(why)))
        helpers.assert_same_typed(v, db:get(k), string.format("key %q", k))
      end

      for _, k in ipairs(deleted) do
        if want[k] == nil then
          assert.is_false(redis:call("GET", k), "deleted key present: " .. string.format("%q", k))
          assert.equals(0, redis:call("EXISTS", k))
        end
      end
    end)
  end

  it("loads into redis-server after several sessions appended to it", function()
    local dir = helpers.tmpdir()
    local redis_dir = helpers.tmpdir()
    local server
    finally(function()
      helpers.stop_redis(server)
      helpers.rmdir(dir)
      helpers.rmdir(redis_dir)
    end)

    local path = dir .. "/data.aof"
    local want, deleted = {}, {}
    for session = 1, 3 do
      local db = assert(hurrahdb.open(path, { sync_time = session == 2 and 0 or 100000 }))
      for i = 1, 50 do
        local k = "s" .. ((session * 17 + i) % 80)
        assert.is_true(db:set(k, { session = session, i = i }))
        want[k] = { session = session, i = i }
      end
      local victim = "s" .. ((session * 17 + 1) % 80)
      assert.is_true(db:delete(victim))
      want[victim] = nil
      deleted[#deleted + 1] = victim
      assert.is_true(db:close())
    end

    helpers.copy_file(path, redis_dir .. "/appendonly.aof")
    server = helpers.start_redis(redis_dir)
    local redis = server.client
    assert.equals(helpers.count_keys(want), redis:call("DBSIZE"))
    for k, v in pairs(want) do
      local got = redis:call("GET", k)
      assert.is_string(got, k)
      assert.same(v, cjson.decode(got))
    end
    for _, k in ipairs(deleted) do
      if want[k] == nil then
        assert.is_false(redis:call("GET", k), k)
      end
    end
  end)
end)
