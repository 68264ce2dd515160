/*
 * lhurrahdb: the Lua binding, `require "hurrahdb"`.
 *
 * A store is a full userdata holding the engine handle and a scratch buffer
 * for encoding values. Conventions follow LuaFileSystem and OpenResty: wrong
 * argument types raise; runtime failures return nil, a message and a code
 * (a short stable string, see hdb_code_name: programs decide by the code,
 * people read the message); one idempotent close path serves close(), __gc
 * and __close.
 *
 * Any Lua call that may allocate may also run finalizers, and a finalizer
 * may change, read or close this very store. So no pointer into the store
 * (a value, a key, the path) is held across such a call: what a method
 * returns is copied out first (see "Copying out"), and after any allocation
 * the store is checked to be still open before it is used again.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcompat.h"
#include "lvalue.h"
#include "hurrahdb.h"
#include "hdb_check.h"

#define STORE_MT "hurrahdb.store"
/* Scratch capacity kept between calls; a larger one (after a big value) is
 * released so that one big value does not pin its size for the store's life. */
#define SCRATCH_KEEP (64u * 1024u)

/* The longest name of a codec table (the engine checks its bytes). */
#define CODEC_NAME_MAX 64

typedef struct lstore {
    hdb_store *db;  /* NULL once closed */
    hdb_buf scratch;
    /* 0: values go through hurrahdb's own JSON codec (lvalue). 1: through a
     * Lua codec ("cjson" or a codec table), whose { encode, decode } is the
     * userdata's user value: kept as long as the store, and collected with
     * it even when its functions refer to the store. */
    int lua_codec;
    char codec_name[CODEC_NAME_MAX + 1]; /* "json", "cjson" or the table's name */
} lstore;

/* The least max_memory (256 KiB). */
#define MAX_MEMORY_MIN (256 * 1024)

/* Upvalue 2 of every method is the stores' metatable (see set_methods):
 * comparing with it costs a fraction of luaL_checkudata's lookup of the
 * metatable by name in the registry, on every call. Only a full userdata is
 * taken: light userdata share one metatable, which debug.setmetatable can
 * make the stores' own (luaL_checkudata of Lua 5.4 would take one). */
#define STORE_MT_UPVALUE 2

static lstore *check_store(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TUSERDATA && lua_getmetatable(L, 1)) {
        int same = lua_rawequal(L, -1, lua_upvalueindex(STORE_MT_UPVALUE));
        lua_pop(L, 1);
        if (same)
            return (lstore *)lua_touserdata(L, 1);
    }
    luaL_argerror(L, 1, lua_pushfstring(L, "%s expected, got %s", STORE_MT, luaL_typename(L, 1)));
    return NULL;
}

static void require_open(lua_State *L, const lstore *s)
{
    if (s->db == NULL)
        luaL_error(L, "store is closed");
}

static lstore *check_open(lua_State *L)
{
    lstore *s = check_store(L);
    require_open(L, s);
    return s;
}

/* Keys are strings; a number is converted the way tostring converts it.
 * That conversion allocates: check the store is open only after it. */
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

/* Pushes nil, the message and the code's name: what every method returns
 * on a runtime failure. */
static int push_error(lua_State *L, const hdb_err *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err->msg);
    lua_pushstring(L, hdb_code_name(err->code));
    return 3;
}

/* The same for a failure of the binding's own, with a fixed message. */
static int push_failure(lua_State *L, int code, const char *msg)
{
    hdb_err err;
    hdb_fail(&err, code, "%s", msg);
    return push_error(L, &err);
}

/* The code of what lvalue_encode returned: a value is refused as such
 * whatever made the encoder refuse it, a marker it could not recognise
 * included. */
static int encode_code(int status)
{
    switch (status) {
    case LVALUE_NO_MEMORY:
        return HDB_CODE_NO_MEMORY;
    case LVALUE_TOO_LONG:
        return HDB_CODE_TOO_LARGE;
    default:
        return HDB_CODE_VALUE;
    }
}

/* ---- Copying out ----
 *
 * Bytes the engine hands out (a value, a key, the path) live in the store
 * and may be freed or rewritten by any change to it. Making Lua values from
 * them runs the collector, which runs finalizers, which may change the store:
 * LuaJIT's lua_pushlstring runs a collection step before it copies its
 * source, and growing a luaL_Buffer or creating a table runs one in the middle
 * of decoding. So the bytes are first copied out, with no Lua call between
 * the engine's lookup and the copy, and Lua values are made from the copy:
 * what a call returns is what the store held when the call read it.
 *
 * A copy that fits stays on the C stack: no allocation, and nothing to free
 * whether the decoding returns, raises or is reentered. A larger one goes to
 * the heap, and is turned into Lua values in a protected call (the function
 * is upvalue 1 of every method, so that pushing it allocates nothing), which
 * frees the copy whatever an allocation raises (out of memory, or in LuaJIT
 * the error of a finalizer) before passing the error on. */

#define COPY_STACK_MAX 4096

typedef struct copy_out {
    char *data;     /* `stack`, or the heap when the bytes did not fit */
    size_t slen;    /* the string part first, pushed as a Lua string */
    size_t vlen;    /* then the JSON of a value, pushed decoded */
    int has_str, has_val;
    int val_raw;    /* the value is pushed as its bytes, for a Lua codec to decode */
    char stack[COPY_STACK_MAX];
} copy_out;

/* Copies str (for a string; NULL for none) and val (for a decoded value;
 * NULL for none) into c. Makes no Lua call. Returns 0, or -1 when the heap
 * has no room. */
static int copy_take(copy_out *c, const char *str, size_t slen, const char *val, size_t vlen)
{
    c->has_str = str != NULL;
    c->has_val = val != NULL;
    c->val_raw = 0;
    c->slen = c->has_str ? slen : 0;
    c->vlen = c->has_val ? vlen : 0;
    c->data = c->stack;
    if (c->slen > sizeof c->stack || c->vlen > sizeof c->stack - c->slen) {
        if (c->slen > SIZE_MAX - c->vlen || (c->data = malloc(c->slen + c->vlen)) == NULL) {
            c->data = c->stack;
            return -1;
        }
    }
    if (c->slen > 0)
        memcpy(c->data, str, c->slen);
    if (c->vlen > 0)
        memcpy(c->data + c->slen, val, c->vlen);
    return 0;
}

/* Pushes the string part, then the decoded value, of c. Returns 1, or 0
 * with err filled (HDB_CODE_VALUE) when the value cannot be decoded (the
 * string is pushed all the same). err may be NULL when c has no value. */
static int copy_push_unprotected(lua_State *L, const copy_out *c, hdb_err *err)
{
    if (c->has_str)
        lua_pushlstring(L, c->data, c->slen);
    if (c->has_val && c->val_raw) {
        lua_pushlstring(L, c->data + c->slen, c->vlen);
        return 1;
    }
    if (c->has_val && lvalue_decode(L, c->data + c->slen, c->vlen, err->msg,
                                    sizeof err->msg) != 0) {
        err->code = HDB_CODE_VALUE;
        return 0;
    }
    return 1;
}

typedef struct copy_job {
    const copy_out *copy;
    hdb_err *err;
    int ok;
} copy_job;

/* The protected part of copy_push; its argument is a copy_job. */
static int copy_push_protected(lua_State *L)
{
    copy_job *job = (copy_job *)lua_touserdata(L, 1);
    lua_pop(L, 1);
    job->ok = copy_push_unprotected(L, job->copy, job->err);
    return lua_gettop(L);
}

/* Pushes what copy_push_unprotected pushes and frees the copy. Raises what
 * the allocations raise. Call it only from a function whose upvalue 1 is
 * copy_push_protected. */
static int copy_push(lua_State *L, copy_out *c, hdb_err *err)
{
    if (c->data == c->stack)
        return copy_push_unprotected(L, c, err);
    copy_job job = {c, err, 0};
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushlightuserdata(L, &job);
    int status = lua_pcall(L, 1, LUA_MULTRET, 0);
    free(c->data);
    c->data = c->stack;
    if (status != 0)
        lua_error(L);
    return job.ok;
}

/* ---- Lua codecs ----
 *
 * With codec "cjson" or a codec table, set calls encode(value) and get calls
 * decode(bytes), in protected calls. Either runs any Lua code, which may use
 * or close the store: nothing is held across the call but Lua values on the
 * stack, and the store is checked to be open after it. */

