/*
 * hdb_benchlib: what bench/bench.lua needs below Lua: a monotonic clock with
 * nanosecond resolution (per-call latencies of a few hundred nanoseconds),
 * and the disk's own limit for a synchronous store, a plain C loop of
 * write + fdatasync of fixed-size records, and the cost of a page fault on
 * this machine (what first touching fresh memory costs), and the count of
 * times the kernel took the CPU away from the calling thread (to tell a
 * call that was slow from one that was preempted). Built by `make bench`;
 * not part of hurrahdb.
 */
/* MAP_ANONYMOUS (Linux, the BSDs; POSIX only since 2024); RUSAGE_THREAD
 * (Linux). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lcompat.h"

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* now() --> seconds on the monotonic clock */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)monotonic_seconds());
    return 1;
}

/* fsync_loop(path, record_bytes, count) --> seconds | nil, err
 * Appends `count` records of `record_bytes` to a new file at path, each
 * followed by fdatasync, as a store that syncs every write must. */
static int l_fsync_loop(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t size = (size_t)luaL_checknumber(L, 2);
    long count = (long)luaL_checknumber(L, 3);
    if (size == 0 || count <= 0)
        return luaL_error(L, "fsync_loop: record_bytes and count must be positive");
    char *record = malloc(size);
    if (record == NULL)
        return luaL_error(L, "fsync_loop: out of memory");
    memset(record, 'x', size);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        free(record);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot open %s: %s", path, strerror(errno));
        return 2;
    }
    double t0 = monotonic_seconds();
    int err = 0;
    for (long i = 0; i < count && err == 0; i++) {
        size_t done = 0;
        while (done < size && err == 0) {
            ssize_t n = write(fd, record + done, size - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                err = n < 0 ? errno : ENOSPC;
            else
                done += (size_t)n;
        }
        if (err == 0 && fdatasync(fd) != 0)
            err = errno;
    }
    double dt = monotonic_seconds() - t0;
    if (close(fd) != 0 && err == 0)
        err = errno;
    free(record);
    if (err != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(err));
        return 2;
    }
    lua_pushnumber(L, (lua_Number)dt);
    return 1;
}

/* fault_seconds(pages) --> seconds per page | nil, err
 * Maps `pages` fresh anonymous pages and writes one byte in each: every
 * write is a page fault, the kernel's zeroing of the page included, which
 * is what a process pays the first time it uses memory it has grown by. */
static int l_fault_seconds(lua_State *L)
{
    long pages = (long)luaL_checknumber(L, 1);
    long page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
        return luaL_error(L, "fault_seconds: pages must be positive");
    size_t len = (size_t)pages * (size_t)page;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        lua_pushnil(L);
        lua_pushfstring(L, "mmap: %s", strerror(errno));
        return 2;
    }
    double t0 = monotonic_seconds();
    for (size_t off = 0; off < len; off += (size_t)page)
        ((volatile char *)p)[off] = 1;
    double dt = monotonic_seconds() - t0;
    munmap(p, len);
    lua_pushnumber(L, (lua_Number)(dt / (double)pages));
    return 1;
}

/* preemptions() --> involuntary and voluntary context switches of the
 * calling thread so far (preempted; blocked on a lock or the disk), and its
 * minor page faults; or nil where the system does not count them per
 * thread */
static int l_preemptions(lua_State *L)
{
#if defined(RUSAGE_THREAD)
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) == 0) {
        lua_pushnumber(L, (lua_Number)ru.ru_nivcsw);
        lua_pushnumber(L, (lua_Number)ru.ru_nvcsw);
        lua_pushnumber(L, (lua_Number)ru.ru_minflt);
        return 3;
    }
#endif
    lua_pushnil(L);
    return 1;
}

static const luaL_Reg benchlib[] = {
    {"preemptions", l_preemptions},
    {"now", l_now},
    {"fsync_loop", l_fsync_loop},
    {"fault_seconds", l_fault_seconds},
    {NULL, NULL},
};

__attribute__((visibility("default"))) int luaopen_hdb_benchlib(lua_State *L);

int luaopen_hdb_benchlib(lua_State *L)
{
    lua_createtable(L, 0, 4);
    luaL_setfuncs(L, benchlib, 0);
    return 1;
}
