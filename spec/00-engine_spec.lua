-- The C engine's own checks (spec/engine_test.c): SipHash and CRC-32C
-- against published vectors, and the bound on the work any single call does
-- while the hash table grows or shrinks. `make test` builds the program and
-- names it in HURRAHDB_ENGINE_TEST.

local helpers = require "spec.helpers"

describe("the engine", function()
  local program = os.getenv("HURRAHDB_ENGINE_TEST")
    or ("./build/" .. (rawget(_G, "jit") and "luajit" or _VERSION:match("%d+%.%d+")) .. "/engine_test")

  local out = helpers.capture(helpers.shell_quote(program) .. " 2>&1")
  local results = {}
  for status, name, why in out:gmatch("(n?o?t? ?ok) ([^:\n]+):? ?([^\n]*)") do
    results[#results + 1] = { ok = status == "ok", name = name, why = why }
  end

  it("test program ran and reported its checks", function()
    assert.is_true(#results >= 10, "engine_test printed: " .. out)
  end)

  for _, r in ipairs(results) do
    it(r.name, function()
      assert.is_true(r.ok, r.why)
    end)
  end
end)
