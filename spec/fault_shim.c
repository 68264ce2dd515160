/*
 * fault_shim: an LD_PRELOAD library that makes writes to *.aof files fail,
 * for the durability specs. `make test` preloads it into the spec process
 * and names a control file in HURRAHDB_FAULTS; a spec writes a rule to that
 * file, runs the store, and empties it again. Rules (one line):
 *
 *   pwrite ENOSPC | pwrite EIO      pwrite fails, nothing written
 *   pwrite short                    pwrite writes half (at least one byte)
 *   pwrite partial ENOSPC           pwrite writes half, then reports ENOSPC
 *   (the pwrite rules apply to pwritev as well)
 *   fdatasync EIO                   fdatasync fails
 *   ftruncate EIO                   ftruncate fails
 *   close EIO                       close closes, then reports EIO (as NFS may)
 *   flock delay <ms>                flock waits that long first (widens the
 *   pread delay <ms>                window between two steps of an open)
 *   fdatasync delay <ms>            fdatasync waits that long first (a slow disk)
 *
 *   rename EIO                      rename fails (only with the prefix below)
 *   dirsync EIO | dirsync EINVAL    fsync of a directory fails (any directory:
 *                                   the store syncs only its file's)
 *   dirclose delay <ms>             a close of a directory returns that long
 *                                   after closing it (the hit is counted
 *                                   first: a spec can act inside the window)
 *   diropen EACCES                  an open of a directory (O_DIRECTORY)
 *                                   fails, as for a directory without read
 *                                   permission (which root would not see)
 *
 * The shim also moves the wall clock: clock_gettime(CLOCK_REALTIME), the
 * clock of hurrahdb's expiries, runs hdb_shim_clock_offset_ms ahead, which
 * hdb_testlib's clock_shift sets (through dlsym: the spec process holds
 * both), so that a spec moves time forward instead of sleeping.
 *
 * Every interposed call counts itself in the control file's sibling
 * "<control>.hits" so a spec can check that a fault was really hit.
 * Only descriptors whose path ends in ".aof" are affected; a rule prefixed
 * with "rewrite " ("rewrite pwrite ENOSPC") affects only the temporary
 * files of rewrites ("*.rewrite"), so that a rewrite can fail while the
 * store's own file keeps working.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef int (*fd_fn)(int);
typedef int (*ftruncate_fn)(int, off_t);
typedef int (*flock_fn)(int, int);
typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);

static int ends_with(const char *s, size_t n, const char *suffix);

/* The real close(2), for the shim's own files: the interposed close below
 * must not read the rule while reading the rule. */
static int shim_close(int fd)
{
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "close");
    return real(fd);
}

/* Reads the current rule; returns 0 if there is none. */
static int fault_rule(char *rule, size_t cap)
{
    const char *control = getenv("HURRAHDB_FAULTS");
    if (control == NULL)
        return 0;
    int fd = open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, rule, cap - 1);
    shim_close(fd);
    if (n <= 0)
        return 0;
    rule[n] = '\0';
    char *nl = strchr(rule, '\n');
    if (nl)
        *nl = '\0';
    return rule[0] != '\0';
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int is_target(int fd, int rewrite_only)
{
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 4)
        return 0;
    target[n] = '\0';
    return ends_with(target, (size_t)n, rewrite_only ? ".rewrite" : ".aof");
}

/* Reads the current rule into rule (without its "rewrite " prefix) and
 * returns 1 if there is one and it applies to fd. */
static int rule_for(int fd, char *rule, size_t cap)
{
    if (!fault_rule(rule, cap))
        return 0;
    int rewrite_only = strncmp(rule, "rewrite ", 8) == 0;
    if (rewrite_only)
        memmove(rule, rule + 8, strlen(rule + 8) + 1);
    return is_target(fd, rewrite_only);
}

static void count_hit(void)
{
    const char *control = getenv("HURRAHDB_FAULTS");
    char path[4096];
    snprintf(path, sizeof path, "%s.hits", control);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t ignored = write(fd, "x", 1);
        (void)ignored;
        shim_close(fd);
    }
}

