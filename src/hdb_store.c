#include "hurrahdb.h"
#include "hdb_aof.h"
#include "hdb_flusher.h"
#include "hdb_lock.h"
#include "hdb_table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif

struct hdb_store {
    hdb_table table;
    hdb_flusher *aof;   /* NULL for a memory-only store, or once closed */
    char *path;
    uint64_t loaded_records;
    uint64_t dropped_bytes; /* torn final batch cut off at open */
    char warning[HDB_ERRLEN]; /* what the open repaired, "" if nothing */
};

/* Fills the hash key. A predictable key would let an attacker who controls
 * keys (HTTP input) build long chains, so the kernel's generator is used;
 * the clock-and-address fallback only serves systems without one. */
static void store_random_seed(uint64_t seed[2])
{
    unsigned char bytes[16];
    size_t got = 0;
#if defined(__linux__)
    while (got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)n;
    }
#endif
    if (got < sizeof bytes) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = read(fd, bytes, sizeof bytes);
            got = n == (ssize_t)sizeof bytes ? sizeof bytes : 0;
            close(fd);
        }
    }
    if (got < sizeof bytes) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t a = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
        uint64_t b = (uint64_t)(uintptr_t)&ts ^ (uint64_t)(uintptr_t)seed;
        memcpy(bytes, &a, 8);
        memcpy(bytes + 8, &b, 8);
    }
    memcpy(&seed[0], bytes, 8);
    memcpy(&seed[1], bytes + 8, 8);
}

static int replay_set(void *ud, const char *key, size_t key_len,
                      const char *val, size_t val_len)
{
    hdb_table *t = ud;
    uint32_t h;
    hdb_entry *old = table_lookup(t, key, key_len, &h);
    if (old != NULL && old->val_len == val_len) {
        table_update_value(old, val, val_len);
        return 0;
    }
    hdb_entry *e = table_entry_new(t, h, key, key_len, val, val_len);
    if (e == NULL)
        return -1;
    table_commit(t, e, old);
    return 0;
}

static int replay_del(void *ud, const char *key, size_t key_len)
{
    table_remove(ud, key, key_len);
    return 0;
}

/* fsyncs the directory holding path, so that a newly created file's name
 * survives a power loss along with its contents. */
static int sync_parent_dir(const char *path, char *err, size_t errlen)
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
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot sync directory %s: %s", dir, strerror(errno));
        rc = -1;
    }
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

/* Opens or creates the file and locks it; returns the descriptor and its
 * size, or -1. The lock is taken before anything is read, so that the size
 * and contents seen are those no other writer is changing. */
