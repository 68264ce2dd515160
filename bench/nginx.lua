-- `make bench`, inside nginx (Debian's nginx with libnginx-mod-http-lua,
-- LuaJIT), in two servers started here on free loopback ports, each in a
-- temporary prefix, one after the other:
--
--   1. one worker running bench/nginx_worker.lua: set and get in a loop
--      inside the worker, for each kind of value;
--   2. two workers serving bench/nginx_http.lua's locations (a no-op, and
--      get and set through hurrahdb.worker and through ngx.shared.DICT +
--      cjson), driven over HTTP by wrk (bench/nginx_wrk.lua), the five
--      locations in a new random order in each round.
--
-- Prints the figures as JSON on stdout, for bench/bench.lua's report.
--
-- Usage: lua5.4 bench/nginx.lua <dir of the LuaJIT hurrahdb.so> [--keys N]
--          [--rounds R] [--seed S] [--http-rounds R] [--http-seconds T]

local socket = require "socket"
local cjson = require "cjson"
local hurrahdb = require "hurrahdb" -- this Lua's build: writes the workers' files

local USAGE = "usage: nginx.lua <luajit module dir> [--keys N] [--rounds R] [--seed S]"
  .. " [--http-rounds R] [--http-seconds T]\n"
local cpath = arg[1]
local opts = { keys = 200000, rounds = 5, seed = 1, ["http-rounds"] = 10, ["http-seconds"] = 2 }
for i = 2, #arg, 2 do
  local name = arg[i]:match("^%-%-(.+)$")
  if not name or not opts[name] or not math.tointeger(tonumber(arg[i + 1])) then
    io.stderr:write(USAGE)
    os.exit(2)
  end
  opts[name] = math.tointeger(tonumber(arg[i + 1]))
end
if not cpath then
  io.stderr:write(USAGE)
  os.exit(2)
end

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local rounds_lib = require "rounds"
local kinds = require "kinds"

local WRK_CONNECTIONS = 32
local WRK_MAX_PER_SECOND = 1000000 -- the request bound of a run, per second of it

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end
local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function log(...) io.stderr:write(string.format(...), "\n") end

-- wrk gives up on a connection whose descriptor number is above its own
-- event loop's size (about three per connection): descriptors inherited
-- from this process would make its connections fail. Count them.
do
  local fds = sh("ls -l /proc/$PPID/fd")
  local n = select(2, fds:gsub("\n", "")) - 1
  if n > 16 then
    log("bench/nginx.lua runs with %d open descriptors (wrk's connections may fail):\n%s", n, fds)
  end
end

local bench_dir = sh("cd " .. quote(arg[0]:match("^(.*)/[^/]*$") or ".") .. " && pwd"):gsub("%s+$", "")
local lua_dir = bench_dir:gsub("/bench$", "") .. "/lua"
local user = sh("id -u"):match("^0%s") and "user root root;" or ""

local servers = {} -- started and not yet stopped
local stop
-- Whatever ends this script, an error included: no nginx left running.
local guard <close> = setmetatable({}, { __close = function()
  for server in pairs(servers) do pcall(stop, server) end
end })

function stop(server)
  os.execute(server.nginx .. " -s stop >/dev/null 2>&1")
  for _ = 1, 250 do -- until the master has gone (its workers close their stores)
    local f = io.open(server.prefix .. "/logs/nginx.pid")
    if not f then break end
    f:close()
    socket.sleep(0.02)
  end
  os.execute("rm -rf " .. quote(server.prefix))
  servers[server] = nil
end

local function fail(msg, server)
  io.stderr:write(msg, "\n")
  if server then
    local f = io.open(server.prefix .. "/logs/error.log")
    if f then io.stderr:write(f:read("a")) f:close() end
  end
  for s in pairs(servers) do stop(s) end
  os.exit(1)
end

-- A new prefix (logs/, data/, conf/), before the server starts.
local function new_prefix()
  local prefix = sh("mktemp -d /tmp/hurrahdb-bench.XXXXXX"):gsub("%s+$", "")
  assert(prefix:match("^/tmp/hurrahdb%-bench%.%w+$"), "mktemp failed")
  assert(os.execute("mkdir -p " .. prefix .. "/logs " .. prefix .. "/data " .. prefix .. "/conf"))
  return prefix
