-- Numbers in stored values do not depend on the locale. A program (or the
-- host it runs in) may set a locale whose decimal point is not '.', is
-- several bytes long (U+066B in ps_AF), or that groups thousands; floats are
-- still written with '.', come back bit for bit, and a file written under
-- one locale reads back exactly under any other.
--
-- The locales are made at test time with localedef in a temporary directory
-- that the children find through LOCPATH, which the C library reads only
-- when a process starts: each case runs in a child process.

local helpers = require "spec.helpers"

local LOCALES = {
  { name = "ps_AF.UTF-8", source = "ps_AF", point = "d9ab",
    about = "decimal point U+066B, two bytes; thousands grouped with U+066C" },
  { name = "de_DE.UTF-8", source = "de_DE", point = "2c",
    about = "decimal point ','; thousands grouped with '.'" },
  { name = "de_CH.UTF-8", source = "de_CH", point = "2e",
    about = "decimal point '.'; thousands grouped with U+2019, three bytes" },
}

-- The text each of these floats must have in the file, in any locale (the
-- other keys are checked by the comparison with the file "C" writes).
local TEXTS = {
  tenth = "0.1",
  price = "19.99",
  third = "0.3333333333333333",
  huge = "1e+300",
  negzero = "-0.0",
  beyond_2_53 = "9007199254740994.0",
  grouped = "1234567.5",
  long_grouped = "123456789012.25",
  tiny = "-2.5e-07",
}

local function missing_tools()
  if helpers.capture("command -v localedef") == "" then
    return "localedef is not installed"
  end
  if not helpers.file_exists("/usr/share/i18n/charmaps/UTF-8.gz") then
    return "/usr/share/i18n/charmaps/UTF-8.gz is missing"
  end
  for _, loc in ipairs(LOCALES) do
    local source = "/usr/share/i18n/locales/" .. loc.source
    if not helpers.file_exists(source) then return source .. " is missing" end
  end
  return nil
end

local missing = missing_tools()
if missing then
  describe("numbers in values under other locales", function()
    pending("skipped: " .. missing .. " (install the Debian package locales)")
  end)
  return
end

describe("numbers in values under other locales", function()
  local dir

  -- Runs locale_values.lua in a child; returns its name=value report (with
  -- the failures as a list) and its whole output.
  local function child(locale, step, path)
    local out = helpers.capture(helpers.lua_command_env({ LOCPATH = dir },
      "spec/support/locale_values.lua", locale, step, path) .. " 2>&1; echo exit=$?")
    local report = { failure = {} }
    for name, value in out:gmatch("([%w_]+)=([^\n]*)") do
      if name == "failure" then
        report.failure[#report.failure + 1] = value
      else
        report[name] = value
      end
    end
    return report, out
  end

  local function assert_exact(report, out)
    assert.equals("0", report.failures, "values that did not come back exactly:\n" .. out)
    assert.equals("0", report.exit, out)
  end

  local function aof_values(path)
    local data = assert(helpers.read_file(path))
    return helpers.replay_aof(assert(helpers.parse_aof(data))), data
  end

  setup(function()
    dir = helpers.tmpdir()
    -- All at once: each takes a second or two.
    local jobs = {}
    for _, loc in ipairs(LOCALES) do
      jobs[#jobs + 1] = string.format("localedef -i %s -f UTF-8 %s >%s 2>&1 &", loc.source,
        helpers.shell_quote(dir .. "/" .. loc.name), helpers.shell_quote(dir .. "/" .. loc.source .. ".log"))
    end
    helpers.execute(table.concat(jobs, " ") .. " wait")
    for _, loc in ipairs(LOCALES) do
      assert(helpers.file_exists(dir .. "/" .. loc.name .. "/LC_NUMERIC"),
        "localedef did not make " .. loc.name .. ": " .. tostring(helpers.read_file(dir .. "/" .. loc.source .. ".log")))
    end
    local report, out = child("C", "write", dir .. "/C.aof")
    assert(report.failures == "0" and report.exit == "0", "writing under \"C\" failed:\n" .. out)
  end)

  teardown(function() helpers.rmdir(dir) end)

  for _, loc in ipairs(LOCALES) do
    describe("under " .. loc.name .. " (" .. loc.about .. ")", function()
      local path

      lazy_setup(function()
        path = dir .. "/" .. loc.source .. ".aof"
        local report, out = child(loc.name, "write", path)
        assert(report.failures == "0" and report.exit == "0", "writing under " .. loc.name .. " failed:\n" .. out)
      end)

      it("set then get returns every float exactly, and the program keeps its locale", function()
        local report, out = child(loc.name, "roundtrip")
        -- the child really ran under the locale, and is still in it
        assert.equals(loc.point, report.decimal_point, out)
        assert_exact(report, out)
        assert.equals(loc.point, report.decimal_point_after, out)
      end)

      it("writes values that read back exactly under \"C\"", function()
        local report, out = child("C", "read", path)
        assert.equals("2e", report.decimal_point, out)
        assert_exact(report, out)
      end)

      it("reads back exactly the values written under \"C\"", function()
        local report, out = child(loc.name, "read", dir .. "/C.aof")
        assert.equals(loc.point, report.decimal_point, out)
        assert_exact(report, out)
      end)

      it("writes the same file as \"C\": '.' decimal points and no grouping", function()
        local values, data = aof_values(path)
        for key, text in pairs(TEXTS) do
          assert.equals(text, values[key], "the text of " .. key)
        end
        assert.is_nil(data:find("[\128-\255]"), "a byte of a multibyte decimal point or separator")
        -- the same records (each file has its own key, so its own tags)
        assert.same(assert(helpers.parse_aof(helpers.read_file(dir .. "/C.aof"))),
          assert(helpers.parse_aof(data)))
      end)
    end)
  end
end)