/* The text of an error object: a string or a number as it reads, anything
 * else by its type (its __tostring is not called: that would run more code
 * outside a protected call). */
static const char *error_text(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    return t == LUA_TSTRING || t == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx);
}

/* Calls the codec's encode on the value at idx. Leaves the text on the top
 * of the stack and returns it (its length in *len), or returns NULL with err
 * filled (HDB_CODE_VALUE or HDB_CODE_TOO_LARGE) and nothing left pushed. */
static const char *codec_encode(lua_State *L, const lstore *s, int store_idx, int idx, size_t *len,
                                hdb_err *err)
{
    luaL_checkstack(L, 4, NULL);
    lcompat_getuservalue(L, store_idx);
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 2, 0) != 0) {
        hdb_fail(err, HDB_CODE_VALUE, "cannot store the value: codec '%s' encode raised: %s",
                 s->codec_name, error_text(L, -1));
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -2) != LUA_TSTRING) {
        if (lua_isnil(L, -2) && lua_type(L, -1) == LUA_TSTRING)
            hdb_fail(err, HDB_CODE_VALUE, "cannot store the value: codec '%s' encode: %s",
                     s->codec_name, lua_tostring(L, -1));
        else
            hdb_fail(err, HDB_CODE_VALUE, "cannot store the value: codec '%s' encode returned "
                     "a %s, not a string", s->codec_name, luaL_typename(L, -2));
        lua_pop(L, 2);
        return NULL;
    }
    lua_pop(L, 1);
    const char *text = lua_tolstring(L, -1, len);
    if (*len > HDB_MAX_ITEM_LEN) {
        hdb_fail(err, HDB_CODE_TOO_LARGE, "value too long (codec '%s' encoded it in %zu bytes; "
                 "the limit is %u)", s->codec_name, *len, HDB_MAX_ITEM_LEN);
        lua_pop(L, 1);
        return NULL;
    }
    return text;
}

/* Replaces the bytes on the top of the stack by what the codec's decode
 * makes of them. Returns 1, or 0 with err filled (HDB_CODE_VALUE) and the
 * bytes popped. */
static int codec_decode(lua_State *L, const lstore *s, int store_idx, hdb_err *err)
{
    luaL_checkstack(L, 4, NULL);
    lcompat_getuservalue(L, store_idx);
    lua_rawgeti(L, -1, 2);
    lua_remove(L, -2);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 2, 0) != 0) {
        hdb_fail(err, HDB_CODE_VALUE, "cannot decode stored value: codec '%s' decode raised: %s",
                 s->codec_name, error_text(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    if (lua_isnil(L, -2)) {
        hdb_fail(err, HDB_CODE_VALUE, "cannot decode stored value: codec '%s' decode: %s",
                 s->codec_name, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                             : "it returned nil");
        lua_pop(L, 2);
        return 0;
    }
    lua_pop(L, 1);
    return 1;
}

/* Makes the "cjson" codec: a private instance of the installed lua-cjson
 * (cjson.new()), at the highest number precision it takes, its other
 * settings as lua-cjson sets them. Arguments: require, pcall, ipairs. */
static const char cjson_codec_chunk[] =
    "local require, pcall, ipairs = ...\n"
    "local ok, cjson = pcall(require, 'cjson')\n"
    "if not ok then return nil, tostring(cjson) end\n"
    "if type(cjson) ~= 'table' or type(cjson.new) ~= 'function' then\n"
    "  return nil, 'the cjson module has no new()'\n"
    "end\n"
    "local c = cjson.new()\n"
    /* One buffer per call: with the shared one, a finalizer's set that ran
     * while the text was made a Lua string (LuaJIT runs the collector
     * there) would overwrite the text. */
    "pcall(c.encode_keep_buffer, false)\n"
    "for _, digits in ipairs { 17, 16, 15, 14 } do\n"
    "  if pcall(c.encode_number_precision, digits) then break end\n"
    "end\n"
    "return { c.encode, c.decode }\n";

/* Pushes the { encode, decode } of codec "cjson", or returns 0 with err
 * filled (HDB_CODE_CODEC) and nothing pushed. */
static int push_cjson_codec(lua_State *L, hdb_err *err)
{
    luaL_checkstack(L, 6, NULL);
    if (luaL_loadbuffer(L, cjson_codec_chunk, sizeof cjson_codec_chunk - 1, "=hurrahdb.cjson") != 0)
        return lua_error(L);
    lua_getglobal(L, "require");
    lua_getglobal(L, "pcall");
    lua_getglobal(L, "ipairs");
    lua_call(L, 3, 2);
    if (!lua_istable(L, -2)) {
        const char *why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
        size_t first_line = strcspn(why, "\n");
        hdb_fail(err, HDB_CODE_CODEC, "codec 'cjson' needs lua-cjson: %.*s", (int)first_line, why);
        lua_pop(L, 2);
        return 0;
    }
    lua_pop(L, 1);
    return 1;
}

/* Reads option codec (at idx; nil for the default) into s and, for the
 * engine, *engine_codec (NULL for JSON values). Raises on a malformed one;
 * returns 0 with err filled (HDB_CODE_CODEC) if lua-cjson is missing. */
static int read_codec(lua_State *L, int idx, const char *fn, lstore *s, int store_idx,
                      const char **engine_codec, hdb_err *err)
{
    *engine_codec = NULL;
    s->lua_codec = 0;
    strcpy(s->codec_name, "json");
    if (lua_isnil(L, idx))
        return 1;
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *name = lua_tostring(L, idx);
        if (strcmp(name, "json") == 0)
            return 1;
        if (strcmp(name, "cjson") != 0)
            luaL_error(L, "%s: option 'codec' must be \"json\", \"cjson\" or a table (got \"%s\")",
                       fn, name);
        if (!push_cjson_codec(L, err))
            return 0;
        strcpy(s->codec_name, "cjson");
        lcompat_setuservalue(L, store_idx);
        s->lua_codec = 1;
        return 1;
    }
    /* A table, as check_option_value made sure: its fields are read by
     * ordinary indexing, like the options. */
    luaL_checkstack(L, 4, NULL);
    lua_getfield(L, idx, "name");
    size_t len;
    const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (name == NULL)
        luaL_error(L, "%s: option 'codec' needs a name (a string naming the format of its values, "
                   "recorded in the file; \"json\" for JSON)", fn);
    int valid = len >= 1 && len <= CODEC_NAME_MAX;
    for (size_t i = 0; valid && i < len; i++) {
        char ch = name[i];
        valid = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                ch == '.' || ch == '_' || ch == '-' || ch == '+';
    }
    if (!valid)
        luaL_error(L, "%s: option 'codec': name must be 1 to %d of A-Z a-z 0-9 . _ - + (got \"%s\")",
                   fn, CODEC_NAME_MAX, name);
    if (strcmp(name, "cjson") == 0)
        luaL_error(L, "%s: option 'codec': name \"cjson\" is codec = \"cjson\"'s; a table whose "
                   "values are JSON is named \"json\"", fn);
    memcpy(s->codec_name, name, len + 1);
    lua_pop(L, 1);
    lua_createtable(L, 2, 0);
    static const char *const fields[] = {"encode", "decode"};
    static const char *const articles[] = {"an", "a"};
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, idx, fields[i]);
        if (lua_type(L, -1) != LUA_TFUNCTION)
            luaL_error(L, "%s: option 'codec' needs %s %s function (got %s)", fn, articles[i],
                       fields[i], luaL_typename(L, -1));
        lua_rawseti(L, -2, i + 1);
    }
    lcompat_setuservalue(L, store_idx);
    s->lua_codec = 1;
    if (strcmp(s->codec_name, "json") != 0)
        *engine_codec = s->codec_name;
    return 1;
}

/* ---- opening ---- */

/* The options, in the order the error messages list them. */
enum {
    OPT_PATH,
    OPT_SYNC_TIME,
    OPT_FSYNC,
    OPT_REPAIR,
    OPT_LOCK_TIMEOUT,
    OPT_MAX_PENDING,
    OPT_AUTO_REWRITE_PERCENTAGE,
    OPT_AUTO_REWRITE_MIN_SIZE,
    OPT_CODEC,
    OPT_ON_WARNING,
    OPT_MAX_MEMORY,
    OPT_EVICTION,
    OPT_COUNT
};

