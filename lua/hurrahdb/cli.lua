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

-- The report of hurrahdb.check, or a failure naming the file.
local function check_file(path)
  local report, err = hurrahdb.check(path)
  if not report then fail("%s", err) end
  return report
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

---------------------------------------------------------------------------
-- The parser
---------------------------------------------------------------------------

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

  local check = parser:command("check",
    "Verify a store's file (its framing and every checksum) without changing it, and say "
    .. "what it holds. Takes no lock: works while a store has the file open.")
  check:argument("file", "The store's file.")
  check:flag("--json", "One JSON object on stdout instead of text.")

  local stats = parser:command("stats", "Keys, sizes and expiry counts of a store's file.")
  stats:argument("file", "The store's file.")
  stats:flag("--json", "One JSON object on stdout instead of text.")
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
