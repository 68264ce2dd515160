-- The locations of the HTTP part of `make bench` (bench/nginx.lua starts
-- the server, bench/nginx_wrk.lua drives it): a no-op, and get and set of
-- key ?k= (value number ?n=, bench/kinds.lua's small mixed value) through
-- hurrahdb.worker and through ngx.shared.DICT + cjson. Every location
-- answers the same 10 bytes; a missing key is a 404, a refused set a 500,
-- which wrk counts as errors.

local worker = require "hurrahdb.worker"
local cjson = require "cjson"
local kinds = require "kinds"

local encode, decode = cjson.encode, cjson.decode
local value = kinds[1].value
local ngx = ngx
local var = ngx.var
local say = ngx.print
local exit = ngx.exit
local tonumber = tonumber

local BODY = "some-value" -- value(i).value: what every location answers

local _M = {}

local dict -- ngx.shared[name], set by init

-- In init_by_lua (the master, before the fork): the shared dictionary
-- `name` gets keys "user:1" .. "user:<n>".
function _M.preload_dict(name, n)
  local d = assert(ngx.shared[name], "no lua_shared_dict " .. name)
  for i = 1, n do assert(d:set("user:" .. i, encode(value(i)))) end
end

-- In init_worker_by_lua: this worker's store (its file was written before
-- nginx started), and the dictionary.
function _M.init(dir, name)
  worker.init(dir, { sync_time = 1000 })
  dict = ngx.shared[name]
end

function _M.noop()
  say(BODY)
end

function _M.hurrahdb_get()
  local db = worker.store()
  local v = db and db:get(var.arg_k)
  if not v then return exit(404) end
  say(v.value)
end

function _M.dict_get()
  local text = dict:get(var.arg_k)
  if not text then return exit(404) end
  say(decode(text).value)
end

function _M.hurrahdb_set()
  local db = worker.store()
  local v = value(tonumber(var.arg_n))
  if not (db and db:set(var.arg_k, v)) then return exit(500) end
  say(v.value)
end

function _M.dict_set()
  local v = value(tonumber(var.arg_n))
  if not dict:set(var.arg_k, encode(v)) then return exit(500) end
  say(v.value)
end

return _M