end

-- Starts nginx in prefix with conf (a format string given the port); returns
-- the server once its port answers.
local function start(prefix, conf)
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  local f = assert(io.open(prefix .. "/conf/nginx.conf", "w"))
  f:write(conf:format(port))
  f:close()
  local server = {
    prefix = prefix, port = port,
    nginx = "/usr/sbin/nginx -p " .. quote(prefix .. "/") .. " -c conf/nginx.conf -e logs/error.log",
  }
  servers[server] = true
  local out = sh(server.nginx)
  for _ = 1, 500 do
    local sock = socket.tcp()
    if sock:connect("127.0.0.1", port) then
      sock:close()
      return server
    end
    sock:close()
    socket.sleep(0.02)
  end
  fail("nginx did not start: " .. out, server)
end

-- GET path over a new connection: status, body.
local function get(server, path, timeout)
  local sock = socket.tcp()
  sock:settimeout(timeout or 10)
  assert(sock:connect("127.0.0.1", server.port))
  sock:send("GET " .. path .. " HTTP/1.0\r\nHost: localhost\r\n\r\n")
  local response = sock:receive("*a") or ""
  sock:close()
  return tonumber(response:match("^HTTP/%S+ (%d+)")), response:match("\r\n\r\n(.*)$") or "", response
end

local HEAD = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
]] .. user .. "\n" .. [[
pid logs/nginx.pid;
error_log logs/error.log warn;
]]

---------------------------------------------------------------------------
-- 1. In a loop inside one worker
---------------------------------------------------------------------------

log("nginx: loops inside one worker")
local worker_report
do
  local prefix = new_prefix()
  local server = start(prefix, HEAD .. ([[
worker_processes 1;
events { worker_connections 16; }
http {
    access_log off;
    lua_package_path "%s/?.lua;;";
    lua_package_cpath "%s/?.so;;";
    lua_shared_dict bench 512m;
    lua_shared_dict bench_full 4m;
    server {
        listen 127.0.0.1:%%d;
        location = /bench {
            content_by_lua_block {
                local report = require("nginx_worker").run {
                    keys = %d, rounds = %d, seed = %d, dict = "bench",
                    dir = ngx.config.prefix() .. "data",
                }
                ngx.say(require("cjson").encode(report))
            }
        }
    }
}
]]):format(bench_dir, cpath, opts.keys, opts.rounds, opts.seed))
  local status, body, response = get(server, "/bench", 1800)
  local ok, report = pcall(cjson.decode, body)
  if status ~= 200 or not ok or type(report) ~= "table" then
    fail("the loops inside nginx failed:\n" .. response, server)
  end
  worker_report = report
  stop(server)
end

---------------------------------------------------------------------------
-- 2. Over HTTP: 2 workers, wrk
---------------------------------------------------------------------------

log("nginx: over HTTP with wrk")
local N = opts.keys
local prefix = new_prefix()

-- Keys preloaded: each worker's file is written here, before nginx starts
-- (the same file for both: each worker has its own store, and a request
-- may reach either); the DICT is filled in init_by_lua, in the master.
do
  local value = kinds[1].value
  local path = prefix .. "/data/worker-0.aof"
  local db = assert(hurrahdb.new { path = path, sync_time = 1000 })
  for i = 1, N do assert(db:set("user:" .. i, value(i))) end
  assert(db:close())
  assert(os.execute("cp " .. quote(path) .. " " .. quote(prefix .. "/data/worker-1.aof")))
end

