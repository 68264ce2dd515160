-- Helpers shared by the hurrahdb specs: temporary directories, whole-file
-- I/O, typed deep comparison, an AOF reader, and a redis-server with a
-- minimal binary-safe RESP client to check that hurrahdb files load there.

local socket = require "socket"
local luassert = require "luassert"

local helpers = {}

-- The specs run on Lua 5.4 and on LuaJIT 2.1 (Lua 5.1, numbers are doubles
-- only). These stand in for what 5.1 lacks.
helpers.HAS_INTEGERS = math.type ~= nil
helpers.unpack = table.unpack or unpack
function helpers.pack(...) return { n = select("#", ...), ... } end
-- math.type where it exists; on LuaJIT every number is a "float".
function helpers.math_type(v)
  if math.type then return math.type(v) end
  return type(v) == "number" and "float" or nil
end
local math_type = helpers.math_type

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.shell_quote = shell_quote

-- Under `make test SANITIZE=1` the sanitizer runtimes are preloaded into the
-- Lua interpreter; the programs the specs start (sh, mktemp, redis-server)
-- must not inherit them, or their own leaks would be reported as ours.
local SHELL_PREFIX = os.getenv("LD_PRELOAD")
  and "unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; " or ""

-- A command that runs a Lua chunk file in a new process of the same Lua,
-- with the environment the specs got (module path, and under SANITIZE=1 the
-- sanitizer runtimes the sanitized module needs).
local INTERPRETER = rawget(_G, "jit") and "luajit" or "lua5.4"
local CHILD_ENV = ""
for _, name in ipairs { "LD_PRELOAD", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "LUA_CPATH", "LUA_PATH" } do
  local v = os.getenv(name)
  if v then CHILD_ENV = CHILD_ENV .. name .. "=" .. shell_quote(v) .. " " end
end

function helpers.lua_command(script, ...)
  return helpers.lua_command_env({}, script, ...)
end

-- The same with some environment variables set otherwise (a false value
-- removes one).
function helpers.lua_command_env(overrides, script, ...)
  local args = {}
  for i, a in ipairs { ... } do args[i] = shell_quote(a) end
  local env = CHILD_ENV
  for name, value in pairs(overrides) do
    env = env .. (value and name .. "=" .. shell_quote(value) .. " " or "-u " .. name .. " ")
  end
  return "env " .. env .. INTERPRETER .. " " .. shell_quote(script) .. " " .. table.concat(args, " ")
end

local function execute(cmd)
  return os.execute(SHELL_PREFIX .. cmd)
end
helpers.execute = execute

