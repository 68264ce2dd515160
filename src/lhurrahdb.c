/*
 * lhurrahdb: the Lua binding, `require "hurrahdb"`.
 *
 * A store is a full userdata holding the engine handle and a scratch buffer
 * for encoding values. Conventions follow LuaFileSystem and OpenResty: wrong
 * argument types raise; runtime failures return nil and a message; one
 * idempotent close path serves close(), __gc and __close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcompat.h"
#include "lvalue.h"
#include "hurrahdb.h"

#define STORE_MT "hurrahdb.store"
/* Scratch capacity kept between calls; a larger one (after a big value) is
 * released so that one big value does not pin its size for the store's life. */
#define SCRATCH_KEEP (64u * 1024u)

typedef struct lstore {
    hdb_store *db;  /* NULL once closed */
    hdb_buf scratch;
} lstore;

static lstore *check_store(lua_State *L)
{
    return (lstore *)luaL_checkudata(L, 1, STORE_MT);
}

static lstore *check_open(lua_State *L)
{
    lstore *s = check_store(L);
    if (s->db == NULL)
        luaL_error(L, "store is closed");
    return s;
}

/* Keys are strings; a number is converted the way tostring converts it. */
static const char *check_key(lua_State *L, int idx, size_t *len)
{
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
        const char *msg = lua_pushfstring(L, "string expected, got %s",
                                          luaL_typename(L, idx));
        luaL_argerror(L, idx, msg);
    }
    return lua_tolstring(L, idx, len);
}

static int push_error(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* ---- opening ---- */

static int option_error(lua_State *L, const char *fn, const char *name, const char *want)
{
    return luaL_error(L, "%s: option '%s' must be %s (got %s)", fn, name, want,
                      luaL_typename(L, -1));
}

/* Checks that the option value on top of the stack is a whole number from 0
 * to max, and returns it. */
static double check_whole_option(lua_State *L, const char *fn, const char *name, double max)
{
    if (lua_type(L, -1) != LUA_TNUMBER)
        option_error(L, fn, name, "a number");
    double v = (double)lua_tonumber(L, -1);
    if (!(v >= 0 && v <= max) || v != (double)(uint64_t)v) {
        char limit[32];
        snprintf(limit, sizeof limit, "%.0f", max);
        luaL_error(L, "%s: option '%s' must be a whole number from 0 to %s (got %s)",
                   fn, name, limit, lua_tostring(L, -1));
    }
    return v;
}

/* Reads the options table at idx into opt. Unknown names and wrong types
 * raise, so that a typo is never silently ignored. `path_allowed` is 0 for
 * open(), which takes the path as its own argument. */
static void read_options(lua_State *L, int idx, const char *fn, int path_allowed,
                         hdb_options *opt)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            luaL_error(L, "%s: option names must be strings (got a %s key)", fn,
                       luaL_typename(L, -2));
        }
        const char *name = lua_tostring(L, -2);
        if (strcmp(name, "path") == 0) {
            if (!path_allowed)
                luaL_error(L, "%s: give the path as the first argument, not as option 'path'", fn);
            if (lua_type(L, -1) != LUA_TSTRING)
                option_error(L, fn, name, "a string");
            opt->path = lua_tostring(L, -1);
        } else if (strcmp(name, "sync_time") == 0) {
            opt->sync_time_ms = (unsigned)check_whole_option(L, fn, name, 86400000.0);
        } else if (strcmp(name, "fsync") == 0) {
            if (lua_type(L, -1) != LUA_TBOOLEAN)
                option_error(L, fn, name, "a boolean");
            opt->use_fsync = lua_toboolean(L, -1);
        } else if (strcmp(name, "repair") == 0) {
            if (lua_type(L, -1) != LUA_TBOOLEAN)
                option_error(L, fn, name, "a boolean");
            opt->repair = lua_toboolean(L, -1);
        } else if (strcmp(name, "lock_timeout") == 0) {
            opt->lock_timeout_ms = (unsigned)check_whole_option(L, fn, name, 86400000.0);
        } else if (strcmp(name, "max_pending") == 0) {
            opt->max_pending = (uint64_t)check_whole_option(L, fn, name, 1099511627776.0);
            if (opt->max_pending < 4096)
                luaL_error(L, "%s: option 'max_pending' must be at least 4096 bytes", fn);
        } else if (strcmp(name, "on_warning") == 0) {
            if (lua_type(L, -1) != LUA_TFUNCTION)
                option_error(L, fn, name, "a function");
        } else {
            luaL_error(L, "%s: unknown option '%s' (known: path, sync_time, fsync, repair, "
                       "lock_timeout, max_pending, on_warning)", fn, name);
        }
        lua_pop(L, 1);
    }
}

