-- Persistence: the append-only file, when data reaches it, what a reopen
-- replays, how a store is closed, and how damage is reported.

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"

local function resp_set(key, json)
  return "*3\r\n$3\r\nSET\r\n$" .. #key .. "\r\n" .. key .. "\r\n$" .. #json .. "\r\n" .. json .. "\r\n"
end

local function resp_del(key)
  return "*2\r\n$3\r\nDEL\r\n$" .. #key .. "\r\n" .. key .. "\r\n"
end

-- A mix of writes whose final state is `expected`; returns the number of
-- records the file holds after it.
local function write_mix(db)
  assert.is_true(db:set("a", 1))
  assert.is_true(db:set("b", { list = { 1, 2.5, "x" } }))
  assert.is_true(db:set("c", "gone soon"))
  assert.is_true(db:set("a", "overwritten"))
  assert.is_true(db:delete("c"))
  assert.is_true(db:set("\0bin\r\n", "\255\0"))
  assert.is_true(db:set("d", false))
  assert.is_true(db:set("d", nil))
  assert.is_true(db:set("e", hurrahdb.null))
  return 9
end

local expected = {
  a = "overwritten",
  b = { list = { 1, 2.5, "x" } },
  ["\0bin\r\n"] = "\255\0",
  e = hurrahdb.null,
}

