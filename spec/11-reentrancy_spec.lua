-- Reentrancy: finalizers (__gc) that run while a call is making its Lua
-- values, and change, read or close the very store the call reads. Each call
-- returns what the store held when the call reached it, whatever the
-- finalizers do meanwhile; it never reads memory the store has freed, never
-- reports damage on intact data, and a store closed under it is reported as
-- "store is closed".
--
-- Making a Lua value (a table, a string, a growing buffer) may run a step of
-- the garbage collector, and the step runs the finalizers of garbage objects.
-- To make that happen at a known point, each case collects, makes finalizer
-- objects garbage, and sets the collector so that the first allocation inside
-- the call runs one whole cycle, finalizers included; with `at = n`, every
-- allocation runs a cycle and a chain of finalizers (one per cycle) acts at
-- the n-th. Every case asserts that its finalizers ran inside the call, so
-- none can pass without the collector having run there.
--
-- Freed entries are reused at once by a second store that writes values of
-- the same size, so that a read of freed memory returns other bytes and fails
-- the comparison even without AddressSanitizer (`make test SANITIZE=1`
-- reports the read itself).

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"

local jit = rawget(_G, "jit")

-- An object whose finalizer calls f: a table in Lua 5.4, a proxy in LuaJIT
-- (which runs __gc for userdata only).
local function finalizer_object(f)
  if jit then
    local p = newproxy(true)
    getmetatable(p).__gc = f
    return p
  end
  return setmetatable({}, { __gc = f })
end

-- Pause 200: no new cycle starts before the heap doubles. Pause 0: a new
-- cycle at every allocation. The step is unbounded, so a step is a whole
-- cycle: marking, sweeping and every pending finalizer.
local function tune_collector(pause)
  local old = { collectgarbage("setpause", pause), collectgarbage("setstepmul", 1000) }
  if jit then
    collectgarbage("setstepmul", 1000000)
  else
    -- a step size of 2^63 bytes means no limit
    collectgarbage("incremental", pause, 1000, 63)
  end
  return old
end

local function restore_collector(old)
  if jit then
    collectgarbage("setpause", old[1])
    collectgarbage("setstepmul", old[2])
  else
    collectgarbage("incremental", old[1], old[2], 13)
  end
end