local dict_mb = 16 + N * 600 // (1024 * 1024)
local server = start(prefix, HEAD .. ([[
worker_processes 2;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 100000000;
    lua_package_path "%s/?.lua;%s/?.lua;;";
    lua_package_cpath "%s/?.so;;";
    lua_shared_dict store %dm;
    init_by_lua_block { require("nginx_http").preload_dict("store", %d) }
    init_worker_by_lua_block { require("nginx_http").init(ngx.config.prefix() .. "data", "store") }
    exit_worker_by_lua_block { require("hurrahdb.worker").exit() }
    server {
        listen 127.0.0.1:%%d reuseport;
        location = /nop/nop { content_by_lua_block { require("nginx_http").noop() } }
        location = /hdb/get { content_by_lua_block { require("nginx_http").hurrahdb_get() } }
        location = /shd/get { content_by_lua_block { require("nginx_http").dict_get() } }
        location = /hdb/set { content_by_lua_block { require("nginx_http").hurrahdb_set() } }
        location = /shd/set { content_by_lua_block { require("nginx_http").dict_set() } }
    }
}
]]):format(bench_dir, lua_dir, cpath, dict_mb, N))

local locations = {
  { id = "noop", path = "/nop/nop", name = "no-op (fixed body)", short = "no-op" },
  { id = "hurrahdb-get", path = "/hdb/get", name = "get, hurrahdb.worker (AOF, sync_time = 1000)",
    short = "get\\nhurrahdb", peer = "dict-get" },
  { id = "dict-get", path = "/shd/get", name = "get, ngx.shared.DICT + cjson", short = "get\\nDICT + cjson" },
  { id = "hurrahdb-set", path = "/hdb/set", name = "set, hurrahdb.worker (AOF, sync_time = 1000)",
    short = "set\\nhurrahdb", peer = "dict-set" },
  { id = "dict-set", path = "/shd/set", name = "set, ngx.shared.DICT + cjson", short = "set\\nDICT + cjson" },
}

-- Every location answers, on several connections (either worker).
for _, loc in ipairs(locations) do
  for i = 1, 8 do
    local status, body = get(server, ("%s?k=user:%d&n=%d"):format(loc.path, i % N + 1, i % N + 1))
    if status ~= 200 or body ~= "some-value" then
      fail(("%s answered %s %q"):format(loc.path, tostring(status), body), server)
    end
  end
end

-- The CPU time the workers have used so far, all their threads (a store's
-- flusher included), in seconds: the first field of each thread's
-- schedstat (nanoseconds on a CPU), or the process's utime + stime in clock
-- ticks where the kernel keeps no schedstat.
local function read_first_line(path)
  local f = io.open(path)
  if not f then return nil end
  local line = f:read("l")
  f:close()
  return line
