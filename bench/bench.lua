-- hurrahdb benchmark suite (`make bench`): hurrahdb against what a Lua user
-- would pick instead, in one run, on the same generated keys and values:
--
--   a Lua table holding cjson.encode text, decoded on get (the ceiling the
--     targets use), and a Lua table holding the values themselves (the
--     bound for a store that serialises nothing),
--   hurrahdb memory-only, and with an AOF (sync_time = 1000, with and
--     without fsync, and sync_time = 0),
--   Redis 7 (Debian's redis-server, started here on loopback, appendonly
--     with appendfsync everysec and always) through lua-redis, one command
--     at a time and pipelined, and Redis's own figures by redis-benchmark
--     (its C client) against the same configuration,
--   SQLite through LuaSQL (WAL mode, JSON text), one transaction per write
--     and batched,
--   a C loop of write + fdatasync of records of the same size (the disk's
--     limit for sync_time = 0),
--
-- for three kinds of values (bench/kinds.lua: the small mixed value of the
-- README, a small map of strings, about 1 KB); then the open of a
-- 1,000,000-key AOF by hurrahdb and by Redis (the same file) and the memory
-- per key of both; then, with nginx installed, bench/nginx.lua (loops inside
-- an nginx worker, and requests over HTTP with wrk). Writes
-- bench/RESULTS.md and bench/results.png (gnuplot).
--
-- Every round runs every case once, in a new random order (bench/rounds.lua;
-- the seed is printed, --seed repeats it), each case on a store of its own
-- opened after a full collection, so that every case of a round meets the
-- same kind of heap; the collector runs as users run it (default settings).
-- A few cases also run with the collector stopped in their timed loops,
-- reported apart and labelled so.
--
-- Usage: lua5.4 bench/bench.lua [--keys N] [--rounds R] [--open-keys M]
--          [--seed S] [--http-seconds T] [--out DIR]
--   --keys      keys of the small values (a quarter of them for 1 KB)
--   --rounds    rounds of the cases, and in nginx (twice as many over HTTP)
--   --open-keys keys of the file opened by hurrahdb and loaded by Redis
--   --seed      the seed of the orders (default: from the clock; printed)
--   --http-seconds  length of each wrk run
-- The machine is shared and noisy: compare the ratios of one run.

local hurrahdb = require "hurrahdb"
local cjson = require "cjson"
local socket = require "socket"
local benchlib = require "hdb_benchlib"
-- lua-redis is packaged for Lua 5.1 to 5.3; it is pure Lua and runs on 5.4.
package.path = package.path .. ";/usr/share/lua/5.3/?.lua"
local redis = require "redis"
local luasql = require "luasql.sqlite3"

local function script_dir()
  return (arg[0]:match("^(.*)/[^/]*$") or ".")
end
package.path = script_dir() .. "/?.lua;" .. package.path
local rounds_lib = require "rounds"
local kinds = require "kinds"

local now = benchlib.now
local encode, decode = cjson.encode, cjson.decode
local summarize = rounds_lib.summarize

---------------------------------------------------------------------------
-- Options
---------------------------------------------------------------------------

local USAGE = "usage: bench.lua [--keys N] [--rounds R] [--open-keys M] [--seed S]"
  .. " [--http-seconds T] [--out DIR]\n"
local opts = { keys = 200000, rounds = 5, ["open-keys"] = 1000000, seed = false,
               ["http-seconds"] = 2, out = script_dir() }

-- Child mode: open the file given, print seconds, keys, records, RSS growth
-- and stats().memory; run in a fresh process so that RSS growth is the
-- store's alone.
local function rss_bytes()
  local f = io.open("/proc/self/statm")
  if not f then return 0 end
  local _, resident = f:read("n", "n")
  f:close()
  return (resident or 0) * 4096
end

-- The process's minor page faults so far (field 10 of /proc/self/stat,
-- counted after the command name, which may hold spaces).
local function minor_faults()
  local f = io.open("/proc/self/stat")
  if not f then return 0 end
  local line = f:read("l") or ""
  f:close()
  local fields = {}
  for w in line:gsub("^.*%) ", ""):gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[8]) or 0 -- field 10 counts pid and comm, dropped here
end

-- Child mode, run under callgrind: builds the n keys and values of a kind,
-- then sets the first `loops` of them, into an AOF store (sync_time = 1000)
-- or into a Lua table as cjson.encode text, with the collector running as
-- in the timed loops. Two runs that differ only in `loops` give, by their
-- difference, the instructions of that many sets and nothing else.
-- --count-gets: the same, for gets: all n keys are set first, then the
-- first `loops` of them (in an order drawn from a fixed seed) are got back.
if arg[1] == "--count-sets" or arg[1] == "--count-gets" then
  local case, kind_name, n, loops = arg[2], arg[3], tonumber(arg[4]), tonumber(arg[5])
  local kind
  for _, k in ipairs(kinds) do if k.name == kind_name then kind = k end end
  local keys, values = {}, {}
  for i = 1, n do keys[i], values[i] = "user:" .. i, kind.value(i) end
  local sets = arg[1] == "--count-sets" and loops or n
  local order = {}
  for i = 1, n do order[i] = i end
  math.randomseed(1)
  for i = n, 2, -1 do
    local j = math.random(i)
    order[i], order[j] = order[j], order[i]
  end
  collectgarbage()
  if case == "hurrahdb" then
    local db = assert(hurrahdb.new { path = arg[6], sync_time = 1000 })
    for i = 1, sets do db:set(keys[i], values[i]) end
    assert(db:sync()) -- the records written: part of what a set costs
    if arg[1] == "--count-gets" then
      for i = 1, loops do assert(db:get(keys[order[i]])) end
    end
    -- no close: freeing the store is not part of a set or a get, and the
    -- Lua table is not freed either (os.exit below skips lua_close)
  else
    local t = {}
    for i = 1, sets do t[keys[i]] = encode(values[i]) end
    if arg[1] == "--count-gets" then
      for i = 1, loops do assert(decode(t[keys[order[i]]])) end
    end
  end
  os.exit(0)
end

-- Child mode: open the file given, then rewrite it; print how much the
-- process's peak resident size rose during the rewrite, in a fresh process
-- so that the rewrite cannot reuse memory a bench phase freed.
if arg[1] == "--measure-rewrite" then
  local db = assert(hurrahdb.open(arg[2], { auto_rewrite_percentage = 0 }))
  collectgarbage()
  local f = io.open("/proc/self/clear_refs", "w")
  local reset = f and f:write("5") and f:close()
  local rss0 = rss_bytes()
  assert(db:rewrite { wait = true })
  local peak
  local st = io.open("/proc/self/status")
  if st then
    peak = tonumber(st:read("a"):match("VmHWM:%s*(%d+) kB"))
    st:close()
  end
  print(reset and peak and (peak * 1024 - rss0) or "n/a")
  db:close()
  os.exit(0)
end

if arg[1] == "--measure-open" then
  collectgarbage()
  local rss0, faults0 = rss_bytes(), minor_faults()
  local t0 = now()
  local db = assert(hurrahdb.open(arg[2]))
  local dt = now() - t0
  local faults = minor_faults() - faults0
  local st = db:stats()
  print(dt, st.keys, st.loaded_records, rss_bytes() - rss0, st.memory, faults)
  db:close()
  os.exit(0)
end

do
  local i = 1
  while arg[i] do
    local name = arg[i]:match("^%-%-(.+)$")
    if not name or opts[name] == nil or arg[i + 1] == nil then
      io.stderr:write(USAGE)
      os.exit(2)
    end
    if name == "out" then
      opts.out = arg[i + 1]
    else
      opts[name] = math.tointeger(tonumber(arg[i + 1]))
      if not opts[name] or opts[name] < (name == "seed" and 0 or 1) then
        io.stderr:write(USAGE)
        os.exit(2)
      end
    end
    i = i + 2
  end
end
local seed = opts.seed or (os.time() % 1000000)
math.randomseed(seed)

---------------------------------------------------------------------------
-- Shell, files, the machine
---------------------------------------------------------------------------

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>/dev/null"))
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

local function dir_size(path)
  return tonumber(sh("du -sb " .. quote(path) .. " | cut -f1")) or 0
end

local tmp = sh("mktemp -d /tmp/hurrahdb-bench.XXXXXX")
assert(tmp:match("^/tmp/hurrahdb%-bench%.%w+$"), "mktemp failed")
local function cleanup() os.execute("rm -rf " .. quote(tmp)) end

local started = now()

-- Whatever ends this script, an error included: no server left running,
-- no temporary files left behind.
local redis_running = {} -- servers started and not yet stopped
local stop_redis
local guard <close> = setmetatable({}, { __close = function()
  for server in pairs(redis_running) do pcall(stop_redis, server) end
  os.execute("rm -rf " .. quote(tmp) .. " " .. quote(tmp) .. ".*")
end })

local machine = {
  cpu = sh("grep -m1 'model name' /proc/cpuinfo"):gsub("^.-:%s*", ""),
  cores = sh("nproc"),
  load = sh("cut -d' ' -f1-3 /proc/loadavg"),
  kernel = sh("uname -r"),
  lua = _VERSION .. " (" .. sh("lua5.4 -v"):match("Lua [%d.]+") .. ")",
  luajit = sh("luajit -v"):match("LuaJIT [%w.%-]+") or "not installed",
  redis = sh("redis-server --version"):match("v=([%d.]+)") or "?",
  sqlite = sh("dpkg-query -W -f='${Version}' libsqlite3-0"),
  cjson = sh("dpkg-query -W -f='${Version}' lua-cjson"),
  nginx = sh("/usr/sbin/nginx -v 2>&1 | cat"):match("nginx/[%d.]+") or "nginx not installed",
  wrk = sh("dpkg-query -W -f='${Version}' wrk"),
  disk = sh("df -h " .. quote(tmp) .. " | awk 'NR==2 {print $1\" (\"$2\", \"$4\" free)\"}'"),
  fs = sh("stat -f -c %T " .. quote(tmp)),
  memory = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo"),
  thp = (sh("cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null"):match("%[(%w+)%]") or "not available"),
  glibc = sh("getconf GNU_LIBC_VERSION 2>/dev/null"):match("[%d.]+$") or "?",
  date = os.date("!%Y-%m-%d %H:%M UTC"),
}

local function log(fmt, ...)
  io.stderr:write(("[%4.0f s] "):format(now() - started), fmt:format(...), "\n")
end
log("seed %d (--seed %d repeats this run's orders)", seed, seed)

---------------------------------------------------------------------------
-- Keys, values, measurement
---------------------------------------------------------------------------

