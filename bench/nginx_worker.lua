-- The part of `make bench` that runs inside one nginx worker (LuaJIT, with
-- lua-resty-core): set and get of the same keys and values through
--   a plain Lua table holding cjson.encode output (the ceiling),
--   ngx.shared.DICT with cjson.encode / cjson.decode (what OpenResty code
--   uses today),
--   hurrahdb memory-only and with an AOF at sync_time = 1000.
-- Loaded by bench/nginx.lua's generated nginx.conf; returns the operations
-- per second (median of `rounds`) of each case, and of the two halves of a
-- DICT + cjson get: dict:get alone and cjson.decode alone.

local ffi = require "ffi"
local cjson = require "cjson"
local hurrahdb = require "hurrahdb"
local rounds_lib = require "rounds"

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

local _M = {}

function _M.run(opts)
  local N, rounds = opts.keys, opts.rounds
  local keys, values = {}, {}
  for i = 1, N do
    keys[i] = "user:" .. i
    values[i] = { value = "some-value", n = i, tags = { "a", "b" } }
  end

  local function measure(fn) return rounds_lib.measure(now, N, rounds, fn).median end

  local encode, decode = cjson.encode, cjson.decode
  local results, parts = {}, {}

  do
    local store = {}
    local sink
    local set = measure(function() for i = 1, N do store[keys[i]] = encode(values[i]) end end)
    local get = measure(function() for i = 1, N do sink = decode(store[keys[i]]) end end)
    assert(sink.n == N)
    results[#results + 1] = { name = "Lua table + cjson (ceiling)", set = set, get = get }
  end

  do
    local dict = assert(ngx.shared[opts.dict], "no lua_shared_dict " .. opts.dict)
    dict:flush_all()
    dict:flush_expired()
    local sink
    local set = measure(function()
      for i = 1, N do assert(dict:set(keys[i], encode(values[i]))) end
    end)
    local get = measure(function() for i = 1, N do sink = decode(dict:get(keys[i])) end end)
    assert(sink.n == N)
    -- The two halves of that get, apart: fetching from the shared zone, and
    -- decoding the fetched text.
    local text
    parts.dict_get = measure(function() for i = 1, N do text = dict:get(keys[i]) end end)
    assert(text)
    local fetched = {}
    for i = 1, N do fetched[i] = dict:get(keys[i]) end
    parts.decode = measure(function() for i = 1, N do sink = decode(fetched[i]) end end)
    assert(sink.n == N)
    dict:flush_all()
    dict:flush_expired()
    results[#results + 1] = { name = "ngx.shared.DICT + cjson", set = set, get = get }
  end

  local function store_case(name, options)
    local db = assert(hurrahdb.new(options))
    local sink
    local set = measure(function() for i = 1, N do db:set(keys[i], values[i]) end end)
    local get = measure(function() for i = 1, N do sink = db:get(keys[i]) end end)
    assert(sink.n == N)
    assert(db:close())
    results[#results + 1] = { name = name, set = set, get = get }
  end
  store_case("hurrahdb memory-only", nil)
  store_case("hurrahdb AOF sync_time=1000", { path = opts.dir .. "/bench.aof", sync_time = 1000 })
  return { cases = results, parts = parts }
end

return _M