/* Returns the errno named by the rule's word after `op`, or 0. */
static int rule_errno(const char *rule, const char *op)
{
    size_t n = strlen(op);
    if (strncmp(rule, op, n) != 0 || rule[n] != ' ')
        return 0;
    const char *what = strrchr(rule, ' ') + 1;
    if (strcmp(what, "ENOSPC") == 0)
        return ENOSPC;
    if (strcmp(what, "EIO") == 0)
        return EIO;
    if (strcmp(what, "EINVAL") == 0)
        return EINVAL;
    if (strcmp(what, "EACCES") == 0)
        return EACCES;
    return 0;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    static pwrite_fn real;
    if (real == NULL)
        real = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite");
    char rule[128];
    if (!rule_for(fd, rule, sizeof rule) || strncmp(rule, "pwrite ", 7) != 0)
        return real(fd, buf, len, off);
    count_hit();
    size_t half = len > 1 ? len / 2 : len;
    if (strcmp(rule, "pwrite short") == 0)
        return real(fd, buf, half, off);
    if (strncmp(rule, "pwrite partial ", 15) == 0) {
        ssize_t ignored = real(fd, buf, half, off);
        (void)ignored;
    }
    errno = rule_errno(rule, "pwrite") ? rule_errno(rule, "pwrite") : EIO;
    return -1;
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    static pwritev_fn real;
    if (real == NULL)
        real = (pwritev_fn)dlsym(RTLD_NEXT, "pwritev");
    char rule[128];
    if (!rule_for(fd, rule, sizeof rule) || strncmp(rule, "pwrite ", 7) != 0)
        return real(fd, iov, iovcnt, off);
    /* Flattened, so that the pwrite rules (half of the bytes) apply as they
     * are; the pwrite above counts the hit. */
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    char *flat = malloc(len ? len : 1);
    if (flat == NULL) {
        errno = ENOMEM;
        return -1;
    }
    size_t at = 0;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(flat + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    ssize_t n = pwrite(fd, flat, len, off);
    int saved = errno;
    free(flat);
    errno = saved;
    return n;
}

/* If the rule is "<op> delay <ms>" and fd is an AOF, counts a hit and
 * sleeps that long. */
static void maybe_delay(const char *op, int fd)
{
    char rule[128], want[32];
    snprintf(want, sizeof want, "%s delay ", op);
    if (!rule_for(fd, rule, sizeof rule) || strncmp(rule, want, strlen(want)) != 0)
        return;
    count_hit();
    usleep((useconds_t)atoi(rule + strlen(want)) * 1000);
}

int flock(int fd, int op)
{
    static flock_fn real;
    if (real == NULL)
        real = (flock_fn)dlsym(RTLD_NEXT, "flock");
    maybe_delay("flock", fd);
    return real(fd, op);
}

ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
    static pread_fn real;
    if (real == NULL)
        real = (pread_fn)dlsym(RTLD_NEXT, "pread");
    maybe_delay("pread", fd);
    return real(fd, buf, len, off);
}

int close(int fd)
{
    static fd_fn real;
    if (real == NULL)
        real = (fd_fn)dlsym(RTLD_NEXT, "close");
    char rule[128];
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && fault_rule(rule, sizeof rule) &&
        strncmp(rule, "dirclose delay ", 15) == 0) {
        int rc = real(fd);
        count_hit();
        usleep((useconds_t)atoi(rule + 15) * 1000);
        return rc;
    }
    if (!rule_for(fd, rule, sizeof rule) || !rule_errno(rule, "close"))
        return real(fd);
    count_hit();
    real(fd);
    errno = rule_errno(rule, "close");
    return -1;
}

int fdatasync(int fd)
{
    static fd_fn real;
    if (real == NULL)
        real = (fd_fn)dlsym(RTLD_NEXT, "fdatasync");
    maybe_delay("fdatasync", fd);
    char rule[128];
    if (!rule_for(fd, rule, sizeof rule) || !rule_errno(rule, "fdatasync"))
        return real(fd);
    count_hit();
    errno = rule_errno(rule, "fdatasync");
    return -1;
}

int ftruncate(int fd, off_t len)
{
    static ftruncate_fn real;
    if (real == NULL)
        real = (ftruncate_fn)dlsym(RTLD_NEXT, "ftruncate");
    char rule[128];
    if (!rule_for(fd, rule, sizeof rule) || !rule_errno(rule, "ftruncate"))
        return real(fd, len);
    count_hit();
    errno = rule_errno(rule, "ftruncate");
    return -1;
}

int rename(const char *from, const char *to)
{
    static int (*real)(const char *, const char *);
    if (real == NULL)
        real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    char rule[128];
    if (!fault_rule(rule, sizeof rule) || strcmp(rule, "rewrite rename EIO") != 0 ||
        !ends_with(from, strlen(from), ".rewrite"))
        return real(from, to);
    count_hit();
    errno = EIO;
    return -1;
}

int fsync(int fd)
{
    static fd_fn real;
    if (real == NULL)
        real = (fd_fn)dlsym(RTLD_NEXT, "fsync");
    char rule[128];
    struct stat st;
    if (!fault_rule(rule, sizeof rule) || !rule_errno(rule, "dirsync") ||
        fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode))
        return real(fd);
    count_hit();
    errno = rule_errno(rule, "dirsync");
    return -1;
}

/* Only opens of directories (O_DIRECTORY) read the rule: every other open
 * of the process goes straight through. */
typedef int (*open_fn)(const char *, int, ...);

static int shim_open(open_fn *real, const char *sym, const char *path, int flags, mode_t mode)
{
    if (*real == NULL)
        *real = (open_fn)dlsym(RTLD_NEXT, sym);
    char rule[128];
    if ((flags & O_DIRECTORY) && fault_rule(rule, sizeof rule) && rule_errno(rule, "diropen")) {
        count_hit();
        errno = rule_errno(rule, "diropen");
        return -1;
    }
    return (*real)(path, flags, mode);
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    static open_fn real;
    return shim_open(&real, "open", path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    static open_fn real;
    return shim_open(&real, "open64", path, flags, mode);
}

/* ---- the wall clock ---- */

__attribute__((visibility("default"))) volatile long long hdb_shim_clock_offset_ms;

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static clock_gettime_fn real;
    if (real == NULL)
        real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    long long offset = hdb_shim_clock_offset_ms;
    if (rc == 0 && id == CLOCK_REALTIME && offset != 0) {
        long long ns = (long long)ts->tv_nsec + (offset % 1000) * 1000000;
        ts->tv_sec += (time_t)(offset / 1000 + (ns >= 1000000000 ? 1 : ns < 0 ? -1 : 0));
        ts->tv_nsec = (long)(ns >= 1000000000 ? ns - 1000000000 : ns < 0 ? ns + 1000000000 : ns);
    }
    return rc;
}
