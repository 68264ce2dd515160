/*
 * libFuzzer target for the value decoder: any bytes, as a stored value's
 * text, are decoded into Lua values. Besides the sanitizers' own checks, it
 * traps when what the decoder accepts does not survive the promise the codec
 * makes: a decoded value encodes again (the encoder takes every value the
 * decoder gives), and that text decodes to a value equal to the first one,
 * with the same number subtypes (no digit, subtype or byte drifts). Keys of
 * an object may come out in another order, so the values are compared, not
 * the texts. Run by `make fuzz`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lvalue.h"

/* Largest value text tried: a limit of the encoder's, so that a decoded
 * value whose text is longer is refused as too long, not a failure here. */
#define FUZZ_MAX_TEXT (1u << 20)

typedef struct fuzz_input {
    const char *text;
    size_t len;
    int decoded;
} fuzz_input;

/* Decodes the input in a protected call: the decoder raises on memory errors. */
static int decode_protected(lua_State *L)
{
    fuzz_input *in = (fuzz_input *)lua_touserdata(L, 1);
    char err[256];
    in->decoded = lvalue_decode(L, in->text, in->len, err, sizeof err) == 0;
    if (!in->decoded && strstr(err, "cannot decode stored value: ") != err)
        __builtin_trap(); /* every failure names itself the same way */
    return in->decoded ? 1 : 0;
}

/* Decodes text; returns 1 with the value on top of the stack, or 0. */
static int decode(lua_State *L, const char *text, size_t len)
{
    fuzz_input in = {text, len, 0};
    lua_pushcfunction(L, decode_protected);
    lua_pushlightuserdata(L, &in);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pop(L, 1); /* a memory error: nothing to check */
        return 0;
    }
    if (!in.decoded)
        lua_pop(L, 1);
    return in.decoded;
}

/* Whether the values at a and b (absolute indices) are equal: same types,
 * the same number subtype, strings byte for byte, tables with equal values
 * under the same keys. */
static int same_value(lua_State *L, int a, int b)
{
    int t = lua_type(L, a);
    if (t != lua_type(L, b))
        return 0;
    switch (t) {
    case LUA_TNUMBER:
        return lua_isinteger(L, a) == lua_isinteger(L, b) && lua_rawequal(L, a, b);
    case LUA_TTABLE: {
        if (!lua_checkstack(L, 4))
            abort();
        size_t count_a = 0, count_b = 0;
        lua_pushnil(L);
        while (lua_next(L, a) != 0) {
            count_a++;
            lua_pushvalue(L, -2);
            lua_rawget(L, b);
            int top = lua_gettop(L);
            int same = same_value(L, top - 1, top);
            lua_pop(L, 2);
            if (!same) {
                lua_pop(L, 1);
                return 0;
            }
        }
        lua_pushnil(L);
        while (lua_next(L, b) != 0) {
            count_b++;
            lua_pop(L, 1);
        }
        return count_a == count_b;
    }
    default:
        return lua_rawequal(L, a, b);
    }
}

static lua_State *fuzz_lua(void)
{
    static lua_State *L;
    if (L == NULL) {
        L = luaL_newstate();
        if (L == NULL)
            abort();
    }
    return L;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fuzz_lua();
    lua_settop(L, 0);
    if (decode(L, (const char *)data, size)) {
        hdb_buf first;
        hdb_buf_init(&first);
        char err[256];
        int rc = lvalue_encode(L, 1, &first, FUZZ_MAX_TEXT, err, sizeof err);
        if (rc == LVALUE_REFUSED || rc == LVALUE_UNKNOWN_MARK)
            __builtin_trap(); /* the decoder gave a value the encoder refuses */
        if (rc == LVALUE_OK) {
            if (!decode(L, first.data, first.len))
                __builtin_trap(); /* the encoder wrote text the decoder refuses */
            if (!same_value(L, 1, 2))
                __builtin_trap(); /* a value changed on its way through */
        }
        hdb_buf_free(&first);
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