for _, kind in ipairs(kinds) do
  kind.n = math.max(1, opts.keys // kind.keys_share)
  kind.json_bytes = #encode(kind.value(1))
  kind.json_bytes_max = #encode(kind.value(kind.n))
end

local function percentile(sorted, p)
  local i = math.max(1, math.min(#sorted, math.ceil(#sorted * p)))
  return sorted[i]
end

---------------------------------------------------------------------------
-- Redis
---------------------------------------------------------------------------

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return assert(tonumber(port))
end

-- Closes a lua-redis client's socket (QUIT would need an answering server).
-- Sockets left to the collector would be inherited by the processes started
-- meanwhile (wrk, for one, has room for few descriptors).
local function close_client(client)
  pcall(function() client.network.socket:close() end)
end

-- Starts redis-server in a new directory; returns { port, dir, log, client }
-- once it answers PING (and has loaded its data set).
local function start_redis(name, extra)
  local dir = tmp .. "/" .. name
  os.execute("mkdir -p " .. quote(dir))
  local port = free_port()
  local logfile = dir .. "/redis.log"
  local cmd = table.concat({
    "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", quote(dir),
    "--save", "''", "--daemonize", "no", "--logfile", quote(logfile), extra or "",
    ">/dev/null 2>&1 &",
  }, " ")
  os.execute(cmd)
  local deadline = now() + 600
  while now() < deadline do
    local ok, client = pcall(redis.connect, "127.0.0.1", port)
    if ok then
      local pok, pong = pcall(client.ping, client)
      if pok and pong then
        local server = { port = port, dir = dir, log = logfile, client = client }
        redis_running[server] = true
        return server
      end
      close_client(client) -- still loading its data set
    end
    socket.sleep(0.01)
  end
  error("redis-server did not start; see " .. logfile)
end

function stop_redis(server)
  redis_running[server] = nil
  pcall(function() server.client:shutdown("NOSAVE") end)
  close_client(server.client)
  local deadline = now() + 10
  while now() < deadline do
    local ok, client = pcall(redis.connect, "127.0.0.1", server.port)
    if not ok then break end
    close_client(client)
    socket.sleep(0.02)
  end
  os.execute("rm -rf " .. quote(server.dir))
end

-- lua-redis 2.0.5's pipeline() fails on Lua 5.4 (its table.insert position
-- check), so pipelined commands go to its socket as RESP; replies are read
-- here.
local function resp_command(...)
  local args = { ... }
  local parts = { "*" .. #args .. "\r\n" }
  for _, a in ipairs(args) do
    parts[#parts + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return table.concat(parts)
end

local function resp_read(sock)
  local line = assert(sock:receive("*l"))
  local kind = line:sub(1, 1)
  if kind == "$" then
    local len = tonumber(line:sub(2))
    if len < 0 then return nil end
    local data = assert(sock:receive(len + 2))
    return data:sub(1, len)
  elseif kind == "-" then
    error("redis: " .. line)
  end
  return line:sub(2)
end

local REDIS_EVERYSEC = "--appendonly yes --appendfsync everysec"
local REDIS_ALWAYS = "--appendonly yes --appendfsync always"

---------------------------------------------------------------------------
-- The cases. Each has
--   open(label, shared) -> ctx   (shared: a table kept for one kind of value)
--   set(ctx, keys, values, n)    -> nil, or the rate if the case measures it
--   set_one(ctx, key, value)     (for the latency pass; else set is used)
--   get(ctx, keys, order, n)     -> the last value got, the rate if the case
--                                   measures it; keys[i] is the key of value
--                                   number order[i]
--   disk(ctx) -> bytes on disk (persistent cases), settle(ctx) (before the
--   gets), close(ctx)
-- and n = min(keys of the kind, max_ops), or ops(keys of the kind).
---------------------------------------------------------------------------

local PIPELINE = 100  -- commands per round trip, Lua client and redis-benchmark
local SQL_BATCH = 1000
local SLOW = 1500     -- operations for the cases that sync every write
local RAW_CHUNK = 250 -- sync_time=0 and the C loop take turns by this many writes
local ONE_BY_ONE = 5000 -- operations for Redis one command at a time
local PIPELINED = 20000 -- operations for Redis pipelined and SQLite batched

local cases = {}
local function add(case)
  cases[#cases + 1] = case
  case.id = #cases
  return case
end

local function hurrahdb_case(name, short, options, max_ops, gc)
  return {
    name = name, short = short, persistent = options ~= nil, max_ops = max_ops, gc = gc,
    group = "hurrahdb",
    open = function(label)
      local o
      if options then
        o = {}
        for k, v in pairs(options) do o[k] = v end
        o.path = tmp .. "/" .. label .. ".aof"
      end
      return { db = assert(hurrahdb.new(o)), path = o and o.path }
    end,
    set = function(ctx, keys, values, n)
      local db = ctx.db
      for i = 1, n do db:set(keys[i], values[i]) end
    end,
    set_one = function(ctx, k, v) ctx.db:set(k, v) end,
    get = function(ctx, keys, _, n)
      local db, v = ctx.db, nil
      for i = 1, n do v = db:get(keys[i]) end
      return v
    end,
    disk = function(ctx)
      assert(ctx.db:sync())
      return file_size(ctx.path)
    end,
    -- between the sets and the gets: the background writes of the sets end
    -- before the gets are timed, so that the two do not share the CPU
    settle = options and function(ctx) assert(ctx.db:sync()) end or nil,
    close = function(ctx)
      assert(ctx.db:close())
      if ctx.path then os.remove(ctx.path) end
    end,
  }
end

local function table_cjson_case(name, short, gc)
  return {
    name = name, short = short, persistent = false, gc = gc, group = "lua",
    open = function() return { t = {} } end,
    set = function(ctx, keys, values, n)
      local t = ctx.t
      for i = 1, n do t[keys[i]] = encode(values[i]) end
    end,
    set_one = function(ctx, k, v) ctx.t[k] = encode(v) end,
    get = function(ctx, keys, _, n)
      local t, v = ctx.t, nil
      for i = 1, n do v = decode(t[keys[i]]) end
      return v
    end,
    close = function() end,
  }
end

local function table_values_case(name, short, gc)
  return {
    name = name, short = short, persistent = false, gc = gc, group = "lua",
    open = function() return { t = {} } end,
    set = function(ctx, keys, values, n)
      local t = ctx.t
      for i = 1, n do t[keys[i]] = values[i] end
    end,
    set_one = function(ctx, k, v) ctx.t[k] = v end,
    get = function(ctx, keys, _, n)
      local t, v = ctx.t, nil
      for i = 1, n do v = t[keys[i]] end
      return v
    end,
    close = function() end,
  }
end

-- cjson alone, no store: what the ceiling spends encoding and decoding. The
-- texts to decode are made at open, outside the timed loops.
local cjson_alone_case = {
  name = "cjson.encode / cjson.decode alone (no store)", short = "cjson\\nalone",
  persistent = false, latency = false, group = "lua",
  open = function(_, shared)
    local values, texts = shared.values, {}
    for i = 1, #values do texts[i] = encode(values[i]) end
    return { texts = texts }
  end,
  set = function(_, _, values, n)
    local s
    for i = 1, n do s = encode(values[i]) end
    return nil, s
  end,
  get = function(ctx, _, order, n)
    local texts, v = ctx.texts, nil
    for i = 1, n do v = decode(texts[order[i]]) end
    return v
  end,
  close = function() end,
}

local function redis_case(name, short, config, pipelined, max_ops)
  return {
    name = name, short = short, persistent = true, max_ops = max_ops, group = "redis",
    open = function(label) return start_redis(label, config) end,
    set = function(ctx, keys, values, n)
      local c = ctx.client
      if not pipelined then
        for i = 1, n do c:set(keys[i], encode(values[i])) end
        return
      end
      local sock = c.network.socket
      for first = 1, n, PIPELINE do
        local last = math.min(n, first + PIPELINE - 1)
        local batch = {}
        for i = first, last do batch[#batch + 1] = resp_command("SET", keys[i], encode(values[i])) end
        assert(sock:send(table.concat(batch)))
        for _ = first, last do assert(resp_read(sock) == "OK") end
      end
    end,
    -- pipelined: no latency of a single call to speak of
    set_one = not pipelined and function(ctx, k, v) ctx.client:set(k, encode(v)) end or nil,
    get = function(ctx, keys, _, n)
      local c, v = ctx.client, nil
      if not pipelined then
        for i = 1, n do v = decode(c:get(keys[i])) end
        return v
      end
      local sock = c.network.socket
      for first = 1, n, PIPELINE do
        local last = math.min(n, first + PIPELINE - 1)
        local batch = {}
        for i = first, last do batch[#batch + 1] = resp_command("GET", keys[i]) end
        assert(sock:send(table.concat(batch)))
        for _ = first, last do v = decode(resp_read(sock)) end
      end
      return v
    end,
    disk = function(ctx)
      socket.sleep(1.2) -- everysec: let the last second reach the file
      return dir_size(ctx.dir .. "/appendonlydir")
    end,
    close = function(ctx) stop_redis(ctx) end,
  }
end

-- Redis's own figures: redis-benchmark (its C client, no JSON) against a
-- server with appendfsync everysec holding as many keys as the Lua cases
-- write ("key:" and 12 digits, values of the kind's JSON size, written once
-- per kind of value, outside the timed runs); its SETs overwrite random
-- keys among them and its GETs read random ones. The rate is its own.
local function redis_benchmark(server, command, n, keys, bytes, clients, pipeline)
  local out = sh(("timeout -k 5 300 redis-benchmark -h 127.0.0.1 -p %d -t %s -n %d -r %d -d %d -c %d -P %d --csv")
    :format(server.port, command, n, keys, bytes, clients, pipeline))
  local rps = out:match('"' .. command:upper() .. '","([%d.]+)"')
  assert(rps, "redis-benchmark failed: " .. out)
  return tonumber(rps)
end

local function redis_benchmark_case(name, short, clients, pipeline, ops)
  return {
    name = name, short = short, persistent = false, latency = false, ops = ops, group = "redis-benchmark",
    open = function(_, shared)
      if not shared.redis then
        local server = start_redis("redis-benchmark-" .. shared.kind.name, REDIS_EVERYSEC)
        local sock = server.client.network.socket
        local value = string.rep("x", shared.kind.json_bytes)
        for first = 0, shared.kind.n - 1, PIPELINE do
          local last = math.min(shared.kind.n - 1, first + PIPELINE - 1)
          local batch = {}
          for i = first, last do batch[#batch + 1] = resp_command("SET", ("key:%012d"):format(i), value) end
          assert(sock:send(table.concat(batch)))
          for _ = first, last do assert(resp_read(sock) == "OK") end
        end
        shared.redis = server
        shared.finish[#shared.finish + 1] = function() stop_redis(server) end
      end
      return { server = shared.redis, keys = shared.kind.n, bytes = shared.kind.json_bytes }
    end,
    set = function(ctx, _, _, n)
      return redis_benchmark(ctx.server, "set", n, ctx.keys, ctx.bytes, clients, pipeline)
    end,
    get = function(ctx, _, _, n)
      return nil, redis_benchmark(ctx.server, "get", n, ctx.keys, ctx.bytes, clients, pipeline)
    end,
    close = function() end,
  }
end

local function sqlite_case(name, short, batched, max_ops)
  local env = assert(luasql.sqlite3())
  local function exec(conn, sql)
    local cur, err = conn:execute(sql)
    assert(cur, err)
    if type(cur) == "userdata" then cur:close() end
  end
  return {
    name = name, short = short, persistent = true, max_ops = max_ops, group = "sqlite",
    open = function(label)
      local path = tmp .. "/" .. label .. ".sqlite"
      local conn = assert(env:connect(path))
      exec(conn, "PRAGMA journal_mode=WAL")
      exec(conn, "PRAGMA synchronous=FULL")
      exec(conn, "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
      return { conn = conn, path = path, in_batch = 0 }
    end,
    set = function(ctx, keys, values, n)
      local conn = ctx.conn
      for i = 1, n do
        if batched and i % SQL_BATCH == 1 then exec(conn, "BEGIN") end
        exec(conn, "INSERT OR REPLACE INTO kv VALUES ('" .. conn:escape(keys[i]) .. "', '"
          .. conn:escape(encode(values[i])) .. "')")
        if batched and (i % SQL_BATCH == 0 or i == n) then exec(conn, "COMMIT") end
      end
    end,
    -- batched: a call either opens, adds to or commits a transaction
    set_one = function(ctx, k, v)
      local conn = ctx.conn
      if batched and ctx.in_batch == 0 then exec(conn, "BEGIN") end
      exec(conn, "INSERT OR REPLACE INTO kv VALUES ('" .. conn:escape(k) .. "', '"
        .. conn:escape(encode(v)) .. "')")
      if batched then
        ctx.in_batch = ctx.in_batch + 1
        if ctx.in_batch == SQL_BATCH then
          exec(conn, "COMMIT")
          ctx.in_batch = 0
        end
      end
    end,
    get = function(ctx, keys, _, n)
      local conn, v = ctx.conn, nil
      for i = 1, n do
        local cur = assert(conn:execute("SELECT v FROM kv WHERE k = '" .. conn:escape(keys[i]) .. "'"))
        v = decode(cur:fetch())
        cur:close()
      end
      return v
    end,
    disk = function(ctx)
      if ctx.in_batch > 0 then
        exec(ctx.conn, "COMMIT")
        ctx.in_batch = 0
      end
      exec(ctx.conn, "PRAGMA wal_checkpoint(TRUNCATE)")
      return file_size(ctx.path) + file_size(ctx.path .. "-wal")
    end,
    close = function(ctx)
      ctx.conn:close()
      os.remove(ctx.path)
      os.remove(ctx.path .. "-wal")
      os.remove(ctx.path .. "-shm")
    end,
  }
end

local CEILING = "Lua table + cjson"
local BOUND = "Lua table of the values (no serialisation)"
local AOF = "hurrahdb AOF sync_time=1000"
local SYNC0 = "hurrahdb AOF sync_time=0"
local RAW = "write+fdatasync loop in C (disk limit)"

-- The cases the targets compare run twice in each round (in the round's
-- random order): they take a second or two, and the machine is noisy.
local REPEATS = 2
add(table_cjson_case(CEILING, "Lua table\\n+ cjson")).repeats = REPEATS
add(table_values_case(BOUND, "Lua table\\nof values")).repeats = REPEATS
add(cjson_alone_case)
add(hurrahdb_case("hurrahdb memory-only", "hurrahdb\\nmemory")).repeats = REPEATS
add(hurrahdb_case(AOF, "hurrahdb\\nAOF 1000 ms", { sync_time = 1000 })).repeats = REPEATS
add(hurrahdb_case("hurrahdb AOF sync_time=1000, fsync=false", "hurrahdb\\nAOF no fsync",
  { sync_time = 1000, fsync = false })).repeats = REPEATS
-- The same AOF store with values through lua-cjson (codec = "cjson"): what a
-- user who picks cjson's promise gets, beside the default codec.
local AOF_CJSON = "hurrahdb AOF sync_time=1000, codec=cjson"
add(hurrahdb_case(AOF_CJSON, "hurrahdb\\nAOF cjson", { sync_time = 1000, codec = "cjson" })).repeats = REPEATS
do
  -- sync_time = 0, and the disk's limit: write + fdatasync of records of the
  -- size this case writes per key (measured by the latency pass), in chunks
  -- that alternate with its own, so that both meet the same disk (whose
  -- speed drifts by tens of percent here).
  local case = add(hurrahdb_case(SYNC0, "hurrahdb\\nsync each write", { sync_time = 0 }, SLOW))
  case.set = function(ctx, keys, values, n)
    local t_store, t_raw = 0, 0
    for first = 1, n, RAW_CHUNK do
      local last = math.min(n, first + RAW_CHUNK - 1)
      t_raw = t_raw + assert(benchlib.fsync_loop(tmp .. "/raw", case.raw_record, last - first + 1))
      os.remove(tmp .. "/raw")
      local t0 = now()
      for i = first, last do ctx.db:set(keys[i], values[i]) end
      t_store = t_store + (now() - t0)
    end
    ctx.raw_rate = n / t_raw
    return n / t_store
  end
end
add(redis_case("Redis everysec, one command at a time", "Redis everysec\\none at a time",
  REDIS_EVERYSEC, false, ONE_BY_ONE))
add(redis_case("Redis everysec, pipelined by " .. PIPELINE, "Redis everysec\\npipelined",
  REDIS_EVERYSEC, true, PIPELINED))
add(redis_case("Redis always, one command at a time", "Redis always\\none at a time",
  REDIS_ALWAYS, false, SLOW))
add(redis_case("Redis always, pipelined by " .. PIPELINE, "Redis always\\npipelined",
  REDIS_ALWAYS, true, PIPELINED))
add(redis_benchmark_case("redis-benchmark everysec, 1 connection, one command at a time",
  "redis-benchmark\\n1 conn.", 1, 1, function(n) return math.min(n, ONE_BY_ONE) end))
add(redis_benchmark_case("redis-benchmark everysec, 50 connections, one command at a time",
  "redis-benchmark\\n50 conn.", 50, 1, function(n) return math.min(n, 4 * ONE_BY_ONE) end))
add(redis_benchmark_case("redis-benchmark everysec, 1 connection, pipelined by " .. PIPELINE,
  "redis-benchmark\\npipelined", 1, PIPELINE, function(n) return n end))
add(sqlite_case("SQLite WAL, a transaction per write", "SQLite\\nper write", false, SLOW))
add(sqlite_case("SQLite WAL, 1000 writes per transaction", "SQLite\\nbatched", true, PIPELINED))
-- The same loops with the collector stopped while they are timed: not how
-- users run them; reported apart.
for _, c in ipairs({ table_cjson_case(CEILING, nil, "stopped"), table_values_case(BOUND, nil, "stopped"),
                     hurrahdb_case(AOF, nil, { sync_time = 1000 }, nil, "stopped") }) do
  c.latency = false
  add(c)
end

local function ops_of(case, kind)
  if case.ops then return case.ops(kind.n) end
  return math.min(kind.n, case.max_ops or kind.n)
end

---------------------------------------------------------------------------
-- Running
---------------------------------------------------------------------------

-- The key of value i is "user:<i>" (the same for every kind); gets read
-- them in a random order, the same for every case (a permutation of 1..n
-- for each n a case runs).
local keys = {}
for i = 1, kinds[1].n do keys[i] = "user:" .. i end

local results = {} -- results[kind.name] = { rows, orders, heap, raw }

-- Seconds fn(...) takes, and what it returns; a case with gc == "stopped"
-- runs it after a full collection, with the collector stopped.
local function timed(case, fn, ...)
  local stop = case.gc == "stopped"
  if stop then
    collectgarbage()
    collectgarbage("stop")
  end
  local t0 = now()
  local a, b = fn(...)
  local dt = now() - t0
  if stop then collectgarbage("restart") end
  return dt, a, b
end

for _, kind in ipairs(kinds) do
  local values = {}
  for i = 1, kind.n do values[i] = kind.value(i) end
  local shared = { kind = kind, values = values, finish = {} }
  local orders_by_n = {}
  local function gets(n)
    if not orders_by_n[n] then
      local order = rounds_lib.permutation(n)
      local gkeys = {}
      for i = 1, n do gkeys[i] = keys[order[i]] end
      orders_by_n[n] = { keys = gkeys, order = order }
    end
    return orders_by_n[n].keys, orders_by_n[n].order
  end
  for _, case in ipairs(cases) do gets(math.min(kind.n, ops_of(case, kind))) end
  collectgarbage()
  local heap = collectgarbage("count") * 1024

  local rows = {}
  local function row(case)
    rows[case.id] = rows[case.id] or { case = case, n = ops_of(case, kind), set = {}, get = {} }
    return rows[case.id]
  end

  -- Latency of each set (inserts, into an empty store), then bytes on disk.
  -- The cases take turns in a random order here too; this pass also grows
  -- the heap and the files before the timed rounds.
  local latency_cases = {}
  for _, case in ipairs(cases) do
    if case.latency ~= false then latency_cases[#latency_cases + 1] = case end
  end
  for _, case in ipairs(rounds_lib.shuffled(latency_cases)) do
    local n = ops_of(case, kind)
    log("%s, %s: latency of %d sets", kind.label, case.name, n)
    collectgarbage()
    local ctx = case.open(kind.name .. "-lat-" .. case.id, shared)
    local lat = {}
    if case.set_one then
      for i = 1, n do
        local t0 = now()
        case.set_one(ctx, keys[i], values[i])
        lat[i] = now() - t0
      end
    elseif case.name == SYNC0 then
      error("sync_time=0 needs set_one")
    else
      case.set(ctx, keys, values, n)
    end
    table.sort(lat)
    local r = row(case)
    if #lat > 0 then
      r.p50, r.p99, r.p999 = percentile(lat, 0.5), percentile(lat, 0.99), percentile(lat, 0.999)
      r.max = lat[#lat]
    end
    r.disk = case.persistent and case.disk(ctx) / n or nil
    if case.name == SYNC0 then
      -- the C loop writes records of this size in this kind's rounds
      r.raw_record = math.floor(r.disk + 0.5)
      case.raw_record = r.raw_record
    end
    case.close(ctx)
  end

  -- The timed rounds.
  local raw_rates = {}
  local orders = rounds_lib.run(cases, opts.rounds, function(case, round)
    local n = ops_of(case, kind)
    log("%s, round %d, %s: %d sets, %d gets", kind.label, round, case.name
      .. (case.gc and ", GC stopped" or ""), n, n)
    collectgarbage() -- every case starts from the same collected heap
    local ctx = case.open(("%s-%d-%d"):format(kind.name, round, case.id), shared)
    local faults0 = minor_faults()
    local dt, rate = timed(case, case.set, ctx, keys, values, n)
    local faults = minor_faults() - faults0
    local r = row(case)
    r.set[#r.set + 1] = rate or n / dt
    r.set_faults = r.set_faults or {}
    r.set_faults[#r.set_faults + 1] = faults / n
    if ctx.raw_rate then raw_rates[round] = ctx.raw_rate end
    if case.settle then case.settle(ctx) end
    local gkeys, order = gets(math.min(kind.n, n))
    local last
    dt, last, rate = timed(case, case.get, ctx, gkeys, order, n)
    r.get[#r.get + 1] = rate or n / dt
    assert(rate or kind.check(last, order[n]), case.name .. ": get returned a wrong value")
    case.close(ctx)
  end)
  for _, f in ipairs(shared.finish) do f() end

  local list = {}
  for _, case in ipairs(cases) do
    local r = rows[case.id]
    r.set, r.get = summarize(r.set), summarize(r.get)
    list[#list + 1] = r
  end
  results[kind.name] = { rows = list, orders = orders, heap = heap,
                         raw = #raw_rates > 0 and summarize(raw_rates) or nil }
  values, shared = nil, nil
  collectgarbage()
end

---------------------------------------------------------------------------
-- Expiry, counters and eviction (bench/expiry.lua)
---------------------------------------------------------------------------

log("expiry, counters and eviction")
local expiry_report = require("expiry").run {
  now = now, hurrahdb = hurrahdb, kinds = kinds, keys = opts.keys, rounds = opts.rounds, dir = tmp,
}

---------------------------------------------------------------------------
-- Opening a 1,000,000-key file: hurrahdb and Redis, the same file
---------------------------------------------------------------------------

local M = opts["open-keys"]
local open_path = tmp .. "/open.aof"
log("writing a %d-key AOF", M)
do
  local db = assert(hurrahdb.new { path = open_path, sync_time = 1000, auto_rewrite_percentage = 0 })
  local value = kinds[1].value
  for i = 1, M do assert(db:set("user:" .. i, value(i))) end
  assert(db:close())
end
local open_bytes = file_size(open_path)

local median_of = rounds_lib.median

-- The two take turns, each after a `sync`, so that neither meets the disk
-- writing back what an earlier case (or the copy for Redis) left dirty.
local OPEN_RUNS = 5
local h_times, h_rss, h_mem, h_faults, thp_times = {}, {}, {}, {}, {}
local r_times, r_mem, r_rss = {}, {}, {}
local fault_costs = {}

-- One open in a fresh process; env: variables for that process.
local function measure_open(env)
  local line = sh(("%s%s %s --measure-open %s"):format(env or "", arg[-1] or "lua5.4", quote(arg[0]),
    quote(open_path)))
  local secs, nkeys, _, rss, mem, faults = line:match("^(%S+)%s+(%S+)%s+(%S+)%s+(%S+)%s+(%S+)%s+(%S+)")
  assert(secs and tonumber(nkeys) == M, "measuring the open failed: " .. line)
  return tonumber(secs), tonumber(rss) / M, tonumber(mem) / M, tonumber(faults)
end
for run = 1, OPEN_RUNS do
  local dir = tmp .. "/redis-open-" .. run
  os.execute("mkdir -p " .. quote(dir) .. " && cp " .. quote(open_path) .. " " .. quote(dir .. "/appendonly.aof"))
  os.execute("sync")

  log("hurrahdb opens it")
  local secs, rss, mem, faults = measure_open()
  h_times[#h_times + 1], h_rss[#h_rss + 1], h_mem[#h_mem + 1], h_faults[#h_faults + 1] =
    secs, rss, mem, faults
  -- What those faults cost here: as many fresh pages, touched by a C loop.
  fault_costs[#fault_costs + 1] = assert(benchlib.fault_seconds(faults))
  -- The same open with glibc's malloc on transparent huge pages (one fault
  -- per 2 MiB instead of per 4 KiB), a setting of the process's environment.
  log("hurrahdb opens it, malloc on huge pages")
  thp_times[#thp_times + 1] = measure_open("GLIBC_TUNABLES=glibc.malloc.hugetlb=1 ")

  log("Redis loads it")
  local server = start_redis("redis-open-" .. run, "--appendonly yes --appendfilename appendonly.aof")
  assert(server.client:dbsize() == M, "Redis did not load every key")
  local logf = assert(io.open(server.log))
  local logtext = logf:read("a")
  logf:close()
  secs = tonumber(logtext:match("DB loaded from append only file: ([%d.]+) seconds"))
  assert(secs, "no load time in the Redis log")
  local info = server.client:info("memory")
  info = info.memory or info
  r_times[#r_times + 1] = secs
  r_mem[#r_mem + 1] = (tonumber(info.used_memory) - tonumber(info.used_memory_startup)) / M
  r_rss[#r_rss + 1] = tonumber(info.used_memory_rss) / M
  stop_redis(server)
end

local open = {
  keys = M, bytes = open_bytes,
  hurrahdb = median_of(h_times), redis = median_of(r_times),
  h_rss = median_of(h_rss), h_mem = median_of(h_mem),
  r_mem = median_of(r_mem), r_rss = median_of(r_rss),
  faults = median_of(h_faults), fault_cost = median_of(fault_costs), thp = median_of(thp_times),
}

---------------------------------------------------------------------------
-- Compaction: the rewrite of the same 1,000,000-key store against the
-- disk's sequential write speed (dd, in turns with it), the latency of sets
-- while a rewrite runs against the same sets without one (in turns too),
-- and a workload of overwrites: its file and open time before and after a
-- rewrite, and the file automatic rewrites leave
---------------------------------------------------------------------------

local compaction = { runs = 3 }
do
  local dd_rates, rw_rates, rw_keys, rw_bytes = {}, {}, {}, {}
  local extra_rss, extra_with, extra_without = {}, {}, {}
  local function new_lat() return { preempted = {}, waited = 0, slow = 0, slow_s = 0, slow_faults = 0 } end
  local lat_without, lat_with, lat_empty = new_lat(), new_lat(), new_lat()
  local steal_s = 0
  local rewrites_during = 0
  local copy = tmp .. "/rewrite.aof"
  os.execute("cp " .. quote(open_path) .. " " .. quote(copy))
  local db = assert(hurrahdb.new { path = copy, sync_time = 1000, auto_rewrite_percentage = 0 })
  local value = kinds[1].value
  -- Latencies of sets overwriting random keys of the store, into lat; with
  -- `during`, only while a rewrite runs (started first), checking every 256
  -- sets (the check is not timed); else `count` sets.
  -- Sets during which the kernel took the CPU away from this thread (an
  -- involuntary context switch) also go to lat.preempted: they waited for
  -- another thread or process, not for the store's work.
  -- Sets that blocked (a voluntary switch: a lock, the disk) are counted.
  local preemptions = benchlib.preemptions
  -- Time the hypervisor ran something else on this machine's CPUs (steal,
  -- in /proc/stat), in seconds; nil where it is not known.
  local function steal_seconds()
    local f = io.open("/proc/stat")
    if not f then return nil end
    local line = f:read("l")
    f:close()
    local fields = {}
    for x in line:gmatch("%d+") do fields[#fields + 1] = tonumber(x) end
    return fields[8] and fields[8] / 100 -- USER_HZ
  end
  -- Sets over 1 ms: how many, their time, and the page faults they took.
  local function note(lat, dt, p0, v0, f0)
    lat[#lat + 1] = dt
    if not p0 then return end
    local p1, v1, f1 = preemptions()
    if p1 ~= p0 then lat.preempted[#lat.preempted + 1] = dt
    elseif v1 ~= v0 then lat.waited = lat.waited + 1 end
    if dt > 0.001 then
      lat.slow, lat.slow_s, lat.slow_faults = lat.slow + 1, lat.slow_s + dt, lat.slow_faults + (f1 - f0)
    end
  end
  local function set_latencies(lat, during, count)
    local n = 0
    local mem0, mem_max = db:stats().memory, 0
    local steal0 = steal_seconds()
    while true do
      for _ = 1, 256 do
        n = n + 1
        local i = math.random(1, M)
        local v = value(i)
        local k = "user:" .. i
        local p0, v0, f0 = preemptions()
        local t0 = now()
        db:set(k, v)
        note(lat, now() - t0, p0, v0, f0)
      end
      local st = db:stats()
      mem_max = math.max(mem_max, st.memory - mem0)
      if (during and not st.rewrite_running) or (not during and n >= count) then
        if steal0 then steal_s = steal_s + steal_seconds() - steal0 end
        return n, mem_max
      end
    end
  end
  -- The same loop timing a spin as long as a typical set instead of the
  -- set: the pauses the machine itself makes (interrupts, the hypervisor),
  -- which no store call can avoid, caught as often as they would catch a
  -- set.
  local function spin_latencies(lat, count, spin)
    local steal0 = steal_seconds()
    for _ = 1, count do
      local i = math.random(1, M)
      local _, _ = value(i), "user:" .. i -- what the set loop makes, unused
      local p0, v0, f0 = preemptions()
      local t0 = now()
      while now() - t0 < spin do end
      note(lat, now() - t0, p0, v0, f0)
    end
    if steal0 then steal_s = steal_s + steal_seconds() - steal0 end
  end
  for run = 1, compaction.runs do
    os.execute("sync")
    log("compaction %d: dd writes 256 MiB", run)
    local ddout = sh("LC_ALL=C dd if=/dev/zero of=" .. quote(tmp .. "/dd.bin") ..
      " bs=1M count=256 conv=fdatasync 2>&1; rm -f " .. quote(tmp .. "/dd.bin"))
    local secs = tonumber(ddout:match("copied, ([%d.]+) s"))
    assert(secs, "dd gave no time: " .. ddout)
    dd_rates[#dd_rates + 1] = 256 * 1024 * 1024 / secs
    os.execute("sync")
    log("compaction %d: rewrite of %d keys", run, M)
    local t0 = now()
    assert(db:rewrite { wait = true })
    local dt = now() - t0
    local st = db:stats()
    rw_rates[#rw_rates + 1] = st.aof_bytes / dt
    rw_keys[#rw_keys + 1] = st.keys / dt
    rw_bytes[#rw_bytes + 1] = st.aof_bytes
    log("compaction %d: set latency, without and with a rewrite running", run)
    collectgarbage()
    local with = new_lat()
    with.preempted = lat_with.preempted
    assert(db:rewrite())
    local n, mem_max = set_latencies(with, true)
    extra_with[#extra_with + 1] = mem_max
    rewrites_during = rewrites_during + 1
    for _, l in ipairs(with) do lat_with[#lat_with + 1] = l end
    for _, f in ipairs { "waited", "slow", "slow_s", "slow_faults" } do lat_with[f] = lat_with[f] + with[f] end
    assert(db:rewrite { wait = true }) -- its outcome
    collectgarbage()
    local first = #lat_without + 1
    local _, mem_without = set_latencies(lat_without, false, n)
    extra_without[#extra_without + 1] = mem_without
    local run_lat = table.move(lat_without, first, #lat_without, 1, {})
    table.sort(run_lat)
    compaction.spin = percentile(run_lat, 0.5)
    spin_latencies(lat_empty, n, compaction.spin)
  end
  assert(db:close())
  for run = 1, compaction.runs do
    log("compaction %d: the memory a rewrite adds, in a fresh process", run)
    local line = sh(("%s %s --measure-rewrite %s"):format(arg[-1] or "lua5.4", quote(arg[0]), quote(copy)))
    extra_rss[#extra_rss + 1] = tonumber(line:match("^(%S+)"))
  end
  table.sort(lat_with)
  table.sort(lat_without)
  table.sort(lat_empty)
  -- The longest set the kernel did not preempt: the longest of l not in
  -- l.preempted (l sorted; a preempted latency is removed once per time it
  -- occurs).
  local function longest_unpreempted(l)
    local skip = {}
    for _, d in ipairs(l.preempted) do skip[d] = (skip[d] or 0) + 1 end
    for k = #l, 1, -1 do
      if (skip[l[k]] or 0) > 0 then skip[l[k]] = skip[l[k]] - 1 else return l[k] end
    end
    return 0
  end
  local function lat_row(l)
    return { n = #l, p50 = percentile(l, 0.5), p99 = percentile(l, 0.99), p999 = percentile(l, 0.999),
             max = l[#l], preempted = #l.preempted, calm_max = longest_unpreempted(l),
             waited = l.waited, slow = l.slow, slow_s = l.slow_s, slow_faults = l.slow_faults,
             counted = benchlib.preemptions() ~= nil }
  end
  local function count_over(l, limit)
    local c = 0
    for _, d in ipairs(l) do if d > limit then c = c + 1 end end
    return c
  end
  compaction.dd = median_of(dd_rates)
  compaction.rate = median_of(rw_rates)
  compaction.keys_rate = median_of(rw_keys)
  compaction.bytes = median_of(rw_bytes)
  compaction.extra_rss = #extra_rss == compaction.runs and median_of(extra_rss) or nil
  compaction.extra_with = median_of(extra_with)
  compaction.extra_without = median_of(extra_without)
  compaction.without = lat_row(lat_without)
  compaction.with = lat_row(lat_with)
  compaction.empty = lat_row(lat_empty)
  compaction.over_1ms = { with = count_over(lat_with, 0.001), without = count_over(lat_without, 0.001),
                          empty = count_over(lat_empty, 0.001) }
  compaction.steal = steal_seconds() and steal_s

  -- The overwrite workload: 1,000 keys overwritten 2,000 times.
  local function open_seconds(path)
    local times = {}
    for _ = 1, 3 do
      local line = sh(("%s %s --measure-open %s"):format(arg[-1] or "lua5.4", quote(arg[0]), quote(path)))
      times[#times + 1] = assert(tonumber(line:match("^(%S+)")), "measuring the open failed: " .. line)
    end
    return median_of(times)
  end
  local function overwrite(path, options)
    local w = assert(hurrahdb.new(setmetatable({ path = path, sync_time = 1000 }, { __index = options })))
    for r = 1, 2000 do
      for i = 1, 1000 do assert(w:set("key:" .. i, { id = i, round = r, name = "user " .. i })) end
    end
    assert(w:sync())
    return w
  end
  log("compaction: 1,000 keys overwritten 2,000 times")
  local over = tmp .. "/overwrite.aof"
  local w = overwrite(over, { auto_rewrite_percentage = 0 })
  assert(w:close())
  compaction.over_before = file_size(over)
  compaction.open_before = open_seconds(over)
  w = assert(hurrahdb.open(over, { auto_rewrite_percentage = 0 }))
  assert(w:rewrite { wait = true })
  compaction.live = w:stats().live_bytes
  assert(w:close())
  compaction.over_after = file_size(over)
  compaction.open_after = open_seconds(over)
  log("compaction: the same with automatic rewrites (default options)")
  local auto = tmp .. "/overwrite-auto.aof"
  w = overwrite(auto, {})
  local st = w:stats()
  compaction.auto_rewrites = st.rewrites
  assert(w:close())
  compaction.auto_size = file_size(auto)
  os.remove(over)
  os.remove(auto)
  os.remove(copy)
end

---------------------------------------------------------------------------
-- Instructions per set, counted by callgrind: the work a set does, which
-- the machine's noise does not move (cache misses and page faults are not
-- in it: they are in the timed figures)
---------------------------------------------------------------------------

local COUNT_FUNCTIONS = { "l_set", "lvalue_encode", "hdb_set", "table_lookup", "table_entry_new",
                          "table_commit", "flusher_append", "l_get", "hdb_get", "lvalue_decode" }
local instructions -- kind name -> { table = n, hurrahdb = n, <function> = n } per set
local get_instructions -- the same per get
if sh("command -v valgrind && command -v callgrind_annotate") ~= "" then
  instructions, get_instructions = {}, {}
  local function count(case, kind, n, loops, what)
    local out = ("%s/callgrind.%s.%s.%s.%d"):format(tmp, what, case, kind.name, loops)
    local store = tmp .. "/count.aof"
    os.remove(store)
    sh(("valgrind --tool=callgrind --callgrind-out-file=%s %s %s --count-%s %s %s %d %d %s")
      :format(quote(out), arg[-1] or "lua5.4", quote(arg[0]), what, case, kind.name, n, loops, quote(store)))
    local text = sh("callgrind_annotate --inclusive=yes --threshold=100 " .. quote(out))
    local counts = { total = tonumber((text:match("([%d,]+)%s+%b()%s+PROGRAM TOTALS") or ""):gsub(",", ""), 10) }
    for _, name in ipairs(COUNT_FUNCTIONS) do
      local c = text:match("\n%s*([%d,]+)%s+%b()%s+%S-:" .. name .. " %[")
      counts[name] = c and tonumber((c:gsub(",", ""))) or 0
    end
    assert(counts.total, "callgrind gave no total for " .. case .. " " .. kind.name)
    return counts
  end
  local PROFILE_KEYS = math.max(40, math.min(20000, opts.keys))
  for _, kind in ipairs(kinds) do
    log("instructions per set and per get, %s", kind.label)
    local n = math.max(40, PROFILE_KEYS // kind.keys_share)
    for _, what in ipairs({ "sets", "gets" }) do
      local row = { n = n }
      for _, case in ipairs({ "table", "hurrahdb" }) do
        local a, b = count(case, kind, n, n // 2, what), count(case, kind, n, n, what)
        local ops = n - n // 2
        row[case] = (b.total - a.total) / ops
        if case == "hurrahdb" then
          for _, name in ipairs(COUNT_FUNCTIONS) do row[name] = (b[name] - a[name]) / ops end
        end
      end
      if what == "sets" then instructions[kind.name] = row else get_instructions[kind.name] = row end
    end
  end
end

---------------------------------------------------------------------------
-- nginx: loops inside a worker, and HTTP with wrk (bench/nginx.lua)
---------------------------------------------------------------------------

local nginx_report
local luajit_cpath = os.getenv("HURRAHDB_LUAJIT_CPATH")
if luajit_cpath and file_size("/usr/lib/nginx/modules/ngx_http_lua_module.so") > 0 then
  log("nginx")
  collectgarbage() -- whatever is left open goes before bench/nginx.lua inherits it
  local p = assert(io.popen(("%s %s/nginx.lua %s --keys %d --rounds %d --seed %d --http-rounds %d --http-seconds %d")
    :format(arg[-1] or "lua5.4", quote(script_dir()), quote(luajit_cpath), opts.keys, opts.rounds,
      seed, 2 * opts.rounds, opts["http-seconds"])))
  local text = p:read("a")
  p:close()
  local ok, report = pcall(decode, text)
  assert(ok and type(report) == "table", "bench/nginx.lua failed (see above)")
  nginx_report = report
end
cleanup()
local elapsed = now() - started

---------------------------------------------------------------------------
-- Report
---------------------------------------------------------------------------

local out = {}
local function say(fmt, ...) out[#out + 1] = select("#", ...) > 0 and fmt:format(...) or fmt end
-- Stretches of the report that README.md's summary repeats: marks[name] =
-- { first line, last line } of out.
local marks = {}
local function mark_start(name) marks[name] = { #out + 1 } end
local function mark_end(name) marks[name][2] = #out end

local function rate(s)
  if not s then return "n/a" end
  return ("%.0f ±%.0f%%"):format(s.median, s.spread * 100)
end
local function us(seconds) return seconds and ("%.1f"):format(seconds * 1e6) or "n/a" end
local function ratio(a, b)
  return (a and b and a.median and b.median) and ("%.2f"):format(a.median / b.median) or "n/a"
end
local function find(rows, name, gc)
  for _, r in ipairs(rows) do
    if r.case.name == name and r.case.gc == gc then return r end
  end
end
local function check(ok)
  if ok == nil then return "not measured" end
  return ok and "met" or "**missed**"
end

say("# hurrahdb benchmark results")
say("")
say("Written by `make bench` (bench/bench.lua) in one run; the plot is [results.png](results.png).")
say("The machine is shared: compare the ratios within this run, not absolute figures across runs.")
say("")
mark_start("machine")
say("| machine | |")
say("|---|---|")
say("| CPU | %s, %s cores, %s RAM; load average %s at the start |", machine.cpu, machine.cores,
  machine.memory, machine.load)
say("| kernel | Linux %s; transparent huge pages: %s; glibc %s |", machine.kernel, machine.thp, machine.glibc)
say("| disk | %s, %s |", machine.disk, machine.fs)
say("| Lua | %s; %s in nginx |", machine.lua, machine.luajit)
say("| peers | redis-server %s, SQLite %s (LuaSQL), lua-cjson %s, %s, wrk %s |", machine.redis,
  machine.sqlite, machine.cjson, machine.nginx, machine.wrk)
say("| run | %s, %.0f s; `make bench BENCH_ARGS=\"--keys %d --rounds %d --open-keys %d --seed %d\"` repeats its orders |",
  machine.date, elapsed, opts.keys, opts.rounds, M, seed)
do
  -- The code measured: the commit, and whether the checkout had changes.
  local commit = sh("git -C " .. quote(script_dir() .. "/..") .. " rev-parse --short HEAD")
  local dirty = sh("git -C " .. quote(script_dir() .. "/..") .. " status --porcelain -- src lua")
  say("| code | %s |", commit ~= "" and ("commit " .. commit .. (dirty ~= "" and ", with uncommitted changes to src/ or lua/" or ""))
    or "not a git checkout")
end
mark_end("machine")
say("")
say("How the cases are run:")
say("")
say("- Each round (%d here) runs every case, in a new random order (seed %d; the orders are at the", opts.rounds, seed)
say("  end), each on a new store of its own, opened after a full collection, so that no case always")
say("  runs first on a fresh heap and every case of a round meets the same kind of heap.")
say("- The collector runs as users run it (Lua 5.4's default incremental settings) in every timed loop,")
say("  except in the rows labelled \"GC stopped\", which are reported apart. The bench's own keys and")
say("  values stay in the Lua heap throughout (the heap size is given for each kind of value).")
local repeated = {}
for _, case in ipairs(cases) do
  if case.repeats and not case.gc then repeated[#repeated + 1] = case.name end
end
say("- A case sets n new keys into its empty store, then gets them back in a random order (the same")
say("  for every case); figures are the median of its runs, ±half their range. In each round the")
say("  cases the targets compare run %d times (%s), the others once.", REPEATS, table.concat(repeated, "; "))
say("  hurrahdb's AOF cases sync before the gets, so that their background writes do not overlap the")
say("  timed gets.")
say("- `get` returns decoded Lua values in every case but one: cjson.decode for the Lua table,")
say("  Redis and SQLite; the Lua table of the values returns the stored table itself (nothing to")
say("  decode: the bound for a store that serialises nothing).")
say("- Set latency is of each call of a separate pass of inserts into an empty store, timed one by")
say("  one, with the collector running; that pass also gives the bytes on disk. Cases that sync")
say("  every write, and Redis one command at a time, run fewer operations (the n column).")
say("- The Redis rows are through lua-redis, and bounded by that client (RESP built and parsed in")
say("  Lua, plus cjson); the redis-benchmark rows are Redis's own figures (its C client, no JSON),")
say("  against a server with the same configuration (appendfsync everysec) holding n keys of the")
say("  same size: its SETs overwrite random keys among them, its GETs read random ones.")

local function kind_table(kind)
  local res = results[kind.name]
  local rows = res.rows
  local ceiling = find(rows, CEILING)
  say("")
  say("## %s: %s (%d to %d bytes of JSON)", kind.label, kind.describe, kind.json_bytes, kind.json_bytes_max)
  say("")
  say("Lua heap before the rounds (the bench's keys and values): %.0f MB.", res.heap / 1e6)
  say("")
  say("| case | n | set/s | get/s | set vs %s | get vs %s | set p50 µs | p99 µs | p99.9 µs | bytes on disk per key | page faults per 1000 sets (this process) |",
    CEILING, CEILING)
  say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for _, r in ipairs(rows) do
    if not r.case.gc then
      local in_process = r.case.group == "hurrahdb" or r.case.group == "lua" or r.case.group == "sqlite"
      say("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |", r.case.name, r.n, rate(r.set), rate(r.get),
        ratio(r.set, ceiling.set), ratio(r.get, ceiling.get), us(r.p50), us(r.p99), us(r.p999),
        r.disk and ("%.0f"):format(r.disk) or "-",
        (in_process and r.set_faults) and ("%.1f"):format(1000 * rounds_lib.median(r.set_faults)) or "-")
      if r.case.name == SYNC0 and res.raw then
        say("| %s | %d | %s | n/a | %s | n/a | n/a | n/a | n/a | %d | - |", RAW, r.n, rate(res.raw),
          ratio(res.raw, ceiling.set), r.raw_record)
      end
    end
  end
end

for _, kind in ipairs(kinds) do kind_table(kind) end

say("")
say("## With the collector stopped in the timed loops")
say("")
say("The same loops, in the same rounds, each timed after a full collection with the collector")
say("stopped (as this bench ran before): not how users run them; the GC work they skip is left for")
say("later. The ratios are against the Lua table + cjson run the same way.")
say("")
say("| kind | case | set/s | get/s | set vs %s | get vs %s |", CEILING, CEILING)
say("|---|---|---:|---:|---:|---:|")
for _, kind in ipairs(kinds) do
  local rows = results[kind.name].rows
  local ceiling = find(rows, CEILING, "stopped")
  for _, r in ipairs(rows) do
    if r.case.gc == "stopped" then
      say("| %s | %s, GC stopped | %s | %s | %s | %s |", kind.name, r.case.name, rate(r.set), rate(r.get),
        ratio(r.set, ceiling.set), ratio(r.get, ceiling.get))
    end
  end
end

say("")
say("## Opening a file of %d keys, and memory per key", M)
say("")
say("The same file (%.1f MB, small mixed values), written by hurrahdb, opened by hurrahdb in a fresh", open.bytes / 1e6)
say("process and loaded by Redis (its own log's \"DB loaded from append only file\"), taking turns")
say("after a `sync`; median of %d.", OPEN_RUNS)
say("")
say("| | hurrahdb | Redis %s | ratio |", machine.redis)
say("|---|---:|---:|---:|")
say("| open / load time | %.3f s | %.3f s | hurrahdb %.2fx faster |", open.hurrahdb, open.redis, open.redis / open.hurrahdb)
say("| open / load time, glibc's malloc on transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`) | %.3f s | | hurrahdb %.2fx faster |",
  open.thp, open.redis / open.thp)
say("| page faults during the open | %.0f (%.1f µs each here: %.3f s) | | |", open.faults,
  open.fault_cost * 1e6, open.faults * open.fault_cost)
say("| memory per key | %.1f B (RSS growth; %.1f B by stats().memory) | %.1f B (INFO used_memory - used_memory_startup; RSS %.0f B) | %.2f |",
  open.h_rss, open.h_mem, open.r_mem, open.r_rss, open.h_rss / open.r_mem)

say("")
say("## Compaction")
say("")
mark_start("compaction")
say("| | measured |")
say("|---|---:|")
say("| rewrite of the %d-key store (%.1f MB written, median of %d) | %.0f MB/s, %.0f keys/s |", M,
  compaction.bytes / 1e6, compaction.runs, compaction.rate / 1e6, compaction.keys_rate)
say("| the disk's sequential write (`dd bs=1M count=256 conv=fdatasync`, in turns with the rewrites) | %.0f MB/s |",
  compaction.dd / 1e6)
say("| rewrite / disk | %.2f |", compaction.rate / compaction.dd)
local function lat(r)
  return ("%s / %s / %s / %s µs"):format(us(r.p50), us(r.p99), us(r.p999), us(r.max))
end
say("| memory a rewrite adds, no writes meanwhile: the rise of the peak resident size (VmHWM) of a fresh process that opens the store and rewrites it (median of %d) | %s |",
  compaction.runs, compaction.extra_rss and ("%.2f MiB"):format(compaction.extra_rss / 2^20) or "n/a (no /proc)")
say("| the largest rise of `stats().memory` while the sets below run, with a rewrite / without (sampled every 256 sets, median of %d) | %.2f / %.2f MiB |",
  compaction.runs, compaction.extra_with / 2^20, compaction.extra_without / 2^20)
say("| set p50 / p99 / p99.9 / max, no rewrite running (%d sets) | %s |", compaction.without.n, lat(compaction.without))
say("| set p50 / p99 / p99.9 / max, while a rewrite runs (%d sets, during %d rewrites) | %s |", compaction.with.n,
  compaction.runs, lat(compaction.with))
if compaction.with.counted then
  say("| sets the kernel preempted (an involuntary context switch during the call), with a rewrite / without | %d / %d |",
    compaction.with.preempted, compaction.without.preempted)
  say("| the longest set not preempted, with a rewrite / without | %s / %s µs |", us(compaction.with.calm_max),
    us(compaction.without.calm_max))
  say("| sets that blocked (a voluntary context switch: a lock or the disk), with a rewrite / without | %d / %d |",
    compaction.with.waited, compaction.without.waited)
end
say("| sets over 1 ms, with a rewrite / without | %d / %d |", compaction.over_1ms.with, compaction.over_1ms.without)
say("| the same loop timing a spin as long as the median set (%s µs; %d spins, after each run without a rewrite): p50 / p99 / p99.9 / max; over 1 ms | %s; %d |",
  us(compaction.spin), compaction.empty.n, lat(compaction.empty), compaction.over_1ms.empty)
if compaction.steal then
  say("| CPU time the hypervisor gave to others during these timed loops (steal, /proc/stat, both cores) | %.0f ms |",
    compaction.steal * 1000)
end
say("| 1,000 keys overwritten 2,000 times: file, open | %.1f MB, %.3f s |", compaction.over_before / 1e6,
  compaction.open_before)
say("| the same after `db:rewrite()`: file, open | %.1f KB (live records %.1f KB), %.4f s |",
  compaction.over_after / 1e3, compaction.live / 1e3, compaction.open_after)
say("| the same workload with automatic rewrites (default options: 64 MiB, 100%%): file at the end, rewrites | %.1f MB, %d |",
  compaction.auto_size / 1e6, compaction.auto_rewrites)
mark_end("compaction")
say("")
say("The sets are overwrites of random keys of the store, timed one by one; the rewrite runs on its")
say("own thread, and a set waits for it at most while it copies one chunk (256 keys or 64 KiB).")

if instructions then
  say("")
  say("## Instructions per set and per get")
  say("")
  say("Counted by callgrind (valgrind), which counts what the processor is asked to do, whatever")
  say("else the machine does; the count of the same code still moves from run to run, by up to")
  say("about a tenth (the flusher thread's wake-ups, Lua's random string seed, when the collector")
  say("runs), so differences smaller than that say nothing. Cache misses and page faults are not in")
  say("it (they are in the timed figures above). Each count is the difference between two runs that")
  say("set n/2 and n new keys (after building the same n keys and values), divided by n/2, with the")
  say("collector running: the whole loop, Lua's own work and the writing of the AOF records")
  say("included, the freeing of the store or table at the end not.")
  say("")
  say("| kind | n | Lua table + cjson | hurrahdb AOF sync_time=1000 | hurrahdb / Lua table + cjson | encoder (lvalue_encode) | key lookup (table_lookup) | entry (table_entry_new, table_commit) | AOF record (flusher_append) | the rest of db:set (checks, hdb_set) | Lua and the flusher thread |")
  say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for _, kind in ipairs(kinds) do
    local r = instructions[kind.name]
    local table_part = r.table_lookup + r.table_entry_new + r.table_commit
    say("| %s | %d | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |", kind.label, r.n, r.table,
      r.hurrahdb, r.hurrahdb / r.table, r.lvalue_encode, r.table_lookup,
      r.table_entry_new + r.table_commit, r.flusher_append,
      r.l_set - r.lvalue_encode - table_part - r.flusher_append, r.hurrahdb - r.l_set)
  end
  say("")
  say("Per get, the same way (all n keys set first, then n/2 or n of them got back in a random order):")
  say("")
  say("| kind | n | Lua table + cjson | hurrahdb AOF sync_time=1000 | hurrahdb / Lua table + cjson | decoder (lvalue_decode) | finding the key (hdb_get) | the rest of db:get (checks, the copy out) | Lua |")
  say("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for _, kind in ipairs(kinds) do
    local r = get_instructions[kind.name]
    say("| %s | %d | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f | %.0f |", kind.label, r.n, r.table, r.hurrahdb,
      r.hurrahdb / r.table, r.lvalue_decode, r.hdb_get, r.l_get - r.lvalue_decode - r.hdb_get, r.hurrahdb - r.l_get)
  end
end

local http, http_errors -- the HTTP figures, for the targets
if nginx_report then
  local nr = nginx_report
  http = nr.http
  http_errors = 0
  for _, count in pairs(http.errors) do http_errors = http_errors + count end
  say("")
  say("## nginx over HTTP")
  say("")
  say("%s with 2 workers (LuaJIT), on loopback; wrk %s (1 thread, %d connections, %d s per run, at most",
    machine.nginx, machine.wrk, http.connections, http.seconds)
  say("%d requests) against five locations, in a new random order in each of %d rounds: a no-op",
    http.max_requests, http.rounds)
  say("(a Lua handler that prints a fixed 10-byte body), and get and set of random keys among %d", http.keys)
  say("preloaded ones (small mixed values) through `hurrahdb.worker` (one store per worker, AOF,")
  say("sync_time = 1000) and through `ngx.shared.DICT` + cjson; every location answers the same")
  say("10-byte body, every request is the same length. The cost of a request is the CPU time both")
  say("workers used during the run (every thread, a store's flusher included; from the kernel's")
  say("schedstat) divided by the requests served; the store's part is that cost less the no-op's")
  say("in the same round (median of rounds). The kernel's own writeback of the AOF (its flusher")
  say("threads, not the workers') is not in it. CPU per request is higher when the workers are idle")
  say("more of the time (fewer requests per wake-up), so locations compare only as far as the")
  say("workers are about as busy in each: the busy column (CPU seconds per second of the run, both")
  say("workers together, out of the %s cores) says how busy. The inverse-throughput difference (1/rate -", machine.cores)
  say("1/rate of the no-op) is given beside it: it shows the store only while nginx, not wrk, is")
  say("the bottleneck.")
  say("")
  say("| location | req/s | latency p50 / p99 ms | workers busy | worker CPU per request, µs | beyond the no-op, µs | DICT's cost / this cost | 1/rate beyond the no-op, µs |")
  say("|---|---:|---:|---:|---:|---:|---:|---:|")
  for _, loc in ipairs(http.locations) do
    local vs = ""
    if loc.cpu_cost and loc.peer then
      local peer
      for _, l in ipairs(http.locations) do if l.id == loc.peer then peer = l end end
      vs = (loc.cpu_cost > 0 and peer.cpu_cost > 0) and ("%.2f"):format(peer.cpu_cost / loc.cpu_cost) or "n/a"
    end
    say("| %s | %s | %.2f / %.2f | %.2f | %.2f ±%.0f%% | %s | %s | %s |", loc.name, rate(loc.rate), loc.p50 / 1e3,
      loc.p99 / 1e3, loc.busy, loc.cpu.median * 1e6, loc.cpu.spread * 100,
      loc.cpu_cost and ("%.2f"):format(loc.cpu_cost * 1e6) or "-", vs,
      loc.cost and ("%.2f"):format(loc.cost * 1e6) or "-")
  end
  if http_errors > 0 or http.error_log > 0 then
    local e = http.errors
    say("")
    say("**wrk counted %d errors** (connect %d, read %d, write %d, HTTP status above 399 %d, timeout %d)",
      http_errors, e.connect, e.read, e.write, e.status, e.timeout)
    say("and nginx logged %d errors: the figures above are not to be trusted.", http.error_log)
  end
  if http.bounded > 0 then
    say("")
    say("%d runs reached their request bound before their time ran out: their rates are too low.", http.bounded)
  end

  say("")
  say("## Inside one nginx worker, in a loop")
  say("")
  say("%s with 1 worker, LuaJIT; each case sets and gets its keys in a loop inside one request", machine.nginx)
  say("(no HTTP per operation), cases in a new random order in each of %d rounds, collector running;", nr.rounds)
  say("median of the rounds. These loops measure the store calls alone, not what a request costs.")
  for _, kind in ipairs(kinds) do
    local kr = nr.worker[kind.name]
    local by = {}
    for _, r in ipairs(kr.cases) do by[r.name] = r end
    local dict, ceiling = by["ngx.shared.DICT + cjson"], by[CEILING]
    say("")
    say("%s, %d keys:", kind.label, kr.keys)
    say("")
    say("| case (LuaJIT, in a loop in one worker) | set/s | get/s | set vs DICT | get vs DICT | set vs %s | get vs %s |",
      CEILING, CEILING)
    say("|---|---:|---:|---:|---:|---:|---:|")
    for _, r in ipairs(kr.cases) do
      say("| %s | %s | %s | %s | %s | %s | %s |", r.name, rate(r.set), rate(r.get), ratio(r.set, dict.set),
        ratio(r.get, dict.get), ratio(r.set, ceiling.set), ratio(r.get, ceiling.get))
    end
    if kr.parts then
      say("")
      say("The DICT + cjson get in two halves: dict:get alone %.0f/s, cjson.decode of the fetched text alone %.0f/s.",
        kr.parts.dict_get.median, kr.parts.decode.median)
    end
  end
end

-- Expiry, counters and eviction: each case against hurrahdb's own plain
-- set or get in the same rounds (target 0.8), and in nginx against the
-- DICT's counterpart.
local EXPIRY_TARGET = 0.8
local expiry_missed = {}
local function expiry_table(report, label)
  for _, kind in ipairs(kinds) do
    local kr = report[kind.name]
    local by = {}
    for _, r in ipairs(kr.cases) do by[r.name] = r end
    say("")
    say("%s, %d keys%s:", kind.label, kr.keys, label)
    say("")
    say("| case | op/s | spread | against | ratio | target (%.1f) |", EXPIRY_TARGET)
    say("|---|---:|---:|---|---:|---|")
    for _, r in ipairs(kr.cases) do
      local base = r.base and by[r.base]
      local x = base and r.rate.median / base.rate.median
      local hurrahdb_case = r.name:sub(1, 4) ~= "DICT"
      local met = x and hurrahdb_case and (x >= EXPIRY_TARGET and "met" or "**missed**") or ""
      if x and hurrahdb_case and x < EXPIRY_TARGET then
        expiry_missed[#expiry_missed + 1] = ("%s, %s%s: %.2f of %s"):format(r.name, kind.label, label, x, r.base)
      end
      say("| %s | %.0f | ±%.0f%% | %s | %s | %s |", r.name, r.rate.median, r.rate.spread * 100,
        r.base or "", x and ("%.2f"):format(x) or "", met)
    end
  end
end
local EXPIRY_PAIRS = {
  { "set", "DICT set" }, { "set ttl", "DICT set exptime" }, { "incr", "DICT incr" },
  { "set at max_memory, lru", "DICT set, full zone" },
}

mark_start("expiry")
say("")
say("## Expiry, counters and eviction")
say("")
say("Lua 5.4, stores with an AOF at sync_time = 1000, cases in a new random order in each of %d", opts.rounds)
say("rounds, collector running; median of the rounds. `set ttl` passes `{ ttl = 3600 }`; `get, half")
say("expired` reads every key of a store where half have expired (the gets reclaim them as they go);")
say("`incr` counts on 1,000 counters; `set at max_memory, lru` writes new keys into a store full to its")
say("bound (max_memory = what half the keys take), each set evicting. Each is compared with the plain")
say("set or get of the same rounds.")
expiry_table(expiry_report, "")
if nginx_report and nginx_report.worker.expiry then
  local er = nginx_report.worker.expiry
  say("")
  say("In one nginx worker (LuaJIT, the same loops), beside ngx.shared.DICT: `DICT set` encodes with")
  say("cjson and sets; `DICT set exptime` passes exptime 3600; `DICT incr` counts on the same counters;")
  say("`DICT set, full zone` sets new keys into a full 4 MiB zone, each set evicting.")
  expiry_table(er, ", nginx")
  for _, kind in ipairs(kinds) do
    local by = {}
    for _, r in ipairs(er[kind.name].cases) do by[r.name] = r end
    say("")
    say("%s, nginx: hurrahdb against the DICT", kind.label)
    say("")
    say("| hurrahdb | op/s | DICT | op/s | hurrahdb / DICT |")
    say("|---|---:|---|---:|---:|")
    for _, p in ipairs(EXPIRY_PAIRS) do
      local a, b = by[p[1]], by[p[2]]
      say("| %s | %.0f | %s | %.0f | %.2f |", p[1], a.rate.median, p[2], b.rate.median,
        a.rate.median / b.rate.median)
    end
  end
end
say("")
if #expiry_missed == 0 then
  say("Every case is within %.1f of the plain operation.", EXPIRY_TARGET)
else
  say("Below %.1f of the plain operation: %s.", EXPIRY_TARGET, table.concat(expiry_missed, "; "))
end
-- What an evicting set does besides a set, in this run's times per call.
local evict_notes = {}
for _, kind in ipairs(kinds) do
  local by = {}
  for _, r in ipairs(expiry_report[kind.name].cases) do by[r.name] = 1e6 / r.rate.median end
  evict_notes[#evict_notes + 1] = ("%s: set %.2f µs, delete %.2f µs, evicting set %.2f µs"):format(
    kind.label, by.set, by.delete, by["set at max_memory, lru"])
end
say("")
say("An evicting set does a set and the delete of the key it evicts (its `DEL` written too), and")
say("first picks that key: the oldest of 5 keys taken at random, each a cache miss (or two) in a")
say("large table, prefetched together. The plain set writes into a store that grows (and")
say("pays for it), the evicting set into one that does not. Times per call: %s.", table.concat(evict_notes, "; "))
mark_end("expiry")

-- What bounds a missed target, in this run's figures.
local function x_ratio(a, b) return a.median / b.median end

-- The same op with the collector stopped, in words ("" if not measured).
local function with_collector_stopped(kind, op)
  local rows = results[kind.name].rows
  local a, c = find(rows, AOF, "stopped"), find(rows, CEILING, "stopped")
  if not (a and c) then return nil end
  return ("With the collector stopped the ratio is %.2f (%.0f against %.0f %ss a second)"):format(
    x_ratio(a[op], c[op]), a[op].median, c[op].median, op)
end

local function why_set(kind, aof, ceiling)
  local lines = {}
  local function add(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  add("hurrahdb's AOF store set %.0f %s a second, the Lua table + cjson %.0f.", aof.set.median,
    kind.label, ceiling.set.median)
  local r = instructions and instructions[kind.name]
  if r then
    add("The work itself differs (instructions per set, above): %.0f for hurrahdb against %.0f,", r.hurrahdb, r.table)
    add("of which hurrahdb's encoder takes %.0f (cjson.encode, which also makes the Lua string, is part", r.lvalue_encode)
    add("of the %.0f), finding the key %.0f (SipHash-1-3 of the key, then the bucket; the Lua table", r.table, r.table_lookup)
    add("uses the hash Lua stored in each key string when the bench made it, outside the timed loop),")
    add("the entry %.0f (malloc, and the copy of key and value) and the AOF record %.0f (formatted", r.table_entry_new + r.table_commit,
      r.flusher_append)
    add("into the buffer under its lock).")
    if r.hurrahdb > r.table then
      add("hurrahdb's set does %.0f%% more work here than the Lua table's; the collector (which the Lua", 100 * (r.hurrahdb / r.table - 1))
      add("table's strings keep busy and hurrahdb's set does not) and the cache misses move the timed")
      add("ratio from there.")
    else
      add("hurrahdb's set does %.0f%% less work here than the Lua table's: what makes it slower is outside", 100 * (1 - r.hurrahdb / r.table))
      add("the count (cache misses, the collector).")
    end
  else
    add("(valgrind was not installed: no instruction counts in this run.)")
  end
  local stopped = with_collector_stopped(kind, "set")
  if stopped then add("%s.", stopped) end
  -- Fresh memory: page faults in the timed loops, at what one costs here.
  local rows = results[kind.name].rows
  if aof.set_faults and ceiling.set_faults then
    local af, cf = rounds_lib.median(aof.set_faults), rounds_lib.median(ceiling.set_faults)
    add("Its timed set loops took %.1f page faults per 1000 sets (the Lua table + cjson's: %.1f); at", 1000 * af, 1000 * cf)
    add("the %.1f µs a fresh page costs a C loop here, that is about %.2f µs per set (%.2f µs).",
      open.fault_cost * 1e6, af * open.fault_cost * 1e6, cf * open.fault_cost * 1e6)
  end
  local memory, no_fsync = find(rows, "hurrahdb memory-only"), find(rows, "hurrahdb AOF sync_time=1000, fsync=false")
  if memory and no_fsync then
    add("In the same run the memory-only store set %.2fx and the AOF store without fsync %.2fx the",
      x_ratio(memory.set, ceiling.set), x_ratio(no_fsync.set, ceiling.set))
    add("Lua table + cjson; they run the same encoder and the same table as this row (its spread: ±%.0f%%).",
      aof.set.spread * 100)
  end
  return table.concat(lines, "\n")
end

local function why_get(kind, aof, ceiling)
  local lines = {}
  local function add(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  add("hurrahdb's AOF store got %.0f %s a second, the Lua table + cjson %.0f.", aof.get.median,
    kind.label, ceiling.get.median)
  local r = get_instructions and get_instructions[kind.name]
  if r then
    add("It executes %.0f instructions per get against %.0f (above): the decoder %.0f, finding the key", r.hurrahdb,
      r.table, r.lvalue_decode)
    add("%.0f (SipHash-1-3 of the key, its bucket and its entry).", r.hdb_get)
  end
  local stopped = with_collector_stopped(kind, "get")
  if stopped then
    add("%s: the collector's work, which both make garbage for (the tables and strings a get", stopped)
    add("returns), weighs on the two differently.")
  end
  add("What the instruction counts leave out is memory latency: a get of a random key among %d", kind.n)
  add("reads the key's bucket and then its entry (the Lua table: its node, then the text), and both")
  add("then intern the decoded strings in Lua's string table, which holds every string of the bench's")
  add("data. Fewer instructions make a get faster only as far as those misses allow.")
  return table.concat(lines, "\n")
end

local function why_open()
  local faults_s = open.faults * open.fault_cost
  return table.concat({
    ("hurrahdb opened the file in %.3f s and Redis loaded it in %.3f s. The open made %.0f page"):format(open.hurrahdb,
      open.redis, open.faults),
    ("faults; a C loop that touches as many fresh pages takes %.1f µs for each here, so they come to"):format(
      open.fault_cost * 1e6),
    ("about %.3f s, %.0f%% of the open (an estimate: the loop's faults are write faults on pages of its"):format(
      faults_s, 100 * faults_s / open.hurrahdb),
    "own): the first touch of the memory that malloc hands out for the entries and the table (the",
    "kernel's fault and its zeroing of each 4 KiB page; what a fault costs depends on the machine, and",
    "on a virtual one on its hypervisor). With glibc's malloc on transparent huge pages (one",
    ("fault per 2 MiB), the same open took %.3f s, %.2fx faster than Redis; that is a setting of the"):format(open.thp,
      open.redis / open.thp),
    "process (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` in its environment), not one a library can make.",
    ("The rest, %.3f s, checks every batch's tag and CRC-32C, parses every record and builds the"):format(
      math.max(0, open.hurrahdb - faults_s)),
    "table.",
  }, "\n")
end

local function why_memory()
  -- The layout of a store of M keys, from the same keys and values: an
  -- entry is a 24-byte header, the key and the JSON; malloc gives it a
  -- chunk of a multiple of 16 bytes with 8 of its own (32 at least).
  local data, chunks = 0, 0
  local value = kinds[1].value
  for i = 1, M do
    local n = #("user:" .. i) + #encode(value(i))
    data = data + n
    chunks = chunks + math.max(32, ((24 + n + 8 + 15) // 16) * 16)
  end
  local buckets = 16
  while buckets < M do buckets = buckets * 2 end
  local slots = ((M + 4095) // 4096) * (4096 * 8 + 8)
  local entry, chunk = 24 + data / M, chunks / M
  return table.concat({
    ("stats().memory counts %.1f B per key: the entry (a 24-byte header, then the key and the JSON:"):format(open.h_mem),
    ("%.1f B on average), the bucket array (%d buckets of 8 bytes: %.1f B) and the slot array that"):format(entry,
      buckets, buckets * 8 / M),
    ("keeps iteration stable (%.1f B). The RSS grows by %.1f B: malloc gives each entry a chunk of"):format(slots / M,
      open.h_rss),
    ("%.1f B on average (its size rounded up to 16 bytes, plus 8 of its own), %.1f B more than the"):format(chunk,
      chunk - entry),
    ("entry. Chunks, buckets and slots make %.1f B; the RSS growth is %.1f B."):format(
      chunk + (buckets * 8 + slots) / M, open.h_rss),
  }, "\n")
end

-- Targets
local targets = {}
-- why(): what bounds the figure, from this run's measurements; printed
-- under "Why the missed targets are missed" when the target is missed.
local function target(text, measured, ok, why)
  targets[#targets + 1] = { text, measured, ok, why }
end
for _, kind in ipairs(kinds) do
  local rows = results[kind.name].rows
  local ceiling, aof = find(rows, CEILING), find(rows, AOF)
  target(("AOF sync_time=1000 set ≥ 1.0x %s, %s"):format(CEILING, kind.label), ratio(aof.set, ceiling.set) .. "x",
    aof.set.median >= 1.0 * ceiling.set.median, function() return why_set(kind, aof, ceiling) end)
  target(("AOF sync_time=1000 get ≥ 1.2x %s, %s"):format(CEILING, kind.label), ratio(aof.get, ceiling.get) .. "x",
    aof.get.median >= 1.2 * ceiling.get.median, function() return why_get(kind, aof, ceiling) end)
end
target(("opening %d keys ≥ 4x faster than Redis %s loads the same file"):format(M, machine.redis),
  ("%.2fx"):format(open.redis / open.hurrahdb), open.redis >= 4 * open.hurrahdb, why_open)
target(("rewrite of %d keys ≥ 0.5x the disk's sequential write speed"):format(M),
  ("%.2fx (%.0f vs %.0f MB/s)"):format(compaction.rate / compaction.dd, compaction.rate / 1e6, compaction.dd / 1e6),
  compaction.rate >= 0.5 * compaction.dd, function()
    return ("The rewrite wrote %.1f MB in %.3f s. It copies the table in chunks under a lock, formats"
      .. "\nthe records and writes batches of 1 MiB, starting the writeback of each, and fdatasyncs at the end."):format(
      compaction.bytes / 1e6, compaction.bytes / compaction.rate)
  end)
target("longest set while a rewrite runs < 2 ms", ("%s µs"):format(us(compaction.with.max)),
  compaction.with.max < 0.002, function()
    local w, wo = compaction.with, compaction.without
    local text = ("Without a rewrite the longest set took %s µs; p99.9 was %s µs with a rewrite and %s µs without."
      .. "\nA set waits for the rewrite for at most one chunk (256 keys or 64 KiB), unless the rewrite's"
      .. "\nthread is descheduled while it copies one."):format(us(wo.max), us(w.p999), us(wo.p999))
    if w.counted then
      text = text .. ("\nThe kernel preempted %d of the sets during a rewrite and %d without one; the longest set it"
        .. "\ndid not preempt took %s µs during a rewrite and %s µs without. %d and %d sets blocked on a lock"
        .. "\nor the disk. On %s cores the caller, the flusher and the rewrite's thread (and whatever else runs"
        .. "\non the machine) take turns."):format(w.preempted, wo.preempted, us(w.calm_max), us(wo.calm_max),
        w.waited, wo.waited, machine.cores)
    end
    local e = compaction.empty
    text = text .. ("\nThe same loop timing a spin as long as the median set had %d of %d spins over 1 ms, the longest"
      .. "\n%s µs (the sets: %d with a rewrite, %d without)."):format(compaction.over_1ms.empty, e.n, us(e.max),
      compaction.over_1ms.with, compaction.over_1ms.without)
    if compaction.steal then
      text = text .. (" The hypervisor gave %.0f ms of this machine's CPU time to others"
        .. "\nduring the timed loops (steal, /proc/stat)."):format(compaction.steal * 1000)
    end
    text = text .. "\nA pause the machine makes during a spin is one no store call can avoid."
    if w.counted then
      local function faults(r)
        return ("%d took %.3f s and %d page faults (%.3f s at %.1f µs each, measured above)"):format(r.slow,
          r.slow_s, r.slow_faults, r.slow_faults * open.fault_cost, open.fault_cost * 1e6)
      end
      text = text .. ("\nOf the sets over 1 ms, without a rewrite %s; with one %s. A fault maps a fresh page"
        .. "\nthe thread touches for the first time."):format(faults(wo), faults(w))
    end
    return text
  end)
target("memory per key ≤ 112 B, small mixed values", ("%.1f B"):format(open.h_rss), open.h_rss <= 112,
  why_memory)
for _, op in ipairs({ "get", "set" }) do
  local text = ("nginx over HTTP, %s: cost beyond a no-op ≥ 1.3x lower than ngx.shared.DICT + cjson"):format(op)
  local h, d
  if http then
    for _, l in ipairs(http.locations) do
      if l.id == "hurrahdb-" .. op then h = l elseif l.id == "dict-" .. op then d = l end
    end
  end
  if h and d and h.cpu_cost and d.cpu_cost and http_errors == 0 and http.error_log == 0 then
    if h.cpu_cost > 0 and d.cpu_cost > 0 then
      target(text, ("%.2fx (%.2f vs %.2f µs of worker CPU)"):format(d.cpu_cost / h.cpu_cost,
        h.cpu_cost * 1e6, d.cpu_cost * 1e6), d.cpu_cost >= 1.3 * h.cpu_cost, function()
          return ("hurrahdb.worker added %.2f µs of worker CPU time per %s request to the no-op's %.2f µs,"
            .. "\nngx.shared.DICT + cjson %.2f µs."):format(h.cpu_cost * 1e6, op, http.locations[1].cpu.median * 1e6,
            d.cpu_cost * 1e6)
        end)
    else -- within the no-op's own variation: no ratio to speak of
      target(text, ("n/a (%.2f vs %.2f µs: not above the no-op's variation)"):format(h.cpu_cost * 1e6,
        d.cpu_cost * 1e6), nil)
    end
  else
    target(text, "n/a", nil)
  end
end

say("")
say("## Targets")
say("")
mark_start("targets")
say("| target | measured | |")
say("|---|---|---|")
local missed = 0
for _, t in ipairs(targets) do
  say("| %s | %s | %s |", t[1], t[2], check(t[3]))
  if t[3] == false then missed = missed + 1 end
end
mark_end("targets")
say("")
if missed == 0 then
  say("Every target is met in this run.")
else
  say("%d of %d targets are missed in this run.", missed, #targets)
end

if missed > 0 then
  say("")
  say("## Why the missed targets are missed")
  for _, t in ipairs(targets) do
    if t[3] == false then
      say("")
      say("**%s** (%s):", t[1], t[2])
      say("%s", t[4] and t[4]() or "no explanation measured by this run.")
    end
  end
end

local function find_all(name, gc)
  local t = {}
  for _, kind in ipairs(kinds) do t[kind.name] = find(results[kind.name].rows, name, gc) end
  return t
end
local ceil, alone, bound = find_all(CEILING), find_all(cjson_alone_case.name), find_all(BOUND)
local aofs, mem = find_all(AOF), find_all("hurrahdb memory-only")
local cjson_codec = find_all(AOF_CJSON)
local sync0 = find(results.mixed.rows, SYNC0)
local redis1 = find(results.mixed.rows, "Redis everysec, one command at a time")
local redisp = find(results.mixed.rows, "Redis everysec, pipelined by " .. PIPELINE)
local rb1 = find(results.mixed.rows, "redis-benchmark everysec, 1 connection, one command at a time")
local rbp = find(results.mixed.rows, "redis-benchmark everysec, 1 connection, pipelined by " .. PIPELINE)
local function share(part, whole) return ("%.0f%%"):format(100 * whole.median / part.median) end

say("")
say("## What bounds each figure")
say("")
say("- **The Lua table + cjson** spends most of its set in cjson.encode and most of its get in")
say("  cjson.decode: cjson alone (no store) takes %s, %s and %s of the ceiling's set time and %s,",
  share(alone.mixed.set, ceil.mixed.set), share(alone.strings.set, ceil.strings.set),
  share(alone.large.set, ceil.large.set), share(alone.mixed.get, ceil.mixed.get))
say("  %s and %s of its get time (small mixed, strings, 1 KB). hurrahdb's set does the same work", share(alone.strings.get, ceil.strings.get),
  share(alone.large.get, ceil.large.get))
say("  (its own encoder, then a copy into its table and the AOF buffer), and its get builds the same")
say("  Lua tables from text, so both are bounded by encoding and by building Lua tables; what they")
say("  save or add is the rest: the hash, the copies, the checks that make a value exact.")
say("- **The Lua table of the values** serialises nothing: its set stores a reference and its get")
say("  returns the stored table (%.1fx to %.1fx the ceiling's get here), a bound no serialising store",
  math.min(bound.mixed.get.median / ceil.mixed.get.median, bound.large.get.median / ceil.large.get.median),
  math.max(bound.mixed.get.median / ceil.mixed.get.median, bound.large.get.median / ceil.large.get.median))
say("  reaches; a caller's changes to that table change the \"stored\" value.")
local ceil_stopped, aof_stopped = find_all(CEILING, "stopped"), find_all(AOF, "stopped")
say("- **The collector**: the Lua table's data lives in the Lua heap, so the collector marks it in")
say("  every cycle; hurrahdb's data lives outside it, and both make garbage on get (the tables they")
say("  return). With the collector stopped, the Lua table + cjson set %.0f and got %.0f small mixed", ceil_stopped.mixed.set.median,
  ceil_stopped.mixed.get.median)
say("  values a second (%.0f and %.0f with it running), hurrahdb's AOF store %.0f and %.0f (%.0f and", ceil.mixed.set.median,
  ceil.mixed.get.median, aof_stopped.mixed.set.median, aof_stopped.mixed.get.median, aofs.mixed.set.median)
say("  %.0f). How much collecting lands in a timed loop depends on the heap the loop starts with", aofs.mixed.get.median)
say("  (here the bench's own keys and values, and a full collection before each case).")
say("- **sync_time = 0** makes one `pwrite` and one `fdatasync` per `set`, the same system calls as")
say("  the C loop; what it does in memory takes about %.1f µs (the memory-only store's set p50) of", mem.mixed.p50 * 1e6)
say("  the %.0f µs a write takes here, so the two rows differ by the disk's variation, which they", sync0.p50 * 1e6)
say("  share by taking turns every %d writes.", RAW_CHUNK)
say("- **Set latency with sync_time = 1000**: the caller appends to a memory buffer under a lock the")
say("  flusher thread holds only to swap buffers; the write and fdatasync happen outside it. p99.9 is")
say("  %s µs for the small mixed values (the Lua table + cjson: %s µs; the memory-only store: %s µs).",
  us(aofs.mixed.p999), us(ceil.mixed.p999), us(mem.mixed.p999))
say("- **Redis one command at a time** waits for a loopback round trip per command: through lua-redis")
say("  %.0f sets/s and %.0f gets/s, redis-benchmark's C client on one connection %.0f and %.0f (small",
  redis1.set.median, redis1.get.median, rb1.set.median, rb1.get.median)
say("  mixed values). Pipelined by %d, lua-redis reaches %.0f sets/s and %.0f gets/s, redis-benchmark",
  PIPELINE, redisp.set.median, redisp.get.median)
say("  %.0f and %.0f: the pipelined Lua rows are bounded by the Lua client (building RESP, parsing", rbp.set.median, rbp.get.median)
say("  replies, cjson), the redis-benchmark rows by Redis and the loopback. hurrahdb's `set` and")
say("  `get` are function calls in the same process, with no round trip and no client.")
say("- **Memory per key** counts the same %d keys and values: hurrahdb's RSS growth includes", M)
say("  malloc's overhead; Redis's used_memory is its allocator's own count (its RSS is higher).")
say("- **Opening**: hurrahdb maps the file, checks all of it (each batch's line by its SipHash tag,")
say("  its records by their CRC-32C and their framing), sizes its table once for the SETs it holds,")
say("  then replays the records in groups whose memory it asks for ahead; its %.0f page faults, at", open.faults)
say("  the %.1f µs a fresh page costs a C loop here, would be about %.0f%% of the open. Redis parses the", open.fault_cost * 1e6,
  100 * open.faults * open.fault_cost / open.hurrahdb)
say("  same commands through its command table.")
if http then
  local noop = http.locations[1]
  say("- **Over HTTP** most of a request's cost is nginx and the HTTP exchange, which the no-op")
  say("  location measures (%.1f µs of worker CPU per request); the store's part is the cost beyond", noop.cpu.median * 1e6)
  local lo, hi = math.huge, -math.huge
  for _, loc in ipairs(http.locations) do
    if loc.cpu_cost then
      lo, hi = math.min(lo, loc.cpu_cost / noop.cpu.median), math.max(hi, loc.cpu_cost / noop.cpu.median)
    end
  end
  say("  it, %.0f%% to %.0f%% of that here, so a few percent of noise in the no-op's cost moves it much.", lo * 100, hi * 100)
  say("  The request rate is set by whichever of nginx and wrk runs out of CPU first, on the same %s", machine.cores)
  say("  cores: where it is wrk, every location gets about the same rate whatever the store costs.")
  say("  In a loop inside a worker the store calls alone are compared, without that fixed cost.")
end

say("")
say("## Orders of the cases")
say("")
say("Seed %d. Case numbers are the order of the cases in bench/bench.lua:", seed)
for _, case in ipairs(cases) do
  say("%d %s%s;", case.id, case.name, case.gc and " (GC stopped)" or "")
end
say("")
for _, kind in ipairs(kinds) do
  for r, order in ipairs(results[kind.name].orders) do
    say("- %s, round %d: %s", kind.name, r, table.concat(order, " "))
  end
end
if nginx_report then
  for r, order in ipairs(nginx_report.http.orders) do
    say("- HTTP, round %d: %s", r, table.concat(order, " "))
  end
  for _, kind in ipairs(kinds) do
    for r, order in ipairs(nginx_report.worker[kind.name].orders) do
      say("- in an nginx worker, %s, round %d: %s", kind.name, r, table.concat(order, ", "))
    end
  end
end

local results_md = opts.out .. "/RESULTS.md"
local f = assert(io.open(results_md, "w"))
f:write(table.concat(out, "\n"), "\n")
f:close()

---------------------------------------------------------------------------
-- README.md's summary of this run: between its two bench markers, when the
-- run writes into bench/ itself (a run with --out elsewhere leaves it be),
-- so that every figure the README gives is one of the last full run.
---------------------------------------------------------------------------

-- Ratios a / b of two cases of an expiry report, one per kind of value.
local function per_kind_ratio_pair(report, a, b)
  local t = {}
  for _, kind in ipairs(kinds) do
    local by = {}
    for _, r in ipairs(report[kind.name].cases) do by[r.name] = r.rate.median end
    t[#t + 1] = ("%.2f"):format(by[a] / by[b])
  end
  return table.concat(t, ", ")
end

local function readme_summary()
  local lines = {}
  local function put(fmt, ...) lines[#lines + 1] = select("#", ...) > 0 and fmt:format(...) or fmt end
  local function copy(name)
    for i = marks[name][1], marks[name][2] do lines[#lines + 1] = out[i] end
  end
  local function x(a, b) return a.median / b.median end
  local labels = {}
  for _, kind in ipairs(kinds) do labels[#labels + 1] = kind.label end
  local function per_kind(field)
    local t = {}
    for _, kind in ipairs(kinds) do t[#t + 1] = ("%.2f"):format(x(aofs[kind.name][field], ceil[kind.name][field])) end
    return table.concat(t, ", ")
  end
  put("The run in [bench/RESULTS.md](bench/RESULTS.md) (%s, seed %d) shows:", machine.date, seed)
  put("")
  put("- **Against a Lua table + cjson**, hurrahdb with its AOF (`sync_time = 1000`) sets %s", per_kind("set"))
  put("  times as fast and gets %s times as fast (%s).", per_kind("get"), table.concat(labels, ", "))
  local slower = {}
  for _, kind in ipairs(kinds) do
    for _, op in ipairs({ "set", "get" }) do
      if x(aofs[kind.name][op], ceil[kind.name][op]) < 1 then
        slower[#slower + 1] = ("%s of %s (%.2fx)"):format(op, kind.label, x(aofs[kind.name][op], ceil[kind.name][op]))
      end
    end
  end
  if #slower > 0 then
    put("  It is **slower** at the %s: RESULTS.md says what bounds it, from the run's own", table.concat(slower, ", "))
    put("  figures (instructions per set, the collector).")
  end
  if instructions then
    local t = {}
    for _, kind in ipairs(kinds) do
      local r = instructions[kind.name]
      t[#t + 1] = ("%.0f against %.0f"):format(r.hurrahdb, r.table)
    end
    put("  Counted by callgrind, a set takes %s instructions (%s).", table.concat(t, ", "),
      table.concat(labels, ", "))
  end
  put("- **A Lua table of the values** is faster than either by far (%.1f to %.1f times the Lua", math.min(
    x(bound.mixed.set, ceil.mixed.set), x(bound.strings.set, ceil.strings.set), x(bound.large.set, ceil.large.set)),
    math.max(x(bound.mixed.set, ceil.mixed.set), x(bound.strings.set, ceil.strings.set), x(bound.large.set, ceil.large.set)))
  put("  table + cjson at set, %.1f to %.1f at get): it serialises nothing and hands out the stored", math.min(
    x(bound.mixed.get, ceil.mixed.get), x(bound.strings.get, ceil.strings.get), x(bound.large.get, ceil.large.get)),
    math.max(x(bound.mixed.get, ceil.mixed.get), x(bound.strings.get, ceil.strings.get), x(bound.large.get, ceil.large.get)))
  put("  table. hurrahdb is for data that must outlive the process and come back as an exact copy.")
  local function ratios(a, b, field)
    local t = {}
    for _, kind in ipairs(kinds) do t[#t + 1] = ("%.2f"):format(x(a[kind.name][field], b[kind.name][field])) end
    return table.concat(t, ", ")
  end
  put("- **With `codec = \"cjson\"`** the same AOF store sets %s and gets %s times as fast as", ratios(cjson_codec, ceil, "set"),
    ratios(cjson_codec, ceil, "get"))
  put("  the Lua table + cjson: it does cjson's own work, then the store's (a call into Lua, the text made")
  put("  a Lua string, then copied into the table and the AOF). The default codec sets %s and gets", ratios(aofs, cjson_codec, "set"))
  put("  %s times as fast as `\"cjson\"` (%s).", ratios(aofs, cjson_codec, "get"), table.concat(labels, ", "))
  put("- **Redis** answers a command at a time after a round trip on loopback (%.0f sets a second", redis1.set.median)
  put("  through lua-redis here, %.0f with redis-benchmark's C client). Pipelined by %d, Redis's own", rb1.set.median, PIPELINE)
  put("  figure (redis-benchmark) is %.0f sets and %.0f gets of small values a second; lua-redis", rbp.set.median, rbp.get.median)
  put("  reaches %.0f and %.0f, bounded by the client. hurrahdb's AOF store, in the same process, did", redisp.set.median,
    redisp.get.median)
  put("  %.0f sets and %.0f gets a second: %.1f and %.1f times Redis's pipelined figures. Redis serves",
    aofs.mixed.set.median, aofs.mixed.get.median, x(aofs.mixed.set, rbp.set), x(aofs.mixed.get, rbp.get))
  put("  many processes; a hurrahdb store serves the one that opened it.")
  if http then
    local by = {}
    for _, loc in ipairs(http.locations) do by[loc.id] = loc end
    local function cost(id)
      local c = by[id].cpu_cost
      if not c or c <= 0 then return "no more than the no-op's own variation" end
      return ("%.2f µs"):format(c * 1e6)
    end
    put("- **In nginx over HTTP** (2 workers, wrk on the same %s cores), a request to the location", machine.cores)
    put("  that does nothing costs the workers %.2f µs of CPU. The store adds %s to a get through",
      by.noop.cpu.median * 1e6, cost("hurrahdb-get"))
    put("  `hurrahdb.worker` and %s through `ngx.shared.DICT` + cjson; %s and %s to a set",
      cost("dict-get"), cost("hurrahdb-set"), cost("dict-set"))
    put("  (the workers used %.2f to %.2f of the %s cores in these runs: CPU per request is higher when",
      math.min(by.noop.busy, by["hurrahdb-get"].busy, by["dict-get"].busy, by["hurrahdb-set"].busy, by["dict-set"].busy),
      math.max(by.noop.busy, by["hurrahdb-get"].busy, by["dict-get"].busy, by["hurrahdb-set"].busy, by["dict-set"].busy),
      machine.cores)
    put("  they are idle more, so locations compare only as far as they are equally busy).")
    put("  Whole requests ran at %.0f (no-op), %.0f and %.0f (get), %.0f and %.0f (set) a second.",
      by.noop.rate.median, by["hurrahdb-get"].rate.median, by["dict-get"].rate.median,
      by["hurrahdb-set"].rate.median, by["dict-set"].rate.median)
    local w = nginx_report.worker.mixed
    local wby = {}
    for _, r in ipairs(w.cases) do wby[r.name] = r end
    local hw, dw = wby[AOF], wby["ngx.shared.DICT + cjson"]
    put("  In a loop inside one worker, without HTTP, the store calls alone set %.2f and get %.2f", x(hw.set, dw.set),
      x(hw.get, dw.get))
    put("  times as fast as the shared dictionary's with cjson (small mixed values).")
  end
  put("- **Opening** the %d-key file takes %.3f s, %.2f times less than Redis takes to load the", M, open.hurrahdb,
    open.redis / open.hurrahdb)
  put("  same file; its %.0f page faults would take about %.0f%% of that at what a fresh page costs a C", open.faults,
    100 * open.faults * open.fault_cost / open.hurrahdb)
  put("  loop here (%.1f µs). With glibc's malloc on", open.fault_cost * 1e6)
  put("  transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`) it takes %.3f s (%.2fx).", open.thp,
    open.redis / open.thp)
  put("  The store holds %.1f B per key (RSS), %.2f of Redis's %.1f B.", open.h_rss, open.h_rss / open.r_mem, open.r_mem)
  put("- **Compaction**: a rewrite of the %d-key store wrote %.0f MB/s (%.2f of the disk's sequential", M,
    compaction.rate / 1e6, compaction.rate / compaction.dd)
  put("  write, %.0f MB/s by dd here), %.0f keys a second. While it ran, sets took %s µs at p50, %s at", compaction.dd / 1e6,
    compaction.keys_rate, us(compaction.with.p50), us(compaction.with.p999))
  put("  p99.9 and %s at most (%s, %s and %s without a rewrite; the longest set the kernel did not", us(compaction.with.max),
    us(compaction.without.p50), us(compaction.without.p999), us(compaction.without.max))
  put("  preempt: %s and %s µs). The rewrite raised a fresh process's peak resident size by %s.",
    us(compaction.with.calm_max), us(compaction.without.calm_max),
    compaction.extra_rss and ("%.2f MiB"):format(compaction.extra_rss / 2^20) or "n/a")
  put("  1,000 keys overwritten 2,000 times")
  put("  left a %.1f MB file that opened in %.3f s; rewritten, %.1f KB, opened in %.4f s. With the", compaction.over_before / 1e6,
    compaction.open_before, compaction.over_after / 1e3, compaction.open_after)
  put("  default automatic rewrites the same workload ended with a %.1f MB file (%d rewrites).", compaction.auto_size / 1e6,
    compaction.auto_rewrites)
  do
    local per_kind_ratio = per_kind_ratio_pair
    put("- **Expiry, counters, eviction** (against the same store's plain set or get, %s): a set", table.concat(labels, ", "))
    put("  with a ttl runs at %s of a set, `incr` at %s, a set that evicts (at `max_memory`, lru) at",
      per_kind_ratio(expiry_report, "set ttl", "set"), per_kind_ratio(expiry_report, "incr", "set"))
    put("  %s; a get where half the keys have expired at %s of a get.",
      per_kind_ratio(expiry_report, "set at max_memory, lru", "set"),
      per_kind_ratio(expiry_report, "get, half expired", "get"))
    if nginx_report and nginx_report.worker.expiry then
      local er = nginx_report.worker.expiry
      put("  In an nginx worker, against `ngx.shared.DICT` (+ cjson for values): set %s, set with a ttl",
        per_kind_ratio_pair(er, "set", "DICT set"))
      put("  %s, set into a full store %s, `incr` %s times as fast.",
        per_kind_ratio_pair(er, "set ttl", "DICT set exptime"),
        per_kind_ratio_pair(er, "set at max_memory, lru", "DICT set, full zone"),
        per_kind_ratio_pair(er, "incr", "DICT incr"))
    end
  end
  local met, missed_list = 0, {}
  for _, t in ipairs(targets) do
    if t[3] then met = met + 1 elseif t[3] == false then missed_list[#missed_list + 1] = t[1] .. " (" .. t[2] .. ")" end
  end
  put("- **Targets**: %d of %d are met%s.", met, #targets, #missed_list > 0 and ("; missed: " .. table.concat(missed_list, "; ")
    .. ". RESULTS.md gives the cause of each, measured in the same run") or "")
  put("")
  put("![operations per second of each case, log scale](bench/results.png)")
  put("")
  copy("machine")
  put("")
  put("hurrahdb and the bounds against the Lua table + cjson (ratios of the medians of operations per")
  put("second in this run; the rates themselves are in RESULTS.md):")
  put("")
  put("| case | small mixed set | get | small strings set | get | 1 KB set | get |")
  put("|---|---:|---:|---:|---:|---:|---:|")
  for _, name in ipairs({ CEILING, BOUND, cjson_alone_case.name, "hurrahdb memory-only", AOF, AOF_CJSON }) do
    local cells = {}
    for _, kind in ipairs(kinds) do
      local r, c = find(results[kind.name].rows, name), ceil[kind.name]
      cells[#cells + 1] = ratio(r.set, c.set)
      cells[#cells + 1] = ratio(r.get, c.get)
    end
    put("| %s | %s |", name, table.concat(cells, " | "))
  end
  put("")
  put("Targets:")
  put("")
  copy("targets")
  return lines
end

local readme = script_dir() .. "/../README.md"
if opts.out == script_dir() then
  local rf = io.open(readme)
  local text = rf and rf:read("a")
  if rf then rf:close() end
  local BEGIN, END = "<!-- bench:begin (written by make bench) -->", "<!-- bench:end -->"
  local a, b = text and text:find(BEGIN, 1, true), text and text:find(END, 1, true)
  if a and b and b > a then
    text = text:sub(1, a + #BEGIN) .. table.concat(readme_summary(), "\n") .. "\n" .. text:sub(b)
    rf = assert(io.open(readme, "w"))
    rf:write(text)
    rf:close()
    io.stderr:write("updated the summary in README.md\n")
  else
    io.stderr:write("README.md has no bench markers: its summary is not updated\n")
  end
end

-- The plot: operations per second per case, log scale, a panel per kind of
-- value, and requests per second over HTTP.
local gp_plots = {}
for k, kind in ipairs(kinds) do
  local dat = ("%s.%d.dat"):format(tmp, k)
  local d = assert(io.open(dat, "w"))
  for _, r in ipairs(results[kind.name].rows) do
    if not r.case.gc then
      d:write(('"%s"\t%s\t%s\n'):format((r.case.short:gsub("\\n", " ")), r.set.median, r.get.median))
    end
  end
  d:close()
  gp_plots[#gp_plots + 1] = ([[
set title "%s (%d B of JSON)"
plot '%s' using 2:xtic(1) title "set" lc rgb "#3b6ea8", '' using 3 title "get" lc rgb "#e0913a"
]]):format(kind.label, kind.json_bytes, dat)
end
if http then
  local dat = tmp .. ".http.dat"
  local d = assert(io.open(dat, "w"))
  for _, loc in ipairs(http.locations) do
    d:write(('"%s"\t%s\n'):format((loc.short:gsub("\\n", " ")), loc.cpu.median * 1e6))
  end
  d:close()
  gp_plots[#gp_plots + 1] = ([[
unset logscale y
set format y "%%.0f"
set yrange [0:*]
set ylabel "worker CPU time per request, µs (lower is better)"
set title "nginx over HTTP, 2 workers, wrk (small mixed values)"
plot '%s' using 2:xtic(1) title "µs per request" lc rgb "#5a9e5a"
]]):format(dat)
end
local png = opts.out .. "/results.png"
local gp = assert(io.open(tmp .. ".gp", "w"))
gp:write(([[
set terminal pngcairo size 1800,1500 font "Sans,10"
set output '%s'
set datafile separator "\t"
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set format y "10^{%%L}"
set yrange [100:*]
set grid ytics
set xtics scale 0 font ",9" rotate by 35 right
set bmargin 9
set ylabel "operations per second (log scale)"
set key top right
set multiplot layout 2,2 title "hurrahdb and the alternatives, one run (%s, %s cores, seed %d)"
%s
unset multiplot
]]):format(png, machine.cpu, machine.cores, seed, table.concat(gp_plots)))
gp:close()
local plotted = os.execute("gnuplot " .. quote(tmp .. ".gp"))
os.execute("rm -f " .. quote(tmp) .. ".*")

print(table.concat(out, "\n"))
print()
print("wrote " .. results_md .. (plotted and (" and " .. png) or " (gnuplot failed: no plot)"))
