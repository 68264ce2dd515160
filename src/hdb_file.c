/* pwritev(2) is not in POSIX but is in every Unix hurrahdb targets; glibc
 * declares it only outside strict POSIX mode. */
#define _DEFAULT_SOURCE
#include "hdb_file.h"
#include "hdb_aof.h"
#include "hdb_err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

int file_write_all_at(int fd, const void *buf, size_t len, uint64_t offset)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return ENOSPC;
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

int file_write2_all_at(int fd, const void *a, size_t alen, const void *b, size_t blen,
                       uint64_t offset)
{
    struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
    while (iov[0].iov_len > 0) {
        ssize_t n = pwritev(fd, iov, 2, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return ENOSPC;
        offset += (uint64_t)n;
        if ((size_t)n < iov[0].iov_len) {
            iov[0].iov_base = (char *)iov[0].iov_base + n;
            iov[0].iov_len -= (size_t)n;
            continue;
        }
        /* The first part is written; whatever remains of the second goes
         * through the plain loop. */
        size_t into_b = (size_t)n - iov[0].iov_len;
        return file_write_all_at(fd, (const char *)b + into_b, blen - into_b, offset);
    }
    return file_write_all_at(fd, b, blen, offset);
}

int file_write_batch(int fd, const uint64_t key[2], uint64_t seq, const char *records,
                     size_t len, uint64_t *offset)
{
    char line[AOF_BEGIN_MAX];
    size_t line_len = aof_format_begin(line, key, seq, records, len);
    int e = file_write2_all_at(fd, line, line_len, records, len, *offset);
    if (e == 0)
        *offset += line_len + len;
    return e;
}

int file_open_parent_dir(const char *path, hdb_err *err)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (slash == NULL)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (dir == NULL) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int saved = errno;
    if (fd < 0)
        hdb_fail(err, hdb_errno_code(saved), "cannot open directory %s: %s", dir,
                 strerror(saved));
    free(dir);
    errno = saved; /* the caller may report it */
    return fd;
}

int file_sync_dir(int dir_fd)
{
    if (fsync(dir_fd) == 0)
        return 0;
    /* EINVAL: this file system cannot sync a directory at all (its names
     * are as durable as it makes them); there is nothing to retry. */
    return errno == EINVAL ? 0 : errno;
}

int file_sync_parent_dir(const char *path, hdb_err *err)
{
    int fd = file_open_parent_dir(path, err);
    if (fd < 0)
        return -1;
    int e = file_sync_dir(fd);
    close(fd);
    if (e != 0) {
        hdb_fail(err, hdb_errno_code(e), "cannot sync the directory of %s: %s", path,
                 strerror(e));
        errno = e; /* the caller may report it */
        return -1;
    }
    return 0;
}

long file_read_at(int fd, void *buf, size_t len, uint64_t offset)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, (char *)buf + got, len - got, (off_t)(offset + got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (long)got;
}
