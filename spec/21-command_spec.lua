-- The `hurrahdb` command, run as a user runs it: a separate process, its
-- exit status, its stdout and its stderr. HURRAHDB_COMMAND names an
-- installed command to run instead of the checkout's lua/bin/hurrahdb.

local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"
local testlib = require "hdb_testlib"

local INSTALLED = os.getenv("HURRAHDB_COMMAND")

-- Runs the command with args (each quoted), its stdin from io.stdin and its
-- stdout to io.stdout if given (file paths); returns status, stdout, stderr.
local function run_io(dir, io_files, ...)
  local out, err = io_files.stdout or dir .. "/.stdout", dir .. "/.stderr"
  local cmd
  if INSTALLED then
    local args = {}
    for i, a in ipairs { ... } do args[i] = helpers.shell_quote(a) end
    cmd = helpers.shell_quote(INSTALLED) .. " " .. table.concat(args, " ")
  else
    cmd = helpers.lua_command("lua/bin/hurrahdb", ...)
  end
  if io_files.stdin then cmd = cmd .. " < " .. helpers.shell_quote(io_files.stdin) end
  local status = helpers.capture(("%s > %s 2> %s; echo $?"):format(cmd, helpers.shell_quote(out),
    helpers.shell_quote(err)))
  return tonumber(status), helpers.read_file(out), helpers.read_file(err)
end

local function run(dir, ...)
  return run_io(dir, {}, ...)
end