-- Runs a shell command, returns its whole standard output.
local function capture(cmd)
  local p = assert(io.popen(SHELL_PREFIX .. cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end
helpers.capture = capture

---------------------------------------------------------------------------
-- Files and directories
---------------------------------------------------------------------------

-- Creates a fresh private directory under /tmp and returns its path.
function helpers.tmpdir()
  local dir = capture("mktemp -d /tmp/hurrahdb-spec.XXXXXX"):gsub("%s+$", "")
  assert(dir:match("^/tmp/hurrahdb%-spec%.%w+$"), "mktemp -d failed")
  return dir
end

-- Removes a directory made by helpers.tmpdir() and everything in it.
function helpers.rmdir(dir)
  if dir and dir:match("^/tmp/hurrahdb%-spec%.%w+$") then
    execute("rm -rf " .. shell_quote(dir))
  end
end

-- Everything a store holds, as a table key -> decoded value (through pairs).
function helpers.contents(db)
  local t = {}
  for k, v in db:pairs() do t[k] = v end
  return t
end

-- The names in a directory (dot files included), sorted.
function helpers.dir_entries(dir)
  local names = {}
  for name in capture("ls -A " .. shell_quote(dir)):gmatch("[^\n]+") do names[#names + 1] = name end
  table.sort(names)
  return names
end

function helpers.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("a")
  f:close()
  return data
end

function helpers.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

function helpers.file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Permission bits of a file in octal, as a string like "600".
function helpers.file_mode(path)
  return (capture("stat -c %a " .. shell_quote(path)):gsub("%s+$", ""))
end

function helpers.copy_file(from, to)
  helpers.write_file(to, assert(helpers.read_file(from)))
end

-- Plain (not pattern) substring search.
function helpers.contains(haystack, needle)
  return haystack:find(needle, 1, true) ~= nil
end

---------------------------------------------------------------------------
-- Values
---------------------------------------------------------------------------

local function describe_value(v)
  if type(v) == "number" then
    return string.format("%s %s", math_type(v), string.format("%.17g", v))
  elseif type(v) == "string" then
    return string.format("%q", #v > 60 and v:sub(1, 60) .. "..." or v)
  end
  return tostring(v)
end

local function path_key(path, k)
  if type(k) == "number" and k % 1 == 0 then
    return path .. "[" .. k .. "]"
  end
  return path .. "." .. tostring(k)
end

-- Compares two values the way "what you get is what you set" demands:
-- tables recursively with the same keys, numbers by value and by math.type,
-- and a zero by its sign. Returns true, or false plus where they differ.
local function deep_equal_typed(a, b, path)
  path = path or "$"
  if type(a) ~= type(b) then
    return false, string.format("%s: %s vs %s", path, describe_value(a), describe_value(b))
  end
  if type(a) == "number" then
    if math_type(a) ~= math_type(b) or a ~= b
       or (a == 0 and 1 / a ~= 1 / b) then
      return false, string.format("%s: %s vs %s", path, describe_value(a), describe_value(b))
    end
    return true
  end
  if type(a) ~= "table" then
    if a ~= b then
      return false, string.format("%s: %s vs %s", path, describe_value(a), describe_value(b))
    end
    return true
  end
  for k, va in pairs(a) do
    local vb = rawget(b, k)
    if vb == nil then
      return false, path_key(path, k) .. ": missing on the right"
    end
    local ok, why = deep_equal_typed(va, vb, path_key(path, k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then
      return false, path_key(path, k) .. ": missing on the left"
    end
  end
  return true
end
helpers.deep_equal_typed = deep_equal_typed

-- Like deep_equal_typed, but numbers only by value as doubles: what a
-- generic JSON decoder (which reads every number as a float) can promise.
local function deep_equal_numeric(a, b, path)
  path = path or "$"
  if type(a) == "number" and type(b) == "number" then
    if a + 0.0 == b + 0.0 then return true end
    return false, string.format("%s: %s vs %s", path, describe_value(a), describe_value(b))
  end
  if type(a) ~= "table" or type(b) ~= "table" then
    if a == b then return true end
    return false, string.format("%s: %s vs %s", path, describe_value(a), describe_value(b))
  end
  for k, va in pairs(a) do
    local vb = rawget(b, k)
    if vb == nil then return false, path_key(path, k) .. ": missing on the right" end
    local ok, why = deep_equal_numeric(va, vb, path_key(path, k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then return false, path_key(path, k) .. ": missing on the left" end
  end
  return true
end
helpers.deep_equal_numeric = deep_equal_numeric

-- Asserts that `got` is exactly `expected` (deep_equal_typed).
function helpers.assert_same_typed(expected, got, what)
  local ok, why = deep_equal_typed(expected, got)
  luassert.is_true(ok, (what and what .. ": " or "") .. "expected vs got differ at " .. tostring(why))
end

function helpers.sorted(list)
  local copy = {}
  for i, v in ipairs(list) do copy[i] = v end
  table.sort(copy)
  return copy
end

function helpers.count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Every byte value 0..255 once, in order.
function helpers.all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t)
end

---------------------------------------------------------------------------
-- AOF files
---------------------------------------------------------------------------

-- Parses a hurrahdb AOF strictly: '#' lines (header, batch checksums) and
-- RESP arrays of bulk strings. Returns a list of records
-- { offset = n, args = {...} } and a list of '#' lines, or nil, err.
function helpers.parse_aof(data)
  local records, comments = {}, {}
  local pos = 1
  local function line()
    local s, e = data:find("\r\n", pos, true)
    if not s then return nil end
    local l = data:sub(pos, s - 1)
    pos = e + 1
    return l
  end
  while pos <= #data do
    local start = pos
    local c = data:sub(pos, pos)
    if c == "#" then
      local e = data:find("\n", pos, true)
      if not e then return nil, "unterminated '#' line at offset " .. (pos - 1) end
      comments[#comments + 1] = data:sub(pos, e - 1):gsub("\r$", "")
      pos = e + 1
    elseif c == "*" then
      local n = tonumber((line() or ""):match("^%*(%d+)$"))
      if not n then return nil, "bad array header at offset " .. (start - 1) end
      local args = {}
      for i = 1, n do
        local at = pos - 1
        local len = tonumber((line() or ""):match("^%$(%d+)$"))
        if not len then return nil, "bad bulk header at offset " .. at end
        args[i] = data:sub(pos, pos + len - 1)
        if #args[i] ~= len or data:sub(pos + len, pos + len + 1) ~= "\r\n" then
          return nil, "bad bulk body at offset " .. at
        end
        pos = pos + len + 2
      end
      records[#records + 1] = { offset = start - 1, args = args }
    else
      return nil, "unexpected byte at offset " .. (pos - 1)
    end
  end
  return records, comments
end

-- Walks a version-2 file by its batch lines, as the loader does. Returns the
-- header's length and a list of batches { start = offset of the line,
-- records = offset of the records, stop = offset after them, seq = n }
-- (0-based offsets). Stops at the first line that does not parse or a batch
-- that runs past the end.
function helpers.aof_batches(data)
  local header = data:match("^#hurrahdb aof [24] %x+ %x+\r\n")
  assert(header, "not a hurrahdb AOF of version 2 or 4 without a codec")
  local batches, pos = {}, #header + 1
  while pos <= #data do
    local seq, len, line_end = data:match("^#hdb (%d+) (%d+) %x+ %x+\r\n()", pos)
    if not seq then break end
    local stop = line_end + tonumber(len)
    if stop - 1 > #data then break end
    batches[#batches + 1] = { start = pos - 1, records = line_end - 1, stop = stop - 1, seq = tonumber(seq) }
    pos = stop
  end
  return #header, batches
end

-- Replays parsed records into a table key -> raw JSON of the last SET.
function helpers.replay_aof(records)
  local model = {}
  for _, r in ipairs(records) do
    local cmd = r.args[1]
    if cmd == "SET" then
      model[r.args[2]] = r.args[3]
    elseif cmd == "DEL" then
      model[r.args[2]] = nil
    else
      error("unexpected command " .. tostring(cmd))
    end
  end
  return model
end

---------------------------------------------------------------------------
-- Processes, ports, redis-server
---------------------------------------------------------------------------

-- A TCP port on 127.0.0.1 that was free a moment ago.
function helpers.free_port()
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  server:close()
  return assert(tonumber(port))
end

-- True while the process exists and is not a zombie.
function helpers.process_alive(pid)
  local stat = helpers.read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z"
end

function helpers.kill(pid, signal)
  execute(string.format("kill -%s %d 2>/dev/null", signal or "TERM", pid))
end

-- Waits (bounded) for a process to go away; kills it if it does not.
function helpers.wait_exit(pid, seconds)
  local deadline = socket.gettime() + (seconds or 5)
  while helpers.process_alive(pid) do
    if socket.gettime() > deadline then
      helpers.kill(pid, "KILL")
      socket.sleep(0.05)
      return false
    end
    socket.sleep(0.02)
  end
  return true
end

-- Minimal binary-safe RESP client.
local Client = {}
Client.__index = Client

function helpers.resp_connect(port, timeout)
  local sock = socket.tcp()
  sock:settimeout(timeout or 2)
  local ok, err = sock:connect("127.0.0.1", port)
  if not ok then
    sock:close()
    return nil, err
  end
  return setmetatable({ sock = sock }, Client)
end

-- Sends one command as a RESP array of bulk strings.
function Client:send(...)
  local args = helpers.pack(...)
  local parts = { "*" .. args.n .. "\r\n" }
  for i = 1, args.n do
    local a = tostring(args[i])
    parts[#parts + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return self.sock:send(table.concat(parts))
end

-- Reads one reply. Simple strings come back as { ok = "..." }, errors as
-- nil, "message", integers as numbers, bulk strings as strings, null bulk
-- and null array as `false`, arrays as tables.
function Client:read()
  local l, err = self.sock:receive("*l")
  if not l then return nil, err end
  local kind, rest = l:sub(1, 1), l:sub(2)
  if kind == "+" then
    return { ok = rest }
  elseif kind == "-" then
    return nil, rest
  elseif kind == ":" then
    return tonumber(rest)
  elseif kind == "$" then
    local n = tonumber(rest)
    if n < 0 then return false end
    local body, berr = self.sock:receive(n + 2)
    if not body then return nil, berr end
    return body:sub(1, n)
  elseif kind == "*" then
    local n = tonumber(rest)
    if n < 0 then return false end
    local list = {}
    for i = 1, n do
      local v, verr = self:read()
      if v == nil then return nil, verr end
      list[i] = v
    end
    return list
  end
  return nil, "protocol error: " .. l
end

function Client:call(...)
  local ok, err = self:send(...)
  if not ok then return nil, err end
  return self:read()
end

function Client:close()
  self.sock:close()
end

-- Starts redis-server on a free port with `dir` as its working directory,
-- loading `dir`/appendonly.aof. Returns a handle { pid, port, dir, client }
-- once the server answers PING; raises (after stopping the server) if it
-- never does, with the server log in the message.
function helpers.start_redis(dir)
  local port = helpers.free_port()
  local log = dir .. "/redis.log"
  local cmd = table.concat({
    "redis-server",
    "--port", tostring(port),
    "--bind", "127.0.0.1",
    "--dir", shell_quote(dir),
    "--appendonly", "yes",
    "--appendfilename", "appendonly.aof",
    "--save", "''",
    "--daemonize", "no",
    "--logfile", shell_quote(log),
    ">/dev/null 2>&1 & echo $!",
  }, " ")
  local pid = tonumber((capture(cmd):match("%d+")))
  assert(pid, "could not start redis-server")
  local server = { pid = pid, port = port, dir = dir }
  for _ = 1, 250 do
    if not helpers.process_alive(pid) then break end
    local client = helpers.resp_connect(port, 1)
    if client then
      local reply, err = client:call("PING")
      if type(reply) == "table" and reply.ok == "PONG" then
        server.client = client
        return server
      end
      client:close()
      -- LOADING: the data set is still being read
      if err and not err:match("^LOADING") then break end
    end
    socket.sleep(0.02)
  end
  helpers.stop_redis(server)
  error("redis-server did not answer PING; log:\n" .. (helpers.read_file(log) or "(none)"), 2)
end

-- Stops a server started by start_redis: SHUTDOWN NOSAVE, then by pid.
function helpers.stop_redis(server)
  if not server or server.stopped then return end
  server.stopped = true
  if server.client then
    pcall(server.client.close, server.client)
    server.client = nil
  end
  if helpers.process_alive(server.pid) then
    local client = helpers.resp_connect(server.port, 1)
    if client then
      pcall(client.call, client, "SHUTDOWN", "NOSAVE")
      client:close()
    end
    helpers.wait_exit(server.pid, 3)
  end
end

-- Writes a version-1 file (which has no keyed tags, so a spec can write one
-- by hand) holding one SET per pair of `records` ({ {key, raw value text},
-- ... }), in one batch: how a spec hands the decoder text of its choice.
function helpers.write_v1_file(path, records)
  local parts = {}
  for _, r in ipairs(records) do
    local k, v = r[1], r[2]
    parts[#parts + 1] = "*3\r\n$3\r\nSET\r\n$" .. #k .. "\r\n" .. k .. "\r\n$" .. #v .. "\r\n" .. v .. "\r\n"
  end
  local body = table.concat(parts)
  local crc = assert(require("hdb_testlib").crc32c(body))
  helpers.write_file(path, "#hurrahdb aof 1\r\n" .. body .. string.format("#hdb batch %d %08x\r\n", #body, crc))
  return path
end

return helpers
