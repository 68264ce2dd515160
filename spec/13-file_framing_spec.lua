-- The file's framing belongs to hurrahdb alone: what users store (keys and
-- values, which may come from HTTP requests) can never pass for it, the open
-- stays linear in the file's size whatever they store, batches that went
-- missing or out of order are found, bytes the open cannot keep are never
-- deleted unless their own line proves them an append that never finished,
-- and files of other versions get a message that says what is wrong.

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"

local function quiet() end

local contents = helpers.contents

local function monotonic()
  -- os.clock is CPU time of this process: the open runs in it, and a
  -- neighbour's load on the machine does not count.
  return os.clock()
end

describe("a key or value shaped like the file's framing", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  -- What a user who cannot read the file can store: batch lines of either
  -- version, with whatever checksums and tags they like, and RESP records.
  local crc_of_newline = require("hdb_testlib").crc32c("\n")
  local forged = "\n#hdb batch 1 " .. string.format("%08x", crc_of_newline) .. "\r\n"   -- a v1 trailer of "\n"
    .. "#hdb 2 27 00000000 0123456789abcdef\r\n*2\r\n$3\r\nDEL\r\n$5\r\nfirst\r\n"
    .. "\r\n#hdb batch 27 00000000\r\n"

  it("stored and read back is only data", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(db:set("first", 1))
    assert(db:set(forged, forged))
    assert(db:set("after", { forged }))
    db:close()
    db = assert(hurrahdb.open(path))
    helpers.assert_same_typed({ first = 1, [forged] = forged, after = { forged } }, contents(db))
    assert.is_nil(db:stats().warning)
    db:close()
  end)

  it("inside a batch torn by a crash does not turn the torn tail into damage", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(db:set("first", 1))
    assert(db:set("second", 2))
    assert(db:set(forged .. "tail", "v"))
    db:close()
    local data = helpers.read_file(path)
    local key_at = data:find(forged, 1, true)
    local torn = data:sub(1, key_at + #forged + 1) -- cut inside the key, after the forgeries
    helpers.write_file(path, torn)
    local warning
    db = assert(hurrahdb.open(path, { on_warning = function(w) warning = w end }))
    helpers.assert_same_typed({ first = 1, second = 2 }, contents(db))
    assert.matches("incomplete last batch", warning, 1, true)
    -- and the store goes on
    assert(db:set("third", 3))
    db:close()
    db = assert(hurrahdb.open(path))
    helpers.assert_same_typed({ first = 1, second = 2, third = 3 }, contents(db))
    db:close()
  end)

  it("in a torn batch of several MiB keeps the open linear in the file's size", function()
    -- Lines claiming long batches make a search for "a good batch after
    -- the bad one" check long spans again and again: quadratic, unless the
    -- framing cannot be forged and nothing is searched in the records.
    local unit = "\n#hdb batch 1000000 00000000\r\n#hdb 7 1000000 00000000 0123456789abcdef\r\n"
    local key = string.rep(unit, math.floor(4 * 1024 * 1024 / #unit))
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(db:set("first", 1))
    assert(db:set(key, "v"))
    db:close()
    local whole = helpers.read_file(path)

    -- The same bytes, whole: the cost of reading and checking them.
    local t0 = monotonic()
    db = assert(hurrahdb.open(path))
    local t_whole = monotonic() - t0
    assert.equals(2, db:count())
    db:close()

    helpers.write_file(path, whole:sub(1, #whole - 100))
    t0 = monotonic()
    db = assert(hurrahdb.open(path, { on_warning = quiet }))
    local t_torn = monotonic() - t0
    helpers.assert_same_typed({ first = 1 }, contents(db))
    db:close()
    -- Linear: a small multiple of reading the whole file (the unfixed
    -- loader took more than 10 s here, thousands of times as long).
    assert.is_true(t_torn < 40 * t_whole + 0.05,
      string.format("open of the torn file took %.3f s, of the whole one %.3f s", t_torn, t_whole))

    -- A byte changed in the middle of the key: the batch fails its
    -- checksum, and the open looks through the rest of the file, key
    -- included, for a valid batch line (there is none: it goes to a side
    -- file). That search must be linear too.
    local mid = math.floor(#whole / 2)
    helpers.write_file(path, whole:sub(1, mid - 1) .. "Z" .. whole:sub(mid + 1))
    t0 = monotonic()
    db = assert(hurrahdb.open(path, { on_warning = quiet }))
    local t_bad = monotonic() - t0
    helpers.assert_same_typed({ first = 1 }, contents(db))
    db:close()
    assert.is_true(t_bad < 40 * t_whole + 0.1,
      string.format("open of the damaged file took %.3f s, of the whole one %.3f s", t_bad, t_whole))
  end)
end)

describe("batches of a file", function()
  local dir, path, data, batches
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    for i = 1, 4 do assert(db:set("k" .. i, i)) end
    db:close()
    data = helpers.read_file(path)
    local _
    _, batches = helpers.aof_batches(data)
    assert.equals(4, #batches)
  end)
  after_each(function() helpers.rmdir(dir) end)

  local function batch(i) return data:sub(batches[i].start + 1, batches[i].stop) end
  local function head() return data:sub(1, batches[1].start) end

  local cases = {
    { "missing in the middle", function() return head() .. batch(1) .. batch(3) .. batch(4) end, 2, "is number 3, expected 2" },
    { "out of order", function() return head() .. batch(1) .. batch(3) .. batch(2) .. batch(4) end, 2, "is number 3, expected 2" },
    { "repeated", function() return head() .. batch(1) .. batch(2) .. batch(2) .. batch(3) end, 3, "is number 2, expected 3" },
  }
  for _, case in ipairs(cases) do
    it(case[1] .. " make the open fail with the offset, and change nothing", function()
      local damaged = case[2]()
      helpers.write_file(path, damaged)
      local db, err = hurrahdb.open(path)
      assert.is_nil(db)
      local at = #head()
      for i = 1, case[3] - 1 do at = at + #batch(i) end
      assert.matches("batch at offset " .. at .. " " .. case[4], err, 1, true)
      assert.matches("a batch is missing, repeated or out of order", err, 1, true)
      assert.equals(damaged, helpers.read_file(path))
    end)
  end

  it("of another file are not replayed, and go to a side file", function()
    local other = dir .. "/other.aof"
    local db = assert(hurrahdb.open(other, { sync_time = 0 }))
    for i = 1, 5 do assert(db:set("k" .. i, "other " .. i)) end
    db:close()
    local _, theirs = helpers.aof_batches(helpers.read_file(other))
    local stolen = helpers.read_file(other):sub(theirs[5].start + 1) -- their batch number 5
    helpers.write_file(path, data .. stolen)
    local warning
    db = assert(hurrahdb.open(path, { on_warning = function(w) warning = w end }))
    helpers.assert_same_typed({ k1 = 1, k2 = 2, k3 = 3, k4 = 4 }, contents(db))
    local side = path .. ".damaged-" .. #data
    assert.matches(side, warning, 1, true)
    assert.equals(stolen, helpers.read_file(side))
    db:close()
    assert.equals(data, helpers.read_file(path))
  end)
end)

describe("bytes after the last good batch", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("that no batch line announces are moved to a side file named in the warning, never deleted", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(db:set("kept", 1))
    db:close()
    local good = helpers.read_file(path)
    -- 300 KB of complete records appended by something else
    local parts = {}
    for i = 1, 3000 do
      local k, v = "extra" .. i, string.rep("v", 80)
      parts[i] = "*3\r\n$3\r\nSET\r\n$" .. #k .. "\r\n" .. k .. "\r\n$" .. (#v + 2) .. "\r\n\"" .. v .. "\"\r\n"
    end
    local extra = table.concat(parts)
    assert.is_true(#extra > 300000)
    helpers.write_file(path, good .. extra)
    local warnings = {}
    db = assert(hurrahdb.open(path, { on_warning = function(w) warnings[#warnings + 1] = w end }))
    helpers.assert_same_typed({ kept = 1 }, contents(db))
    assert.equals(1, #warnings)
    local side = warnings[1]:match("to (%S+)$")
    assert.is_string(side, warnings[1])
    assert.equals(extra, helpers.read_file(side))
    assert.equals(#extra, db:stats().dropped_bytes)
    db:close()
    assert.equals(good, helpers.read_file(path))
  end)
end)

describe("a file of hurrahdb 0.2.0 (format version 1)", function()
  local testlib = require "hdb_testlib"
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  local function v1_batch(records)
    return records .. string.format("#hdb batch %d %08x\r\n", #records, testlib.crc32c(records))
  end
  local function set(k, json)
    return "*3\r\n$3\r\nSET\r\n$" .. #k .. "\r\n" .. k .. "\r\n$" .. #json .. "\r\n" .. json .. "\r\n"
  end
  local function del(k) return "*2\r\n$3\r\nDEL\r\n$" .. #k .. "\r\n" .. k .. "\r\n" end
  local v1 = "#hurrahdb aof 1\r\n" .. v1_batch(set("a", "1") .. set("b", '{"x":[1,2.5]}'))
    .. v1_batch(del("a") .. set("c", '"three"')) .. v1_batch(set("b", "2"))

  it("opens with its data and is converted to the current format, atomically", function()
    helpers.write_file(path, v1)
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    helpers.assert_same_typed({ b = 2, c = "three" }, contents(db))
    assert.is_true(db:set("d", 4))
    db:close()
    local data = helpers.read_file(path)
    assert.matches("^#hurrahdb aof 2 %x+ %x+\r\n", data)
    local records = assert(helpers.parse_aof(data))
    helpers.assert_same_typed({ b = "2", c = '"three"', d = "4" }, helpers.replay_aof(records))
    assert.same({ "data.aof" }, helpers.dir_entries(dir))
    db = assert(hurrahdb.open(path))
    helpers.assert_same_typed({ b = 2, c = "three", d = 4 }, contents(db))
    db:close()
  end)

  it("keeps its owner and permissions when converted by another user (root)", function()
    if helpers.capture("id -u") ~= "0\n" then
      pending("needs root, to give the file to another user")
      return
    end
    helpers.write_file(path, v1)
    helpers.execute("chown nobody:nogroup " .. helpers.shell_quote(path) .. " && chmod 640 " .. helpers.shell_quote(path))
    local db = assert(hurrahdb.open(path))
    db:close()
    assert.matches("^#hurrahdb aof 2 ", helpers.read_file(path))
    assert.equals("nobody:nogroup 640\n", helpers.capture("stat -c '%U:%G %a' " .. helpers.shell_quote(path)))
  end)

  it("with a bad last batch keeps the good ones and moves the rest to a side file", function()
    local torn = v1:sub(1, #v1 - 5)
    helpers.write_file(path, torn)
    local warning
    local db = assert(hurrahdb.open(path, { on_warning = function(w) warning = w end }))
    helpers.assert_same_typed({ b = { x = { 1, 2.5 } }, c = "three" }, contents(db))
    local side = warning:match("to (%S+)$")
    assert.equals(torn:sub(#v1 - #v1_batch(set("b", "2")) + 1), helpers.read_file(side))
    db:close()
  end)

  it("whose line endings became LF gets a message saying so", function()
    helpers.write_file(path, (v1:gsub("\r\n", "\n")))
    local db, err = hurrahdb.open(path)
    assert.is_nil(db)
    assert.matches("line endings were converted from CRLF to LF", err, 1, true)
    assert.equals((v1:gsub("\r\n", "\n")), helpers.read_file(path))
  end)
end)

describe("a file of another format version", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("made by a newer hurrahdb is refused as such and left alone", function()
    local newer = "#hurrahdb aof 5 0123456789abcdef0123456789abcdef\r\n#hdb 1 0 00000000 0000000000000000\r\n"
    helpers.write_file(path, newer)
    local db, err = hurrahdb.open(path)
    assert.is_nil(db)
    assert.matches("made by a newer hurrahdb (file format version 5; this build reads versions 1 to 4)", err, 1, true)
    assert.equals(newer, helpers.read_file(path))
  end)

  it("of the current version whose line endings became LF gets a message saying so", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    assert(db:set("a", "b"))
    db:close()
    local lf = helpers.read_file(path):gsub("\r\n", "\n")
    helpers.write_file(path, lf)
    local _, err = hurrahdb.open(path)
    assert.matches("line endings were converted from CRLF to LF", err, 1, true)
  end)
end)
