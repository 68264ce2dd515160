/* flock(2) is not in POSIX but is in every Unix hurrahdb targets; glibc
 * declares it only outside strict POSIX mode. */
#define _DEFAULT_SOURCE
#include "hdb_lock.h"
#include "hdb_err.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* Finds the pid holding a flock on the file of fd, from /proc/locks (Linux).
 * Returns 0 if unknown. */
static long lock_holder_pid(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return 0;
    char want[64];
    snprintf(want, sizeof want, "%02x:%02x:%lu", major(st.st_dev), minor(st.st_dev),
             (unsigned long)st.st_ino);
    FILE *f = fopen("/proc/locks", "re");
    if (f == NULL)
        return 0;
    char line[256];
    long pid = 0;
    while (pid == 0 && fgets(line, sizeof line, f) != NULL) {
        char type[16], file[64];
        long p;
        /* "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF" */
        if (sscanf(line, "%*[^:]: %15s %*s %*s %ld %63s", type, &p, file) == 3 &&
            strcmp(type, "FLOCK") == 0 && strcmp(file, want) == 0)
            pid = p;
    }
    fclose(f);
    return pid;
}

int lock_acquire(int fd, const char *path, unsigned timeout_ms, hdb_err *err)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            struct stat held, named;
            if (fstat(fd, &held) != 0 || stat(path, &named) != 0 ||
                held.st_dev != named.st_dev || held.st_ino != named.st_ino) {
                flock(fd, LOCK_UN);
                return 1;
            }
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK) {
            int e = errno;
            hdb_fail(err, hdb_errno_code(e), "cannot lock %s: %s", path, strerror(e));
            return -1;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        long waited_ms = (long)(now.tv_sec - start.tv_sec) * 1000 +
                         (now.tv_nsec - start.tv_nsec) / 1000000;
        if (waited_ms >= (long)timeout_ms)
            break;
        struct timespec pause = {0, 5 * 1000000L};
        nanosleep(&pause, NULL);
    }
    long pid = lock_holder_pid(fd);
    int here = pid == (long)getpid();
    if (pid > 0 && !here && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        hdb_fail(err, HDB_CODE_LOCKED, "%s is locked by process %ld, which no longer runs: a "
                 "process it forked still holds the file open (the lock goes when that one "
                 "exits): one writer per file", path, pid);
    else if (pid > 0)
        hdb_fail(err, here ? HDB_CODE_ALREADY_OPEN : HDB_CODE_LOCKED,
                 "%s is locked by process %ld%s: one writer per file", path, pid,
                 here ? " (this process: the file is already open here)" : "");
    else
        hdb_fail(err, HDB_CODE_LOCKED, "%s is locked by another store: one writer per file",
                 path);
    return -1;
}

void lock_release(int fd)
{
    /* Nothing to do on failure: closing the descriptor afterwards releases
     * the lock anyway once no process shares it. */
    while (flock(fd, LOCK_UN) != 0 && errno == EINTR) {
    }
}
