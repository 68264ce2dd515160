-- hurrahdb.check(path): what a store's file holds, read without opening the
-- store: no lock, nothing written, so it works while a store has the file
-- open. Its counts agree with what an open of the file gives.

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"

describe("hurrahdb.check", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  local function write_store(fn, opts)
    local db = assert(hurrahdb.open(path, opts or { sync_time = 0 }))
    fn(db)
    assert.is_true(db:close())
  end

  it("counts the records, the keys an open keeps and the bytes a rewrite would keep", function()
    write_store(function(db)
      for i = 1, 300 do assert.is_true(db:set("k" .. i, { i = i })) end
      for i = 1, 100 do assert.is_true(db:set("k" .. i, { i = -i })) end
      for i = 1, 50 do assert.is_true(db:delete("k" .. i)) end
      assert.is_true(db:set("t", 1, { ttl = 1000 }))
      assert.is_true(db:expire("k300", 1000))
      assert.is_true(db:persist("k300"))
      assert.is_true(db:delete("absent") == false)
    end)
    local before = helpers.read_file(path)
    local r = assert(hurrahdb.check(path))
    assert.equals(before, helpers.read_file(path), "check changed the file")
    assert.equals(4, r.version)
    assert.equals("json", r.codec)
    assert.equals(#before, r.file_bytes)
    assert.equals(#before, r.good_bytes)
    assert.equals(401, r.set_records)
    assert.equals(50, r.del_records)
    assert.equals(1, r.expire_records)
    assert.equals(1, r.persist_records)
    assert.equals(453, r.records)
    assert.equals(251, r.keys)
    assert.equals(1, r.keys_with_ttl)
    assert.equals(0, r.expired_keys)
    assert.equals("none", r.tail)
    assert.is_false(r.damaged)
    -- A rewrite writes exactly the live bytes, after its header.
    local db = assert(hurrahdb.open(path))
    assert.is_true(db:rewrite({ wait = true }))
    assert.is_true(db:close())
    local after = assert(hurrahdb.check(path))
    assert.equals(r.live_bytes, after.live_bytes)
    assert.equals(r.keys, after.keys)
    local records = assert(helpers.parse_aof(helpers.read_file(path)))
    assert.equals(r.keys, #records)
    assert.is_true(after.dead_bytes < r.dead_bytes)
  end)

  it("counts keys whose expiry has passed apart: an open drops them", function()
    write_store(function(db)
      assert.is_true(db:set("a", 1, { ttl = 0.001 }))
      assert.is_true(db:set("b", 1, { ttl = 1000 }))
      assert.is_true(db:set("c", 1))
    end)
    local socket = require "socket"
    socket.sleep(0.01)
    local r = assert(hurrahdb.check(path))
    assert.equals(2, r.keys)
    assert.equals(1, r.keys_with_ttl)
    assert.equals(1, r.expired_keys)
    local db = assert(hurrahdb.open(path))
    assert.equals(r.keys, db:count())
    db:close()
  end)

  it("empties its count at a FLUSHALL, and stays linear over many of them", function()
    write_store(function(db)
      for i = 1, 2000 do
        assert.is_true(db:set("k" .. i, i))
        assert.is_true(db:flush_all())
      end
      assert.is_true(db:set("last", 1))
    end, { sync_time = 1000 })
    local r = assert(hurrahdb.check(path))
    assert.equals(2000, r.flushall_records)
    assert.equals(1, r.keys)
  end)

  it("works while a store holds the file, and sees what it has written", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    for i = 1, 10 do assert.is_true(db:set("k" .. i, i)) end
    local r = assert(hurrahdb.check(path))
    assert.equals(10, r.keys)
    assert.is_true(db:set("k11", 11))
    assert.equals(11, assert(hurrahdb.check(path)).keys)
    assert.is_true(db:close())
  end)

  it("reports a torn last batch, leaving the file as it was", function()
    write_store(function(db)
      for i = 1, 10 do assert.is_true(db:set("k" .. i, i)) end
    end)
    local data = helpers.read_file(path)
    helpers.write_file(path, data:sub(1, #data - 3))
    local cut = helpers.read_file(path)
    local r = assert(hurrahdb.check(path))
    assert.equals(cut, helpers.read_file(path))
    assert.equals("torn", r.tail)
    assert.equals(9, r.keys)
    assert.equals(#cut - r.good_bytes, r.tail_bytes)
    assert.is_string(r.problem)
  end)

  it("reports damage and where it starts, leaving the file as it was", function()
    write_store(function(db)
      for i = 1, 10 do assert.is_true(db:set("k" .. i, i)) end
    end)
    local data = helpers.read_file(path)
    local _, batches = helpers.aof_batches(data)
    -- A byte of the fifth batch's records changed: its checksum fails,
    -- and good batches follow.
    local at = batches[5].records + 1
    local bad = data:sub(1, at - 1) .. string.char((data:byte(at) + 1) % 256) .. data:sub(at + 1)
    helpers.write_file(path, bad)
    local r = assert(hurrahdb.check(path))
    assert.equals(bad, helpers.read_file(path))
    assert.is_true(r.damaged)
    assert.equals(batches[5].start, r.damage_at)
    assert.equals(4, r.keys)
    assert.is_string(r.problem)
    local ok, err, code = hurrahdb.open(path)
    assert.is_nil(ok)
    assert.equals("damaged", code, err)
  end)

  it("reads a file of any codec", function()
    local rev = {
      name = "rev",
      encode = function(v) return (tostring(v):reverse()) end,
      decode = function(s) return s:reverse() end,
    }
    write_store(function(db) assert.is_true(db:set("a", "xyz")) end, { codec = rev, sync_time = 0 })
    local r = assert(hurrahdb.check(path))
    assert.equals("rev", r.codec)
    assert.equals(1, r.keys)
  end)

  it("returns nil, err, code for what is not a store's file", function()
    local r, err, code = hurrahdb.check(dir .. "/absent.aof")
    assert.is_nil(r)
    assert.equals("io", code, err)
    r, err, code = hurrahdb.check(dir)
    assert.is_nil(r)
    assert.equals("invalid", code, err)
    helpers.write_file(path, "*2\r\n$3\r\nDEL\r\n$1\r\na\r\n")
    r, err, code = hurrahdb.check(path)
    assert.is_nil(r)
    assert.equals("damaged", code, err)
    helpers.write_file(path, "")
    r = assert(hurrahdb.check(path))
    assert.equals(0, r.version)
    assert.equals(0, r.keys)
  end)

  it("raises on a path that is not a string", function()
    assert.has_error(function() hurrahdb.check(nil) end)
    assert.has_error(function() hurrahdb.check(1) end)
    assert.has_error(function() hurrahdb.check("a\0b") end)
  end)
end)
