-- A real nginx for the specs: Debian's nginx with libnginx-mod-http-lua,
-- started on a free loopback port in a temporary prefix with a generated
-- configuration, driven over HTTP/1.1 (keep-alive) with LuaSocket, and
-- stopped. Workers load hurrahdb from the LuaJIT build (HURRAHDB_LUAJIT_CPATH,
-- set by `make test`).

local socket = require "socket"
local helpers = require "spec.helpers"

local M = {}

local NGINX = "/usr/sbin/nginx"
local LUA_MODULE = "/usr/lib/nginx/modules/ngx_http_lua_module.so"

-- Raises with the reason if nginx cannot run the specs here.
function M.check_installed()
  assert(helpers.file_exists(NGINX), NGINX .. " is missing: run `make test`, which installs nginx")
  assert(helpers.file_exists(LUA_MODULE),
    LUA_MODULE .. " is missing: run `make test`, which installs libnginx-mod-http-lua")
  local cpath = os.getenv("HURRAHDB_LUAJIT_CPATH")
  assert(cpath, "HURRAHDB_LUAJIT_CPATH is not set: run the specs with `make test`")
  return cpath
end

local Server = {}
Server.__index = Server

-- Creates a prefix directory holding logs/, data/, the example worker module
-- and conf/nginx.conf made from `conf` (the text of an nginx.conf whose
-- `listen 127.0.0.1:8080` is replaced by a free port). Returns the server,
-- not yet started.
function M.new(conf, options)
  options = options or {}
  local cpath = M.check_installed()
  local prefix = helpers.tmpdir()
  assert(helpers.execute("mkdir -p " .. prefix .. "/logs " .. prefix .. "/data " .. prefix .. "/conf"))
  local port = helpers.free_port()
  local text = conf:gsub("listen 127%.0%.0%.1:8080", "listen 127.0.0.1:" .. port, 1)
  assert(text ~= conf, "the configuration has no `listen 127.0.0.1:8080` to replace")
  -- This checkout's LuaJIT build and Lua modules (hurrahdb.worker), and as
  -- root, workers that may write the spec's private directory.
  local head = ""
  if helpers.capture("id -u"):match("^0%s") then head = "user root root;\n" end
  local lua_dir = helpers.capture("pwd"):gsub("%s+$", "") .. "/lua"
  text = head .. text:gsub("http {", "http {\n    lua_package_cpath \"" .. cpath .. "/?.so;;\";"
    .. "\n    lua_package_path \"" .. lua_dir .. "/?.lua;;\";", 1)
  helpers.write_file(prefix .. "/conf/nginx.conf", text)
  return setmetatable({ prefix = prefix, port = port, options = options }, Server)
end

local function nginx_command(self, args)
  return string.format("%s -p %s -c conf/nginx.conf -e logs/error.log %s",
    NGINX, helpers.shell_quote(self.prefix .. "/"), args or "")
end

function Server:master_pid()
  local pid = helpers.read_file(self.prefix .. "/logs/nginx.pid")
  return pid and tonumber(pid:match("%d+"))
end

function Server:error_log()
  return helpers.read_file(self.prefix .. "/logs/error.log") or ""
end

-- The pids of the master's worker processes.
function Server:worker_pids()
  local master = self:master_pid()
  local pids = {}
  if not master then return pids end
  local out = helpers.capture("ps -o pid= --ppid " .. master)
  for pid in out:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
  return pids
end

-- Starts nginx (a daemon) and waits until it answers on its port and all of
-- its workers are up. Raises with the error log if it does not.
function Server:start()
  local out = helpers.capture(nginx_command(self) .. " 2>&1")
  local deadline = socket.gettime() + 10
  while socket.gettime() < deadline do
    local pid = self:master_pid()
    if pid and helpers.process_alive(pid) then
      local conn = M.connect(self.port)
      if conn then
        conn:close()
        self.running = true
        return self
      end
    end
    socket.sleep(0.02)
  end
  error("nginx did not start: " .. out .. "\n" .. self:error_log(), 2)
end

