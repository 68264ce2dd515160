-- The process that the crash specs kill. Opens the store at arg[1] with
-- sync_time = arg[2] and writes a known sequence of operations under the key
-- prefix arg[3], printing "ack N" once operation N has returned true, and,
-- every arg[4] operations (0: never), "synced N" once db:sync() returned.
-- arg[5] is the fsync option ("true" or "false"); arg[6], if given, a pause
-- in ms after each operation, and then each ack also carries the time
-- (socket.gettime) it returned: "ack N T".
-- arg[7], if given and not 0, starts a rewrite (db:rewrite(), in the
-- background) after every arg[7] operations, so that kills land during
-- rewrites.
-- Operation N deletes key N-5 when N is a multiple of 10, else sets key N.
local hurrahdb = require "hurrahdb"
local pace = tonumber(arg[6] or "")
if pace == 0 then pace = nil end
local rewrite_every = tonumber(arg[7] or "") or 0
local socket = pace and require "socket"
io.stdout:setvbuf("no")

local path, sync_time, prefix, sync_every = arg[1], tonumber(arg[2]), arg[3], tonumber(arg[4])
local db = assert(hurrahdb.open(path, { sync_time = sync_time, fsync = arg[5] ~= "false",
  on_warning = function() end }))
print("ready")
local n = 0
while true do
  n = n + 1
  if n % 10 == 0 then
    assert(db:delete(prefix .. (n - 5)))
  else
    assert(db:set(prefix .. n, { n = n, pad = string.rep("x", n % 50) }))
  end
  if pace then
    print(("ack %d %.6f"):format(n, socket.gettime()))
    socket.sleep(pace / 1000)
  else
    print("ack " .. n)
  end
  if rewrite_every > 0 and n % rewrite_every == 0 then
    local ok, err = db:rewrite()
    assert(ok or err:find("already running", 1, true), err)
  end
  if sync_every > 0 and n % sync_every == 0 then
    assert(db:sync())
    print("synced " .. n)
  end
end