local function assert_holds(db, want)
  assert.equals(helpers.count_keys(want), db:count())
  local keys = {}
  for k in pairs(want) do keys[#keys + 1] = k end
  assert.same(helpers.sorted(keys), helpers.sorted(db:keys()))
  for k, v in pairs(want) do
    helpers.assert_same_typed(v, db:get(k), k)
  end
end

describe("a store with a path", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  for _, sync_time in ipairs{ 0, 1, 100, 100000 } do
    for _, fsync in ipairs{ true, false } do
      it("keeps its data across close and reopen with sync_time = " .. sync_time
         .. ", fsync = " .. tostring(fsync), function()
        local db = assert(hurrahdb.new{ path = path, sync_time = sync_time, fsync = fsync })
        write_mix(db)
        assert_holds(db, expected)
        assert.is_true(db:close())
        local again = assert(hurrahdb.open(path, { sync_time = sync_time }))
        assert_holds(again, expected)
        again:close()
      end)
    end
  end

  it("creates a missing file with mode 0600", function()
    local db = assert(hurrahdb.open(path))
    db:set("k", "v")
    db:close()
    assert.is_true(helpers.file_exists(path))
    assert.equals("600", helpers.file_mode(path))
  end)

  it("starts empty on a new file", function()
    local db = assert(hurrahdb.open(path))
    assert.equals(0, db:count())
    assert.same({}, db:keys())
    assert.equals(0, db:stats().loaded_records)
    db:close()
  end)

  it("opens an AOF it wrote without any record", function()
    local db = assert(hurrahdb.open(path))
    db:close()
    local again = assert(hurrahdb.open(path))
    assert.equals(0, again:count())
    again:close()
  end)

  it("replays overwrites and deletes on reopen", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    for i = 1, 200 do db:set("k" .. i, i) end
    for i = 1, 200, 2 do db:set("k" .. i, { i = i }) end
    for i = 1, 200, 3 do db:delete("k" .. i) end
    local want = {}
    for i = 1, 200 do
      if (i - 1) % 3 ~= 0 then
        want["k" .. i] = (i % 2 == 1) and { i = i } or i
      end
    end
    assert_holds(db, want)
    db:close()
    local again = assert(hurrahdb.open(path))
    assert_holds(again, want)
    again:close()
  end)

  it("reports the number of replayed records in stats().loaded_records", function()
    local db = assert(hurrahdb.open(path))
    local records = write_mix(db)
    db:close()
    local again = assert(hurrahdb.open(path))
    assert.equals(records, again:stats().loaded_records)
    assert.equals(helpers.count_keys(expected), again:stats().keys)
    again:close()
  end)

  it("appends to the file it reopened", function()
    local db = assert(hurrahdb.open(path))
    db:set("first", 1)
    db:close()
    db = assert(hurrahdb.open(path))
    db:set("second", 2)
    db:delete("first")
    db:close()
    db = assert(hurrahdb.open(path))
    assert_holds(db, { second = 2 })
    assert.equals(3, db:stats().loaded_records)
    db:close()
  end)

  describe("with sync_time = 0", function()
    it("has the record in the file as soon as set returns", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert.is_true(db:set("k0", "plain value"))
      local data = helpers.read_file(path)
      assert.is_true(helpers.contains(data, resp_set("k0", '"plain value"')))
      assert.is_true(db:set("k0", { hello = "world" }))
      data = helpers.read_file(path)
      assert.is_true(helpers.contains(data, '{"hello":"world"}'))
      assert.is_true(db:delete("k0"))
      data = helpers.read_file(path)
      assert.is_true(helpers.contains(data, resp_del("k0")))
      assert.equals(0, db:stats().aof_pending_bytes)
      db:close()
    end)
  end)

  describe("with a large sync_time", function()
    it("holds records as pending until db:sync()", function()
      local db = assert(hurrahdb.open(path, { sync_time = 100000 }))
      assert.is_true(db:set("k1", "pending value"))
      assert.is_true(db:stats().aof_pending_bytes > 0)
      assert.is_true(db:sync())
      assert.equals(0, db:stats().aof_pending_bytes)
      assert.is_true(helpers.contains(helpers.read_file(path), resp_set("k1", '"pending value"')))
      db:close()
    end)

    it("writes pending records on close", function()
      local db = assert(hurrahdb.open(path, { sync_time = 100000 }))
      for i = 1, 100 do db:set("k" .. i, i) end
      assert.is_true(db:close())
      local data = helpers.read_file(path)
      for i = 1, 100 do
        assert.is_true(helpers.contains(data, resp_set("k" .. i, tostring(i))))
      end
    end)
  end)

  describe("with a small sync_time", function()
    it("writes pending records in the background", function()
      local socket = require "socket"
      local db = assert(hurrahdb.open(path, { sync_time = 20 }))
      db:set("bg", "written later")
      local found = false
      for _ = 1, 100 do
        if helpers.contains(helpers.read_file(path) or "", resp_set("bg", '"written later"')) then
          found = true
          break
        end
        socket.sleep(0.01)
      end
      assert.is_true(found)
      db:close()
    end)
  end)

  describe("db:stats()", function()
    it("reports keys, bytes and sync state", function()
      local db = assert(hurrahdb.open(path, { sync_time = 100000 }))
      db:set("a", "x")
      db:set("b", "y")
      assert.is_true(db:sync())
      local s = db:stats()
      assert.equals(2, s.keys)
      assert.is_number(s.memory)
      assert.equals(#helpers.read_file(path), s.aof_bytes)
      assert.equals(0, s.aof_pending_bytes)
      assert.is_number(s.last_sync)
      assert.equals(0, s.loaded_records)
      assert.equals(0, s.errors)
      assert.is_nil(s.last_error)
      db:close()
    end)
  end)

  describe("the file", function()
    it("is a '#' header, then batches of RESP SET/DEL commands each announced by a '#' line", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      write_mix(db)
      db:close()
      local data = helpers.read_file(path)
      assert.matches("^#hurrahdb aof 2 %x+ %x+\r\n", data)
      local records, comments = helpers.parse_aof(data)
      assert.is_table(records, comments)
      assert.equals(9, #records)
      assert.same({ "SET", "a", "1" }, records[1].args)
      assert.same({ "DEL", "c" }, records[5].args)
      assert.equals("SET", records[6].args[1])
      assert.equals("\0bin\r\n", records[6].args[2])
      assert.same({ "DEL", "d" }, records[8].args)
      assert.same({ "SET", "e", "null" }, records[9].args)
      -- sync_time = 0: each write is a batch of its own, numbered from 1,
      -- whose line gives the exact length of its records
      local header_len, batches = helpers.aof_batches(data)
      assert.equals(9, #batches)
      assert.equals(header_len, batches[1].start)
      for i, b in ipairs(batches) do
        assert.equals(i, b.seq)
        assert.equals(records[i].offset, b.records)
      end
      assert.equals(#data, batches[9].stop)
      assert.equals(10, #comments) -- the header and nine batch lines
    end)

    it("holds raw JSON that decodes to the stored values", function()
      local cjson = require "cjson"
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      write_mix(db)
      db:close()
      local model = helpers.replay_aof(assert(helpers.parse_aof(helpers.read_file(path))))
      local decoded = {}
      for k, json in pairs(model) do decoded[k] = cjson.decode(json) end
      assert.is_true(helpers.deep_equal_numeric(expected, decoded))
    end)
  end)

  describe("db:close()", function()
    it("flushes and returns true, then true again", function()
      local db = assert(hurrahdb.open(path, { sync_time = 100000 }))
      db:set("k", "v")
      assert.is_true(db:close())
      assert.is_true(db:close())
      local again = assert(hurrahdb.open(path))
      assert.equals("v", again:get("k"))
      again:close()
    end)

    -- to-be-closed variables are Lua 5.4 syntax: compiled only there
    if _VERSION == "Lua 5.4" then it("is called by a <close> variable, leaving the data in the file", function()
      assert(load([[
        local hurrahdb, path = ...
        local db <close> = assert(hurrahdb.new{ path = path, sync_time = 100000 })
        db:set("scoped", { 1, 2, 3 })
      ]]))(hurrahdb, path)
      local again = assert(hurrahdb.open(path))
      assert.same({ 1, 2, 3 }, again:get("scoped"))
      again:close()
    end)

    it("is called by a <close> variable when the scope raises", function()
      local ok = pcall(assert(load([[
        local hurrahdb, path = ...
        local db <close> = assert(hurrahdb.new{ path = path, sync_time = 100000 })
        db:set("before error", true)
        error("boom")
      ]])), hurrahdb, path)
      assert.is_false(ok)
      local again = assert(hurrahdb.open(path))
      assert.is_true(again:get("before error"))
      again:close()
    end) end

    it("happens when an unclosed store is garbage collected", function()
      -- the store is only ever referenced from this function's locals
      local function fill()
        local db = hurrahdb.new{ path = path, sync_time = 100000 }
        for i = 1, 50 do db:set("gc" .. i, i) end
      end
      fill()
      collectgarbage()
      collectgarbage()
      local again = assert(hurrahdb.open(path))
      assert.equals(50, again:count())
      assert.equals(50, again:get("gc50"))
      again:close()
    end)
  end)

  describe("several stores", function()
    it("on different files are independent", function()
      local path2 = dir .. "/other.aof"
      local one = assert(hurrahdb.open(path, { sync_time = 0 }))
      local two = assert(hurrahdb.open(path2, { sync_time = 100000 }))
      local mem = assert(hurrahdb.new())
      one:set("shared", "one")
      two:set("shared", "two")
      mem:set("shared", "mem")
      one:set("only one", 1)
      two:set("only two", 2)
      assert.equals("one", one:get("shared"))
      assert.equals("two", two:get("shared"))
      assert.equals("mem", mem:get("shared"))
      assert.is_false(one:exists("only two"))
      assert.is_false(two:exists("only one"))
      assert.equals(2, one:count())
      assert.equals(2, two:count())
      assert.equals(1, mem:count())
      two:close()
      assert.equals("one", one:get("shared"))
      one:set("after", true)
      one:close()
      mem:close()
      local r1 = assert(hurrahdb.open(path))
      local r2 = assert(hurrahdb.open(path2))
      assert_holds(r1, { shared = "one", ["only one"] = 1, after = true })
      assert_holds(r2, { shared = "two", ["only two"] = 2 })
      r1:close()
      r2:close()
    end)
  end)
end)

describe("hurrahdb.open() on a damaged file", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    db:set("first", "alpha")
    db:set("victim", { word = "abcdefghij" })
    db:set("last", "omega")
    assert.is_true(db:close())
  end)
  after_each(function() helpers.rmdir(dir) end)

  local function flip(data, at)
    return data:sub(1, at - 1) .. string.char(data:byte(at) % 2 == 1 and data:byte(at) - 1 or data:byte(at) + 1) .. data:sub(at + 1)
  end

  it("returns nil, err with the path and the offset when a byte of JSON is flipped", function()
    local data = helpers.read_file(path)
    local s = data:find("abcdefghij", 1, true)
    assert.is_number(s)
    helpers.write_file(path, flip(data, s + 4))
    local db, err = hurrahdb.open(path)
    assert.is_nil(db)
    assert.is_string(err)
    assert.matches(path, err, 1, true)
    assert.matches("offset %d+", err)
  end)

  it("returns nil, err with the offset when the RESP framing is broken", function()
    local data = helpers.read_file(path)
    local s = data:find("$6\r\nvictim", 1, true)
    assert.is_number(s)
    helpers.write_file(path, data:sub(1, s - 1) .. "$7" .. data:sub(s + 2))
    local db, err = hurrahdb.open(path)
    assert.is_nil(db)
    assert.matches(path, err, 1, true)
    assert.matches("offset %d+", err)
  end)

  -- With sync_time = 0 each set is a batch: "first", "victim", "last".
  -- starts[i] is where batch i begins (1-based); starts[4] is past the end.
  local function batch_starts(data)
    local _, batches = helpers.aof_batches(data)
    assert.equals(3, #batches)
    return { batches[1].start + 1, batches[2].start + 1, batches[3].start + 1, #data + 1 }
  end

  local contents = helpers.contents

  it("returns nil, err with the offset for a flip of any byte of a batch followed by good ones", function()
    local data = helpers.read_file(path)
    local starts = batch_starts(data)
    for i = starts[1], starts[3] - 1 do
      helpers.write_file(path, flip(data, i))
      local db, err = hurrahdb.open(path)
      if db then db:close() end
      assert.is_nil(db, "flip at offset " .. (i - 1) .. " was not detected")
      assert.matches("offset %d+", err)
      assert.matches(path, err, 1, true)
      assert.equals(flip(data, i), helpers.read_file(path), "the damaged file was changed")
    end
  end)

  it("with repair = true keeps the batches before any flipped byte and moves the rest to a side file #slow", function()
    local data = helpers.read_file(path)
    local starts = batch_starts(data)
    local before = {
      {},
      { first = "alpha" },
    }
    for batch = 1, 2 do
      for i = starts[batch], starts[batch + 1] - 1 do
        local damaged = flip(data, i)
        helpers.write_file(path, damaged)
        local warning
        local db, err = hurrahdb.open(path, { repair = true, on_warning = function(w) warning = w end })
        assert.is_not_nil(db, "flip at offset " .. (i - 1) .. ": " .. tostring(err))
        helpers.assert_same_typed(before[batch], contents(db), "flip at offset " .. (i - 1))
        assert.is_true(db:close())
        local side = path .. ".damaged-" .. (starts[batch] - 1)
        assert.matches(side, warning, 1, true)
        assert.equals(damaged:sub(starts[batch]), helpers.read_file(side), "flip at offset " .. (i - 1))
        assert.equals(data:sub(1, starts[batch] - 1), helpers.read_file(path), "flip at offset " .. (i - 1))
        os.remove(side)
      end
    end
  end)

  it("moves the last batch, and only it, to a side file when any of its bytes is flipped (nothing proves it was never acknowledged)", function()
    local data = helpers.read_file(path)
    local starts = batch_starts(data)
    for i = starts[3], #data do
      local damaged = flip(data, i)
      helpers.write_file(path, damaged)
      local warnings = {}
      local db, err = hurrahdb.open(path, { on_warning = function(w) warnings[#warnings + 1] = w end })
      assert.is_not_nil(db, "flip at offset " .. (i - 1) .. ": " .. tostring(err))
      helpers.assert_same_typed({ first = "alpha", victim = { word = "abcdefghij" } }, contents(db))
      assert.equals(#data - starts[3] + 1, db:stats().dropped_bytes)
      assert.equals(1, #warnings)
      local side = path .. ".damaged-" .. (starts[3] - 1)
      assert.matches("offset " .. (starts[3] - 1), warnings[1], 1, true)
      assert.matches("moved the " .. (#data - starts[3] + 1) .. " bytes from there on to " .. side, warnings[1], 1, true)
      assert.is_true(db:close())
      assert.equals(data:sub(1, starts[3] - 1), helpers.read_file(path))
      assert.equals(damaged:sub(starts[3]), helpers.read_file(side), "flip at offset " .. (i - 1))
      os.remove(side)
    end
  end)

  it("refuses the file, and changes nothing, when any byte of the header is flipped", function()
    local data = helpers.read_file(path)
    local header_end = data:find("\n", 1, true)
    for i = 1, header_end do
      local damaged = flip(data, i)
      helpers.write_file(path, damaged)
      local db, err = hurrahdb.open(path, { on_warning = function() end })
      if db then db:close() end
      assert.is_nil(db, "flip at offset " .. (i - 1) .. " was not detected")
      assert.matches(path, err, 1, true)
      assert.equals(damaged, helpers.read_file(path))
      assert.same({ "data.aof" }, helpers.dir_entries(dir))
    end
    -- the key itself: its checksum catches it, and repair sets the whole file aside
    local key_digit = #"#hurrahdb aof 2 " + 5
    local damaged = flip(data, key_digit)
    helpers.write_file(path, damaged)
    local _, err = hurrahdb.open(path)
    assert.matches("damaged header at offset 0", err, 1, true)
    local warning
    local db = assert(hurrahdb.open(path, { repair = true, on_warning = function(w) warning = w end }))
    assert.equals(0, db:count())
    assert.is_true(db:close())
    assert.equals(damaged, helpers.read_file(path .. ".damaged-0"))
    assert.matches(path .. ".damaged-0", warning, 1, true)
  end)

  it("never loads changed data when any byte after the header is flipped #slow", function()
    local data = helpers.read_file(path)
    local header_end = data:find("\n", 1, true)
    for i = header_end + 1, #data do
      helpers.write_file(path, flip(data, i))
      local db, err = hurrahdb.open(path, { on_warning = function() end })
      if db then
        local t = contents(db)
        db:close()
        local ok = helpers.deep_equal_typed(
          { first = "alpha", victim = { word = "abcdefghij" }, last = "omega" }, t)
          or helpers.deep_equal_typed({ first = "alpha", victim = { word = "abcdefghij" } }, t)
        assert.is_true(ok, "flip at offset " .. (i - 1) .. " loaded a state that never existed")
      else
        assert.is_string(err)
        assert.matches(path, err, 1, true)
      end
      for _, name in ipairs(helpers.dir_entries(dir)) do
        if name ~= "data.aof" then os.remove(dir .. "/" .. name) end
      end
    end
  end)

  it("opens with exactly the whole batches before a cut at any length, and cuts the torn rest off #slow", function()
    local data = helpers.read_file(path)
    -- The state after each batch; with sync_time = 0 every set is a batch.
    local states = {
      {},
      { first = "alpha" },
      { first = "alpha", victim = { word = "abcdefghij" } },
      { first = "alpha", victim = { word = "abcdefghij" }, last = "omega" },
    }
    local header_len, batches = helpers.aof_batches(data)
    assert.equals(3, #batches)
    for len = 0, #data - 1 do
      helpers.write_file(path, data:sub(1, len))
      local whole, good = 0, len >= header_len and header_len or 0
      for i, b in ipairs(batches) do
        if b.stop <= len then whole, good = i, b.stop end
      end
      local warning
      local db, err = hurrahdb.open(path, { on_warning = function(w) warning = w end })
      if len > 0 and len < #"#hurrahdb aof " then
        -- too short to be surely hurrahdb's: refused, never written
        assert.is_nil(db, "cut at " .. len)
        assert.matches("not a hurrahdb AOF", err, 1, true)
        assert.equals(data:sub(1, len), helpers.read_file(path))
        goto next_cut
      end
      assert.is_not_nil(db, "cut at " .. len .. ": " .. tostring(err))
      local t = {}
      for k, v in db:pairs() do t[k] = v end
      assert.equals(len - good, db:stats().dropped_bytes, "cut at " .. len)
      -- what was cut is said, in words that fit the cut
      if len == 0 or len == good then
        assert.is_nil(warning, "cut at " .. len)
      elseif len < header_len then
        assert.matches("the header was cut short (" .. len .. " bytes", warning, 1, true)
      else
        assert.matches("dropped an incomplete last batch of " .. (len - good)
          .. " bytes at offset " .. good, warning, 1, true)
      end
      assert.is_true(db:close())
      helpers.assert_same_typed(states[whole + 1], t, "cut at " .. len)
      -- The torn part is gone from the file (no side file: its own line
      -- proves the append never finished): it holds the whole batches, or
      -- just a fresh header.
      local kept = helpers.read_file(path)
      if len >= header_len then
        assert.equals(data:sub(1, good), kept, "cut at " .. len)
      else
        assert.equals(header_len, #kept, "cut at " .. len)
        assert.matches("^#hurrahdb aof 2 %x+ %x+\r\n$", kept)
      end
      assert.same({ "data.aof" }, helpers.dir_entries(dir), "cut at " .. len)
      ::next_cut::
    end
  end)

  it("leaves the damaged file as it was", function()
    local data = helpers.read_file(path)
    local s = data:find("abcdefghij", 1, true)
    local damaged = flip(data, s + 4)
    helpers.write_file(path, damaged)
    assert.is_nil(hurrahdb.open(path))
    assert.equals(damaged, helpers.read_file(path))
  end)
end)