-- `nginx -s reload`: a new configuration generation of workers; the old
-- ones finish their requests and exit. Returns when the old workers are gone.
function Server:reload()
  local old = self:worker_pids()
  local out = helpers.capture(nginx_command(self, "-s reload") .. " 2>&1")
  local deadline = socket.gettime() + 20
  for _, pid in ipairs(old) do
    while helpers.process_alive(pid) do
      if socket.gettime() > deadline then
        error("old worker " .. pid .. " did not exit after reload: " .. out .. "\n" .. self:error_log(), 2)
      end
      socket.sleep(0.01)
    end
  end
  return out
end

-- A graceful stop (`nginx -s quit`), waiting for the master to exit.
function Server:stop()
  if not self.running then return end
  self.running = false
  local pid = self:master_pid()
  helpers.execute(nginx_command(self, "-s quit") .. " >/dev/null 2>&1")
  if pid and not helpers.wait_exit(pid, 20) then
    error("nginx did not stop; it was killed\n" .. self:error_log(), 2)
  end
end

-- Stops nginx if it runs and removes the prefix.
function Server:destroy()
  pcall(Server.stop, self)
  local pid = self:master_pid()
  if pid and helpers.process_alive(pid) then helpers.kill(pid, "KILL") end
  for _, wpid in ipairs(self:worker_pids()) do helpers.kill(wpid, "KILL") end
  helpers.rmdir(self.prefix)
end

-- The lines of the error log at level error or worse.
function Server:errors()
  local bad = {}
  for line in self:error_log():gmatch("[^\n]+") do
    if line:match("%[error%]") or line:match("%[crit%]") or line:match("%[alert%]")
       or line:match("%[emerg%]") then
      bad[#bad + 1] = line
    end
  end
  return bad
end

---------------------------------------------------------------------------
-- HTTP/1.1 over one keep-alive connection
---------------------------------------------------------------------------

local Conn = {}
Conn.__index = Conn

function M.connect(port, timeout)
  local sock = socket.tcp()
  sock:settimeout(timeout or 5)
  local ok = sock:connect("127.0.0.1", port)
  if not ok then
    sock:close()
    return nil
  end
  return setmetatable({ sock = sock }, Conn)
end

local function escape_path(s)
  return (s:gsub("[^%w%-%._~:]", function(c) return string.format("%%%02X", c:byte()) end))
end
M.escape_path = escape_path

-- Sends one request; returns status, body, headers (lower-case names), or
-- nil and an error if the connection failed (closed by the server, say).
function Conn:request(method, path, body)
  local req = { method, " ", path, " HTTP/1.1\r\nHost: localhost\r\n" }
  if body then req[#req + 1] = "Content-Length: " .. #body .. "\r\n" end
  req[#req + 1] = "\r\n"
  req[#req + 1] = body or ""
  local ok, err = self.sock:send(table.concat(req))
  if not ok then return nil, err end
  local status_line, serr = self.sock:receive("*l")
  if not status_line then return nil, serr end
  local status = tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return nil, "bad status line: " .. status_line end
  local headers = {}
  while true do
    local line, herr = self.sock:receive("*l")
    if not line then return nil, herr end
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then headers[name:lower()] = value end
  end
  local data
  if headers["content-length"] then
    data, err = self.sock:receive(tonumber(headers["content-length"]))
  elseif (headers["transfer-encoding"] or ""):lower() == "chunked" then
    local parts = {}
    while true do
      local size_line = self.sock:receive("*l")
      local size = size_line and tonumber(size_line:match("^%x+"), 16)
      if not size then return nil, "bad chunk" end
      if size == 0 then self.sock:receive("*l") break end
      parts[#parts + 1] = self.sock:receive(size)
      self.sock:receive("*l")
    end
    data = table.concat(parts)
  else
    data = ""
  end
  if not data then return nil, err end
  if (headers["connection"] or ""):lower() == "close" then self.closed = true end
  return status, data, headers
end

function Conn:close()
  self.sock:close()
end

-- Opens connections until one is served by worker `id` (the X-Worker of
-- GET `path`, default /dump); with `listen ... reuseport` the kernel spreads
-- connections over the workers. Returns the connection and the decoded body.
function M.connect_to_worker(port, id, decode, path)
  for _ = 1, 400 do
    local conn = M.connect(port)
    if conn then
      local status, body, headers = conn:request("GET", path or "/dump")
      if status == 200 and tonumber(headers["x-worker"]) == id then
        return conn, decode(body)
      end
      conn:close()
    end
  end
  error("no connection reached worker " .. id .. " in 400 tries", 2)
end

return M
