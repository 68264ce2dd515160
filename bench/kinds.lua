-- The three kinds of values of `make bench`, shared by bench/bench.lua
-- (Lua 5.4), bench/nginx.lua (Lua 5.4) and bench/nginx_worker.lua and
-- bench/nginx_http.lua (LuaJIT inside nginx), so that every part stores the
-- same values. Value i is the value of key "user:<i>"; check(v, i) says
-- whether a get returned value i.

local CITIES = { "Lisbon", "Porto", "Madrid", "Lyon", "Turin", "Gdansk", "Leeds", "Ghent" }
local WORDS = { "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
                "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore",
                "magna", "aliqua", "enim", "ad", "minim", "veniam", "quis", "nostrud" }

-- 918 bytes of words, a different text for each i: a slice of a pool of
-- words, at an offset that depends on i. Values that differed only in a few
-- digits would make LuaJIT's string hash, which reads a few bytes of a long
-- string, collide for every one of them. The arithmetic stays exact in
-- doubles, so Lua 5.4 and LuaJIT make the same texts.
local TEXT_BYTES = 918
local pool
do
  local words, len, x = {}, 0, 1
  while len < 65536 do
    x = (x * 75 + 74) % 65537
    local w = WORDS[x % #WORDS + 1]
    words[#words + 1] = w
    len = len + #w + 1
  end
  pool = table.concat(words, " ")
end
local function text(i)
  local offset = (i * 9973) % (#pool - TEXT_BYTES) + 1
  return pool:sub(offset, offset + TEXT_BYTES - 1)
end

return {
  {
    name = "mixed",
    label = "small mixed values",
    describe = '{value="some-value", n=i, tags={"a","b"}}',
    keys_share = 1, -- of --keys
    value = function(i) return { value = "some-value", n = i, tags = { "a", "b" } } end,
    check = function(v, i) return type(v) == "table" and v.n == i end,
  },
  {
    name = "strings",
    label = "small string-only maps",
    describe = '{name="user"..i, email="user"..i.."@example.com", city=<one of 8 names>}',
    keys_share = 1,
    value = function(i)
      return { name = "user" .. i, email = "user" .. i .. "@example.com", city = CITIES[i % #CITIES + 1] }
    end,
    check = function(v, i) return type(v) == "table" and v.name == "user" .. i end,
  },
  {
    name = "large",
    label = "1 KB values",
    describe = "the small mixed value plus 918 bytes of text (words, different for each key) and a map of three numbers",
    keys_share = 4, -- a quarter of --keys
    value = function(i)
      return { value = "some-value", n = i, tags = { "a", "b" }, text = text(i),
               attrs = { created = 1700000000 + i, score = i / 7, ok = true } }
    end,
    check = function(v, i) return type(v) == "table" and v.n == i end,
  },
}