/* Hands what the open repaired (a torn last batch dropped, damage moved
 * aside) to the on_warning option, or to stderr without one: a repair is
 * never silent. */
static void report_open_warning(lua_State *L, lstore *s, int opts_idx)
{
    hdb_stats st;
    hdb_get_stats(s->db, &st);
    if (st.warning[0] == '\0')
        return;
    if (opts_idx != 0) {
        lua_getfield(L, opts_idx, "on_warning");
        if (lua_type(L, -1) == LUA_TFUNCTION) {
            lua_pushstring(L, st.warning);
            lua_call(L, 1, 0);
            return;
        }
        lua_pop(L, 1);
    }
    fprintf(stderr, "hurrahdb: %s\n", st.warning);
}

/* Opens the store described by opt and pushes it, or nil and the error. The
 * options' strings stay on the Lua stack (in the options table) meanwhile. */
static int push_new_store(lua_State *L, const hdb_options *opt, int opts_idx)
{
    lstore *s = (lstore *)lua_newuserdata(L, sizeof *s);
    s->db = NULL;
    hdb_buf_init(&s->scratch);
    luaL_getmetatable(L, STORE_MT);
    lua_setmetatable(L, -2);
    char err[HDB_ERRLEN];
    s->db = hdb_open(opt, err, sizeof err);
    if (s->db == NULL)
        return push_error(L, err);
    report_open_warning(L, s, opts_idx);
    return 1;
}

static void default_options(hdb_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->sync_time_ms = HDB_DEFAULT_SYNC_TIME_MS;
    opt->use_fsync = 1;
    opt->max_pending = HDB_DEFAULT_MAX_PENDING;
}

/* hurrahdb.new([options]) */
static int l_new(lua_State *L)
{
    hdb_options opt;
    default_options(&opt);
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        read_options(L, 1, "hurrahdb.new", 1, &opt);
        return push_new_store(L, &opt, 1);
    }
    return push_new_store(L, &opt, 0);
}

/* hurrahdb.open(path[, options]) */
static int l_open(lua_State *L)
{
    hdb_options opt;
    default_options(&opt);
    if (lua_type(L, 1) != LUA_TSTRING)
        luaL_argerror(L, 1, lua_pushfstring(L, "string expected, got %s", luaL_typename(L, 1)));
    opt.path = lua_tostring(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        read_options(L, 2, "hurrahdb.open", 0, &opt);
        return push_new_store(L, &opt, 2);
    }
    return push_new_store(L, &opt, 0);
}

/* ---- methods ---- */

static void scratch_release(lstore *s)
{
    s->scratch.len = 0;
    if (s->scratch.cap > SCRATCH_KEEP)
        hdb_buf_free(&s->scratch);
}

/* db:delete(key) and db:set(key, nil) share this. */
static int delete_key(lua_State *L, lstore *s, const char *key, size_t klen, int report_existed)
{
    char err[HDB_ERRLEN];
    int existed;
    if (hdb_delete(s->db, key, klen, &existed, err, sizeof err) != HDB_OK)
        return push_error(L, err);
    lua_pushboolean(L, report_existed ? existed : 1);
    return 1;
}