/* The names of the eviction policies, in the order of HDB_EVICT_*. */
static const char *const eviction_names[] = {"none", "lru", "volatile-ttl"};

/* The type of an option that takes a string or a table. */
#define OPTION_STRING_OR_TABLE (-100)
/* ... and of one that takes one of a list of names (its index is its value). */
#define OPTION_EVICTION (-101)

/* Every option: its Lua type; for numbers, the range of whole numbers taken;
 * for numbers and booleans (0 or 1), the default. Reading, checking,
 * defaults and the error texts all come from this table. */
static const struct option_def {
    const char *name;
    int type;
    double min, max;
    double dflt;
} option_defs[OPT_COUNT] = {
    [OPT_PATH] = {"path", LUA_TSTRING, 0, 0, 0},
    [OPT_SYNC_TIME] = {"sync_time", LUA_TNUMBER, 0, 86400000.0, HDB_DEFAULT_SYNC_TIME_MS},
    [OPT_FSYNC] = {"fsync", LUA_TBOOLEAN, 0, 0, 1},
    [OPT_REPAIR] = {"repair", LUA_TBOOLEAN, 0, 0, 0},
    [OPT_LOCK_TIMEOUT] = {"lock_timeout", LUA_TNUMBER, 0, 86400000.0, 0},
    [OPT_MAX_PENDING] = {"max_pending", LUA_TNUMBER, 4096.0, 1099511627776.0,
                         HDB_DEFAULT_MAX_PENDING},
    [OPT_AUTO_REWRITE_PERCENTAGE] = {"auto_rewrite_percentage", LUA_TNUMBER, 0, 1000000.0,
                                     HDB_DEFAULT_AUTO_REWRITE_PERCENTAGE},
    [OPT_AUTO_REWRITE_MIN_SIZE] = {"auto_rewrite_min_size", LUA_TNUMBER, 0, 1125899906842624.0,
                                   HDB_DEFAULT_AUTO_REWRITE_MIN_SIZE},
    [OPT_CODEC] = {"codec", OPTION_STRING_OR_TABLE, 0, 0, 0},
    [OPT_ON_WARNING] = {"on_warning", LUA_TFUNCTION, 0, 0, 0},
    [OPT_MAX_MEMORY] = {"max_memory", LUA_TNUMBER, 0, 1125899906842624.0, 0},
    /* (0, or from MAX_MEMORY_MIN: see check_option_value) */
    [OPT_EVICTION] = {"eviction", OPTION_EVICTION, 0, 0, HDB_EVICT_NONE},
};

/* Raises that the option names in the table at idx are not all known. */
static void check_option_names(lua_State *L, int idx, const char *fn)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            luaL_error(L, "%s: option names must be strings (got a %s key)", fn,
                       luaL_typename(L, -1));
        }
        const char *name = lua_tostring(L, -1);
        int i = 0;
        while (i < OPT_COUNT && strcmp(name, option_defs[i].name) != 0)
            i++;
        if (i == OPT_COUNT) {
            char known[256];
            size_t used = 0;
            known[0] = '\0';
            for (int j = 0; j < OPT_COUNT && used < sizeof known; j++) {
                int n = snprintf(known + used, sizeof known - used, "%s%s", j ? ", " : "",
                                 option_defs[j].name);
                used += n > 0 ? (size_t)n : 0;
            }
            luaL_error(L, "%s: unknown option '%s' (known: %s)", fn, name, known);
        }
    }
}

/* Checks the value of option i at idx, which is not nil, and returns it as
 * a number (a boolean as 0 or 1; 0 for the other types). */
static double check_option_value(lua_State *L, int idx, const char *fn, int i)
{
    const struct option_def *def = &option_defs[i];
    if (def->type == OPTION_STRING_OR_TABLE) {
        if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TTABLE)
            luaL_error(L, "%s: option '%s' must be a string or a table (got %s)", fn, def->name,
                       luaL_typename(L, idx));
        return 0;
    }
    if (def->type == OPTION_EVICTION) {
        const char *name = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : "";
        for (size_t n = 0; n < sizeof eviction_names / sizeof *eviction_names; n++) {
            if (strcmp(name, eviction_names[n]) == 0)
                return (double)n;
        }
        luaL_error(L, "%s: option '%s' must be \"none\", \"lru\" or \"volatile-ttl\" (got %s)",
                   fn, def->name, lua_type(L, idx) == LUA_TSTRING ? name : luaL_typename(L, idx));
    }
    if (lua_type(L, idx) != def->type) {
        luaL_error(L, "%s: option '%s' must be a %s (got %s)", fn, def->name,
                   lua_typename(L, def->type), luaL_typename(L, idx));
    }
    if (def->type == LUA_TBOOLEAN)
        return lua_toboolean(L, idx);
    if (def->type != LUA_TNUMBER)
        return 0;
    double v = (double)lua_tonumber(L, idx);
    if (i == OPT_MAX_MEMORY && v > 0 && v < MAX_MEMORY_MIN)
        luaL_error(L, "%s: option 'max_memory' must be 0 (none) or at least %d bytes (got %s)",
                   fn, MAX_MEMORY_MIN, lua_tostring(L, idx));
    /* The range test comes first: it also keeps NaN and the infinities
     * away from the conversion, which is undefined for them. */
    if (!(v >= def->min && v <= def->max) || v != (double)(uint64_t)v) {
        char range[64]; /* lua_pushfstring has no %.0f */
        snprintf(range, sizeof range, "from %.0f to %.0f", def->min, def->max);
        luaL_error(L, "%s: option '%s' must be a whole number %s (got %s)", fn, def->name,
                   range, lua_tostring(L, idx));
    }
    return v;
}

/* Raises bad argument if the path has a NUL byte, which would end the
 * C string there: "x.aof\0.bak" must not open x.aof. */
static void check_path_bytes(lua_State *L, int idx, int arg, const char *what)
{
    size_t len;
    const char *path = lua_tolstring(L, idx, &len);
    size_t nul = strlen(path);
    if (nul != len) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s contains an embedded NUL at byte %zu", what, nul + 1);
        luaL_argerror(L, arg, msg);
    }
}

/* Reads the options table at idx (0: none given) for function fn. Each
 * known option is read by ordinary indexing, so that options a table
 * inherits through __index count like its own; the table's own keys are
 * checked against the known names, so that a typo is never silently
 * ignored. The values are left on the stack, option i at base + i (nil when
 * not given), which keeps the path and on_warning alive until the store is
 * open; numbers and booleans, with defaults applied, go to num. Returns
 * base. */
static int read_options(lua_State *L, int idx, const char *fn, double num[OPT_COUNT])
{
    luaL_checkstack(L, OPT_COUNT + 2, "too many options");
    if (idx != 0)
        check_option_names(L, idx, fn);
    int base = lua_gettop(L) + 1;
    for (int i = 0; i < OPT_COUNT; i++) {
        num[i] = option_defs[i].dflt;
        if (idx == 0) {
            lua_pushnil(L);
            continue;
        }
        lua_getfield(L, idx, option_defs[i].name);
        if (!lua_isnil(L, -1))
            num[i] = check_option_value(L, -1, fn, i);
    }
    return base;
}

static void fill_options(hdb_options *opt, const double num[OPT_COUNT])
{
    memset(opt, 0, sizeof *opt);
    opt->sync_time_ms = (unsigned)num[OPT_SYNC_TIME];
    opt->use_fsync = num[OPT_FSYNC] != 0;
    opt->repair = num[OPT_REPAIR] != 0;
    opt->lock_timeout_ms = (unsigned)num[OPT_LOCK_TIMEOUT];
    opt->max_pending = (uint64_t)num[OPT_MAX_PENDING];
    opt->auto_rewrite_percentage = (unsigned)num[OPT_AUTO_REWRITE_PERCENTAGE];
    opt->auto_rewrite_min_size = (uint64_t)num[OPT_AUTO_REWRITE_MIN_SIZE];
    opt->max_memory = (uint64_t)num[OPT_MAX_MEMORY];
    opt->eviction = (int)num[OPT_EVICTION];
}

/* The one close path. Returns HDB_OK, or HDB_ERR with err filled and the
 * store still open (its unwritten records kept for a retry), or closed all
 * the same when close(2) failed after everything was written. */
