rockspec_format = "3.0"
package = "hurrahdb"
version = "scm-1"
source = {
   url = "git+https://github.com/hurrahdb/hurrahdb.git",
   branch = "main",
}
description = {
   summary = "Embedded, persistent key-value store for Lua with a Redis-compatible append-only file",
   detailed = [[
hurrahdb keeps keys and JSON values in memory, in a C hash table, and can
persist every write to an append-only file that is replayed at open and
flushed by a background thread. The file is a valid Redis 7 AOF. Values come
back exactly as they were stored, or are refused with an error. Works in Lua
5.1 to 5.4 and LuaJIT (OpenResty).
]],
   homepage = "https://github.com/hurrahdb/hurrahdb",
   license = "MIT",
   labels = { "database", "key-value", "persistence", "openresty" },
}
dependencies = {
   "lua >= 5.1, < 5.5",
   "argparse >= 0.7", -- for the hurrahdb command only
}
-- The Makefile's `rock` and `rock-install` targets: the same sources and
-- flags as `make`, so the module exports luaopen_hurrahdb and nothing else.
build = {
   type = "make",
   build_target = "rock",
   build_variables = {
      CC = "$(CC)",
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      LUA_INCDIR = "$(LUA_INCDIR)",
   },
   install_target = "rock-install",
   -- the command (README, "The hurrahdb command"); its code is
   -- hurrahdb.cli, which rock-install installs
   install = {
      bin = { hurrahdb = "lua/bin/hurrahdb" },
   },
   install_variables = {
      -- the C module hurrahdb, and hurrahdb.worker for OpenResty (README,
      -- "Using hurrahdb in OpenResty")
      INST_LIBDIR = "$(LIBDIR)",
      INST_LUADIR = "$(LUADIR)",
   },
}
