-- hurrahdb inside a real nginx (Debian's nginx + libnginx-mod-http-lua,
-- LuaJIT): the configuration and worker module of examples/openresty, two
-- workers, driven over HTTP. Proves what the README's "Using hurrahdb in
-- OpenResty" says: data survives a stop and start, a reload under writes
-- loses no acknowledged write and logs no error, an open that fails or raises
-- reaches store() at once and the error log once, and a store opened in the
-- master before the fork refuses writes from the workers.

local helpers = require "spec.helpers"
local nginx = require "spec.support.nginx"
local cjson = require "cjson"
local socket = require "socket"
local hurrahdb = require "hurrahdb"

local EXAMPLE_CONF = assert(helpers.read_file("examples/openresty/nginx.conf"))
local WORKERS = 2

-- PUTs key = value on conn; returns the worker that acknowledged it, or nil
-- if the request failed (the connection closed, say).
local function put(conn, key, value)
  local status, body, headers = conn:request("PUT", "/kv/" .. nginx.escape_path(key), cjson.encode(value))
  if status == nil then return nil, body end
  assert.equals(200, status, body)
  return tonumber(headers["x-worker"])
end

-- Each worker's data, from GET /dump on a connection to each worker.
local function dumps(port)
  local by_worker = {}
  for id = 0, WORKERS - 1 do
    local conn, dump = nginx.connect_to_worker(port, id, cjson.decode)
    conn:close()
    assert.equals(id, dump.worker)
    by_worker[id] = dump.data
  end
  return by_worker
end

-- Asserts that every acknowledged write { key, value, worker } is held by the
-- worker that acknowledged it.
local function assert_all_held(acked, by_worker)
  for _, w in ipairs(acked) do
    local held = by_worker[w.worker][w.key]
    assert.is_not_nil(held, "worker " .. w.worker .. " lost the acknowledged write of " .. w.key)
    assert.same(w.value, held)
  end
end

