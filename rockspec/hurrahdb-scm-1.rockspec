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
}
build = {
   type = "builtin",
   modules = {
      hurrahdb = {
         sources = {
            "src/hdb_buf.c",
            "src/hdb_siphash.c",
            "src/hdb_crc32c.c",
            "src/hdb_table.c",
            "src/hdb_aof.c",
            "src/hdb_file.c",
            "src/hdb_flusher.c",
            "src/hdb_lock.c",
            "src/hdb_store.c",
            "src/lvalue.c",
            "src/lhurrahdb.c",
         },
         defines = { "_POSIX_C_SOURCE=200809L" },
         incdirs = { "src" },
         libraries = { "pthread" },
      },
      -- OpenResty only: one store per nginx worker (README, "Using hurrahdb in OpenResty")
      ["hurrahdb.worker"] = "lua/hurrahdb/worker.lua",
   },
}