static int store_close(lstore *s, hdb_err *err)
{
    if (s->db == NULL)
        return HDB_OK;
    int rc = hdb_close(s->db, err);
    if (rc == HDB_ERR)
        return HDB_ERR; /* still open, its records kept: the caller may retry */
    /* Closed, possibly with an error that leaves nothing to retry. */
    hdb_free(s->db);
    s->db = NULL;
    hdb_buf_free(&s->scratch);
    return rc == HDB_OK ? HDB_OK : HDB_ERR;
}

/* Closes a store nobody can use any more (garbage, or never handed out): if
 * the disk refuses the last records, there is nobody to tell but stderr, and
 * the store is freed all the same, releasing its file. */
static void store_discard(lstore *s, const char *why)
{
    hdb_err err;
    if (s->db != NULL && store_close(s, &err) != HDB_OK) {
        /* err names the file; the store may already be closed (a close(2)
         * error after everything was written). */
        fprintf(stderr, "hurrahdb: a store was %s, and closing it failed: %s\n", why,
                err.msg);
        hdb_free(s->db);
        s->db = NULL;
        hdb_buf_free(&s->scratch);
    }
}

/* Calls on_warning (argument 1) with the message (a C string, argument 2);
 * run protected by push_new_store. */
static int call_on_warning(lua_State *L)
{
    lua_pushstring(L, (const char *)lua_touserdata(L, 2));
    lua_replace(L, 2);
    lua_call(L, 1, 0);
    return 0;
}

/* Opens the store described by opt and pushes it, or nil and the error.
 * What the open repaired (a torn last batch dropped, damage moved aside)
 * goes to the on_warning function at on_warning_idx (if not nil), or to
 * stderr: a repair is never silent. The options' strings stay on the Lua
 * stack meanwhile. */
static int push_new_store(lua_State *L, const hdb_options *options, int on_warning_idx,
                          int codec_idx, const char *fn)
{
    int has_handler = !lua_isnil(L, on_warning_idx);
    luaL_checkstack(L, 4, NULL);
    lstore *s = (lstore *)lcompat_newuserdata(L, sizeof *s);
    s->db = NULL;
    hdb_buf_init(&s->scratch);
    s->lua_codec = 0;
    strcpy(s->codec_name, "json");
    luaL_getmetatable(L, STORE_MT);
    lua_setmetatable(L, -2);
    int ud = lua_gettop(L);
    hdb_options opt_copy = *options, *opt = &opt_copy;
    hdb_err err;
    /* The codec first: a missing lua-cjson fails the open before the file
     * is touched. */
    if (!read_codec(L, codec_idx, fn, s, ud, &opt->codec, &err))
        return push_error(L, &err);
    lua_settop(L, ud);
    /* Whatever may raise comes before the file is opened and locked, or in
     * the protected call below: pushing a C function allocates in LuaJIT. */
    if (has_handler)
        lua_pushcfunction(L, call_on_warning);
    s->db = hdb_open(opt, &err);
    if (s->db == NULL)
        return push_error(L, &err);
    hdb_stats st;
    hdb_get_stats(s->db, &st);
    if (st.warning[0] != '\0' && has_handler) {
        lua_pushvalue(L, on_warning_idx);
        /* Points into the store, which no Lua code can reach yet: no
         * finalizer can change it while the message is copied. */
        lua_pushlightuserdata(L, (void *)st.warning);
        if (lua_pcall(L, 2, 0, 0) != 0) {
            /* The caller never gets this store: close it now, releasing the
             * file, rather than leave it locked until a collection. */
            store_discard(s, "abandoned by a failed on_warning");
            return lua_error(L);
        }
    } else if (st.warning[0] != '\0') {
        fprintf(stderr, "hurrahdb: %s\n", st.warning);
    }
    lua_settop(L, ud);
    return 1;
}

/* hurrahdb.new([options]) */
static int l_new(lua_State *L)
{
    double num[OPT_COUNT];
    int idx = 0;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        idx = 1;
    }
    int base = read_options(L, idx, "hurrahdb.new", num);
    if (!lua_isnil(L, base + OPT_PATH))
        check_path_bytes(L, base + OPT_PATH, 1, "option 'path'");
    hdb_options opt;
    fill_options(&opt, num);
    opt.path = lua_tostring(L, base + OPT_PATH);
    return push_new_store(L, &opt, base + OPT_ON_WARNING, base + OPT_CODEC, "hurrahdb.new");
}

/* hurrahdb.open(path[, options]) */
static int l_open(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        luaL_argerror(L, 1, lua_pushfstring(L, "string expected, got %s", luaL_typename(L, 1)));
    check_path_bytes(L, 1, 1, "path");
    double num[OPT_COUNT];
    int idx = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        idx = 2;
    }
    int base = read_options(L, idx, "hurrahdb.open", num);
    if (!lua_isnil(L, base + OPT_PATH))
        luaL_error(L, "hurrahdb.open: give the path as the first argument, not as option 'path'");
    hdb_options opt;
    fill_options(&opt, num);
    opt.path = lua_tostring(L, 1);
    return push_new_store(L, &opt, base + OPT_ON_WARNING, base + OPT_CODEC, "hurrahdb.open");
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
    hdb_err err;
    int existed;
    if (hdb_delete(s->db, key, klen, &existed, &err) != HDB_OK)
        return push_error(L, &err);
    lua_pushboolean(L, report_existed ? existed : 1);
    return 1;
}

/* The longest ttl, in seconds (about 317 years): any expiry it gives is
 * far below the file's limit (2^53 ms), and exact in a double. */
#define TTL_MAX_S 1e10

/* The ttl (seconds) at idx in ms, rounded up to a whole millisecond, so
 * that a key never expires before its ttl has passed; 0 for a ttl of 0, no
 * expiry, as ngx.shared.DICT takes it. The engine counts it from the time
 * of the write (HDB_SET_TTL). `what` names the argument in the error. */
static int64_t check_ttl(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "%s: number expected, got %s", what, luaL_typename(L, idx));
    lua_Number ttl = lua_tonumber(L, idx);
    if (!(ttl >= 0) || ttl > TTL_MAX_S)
        luaL_error(L, "%s must be a number of seconds from 0 (no expiry) to 1e10 (got %f)", what,
                   (double)ttl);
    return (int64_t)ceil((double)ttl * 1000.0);
}

/* The options of a write ({ ttl = seconds }) at idx, which may be none or
 * nil: the ttl in ms, or 0 for none. Unknown fields raise, as a misspelt
 * option would otherwise be ignored in silence. */
static int64_t check_write_options(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_argerror(L, idx, lua_pushfstring(L, "options table expected, got %s",
                                              luaL_typename(L, idx)));
    /* One pass over the table's own fields: the only one known is ttl. */
    int64_t expire_ms = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "ttl") != 0)
            luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s' (a write takes ttl)",
                                                  lua_type(L, -2) == LUA_TSTRING
                                                      ? lua_tostring(L, -2)
                                                      : luaL_typename(L, -2)));
        expire_ms = check_ttl(L, lua_gettop(L), "ttl");
        lua_pop(L, 1);
    }
    return expire_ms;
}

/* Encodes the value at vidx and writes it under the key (hdb_set_ex).
 * The encoder makes no Lua allocation, so nothing can reenter between
 * encoding into the scratch buffer and handing it to the engine. */
static int write_value(lua_State *L, lstore *s, const char *key, size_t klen, int vidx,
                       int64_t expire_ms, int flags, int *done, hdb_err *err)
{
    *done = 0;
    if (s->lua_codec) {
        size_t tlen;
        const char *text = codec_encode(L, s, 1, vidx, &tlen, err);
        /* The text stays on the stack, alive, until hdb_set_ex has copied
         * it; encode ran Lua code, which may have closed the store. */
        require_open(L, s);
        if (text == NULL)
            return HDB_ERR;
        int rc = hdb_set_ex(s->db, key, klen, text, tlen, expire_ms, flags, done, err);
        lua_pop(L, 1);
        return rc;
    }
    s->scratch.len = 0;
    int enc = lvalue_encode(L, vidx, &s->scratch, HDB_MAX_ITEM_LEN, err->msg, sizeof err->msg);
    if (enc == LVALUE_UNKNOWN_MARK && lvalue_markers_refresh(L)) {
        /* lua-cjson was loaded (or reloaded) since the markers were last
         * read. The refresh allocated: a finalizer may have closed the store
         * or used its scratch buffer, so both are checked anew. */
        require_open(L, s);
        s->scratch.len = 0;
        enc = lvalue_encode(L, vidx, &s->scratch, HDB_MAX_ITEM_LEN, err->msg, sizeof err->msg);
    }
    if (enc != LVALUE_OK) {
        scratch_release(s);
        err->code = encode_code(enc);
        return HDB_ERR;
    }
    int rc = hdb_set_ex(s->db, key, klen, s->scratch.data, s->scratch.len, expire_ms, flags,
                        done, err);
    scratch_release(s);
    return rc;
}