describe("hurrahdb in nginx with two workers, one store per worker", function()
  local server
  before_each(function() server = nginx.new(EXAMPLE_CONF):start() end)
  after_each(function() if server then server:destroy() end end)

  it("runs hurrahdb in every worker, which reads what it stored", function()
    local seen = {}
    for _ = 1, 40 do
      local conn = assert(nginx.connect(server.port))
      local worker = assert(put(conn, "greeting", { text = "hello", n = 7 }))
      seen[worker] = true
      local status, body, headers = conn:request("GET", "/kv/greeting")
      assert.equals(200, status)
      assert.equals(worker, tonumber(headers["x-worker"]))
      assert.same({ text = "hello", n = 7 }, cjson.decode(body))
      status = conn:request("DELETE", "/kv/greeting")
      assert.equals(200, status)
      status = conn:request("GET", "/kv/greeting")
      assert.equals(404, status)
      conn:close()
    end
    assert.is_true(seen[0] and seen[1], "the requests did not reach both workers")
    assert.same({}, server:errors())
  end)

  it("keeps every acknowledged write across a full stop and start", function()
    local acked = {}
    for i = 1, 200 do
      local conn = assert(nginx.connect(server.port))
      local key = "user:" .. i .. " \xc3\xa9?%#+"
      local value = { id = i, name = "name " .. i, tags = { "a", "b" } }
      local worker = assert(put(conn, key, value))
      acked[#acked + 1] = { key = key, value = value, worker = worker }
      conn:close()
    end
    server:stop()
    -- each worker's file holds its own writes
    for id = 0, WORKERS - 1 do
      assert.is_true(helpers.file_exists(server.prefix .. "/data/worker-" .. id .. ".aof"))
    end
    server:start()
    assert_all_held(acked, dumps(server.port))
    assert.same({}, server:errors())
  end)

  it("rewrites each worker's file automatically, with the options given to init, keeping every write", function()
    server:destroy()
    local conf = EXAMPLE_CONF:gsub("{ sync_time = 100 }", "{ sync_time = 100, auto_rewrite_min_size = 32768 }", 1)
    assert.is_not.equals(EXAMPLE_CONF, conf)
    server = nginx.new(conf):start()
    local latest = {}
    local conn = assert(nginx.connect(server.port))
    for i = 1, 4000 do
      local key = "k" .. (i % 20)
      local value = { i = i, pad = string.rep("p", 60) }
      local worker = put(conn, key, value)
      if not worker then
        conn:close()
        conn = assert(nginx.connect(server.port))
        worker = assert(put(conn, key, value))
      end
      latest[worker] = latest[worker] or {}
      latest[worker][key] = value
    end
    conn:close()
    server:stop()
    -- 4000 records of about 120 bytes: without rewrites the two files would
    -- hold about 480 KB.
    local total = 0
    for id = 0, WORKERS - 1 do
      local size = #(helpers.read_file(server.prefix .. "/data/worker-" .. id .. ".aof") or "")
      total = total + size
      assert.is_true(size < 80 * 1024, "worker " .. id .. "'s file has " .. size .. " bytes")
    end
    assert.is_true(total > 0)
    server:start()
    local by_worker = dumps(server.port)
    for worker, data in pairs(latest) do
      for key, value in pairs(data) do assert.same(value, by_worker[worker][key]) end
    end
    assert.same({}, server:errors())
  end)

  it("loses no acknowledged write, and logs no error, when reloaded while a client writes", function()
    local old_workers = server:worker_pids()
    assert.equals(WORKERS, #old_workers)
    local acked = {}
    local conn = assert(nginx.connect(server.port))
    local i, reloaded, after = 0, false, 0
    -- Write; reload from a background shell once writing is under way; go on
    -- until the old workers are gone and 300 more writes were acknowledged.
    while after < 300 do
      i = i + 1
      local key, value = "k" .. i, { n = i, s = string.rep("v", i % 40) }
      local worker
      for _ = 1, 50 do
        worker = put(conn, key, value)
        if worker then break end
        -- the old worker closed the connection: send it again on a new one
        conn:close()
        conn = assert(nginx.connect(server.port))
      end
      assert.is_not_nil(worker, "write " .. key .. " failed 50 times")
      acked[#acked + 1] = { key = key, value = value, worker = worker }
      if i == 200 then
        assert(helpers.execute("/usr/sbin/nginx -p " .. helpers.shell_quote(server.prefix .. "/")
          .. " -c conf/nginx.conf -e logs/error.log -s reload >/dev/null 2>&1 &"))
        reloaded = true
      end
      if reloaded then
        local alive = false
        for _, pid in ipairs(old_workers) do alive = alive or helpers.process_alive(pid) end
        if not alive then after = after + 1 end
      end
      assert.is_true(i < 200000, "the old workers never exited")
    end
    conn:close()
    local new_workers = server:worker_pids()
    assert.equals(WORKERS, #new_workers)
    for _, pid in ipairs(new_workers) do
      for _, old in ipairs(old_workers) do assert.are_not.equal(old, pid) end
    end
    assert_all_held(acked, dumps(server.port))
    assert.same({}, server:errors())
    -- and the data is in the files: after a stop and start it is all there
    server:stop()
    server:start()
    assert_all_held(acked, dumps(server.port))
  end)
end)

describe("a worker whose file another process holds", function()
  local server
  after_each(function() if server then server:destroy() end end)

  it("waits for the holder to release it, then serves the file with the holder's writes", function()
    server = nginx.new(EXAMPLE_CONF)
    -- Another process holds worker 0's file for 1.5 s, then writes a key.
    local holder = io.popen(helpers.lua_command("spec/support/hold_file.lua",
      server.prefix .. "/data/worker-0.aof", "1.5"), "r")
    assert.equals("holding", holder:read("l"))
    server:start()
    local conn, dump = nginx.connect_to_worker(server.port, 0, cjson.decode)
    assert.equals("released", holder:read("l"))
    holder:close()
    assert.equals("from the child", dump.data.child)
    -- and it takes writes
    local worker = assert(put(conn, "after", { ok = true }))
    assert.equals(0, worker)
    conn:close()
    assert.same({}, server:errors())
  end)
end)

-- Two workers whose init_worker passes `options` (Lua source) to
-- hurrahdb.worker.init. GET /state answers at once (store(0)) with the
-- worker's pid, and store()'s error and code if it failed; GET /store calls store() as a request handler does (10 s).
local function init_options_conf(options)
  return [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    init_worker_by_lua_block {
        require("hurrahdb.worker").init(ngx.config.prefix() .. "data", ]] .. options .. [[)
    }
    exit_worker_by_lua_block {
        require("hurrahdb.worker").exit()
    }
    server {
        listen 127.0.0.1:8080 reuseport;
        location = /state {
            content_by_lua_block {
                local db, err, code = require("hurrahdb.worker").store(0)
                ngx.header["X-Worker"] = ngx.worker.id()
                ngx.say(require("cjson").encode({ pid = ngx.worker.pid(), open = db ~= nil, err = err,
                                                  code = code }))
            }
        }
        location = /store {
            content_by_lua_block {
                local db, err = require("hurrahdb.worker").store()
                ngx.header["X-Worker"] = ngx.worker.id()
                if not db then
                    ngx.status = 503
                    ngx.say(err)
                    return
                end
                ngx.say("open")
            }
        }
    }
}
]]
end

-- GET path on conn: status, body and the seconds it took.
local function timed_get(conn, path)
  local start = socket.gettime()
  local status, body = conn:request("GET", path)
  return status, body, socket.gettime() - start
end

-- { [pid] = n }: the processes that logged `text` at level error, and how
-- many times each did.
local function logged_by(server, text)
  local by_pid = {}
  for line in server:error_log():gmatch("[^\n]+") do
    if line:find(text, 1, true) then
      local pid = tonumber(line:match("%[error%] (%d+)#"))
      assert.is_not_nil(pid, "logged, but not at level error: " .. line)
      by_pid[pid] = (by_pid[pid] or 0) + 1
    end
  end
  return by_pid
end

describe("a worker whose open raises", function()
  local server
  after_each(function() if server then server:destroy() end end)

  -- Three GET /store on conn: each is answered at once (not after store()'s
  -- 10 s) with a 503 whose body holds `text`.
  local function assert_fails_at_once(conn, text)
    for _ = 1, 3 do
      local status, body, seconds = timed_get(conn, "/store")
      assert.equals(503, status, body)
      assert.matches(text, body, 1, true)
      assert.is_true(seconds < 1, string.format("GET /store took %.2f s", seconds))
    end
  end

  it("gives every store() the open's error at once, logged once per worker (a misspelled option)", function()
    server = nginx.new(init_options_conf("{ sync_tme = 100 }")):start()
    local message = "unknown option 'sync_tme'"
    local expected = {}
    for id = 0, WORKERS - 1 do
      local conn, state = nginx.connect_to_worker(server.port, id, cjson.decode, "/state")
      assert.is_false(state.open)
      assert.matches(message, state.err, 1, true)
      assert.equals("invalid", state.code)
      assert_fails_at_once(conn, message)
      conn:close()
      expected[state.pid] = 1
    end
    -- once by each worker, not once per request
    assert.same(expected, logged_by(server, message))
    assert.equals(WORKERS, #server:errors())
  end)

  it("gives every store() the error at once when the worker itself already holds its file", function()
    -- Other code of the worker opens the file before hurrahdb.worker does:
    -- waiting would never end, so the lock error is the answer.
    server = nginx.new(init_options_conf([[(function()
        HELD = assert(require("hurrahdb").open(ngx.config.prefix() .. "data/worker-" .. ngx.worker.id() .. ".aof"))
      end)()]])):start()
    local message = "(this process: the file is already open here)"
    local expected = {}
    for id = 0, WORKERS - 1 do
      local conn, state = nginx.connect_to_worker(server.port, id, cjson.decode, "/state")
      assert.is_false(state.open)
      assert.matches(message, state.err, 1, true)
      assert.equals("already open", state.code)
      assert_fails_at_once(conn, message)
      conn:close()
      expected[state.pid] = 1
    end
    assert.same(expected, logged_by(server, message))
  end)

  it("gives every store() the error at once when the open raises in a retry (an on_warning that raises)", function()
    server = nginx.new(init_options_conf(
      [[{ on_warning = function(w) error("refusing a repaired file: " .. w) end }]]))
    -- Worker 0's file ends in a record that no batch line announces, which
    -- its open moves to a side file and reports to on_warning; and this process holds the file, so that the worker's
    -- first open fails on the lock and the one that raises is a retry.
    local path = server.prefix .. "/data/worker-0.aof"
    local holder = assert(hurrahdb.open(path, { sync_time = 0 }))
    local f = assert(io.open(path, "ab"))
    assert(f:write("*3\r\n$3\r\nSET\r\n$1\r\nk"))
    assert(f:close())
    server:start()
    local conn, state = nginx.connect_to_worker(server.port, 0, cjson.decode, "/state")
    assert.is_false(state.open)
    assert.matches("is still held by the worker this one replaces", state.err, 1, true)
    assert.equals("locked", state.code)
    assert.is_true(holder:close())
    local message = "refusing a repaired file: " .. path .. ": no valid batch line at offset"
    assert_fails_at_once(conn, message)
    local _, body = conn:request("GET", "/state")
    assert.equals("invalid", cjson.decode(body).code)
    conn:close()
    -- once, by worker 0; worker 1's own file opened
    assert.same({ [state.pid] = 1 }, logged_by(server, "refusing a repaired file"))
    assert.matches("refusing a repaired file: [^\n]*context: ngx%.timer", server:error_log())
    assert.equals(1, #server:errors())
    local conn1, state1 = nginx.connect_to_worker(server.port, 1, cjson.decode, "/state")
    conn1:close()
    assert.is_true(state1.open)
  end)
end)

describe("a store opened in nginx's master (init_by_lua) before the workers fork", function()
  local server
  after_each(function() if server then server:destroy() end end)

  it("refuses writes from the workers with a clear error, serves reads, and keeps its file as it was", function()
    local conf = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    init_by_lua_block {
        local hurrahdb = require "hurrahdb"
        MASTER_DB = assert(hurrahdb.open(ngx.config.prefix() .. "data/master.aof", { sync_time = 0 }))
        assert(MASTER_DB:set("loaded", "in the master"))
    }
    server {
        listen 127.0.0.1:8080 reuseport;
        location = /try {
            content_by_lua_block {
                local ok, err = MASTER_DB:set("from_worker", 1)
                local sok, serr = MASTER_DB:sync()
                ngx.say(tostring(ok), "\n", tostring(err), "\n", tostring(sok), "\n", tostring(serr),
                        "\n", MASTER_DB:get("loaded"), "\n", tostring(MASTER_DB:exists("from_worker")))
            }
        }
    }
}
]]
    server = nginx.new(conf):start()
    local path = server.prefix .. "/data/master.aof"
    local before = helpers.read_file(path)
    for _ = 1, 10 do
      local conn = assert(nginx.connect(server.port))
      local status, body = conn:request("GET", "/try")
      conn:close()
      assert.equals(200, status)
      local lines = {}
      for line in body:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equals("nil", lines[1])
      assert.matches("opened by another process (before a fork); writes from this process are refused",
        lines[2], 1, true)
      assert.equals("nil", lines[3])
      assert.matches("cannot be synced from this process", lines[4], 1, true)
      assert.equals("in the master", lines[5])
      assert.equals("false", lines[6])
    end
    assert.equals(before, helpers.read_file(path))
    assert.same({}, server:errors())
  end)
end)

describe("a hurrahdb.worker store's expiry, counters and conditional writes", function()
  local server
  after_each(function() if server then server:destroy() end end)

  it("work in the worker and keep their expiries across a stop and start", function()
    local conf = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    init_worker_by_lua_block {
        require("hurrahdb.worker").init(ngx.config.prefix() .. "data", { sync_time = 100 })
    }
    exit_worker_by_lua_block {
        require("hurrahdb.worker").exit()
    }
    server {
        listen 127.0.0.1:8080 reuseport;
        location = /write {
            content_by_lua_block {
                local db = assert(require("hurrahdb.worker").store())
                local r = {}
                r.set = db:set("t", { a = 1 }, { ttl = 100 })
                r.incr1 = db:incr("c", 1, 0, 200)
                r.incr2 = db:incr("c", 2)
                r.add1 = db:add("a", "first")
                local ok, why = db:add("a", "second")
                r.add2 = tostring(ok) .. " " .. tostring(why)
                r.expired = db:set("gone", 1, { ttl = 0.001 })
                ngx.sleep(0.01)
                r.gone = db:get("gone") == nil and db:ttl("gone") == nil
                r.flushed = db:flush_expired()
                ngx.header["X-Worker"] = ngx.worker.id()
                ngx.say(require("cjson").encode(r))
            }
        }
        location = /read {
            content_by_lua_block {
                local db = assert(require("hurrahdb.worker").store())
                ngx.header["X-Worker"] = ngx.worker.id()
                ngx.say(require("cjson").encode({ t = db:get("t"), ttl_t = db:ttl("t"), c = db:get("c"),
                                                  ttl_c = db:ttl("c"), a = db:get("a"), count = db:count() }))
            }
        }
    }
}
]]
    server = nginx.new(conf)
    server:start()
    local conn, wrote = nginx.connect_to_worker(server.port, 0, cjson.decode, "/write")
    conn:close()
    assert.same({ set = true, incr1 = 1, incr2 = 3, add1 = true, add2 = "false exists", expired = true,
                  gone = true, flushed = 0 }, wrote)
    server:stop()
    server:start()
    local read
    conn, read = nginx.connect_to_worker(server.port, 0, cjson.decode, "/read")
    conn:close()
    assert.same({ a = 1 }, read.t)
    assert.equals(3, read.c)
    assert.equals("first", read.a)
    assert.equals(3, read.count)
    assert.is_true(read.ttl_t > 90 and read.ttl_t <= 100, tostring(read.ttl_t))
    assert.is_true(read.ttl_c > 190 and read.ttl_c <= 200, tostring(read.ttl_c))
    assert.same({}, server:errors())
  end)
end)
