-- Expiry, counters and eviction in `make bench`, shared by bench/bench.lua
-- (Lua 5.4) and bench/nginx_worker.lua (LuaJIT inside nginx, where
-- ngx.shared.DICT runs beside it): for each kind of value (bench/kinds.lua),
-- in rounds of a new random order each (bench/rounds.lua), the collector
-- running, each case on a store of its own (AOF, sync_time = 1000):
--   set            plain sets of new keys (what the others are measured against)
--   set ttl        the same with { ttl = 3600 }
--   get            gets of present keys
--   get, half expired  gets of every key of a store where half have expired
--                  (and are reclaimed by the gets as they go)
--   incr           incr of 1,000 counters (init 0), N calls
--   set at max_memory, lru  sets of new keys into a store full to its bound
--                  (max_memory: what half the keys take), each evicting
--   delete         deletes of present keys (what an eviction does besides
--                  picking its key; not a target)
-- and with a DICT given, the same operations on it: set (cjson.encode), set
-- with exptime, incr, and set into a full zone (a small second DICT).

local rounds_lib = require "rounds"
local summarize = rounds_lib.summarize

local M = {}

local COUNTERS = 1000
local TTL = 3600

-- env: now (seconds, monotonic), hurrahdb, kinds, keys, rounds, dir;
-- optional dict and full_dict (ngx.shared.DICT zones) and encode (cjson's).
-- Returns { [kind.name] = { keys = N, cases = { { name, op, base, rate } },
-- orders } }.
function M.run(env)
  local hurrahdb, now = env.hurrahdb, env.now
  local report = {}
  local files = 0
  local function open(extra)
    files = files + 1
    local o = { path = env.dir .. "/expiry-" .. files .. ".aof", sync_time = 1000 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return assert(hurrahdb.new(o)), o.path
  end
  local function close(ctx)
    assert(ctx.db:close())
    os.remove(ctx.path)
  end

  for _, kind in ipairs(env.kinds) do
    local N = math.max(2, math.floor(env.keys / kind.keys_share))
    local keys, values, ckeys, okeys = {}, {}, {}, {}
    for i = 1, N do
      keys[i] = "user:" .. i
      values[i] = kind.value(i)
      ckeys[i] = "counter:" .. (i % COUNTERS)
      okeys[i] = "old:" .. i
    end
    local order = rounds_lib.permutation(N)
    local gkeys = {}
    for i = 1, N do gkeys[i] = keys[order[i]] end

    -- The bound of the eviction case: what the store takes with half the
    -- keys in it.
    local bound
    do
      local db, path = open()
      for i = 1, math.floor(N / 2) do assert(db:set(keys[i], values[i])) end
      assert(db:sync())
      bound = math.max(db:stats().data_memory, 262144)
      assert(db:close())
      os.remove(path)
    end

    -- A store holding every key, written to the disk.
    local function full_store()
      local db, path = open()
      for i = 1, N do assert(db:set(keys[i], values[i])) end
      assert(db:sync())
      return { db = db, path = path }
    end

    local ttl = { ttl = TTL }
    local cases = {
      {
        name = "set", op = "set",
        prepare = function() local db, path = open() return { db = db, path = path } end,
        run = function(ctx) local db = ctx.db for i = 1, N do db:set(keys[i], values[i]) end end,
        close = close,
      },
      {
        name = "set ttl", op = "set", base = "set",
        prepare = function() local db, path = open() return { db = db, path = path } end,
        run = function(ctx) local db = ctx.db for i = 1, N do db:set(keys[i], values[i], ttl) end end,
        close = close,
      },
      {
        name = "get", op = "get",
        prepare = full_store,
        run = function(ctx)
          local db, v = ctx.db, nil
          for i = 1, N do v = db:get(gkeys[i]) end
          assert(kind.check(v, order[N]), "get returned a wrong value")
        end,
        close = close,
      },
      {
        name = "get, half expired", op = "get", base = "get",
        prepare = function()
          local db, path = open()
          local short = { ttl = 0.001 }
          for i = 1, N do assert(db:set(keys[i], values[i], i % 2 == 1 and short or nil)) end
          assert(db:sync())
          local t0 = now()
          while now() < t0 + 0.005 do end -- the last short ttl has passed
          return { db = db, path = path }
        end,
        run = function(ctx)
          local db, v = ctx.db, nil
          for i = 1, N do v = db:get(gkeys[i]) end
          assert(order[N] % 2 == 1 and v == nil or kind.check(v, order[N]), "get returned a wrong value")
        end,
        close = close,
      },
      {
        name = "incr", op = "set", base = "set",
        prepare = function() local db, path = open() return { db = db, path = path } end,
        run = function(ctx)
          local db = ctx.db
          for i = 1, N do db:incr(ckeys[i], 1, 0) end
          assert(db:get(ckeys[N]) >= 1)
        end,
        close = close,
      },
      {
        -- Not a target: what an eviction adds to a set, besides picking
        -- the key (the delete of a key, and its DEL written).
        name = "delete", op = "delete",
        prepare = full_store,
        run = function(ctx)
          local db = ctx.db
          for i = 1, N do db:delete(gkeys[i]) end
          assert(db:count() == 0)
        end,
        close = close,
      },
      {
        name = "set at max_memory, lru", op = "set", base = "set",
        prepare = function()
          local db, path = open({ max_memory = bound, eviction = "lru" })
          for i = 1, N do
            local ok, _, forcible = db:set(okeys[i], values[i])
            assert(ok)
            if forcible then break end
          end
          assert(db:sync())
          return { db = db, path = path }
        end,
        run = function(ctx)
          local db = ctx.db
          for i = 1, N do db:set(keys[i], values[i]) end
          assert(db:stats().evicted_keys > 0)
        end,
        close = close,
      },
    }
    local dict, full, encode = env.dict, env.full_dict, env.encode
    if dict then
      local function flushed(d)
        d:flush_all()
        d:flush_expired()
        return { d = d }
      end
      local function flush(ctx) flushed(ctx.d) end
      cases[#cases + 1] = {
        name = "DICT set", op = "set", prepare = function() return flushed(dict) end,
        run = function(ctx) local d = ctx.d for i = 1, N do d:set(keys[i], encode(values[i])) end end,
        close = flush,
      }
      cases[#cases + 1] = {
        name = "DICT set exptime", op = "set", base = "DICT set", prepare = function() return flushed(dict) end,
        run = function(ctx) local d = ctx.d for i = 1, N do d:set(keys[i], encode(values[i]), TTL) end end,
        close = flush,
      }
      cases[#cases + 1] = {
        name = "DICT incr", op = "set", base = "DICT set", prepare = function() return flushed(dict) end,
        run = function(ctx)
          local d = ctx.d
          for i = 1, N do d:incr(ckeys[i], 1, 0) end
          assert(d:get(ckeys[N]) >= 1)
        end,
        close = flush,
      }
      cases[#cases + 1] = {
        name = "DICT set, full zone", op = "set", base = "DICT set",
        prepare = function()
          local ctx = flushed(full)
          for i = 1, N do
            local _, _, forcible = full:set(okeys[i], encode(values[i]))
            if forcible then break end
          end
          return ctx
        end,
        run = function(ctx) local d = ctx.d for i = 1, N do d:set(keys[i], encode(values[i])) end end,
        close = flush,
      }
    end

    local rates = {}
    for _, case in ipairs(cases) do rates[case.name] = {} end
    local orders = rounds_lib.run(cases, env.rounds, function(case, round)
      local ctx = case.prepare()
      collectgarbage()
      local t0 = now()
      case.run(ctx)
      rates[case.name][round] = N / (now() - t0)
      case.close(ctx)
    end)
    local rows = {}
    for _, case in ipairs(cases) do
      rows[#rows + 1] = { name = case.name, op = case.op, base = case.base,
                          rate = summarize(rates[case.name]) }
    end
    report[kind.name] = { keys = N, bound = bound, cases = rows, orders = orders }
    keys, values, ckeys, okeys, gkeys = nil, nil, nil, nil, nil
    collectgarbage()
  end
  return report
end

return M