/* After a write's result: with evictions, nil and true (ngx.shared.DICT's
 * `forcible`). Returns how many values it pushed. */
static int push_forcible(lua_State *L, int done)
{
    if (!(done & HDB_DONE_EVICTED))
        return 0;
    lua_pushnil(L);
    lua_pushboolean(L, 1);
    return 2;
}

static int push_written(lua_State *L, int done)
{
    lua_pushboolean(L, 1);
    return 1 + push_forcible(L, done);
}

/* Raises unless the argument at idx is a number (a numeric string is not). */
static void check_number_arg(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_argerror(L, idx, lua_pushfstring(L, "number expected, got %s", luaL_typename(L, idx)));
}

/* db:set(key, value [, options]) */
static int l_set(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    int64_t ttl_ms = check_write_options(L, 4);
    require_open(L, s);
    if (lua_isnoneornil(L, 3))
        return delete_key(L, s, key, klen, 0);
    hdb_err err;
    int done;
    if (write_value(L, s, key, klen, 3, ttl_ms, HDB_SET_TTL, &done, &err) != HDB_OK)
        return push_error(L, &err);
    return push_written(L, done);
}

/* db:add and db:replace: a set on a condition; false and why when it does
 * not hold. */
static int conditional_set(lua_State *L, int flags, const char *refusal)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    if (lua_isnoneornil(L, 3))
        luaL_argerror(L, 3, "value expected (a key is deleted with delete)");
    int64_t ttl_ms = check_write_options(L, 4);
    require_open(L, s);
    hdb_err err;
    int done;
    if (write_value(L, s, key, klen, 3, ttl_ms, flags | HDB_SET_TTL, &done, &err) != HDB_OK)
        return push_error(L, &err);
    if (done & HDB_DONE_WRITTEN)
        return push_written(L, done);
    lua_pushboolean(L, 0);
    lua_pushstring(L, refusal);
    return 2;
}

static int l_add(lua_State *L)
{
    return conditional_set(L, HDB_SET_IF_ABSENT, "exists");
}

static int l_replace(lua_State *L)
{
    return conditional_set(L, HDB_SET_IF_PRESENT, "not found");
}

/* Pushes the value the engine handed out (copied first), decoded; 0 with
 * err filled if it cannot be. */
static int push_stored_value(lua_State *L, lstore *s, const char *val, size_t vlen, hdb_err *err)
{
    copy_out c;
    if (copy_take(&c, NULL, 0, val, vlen) != 0) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        return 0;
    }
    c.val_raw = s->lua_codec;
    if (!copy_push(L, &c, err))
        return 0;
    return !c.val_raw || codec_decode(L, s, 1, err);
}

/* Pushes a + b, the numbers at ia and ib; 0 if the sum cannot be held
 * exactly: an integer sum past int64 (Lua 5.4 integers stay integers), a
 * sum of whole numbers that rounds or passes 2^53, a sum that lost the
 * increment (a + b == a with b not 0), an integer past 2^53 made a float,
 * or an infinite sum. Fractions round as floats always do (0.1 + 0.2). */
static int push_sum(lua_State *L, int ia, int ib)
{
    const double exact = 9007199254740992.0; /* 2^53 */
#if LCOMPAT_HAS_INTEGERS
    if (lua_isinteger(L, ia) && lua_isinteger(L, ib)) {
        lua_Integer a = lua_tointeger(L, ia), b = lua_tointeger(L, ib);
        if ((b > 0 && a > LUA_MAXINTEGER - b) || (b < 0 && a < LUA_MININTEGER - b))
            return 0;
        lua_pushinteger(L, a + b);
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        int idx = i ? ib : ia;
        if (lua_isinteger(L, idx) && fabs((double)lua_tointeger(L, idx)) > exact)
            return 0;
    }
#endif
    double a = (double)lua_tonumber(L, ia), b = (double)lua_tonumber(L, ib), r = a + b;
    if (isinf(r) && !isinf(a) && !isinf(b))
        return 0;
    if (b != 0 && (r == a || r - a == 0))
        return 0;
    if (floor(a) == a && floor(b) == b &&
        (fabs(a) > exact || fabs(b) > exact || fabs(r) > exact || r - a != b))
        return 0;
    lua_pushnumber(L, (lua_Number)r);
    return 1;
}

/* Raises unless the argument at idx is a finite number. */
static void check_finite_arg(lua_State *L, int idx)
{
    check_number_arg(L, idx);
    lua_Number n = lua_tonumber(L, idx);
    if (n != n || isinf(n))
        luaL_argerror(L, idx, "finite number expected");
}

/* incr's common case, without a Lua value made: the store's own codec,
 * an integer stored, an integer delta (argument 3) and a sum that stays
 * exact (int64 in Lua 5.4, within 2^53 under LuaJIT, where numbers are
 * doubles). Returns whether it applies, with the sum in *sum; otherwise
 * incr takes its general path, which refuses or handles the rest. */
static int incr_integer_fast(lua_State *L, const lstore *s, const char *val, size_t vlen,
                             int64_t *sum)
{
    int64_t stored, delta;
    if (s->lua_codec || !lvalue_integer_text(val, vlen, &stored))
        return 0;
#if LCOMPAT_HAS_INTEGERS
    if (!lua_isinteger(L, 3))
        return 0;
    delta = (int64_t)lua_tointeger(L, 3);
    const int64_t lo = INT64_MIN, hi = INT64_MAX;
#else
    /* Below 2^53 in magnitude: the encoder writes a whole double from 2^53
     * on as a float ("9007199254740992.0"), which the general path keeps. */
    const int64_t lo = -(INT64_C(1) << 53) + 1, hi = (INT64_C(1) << 53) - 1;
    double d = (double)lua_tonumber(L, 3);
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d) || stored < lo || stored > hi)
        return 0;
    delta = (int64_t)d;
#endif
    if ((delta > 0 && stored > hi - delta) || (delta < 0 && stored < lo - delta))
        return 0;
    *sum = stored + delta;
    return 1;
}

/* Reads incr makes before it gives up with "busy". */
#define INCR_ATTEMPTS 8

/* db:incr(key [, delta [, init [, init_ttl]]]): ngx.shared.DICT's incr.
 * The result is written as the SET of the new value, keeping the key's
 * expiry (an absolute time, so a replay gives the same result). */
static int l_incr(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 3);
#if LCOMPAT_HAS_INTEGERS
        lua_pushinteger(L, 1);
#else
        lua_pushnumber(L, 1);