-- Runs call() with garbage finalizer objects and the collector set to run
-- them inside it: all at its first allocation, or with opts.at = n at its
-- n-th. act(i) runs in the i-th finalizer run that happens during the call.
-- An act that returns "raise" makes its finalizer raise an error then.
-- opts.warm_up, if given, runs first with the collector as usual: a call
-- like the real one, so that the real one finds the Lua stack and call
-- records already grown (growing them is a collection point too, before the
-- method would begin).
-- Returns how many finalizers ran during the call, then pcall's results.
local function call_during_gc(act, call, opts)
  opts = opts or {}
  local armed, ran, act_errors = false, 0, {}
  local function run_act()
    ran = ran + 1
    local ok, result = pcall(act, ran)
    if not ok then act_errors[#act_errors + 1] = tostring(result) end
    if result == "raise" then error("raised by a finalizer", 0) end
  end
  collectgarbage("collect")
  if opts.at then
    local function link(left)
      finalizer_object(function()
        if not armed then return end
        if left > 1 then
          link(left - 1)
        else
          run_act()
        end
      end)
    end
    link(opts.at)
  else
    for _ = 1, 50 do
      finalizer_object(function() if armed then run_act() end end)
    end
  end
  if opts.warm_up then pcall(opts.warm_up) end
  local old = tune_collector(opts.at and 0 or 200)
  collectgarbage("restart")
  armed = true
  local ok, a, b, c = pcall(call)
  armed = false
  restore_collector(old)
  collectgarbage("collect")
  assert.same({}, act_errors, "a finalizer failed")
  return ran, ok, a, b, c
end

-- Values that make many Lua objects when decoded, in versions whose JSON
-- has the same length (tag "bbbb"), or is longer or shorter.
local A, SAME, LONGER, SHORTER = "aaaa", "bbbb", "aaaaaaaaaaaaaaaa", "a"

local kinds = {
  { "an array of 2000 objects (tens of KB)", function(tag, j)
    local t = {}
    for i = 1, 2000 do t[i] = { tag = tag, i = i, list = { j, tag } } end
    return t
  end },
  { "an array of 20 objects (under 4 KB)", function(tag, j)
    local t = {}
    for i = 1, 20 do t[i] = { tag = tag, i = i, list = { j, tag } } end
    return t
  end },
  { "a 20 KB string with escapes (built in a buffer)", function(tag, j)
    return j .. "\n" .. tag:rep(5000)
  end },
  { "a 20 KB string without escapes (pushed in one piece)", function(tag, j)
    return j .. tag:rep(5000)
  end },
}

describe("a finalizer that runs during db:get()", function()
  local db, filler
  before_each(function()
    db = hurrahdb.new()
    filler = hurrahdb.new()
  end)
  after_each(function()
    db:close()
    filler:close()
  end)

  -- Writes values of the stored size elsewhere, so that the allocator hands
  -- out again what the store just freed, with other bytes in it.
  local function reuse_freed(make)
    for i = 1, 20 do assert(filler:set("f" .. i, make(SAME, 1))) end
  end

  for _, kind in ipairs(kinds) do
    local description, make = kind[1], kind[2]
    describe("of " .. description, function()
      -- { what the finalizer does, act(db, make), the key's value afterwards
      --   (nil: deleted, false: the store is closed) }
      local cases = {
        { "deletes the key", function()
          assert(db:delete("k"))
          reuse_freed(make)
        end, function() return nil end },
        { "overwrites it with a longer value", function()
          assert(db:set("k", make(LONGER, 1)))
          reuse_freed(make)
        end, function() return make(LONGER, 1) end },
        { "overwrites it with a shorter value", function()
          assert(db:set("k", make(SHORTER, 1)))
          reuse_freed(make)
        end, function() return make(SHORTER, 1) end },
        { "overwrites it with a value of the same length (in place)", function()
          assert(db:set("k", make(SAME, 1)))
        end, function() return make(SAME, 1) end },
        { "sets 5000 other keys (the index grows and rehashes) and deletes the key", function()
          for i = 1, 5000 do assert(db:set("other" .. i, i)) end
          assert(db:delete("k"))
          reuse_freed(make)
        end, function() return nil end },
        { "closes the store", function()
          assert(db:close())
          reuse_freed(make)
        end, function() return false end },
      }
      for _, case in ipairs(cases) do
        it(case[1] .. ": get returns the value stored when it was called", function()
          local original = make(A, 1)
          assert(db:set("k", original))
          local acted = 0
          local ran, ok, v, err = call_during_gc(function()
            acted = acted + 1
            if acted == 1 then case[2]() end
          end, function() return db:get("k") end)
          assert.is_true(ran > 0, "no finalizer ran during get")
          assert.is_true(ok, tostring(v))
          assert.is_nil(err)
          helpers.assert_same_typed(original, v)
          local after = case[3]()
          if after == false then
            local closed, msg = pcall(db.get, db, "k")
            assert.is_false(closed)
            assert.matches("store is closed", msg, 1, true)
          else
            helpers.assert_same_typed({ after }, { db:get("k") })
          end
        end)
      end

      -- Lua 5.4 turns the error into a warning; LuaJIT passes it on to
      -- whatever allocated, here the decoding inside get.
      it("raises an error: get " .. (jit and "raises it" or "returns the value")
         .. ", and the store is intact", function()
        local original = make(A, 1)
        assert(db:set("k", original))
        local ran, ok, v, err = call_during_gc(function(i)
          if i == 1 then return "raise" end
        end, function() return db:get("k") end)
        assert.is_true(ran > 0, "no finalizer ran during get")
        if jit then
          assert.is_false(ok)
          assert.equals("raised by a finalizer", v)
        else
          assert.is_true(ok, tostring(v))
          assert.is_nil(err)
          helpers.assert_same_typed(original, v)
        end
        helpers.assert_same_typed(original, db:get("k"))
      end)

      it("calls db:get() on the same key (reentrancy): every get returns the value", function()
        local original = make(A, 1)
        assert(db:set("k", original))
        local inner = {}
        local ran, ok, v, err = call_during_gc(function(i)
          if i <= 5 then inner[#inner + 1] = { db:get("k") } end
        end, function() return db:get("k") end)
        assert.is_true(ran > 0, "no finalizer ran during get")
        assert.is_true(ok, tostring(v))
        assert.is_nil(err)
        helpers.assert_same_typed(original, v)
        assert.equals(math.min(ran, 5), #inner)
        for _, got in ipairs(inner) do helpers.assert_same_typed({ original }, got) end
      end)
    end)
  end

  it("deletes the key in the middle of decoding it: get returns the value stored when it was called", function()
    local original = kinds[2][2](A, 1)
    assert(db:set("k", original))
    local ran, ok, v, err = call_during_gc(function()
      assert(db:delete("k"))
      reuse_freed(kinds[2][2])
    end, function() return db:get("k") end, { at = 10 })
    assert.equals(1, ran, "the finalizer did not run during get")
    assert.is_true(ok, tostring(v))
    assert.is_nil(err)
    helpers.assert_same_typed(original, v)
    assert.is_nil(db:get("k"))
  end)
end)

describe("a finalizer that runs during a db:pairs() loop", function()
  local db, filler
  before_each(function()
    db = hurrahdb.new()
    filler = hurrahdb.new()
  end)
  after_each(function()
    db:close()
    filler:close()
  end)

  -- Runs the loop one step at a time, with finalizers acting inside every
  -- step. act(step) changes the store and `model`, which must mirror it.
  -- Checks that each step returns a key with the value it had when the step
  -- began. Returns the keys visited and the error that ended the loop, if any.
  local function checked_loop(model, act)
    local iter, state, control = db:pairs()
    local visited, step = {}, 0
    while true do
      step = step + 1
      local before = {}
      for k, v in pairs(model) do before[k] = v end
      local acted = false
      local ran, ok, k, v, err = call_during_gc(function()
        if not acted then
          acted = true
          act(step)
        end
      end, function() return iter(state, control) end)
      if not ok then return visited, k end
      if k == nil then return visited end
      assert.is_true(ran > 0, "no finalizer ran during step " .. step)
      assert.is_nil(err)
      assert.is_not_nil(before[k], "visited a key that was not there: " .. tostring(k))
      helpers.assert_same_typed(before[k], v, "step " .. step .. ", key " .. k)
      visited[#visited + 1] = k
      assert.is_true(step < 100, "the loop does not end")
    end
  end

  for _, kind in ipairs(kinds) do
    local description, make = kind[1], kind[2]
    describe("over values of " .. description, function()
      local model
      before_each(function()
        model = {}
        for j = 1, 3 do
          model["k" .. j] = make(A, j)
          assert(db:set("k" .. j, model["k" .. j]))
        end
      end)

      local function reuse_freed()
        for i = 1, 20 do assert(filler:set("f" .. i, make(SAME, 1))) end
      end

      it("that deletes every key: the step returns the pair as it was, then the loop ends", function()
        local visited = checked_loop(model, function(step)
          if step == 1 then
            for j = 1, 3 do assert(db:delete("k" .. j)) end
            for j = 1, 3 do model["k" .. j] = nil end
            reuse_freed()
          end
        end)
        assert.equals(1, #visited)
        assert.equals(0, db:count())
      end)

      it("that overwrites every key with longer, shorter and same-length values: each step returns its key's value as the step began", function()
        local versions = { LONGER, SHORTER, SAME, A }
        local visited = checked_loop(model, function(step)
          local tag = versions[(step - 1) % #versions + 1]
          for j = 1, 3 do
            model["k" .. j] = make(tag, j)
            assert(db:set("k" .. j, model["k" .. j]))
          end
          reuse_freed()
        end)
        assert.same({ "k1", "k2", "k3" }, helpers.sorted(visited))
      end)

      it("that closes the store: the step returns the pair as it was, the next step raises 'store is closed'", function()
        local visited, err = checked_loop(model, function(step)
          if step == 1 then
            assert(db:close())
            reuse_freed()
          end
        end)
        assert.equals(1, #visited)
        assert.matches("store is closed", err, 1, true)
      end)

      it("that reads every key and runs a nested loop (reentrancy): all of them see the values", function()
        local visited = checked_loop(model, function()
          for j = 1, 3 do helpers.assert_same_typed(model["k" .. j], db:get("k" .. j)) end
          local n = 0
          for k, v in db:pairs() do
            n = n + 1
            helpers.assert_same_typed(model[k], v)
          end
          assert.equals(3, n)
        end)
        assert.same({ "k1", "k2", "k3" }, helpers.sorted(visited))
      end)
    end)
  end
end)

describe("a finalizer that runs during db:keys()", function()
  local db, filler
  before_each(function()
    db = hurrahdb.new()
    filler = hurrahdb.new()
  end)
  after_each(function()
    db:close()
    filler:close()
  end)

  for _, row in ipairs{ { "short keys", 10 }, { "keys of 5000 bytes", 5000 } } do
    local description, len = row[1], row[2]
    describe("of " .. description, function()
      local function key(j) return ("k" .. j):rep(len):sub(1, len - 2) .. j end
      before_each(function()
        for j = 10, 29 do assert(db:set(key(j), j)) end
      end)

      local function reuse_freed()
        for j = 10, 29 do assert(filler:set((key(j):gsub("k", "x")), j)) end
      end

      it("that closes the store at its first allocation: raises 'store is closed'", function()
        local ran, ok, err = call_during_gc(function(i)
          if i == 1 then assert(db:close()) end
        end, function() return db:keys() end)
        assert.is_true(ran > 0, "no finalizer ran during keys")
        assert.is_false(ok)
        assert.matches("store is closed", err, 1, true)
      end)

      it("that closes the store after a few keys: raises 'store is closed'", function()
        local ran, ok, err = call_during_gc(function()
          assert(db:close())
          reuse_freed()
        end, function() return db:keys() end, { at = 4 })
        assert.equals(1, ran, "the finalizer did not run during keys")
        assert.is_false(ok)
        assert.matches("store is closed", err, 1, true)
      end)

      it("that deletes every key while the first is listed: returns that key only", function()
        local ran, ok, keys = call_during_gc(function()
          for j = 10, 29 do assert(db:delete(key(j))) end
          reuse_freed()
        end, function() return db:keys() end, { at = 2 })
        assert.equals(1, ran, "the finalizer did not run during keys")
        assert.is_true(ok, tostring(keys))
        assert.equals(1, #keys)
        local j = tonumber(keys[1]:sub(-2))
        assert.equals(key(j), keys[1])
      end)

      it("that deletes half of the keys and adds others: lists each untouched key once and no key that never was", function()
        local ran, ok, keys = call_during_gc(function()
          for j = 10, 28, 2 do assert(db:delete(key(j))) end
          for j = 30, 49 do assert(db:set(key(j), j)) end
          reuse_freed()
        end, function() return db:keys() end, { at = 3 })
        assert.equals(1, ran, "the finalizer did not run during keys")
        assert.is_true(ok, tostring(keys))
        -- made only now: a key string alive before the call would be reused
        -- by Lua 5.4 instead of allocated, and make fewer collection points
        local known = {}
        for j = 10, 49 do known[key(j)] = true end
        local seen = {}
        for _, k in ipairs(keys) do
          assert.is_true(known[k], "listed a key that never was")
          assert.is_nil(seen[k], "listed twice")
          seen[k] = true
        end
        for j = 11, 29, 2 do assert.is_true(seen[key(j)], "missed " .. j) end
      end)
    end)
  end
end)

describe("a finalizer that closes the store", function()
  local dir, db
  before_each(function()
    dir = helpers.tmpdir()
    db = assert(hurrahdb.open(dir .. "/data.aof"))
    assert(db:set("1", "one"))
  end)
  after_each(function()
    db:close()
    helpers.rmdir(dir)
  end)

  -- The store's path is freed with it: small values written elsewhere take
  -- its memory.
  local function close_during(call, warm_up)
    local filler = hurrahdb.new()
    local ran, ok, a, b = call_during_gc(function(i)
      if i == 1 then
        assert(db:close())
        for j = 1, 50 do assert(filler:set("p" .. j, ("x"):rep(j))) end
      end
    end, call, { warm_up = warm_up })
    filler:close()
    return ran, ok, a, b
  end

  it("during db:stats(): stats describe the store as it was", function()
    local ran, ok, st = close_during(function() return db:stats() end,
      function() db:stats() end)
    assert.is_true(ran > 0, "no finalizer ran during stats")
    assert.is_true(ok, tostring(st))
    assert.equals(1, st.keys)
    assert.equals(dir .. "/data.aof", st.path)
  end)

  it("during db:stats() of a store whose open left a warning: the warning as it was", function()
    assert(db:close())
    local f = assert(io.open(dir .. "/data.aof", "ab"))
    f:write("#hdb 2 ") -- the start of a batch line: an append cut short
    f:close()
    db = assert(hurrahdb.open(dir .. "/data.aof", { on_warning = function() end }))
    local warning = db:stats().warning
    assert.matches("dropped an incomplete last batch", warning, 1, true)
    local ran, ok, st = close_during(function() return db:stats() end,
      function() db:stats() end)
    assert.is_true(ran > 0, "no finalizer ran during stats")
    assert.is_true(ok, tostring(st))
    assert.equals(warning, st.warning)
  end)

  -- Called directly: tostring() itself allocates before it calls __tostring.
  it("during __tostring: names the file", function()
    local ran, ok, s = close_during(function() return getmetatable(db).__tostring(db) end,
      function() return getmetatable(db).__tostring(db) end)
    assert.is_true(ran > 0, "no finalizer ran during __tostring")
    assert.is_true(ok, tostring(s))
    assert.matches("hurrahdb store (" .. dir .. "/data.aof): ", s, 1, true)
  end)

  -- A number key is made a string first, which allocates (a number no
  -- string in the process spells yet, or Lua 5.4 would reuse that string).
  for _, name in ipairs{ "get", "set", "delete", "exists" } do
    it("while db:" .. name .. "() converts a number key: raises 'store is closed'", function()
      local ran, ok, err = close_during(function() return db[name](db, 1234.125, "x") end,
        function() db[name](db, 4321.125, "x") end)
      assert.is_true(ran > 0, "no finalizer ran during " .. name)
      assert.is_false(ok)
      assert.matches("store is closed", err, 1, true)
    end)
  end
end)

describe("an options table whose __index closes the store", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("given to db:rewrite(): raises 'store is closed', and the store's file stays whole", function()
    local db = assert(hurrahdb.open(path, { sync_time = 0, auto_rewrite_percentage = 0 }))
    assert(db:set("a", { 1, 2, 3 }))
    local asked = 0
    local opts = setmetatable({}, { __index = function()
      asked = asked + 1
      assert(db:close())
      return true
    end })
    local ok, err = pcall(db.rewrite, db, opts)
    assert.equals(1, asked, "the option was never read through __index")
    assert.is_false(ok)
    assert.matches("store is closed", err, 1, true)
    local again = assert(hurrahdb.open(path))
    assert.same({ 1, 2, 3 }, again:get("a"))
    assert(again:close())
  end)
end)

-- A set that meets lua-cjson's markers for the first time reads them from
-- the loaded module, which allocates: finalizers run there, between two
-- encodings into the store's scratch buffer.
describe("a finalizer that runs while db:set() reads lua-cjson's markers", function()
  local dir, path, saved
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
    saved = package.loaded.cjson
  end)
  after_each(function()
    package.loaded.cjson = saved
    local db = hurrahdb.new()
    db:set("x", setmetatable({}, {})) -- forgets the markers of this spec
    db:close()
    helpers.rmdir(dir)
  end)

  -- (The table of markers is the one allocation there is sure to be.)
  for at = 1, 1 do
    it("sets another value (allocation " .. at .. "): each key gets its own value", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      local big = ("z"):rep(100000)
      local cjson = { array_mt = {}, empty_array_mt = {} }
      package.loaded.cjson = cjson
      local value = setmetatable({ "mine", 1, 2 }, cjson.array_mt)
      local ran, ok, result = call_during_gc(function()
        assert(db:set("other", { big }))
      end, function() return db:set("k", value) end, { at = at })
      assert.is_true(ran > 0, "no finalizer ran during the set")
      assert.is_true(ok, tostring(result))
      assert.is_true(result)
      assert.same({ "mine", 1, 2 }, db:get("k"))
      assert.same({ big }, db:get("other"))
      assert(db:close())
      local again = assert(hurrahdb.open(path))
      assert.same({ "mine", 1, 2 }, again:get("k"))
      assert(again:close())
    end)

    it("closes the store (allocation " .. at .. "): raises 'store is closed', and nothing was written", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      local cjson = { array_mt = {}, empty_array_mt = {} }
      package.loaded.cjson = cjson
      local value = setmetatable({ 1, 2 }, cjson.array_mt)
      local ran, ok, result = call_during_gc(function() assert(db:close()) end,
        function() return db:set("k", value) end, { at = at })
      assert.is_true(ran > 0, "no finalizer ran during the set")
      do
        assert.is_false(ok)
        assert.matches("store is closed", result, 1, true)
        local again = assert(hurrahdb.open(path))
        assert.is_nil(again:get("k"))
        assert(again:close())
      end
    end)
  end
end)