static int l_set(lua_State *L)
{
    lstore *s = check_open(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    if (lua_isnoneornil(L, 3))
        return delete_key(L, s, key, klen, 0);
    char err[HDB_ERRLEN];
    s->scratch.len = 0;
    if (lvalue_encode(L, 3, &s->scratch, HDB_MAX_ITEM_LEN, err, sizeof err) != 0) {
        scratch_release(s);
        return push_error(L, err);
    }
    int rc = hdb_set(s->db, key, klen, s->scratch.data, s->scratch.len, err, sizeof err);
    scratch_release(s);
    if (rc != HDB_OK)
        return push_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

static int push_decoded(lua_State *L, const char *val, size_t vlen)
{
    char err[HDB_ERRLEN];
    if (lvalue_decode(L, val, vlen, err, sizeof err) != 0)
        return push_error(L, err);
    return 1;
}

static int l_get(lua_State *L)
{
    lstore *s = check_open(L);
    size_t klen, vlen;
    const char *key = check_key(L, 2, &klen), *val;
    if (!hdb_get(s->db, key, klen, &val, &vlen)) {
        lua_pushnil(L);
        return 1;
    }
    return push_decoded(L, val, vlen);
}

static int l_delete(lua_State *L)
{
    lstore *s = check_open(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    return delete_key(L, s, key, klen, 1);
}

static int l_exists(lua_State *L)
{
    lstore *s = check_open(L);
    size_t klen, vlen;
    const char *key = check_key(L, 2, &klen), *val;
    lua_pushboolean(L, hdb_get(s->db, key, klen, &val, &vlen));
    return 1;
}

static int l_count(lua_State *L)
{
    lstore *s = check_open(L);
#if LCOMPAT_HAS_INTEGERS
    lua_pushinteger(L, (lua_Integer)hdb_count(s->db));
#else
    lua_pushnumber(L, (lua_Number)hdb_count(s->db));
#endif
    return 1;
}

static int l_keys(lua_State *L)
{
    lstore *s = check_open(L);
    size_t plen = 0;
    const char *prefix = NULL;
    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TSTRING)
            luaL_argerror(L, 2, lua_pushfstring(L, "string expected, got %s", luaL_typename(L, 2)));
        prefix = lua_tolstring(L, 2, &plen);
    }
    lua_createtable(L, prefix ? 0 : (int)hdb_count(s->db), 0);
    uint32_t cursor = 0;
    lua_Integer n = 0;
    const char *k, *v;
    size_t klen, vlen;
    while (hdb_next(s->db, &cursor, &k, &klen, &v, &vlen)) {
        if (prefix && (klen < plen || memcmp(k, prefix, plen) != 0))
            continue;
        lua_pushlstring(L, k, klen);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* The iterator of db:pairs(). Its position lives in upvalue 2, so the loop's
 * control variable (the key) plays no part: the store may change under it. */
static int pairs_step(lua_State *L)
{
    lstore *s = (lstore *)lua_touserdata(L, lua_upvalueindex(1));
    if (s->db == NULL)
        return luaL_error(L, "store is closed");
    uint32_t cursor = (uint32_t)lua_tonumber(L, lua_upvalueindex(2));
    const char *k, *v;
    size_t klen, vlen;
    if (!hdb_next(s->db, &cursor, &k, &klen, &v, &vlen)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushnumber(L, (lua_Number)cursor);
    lua_replace(L, lua_upvalueindex(2));
    lua_pushlstring(L, k, klen);
    char err[HDB_ERRLEN];
    if (lvalue_decode(L, v, vlen, err, sizeof err) != 0) {
        return luaL_error(L, "key '%s': %s", lua_tostring(L, -1), err);
    }
    return 2;
}

static int l_pairs(lua_State *L)
{
    check_open(L);
    lua_pushvalue(L, 1);
    lua_pushnumber(L, 0);
    lua_pushcclosure(L, pairs_step, 2);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static int l_sync(lua_State *L)
{
    lstore *s = check_open(L);
    char err[HDB_ERRLEN];
    if (hdb_sync(s->db, err, sizeof err) != HDB_OK)
        return push_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

static void set_count_field(lua_State *L, const char *name, int64_t v)
{
#if LCOMPAT_HAS_INTEGERS
    lua_pushinteger(L, (lua_Integer)v);
#else
    lua_pushnumber(L, (lua_Number)v);
#endif
    lua_setfield(L, -2, name);
}

static int l_stats(lua_State *L)
{
    lstore *s = check_open(L);
    hdb_stats st;
    hdb_get_stats(s->db, &st);
    lua_createtable(L, 0, 10);
    set_count_field(L, "keys", (int64_t)st.keys);
    set_count_field(L, "memory", (int64_t)(st.memory_bytes + sizeof *s + s->scratch.cap));
    set_count_field(L, "aof_bytes", (int64_t)st.aof_bytes);
    set_count_field(L, "aof_pending_bytes", (int64_t)st.aof_pending_bytes);
    set_count_field(L, "last_sync", st.last_sync_ms);
    set_count_field(L, "loaded_records", (int64_t)st.loaded_records);
    set_count_field(L, "dropped_bytes", (int64_t)st.dropped_bytes);
    set_count_field(L, "errors", (int64_t)st.errors);
    set_count_field(L, "backpressure_waits", (int64_t)st.backpressure_waits);
    if (st.warning[0] != '\0') {
        lua_pushstring(L, st.warning);
        lua_setfield(L, -2, "warning");
    }
    if (st.last_error[0] != '\0') {
        lua_pushstring(L, st.last_error);
        lua_setfield(L, -2, "last_error");
    }
    if (hdb_path(s->db) != NULL) {
        lua_pushstring(L, hdb_path(s->db));
        lua_setfield(L, -2, "path");
    }
    return 1;
}

/* The one close path. Returns HDB_OK, or HDB_ERR with err filled and the
 * store still open (its unwritten records kept for a retry). */
static int store_close(lstore *s, char *err, size_t errlen)
{
    if (s->db == NULL)
        return HDB_OK;
    int rc = hdb_close(s->db, err, errlen);
    if (rc == HDB_ERR)
        return HDB_ERR; /* still open, its records kept: the caller may retry */
    /* Closed, possibly with an error that leaves nothing to retry. */
    hdb_free(s->db);
    s->db = NULL;
    hdb_buf_free(&s->scratch);
    return rc == HDB_OK ? HDB_OK : HDB_ERR;
}

static int l_close(lua_State *L)
{
    lstore *s = check_store(L);
    char err[HDB_ERRLEN];
    if (store_close(s, err, sizeof err) != HDB_OK)
        return push_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* __close: like close(), but a failure raises, since nobody receives a
 * return value at the end of a scope and losing the error would hide data
 * that did not reach the disk. */
static int l_close_scope(lua_State *L)
{
    lstore *s = check_store(L);
    char err[HDB_ERRLEN];
    if (store_close(s, err, sizeof err) != HDB_OK)
        return luaL_error(L, "%s", err);
    return 0;
}

/* __gc: the store was dropped without close(). Flush what is pending; if the
 * disk refuses, there is nobody to tell but stderr. */
static int l_gc(lua_State *L)
{
    lstore *s = check_store(L);
    char err[HDB_ERRLEN];
    if (s->db != NULL && store_close(s, err, sizeof err) != HDB_OK) {
        /* err names the file. */
        fprintf(stderr, "hurrahdb: a store was garbage-collected, and closing it failed: %s\n",
                err);
        hdb_free(s->db);
        s->db = NULL;
        hdb_buf_free(&s->scratch);
    }
    return 0;
}

static int l_len(lua_State *L)
{
    return l_count(L);
}

static int l_tostring(lua_State *L)
{
    lstore *s = check_store(L);
    if (s->db == NULL)
        lua_pushfstring(L, "hurrahdb store (closed): %p", (void *)s);
    else if (hdb_path(s->db) == NULL)
        lua_pushfstring(L, "hurrahdb store (memory): %p", (void *)s);
    else
        lua_pushfstring(L, "hurrahdb store (%s): %p", hdb_path(s->db), (void *)s);
    return 1;
}

static const luaL_Reg store_methods[] = {
    {"set", l_set},
    {"get", l_get},
    {"delete", l_delete},
    {"exists", l_exists},
    {"count", l_count},
    {"keys", l_keys},
    {"pairs", l_pairs},
    {"sync", l_sync},
    {"stats", l_stats},
    {"close", l_close},
    {NULL, NULL},
};

static const luaL_Reg store_meta[] = {
    {"__gc", l_gc},
    {"__close", l_close_scope},
    {"__len", l_len},
    {"__tostring", l_tostring},
    {NULL, NULL},
};

static const luaL_Reg module_functions[] = {
    {"new", l_new},
    {"open", l_open},
    {NULL, NULL},
};

/* The only exported symbol: the engine's names stay private to the module,
 * so they cannot clash with another library loaded in the same nginx. */
__attribute__((visibility("default"))) int luaopen_hurrahdb(lua_State *L);

int luaopen_hurrahdb(lua_State *L)
{
    luaL_newmetatable(L, STORE_MT);
    luaL_setfuncs(L, store_meta, 0);
    lua_createtable(L, 0, sizeof store_methods / sizeof *store_methods);
    luaL_setfuncs(L, store_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "hurrahdb.store");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);

    lua_createtable(L, 0, 4);
    luaL_setfuncs(L, module_functions, 0);
    lua_pushliteral(L, HDB_VERSION);
    lua_setfield(L, -2, "_VERSION");
    /* The JSON null, the same value as cjson.null (a NULL light userdata). */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