#endif
        lua_replace(L, 3);
    } else {
        check_finite_arg(L, 3);
    }
    int has_init = !lua_isnoneornil(L, 4);
    if (has_init)
        check_finite_arg(L, 4);
    int64_t init_ttl_ms = 0;
    if (!lua_isnoneornil(L, 5)) {
        if (!has_init)
            luaL_argerror(L, 5, "init_ttl needs init");
        init_ttl_ms = check_ttl(L, 5, "init_ttl");
    }
    require_open(L, s);
    hdb_err err;
    /* Decoding the value read, and a Lua codec, run Lua code (finalizers
     * included) that may write the store: the sum is written only if
     * nothing changed since the read, else the read is made again. */
    for (int attempt = 0; attempt < INCR_ATTEMPTS; attempt++) {
        lua_settop(L, 5);
        const char *val;
        size_t vlen;
        int64_t expire_ms; /* the key's (Unix ms), or init_ttl's (a ttl) */
        int set_flags = 0;
        int found = hdb_get_ex(s->db, key, klen, &val, &vlen, &expire_ms);
        int64_t sum_int;
        if (found && incr_integer_fast(L, s, val, vlen, &sum_int)) {
            /* No Lua code ran since the read: the key is as it was. */
            char text[24];
            size_t tlen = lvalue_format_integer(text, sum_int);
            int done;
            if (hdb_set_ex(s->db, key, klen, text, tlen, expire_ms, 0, &done, &err) != HDB_OK)
                return push_error(L, &err);
#if LCOMPAT_HAS_INTEGERS
            lua_pushinteger(L, (lua_Integer)sum_int);
#else
            lua_pushnumber(L, (lua_Number)sum_int);
#endif
            return 1 + push_forcible(L, done);
        }
        uint64_t changes = hdb_changes(s->db);
        if (found) {
            if (!push_stored_value(L, s, val, vlen, &err))
                return push_error(L, &err);
            require_open(L, s);
            if (hdb_changes(s->db) != changes)
                continue;
            if (lua_type(L, -1) != LUA_TNUMBER)
                return push_failure(L, HDB_CODE_NOT_A_NUMBER, "not a number");
        } else {
            if (!has_init)
                return push_failure(L, HDB_CODE_NOT_FOUND, "not found");
            lua_pushvalue(L, 4);
            expire_ms = init_ttl_ms;
            set_flags = HDB_SET_TTL;
        }
        if (!push_sum(L, -1, 3))
            return push_failure(L, HDB_CODE_OVERFLOW, "overflow");
        int sum = lua_gettop(L), done, rc;
        if (s->lua_codec) {
            /* A codec may not hold the sum exactly (lua-cjson keeps 14
             * digits): the result is refused rather than stored changed. */
            size_t tlen;
            const char *text = codec_encode(L, s, 1, sum, &tlen, &err);
            require_open(L, s);
            if (text == NULL)
                return push_error(L, &err);
            lua_pushvalue(L, -1);
            if (!codec_decode(L, s, 1, &err))
                return push_error(L, &err);
            require_open(L, s);
            if (!lua_rawequal(L, -1, sum))
                return push_failure(L, HDB_CODE_OVERFLOW, "overflow");
            if (hdb_changes(s->db) != changes)
                continue;
            /* The text stays on the stack until the engine has copied it;
             * the decoded sum, on top, is what get will return (lua-cjson
             * 2.1.0 reads integers as floats under Lua 5.4). */
            rc = hdb_set_ex(s->db, key, klen, text, tlen, expire_ms, set_flags, &done, &err);
        } else {
            /* Encoding a number runs no Lua code. */
            rc = write_value(L, s, key, klen, sum, expire_ms, set_flags, &done, &err);
        }
        if (rc != HDB_OK)
            return push_error(L, &err);
        return 1 + push_forcible(L, done);
    }
    return push_failure(L, HDB_CODE_BUSY, "busy: the key kept changing while incr decoded it "
                        "(code run meanwhile, a finalizer or codec, writes the store)");
}

/* db:expire(key, seconds): true if the key exists (a time of 0 or less
 * deletes it, as Redis does), false if not. */
static int l_expire(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    check_number_arg(L, 3);
    lua_Number seconds = lua_tonumber(L, 3);
    if (seconds != seconds || isinf(seconds) || seconds > TTL_MAX_S)
        luaL_argerror(L, 3, "seconds must be a finite number, at most 1e10");
    require_open(L, s);
    if (seconds <= 0)
        return delete_key(L, s, key, klen, 1);
    int64_t expire_ms = hdb_clock_ms() + check_ttl(L, 3, "seconds");
    hdb_err err;
    int done;
    if (hdb_expire_at(s->db, key, klen, expire_ms, &done, &err) != HDB_OK)
        return push_error(L, &err);
    lua_pushboolean(L, done != 0);
    return 1 + push_forcible(L, done);
}

/* db:ttl(key): seconds left, -1 if the key has no expiry, nil if absent. */
static int l_ttl(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen), *val;
    require_open(L, s);
    size_t vlen;
    int64_t expire_ms;
    if (!hdb_get_ex(s->db, key, klen, &val, &vlen, &expire_ms)) {
        lua_pushnil(L);
        return 1;
    }
    if (expire_ms == 0) {
#if LCOMPAT_HAS_INTEGERS
        lua_pushinteger(L, -1);
#else
        lua_pushnumber(L, -1);
#endif
        return 1;
    }
    int64_t left = expire_ms - hdb_clock_ms();
    lua_pushnumber(L, (lua_Number)(left > 0 ? left : 0) / 1000);
    return 1;
}

/* db:persist(key): true if an expiry was removed. */
static int l_persist(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    require_open(L, s);
    hdb_err err;
    int removed;
    if (hdb_persist(s->db, key, klen, &removed, &err) != HDB_OK)
        return push_error(L, &err);
    lua_pushboolean(L, removed);
    return 1;
}

static int l_flush_all(lua_State *L)
{
    lstore *s = check_open(L);
    hdb_err err;
    if (hdb_flush_all(s->db, &err) != HDB_OK)
        return push_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* An optional count at idx: nil or none is 0 (no bound), else a whole
 * number from 0 up. */
static uint64_t check_max(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    check_number_arg(L, idx);
    lua_Number n = lua_tonumber(L, idx);
    if (!(n >= 0) || n != floor(n) || n > 9007199254740992.0)
        luaL_argerror(L, idx, "a whole number from 0 up expected");
    return (uint64_t)n;
}

/* db:flush_expired([max]): the number of expired keys reclaimed (max 0 or
 * nil: all). */
static int l_flush_expired(lua_State *L)
{
    lstore *s = check_store(L);
    uint64_t max = check_max(L, 2);
    require_open(L, s);
    lua_pushnumber(L, (lua_Number)hdb_flush_expired(s->db, max));
#if LCOMPAT_HAS_INTEGERS
    lua_pushinteger(L, (lua_Integer)lua_tonumber(L, -1));
    lua_replace(L, -2);
#endif
    return 1;
}

static int l_get(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen, vlen;
    const char *key = check_key(L, 2, &klen), *val;
    require_open(L, s);
    if (!hdb_get(s->db, key, klen, &val, &vlen)) {
        lua_pushnil(L);
        return 1;
    }
    copy_out c;
    if (copy_take(&c, NULL, 0, val, vlen) != 0)
        return push_failure(L, HDB_CODE_NO_MEMORY, "out of memory");
    c.val_raw = s->lua_codec;
    hdb_err err;
    if (!copy_push(L, &c, &err))
        return push_error(L, &err);
    if (c.val_raw && !codec_decode(L, s, 1, &err))
        return push_error(L, &err);
    return 1;
}

static int l_delete(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    require_open(L, s);
    return delete_key(L, s, key, klen, 1);
}

static int l_exists(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen, vlen;
    const char *key = check_key(L, 2, &klen), *val;
    require_open(L, s);
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
    uint64_t max = check_max(L, 3);
    /* hdb_count reclaims every expired key: not for a bounded listing. */
    uint64_t count = max > 0 ? max : hdb_count(s->db);
    if (count > 1u << 20)
        count = 1u << 20; /* a presize, not a promise */
    lua_createtable(L, prefix ? 0 : (int)count, 0);
    uint32_t cursor = 0;
    lua_Integer n = 0;
    const char *k, *v;
    size_t klen, vlen;
    copy_out c;
    for (;;) {
        require_open(L, s);
        if (!hdb_next(s->db, &cursor, &k, &klen, &v, &vlen))
            break;
        if (prefix && (klen < plen || memcmp(k, prefix, plen) != 0))
            continue;
        if (copy_take(&c, k, klen, NULL, 0) != 0)
            return luaL_error(L, "out of memory");
        copy_push(L, &c, NULL);
        lua_rawseti(L, -2, ++n);
        if (max > 0 && (uint64_t)n >= max)
            break;
    }
    return 1;
}

/* The iterator of db:pairs(). Its position lives in upvalue 3 (the store is
 * upvalue 2), so the loop's control variable (the key) plays no part: the
 * store may change under it. A value this Lua cannot decode gives key, nil,
 * the error and its code ("value"), and the loop goes on. */
static int pairs_step(lua_State *L)
{
    lstore *s = (lstore *)lua_touserdata(L, lua_upvalueindex(2));
    if (s->db == NULL)
        return luaL_error(L, "store is closed");
    uint32_t cursor = (uint32_t)lua_tonumber(L, lua_upvalueindex(3));
    const char *k, *v;
    size_t klen, vlen;
    if (!hdb_next(s->db, &cursor, &k, &klen, &v, &vlen)) {
        lua_pushnil(L);
        return 1;
    }
    copy_out c;
    if (copy_take(&c, k, klen, v, vlen) != 0)
        return luaL_error(L, "out of memory");
    c.val_raw = s->lua_codec;
    lua_pushnumber(L, (lua_Number)cursor);
    lua_replace(L, lua_upvalueindex(3));
    hdb_err err;
    if (!copy_push(L, &c, &err))
        return 1 + push_error(L, &err); /* after the key */
    if (c.val_raw && !codec_decode(L, s, lua_upvalueindex(2), &err))
        return 1 + push_error(L, &err);
    return 2;
}

static int l_pairs(lua_State *L)
{
    check_open(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushnumber(L, 0);
    lua_pushcclosure(L, pairs_step, 3);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static int l_sync(lua_State *L)
{
    lstore *s = check_open(L);
    hdb_err err;
    if (hdb_sync(s->db, &err) != HDB_OK)
        return push_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* db:rewrite([{ wait = true }]) */
static int l_rewrite(lua_State *L)
{
    lstore *s = check_open(L);
    int wait = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2) != 0) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "wait") != 0)
                return luaL_error(L, "rewrite: unknown option '%s' (known: wait)",
                                  lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                                 : luaL_typename(L, -1));
        }
        lua_getfield(L, 2, "wait");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TBOOLEAN)
            return luaL_error(L, "rewrite: option 'wait' must be a boolean (got %s)",
                              luaL_typename(L, -1));
        wait = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    /* Reading the option ran the table's __index, if any, which may have
     * closed the store. */
    require_open(L, s);
    hdb_err err;
    if (hdb_rewrite(s->db, wait, &err) != HDB_OK)
        return push_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* Pushes a count or a time in ms: an integer where Lua has them. */
