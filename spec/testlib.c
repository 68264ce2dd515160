/*
 * hdb_testlib: what the specs need from the OS that Lua 5.4 lacks and that
 * Debian packages no module for: fork, waitpid and _exit, to use a store in
 * a forked child as nginx uses one in its workers. Built by `make test`;
 * not part of hurrahdb.
 */
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lcompat.h"

static int l_fork(lua_State *L)
{
    pid_t pid = fork();
    if (pid < 0)
        return luaL_error(L, "fork: %s", strerror(errno));
    lua_pushinteger(L, (lua_Integer)pid);
    return 1;
}

/* waitpid(pid) --> exit status, or -signal if killed */
static int l_waitpid(lua_State *L)
{
    int status;
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return luaL_error(L, "waitpid: %s", strerror(errno));
    }
    lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
    return 1;
}

/* Leaves the child at once: no atexit handlers, no flushing of the stdio
 * buffers it shares with the parent. */
static int l_exit(lua_State *L)
{
    _exit((int)luaL_optinteger(L, 1, 0));
    return 0;
}

static const luaL_Reg testlib[] = {
    {"fork", l_fork},
    {"waitpid", l_waitpid},
    {"_exit", l_exit},
    {NULL, NULL},
};

__attribute__((visibility("default"))) int luaopen_hdb_testlib(lua_State *L);

int luaopen_hdb_testlib(lua_State *L)
{
    lua_createtable(L, 0, 3);
    luaL_setfuncs(L, testlib, 0);
    return 1;
}
