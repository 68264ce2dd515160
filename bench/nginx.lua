-- `make bench`, inside nginx: starts Debian's nginx (libnginx-mod-http-lua,
-- LuaJIT) with one worker on a free loopback port in a temporary prefix, has
-- that worker run bench/nginx_worker.lua, prints the table and stops nginx.
--
-- Usage: lua5.4 bench/nginx.lua <dir of the LuaJIT hurrahdb.so> [--keys N] [--rounds R]

local socket = require "socket"
local cjson = require "cjson"

local cpath = arg[1]
local opts = { keys = 200000, rounds = 5 }
for i = 2, #arg, 2 do
  local name = arg[i]:match("^%-%-(.+)$")
  if not name or not opts[name] or not tonumber(arg[i + 1]) then
    io.stderr:write("usage: nginx.lua <luajit module dir> [--keys N] [--rounds R]\n")
    os.exit(2)
  end
  opts[name] = tonumber(arg[i + 1])
end
if not cpath then
  io.stderr:write("usage: nginx.lua <luajit module dir> [--keys N] [--rounds R]\n")
  os.exit(2)
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end
local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local prefix = sh("mktemp -d /tmp/hurrahdb-bench.XXXXXX"):gsub("%s+$", "")
assert(prefix:match("^/tmp/hurrahdb%-bench%.%w+$"), "mktemp failed")
assert(os.execute("mkdir -p " .. prefix .. "/logs " .. prefix .. "/data " .. prefix .. "/conf"))
local bench_dir = sh("cd " .. quote(arg[0]:match("^(.*)/[^/]*$") or ".") .. " && pwd"):gsub("%s+$", "")

local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
server:close()

local conf = ([[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
%s
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log warn;
events { worker_connections 16; }
http {
    access_log off;
    lua_package_path "%s/?.lua;;";
    lua_package_cpath "%s/?.so;;";
    lua_shared_dict bench 512m;
    server {
        listen 127.0.0.1:%d;
        location = /bench {
            content_by_lua_block {
                local results = require("nginx_worker").run {
                    keys = %d, rounds = %d, dict = "bench", dir = ngx.config.prefix() .. "data",
                }
                ngx.say(require("cjson").encode(results))
            }
        }
    }
}
]]):format(sh("id -u"):match("^0%s") and "user root root;" or "", bench_dir, cpath, port,
  opts.keys, opts.rounds)
local f = assert(io.open(prefix .. "/conf/nginx.conf", "w"))
f:write(conf)
f:close()

local nginx = "/usr/sbin/nginx -p " .. quote(prefix .. "/") .. " -c conf/nginx.conf -e logs/error.log"
local function finish(code)
  os.execute(nginx .. " -s stop >/dev/null 2>&1")
  socket.sleep(0.2)
  os.execute("rm -rf " .. quote(prefix))
  os.exit(code)
end

local out = sh(nginx)
local sock
for _ = 1, 250 do
  sock = socket.tcp()
  if sock:connect("127.0.0.1", port) then break end
  sock:close()
  sock = nil
  socket.sleep(0.02)
end
if not sock then
  io.stderr:write("nginx did not start: " .. out .. "\n")
  finish(1)
end
sock:settimeout(600)
sock:send("GET /bench HTTP/1.0\r\nHost: localhost\r\n\r\n")
local response = sock:receive("*a") or ""
sock:close()
local body = response:match("\r\n\r\n(.*)$") or ""
local ok, report = pcall(cjson.decode, body)
if not ok or type(report) ~= "table" or type(report.cases) ~= "table" then
  io.stderr:write("the benchmark failed:\n" .. response .. "\n")
  local log = io.open(prefix .. "/logs/error.log")
  if log then io.stderr:write(log:read("a")) log:close() end
  finish(1)
end

local results = report.cases
local function find(name)
  for _, r in ipairs(results) do if r.name == name then return r end end
end
local ceiling = find("Lua table + cjson (ceiling)")
local dict = find("ngx.shared.DICT + cjson")
print(("inside one nginx worker (%s, LuaJIT), %d keys, values like {value=\"some-value\", n=42, "
  .. "tags={\"a\",\"b\"}}; median of %d rounds"):format(
  sh("/usr/sbin/nginx -v"):match("nginx/[%d.]+") or "nginx", opts.keys, opts.rounds))
print()
print("| case (LuaJIT, in nginx) | set/s | get/s | set vs DICT | get vs DICT | set vs ceiling | get vs ceiling |")
print("|---|---:|---:|---:|---:|---:|---:|")
for _, r in ipairs(results) do
  print(("| %s | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f |"):format(r.name, r.set, r.get,
    r.set / dict.set, r.get / dict.get, r.set / ceiling.set, r.get / ceiling.get))
end
print()
print(("The DICT + cjson get in two halves: dict:get alone %.0f/s, cjson.decode of the fetched text "
  .. "alone %.0f/s."):format(report.parts.dict_get, report.parts.decode))
finish(0)