static void push_count(lua_State *L, int64_t v)
{
#if LCOMPAT_HAS_INTEGERS
    lua_pushinteger(L, (lua_Integer)v);
#else
    lua_pushnumber(L, (lua_Number)v);
#endif
}

static void set_count_field(lua_State *L, const char *name, int64_t v)
{
    push_count(L, v);
    lua_setfield(L, -2, name);
}

/* Copies the store's path (none for a memory store) into c. */
static void copy_path(lua_State *L, const lstore *s, copy_out *c)
{
    const char *path = hdb_path(s->db);
    if (copy_take(c, path, path ? strlen(path) : 0, NULL, 0) != 0)
        luaL_error(L, "out of memory");
}

static int l_stats(lua_State *L)
{
    lstore *s = check_open(L);
    hdb_stats st;
    hdb_get_stats(s->db, &st);
    int64_t memory = (int64_t)(st.memory_bytes + sizeof *s + s->scratch.cap);
    copy_out path, warning;
    copy_path(L, s, &path);
    /* The warning lives in the store, which a finalizer run by the
     * allocations below may close: copied first, like the path. */
    if (copy_take(&warning, st.warning, strlen(st.warning), NULL, 0) != 0)
        luaL_error(L, "out of memory");
    lua_createtable(L, 0, 21);
    /* In the userdata, never changed after the open: no finalizer run by
     * these allocations can change it. */
    lua_pushstring(L, s->codec_name);
    lua_setfield(L, -2, "codec");
    set_count_field(L, "keys", (int64_t)st.keys);
    set_count_field(L, "memory", memory);
    set_count_field(L, "aof_bytes", (int64_t)st.aof_bytes);
    set_count_field(L, "aof_pending_bytes", (int64_t)st.aof_pending_bytes);
    set_count_field(L, "last_sync", st.last_sync_ms);
    set_count_field(L, "loaded_records", (int64_t)st.loaded_records);
    set_count_field(L, "dropped_bytes", (int64_t)st.dropped_bytes);
    set_count_field(L, "errors", (int64_t)st.errors);
    set_count_field(L, "backpressure_waits", (int64_t)st.backpressure_waits);
    set_count_field(L, "expired_keys", (int64_t)st.expired_keys);
    set_count_field(L, "keys_with_ttl", (int64_t)st.keys_with_ttl);
    set_count_field(L, "evicted_keys", (int64_t)st.evicted_keys);
    set_count_field(L, "data_memory", (int64_t)st.data_bytes);
    if (st.max_memory > 0)
        set_count_field(L, "max_memory", (int64_t)st.max_memory);
    if (path.has_str) {
        lua_pushboolean(L, st.rewrite_running);
        lua_setfield(L, -2, "rewrite_running");
        set_count_field(L, "rewrites", (int64_t)st.rewrites);
        set_count_field(L, "rewrites_failed", (int64_t)st.rewrites_failed);
        set_count_field(L, "rewrite_base_bytes", (int64_t)st.rewrite_base_bytes);
        set_count_field(L, "live_bytes", (int64_t)st.live_bytes);
        if (st.last_rewrite_status != 0) {
            lua_pushstring(L, st.last_rewrite_status > 0 ? "ok" : "failed");
            lua_setfield(L, -2, "last_rewrite_status");
            lua_pushnumber(L, (lua_Number)st.last_rewrite_seconds);
            lua_setfield(L, -2, "last_rewrite_seconds");
        }
        if (st.last_rewrite_error[0] != '\0') {
            lua_pushstring(L, st.last_rewrite_error);
            lua_setfield(L, -2, "last_rewrite_error");
        }
    }
    if (warning.slen > 0) {
        copy_push(L, &warning, NULL);
        lua_setfield(L, -2, "warning");
    }
    if (st.last_error[0] != '\0') {
        lua_pushstring(L, st.last_error);
        lua_setfield(L, -2, "last_error");
    }
    if (path.has_str) {
        copy_push(L, &path, NULL);
        lua_setfield(L, -2, "path");
    }
    return 1;
}

