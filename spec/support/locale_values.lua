-- Sets and gets, writes or reads floats with the process in the locale
-- arg[1] (every category), and prints what it found as name=value lines.
-- Run by spec/10-locale_spec.lua in a child process: the locales that spec
-- makes with localedef are found through LOCPATH, which the C library reads
-- once, when the process starts.
--
--   locale_values.lua <locale> roundtrip        set then get each value
--   locale_values.lua <locale> write <path>     write each value to a file
--   locale_values.lua <locale> read <path>      read them back and compare
local helpers = require "spec.helpers"
local hurrahdb = require "hurrahdb"
local testlib = require "hdb_testlib"

local locale, step, path = arg[1], arg[2], arg[3]

-- { key, value }: floats that need 15, 16 or 17 digits, the extremes, a
-- negative zero, a whole float beyond 2^53, numbers a grouping locale would
-- split with separators, and floats inside arrays (arrays, not maps: the
-- order of a map's keys differs from process to process, and the spec
-- compares the files written by two processes).
local VALUES = {
  { "tenth", 0.1 },
  { "price", 19.99 },
  { "third", 1 / 3 },
  { "sum", 0.1 + 0.2 },
  { "huge", 1e300 },
  { "minus_huge", -1e300 },
  { "largest", 1.7976931348623157e308 },
  { "smallest_normal", 2.2250738585072014e-308 },
  { "smallest", 5e-324 },
  { "negzero", -0.0 },
  { "beyond_2_53", 2.0 ^ 53 + 2 },
  { "grouped", 1234567.5 },
  { "long_grouped", 123456789012.25 },
  { "tiny", -2.5e-7 },
  { "e21", 1e21 },
  { "half", 0.5 },
  { "whole", 100.0 },
  { "arrays", { 19.99, { 0.1, 1 / 3, -0.0, 2.5, 1e21 }, { { 0.75 } } } },
}

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

assert(os.setlocale(locale), "cannot set the locale " .. locale)
print("decimal_point=" .. hex(testlib.decimal_point()))

local failures = {}
local function check(key, expected, got, err)
  if got == nil then
    failures[#failures + 1] = key .. ": " .. tostring(err)
    return
  end
  local same, why = helpers.deep_equal_typed(expected, got)
  if not same then failures[#failures + 1] = key .. ": " .. why end
end

if step == "roundtrip" then
  local db = hurrahdb.new()
  for _, row in ipairs(VALUES) do
    local ok, err = db:set(row[1], row[2])
    if ok then check(row[1], row[2], db:get(row[1])) else check(row[1], row[2], nil, err) end
  end
  assert(db:close())
elseif step == "write" then
  local db = assert(hurrahdb.new { path = path, sync_time = 0 })
  for _, row in ipairs(VALUES) do
    local ok, err = db:set(row[1], row[2])
    if not ok then check(row[1], row[2], nil, err) end
  end
  assert(db:close())
elseif step == "read" then
  local db = assert(hurrahdb.open(path))
  for _, row in ipairs(VALUES) do check(row[1], row[2], db:get(row[1])) end
  assert(db:close())
else
  error("unknown step " .. tostring(step))
end

-- The store must have put this thread's locale back after each number.
print("decimal_point_after=" .. hex(testlib.decimal_point()))
print("failures=" .. #failures)
for _, f in ipairs(failures) do print("failure=" .. f) end
