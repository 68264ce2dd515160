/*
 * hdb_testlib: what the specs need from the OS that Lua lacks and that
 * Debian packages no module for: fork, waitpid and _exit, to use a store in
 * a forked child as nginx uses one in its workers; the engine's CRC-32C,
 * to write AOF files by hand (LuaJIT has no integer operators to compute it
 * in Lua); and the decimal point C's printf and strtod use, which LuaJIT's
 * own number formatting never shows; and a flock held as another store
 * holds one. Built by `make test`; not part of
 * hurrahdb.
 */
#define _GNU_SOURCE /* flock, RTLD_DEFAULT */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "hdb_crc32c.h"
#include "lcompat.h"

static int l_fork(lua_State *L)
{
    pid_t pid = fork();
    if (pid < 0)
        return luaL_error(L, "fork: %s", strerror(errno));
    lua_pushinteger(L, (lua_Integer)pid);
    return 1;
}

/* waitpid(pid [, seconds]) --> exit status, or -signal if killed; with
 * seconds, nil if the child has not ended by then (it is left running). */
static int l_waitpid(lua_State *L)
{
    int status;
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    double limit = luaL_optnumber(L, 2, -1);
    if (limit >= 0) {
        /* Polled every millisecond: the specs that bound a wait look for a
         * child blocked for good, not for one late by a millisecond. */
        const struct timespec tick = { 0, 1000000 };
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
            pid_t got = waitpid(pid, &status, WNOHANG);
            if (got == pid)
                break;
            if (got < 0 && errno != EINTR)
                return luaL_error(L, "waitpid: %s", strerror(errno));
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 >= limit) {
                lua_pushnil(L);
                return 1;
            }
            nanosleep(&tick, NULL);
        }
    } else {
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR)
                return luaL_error(L, "waitpid: %s", strerror(errno));
        }
    }
    lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
    return 1;
}

/* kill(pid, signal) */
static int l_kill(lua_State *L)
{
    if (kill((pid_t)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2)) < 0)
        return luaL_error(L, "kill: %s", strerror(errno));
    return 0;
}

/* Leaves the child at once: no atexit handlers, no flushing of the stdio
 * buffers it shares with the parent. */
static int l_exit(lua_State *L)
{
    _exit((int)luaL_optinteger(L, 1, 0));
    return 0;
}

/* crc32c(string) --> the CRC-32C of its bytes, as a number */
static int l_crc32c(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushnumber(L, (lua_Number)crc32c_update(0, s, len));
    return 1;
}

/* light_userdata() --> a light userdata that is not NULL (Lua code cannot
 * make one), for the specs of methods called on the wrong object. */
static int l_light_userdata(lua_State *L)
{
    static char somewhere;
    lua_pushlightuserdata(L, &somewhere);
    return 1;
}

/* decimal_point() --> the decimal point of the current LC_NUMERIC, the one
 * printf and strtod use */
static int l_decimal_point(lua_State *L)
{
    lua_pushstring(L, localeconv()->decimal_point);
    return 1;
}

/* flock(path) --> a descriptor holding an exclusive flock on path (created
 * if missing), as another store would; unlock(fd) closes it. */
static int l_flock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return luaL_error(L, "open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        return luaL_error(L, "flock %s: %s", path, strerror(e));
    }
    lua_pushinteger(L, fd);
    return 1;
}

static int l_unlock(lua_State *L)
{
    close((int)luaL_checkinteger(L, 1));
    return 0;
}

/* clock_shift(ms) --> the wall clock's new offset (ms): moves the clock
 * of expiries forward (or back) by ms, through the fault shim, which must
 * be preloaded (make test does). */
static int l_clock_shift(lua_State *L)
{
    volatile long long *offset = dlsym(RTLD_DEFAULT, "hdb_shim_clock_offset_ms");
    if (offset == NULL)
        return luaL_error(L, "clock_shift needs the fault shim preloaded (make test)");
    *offset += (long long)luaL_checknumber(L, 1);
    lua_pushnumber(L, (lua_Number)*offset);
    return 1;
}

static const luaL_Reg testlib[] = {
    {"clock_shift", l_clock_shift},
    {"flock", l_flock},
    {"unlock", l_unlock},
    {"crc32c", l_crc32c},
    {"light_userdata", l_light_userdata},
    {"decimal_point", l_decimal_point},
    {"fork", l_fork},
    {"waitpid", l_waitpid},
    {"kill", l_kill},
    {"_exit", l_exit},
    {NULL, NULL},
};

__attribute__((visibility("default"))) int luaopen_hdb_testlib(lua_State *L);

int luaopen_hdb_testlib(lua_State *L)
{
    lua_createtable(L, 0, 8);
    luaL_setfuncs(L, testlib, 0);
    return 1;
}
