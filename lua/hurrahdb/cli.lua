-- The `hurrahdb` command: looks at, mends, moves and migrates store files
-- without writing code. `hurrahdb --help` lists the subcommands; README,
-- "The hurrahdb command", shows a session.
--
-- Exit status: 0 all is well, 1 a problem was found or the operation
-- failed, 2 bad usage. Messages go to stderr and name the file (and the
-- offset, where there is one); results go to stdout.

local argparse = require "argparse"
local hurrahdb = require "hurrahdb"

local M = {}

local EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

-- A failure the command reports and exits with (status 1 unless given).
local function fail(fmt, ...)
  error({ message = fmt:format(...) }, 0)
end

local function say(fmt, ...)
  io.stdout:write(fmt:format(...), "\n")
end

local function warn(fmt, ...)
  io.stderr:write("hurrahdb: ", fmt:format(...), "\n")
end

-- Bytes as a person reads them.
local function size(n)
  if n < 1024 then return ("%d B"):format(n) end
  local units = { "KiB", "MiB", "GiB", "TiB" }
  local u = 0
  repeat
    n = n / 1024
    u = u + 1
  until n < 1024 or u == #units
  return ("%.1f %s"):format(n, units[u])
end

-- value, or a failure with err (the message of a call that returned
-- nil, err: it names the file).
local function must(value, err)
  if not value then fail("%s", err) end
  return value
end

-- The report of hurrahdb.check, or a failure naming the file.
local function check_file(path)
  return must(hurrahdb.check(path))
end

-- What is wrong with the file, for stderr; nil if nothing.
local function problem_of(path, r)
  if r.damaged then
    return ("%s: damaged at offset %d: %s (an open refuses it; `hurrahdb repair` keeps what is "
      .. "before and moves the rest to a side file)"):format(path, r.damage_at, r.problem or "")
  elseif r.tail == "torn" then
    return ("%s: torn last batch: %d bytes at offset %d, an append a crash cut short (an open "
      .. "drops it): %s"):format(path, r.tail_bytes, r.good_bytes, r.problem or "")
  elseif r.tail == "torn header" then
    return ("%s: the header was cut short (%d bytes; a crash while the file was created): an "
      .. "open writes it again"):format(path, r.tail_bytes)
  elseif r.tail == "bad" then
    return ("%s: %d bytes at offset %d are not a valid batch, and none follows (an open moves "
      .. "them to a side file): %s"):format(path, r.tail_bytes, r.good_bytes, r.problem or "")
  end
end

local function print_report(path, r)
  say("%s: format version %d, codec %s, %s", path, r.version, r.codec, size(r.file_bytes))
  say("  %d records in %d batches: %d SET, %d DEL, %d PEXPIREAT, %d PERSIST, %d FLUSHALL",
    r.records, r.batches, r.set_records, r.del_records, r.expire_records, r.persist_records,
    r.flushall_records)
  say("  %d keys, %d of them with an expiry; %d expired (an open drops them)", r.keys,
    r.keys_with_ttl, r.expired_keys)
  local good = r.live_bytes + r.dead_bytes
  say("  live %s, dead %s (%.0f%% of the records' bytes a rewrite would drop)", size(r.live_bytes),
    size(r.dead_bytes), good > 0 and 100 * r.dead_bytes / good or 0)
end

