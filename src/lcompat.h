/*
 * lcompat.h: the few Lua C API differences between Lua 5.4 and LuaJIT 2.1
 * (Lua 5.1 API) that the binding meets, so that one source serves both.
 */
#ifndef LCOMPAT_H
#define LCOMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 503
#define LCOMPAT_HAS_INTEGERS 1
#else
#define LCOMPAT_HAS_INTEGERS 0
#endif

#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
#define lua_absindex(L, i) \
    ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
/* Lua 5.2's luaL_setfuncs: each function gets the nup values on top of the
 * stack (the table just under them) as upvalues; they are popped. */
static inline void lcompat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    for (; l->name != NULL; l++) {
        for (int i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#define luaL_setfuncs(L, l, nup) lcompat_setfuncs((L), (l), (nup))
#endif

/* A full userdata with one Lua value attached to it (the user value in Lua
 * 5.4, the environment table in LuaJIT), reachable only through the userdata:
 * what it holds lives as long as the userdata, and a cycle through it is
 * collected, unlike one through the registry. */
#if LUA_VERSION_NUM >= 504
#define lcompat_newuserdata(L, size) lua_newuserdatauv((L), (size), 1)
#define lcompat_setuservalue(L, idx) ((void)lua_setiuservalue((L), (idx), 1))
#define lcompat_getuservalue(L, idx) ((void)lua_getiuservalue((L), (idx), 1))
#else
#define lcompat_newuserdata(L, size) lua_newuserdata((L), (size))
#define lcompat_setuservalue(L, idx) ((void)lua_setfenv((L), (idx)))
#define lcompat_getuservalue(L, idx) lua_getfenv((L), (idx))
#endif

#endif
