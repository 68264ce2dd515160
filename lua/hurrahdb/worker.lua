-- hurrahdb.worker: one hurrahdb store per nginx worker, opened after the
-- fork, handed over across `nginx -s reload`, closed when the worker exits:
-- the pattern "Using hurrahdb in OpenResty" in the README recommends.
-- Installed with the rock; OpenResty (ngx) only.
--
--   init_worker_by_lua_block { require("hurrahdb.worker").init("/var/lib/app", { sync_time = 100 }) }
--   exit_worker_by_lua_block { require("hurrahdb.worker").exit() }
--   content_by_lua_block     { local db, err = require("hurrahdb.worker").store() ... }
--
-- Worker i keeps its data in <dir>/worker-<i>.aof. At a reload the new
-- worker i starts while the old worker i still finishes its requests and
-- holds that file (one writer per file), so the new one retries the open
-- from a timer, without blocking its event loop, until the old one has
-- closed the file; requests that reach it meanwhile wait in store().

local hurrahdb = require "hurrahdb"

local _M = { _VERSION = hurrahdb._VERSION }

local RETRY_SECONDS = 0.02

local db            -- this worker's store, once open
local failure       -- why it cannot be opened, if it cannot
local failure_code  -- ... and the code of that failure
local path

-- Opens this worker's store, or schedules another try while the file is
-- locked. Any other failure is kept for store() to return at once, and
-- logged once: a refused open (nil, err, code), and also a raise, such as
-- a misspelled option or an on_warning function that raises (kept with the
-- code "invalid": the arguments given to init() are at fault). Uncaught, a
-- raise would leave store() waiting out its timeout to report a lock that
-- no one holds.
local function open_store(premature, options)
  if premature then return end -- the worker is exiting
  local ok, store, err, code = pcall(hurrahdb.open, path, options)
  if not ok then
    err, code = tostring(store), "invalid"
  elseif store then
    db = store
    return
  elseif code == "locked" then
    -- The worker this one replaces still holds the file. (A file this
    -- process holds, "already open", stays held: that is an error to
    -- report now.)
    local tok, terr = ngx.timer.at(RETRY_SECONDS, open_store, options)
    if tok then return end
    -- The file is still held ("locked" stays the code), but no later try
    -- will come to see it released.
    err = "cannot retry opening " .. path .. ": " .. tostring(terr)
  end
  failure, failure_code = err, code
  ngx.log(ngx.ERR, "hurrahdb: ", err)
end

-- In init_worker_by_lua*: opens (or schedules the open of) this worker's
-- store in `dir`. `options` are hurrahdb.open's.
function _M.init(dir, options)
  local id = ngx.worker.id()
  if id == nil then return end -- not a worker (a privileged agent)
  path = dir .. "/worker-" .. id .. ".aof"
  open_store(false, options)
end

-- In a request handler: this worker's store, waiting (yielding, up to
-- `timeout` seconds, default 10) while a reload hands the file over.
-- Returns the store, or nil, an error and its code (as hurrahdb's methods
-- return them): at once the open's own error if it failed (or raised,
-- "invalid"), else after `timeout` that the file is still held ("locked").
function _M.store(timeout)
  if db then return db end
  if not path and not failure then
    -- Nothing will ever open a store here: say so now instead of waiting.
    return nil, "hurrahdb.worker: init() did not run in this worker, or failed before it"
      .. " chose the file (see the error log)", "invalid"
  end
  local deadline = ngx.now() + (timeout or 10)
  while not db do
    if failure then return nil, failure, failure_code end
    if ngx.now() >= deadline then
      return nil, "hurrahdb: " .. tostring(path) .. " is still held by the worker this one replaces",
        "locked"
    end
    ngx.sleep(RETRY_SECONDS)
  end
  return db
end

-- In exit_worker_by_lua*: writes and syncs what is pending and releases the
-- file for the worker that replaces this one.
function _M.exit()
  if not db then return end
  local ok, err = db:close()
  if not ok then ngx.log(ngx.ERR, "hurrahdb: ", err) end
end

return _M