-- Whether s is valid UTF-8 (JSON text must be).
local utf8_len = rawget(_G, "utf8") and utf8.len
local function is_utf8(s)
  if not s:find("[\128-\255]") then return true end
  if utf8_len then return utf8_len(s) ~= nil end
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local extra = c < 0x80 and 0 or (c >= 0xC2 and c <= 0xDF) and 1
      or (c >= 0xE0 and c <= 0xEF) and 2 or (c >= 0xF0 and c <= 0xF4) and 3 or nil
    if not extra then return false end
    for j = i + 1, i + extra do
      local d = s:byte(j)
      if not d or d < 0x80 or d > 0xBF then return false end
    end
    local c2 = s:byte(i + 1)
    if (c == 0xE0 and c2 < 0xA0) or (c == 0xED and c2 > 0x9F)
      or (c == 0xF0 and c2 < 0x90) or (c == 0xF4 and c2 > 0x8F) then
      return false -- overlong, surrogate or past U+10FFFF
    end
    i = i + extra + 1
  end
  return true
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_VALUE = {}
for i = 1, 64 do B64_VALUE[B64:byte(i)] = i - 1 end

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = { math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    out[#out + 1] = B64:sub(q[1] + 1, q[1] + 1) .. B64:sub(q[2] + 1, q[2] + 1)
      .. (b and B64:sub(q[3] + 1, q[3] + 1) or "=") .. (c and B64:sub(q[4] + 1, q[4] + 1) or "=")
  end
  return table.concat(out)
end

-- The bytes of base64 text, or nil if it is not base64.
local function unbase64(s)
  if #s % 4 ~= 0 or s:find("[^A-Za-z0-9+/=]") or s:find("=[^=]") or s:find("===") then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local c1, c2, c3, c4 = s:byte(i, i + 3)
    local n = B64_VALUE[c1] * 262144 + B64_VALUE[c2] * 4096 + (B64_VALUE[c3] or 0) * 64 + (B64_VALUE[c4] or 0)
    local bytes = string.char(math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
    if c4 == 61 then bytes = bytes:sub(1, c3 == 61 and 1 or 2) end
    out[#out + 1] = bytes
  end
  return table.concat(out)
end

-- Opens the file for reading (no lock), failing with a message naming it.
local function read_file(path)
  return must(hurrahdb.read(path))
end

-- A JSON string of s (valid UTF-8).
local function json_string(s)
  return assert(hurrahdb.encode(s))
end

-- One line of `dump`: the key (as "key", or "key_base64" if it is not
-- UTF-8), the value (its JSON text as stored, as "value", or
-- "value_json_base64" if that text is not UTF-8; for a codec whose text is
-- not JSON, "value_text" or "value_text_base64"), and the expiry
-- ("expires_at_ms", Unix ms, and "ttl_ms", what was left at the dump).
local function dump_line(key, text, expire_ms, json_values, now_ms)
  local parts = {}
  if is_utf8(key) then
    parts[1] = '"key":' .. json_string(key)
  else
    parts[1] = '"key_base64":"' .. base64(key) .. '"'
  end
  if json_values then
    -- JSON whose strings hold bytes that are not UTF-8 is kept exact, as
    -- the base64 of its text.
    parts[2] = is_utf8(text) and '"value":' .. text or '"value_json_base64":"' .. base64(text) .. '"'
  else
    parts[2] = is_utf8(text) and '"value_text":' .. json_string(text)
      or '"value_text_base64":"' .. base64(text) .. '"'
  end
  if expire_ms then
    parts[3] = ('"expires_at_ms":%d,"ttl_ms":%d'):format(expire_ms, math.max(0, expire_ms - now_ms))
  end
  return "{" .. table.concat(parts, ",") .. "}\n"
end

---------------------------------------------------------------------------
-- Subcommands
---------------------------------------------------------------------------

local commands = {}

function commands.check(args)
  local r = check_file(args.file)
  local problem = problem_of(args.file, r)
  if args.json then
    r.file = args.file
    r.ok = problem == nil
    say("%s", assert(hurrahdb.encode(r)))
  else
    print_report(args.file, r)
    if not problem then say("%s: ok", args.file) end
  end
  if problem then
    warn("%s", problem)
    return EXIT_PROBLEM
  end
  return EXIT_OK
end

function commands.stats(args)
  local r = check_file(args.file)
  local out = {
    file = args.file, version = r.version, codec = r.codec, file_bytes = r.file_bytes,
    keys = r.keys, keys_with_ttl = r.keys_with_ttl, expired_keys = r.expired_keys,
    live_bytes = r.live_bytes, dead_bytes = r.dead_bytes, records = r.records,
  }
  if args.json then
    say("%s", assert(hurrahdb.encode(out)))
  else
    say("%s: %d keys (%d with an expiry, %d expired), %s file: %s live, %s dead", args.file,
      r.keys, r.keys_with_ttl, r.expired_keys, size(r.file_bytes), size(r.live_bytes),
      size(r.dead_bytes))
  end
  local problem = problem_of(args.file, r)
  if problem then warn("%s", problem) end
  return EXIT_OK
end

-- Writes lines to stdout in groups (one write per group).
local function buffered_writer()
  local buf, n = {}, 0
  return function(line)
    if line then
      n = n + 1
      buf[n] = line
      if n < 1000 then return end
    end
    io.stdout:write(table.concat(buf, "", 1, n))
    buf, n = {}, 0
  end
end

-- Says what a reader found wrong, if anything; returns whether the file is
-- damaged (what follows the damage was not read).
local function report_problem(path, r)
  local problem = problem_of(path, r)
  if problem then warn("%s", problem) end
  return r.damaged
end

function commands.dump(args)
  local reader = read_file(args.file)
  local r = reader:report()
  local damaged = report_problem(args.file, r)
  local json_values = r.codec == "json"
  local prefix = args.prefix
  local write = buffered_writer()
  local n = 0
  for key, text, expire_ms in reader:pairs() do
    if not prefix or key:sub(1, #prefix) == prefix then
      write(dump_line(key, text, expire_ms, json_values, r.checked_at_ms))
      n = n + 1
    end
  end
  write()
  reader:close()
  warn("%s: dumped %d keys", args.file, n)
  return damaged and EXIT_PROBLEM or EXIT_OK
end

-- A RESP command of the given arguments.
local function resp(...)
  local parts = { ("*%d\r\n"):format(select("#", ...)) }
  for i = 1, select("#", ...) do
    local a = select(i, ...)
    parts[#parts + 1] = ("$%d\r\n%s\r\n"):format(#a, a)
  end
  return table.concat(parts)
end

-- The RESP SET of a key, with its absolute expiry.
local function set_command(key, text, expire_ms)
  if expire_ms then
    return resp("SET", key, text, "PXAT", ("%d"):format(expire_ms))
  end
  return resp("SET", key, text)
end

function commands.export(args)
  local reader = read_file(args.file)
  local r = reader:report()
  local damaged = report_problem(args.file, r)
  local write = buffered_writer()
  local n = 0
  for key, text, expire_ms in reader:pairs() do
    write(set_command(key, text, expire_ms))
    n = n + 1
  end
  write()
  reader:close()
  warn("%s: exported %d keys", args.file, n)
  return damaged and EXIT_PROBLEM or EXIT_OK
end

-- The key, value and expiry of a dump line, or nil and why.
local function parse_dump_line(line)
  local t = hurrahdb.decode(line)
  if type(t) ~= "table" then return nil, "not a JSON object" end
  local key = t.key
  if key == nil and t.key_base64 ~= nil then
    key = type(t.key_base64) == "string" and unbase64(t.key_base64)
    if not key then return nil, "key_base64 is not base64" end
  end
  if type(key) ~= "string" then return nil, "no key (a string \"key\" or \"key_base64\")" end
  if t.value_text ~= nil or t.value_text_base64 ~= nil then
    return nil, "the value is a codec's text, not JSON: load it with a program that opens the store with that codec"
  end
  local value = t.value
  if value == nil and t.value_json_base64 ~= nil then
    local text = type(t.value_json_base64) == "string" and unbase64(t.value_json_base64)
    if not text then return nil, "value_json_base64 is not base64" end
    local why
    value, why = hurrahdb.decode(text)
    if value == nil then return nil, "value_json_base64: " .. why end
  end
  if value == nil then return nil, "no value" end
  local expires = t.expires_at_ms
  if expires ~= nil and (type(expires) ~= "number" or expires <= 0 or expires % 1 ~= 0) then
    return nil, "expires_at_ms is not a time in ms"
  end
  return key, value, expires
end

function commands.load(args)
  local db = must(hurrahdb.open(args.file, { sync_time = 1000 }))
  local loaded, kept, expired, lineno = 0, 0, 0, 0
  local now_ms = hurrahdb.clock_ms()
  local ok, problem = pcall(function()
    for line in io.stdin:lines() do
      lineno = lineno + 1
      if line:find("%S") then
        local key, value, expires = parse_dump_line(line)
        if not key then fail("stdin, line %d: %s", lineno, value) end
        local opts = nil
        if expires then
          if expires <= now_ms then
            expired = expired + 1
            goto continue
          end
          opts = { ttl = (expires - now_ms) / 1000 }
        end
        local done, why
        if args.replace then
          done, why = db:set(key, value, opts)
        else
          done, why = db:add(key, value, opts)
        end
        if done == nil then fail("stdin, line %d: key %q: %s", lineno, key, why) end
        if done then loaded = loaded + 1 else kept = kept + 1 end
      end
      ::continue::
    end
  end)
  local closed, cerr = db:close()
  if not ok then error(problem, 0) end
  if not closed then fail("%s", cerr) end
  warn("%s: loaded %d keys; %d already there were kept%s; %d had expired", args.file, loaded,
    kept, args.replace and "" or " (--replace overwrites them)", expired)
  return EXIT_OK
end

-- Whether stderr is a terminal (progress is shown only there).
local function stderr_is_terminal()
  local ok = os.execute("test -t 2")
  return ok == true or ok == 0
end

-- A progress line on stderr, rewritten at most once a second, when stderr
-- is a terminal: done of total bytes, the rate and what is left.
local function progress(what, total)
  if not stderr_is_terminal() then return function() end end
  local started, last = os.time(), os.time()
  return function(done, finished)
    local now = os.time()
    if not finished and now == last then return end
    last = now
    local secs = math.max(now - started, 1)
    local rate = done / secs
    local eta = rate > 0 and (total - done) / rate or 0
    io.stderr:write(("\r%s: %s of %s, %s/s, %ds left   "):format(what, size(done), size(total),
      size(math.floor(rate)), math.floor(eta)))
    if finished then io.stderr:write("\n") end
  end
end

function commands.compact(args)
  local before = check_file(args.file)
  local db = must(hurrahdb.open(args.file))
  local ok, rerr = db:rewrite({ wait = true })
  local closed, cerr = db:close()
  if not ok then fail("%s: %s", args.file, rerr) end
  if not closed then fail("%s", cerr) end
  local after = check_file(args.file)
  say("%s: %s -> %s (%d keys)", args.file, size(before.file_bytes), size(after.file_bytes), after.keys)
  return EXIT_OK
end

-- Reads y or n from stdin.
local function confirmed(question)
  io.stderr:write(question, " [y/N] ")
  local answer = io.stdin:read("l")
  return answer ~= nil and answer:match("^%s*[yY]") ~= nil
end

function commands.repair(args)
  local r = check_file(args.file)
  local plan
  if r.damaged then
    plan = ("keep the %d bytes before offset %d (%d keys); move the %d bytes from there on to "
      .. "%s.damaged-%d"):format(r.damage_at, r.damage_at, r.keys, r.file_bytes - r.damage_at,
      args.file, r.damage_at)
  elseif r.tail == "bad" then
    plan = ("keep the %d bytes before offset %d (%d keys); move the %d bytes from there on to "
      .. "%s.damaged-%d"):format(r.good_bytes, r.good_bytes, r.keys, r.tail_bytes, args.file, r.good_bytes)
  elseif r.tail == "torn" then
    plan = ("drop the torn last batch: %d bytes at offset %d, never acknowledged (%d keys kept)")
      :format(r.tail_bytes, r.good_bytes, r.keys)
  elseif r.tail == "torn header" then
    plan = "write the header again (the file holds no batch)"
  else
    say("%s: nothing to repair (%d keys)", args.file, r.keys)
    return EXIT_OK
  end
  warn("%s", problem_of(args.file, r))
  say("%s: repair will %s", args.file, plan)
  if not args.yes and not confirmed("Repair " .. args.file .. "?") then
    warn("%s: not repaired", args.file)
    return EXIT_PROBLEM
  end
  local warnings = {}
  local db = must(hurrahdb.open(args.file, {
    repair = true,
    on_warning = function(message) warnings[#warnings + 1] = message end,
  }))
  local closed, cerr = db:close()
  for _, w in ipairs(warnings) do say("%s", w) end
  if not closed then fail("%s", cerr) end
  say("%s: repaired (%d keys)", args.file, check_file(args.file).keys)
  return EXIT_OK
end

-- A RESP reply read from a socket: true for +..., or nil and the error text.
local function read_reply(conn)
  local line, err = conn:receive("*l")
  if not line then return nil, "connection: " .. tostring(err) end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" or kind == ":" then return true end
  if kind == "-" then return nil, rest end
  if kind == "$" then
    local n = tonumber(rest)
    if n and n >= 0 then conn:receive(n + 2) end
    return true
  end
  return nil, "unexpected reply: " .. line
end

function commands.push(args)
  local socket = require "socket"
  local host, port = args.redis:match("^(.*):(%d+)$")
  if not host then fail("--redis: HOST:PORT expected, got %s", args.redis) end
  local reader = read_file(args.file)
  local r = reader:report()
  local damaged = report_problem(args.file, r)
  local conn, cerr = socket.connect(host, tonumber(port))
  if not conn then reader:close() fail("cannot connect to Redis at %s: %s", args.redis, cerr) end
  conn:settimeout(30)
  local function call(cmd)
    local ok, err = conn:send(cmd)
    if not ok then return nil, "connection: " .. tostring(err) end
    return read_reply(conn)
  end
  if args.password then
    local ok, err = call(resp("AUTH", args.password))
    if not ok then conn:close() reader:close() fail("Redis at %s refused AUTH: %s", args.redis, err) end
  end
  local BATCH = 1000
  local pending, keys, sent, replied = {}, {}, 0, 0
  local show = progress("push " .. args.file, r.live_bytes)
  local bytes = 0
  local function flush()
    if #pending == 0 then return end
    local ok, err = conn:send(table.concat(pending))
    if not ok then fail("connection to %s lost after %d replies: %s", args.redis, replied, tostring(err)) end
    for i = 1, #pending do
      local good, why = read_reply(conn)
      if not good then
        fail("Redis at %s: command %d (SET of key %q) failed: %s; the %d before it were applied",
          args.redis, replied + 1, keys[i], why, replied)
      end
      replied = replied + 1
    end
    pending, keys = {}, {}
    show(bytes)
  end
  local ok, problem = pcall(function()
    for key, text, expire_ms in reader:pairs() do
      local cmd = set_command(key, text, expire_ms)
      pending[#pending + 1] = cmd
      keys[#keys + 1] = key
      sent = sent + 1
      bytes = bytes + #cmd
      if #pending == BATCH then flush() end
    end
    flush()
  end)
  conn:close()
  reader:close()
  show(bytes, true)
  if not ok then error(problem, 0) end
  warn("%s: pushed %d keys to %s (%d replies OK)", args.file, sent, args.redis, replied)
  return damaged and EXIT_PROBLEM or EXIT_OK
end

-- import-legacy: the file of the Rust crate hurrahdb 0.1.0, lines of
-- "Set\n<key>\n<json>\n" and "Del\n<key>\n", later records winning.
commands["import-legacy"] = function(args)
  local input, oerr = io.open(args.old, "rb")
  if not input then fail("cannot open %s: %s", args.old, oerr) end
  local data = input:read("a")
  input:close()
  local existing = io.open(args.new, "rb")
  if existing then
    local size_now = existing:seek("end")
    existing:close()
    if size_now > 0 then fail("%s exists and is not empty: import into a new store", args.new) end
  end
  -- The records, in order: later ones win, as the crate's own reader did.
  local final, order = {}, {}
  local skipped, problems = 0, {}
  local pos, lineno, n = 1, 0, #data
  local function next_line()
    if pos > n then return nil end
    local stop = data:find("\n", pos, true)
    lineno = lineno + 1
    if not stop then
      local line = data:sub(pos)
      pos = n + 1
      return line, false -- no newline: the file ends inside this line
    end
    local line = data:sub(pos, stop - 1)
    pos = stop + 1
    return line, true
  end
  while true do
    local action, complete = next_line()
    if action == nil then break end
    local at = lineno
    if action == "Set" or action == "Del" then
      local key, kdone = next_line()
      local value, vdone
      if action == "Set" and key ~= nil and kdone then value, vdone = next_line() end
      if key == nil or not kdone or (action == "Set" and (value == nil or not vdone)) then
        problems[#problems + 1] = ("%s, line %d: the last record (%s) is cut short: not imported")
          :format(args.old, at, action)
        skipped = skipped + 1
        break
      end
      if key == "" then
        problems[#problems + 1] = ("%s, line %d: a %s of an empty key (the crate refused those): "
          .. "not imported"):format(args.old, at + 1, action)
        skipped = skipped + 1
      elseif action == "Del" then
        if final[key] ~= nil then final[key] = false end
      else
        if final[key] == nil then order[#order + 1] = key end
        final[key] = { value = value, line = at + 2 }
      end
    else
      problems[#problems + 1] = ("%s, line %d: %q is not Set or Del: the rest of the file cannot be "
        .. "read as records and is not imported"):format(args.old, at, action)
      skipped = skipped + 1
      break
    end
    if not complete then break end
  end
  local db = must(hurrahdb.open(args.new, { sync_time = 1000 }))
  local imported, invalid = 0, 0
  for _, key in ipairs(order) do
    local rec = final[key]
    if rec then
      local value, why = hurrahdb.decode(rec.value)
      if value == nil then
        invalid = invalid + 1
        problems[#problems + 1] = ("%s, line %d: key %q: not valid JSON (%s): not imported")
          :format(args.old, rec.line, key, why)
      else
        local ok, serr = db:set(key, value)
        if not ok then
          invalid = invalid + 1
          problems[#problems + 1] = ("%s, line %d: key %q: %s: not imported"):format(args.old,
            rec.line, key, serr)
        else
          imported = imported + 1
        end
      end
    end
  end
  must(db:close())
  for _, p in ipairs(problems) do warn("%s", p) end
  say("%s: imported %d keys into %s; %d values not imported, %d records skipped", args.old,
    imported, args.new, invalid, skipped)
  return (#problems > 0) and EXIT_PROBLEM or EXIT_OK
end

---------------------------------------------------------------------------
-- The parser
---------------------------------------------------------------------------

local JSON_FLAG = { "--json", "One JSON object on stdout instead of text." }

-- Each subcommand: its name, what it does, its arguments (a file if not
-- given), flags and options.
local SUBCOMMANDS = {
  { "check", "Verify a store's file (its framing and every checksum) without changing it, and say "
      .. "what it holds. Takes no lock: works while a store has the file open.",
    flags = { JSON_FLAG } },
  { "stats", "Keys, sizes and expiry counts of a store's file.", flags = { JSON_FLAG } },
  { "dump", "The keys of a store's file as JSON lines on stdout, one per key: {\"key\": ..., "
      .. "\"value\": ..., \"expires_at_ms\": ..., \"ttl_ms\": ...} (\"key_base64\" for a key that "
      .. "is not UTF-8). Takes no lock.",
    options = { { "--prefix", "Only the keys that start with this." } } },
  { "load", "Read the JSON lines of dump from stdin into a store's file (created if absent). Keys "
      .. "already there are kept unless --replace.",
    flags = { { "--replace", "Overwrite keys the store has." } } },
  { "export", "The keys of a store's file as Redis commands (RESP: SET key value [PXAT ms]) on "
      .. "stdout, nothing else: for redis-cli --pipe. Takes no lock." },
  { "push", "Send the keys of a store's file to a running Redis (6.2 or later: SET ... PXAT), "
      .. "pipelined, stopping at the first error with its position. Takes no lock.",
    options = { { "--redis", "The server, HOST:PORT.", required = true },
                { "--password", "Sent with AUTH first." } } },
  { "compact", "Rewrite a store's file with only its keys (what db:rewrite() does), offline: the "
      .. "store must not be open elsewhere." },
  { "repair", "Say what repair would do to a damaged or torn file, ask, then do it (what an open "
      .. "with repair = true does: the good batches are kept, the rest moved to a side file). "
      .. "Refused while another process holds the store.",
    flags = { { "--yes", "Do not ask." } } },
  { "import-legacy", "Read a file of the Rust crate hurrahdb 0.1.0 (Set/Del records) into a new "
      .. "store. Values that are not valid JSON, and a cut-short last record, are reported with "
      .. "their line number, never dropped silently.",
    args = { { "old", "The Rust crate's file." }, { "new", "The new store's file (absent or empty)." } } },
}

local function build_parser(name)
  local parser = argparse(name or "hurrahdb",
    "Look at, mend, move and migrate hurrahdb store files.")
    :epilog("Exit status: 0 all is well, 1 a problem was found or the operation failed, "
      .. "2 bad usage. See README, \"The hurrahdb command\".")
  parser:command_target("command")
  parser:require_command(true)
  -- Bad usage: the usage of the (sub)command, the error, and status 2.
  parser.error = function(p, msg)
    io.stderr:write(("%s\n\nError: %s\n"):format(p:get_usage(), msg))
    os.exit(EXIT_USAGE)
  end

  for _, spec in ipairs(SUBCOMMANDS) do
    local cmd = parser:command(spec[1], spec[2])
    for _, a in ipairs(spec.args or { { "file", "The store's file." } }) do cmd:argument(a[1], a[2]) end
    for _, f in ipairs(spec.flags or {}) do cmd:flag(f[1], f[2]) end
    for _, o in ipairs(spec.options or {}) do
      local opt = cmd:option(o[1], o[2])
      if o.required then opt:args(1):count(1) end
    end
  end
  return parser
end

-- Runs the command line `argv` (arg's list); returns the exit status.
function M.main(argv, name)
  local args = build_parser(name):parse(argv)
  local ok, status = pcall(commands[args.command], args)
  if ok then return status end
  if type(status) == "table" and status.message then
    warn("%s", status.message)
    return EXIT_PROBLEM
  end
  warn("internal error: %s", tostring(status))
  return EXIT_PROBLEM
end

return M