end
local function worker_pids()
  local master = tonumber(read_first_line(prefix .. "/logs/nginx.pid") or "")
  local pids = {}
  for pid in sh("pgrep -P " .. tostring(master)):gmatch("%d+") do pids[#pids + 1] = pid end
  return pids
end
local TICK = 1 / (tonumber(sh("getconf CLK_TCK")) or 100)
local function workers_cpu(pids)
  local total = 0
  for _, pid in ipairs(pids) do
    local tasks = sh("ls /proc/" .. pid .. "/task")
    local sched = 0
    for tid in tasks:gmatch("%d+") do
      local line = read_first_line(("/proc/%s/task/%s/schedstat"):format(pid, tid))
      if not line then sched = nil break end
      sched = sched + tonumber(line:match("^(%d+)")) / 1e9
    end
    if sched and tasks:match("%d") then
      total = total + sched
    else
      local stat = read_first_line("/proc/" .. pid .. "/stat") or ""
      local fields = {}
      for w in stat:gsub("^.*%) ", ""):gmatch("%S+") do fields[#fields + 1] = w end
      total = total + ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) * TICK
    end
  end
  return total
end
local pids = worker_pids()
if #pids ~= 2 then fail(("expected 2 nginx workers, found %d"):format(#pids), server) end

local seconds = opts["http-seconds"]
local max_requests = WRK_MAX_PER_SECOND * seconds
local ERROR_KINDS = { "connect", "read", "write", "status", "timeout" }
local errors, bounded = { connect = 0, read = 0, write = 0, status = 0, timeout = 0 }, 0
local runs = {} -- runs[id][round] = { rate, p50, p99 }
for _, loc in ipairs(locations) do runs[loc.id] = {} end
local orders = rounds_lib.run(locations, opts["http-rounds"], function(loc, round)
  log("nginx over HTTP, round %d: %s", round, loc.path)
  local cpu0 = workers_cpu(pids)
  local out = sh(("timeout -k 5 %d wrk -t 1 -c %d -d %ds --timeout 5s -s %s http://127.0.0.1:%d%s -- %s %d %d %d")
    :format(seconds + 30, WRK_CONNECTIONS, seconds, quote(bench_dir .. "/nginx_wrk.lua"), server.port,
      loc.path, loc.path, N, opts.seed + round, max_requests))
  local line = out:match("HURRAHDB_WRK ([%d ]+)")
  if not line then fail("wrk failed:\n" .. out, server) end
  local f = {}
  for x in line:gmatch("%d+") do f[#f + 1] = tonumber(x) end
  local requests, duration, p50, p99 = f[1], f[2], f[3], f[4]
  local cpu = workers_cpu(pids) - cpu0
  if requests == 0 or duration == 0 then fail("wrk made no requests:\n" .. out, server) end
  local errs = 0
  for i, kind in ipairs(ERROR_KINDS) do
    errors[kind] = errors[kind] + f[4 + i]
    errs = errs + f[4 + i]
  end
  if errs > 0 then
    log("wrk counted %d errors:\n%s\nlisteners on that port:\n%s", errs, out,
      sh("ss -ltnp 'sport = :" .. server.port .. "'"))
  end
  if requests >= max_requests then bounded = bounded + 1 end
  runs[loc.id][round] = { rate = requests / (duration / 1e6), p50 = tonumber(p50), p99 = tonumber(p99),
                          cpu = cpu / math.max(requests, 1), busy = cpu / (duration / 1e6) }
end)
-- Lines of the error log at level error or worse: none is expected.
local error_log = prefix .. "/logs/error.log"
local error_lines = tonumber(sh("grep -c -e '\\[error\\]' -e '\\[crit\\]' -e '\\[alert\\]' -e '\\[emerg\\]' "
  .. quote(error_log)):match("%d+")) or 0
if error_lines > 0 then
  io.stderr:write(sh("tail -20 " .. quote(error_log)))
end
stop(server)

local median = rounds_lib.median

for _, loc in ipairs(locations) do
  local rates, p50s, p99s, costs, cpus, cpu_costs, busy = {}, {}, {}, {}, {}, {}, {}
  for r, run in ipairs(runs[loc.id]) do
    rates[r], p50s[r], p99s[r], cpus[r], busy[r] = run.rate, run.p50, run.p99, run.cpu, run.busy
    if loc.id ~= "noop" then
      costs[r] = 1 / run.rate - 1 / runs.noop[r].rate
      cpu_costs[r] = run.cpu - runs.noop[r].cpu
    end
  end
  loc.rate = rounds_lib.summarize(rates)
  loc.p50, loc.p99 = median(p50s), median(p99s)
  loc.cost = #costs > 0 and median(costs) or nil
  loc.cpu = rounds_lib.summarize(cpus)
  loc.busy = median(busy)
  loc.cpu_cost = #cpu_costs > 0 and median(cpu_costs) or nil
  loc.path = nil
end

-- A number that is not finite (a run with no requests, say) is a failure
-- to report, with where it is, not a figure.
local function check_finite(x, where)
  if type(x) == "number" and (x ~= x or x == math.huge or x == -math.huge) then
    fail("not a finite figure: " .. where)
  elseif type(x) == "table" then
    for k, v in pairs(x) do check_finite(v, where .. "." .. tostring(k)) end
  end
end
check_finite(worker_report, "worker")
check_finite(locations, "http")

print(cjson.encode({
  rounds = opts.rounds,
  worker = worker_report,
  http = {
    keys = N, seconds = seconds, connections = WRK_CONNECTIONS, max_requests = max_requests,
    rounds = opts["http-rounds"], locations = locations, orders = orders,
    errors = errors, error_log = error_lines, bounded = bounded,
  },
}))
