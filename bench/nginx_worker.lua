-- The part of `make bench` that runs in a loop inside one nginx worker
-- (LuaJIT, with lua-resty-core): set and get of the same keys and values
-- (bench/kinds.lua) through
--   a Lua table holding cjson.encode text (the ceiling),
--   ngx.shared.DICT with cjson.encode / cjson.decode (what OpenResty code
--   uses today),
--   hurrahdb memory-only and with an AOF at sync_time = 1000,
-- each round in a new random order (bench/rounds.lua), each case on a store
-- of its own opened after a full collection, with the collector running.
-- Loaded by bench/nginx.lua's generated nginx.conf; returns, for each kind
-- of value, the operations per second (median of the rounds) of each case,
-- the orders, and for the small mixed values the two halves of a DICT +
-- cjson get: dict:get alone and cjson.decode alone.

local ffi = require "ffi"
local cjson = require "cjson"
local hurrahdb = require "hurrahdb"
local rounds_lib = require "rounds"
local kinds = require "kinds"

ffi.cdef [[
  struct hdb_bench_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clk_id, struct hdb_bench_timespec *tp);
]]
local ts = ffi.new("struct hdb_bench_timespec")
local CLOCK_MONOTONIC = 1
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local encode, decode = cjson.encode, cjson.decode
local summarize = rounds_lib.summarize

local _M = {}

-- The cases: open() -> ctx, set(ctx, keys, values, n), get(ctx, keys, n)
-- -> last value, close(ctx); settle(ctx) before the gets.
local function make_cases(dict, dir)
  local function flush()
    dict:flush_all()
    dict:flush_expired()
  end
  local function store_case(name, options)
    return {
      name = name,
      open = function() return assert(hurrahdb.new(options)) end,
      set = function(db, keys, values, n) for i = 1, n do db:set(keys[i], values[i]) end end,
      settle = options and function(db) assert(db:sync()) end,
      get = function(db, keys, n)
        local v
        for i = 1, n do v = db:get(keys[i]) end
        return v
      end,
      close = function(db)
        assert(db:close())
        if options then os.remove(options.path) end
      end,
    }
  end
  return {
    {
      name = "Lua table + cjson",
      open = function() return {} end,
      set = function(t, keys, values, n) for i = 1, n do t[keys[i]] = encode(values[i]) end end,
      get = function(t, keys, n)
        local v
        for i = 1, n do v = decode(t[keys[i]]) end
        return v
      end,
      close = function() end,
    },
    {
      name = "ngx.shared.DICT + cjson",
      open = function()
        flush()
        return dict
      end,
      set = function(d, keys, values, n)
        for i = 1, n do assert(d:set(keys[i], encode(values[i]))) end
      end,
      get = function(d, keys, n)
        local v
        for i = 1, n do v = decode(d:get(keys[i])) end
        return v
      end,
      close = flush,
    },
    store_case("hurrahdb memory-only", nil),
    store_case("hurrahdb AOF sync_time=1000", { path = dir .. "/bench.aof", sync_time = 1000 }),
  }
end

-- opts: keys (of the small kinds), rounds, seed, dict (a lua_shared_dict's
-- name), dir (for the AOF).
function _M.run(opts)
  math.randomseed(opts.seed)
  local dict = assert(ngx.shared[opts.dict], "no lua_shared_dict " .. opts.dict)
  local cases = make_cases(dict, opts.dir)
  local report = {}
  for _, kind in ipairs(kinds) do
    local N = math.max(1, math.floor(opts.keys / kind.keys_share))
    local keys, values = {}, {}
    for i = 1, N do
      keys[i] = "user:" .. i
      values[i] = kind.value(i)
    end
    -- gets read the keys in a random order, the same for every case
    local order = rounds_lib.permutation(N)
    local gkeys = {}
    for i = 1, N do gkeys[i] = keys[order[i]] end

    -- Untimed, on a few keys: every loop is compiled before the timed
    -- rounds, so that no case pays the JIT for one that shares its code.
    local warm = math.min(N, 10000)
    for _, case in ipairs(rounds_lib.shuffled(cases)) do
      local ctx = case.open()
      case.set(ctx, keys, values, warm)
      case.get(ctx, keys, warm)
      case.close(ctx)
    end

    local sets, gets = {}, {}
    for _, case in ipairs(cases) do sets[case.name], gets[case.name] = {}, {} end
    local orders = rounds_lib.run(cases, opts.rounds, function(case, round)
      collectgarbage()
      local ctx = case.open()
      local t0 = now()
      case.set(ctx, keys, values, N)
      sets[case.name][round] = N / (now() - t0)
      if case.settle then case.settle(ctx) end
      t0 = now()
      local last = case.get(ctx, gkeys, N)
      gets[case.name][round] = N / (now() - t0)
      assert(kind.check(last, order[N]), case.name .. ": get returned a wrong value")
      case.close(ctx)
    end)
    local rows = {}
    for _, case in ipairs(cases) do
      rows[#rows + 1] = { name = case.name, set = summarize(sets[case.name]), get = summarize(gets[case.name]) }
    end
    local result = { keys = N, cases = rows, orders = orders }

    if kind.name == "mixed" then
      -- The two halves of a DICT + cjson get, apart: fetching from the
      -- shared zone, and decoding the fetched text.
      for i = 1, N do assert(dict:set(keys[i], encode(values[i]))) end
      local fetched, fetch_rates, decode_rates = {}, {}, {}
      for i = 1, N do fetched[i] = dict:get(gkeys[i]) end
      for r = 1, opts.rounds do
        collectgarbage()
        local text, v
        local t0 = now()
        for i = 1, N do text = dict:get(gkeys[i]) end
        fetch_rates[r] = N / (now() - t0)
        assert(text)
        collectgarbage()
        t0 = now()
        for i = 1, N do v = decode(fetched[i]) end
        decode_rates[r] = N / (now() - t0)
        assert(kind.check(v, order[N]))
      end
      dict:flush_all()
      dict:flush_expired()
      result.parts = { dict_get = summarize(fetch_rates), decode = summarize(decode_rates) }
    end
    report[kind.name] = result
    keys, values, gkeys = nil, nil, nil
    collectgarbage()
  end
  report.expiry = require("expiry").run {
    now = now, hurrahdb = hurrahdb, kinds = kinds, keys = opts.keys, rounds = opts.rounds,
    dir = opts.dir, dict = dict, full_dict = assert(ngx.shared.bench_full, "no lua_shared_dict bench_full"),
    encode = encode,
  }
  return report
end

return _M