describe("hurrahdb command", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/data.aof"
  end)
  after_each(function() helpers.rmdir(dir) end)

  local function make_store(n)
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    for i = 1, n do assert.is_true(db:set("k" .. i, { i = i })) end
    assert.is_true(db:set("t", 1, { ttl = 1000 }))
    assert.is_true(db:close())
  end

  describe("usage", function()
    it("exits 2 with the usage on stderr for no command, an unknown one or a missing file", function()
      for _, args in ipairs({ {}, { "frobnicate" }, { "check" }, { "check", "a", "b" } }) do
        local status, out, err = run(dir, helpers.unpack(args))
        assert.equals(2, status, table.concat(args, " "))
        assert.equals("", out)
        assert.matches("Usage: hurrahdb", err)
        assert.matches("Error:", err)
      end
    end)

    it("has --help for the command and each subcommand, exiting 0", function()
      local status, out = run(dir, "--help")
      assert.equals(0, status)
      assert.matches("check", out)
      assert.matches("stats", out)
      assert.matches("Exit status", out)
      for _, sub in ipairs({ "check", "stats", "dump", "load", "export", "push", "compact", "repair",
                             "import-legacy" }) do
        assert.matches(sub, out, 1, true)
      end
      for _, sub in ipairs({ "check", "stats", "dump", "load", "export", "push", "compact", "repair",
                             "import-legacy" }) do
        status, out = run(dir, sub, "--help")
        assert.equals(0, status, sub)
        assert.matches("Usage: hurrahdb " .. sub, out, 1, true)
      end
    end)
  end)

  describe("check", function()
    it("says what a good file holds and exits 0, leaving it unchanged", function()
      make_store(100)
      local before = helpers.read_file(path)
      local status, out, err = run(dir, "check", path)
      assert.equals(0, status, err)
      assert.equals("", err)
      assert.matches("101 keys, 1 of them with an expiry", out, 1, true)
      assert.matches(path .. ": ok", out, 1, true)
      assert.equals(before, helpers.read_file(path))
    end)

    it("gives one JSON object with --json", function()
      make_store(10)
      local status, out = run(dir, "check", "--json", path)
      assert.equals(0, status)
      local r = assert(hurrahdb.decode(out))
      assert.equals(11, r.keys)
      assert.is_true(r.ok)
      assert.equals(path, r.file)
    end)

    it("works while a store holds the file", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert.is_true(db:set("a", 1))
      local status, out = run(dir, "check", path)
      assert.equals(0, status)
      assert.matches("1 keys", out, 1, true)
      assert.is_true(db:set("b", 1))
      status, out = run(dir, "check", path)
      assert.equals(0, status)
      assert.matches("2 keys", out, 1, true)
      assert.is_true(db:close())
    end)

    it("exits 1 for a torn last batch, naming the file and the offset on stderr", function()
      make_store(10)
      local data = helpers.read_file(path)
      helpers.write_file(path, data:sub(1, #data - 5))
      local cut = helpers.read_file(path)
      local status, out, err = run(dir, "check", path)
      assert.equals(1, status)
      local r = assert(hurrahdb.check(path))
      assert.matches(("%s: torn last batch: %d bytes at offset %d"):format(path, r.tail_bytes, r.good_bytes),
        err, 1, true)
      assert.matches("10 keys", out, 1, true)
      assert.equals(cut, helpers.read_file(path))
    end)

    it("exits 1 for damage, naming the offset where it starts", function()
      make_store(10)
      local data = helpers.read_file(path)
      local _, batches = helpers.aof_batches(data)
      local at = batches[3].records + 1
      helpers.write_file(path, data:sub(1, at - 1) .. "X" .. data:sub(at + 1))
      local status, _, err = run(dir, "check", path)
      assert.equals(1, status)
      assert.matches(("%s: damaged at offset %d"):format(path, batches[3].start), err, 1, true)
      local jstatus, jout = run(dir, "check", "--json", path)
      assert.equals(1, jstatus)
      local r = assert(hurrahdb.decode(jout))
      assert.is_false(r.ok)
      assert.is_true(r.damaged)
      assert.equals(batches[3].start, r.damage_at)
    end)

    it("exits 1 for a file that cannot be read or is not a store's, saying why", function()
      local status, out, err = run(dir, "check", dir .. "/absent.aof")
      assert.equals(1, status)
      assert.equals("", out)
      assert.matches("absent.aof", err, 1, true)
      helpers.write_file(path, "hello\n")
      status, _, err = run(dir, "check", path)
      assert.equals(1, status)
      assert.matches(path, err, 1, true)
    end)
  end)

  -- Keys and values of every kind, with odd bytes: what dump, load and
  -- export must carry unchanged.
  local function odd_store()
    local db = assert(hurrahdb.open(path, { sync_time = 0 }))
    local data = {
      ["plain"] = "text",
      ["with\r\n#hdb 1 2 a b\r\nframing"] = "value\r\n#hurrahdb aof 2\r\n*1\r\n",
      ["\0\1\255 binary"] = { a = "\255\254 not utf-8", b = { 1, 2.5, -0.0 } },
      ["unicodé ✓"] = { nested = { deep = { hurrahdb.null, true, false } } },
      [""] = "the empty key",
      ["float"] = 0.1 + 0.2,
      ["big"] = helpers.HAS_INTEGERS and math.maxinteger or 2 ^ 53,
      ["empty table"] = {},
      ["crlf\r\n"] = "\r\n",
    }
    for k, v in pairs(data) do assert.is_true(db:set(k, v)) end
    assert.is_true(db:set("expiring", { x = 1 }, { ttl = 1000 }))
    data.expiring = { x = 1 }
    assert.is_true(db:close())
    return data
  end

  describe("dump and load", function()
    it("round-trip every kind of key and value, and the expiries", function()
      local data = odd_store()
      local status, out, err = run(dir, "dump", path)
      assert.equals(0, status, err)
      local lines = 0
      for line in out:gmatch("[^\n]+") do
        lines = lines + 1
        assert.is_table(hurrahdb.decode(line))
      end
      assert.equals(helpers.count_keys(data), lines)
      local dumped = dir .. "/dump.jsonl"
      helpers.write_file(dumped, out)
      local copy = dir .. "/copy.aof"
      status, _, err = run_io(dir, { stdin = dumped }, "load", copy)
      assert.equals(0, status, err)
      local a = assert(hurrahdb.open(path))
      local b = assert(hurrahdb.open(copy))
      for k, v in pairs(data) do helpers.assert_same_typed(v, b:get(k), k) end
      assert.equals(a:count(), b:count())
      local ta, tb = a:ttl("expiring"), b:ttl("expiring")
      assert.is_true(math.abs(ta - tb) < 0.5, ta .. " vs " .. tb)
      a:close()
      b:close()
    end)

    it("keeps keys the store has unless --replace, and dumps only a prefix with --prefix", function()
      odd_store()
      local status, out = run(dir, "dump", "--prefix", "pl", path)
      assert.equals(0, status)
      assert.equals('{"key":"plain","value":"text"}\n', out)
      local copy = dir .. "/copy.aof"
      local db = assert(hurrahdb.open(copy))
      assert.is_true(db:set("plain", "mine"))
      assert.is_true(db:close())
      local dumped = dir .. "/dump.jsonl"
      helpers.write_file(dumped, out)
      assert.equals(0, (run_io(dir, { stdin = dumped }, "load", copy)))
      db = assert(hurrahdb.open(copy))
      assert.equals("mine", db:get("plain"))
      assert.is_true(db:close())
      assert.equals(0, (run_io(dir, { stdin = dumped }, "load", "--replace", copy)))
      db = assert(hurrahdb.open(copy))
      assert.equals("text", db:get("plain"))
      assert.is_true(db:close())
    end)

    it("stops at a bad line, naming its number, with the lines before it loaded", function()
      local dumped = dir .. "/dump.jsonl"
      helpers.write_file(dumped, '{"key":"a","value":1}\n{"key":"b","value":\n{"key":"c","value":3}\n')
      local status, _, err = run_io(dir, { stdin = dumped }, "load", path)
      assert.equals(1, status)
      assert.matches("line 2", err, 1, true)
      local db = assert(hurrahdb.open(path))
      assert.equals(1, db:get("a"))
      assert.is_nil(db:get("c"))
      db:close()
    end)
  end)

  describe("export", function()
    it("gives commands redis-cli --pipe loads into redis-server, with the same values and PTTLs", function()
      if helpers.capture("command -v redis-cli") == "" then pending("needs redis-cli (redis-tools)") return end
      local data = odd_store()
      local exported = dir .. "/export.resp"
      local status, _, err = run_io(dir, { stdout = exported }, "export", path)
      assert.equals(0, status, err)
      local server = helpers.start_redis(dir)
      finally(function() helpers.stop_redis(server) end)
      local piped = helpers.capture(("redis-cli -p %d --pipe < %s 2>&1; echo status=$?"):format(server.port,
        helpers.shell_quote(exported)))
      assert.matches("status=0", piped, 1, true)
      assert.matches("errors: 0", piped, 1, true)
      for k, v in pairs(data) do
        local text = server.client:call("GET", k)
        helpers.assert_same_typed(v, hurrahdb.decode(text), k)
      end
      local pttl = server.client:call("PTTL", "expiring")
      assert.is_true(pttl > 990000 and pttl <= 1000000, tostring(pttl))
      assert.equals(-1, server.client:call("PTTL", "plain"))
      assert.equals(helpers.count_keys(data), server.client:call("DBSIZE"))
    end)
  end)

  describe("push", function()
    it("sends every key to a running Redis with its PTTL, and stops at the first error, saying where", function()
      local data = odd_store()
      local server = helpers.start_redis(dir)
      finally(function() helpers.stop_redis(server) end)
      local status, _, err = run(dir, "push", path, "--redis", "127.0.0.1:" .. server.port)
      assert.equals(0, status, err)
      assert.matches("pushed " .. helpers.count_keys(data) .. " keys", err, 1, true)
      for k, v in pairs(data) do
        helpers.assert_same_typed(v, hurrahdb.decode(server.client:call("GET", k)), k)
      end
      local pttl = server.client:call("PTTL", "expiring")
      assert.is_true(pttl > 990000 and pttl <= 1000000, tostring(pttl))
      -- A server out of memory refuses the first SET: the push stops there.
      server.client:call("CONFIG", "SET", "maxmemory", "1")
      status, _, err = run(dir, "push", path, "--redis", "127.0.0.1:" .. server.port)
      server.client:call("CONFIG", "SET", "maxmemory", "0")
      assert.equals(1, status)
      assert.matches("command 1 (SET of key", err, 1, true)
      assert.matches("OOM", err, 1, true)
      assert.matches("the 0 before it were applied", err, 1, true)
    end)

    it("exits 1 naming the server when it cannot connect, and 2 without --redis", function()
      odd_store()
      local status, _, err = run(dir, "push", path, "--redis", "127.0.0.1:" .. helpers.free_port())
      assert.equals(1, status)
      assert.matches("cannot connect", err, 1, true)
      assert.equals(2, (run(dir, "push", path)))
    end)
  end)

  describe("compact", function()
    it("rewrites the file with only its keys", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      for round = 1, 20 do
        for i = 1, 50 do assert.is_true(db:set("k" .. i, round)) end
      end
      assert.is_true(db:close())
      local before = #helpers.read_file(path)
      local status, out, err = run(dir, "compact", path)
      assert.equals(0, status, err)
      assert.matches("50 keys", out, 1, true)
      assert.is_true(#helpers.read_file(path) < before / 10)
      db = assert(hurrahdb.open(path))
      assert.equals(20, db:get("k7"))
      assert.is_true(db:close())
    end)

    it("is refused while a store holds the file", function()
      local db = assert(hurrahdb.open(path, { sync_time = 0 }))
      assert.is_true(db:set("a", 1))
      local status, _, err = run(dir, "compact", path)
      assert.equals(1, status)
      assert.matches("locked", err, 1, true)
      assert.is_true(db:close())
    end)
  end)

  describe("repair", function()
    local function damage()
      make_store(10)
      local data = helpers.read_file(path)
      local _, batches = helpers.aof_batches(data)
      local at = batches[4].records + 1
      helpers.write_file(path, data:sub(1, at - 1) .. "X" .. data:sub(at + 1))
      return batches[4].start
    end

    it("says what it will do and asks; without a yes it changes nothing", function()
      local from = damage()
      local before = helpers.read_file(path)
      local answer = dir .. "/no"
      helpers.write_file(answer, "n\n")
      local status, out = run_io(dir, { stdin = answer }, "repair", path)
      assert.equals(1, status)
      assert.matches(("move the %d bytes from there on to %s.damaged-%d"):format(#before - from, path, from),
        out, 1, true)
      assert.equals(before, helpers.read_file(path))
    end)

    it("with --yes keeps the good batches and moves the rest to a side file", function()
      local from = damage()
      local before = helpers.read_file(path)
      local status, out, err = run(dir, "repair", "--yes", path)
      assert.equals(0, status, err)
      assert.matches("repaired (3 keys)", out, 1, true)
      assert.equals(before:sub(from + 1), helpers.read_file(path .. ".damaged-" .. from))
      assert.equals(0, (run(dir, "check", path)))
    end)

    it("has nothing to do on a good file", function()
      make_store(3)
      local status, out = run(dir, "repair", "--yes", path)
      assert.equals(0, status)
      assert.matches("nothing to repair", out, 1, true)
    end)

    it("is refused while another process holds the file, changing nothing", function()
      damage()
      local before = helpers.read_file(path)
      local fd = testlib.flock(path)
      finally(function() testlib.unlock(fd) end)
      local status, _, err = run(dir, "repair", "--yes", path)
      assert.equals(1, status)
      assert.matches("locked", err, 1, true)
      assert.equals(before, helpers.read_file(path))
    end)
  end)

  describe("import-legacy", function()
    it("reads the Rust crate's records, later ones winning, reporting what it cannot keep by line", function()
      local old = dir .. "/legacy.db"
      helpers.write_file(old, table.concat({
        "Set", "user:1", '{"name":"Ada","n":1}',
        "Set", "odd key with spaces and ✓", '[1,2.5,"x"]',
        "Set", "user:2", "not json",
        "Set", "user:1", '{"name":"Ada","n":2}',
        "Set", "gone", "1",
        "Del", "gone",
        "Set", "tail", '{"cut',
      }, "\n"))
      local status, out, err = run(dir, "import-legacy", old, path)
      assert.equals(1, status)
      assert.matches("imported 2 keys", out, 1, true)
      assert.matches("line 9: key \"user:2\": not valid JSON", err, 1, true)
      assert.matches("line 18: the last record (Set) is cut short", err, 1, true)
      local db = assert(hurrahdb.open(path))
      assert.same({ name = "Ada", n = 2 }, db:get("user:1"))
      helpers.assert_same_typed({ 1, 2.5, "x" }, db:get("odd key with spaces and ✓"))
      assert.is_nil(db:get("gone"))
      assert.is_nil(db:get("user:2"))
      assert.equals(2, db:count())
      assert.is_true(db:close())
    end)

    it("imports a clean file with status 0, and refuses a store that is not empty", function()
      local old = dir .. "/legacy.db"
      helpers.write_file(old, "Set\na\n1\nSet\nb\n{}\n")
      local status, out = run(dir, "import-legacy", old, path)
      assert.equals(0, status)
      assert.matches("imported 2 keys", out, 1, true)
      local err
      status, _, err = run(dir, "import-legacy", old, path)
      assert.equals(1, status)
      assert.matches("not empty", err, 1, true)
    end)
  end)

  describe("stats", function()
    it("prints keys, sizes and expiry counts, as text or JSON", function()
      make_store(20)
      local status, out = run(dir, "stats", path)
      assert.equals(0, status)
      assert.matches("21 keys (1 with an expiry, 0 expired)", out, 1, true)
      status, out = run(dir, "stats", "--json", path)
      assert.equals(0, status)
      local r = assert(hurrahdb.decode(out))
      assert.equals(21, r.keys)
      assert.equals(1, r.keys_with_ttl)
      assert.equals(helpers.file_size and helpers.file_size(path) or #helpers.read_file(path), r.file_bytes)
    end)
  end)
end)
