-- The value decoder's error paths. hurrahdb's own encoder never writes the
-- texts below, but a file can hold them: written by another program, by
-- hand, or moved in from Redis. Each one makes get return nil and an error
-- naming what is wrong and where, and leaves the store as it was: the key is
-- still there, the other keys still read, iteration goes on past it.

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"

-- { what the text is, the text, the error's words, the byte offset named }
local bad = {
  { "a lone high surrogate", [["a\ud800"]], "lone high surrogate in \\u escape", 8 },
  { "a lone high surrogate then a letter", [["\ud800x"]], "lone high surrogate in \\u escape", 7 },
  { "a lone low surrogate", [["\udc00"]], "lone low surrogate in \\u escape", 7 },
  { "an inverted pair", [["\udc00\ud800"]], "lone low surrogate in \\u escape", 7 },
  { "a high surrogate and no low one", [["\ud800\u0041"]], "bad surrogate pair in \\u escape", 13 },
  { "a short \\u escape", [["\u12"]], "truncated \\u escape", 3 },
  { "a leading zero", "01", "number with a leading zero", 0 },
  { "a negative leading zero", "-012", "number with a leading zero", 0 },
  { "a leading zero in an array", "[1,00]", "number with a leading zero", 3 },
  { "a plus sign", "+1", "unexpected character", 0 },
  { "a fraction without digits", "1.", "bad number", 0 },
  { "an exponent without digits", "1e+", "bad number", 0 },
  { "a number past the largest double", "1e309", "number out of the range of a double", 0 },
  { "a negative one", "[-2e308]", "number out of the range of a double", 1 },
  { "NaN", "NaN", "unexpected character", 0 },
  { "Infinity", "[Infinity]", "unexpected character", 1 },
  { "trailing characters after a number", "1 x", "trailing characters", 2 },
  { "a second value", "{} {}", "trailing characters", 3 },
  { "a string then bytes", [["a"b]], "trailing characters", 3 },
  { "nothing", "", "unexpected end", 0 },
  { "blanks only", "  ", "unexpected end", 2 },
  { "a cut literal", "tru", "unexpected character", 0 },
  { "a trailing comma in an array", "[1,]", "unexpected character", 3 },
  { "a trailing comma in an object", [[{"a":1,}]], "expected a string key", 7 },
  { "a key without a value", [[{"a"}]], "expected ':'", 4 },
  { "a key that is not a string", "{1:2}", "expected a string key", 1 },
  { "an unterminated string", [["abc]], "unterminated string", 4 },
  { "an unterminated array", "[1,2", "unterminated array", 4 },
  { "a control byte in a string", "\"a\1b\"", "control character in string", 2 },
  { "a bad escape", [["\x"]], "bad escape in string", 2 },
  { "arrays nested 1001 deep", ("["):rep(1001) .. ("]"):rep(1001), "nesting deeper than 1000 levels", 1000 },
  { "maps nested 1001 deep", ('{"a":'):rep(1001) .. "1" .. ("}"):rep(1001), "nesting deeper than 1000 levels", 5000 },
}

describe("the value decoder", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  for _, case in ipairs(bad) do
    local what, text, words, offset = case[1], case[2], case[3], case[4]
    it("refuses " .. what .. ", and the store stays as it was", function()
      helpers.write_v1_file(path, { { "before", "1" }, { "bad", text }, { "after", '{"ok":true}' } })
      local db = assert(hurrahdb.open(path, { on_warning = function() end }))
      local v, err = db:get("bad")
      assert.is_nil(v)
      assert.matches("cannot decode stored value: " .. words, err, 1, true)
      if offset then assert.matches(" at byte " .. offset .. "$", err) end
      assert.is_true(db:exists("bad"))
      assert.equals(3, db:count())
      assert.equals(1, db:get("before"))
      assert.same({ ok = true }, db:get("after"))
      local seen = {}
      for k, val, perr in db:pairs() do
        seen[k] = true
        if k == "bad" then
          assert.is_nil(val)
          assert.matches("cannot decode stored value: " .. words, perr, 1, true)
        end
      end
      assert.same({ before = true, bad = true, after = true }, seen)
      -- the store goes on, and writes over the key
      assert(db:set("bad", "mended"))
      assert.equals("mended", db:get("bad"))
      assert(db:close())
    end)
  end

  it("takes nesting of exactly 1000 levels", function()
    helpers.write_v1_file(path, { { "k", ("["):rep(1000) .. ("]"):rep(1000) } })
    local db = assert(hurrahdb.open(path, { on_warning = function() end }))
    local v, depth = assert(db:get("k")), 1
    while next(v) do v, depth = v[1], depth + 1 end
    assert.equals(1000, depth)
    assert(db:close())
  end)

  it("reads a surrogate pair as the one character it encodes", function()
    helpers.write_v1_file(path, { { "k", [["\ud83d\ude00 \u00e9"]] } })
    local db = assert(hurrahdb.open(path, { on_warning = function() end }))
    assert.equals("\240\159\152\128 \195\169", db:get("k"))
    assert(db:close())
  end)

  it("reads a number too small for a double as the nearest one, 0 included", function()
    helpers.write_v1_file(path, { { "k", "[1e-400,-1e-400,4.9e-324]" } })
    local db = assert(hurrahdb.open(path, { on_warning = function() end }))
    local v = db:get("k")
    assert.equals(0, v[1])
    assert.equals(0, v[2])
    assert.equals(4.9e-324, v[3])
    if helpers.HAS_INTEGERS then
      assert.equals("float", math.type(v[1]))
    end
    assert(db:close())
  end)

  -- An integer token past 64 bits: Lua 5.4 reads it as a float, as Lua's own
  -- reader does (tonumber gives the same); LuaJIT, whose numbers are doubles,
  -- refuses any integer a double does not hold exactly.
  if helpers.HAS_INTEGERS then
    it("reads integers past int64 as floats, as Lua 5.4's reader does", function()
      helpers.write_v1_file(path, { { "k", "[9223372036854775807,-9223372036854775808,"
        .. "9223372036854775808,-9223372036854775809,123456789012345678901234567890]" } })
      local db = assert(hurrahdb.open(path, { on_warning = function() end }))
      local v = db:get("k")
      assert.equals(math.maxinteger, v[1])
      assert.equals("integer", math.type(v[1]))
      assert.equals(math.mininteger, v[2])
      assert.equals("integer", math.type(v[2]))
      for i = 3, 5 do
        assert.equals("float", math.type(v[i]))
      end
      assert.equals(tonumber("9223372036854775808"), v[3])
      assert.equals(tonumber("-9223372036854775809"), v[4])
      assert.equals(tonumber("123456789012345678901234567890"), v[5])
      assert(db:close())
    end)
  else
    it("refuses integers a double does not hold exactly", function()
      helpers.write_v1_file(path, { { "a", "9223372036854775808" }, { "b", "[9007199254740993]" } })
      local db = assert(hurrahdb.open(path, { on_warning = function() end }))
      for _, k in ipairs { "a", "b" } do
        local v, err = db:get(k)
        assert.is_nil(v)
        assert.matches("cannot hold exactly", err, 1, true)
      end
      assert(db:close())
    end)
  end
end)