static int store_open_file(const char *path, unsigned lock_timeout_ms, uint64_t *size,
                           int *created, char *err, size_t errlen)
{
    *created = 0;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0)
            *created = 1;
        else if (errno == EEXIST) /* created by someone else meanwhile */
            fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "cannot open %s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (lock_acquire(fd, path, lock_timeout_ms, err, errlen) != 0) {
        close(fd);
        return -1;
    }
    if (fstat(fd, &st) != 0) { /* the size may have changed while waiting */
        snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

/* snprintf for messages, where cutting a long one short is fine (and the
 * compiler need not prove that it cannot happen). */
static void message_format(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void message_format(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

/* Writes all of buf to fd from its current offset. Returns 0 or an errno. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return ENOSPC;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Copies the damaged end of the file, bytes [from, len) of data, into a new
 * side file next to it, made durable before the caller truncates the AOF:
 * damaged bytes are set aside for inspection, never deleted. Fills `side`
 * with the side file's name. */
static int store_move_aside(hdb_store *s, const char *data, size_t len, size_t from,
                            char *side, size_t sidelen, char *err, size_t errlen)
{
    int fd = -1;
    for (int attempt = 0; attempt < 1000 && fd < 0; attempt++) {
        if (attempt == 0)
            snprintf(side, sidelen, "%s.damaged-%zu", s->path, from);
        else
            snprintf(side, sidelen, "%s.damaged-%zu.%d", s->path, from, attempt);
        fd = open(side, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a side file for the damaged part of %s: %s",
                 s->path, strerror(errno));
        return -1;
    }
    int e = write_all(fd, data + from, len - from);
    if (e == 0 && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && e == 0)
        e = errno;
    if (e != 0) {
        unlink(side);
        snprintf(err, errlen, "cannot write %s: %s", side, strerror(e));
        return -1;
    }
    return sync_parent_dir(side, err, errlen);
}

/* Replays the file into the table. A torn final batch (a crash while
 * appending) is cut off, so that new batches follow the last good one; with
 * `repair`, so is a damaged part followed by good batches, after it is
 * copied to a side file. *size_io becomes the length kept. */
static int store_load(hdb_store *s, int fd, uint64_t *size_io, int repair,
                      char *err, size_t errlen)
{
    uint64_t size = *size_io;
    if (size == 0)
        return 0;
    if (size > (uint64_t)SIZE_MAX) {
        snprintf(err, errlen, "%s: file too large for this platform", s->path);
        return -1;
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "cannot read %s: %s", s->path, strerror(errno));
        return -1;
    }
    posix_madvise(map, (size_t)size, POSIX_MADV_SEQUENTIAL);
    aof_replay replay = {&s->table, replay_set, replay_del};
    aof_load_result res;
    char why[HDB_ERRLEN];
    int rc = aof_load(map, (size_t)size, &replay, &res, why, sizeof why);
    size_t cut = 0;
    if (rc == AOF_LOAD_DAMAGED && repair) {
        char side[HDB_ERRLEN / 2];
        if (store_move_aside(s, map, (size_t)size, res.damage_at, side, sizeof side,
                             err, errlen) != 0) {
            munmap(map, (size_t)size);
            return -1;
        }
        message_format(s->warning, sizeof s->warning,
                 "%s: %s; repaired: kept the %" PRIu64 " records before offset %zu, "
                 "moved the %zu bytes from there on to %s",
                 s->path, why, res.records, res.damage_at,
                 (size_t)size - res.damage_at, side);
        cut = (size_t)size - res.damage_at;
        rc = AOF_LOAD_OK;
    } else if (rc == AOF_LOAD_OK && res.torn_bytes > 0 && res.good_len == 0) {
        snprintf(s->warning, sizeof s->warning,
                 "%.300s: the header was cut short (%zu bytes; a crash while the file was "
                 "created); it is written again", s->path, res.torn_bytes);
        cut = res.torn_bytes;
    } else if (rc == AOF_LOAD_OK && res.torn_bytes > 0) {
        snprintf(s->warning, sizeof s->warning,
                 "%.300s: dropped an incomplete last batch of %zu bytes at offset %zu "
                 "(a write cut short by a crash)", s->path, res.torn_bytes, res.good_len);
        cut = res.torn_bytes;
    }
    munmap(map, (size_t)size);
    if (rc != AOF_LOAD_OK) {
        if (rc == AOF_LOAD_DAMAGED)
            snprintf(err, errlen, "%.150s: %.200s (open with repair = true to keep the good "
                     "batches before it and move the rest to a side file)", s->path, why);
        else
            snprintf(err, errlen, "%s: %s", s->path, why);
        return -1;
    }
    s->loaded_records = res.records;
    if (cut > 0) {
        if (ftruncate(fd, (off_t)res.good_len) != 0 || fdatasync(fd) != 0) {
            snprintf(err, errlen, "cannot cut %zu bytes at offset %zu off %s: %s",
                     cut, res.good_len, s->path, strerror(errno));
            return -1;
        }
        s->dropped_bytes = cut;
        *size_io = res.good_len;
    }
    return 0;
}

/* Writes the header of a new or empty file and makes it durable. */
static int store_init_file(hdb_store *s, int fd, int created, char *err, size_t errlen)
{
    size_t off = 0;
    while (off < AOF_HEADER_LEN) {
        ssize_t n = pwrite(fd, AOF_HEADER + off, AOF_HEADER_LEN - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot write %s: %s", s->path,
                     n < 0 ? strerror(errno) : strerror(ENOSPC));
            return -1;
        }
        off += (size_t)n;
    }
    if (fdatasync(fd) != 0) {
        snprintf(err, errlen, "cannot fdatasync %s: %s", s->path, strerror(errno));
        return -1;
    }
    if (created && sync_parent_dir(s->path, err, errlen) != 0)
        return -1;
    return 0;
}

hdb_store *hdb_open(const hdb_options *opt, char *err, size_t errlen)
{
    hdb_store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    uint64_t seed[2];
    store_random_seed(seed);
    table_init(&s->table, seed);
    if (opt->path == NULL)
        return s;

    if ((s->path = strdup(opt->path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return NULL;
    }
    uint64_t size;
    int created;
    int fd = store_open_file(s->path, opt->lock_timeout_ms, &size, &created, err, errlen);
    if (fd < 0)
        goto fail;
    if (store_load(s, fd, &size, opt->repair, err, errlen) != 0)
        goto fail_fd;
    if (size == 0) {
        if (store_init_file(s, fd, created, err, errlen) != 0)
            goto fail_fd;
        size = AOF_HEADER_LEN;
    }
    if (flusher_start(&s->aof, fd, s->path, size, opt->sync_time_ms,
                      opt->use_fsync, opt->max_pending ? opt->max_pending : HDB_DEFAULT_MAX_PENDING,
                      err, errlen) != 0)
        goto fail_fd;
    return s;

fail_fd:
    close(fd);
    if (created && size == 0)
        unlink(s->path); /* leave no empty file behind a failed open */
fail:
    table_free(&s->table);
    free(s->path);
    free(s);
    return NULL;
}

int hdb_close(hdb_store *s, char *err, size_t errlen)
{
    if (s->aof == NULL)
        return HDB_OK;
    if (flusher_stop(s->aof, err, errlen) != 0)
        return HDB_ERR;
    flusher_free(s->aof);
    s->aof = NULL;
    return HDB_OK;
}

void hdb_free(hdb_store *s)
{
    if (s == NULL)
        return;
    flusher_free(s->aof);
    table_free(&s->table);
    free(s->path);
    free(s);
}

static int check_lengths(size_t key_len, size_t val_len, char *err, size_t errlen)
{
    if (key_len > HDB_MAX_ITEM_LEN) {
        snprintf(err, errlen, "key too long (%zu bytes; the limit is %u)", key_len,
                 HDB_MAX_ITEM_LEN);
        return -1;
    }
    if (val_len > HDB_MAX_ITEM_LEN) {
        snprintf(err, errlen, "value too long (%zu bytes encoded; the limit is %u)",
                 val_len, HDB_MAX_ITEM_LEN);
        return -1;
    }
    return 0;
}

int hdb_set(hdb_store *s, const char *key, size_t key_len,
            const char *val, size_t val_len, char *err, size_t errlen)
{
    if (check_lengths(key_len, val_len, err, errlen) != 0)
        return HDB_ERR;
    uint32_t h;
    hdb_entry *old = table_lookup(&s->table, key, key_len, &h);
    if (old != NULL && old->val_len == val_len) {
        /* Same size: overwrite in place, once the record is appended. */
        if (s->aof && flusher_append_set(s->aof, key, key_len, val, val_len, err, errlen) != 0)
            return HDB_ERR;
        table_update_value(old, val, val_len);
        return HDB_OK;
    }
    hdb_entry *e = table_entry_new(&s->table, h, key, key_len, val, val_len);
    if (e == NULL) {
        snprintf(err, errlen, "out of memory");
        return HDB_ERR;
    }
    if (s->aof && flusher_append_set(s->aof, key, key_len, val, val_len, err, errlen) != 0) {
        table_entry_discard(&s->table, e);
        return HDB_ERR;
    }
    table_commit(&s->table, e, old);
    return HDB_OK;
}

int hdb_delete(hdb_store *s, const char *key, size_t key_len, int *existed,
               char *err, size_t errlen)
{
    uint32_t h;
    *existed = 0;
    if (table_lookup(&s->table, key, key_len, &h) == NULL)
        return HDB_OK;
    if (s->aof && flusher_append_del(s->aof, key, key_len, err, errlen) != 0)
        return HDB_ERR;
    *existed = table_remove(&s->table, key, key_len);
    return HDB_OK;
}

int hdb_get(hdb_store *s, const char *key, size_t key_len,
            const char **val, size_t *val_len)
{
    uint32_t h;
    hdb_entry *e = table_lookup(&s->table, key, key_len, &h);
    if (e == NULL)
        return 0;
    *val = entry_val(e);
    *val_len = e->val_len;
    return 1;
}

uint64_t hdb_count(const hdb_store *s)
{
    return s->table.count;
}

int hdb_sync(hdb_store *s, char *err, size_t errlen)
{
    if (s->aof == NULL)
        return HDB_OK;
    return flusher_sync(s->aof, err, errlen) == 0 ? HDB_OK : HDB_ERR;
}

void hdb_get_stats(hdb_store *s, hdb_stats *st)
{
    memset(st, 0, sizeof *st);
    st->keys = s->table.count;
    st->memory_bytes = sizeof *s + s->table.bytes;
    st->loaded_records = s->loaded_records;
    st->dropped_bytes = s->dropped_bytes;
    memcpy(st->warning, s->warning, sizeof st->warning);
    if (s->aof) {
        flusher_stats fs;
        flusher_get_stats(s->aof, &fs);
        st->memory_bytes += flusher_memory(s->aof);
        st->aof_bytes = fs.file_bytes;
        st->aof_pending_bytes = fs.pending_bytes;
        st->last_sync_ms = fs.last_sync_ms;
        st->errors = fs.errors;
        st->backpressure_waits = fs.backpressure_waits;
        memcpy(st->last_error, fs.last_error, sizeof st->last_error);
    }
}

const char *hdb_path(const hdb_store *s)
{
    return s->path;
}

int hdb_next(const hdb_store *s, uint32_t *cursor, const char **key,
             size_t *key_len, const char **val, size_t *val_len)
{
    hdb_entry *e = table_next(&s->table, cursor);
    if (e == NULL)
        return 0;
    *key = entry_key(e);
    *key_len = e->key_len;
    *val = entry_val(e);
    *val_len = e->val_len;
    return 1;
}