static int l_close(lua_State *L)
{
    lstore *s = check_store(L);
    hdb_err err;
    if (store_close(s, &err) != HDB_OK)
        return push_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* __close: like close(), but a failure raises, since nobody receives a
 * return value at the end of a scope and losing the error would hide data
 * that did not reach the disk. */
static int l_close_scope(lua_State *L)
{
    lstore *s = check_store(L);
    hdb_err err;
    if (store_close(s, &err) != HDB_OK)
        return luaL_error(L, "%s", err.msg);
    return 0;
}

/* __gc: the store was dropped without close(). Flush what is pending. */
static int l_gc(lua_State *L)
{
    lstore *s = check_store(L);
    store_discard(s, "garbage-collected");
    return 0;
}

static int l_len(lua_State *L)
{
    return l_count(L);
}

static int l_tostring(lua_State *L)
{
    lstore *s = check_store(L);
    if (s->db == NULL) {
        lua_pushfstring(L, "hurrahdb store (closed): %p", (void *)s);
        return 1;
    }
    copy_out path;
    copy_path(L, s, &path);
    if (!path.has_str) {
        lua_pushfstring(L, "hurrahdb store (memory): %p", (void *)s);
        return 1;
    }
    copy_push(L, &path, NULL);
    lua_pushfstring(L, "hurrahdb store (%s): %p", lua_tostring(L, -1), (void *)s);
    return 1;
}

static const luaL_Reg store_methods[] = {
    {"set", l_set},
    {"add", l_add},
    {"replace", l_replace},
    {"incr", l_incr},
    {"expire", l_expire},
    {"ttl", l_ttl},
    {"persist", l_persist},
    {"flush_all", l_flush_all},
    {"flush_expired", l_flush_expired},
    {"get", l_get},
    {"delete", l_delete},
    {"exists", l_exists},
    {"count", l_count},
    {"keys", l_keys},
    {"pairs", l_pairs},
    {"sync", l_sync},
    {"stats", l_stats},
    {"rewrite", l_rewrite},
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

/* ---- Reading a file without opening its store ---- */

#define READER_MT "hurrahdb.reader"

typedef struct lreader {
    hdb_reader *r; /* NULL once closed */
} lreader;

/* Pushes the report of a file as a table. */
static void push_report(lua_State *L, const hdb_check_report *r)
{
    static const char *const tails[] = {"none", "torn", "torn header", "bad"};
    lua_createtable(L, 0, 24);
    set_count_field(L, "version", r->version);
    lua_pushstring(L, r->codec[0] ? r->codec : "json");
    lua_setfield(L, -2, "codec");
    const struct {
        const char *name;
        uint64_t value;
    } counts[] = {
        {"file_bytes", r->file_bytes},       {"batches", r->batches},
        {"records", r->records},             {"set_records", r->set_records},
        {"del_records", r->del_records},     {"expire_records", r->expire_records},
        {"persist_records", r->persist_records}, {"flushall_records", r->flushall_records},
        {"keys", r->keys},                   {"keys_with_ttl", r->keys_with_ttl},
        {"expired_keys", r->expired_keys},   {"live_bytes", r->live_bytes},
        {"dead_bytes", r->dead_bytes},       {"good_bytes", r->good_len},
        {"tail_bytes", r->tail_bytes},
    };
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
        set_count_field(L, counts[i].name, (int64_t)counts[i].value);
    lua_pushstring(L, tails[r->tail]);
    lua_setfield(L, -2, "tail");
    lua_pushboolean(L, r->damaged);
    lua_setfield(L, -2, "damaged");
    set_count_field(L, "checked_at_ms", r->now_ms);
    if (r->damaged)
        set_count_field(L, "damage_at", (int64_t)r->damage_at);
    if (r->problem[0]) {
        lua_pushstring(L, r->problem);
        lua_setfield(L, -2, "problem");
    }
}

static const char *check_path_arg(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        luaL_argerror(L, 1, lua_pushfstring(L, "string expected, got %s", luaL_typename(L, 1)));
    check_path_bytes(L, 1, 1, "path");
    return lua_tostring(L, 1);
}

/* hurrahdb.check(path): what the file holds, read without opening the
 * store (no lock, nothing written): a table, or nil, err, code when it
 * cannot be read as a store's file. */
static int l_check(lua_State *L)
{
    const char *path = check_path_arg(L);
    hdb_check_report r;
    hdb_err err;
    if (hdb_check_file(path, hdb_clock_ms(), &r, &err) != HDB_OK)
        return push_error(L, &err);
    push_report(L, &r);
    return 1;
}

/* hurrahdb.read(path): a reader of the file, as check reads it, that also
 * gives its keys; or nil, err, code. */
static int l_read(lua_State *L)
{
    const char *path = check_path_arg(L);
    lreader *ud = lua_newuserdata(L, sizeof *ud);
    ud->r = NULL;
    luaL_getmetatable(L, READER_MT);
    lua_setmetatable(L, -2);
    hdb_err err;
    if ((ud->r = hdb_reader_open(path, hdb_clock_ms(), &err)) == NULL)
        return push_error(L, &err);
    return 1;
}

static hdb_reader *check_reader_at(lua_State *L, int idx)
{
    lreader *ud = luaL_checkudata(L, idx, READER_MT);
    if (ud->r == NULL)
        luaL_error(L, "reader is closed");
    return ud->r;
}

static int l_reader_report(lua_State *L)
{
    push_report(L, hdb_reader_report(check_reader_at(L, 1)));
    return 1;
}

/* The iterator of reader:pairs(). Upvalues: copy_push_protected, the
 * reader, the cursor. The key and the text are copied before anything is
 * pushed: a finalizer run by the pushes may close the reader. */
static int reader_iter(lua_State *L)
{
    hdb_reader *r = check_reader_at(L, lua_upvalueindex(2));
    size_t cursor = (size_t)lua_tonumber(L, lua_upvalueindex(3));
    const char *key, *val;
    size_t klen, vlen;
    int64_t expire_ms;
    if (!hdb_reader_next(r, &cursor, &key, &klen, &val, &vlen, &expire_ms))
        return 0;
    lua_pushnumber(L, (lua_Number)cursor);
    lua_replace(L, lua_upvalueindex(3));
    copy_out c;
    if (copy_take(&c, key, klen, val, vlen) != 0)
        return luaL_error(L, "out of memory");
    c.val_raw = 1;
    copy_push(L, &c, NULL);
    if (expire_ms > 0)
        push_count(L, expire_ms);
    else
        lua_pushnil(L);
    return 3;
}

/* reader:pairs(): for key, text, expire_ms in reader:pairs() do ... end,
 * over the keys an open would hold: each key, its value's stored text (the
 * codec's: JSON for "json" and "cjson"), and its expiry (Unix ms; nil for
 * none), in no particular order. */
static int l_reader_pairs(lua_State *L)
{
    check_reader_at(L, 1);
    lua_pushcfunction(L, copy_push_protected);
    lua_pushvalue(L, 1);
    lua_pushnumber(L, 0);
    lua_pushcclosure(L, reader_iter, 3);
    return 1;
}

static int l_reader_close(lua_State *L)
{
    lreader *ud = luaL_checkudata(L, 1, READER_MT);
    hdb_reader_close(ud->r);
    ud->r = NULL;
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg reader_methods[] = {
    {"report", l_reader_report},
    {"pairs", l_reader_pairs},
    {"close", l_reader_close},
    {NULL, NULL},
};

/* hurrahdb.encode(value): the JSON text the default codec stores for the
 * value, or nil, err, code ("value", "too large", "no memory"). */
static int l_encode(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        luaL_argerror(L, 1, "value expected (nil has no JSON; hurrahdb.null is null)");
    lua_settop(L, 1);
    hdb_buf text;
    hdb_buf_init(&text);
    hdb_err err;
    int enc = lvalue_encode(L, 1, &text, HDB_MAX_ITEM_LEN, err.msg, sizeof err.msg);
    if (enc == LVALUE_UNKNOWN_MARK) {
        hdb_buf_free(&text); /* before the refresh, which may raise */
        if (lvalue_markers_refresh(L))
            enc = lvalue_encode(L, 1, &text, HDB_MAX_ITEM_LEN, err.msg, sizeof err.msg);
    }
    if (enc != LVALUE_OK) {
        hdb_buf_free(&text);
        err.code = encode_code(enc);
        return push_error(L, &err);
    }
    copy_out c;
    int rc = copy_take(&c, text.data ? text.data : "", text.len, NULL, 0);
    hdb_buf_free(&text);
    if (rc != 0)
        return push_failure(L, HDB_CODE_NO_MEMORY, "out of memory");
    copy_push(L, &c, NULL);
    return 1;
}

/* hurrahdb.decode(text): the value of JSON text as the default codec reads
 * it, or nil, err, "value". */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    hdb_err err;
    if (lvalue_decode(L, text, len, err.msg, sizeof err.msg) != 0) {
        err.code = HDB_CODE_VALUE;
        return push_error(L, &err);
    }
    return 1;
}

/* hurrahdb.clock_ms(): the clock of expiries, Unix time in ms (rounded
 * up, as the expiry of a ttl counts from it). */
static int l_clock_ms(lua_State *L)
{
    push_count(L, hdb_clock_ms());
    return 1;
}

static const luaL_Reg module_functions[] = {
    {"clock_ms", l_clock_ms},
    {"new", l_new},
    {"open", l_open},
    {"check", l_check},
    {"read", l_read},
    {"encode", l_encode},
    {"decode", l_decode},
    {NULL, NULL},
};

/* Sets the functions of l into the table on top, each with
 * copy_push_protected as upvalue 1 (see copy_push) and the metatable at
 * index mt as upvalue 2 (see check_store). */
static void set_methods(lua_State *L, const luaL_Reg *l, int mt)
{
    for (; l->name != NULL; l++) {
        lua_pushcfunction(L, copy_push_protected);
        lua_pushvalue(L, mt);
        lua_pushcclosure(L, l->func, 2);
        lua_setfield(L, -2, l->name);
    }
}

/* The only exported symbol: the engine's names stay private to the module,
 * so they cannot clash with another library loaded in the same nginx. */
__attribute__((visibility("default"))) int luaopen_hurrahdb(lua_State *L);

int luaopen_hurrahdb(lua_State *L)
{
    luaL_newmetatable(L, STORE_MT);
    int mt = lua_gettop(L);
    set_methods(L, store_meta, mt);
    lua_createtable(L, 0, sizeof store_methods / sizeof *store_methods);
    set_methods(L, store_methods, mt);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "hurrahdb.store");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);

    luaL_newmetatable(L, READER_MT);
    lua_createtable(L, 0, 3);
    luaL_setfuncs(L, reader_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_reader_close);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, READER_MT);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);

    lua_createtable(L, 0, 8);
    lua_pushcfunction(L, copy_push_protected);
    luaL_setfuncs(L, module_functions, 1);
    lua_pushliteral(L, HDB_VERSION);
    lua_setfield(L, -2, "_VERSION");
    /* The JSON null, the same value as cjson.null (a NULL light userdata). */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
