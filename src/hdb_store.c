/* realpath(3) is in POSIX, as an XSI extension. */
#define _XOPEN_SOURCE 700
#include "hurrahdb.h"
#include "hdb_aof.h"
#include "hdb_err.h"
#include "hdb_file.h"
#include "hdb_flusher.h"
#include "hdb_lock.h"
#include "hdb_rewrite.h"
#include "hdb_siphash.h"
#include "hdb_table.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
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
#include <sys/vfs.h>
#endif

/* About how many bytes of records between two checks of the file's growth
 * for an automatic rewrite (the check takes the flusher's lock): at most
 * this many, and an eighth of auto_rewrite_min_size if that is less (but
 * not under the floor), so that a small threshold is not overshot by far. */
#define AUTO_CHECK_BYTES (256u << 10)
#define AUTO_CHECK_FLOOR (4u << 10)

struct hdb_store {
    hdb_table table;
    hdb_flusher *aof;   /* NULL for a memory-only store, or once closed */
    char *path;         /* as the caller gave it: for messages and side files */
    char *file_path;    /* the file itself, symbolic links resolved: what a
                           rewrite replaces and whose directory is synced */
    uint64_t loaded_records;
    uint64_t dropped_bytes; /* torn final batch cut off at open */
    char *warning;      /* what the open repaired (malloc'd: it names two paths
                           in full), NULL if nothing */
    hdb_rewriter *rw;    /* NULL for a memory-only store */
    char codec[AOF_CODEC_NAME_MAX + 1]; /* "" for JSON: see hdb_options */
    uint64_t live_bytes; /* the SET records of the live keys, as a rewrite writes them */
    int64_t load_now_ms;  /* the expiry clock when the open began: what expired
                             before it is not loaded */
    uint64_t expired_keys; /* reclaimed since the open */
    uint64_t max_memory;    /* 0: none */
    int eviction;           /* HDB_EVICT_* */
    uint64_t evicted_keys;
    uint64_t sample_rng;    /* for LRU's samples */
    /* Automatic rewrites. */
    unsigned auto_percentage;
    uint64_t auto_min_size;
    uint64_t base_size;     /* file size after the last rewrite or the open */
    uint64_t since_check;   /* about the bytes appended since growth was last checked */
    uint64_t check_every;   /* ... and how many make the next check */
    unsigned auto_failures; /* automatic rewrites failed in a row */
    struct timespec auto_not_before; /* backing off after a failed one */
    int auto_started;       /* the running rewrite was started automatically */
    /* Membership of the list of stores flushed at exit. */
    int registered;
    struct hdb_store *reg_prev, *reg_next;
};

/* ---- pending records reach the file at exit ---- */

/* Stores with a file, so that exit() (os.exit, which skips __gc) writes
 * their pending records as it flushes stdio's buffers. The list is the one
 * piece of state shared between stores; its lock is held across fork() by
 * the atfork handlers, so a child never inherits it locked. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static hdb_store *registry_head;
static pthread_once_t registry_once = PTHREAD_ONCE_INIT;
static int registry_status;

static void registry_before_fork(void) { pthread_mutex_lock(&registry_lock); }
static void registry_after_fork(void) { pthread_mutex_unlock(&registry_lock); }

/* Runs in exit(). A store of a forked child is its parent's to write (and
 * its locks may be held by a thread that does not exist here): skipped. */
static void registry_flush_at_exit(void)
{
    pthread_mutex_lock(&registry_lock);
    for (hdb_store *s = registry_head; s != NULL; s = s->reg_next) {
        if (s->aof == NULL || flusher_in_forked_child(s->aof))
            continue;
        /* A rewrite's thread must be gone before the lock is: once another
         * process holds the file, a rewrite of this one must not touch its
         * name or its temporary file. */
        rewrite_cancel(s->rw);
        hdb_err err;
        if (flusher_release_at_exit(s->aof, &err) != 0)
            fprintf(stderr, "hurrahdb: %s: pending records could not be written at exit: %s\n",
                    s->path, err.msg);
    }
    pthread_mutex_unlock(&registry_lock);
}

static void registry_init(void)
{
    registry_status = pthread_atfork(registry_before_fork, registry_after_fork,
                                     registry_after_fork);
    if (registry_status == 0 && atexit(registry_flush_at_exit) != 0)
        registry_status = ENOMEM;
}

static int registry_ready(hdb_err *err)
{
    pthread_once(&registry_once, registry_init);
    if (registry_status != 0) /* both registrations fail only for want of memory */
        return hdb_fail(err, HDB_CODE_NO_MEMORY, "cannot register the exit handler: %s",
                        strerror(registry_status));
    return 0;
}

static void registry_add(hdb_store *s)
{
    pthread_mutex_lock(&registry_lock);
    s->reg_prev = NULL;
    s->reg_next = registry_head;
    if (registry_head != NULL)
        registry_head->reg_prev = s;
    registry_head = s;
    s->registered = 1;
    pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(hdb_store *s)
{
    pthread_mutex_lock(&registry_lock);
    if (s->registered) {
        if (s->reg_prev != NULL)
            s->reg_prev->reg_next = s->reg_next;
        else
            registry_head = s->reg_next;
        if (s->reg_next != NULL)
            s->reg_next->reg_prev = s->reg_prev;
        s->registered = 0;
    }
    pthread_mutex_unlock(&registry_lock);
}

/* The bytes a rewrite would write for the entry: its SET, with PXAT if it
 * expires. */
static uint64_t entry_record_len(const hdb_entry *e)
{
    return aof_set_px_record_len(e->key_len, e->val_len, entry_expiry(e));
}

/* Gives the entry `e` (in the table) the expiry expire_ms (0: none). An
 * entry that gains or loses its expiry is rebuilt (the trailer holding it
 * is allocated only for entries that have one). Returns -1, changing
 * nothing, when memory is exhausted. */
static int store_entry_reexpire(hdb_store *s, hdb_entry *e, int64_t expire_ms)
{
    hdb_table *t = &s->table;
    s->live_bytes -= entry_record_len(e);
    if (expire_ms > 0 && (e->slot & ENTRY_HAS_TTL)) {
        table_set_expiry(t, e, expire_ms);
        s->live_bytes += entry_record_len(e);
        return 0;
    }
    hdb_entry *n = table_entry_new(t, e, e->hash, entry_key(e), e->key_len, entry_val(e),
                                   e->val_len, expire_ms);
    if (n == NULL) {
        s->live_bytes += entry_record_len(e);
        return -1;
    }
    table_commit(t, n, e);
    s->live_bytes += entry_record_len(n);
    return 0;
}

static uint64_t store_reclaim(hdb_store *s, int64_t now_ms, uint64_t max);

/* Takes an entry out of the table, keeping live_bytes. */
static void store_remove_entry(hdb_store *s, hdb_entry *e)
{
    s->live_bytes -= entry_record_len(e);
    table_remove_entry(&s->table, e);
}

/* Applies a group of records of the file being loaded. The cache misses of
 * a load (a random bucket, then the chain's first entry, for each record)
 * are issued for the whole group before the first record is applied, so
 * that they overlap. Expiries are applied as they were when written, even
 * those that have passed since (a later PERSIST or SET may undo them, as
 * in Redis, which does not expire keys while it loads); the keys that had
 * expired when the open began are reclaimed once the load is done. */
static size_t replay_apply(void *ud, const aof_record *r, size_t n)
{
    hdb_store *s = ud;
    hdb_table *t = &s->table;
    uint32_t hash[AOF_REPLAY_GROUP];
    for (size_t i = 0; i < n; i++) {
        if (r[i].kind == AOF_FLUSHALL)
            continue;
        hash[i] = table_hash_key(t, r[i].key, r[i].key_len);
        table_prefetch(t, hash[i], 0);
    }
    for (size_t i = 0; i < n; i++) {
        if (r[i].kind != AOF_FLUSHALL)
            table_prefetch(t, hash[i], 1);
    }
    for (size_t i = 0; i < n; i++) {
        if (r[i].kind == AOF_FLUSHALL) {
            table_free(t);
            s->live_bytes = 0;
            continue;
        }
        hdb_entry *old = table_lookup_hashed(t, r[i].key, r[i].key_len, hash[i]);
        int64_t ms = r[i].expire_ms;
        if (r[i].kind != AOF_SET) {
            if (old == NULL)
                continue;
            if (r[i].kind == AOF_DEL)
                store_remove_entry(s, old);
            else if (store_entry_reexpire(s, old, r[i].kind == AOF_PERSIST ? 0 : ms) != 0)
                return i;
            continue;
        }
        if (old != NULL && old->val_len == r[i].val_len &&
            (old->slot & ENTRY_HAS_TTL) == (ms > 0 ? ENTRY_HAS_TTL : 0)) {
            s->live_bytes -= entry_record_len(old);
            table_update_value(t, old, r[i].val, r[i].val_len);
            if (ms > 0)
                table_set_expiry(t, old, ms);
            s->live_bytes += entry_record_len(old);
            continue;
        }
        hdb_entry *e = table_entry_new(t, old, hash[i], r[i].key, r[i].key_len, r[i].val,
                                       r[i].val_len, ms);
        if (e == NULL)
            return i;
        if (old != NULL)
            s->live_bytes -= entry_record_len(old);
        table_commit(t, e, old);
        s->live_bytes += entry_record_len(e);
    }
    return n;
}

static void replay_reserve(void *ud, uint64_t set_records)
{
    table_reserve(&((hdb_store *)ud)->table, set_records);
}

/* Opens the file at path for reading and writing, creating it (mode 0600)
 * if it does not exist. *created says whether this call created it. A
 * symbolic link to a file that does not exist yet makes O_EXCL fail: then
 * the link is followed by the kernel (O_CREAT alone), with the protections
 * it applies to links in shared directories (fs.protected_symlinks).
 * Returns the descriptor, or -1 with errno set. */
static int store_open_or_create(const char *path, int *created)
{
    *created = 0;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        *created = 1;
        return fd;
    }
    if (errno != EEXIST)
        return -1;
    /* Created by someone else meanwhile, or a link to nothing. */
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        *created = 1;
    return fd;
}

/* True for the files of the kernel's own file systems (/proc, /sys and the
 * like): they say they are regular files, but reading or writing one is
 * talking to the kernel, so nothing may ever be written to them. */
static int store_on_pseudo_fs(int fd)
{
#if defined(__linux__)
    static const unsigned long pseudo[] = {
        0x9fa0,     /* proc */
        0x62656572, /* sysfs */
        0x64626720, /* debugfs */
        0x74726163, /* tracefs */
        0x27e0eb,   /* cgroup */
        0x63677270, /* cgroup2 */
        0x73636673, /* securityfs */
        0x62656570, /* configfs */
        0xcafe4a11, /* bpf */
        0x6165676c, /* pstore */
        0xde5e81e4, /* efivarfs */
    };
    struct statfs sfs;
    if (fstatfs(fd, &sfs) != 0)
        return 0;
    for (size_t i = 0; i < sizeof pseudo / sizeof *pseudo; i++) {
        if ((unsigned long)sfs.f_type == pseudo[i])
            return 1;
    }
#else
    (void)fd;
#endif
    return 0;
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* Whether file_path (or a path naming it) has the name of another file's rewrite (see
 * rewrite_temp_name): such a store's file would be taken for a crash's
 * leftover and removed by the other file's store. */
static int store_name_is_reserved(const char *file_path)
{
    size_t n = strlen(file_path), k = strlen(REWRITE_SUFFIX);
    /* A bare ".rewrite" is no file's rewrite: it would be that of "". */
    return n > k && file_path[n - k - 1] != '/' && strcmp(file_path + n - k, REWRITE_SUFFIX) == 0;
}

static void store_refuse_reserved(const char *path, hdb_err *err)
{
    hdb_fail(err, HDB_CODE_INVALID, "cannot open %s: a store's file must not be named \"*"
             REWRITE_SUFFIX "\", which is the name of the temporary file of a rewrite (of the "
             "file without the suffix, which would remove it)", path);
}

/* Opens or creates the file and locks it; returns the descriptor and its
 * size, or -1. The lock is taken before anything is read, so that the size
 * and contents seen are those no other writer is changing. Fills
 * s->file_path and *created (the file did not exist). A file this call
 * created is removed again on failure only while this call holds its lock:
 * without it, another store may already be writing it. */
static int store_open_file(hdb_store *s, unsigned lock_timeout_ms, uint64_t *size,
                           int *created, hdb_err *err)
{
    const char *path = s->path;
    if (store_name_is_reserved(path)) { /* before anything is created */
        store_refuse_reserved(path, err);
        return -1;
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int attempt = 0;; attempt++) {
        int fd = store_open_or_create(path, created);
        int locked = -1;
        if (fd < 0) {
            int e = errno;
            /* A directory is no store's file, whatever the disk does. */
            hdb_fail(err, e == EISDIR ? HDB_CODE_INVALID : hdb_errno_code(e),
                     "cannot open %s: %s", path, strerror(e));
            return -1;
        }
        struct stat st;
        if (fstat(fd, &st) != 0) {
            int e = errno;
            hdb_fail(err, hdb_errno_code(e), "cannot stat %s: %s", path, strerror(e));
            goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
            hdb_fail(err, HDB_CODE_INVALID, "cannot open %s: not a regular file", path);
            goto fail;
        }
        if (store_on_pseudo_fs(fd)) {
            hdb_fail(err, HDB_CODE_INVALID, "cannot open %s: not a regular file (it is on a "
                     "file system of the kernel's, like /proc or /sys)", path);
            goto fail;
        }
        long waited = elapsed_ms(&start);
        unsigned left = waited >= (long)lock_timeout_ms ? 0 : lock_timeout_ms - (unsigned)waited;
        locked = lock_acquire(fd, path, left, err);
        if (locked == 1 && attempt < 100) {
            /* The holder replaced or removed the file while this open
             * waited: the descriptor is of a file that is no longer the
             * store's. */
            close(fd);
            continue;
        }
        if (locked != 0) {
            /* Its holder keeps replacing the file (rewrites back to back):
             * held all the same, as a later try may find it not. */
            if (locked == 1)
                hdb_fail(err, HDB_CODE_LOCKED, "cannot lock %s: the file keeps being replaced",
                         path);
            locked = -1;
            goto fail;
        }
        if (fstat(fd, &st) != 0) { /* the size may have changed while waiting */
            int e = errno;
            hdb_fail(err, hdb_errno_code(e), "cannot stat %s: %s", path, strerror(e));
            goto fail;
        }
        *size = (uint64_t)st.st_size;
        if (*size == 0 && !*created) {
            /* /proc and /sys files say they are regular and empty, yet have
             * content: never write a header into one. Checked under the
             * lock, so that a store still creating the file is not taken
             * for one. */
            char probe;
            if (file_read_at(fd, &probe, 1, 0) != 0) {
                hdb_fail(err, HDB_CODE_INVALID, "cannot open %s: not a regular file (it "
                         "reports a size of 0 but has content, like the files of /proc and "
                         "/sys)", path);
                goto fail;
            }
        }
        if ((s->file_path = realpath(path, NULL)) == NULL) {
            int e = errno;
            hdb_fail(err, hdb_errno_code(e), "cannot resolve %s: %s", path, strerror(e));
            goto fail;
        }
        if (store_name_is_reserved(s->file_path)) { /* through a symbolic link */
            store_refuse_reserved(path, err);
            free(s->file_path);
            s->file_path = NULL;
            goto fail;
        }
        return fd;
fail:
        if (locked == 0) {
            if (*created) {
                /* Leave no empty file behind a failed open: the file, not a
                 * symbolic link to it through which it was created. */
                char *made = realpath(path, NULL);
                unlink(made != NULL ? made : path);
                free(made);
            }
            lock_release(fd);
        }
        close(fd);
        *created = 0;
        return -1;
    }
}

/* Sets the store's warning to the formatted text, in full. Without memory
 * for it, a shorter fixed text says that something was repaired. */
static void store_set_warning(hdb_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void store_set_warning(hdb_store *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    free(s->warning);
    s->warning = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s->warning == NULL) {
        s->warning = strdup("the file was repaired at open (no memory for the details)");
        return;
    }
    va_start(ap, fmt);
    vsnprintf(s->warning, (size_t)n + 1, fmt, ap);
    va_end(ap);
}

/* Copies the end of the file that cannot be kept in it, bytes [from, len)
 * of data, into a new side file next to it, made durable before the caller
 * truncates the AOF: such bytes are set aside for inspection, never
 * deleted. Returns the side file's name (malloc'd), or NULL with err
 * filled. */
static char *store_move_aside(hdb_store *s, const char *data, size_t len, size_t from,
                              hdb_err *err)
{
    size_t cap = strlen(s->path) + 64;
    char *side = malloc(cap);
    if (side == NULL) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        return NULL;
    }
    int fd = -1;
    for (int attempt = 0; attempt < 1000 && fd < 0; attempt++) {
        if (attempt == 0)
            snprintf(side, cap, "%s.damaged-%zu", s->path, from);
        else
            snprintf(side, cap, "%s.damaged-%zu.%d", s->path, from, attempt);
        fd = open(side, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        int e = errno;
        hdb_fail(err, hdb_errno_code(e), "cannot create a side file for the damaged part of "
                 "%s: %s", s->path, strerror(e));
        free(side);
        return NULL;
    }
    int e = file_write_all_at(fd, data + from, len - from, 0);
    if (e == 0 && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && e == 0)
        e = errno;
    if (e != 0) {
        unlink(side);
        hdb_fail(err, hdb_errno_code(e), "cannot write %s: %s", side, strerror(e));
        free(side);
        return NULL;
    }
    if (file_sync_parent_dir(side, err) != 0) {
        free(side);
        return NULL;
    }
    return side;
}

/* Replays the file into the table and decides what happens to whatever
 * follows its last good batch (see enum aof_tail): an append that provably
 * never finished is cut off; anything else that cannot be kept in the file
 * is first copied to a side file; damage followed by good batches fails the
 * open unless `repair`, which moves it and the rest to a side file too.
 * *size_io becomes the length kept; *res tells the file's version, key and
 * next batch number. */
static int store_load(hdb_store *s, int fd, uint64_t *size_io, int repair,
                      aof_load_result *res, hdb_err *err)
{
    uint64_t size = *size_io;
    memset(res, 0, sizeof *res);
    if (size == 0)
        return 0;
    if (size > (uint64_t)SIZE_MAX)
        return hdb_fail(err, HDB_CODE_TOO_LARGE, "%s: file too large for this platform",
                        s->path);
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        return hdb_fail(err, hdb_errno_code(e), "cannot read %s: %s", s->path, strerror(e));
    }
    posix_madvise(map, (size_t)size, POSIX_MADV_SEQUENTIAL);
    aof_replay replay = {s, replay_apply, replay_reserve, s->codec, 0};
    hdb_err why;
    int rc = aof_load(map, (size_t)size, &replay, res, &why);
    table_fit(&s->table);
    size_t keep = (size_t)size;
    char *side = NULL;
    if (rc == AOF_LOAD_DAMAGED && repair) {
        if ((side = store_move_aside(s, map, (size_t)size, res->damage_at, err)) == NULL)
            goto fail;
        store_set_warning(s,
                 "%s: %s; repaired: kept the %" PRIu64 " records before offset %zu, "
                 "moved the %zu bytes from there on to %s",
                 s->path, why.msg, res->records, res->damage_at,
                 (size_t)size - res->damage_at, side);
        keep = res->damage_at;
        rc = AOF_LOAD_OK;
    } else if (rc != AOF_LOAD_OK) {
        if (rc == AOF_LOAD_DAMAGED)
            hdb_fail(err, why.code, "%.150s: %.250s (open with repair = true to keep the good "
                     "batches before it and move the rest to a side file)", s->path, why.msg);
        else
            hdb_fail(err, why.code, "%s: %s", s->path, why.msg);
        goto fail;
    } else if (res->tail == AOF_TAIL_TORN_HEADER) {
        store_set_warning(s,
                 "%s: the header was cut short (%zu bytes; a crash while the file was "
                 "created); it is written again", s->path, res->tail_bytes);
        keep = 0;
    } else if (res->tail == AOF_TAIL_TORN) {
        store_set_warning(s,
                 "%s: dropped an incomplete last batch of %zu bytes at offset %zu (%s: a "
                 "write cut short by a crash, never reported as done)",
                 s->path, res->tail_bytes, res->good_len, res->why);
        keep = res->good_len;
    } else if (res->tail == AOF_TAIL_BAD) {
        if ((side = store_move_aside(s, map, (size_t)size, res->good_len, err)) == NULL)
            goto fail;
        store_set_warning(s,
                 "%s: %s, with no valid batch after it; kept the %" PRIu64 " records before "
                 "offset %zu, moved the %zu bytes from there on to %s",
                 s->path, res->why, res->records, res->good_len, res->tail_bytes, side);
        keep = res->good_len;
    }
    free(side);
    munmap(map, (size_t)size);
    s->loaded_records = res->records;
    if (keep < size) {
        if (ftruncate(fd, (off_t)keep) != 0 || fdatasync(fd) != 0) {
            int e = errno;
            return hdb_fail(err, hdb_errno_code(e), "cannot cut %" PRIu64 " bytes at offset "
                            "%zu off %s: %s", size - keep, keep, s->path, strerror(e));
        }
        s->dropped_bytes = size - keep;
        *size_io = keep;
    }
    return 0;
fail:
    munmap(map, (size_t)size);
    return -1;
}

/* Writes the header of a new or empty file, with a new random key, and
 * makes it durable. */
static int store_init_file(hdb_store *s, int fd, int created, uint64_t key[2], hdb_err *err)
{
    char header[AOF_HEADER_MAX + 1];
    siphash_random_key(key);
    size_t header_len = aof_format_header(header, key, s->codec, 0);
    int e = file_write_all_at(fd, header, header_len, 0);
    if (e != 0)
        return hdb_fail(err, hdb_errno_code(e), "cannot write %s: %s", s->path, strerror(e));
    if (fdatasync(fd) != 0) {
        e = errno;
        return hdb_fail(err, hdb_errno_code(e), "cannot fdatasync %s: %s", s->path,
                        strerror(e));
    }
    if (created && file_sync_parent_dir(s->file_path, err) != 0)
        return -1;
    return 0;
}

/* Batches of a file converted at open are about this large. */
#define CONVERT_BATCH_BYTES (4u << 20)

/* Writes the table as a new file in the current format (one SET per key),
 * at once, for the conversion of an old file at open (nothing else runs
 * yet; hdb_rewrite does it in the background for an open store). The new
 * file is made durable before it takes the name: a crash at any point
 * leaves either the old file or the new one whole. On success *fd is the
 * new file (the old one is closed), and *size, key and *next_seq describe
 * it. On failure the old file is as it was and *fd still open. */
static int store_convert(hdb_store *s, int *fd, uint64_t *size, uint64_t key[2],
                         uint64_t *next_seq, hdb_err *err)
{
    char *tmp;
    int nfd;
    siphash_random_key(key);
    if (rewrite_file_create(s->file_path, key, s->codec, 0, &tmp, &nfd, err) != 0)
        return -1;
    hdb_buf batch;
    hdb_buf_init(&batch);
    uint64_t offset = aof_header_len(s->codec), seq = 1;
    uint32_t cursor = 0;
    hdb_entry *entry;
    int e = 0;
    const char *what = "write";
    while (e == 0 && (entry = table_next(&s->table, &cursor)) != NULL) {
        if (aof_append_set(&batch, entry_key(entry), entry->key_len, entry_val(entry),
                           entry->val_len) != 0)
            e = ENOMEM;
        else if (batch.len >= CONVERT_BATCH_BYTES &&
                 (e = file_write_batch(nfd, key, seq, batch.data, batch.len, &offset)) == 0) {
            seq++;
            batch.len = 0;
        }
    }
    if (e == 0 && batch.len > 0 &&
        (e = file_write_batch(nfd, key, seq, batch.data, batch.len, &offset)) == 0)
        seq++;
    if (e == 0 && fdatasync(nfd) != 0) {
        e = errno;
        what = "fdatasync";
    }
    hdb_buf_free(&batch);
    if (e != 0) {
        hdb_fail(err, hdb_errno_code(e), "cannot %s %s: %s", what, tmp, strerror(e));
        rewrite_file_discard(nfd, tmp);
        free(tmp);
        return -1;
    }
    if (rewrite_file_rename(tmp, s->file_path, err) != 0) {
        rewrite_file_discard(nfd, tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    /* Nothing was written to the new file yet: if the sync of the name
     * fails, a power loss brings back the old file, also whole; the open
     * fails, and the next one reads whichever is there. */
    if (file_sync_parent_dir(s->file_path, err) != 0) {
        lock_release(nfd);
        close(nfd);
        return -1;
    }
    /* Openers waiting for the old file's lock get it, see that it is no
     * longer the file at the path, and retry on the new one. */
    lock_release(*fd);
    close(*fd);
    *fd = nfd;
    *size = offset;
    *next_seq = seq;
    return 0;
}

/* Removes the temporary file of a rewrite that a crash interrupted. The
 * caller holds the lock: no rewrite of this file is running. One that is
 * in use is left alone (the next rewrite reports it). */
static void store_remove_stale_rewrite(hdb_store *s)
{
    char *tmp = rewrite_temp_name(s->file_path);
    if (tmp != NULL)
        rewrite_remove_leftover(tmp, NULL);
    free(tmp);
}

/* After the load (which keeps every key of the file, and sizes the index
 * for them, whatever the bound): from now on no resize of the index passes
 * max_memory. */
static void store_bound_index(hdb_store *s)
{
    if (s->max_memory != 0)
        s->table.bytes_limit = s->max_memory > sizeof *s ? (size_t)(s->max_memory - sizeof *s) : 1;
}

hdb_store *hdb_open(const hdb_options *opt, hdb_err *err)
{
    hdb_store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        return NULL;
    }
    uint64_t seed[2];
    siphash_random_key(seed);
    table_init(&s->table, seed);
    s->max_memory = opt->max_memory;
    s->eviction = opt->eviction;
    s->table.lru = opt->eviction == HDB_EVICT_LRU;
    s->sample_rng = seed[0] ^ seed[1];
    if (!aof_codec_is_json(opt->codec)) {
        size_t n = strlen(opt->codec);
        if (!aof_codec_name_valid(opt->codec, n)) {
            hdb_fail(err, HDB_CODE_INVALID, "a codec's name must be 1 to %d of A-Z a-z 0-9 . _ - +",
                     AOF_CODEC_NAME_MAX);
            goto fail;
        }
        memcpy(s->codec, opt->codec, n + 1);
    }
    if (opt->path == NULL) {
        store_bound_index(s);
        return s;
    }

    if (registry_ready(err) != 0)
        goto fail;
    if ((s->path = strdup(opt->path)) == NULL) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        goto fail;
    }
    uint64_t size;
    int created;
    int fd = store_open_file(s, opt->lock_timeout_ms, &size, &created, err);
    if (fd < 0)
        goto fail;
    aof_load_result res;
    uint64_t key[2], next_seq;
    int expiry_format = 0;
    store_remove_stale_rewrite(s);
    s->load_now_ms = expiry_clock_ms();
    if (store_load(s, fd, &size, opt->repair, &res, err) != 0)
        goto fail_fd;
    store_reclaim(s, s->load_now_ms, 0);
    s->expired_keys = 0;
    if (size == 0) {
        if (store_init_file(s, fd, created, key, err) != 0)
            goto fail_fd;
        size = aof_header_len(s->codec);
        next_seq = 1;
    } else if (res.version < AOF_FORMAT_VERSION) {
        /* A file of hurrahdb 0.2.0: rewritten in the current format, so
         * that everything appended to it is framed the current way. */
        hdb_err why;
        if (store_convert(s, &fd, &size, key, &next_seq, &why) != 0) {
            hdb_fail(err, why.code, "%.200s: cannot convert it from format version %d: %.250s",
                     s->path, res.version, why.msg);
            goto fail_fd;
        }
    } else {
        key[0] = res.key[0];
        key[1] = res.key[1];
        next_seq = res.next_seq;
        expiry_format = res.version == AOF_VERSION_EXPIRY;
    }
    if (flusher_start(&s->aof, fd, s->path, size, key, next_seq, expiry_format, opt->sync_time_ms,
                      opt->use_fsync, opt->max_pending ? opt->max_pending : HDB_DEFAULT_MAX_PENDING,
                      err) != 0)
        goto fail_fd;
    if ((s->rw = rewrite_new(&s->table, s->aof, s->path, s->file_path, s->codec)) == NULL) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        flusher_free(s->aof); /* releases and closes fd */
        s->aof = NULL;
        goto fail;
    }
    s->auto_percentage = opt->auto_rewrite_percentage;
    s->auto_min_size = opt->auto_rewrite_min_size;
    s->check_every = AUTO_CHECK_BYTES;
    if (s->auto_min_size / 8 < s->check_every)
        s->check_every = s->auto_min_size / 8 > AUTO_CHECK_FLOOR ? s->auto_min_size / 8 : AUTO_CHECK_FLOOR;
    s->base_size = size;
    store_bound_index(s);
    registry_add(s);
    return s;

fail_fd:
    /* Removed while still locked: an opener waiting for the lock then finds
     * that its descriptor is no longer the file at the path, and retries. */
    if (created && size == 0)
        unlink(s->file_path); /* leave no empty file behind a failed open */
    lock_release(fd);
    close(fd);
fail:
    table_free(&s->table);
    free(s->path);
    free(s->file_path);
    free(s->warning);
    free(s);
    return NULL;
}

int hdb_close(hdb_store *s, hdb_err *err)
{
    if (s->aof == NULL)
        return HDB_OK;
    rewrite_cancel(s->rw);
    /* Everything pending is written while the store is still on the exit
     * list, so that exit() in another thread meanwhile writes it too; then
     * it leaves the list, so that exit() never touches a flusher this call
     * is stopping. Only this thread appends, so nothing is pending then. */
    if (!flusher_in_forked_child(s->aof) && flusher_sync(s->aof, err) != 0)
        return HDB_ERR;
    registry_remove(s);
    int rc = flusher_stop(s->aof, err);
    if (rc < 0) {
        registry_add(s);
        return HDB_ERR;
    }
    flusher_free(s->aof);
    s->aof = NULL;
    return rc == 0 ? HDB_OK : HDB_ERR_CLOSED;
}

void hdb_free(hdb_store *s)
{
    if (s == NULL)
        return;
    registry_remove(s);
    rewrite_free(s->rw); /* first: its thread reads the table and the flusher */
    flusher_free(s->aof);
    table_free(&s->table);
    free(s->path);
    free(s->file_path);
    free(s->warning);
    free(s);
}

static int check_lengths(size_t key_len, size_t val_len, hdb_err *err)
{
    if (key_len > HDB_MAX_ITEM_LEN)
        return hdb_fail(err, HDB_CODE_TOO_LARGE, "key too long (%zu bytes; the limit is %u)",
                        key_len, HDB_MAX_ITEM_LEN);
    if (val_len > HDB_MAX_ITEM_LEN)
        return hdb_fail(err, HDB_CODE_TOO_LARGE, "value too long (%zu bytes encoded; the "
                        "limit is %u)", val_len, HDB_MAX_ITEM_LEN);
    return 0;
}


/* The first automatic retry after a failed automatic rewrite waits this
 * long; each further failure in a row doubles it, up to the maximum. */
#define AUTO_BACKOFF_FIRST_S 60
#define AUTO_BACKOFF_MAX_S 3600

static int store_start_rewrite(hdb_store *s, hdb_err *err)
{
    uint64_t key[2];
    siphash_random_key(key);
    return rewrite_start(s->rw, key, err);
}

/* Takes the outcome of a rewrite that ended: a new base size, or, for an
 * automatic one that failed, the time before the next automatic one. */
static void store_after_rewrite(hdb_store *s, int outcome)
{
    if (outcome == 0)
        return;
    int was_auto = s->auto_started;
    s->auto_started = 0;
    if (outcome > 0) {
        rewrite_stats st;
        rewrite_get_stats(s->rw, &st);
        s->base_size = st.last_size;
        s->auto_failures = 0;
        return;
    }
    if (!was_auto)
        return;
    unsigned delay = AUTO_BACKOFF_FIRST_S;
    for (unsigned i = 1; i < s->auto_failures + 1 && delay < AUTO_BACKOFF_MAX_S; i++)
        delay *= 2;
    if (delay > AUTO_BACKOFF_MAX_S)
        delay = AUTO_BACKOFF_MAX_S;
    s->auto_failures++;
    clock_gettime(CLOCK_MONOTONIC, &s->auto_not_before);
    s->auto_not_before.tv_sec += delay;
}

/* After a write: reaps an ended rewrite, and now and then starts an
 * automatic one when the file has grown enough. */
static void store_after_write(hdb_store *s, size_t bytes)
{
    if (s->rw == NULL)
        return;
    s->since_check += bytes + 32;
    if (s->since_check < s->check_every)
        return;
    s->since_check = 0;
    store_after_rewrite(s, rewrite_poll(s->rw));
    if (s->auto_percentage == 0 || rewrite_running(s->rw) || flusher_in_forked_child(s->aof))
        return;
    uint64_t size = flusher_file_size(s->aof);
    if (size < s->auto_min_size || size < s->base_size ||
        (size - s->base_size) / (double)(s->base_size ? s->base_size : 1) * 100.0 <
            (double)s->auto_percentage)
        return;
    if (s->auto_failures > 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec < s->auto_not_before.tv_sec ||
            (now.tv_sec == s->auto_not_before.tv_sec && now.tv_nsec < s->auto_not_before.tv_nsec))
            return;
    }
    if (store_start_rewrite(s, NULL) == 0)
        s->auto_started = 1;
}

/* Expired keys reclaimed per call, at most, by the calls that read or
 * write a key: the work a call adds is bounded (each is a removal from the
 * table and the expiry heap), and a store whose keys expire no faster than
 * it is called reclaims them all. */
#define SWEEP_PER_CALL 16

/* Reclaims up to `max` keys (0: all) that expired by now_ms, first to
 * expire first. Nothing is written to the file: the records that gave the
 * keys their expiry hold it as an absolute time, so every later load drops
 * them too. Caller holds the rewrite's lock (rewrite_enter). */
static uint64_t store_reclaim(hdb_store *s, int64_t now_ms, uint64_t max)
{
    uint64_t n = 0;
    hdb_entry *e;
    while ((max == 0 || n < max) && (e = table_first_to_expire(&s->table)) != NULL &&
           entry_expired(e, now_ms)) {
        store_remove_entry(s, e);
        n++;
    }
    s->expired_keys += n;
    return n;
}

/* The expiry clock now, or 0 (which nothing is expired at) when no key of
 * the store has an expiry: a store that never uses them never reads the
 * clock. */
static int64_t store_now(const hdb_store *s)
{
    return s->table.ttl_count > 0 ? expiry_clock_ms() : 0;
}

/* Looks a key up for a change, under the rewrite's lock: first reclaims a
 * few expired keys, then treats the key as absent if it has expired
 * (reclaiming it). */
static hdb_entry *store_lookup_live(hdb_store *s, const char *key, size_t key_len,
                                    int64_t now_ms, uint32_t *hash)
{
    if (now_ms > 0)
        store_reclaim(s, now_ms, SWEEP_PER_CALL);
    hdb_entry *e = table_lookup(&s->table, key, key_len, hash);
    if (e != NULL && entry_expired(e, now_ms)) {
        store_remove_entry(s, e);
        s->expired_keys++;
        e = NULL;
    }
    return e;
}

/* Deletes the live entry `old`: a DEL record, then the table. */
static int store_delete_entry(hdb_store *s, hdb_entry *old, hdb_err *err)
{
    if (s->aof && flusher_append_del(s->aof, entry_key(old), old->key_len, err) != 0)
        return HDB_ERR;
    store_remove_entry(s, old);
    return HDB_OK;
}

/* Keys LRU eviction compares per eviction (Redis's maxmemory-samples). */
#define LRU_SAMPLES 5

/* What max_memory bounds: the memory of the keys (entries, buckets,
 * slots, expiry heap). The AOF's buffers are left out: evicting keys cannot
 * shrink them (each eviction appends a DEL), and max_pending bounds them. */
static uint64_t store_memory_entered(hdb_store *s)
{
    return sizeof *s + s->table.bytes;
}

/* Makes room under max_memory for a change that adds an entry of
 * new_bytes in place of one of old_bytes (0: a new key, which may grow the
 * table's structures too), heap_add saying whether the heap of expiries
 * gains a member: reclaims expired keys, then, with eviction, evicts keys
 * other than `keep` (the entry being changed), each written as a DEL. What
 * the change needs is counted again after each eviction (which may spare
 * the growth of the bucket array). Fails with "no memory" when nothing
 * more may go; what was evicted before stays evicted (and written).
 * expiry_record: the change's record needs the file's format version 4.
 * Caller holds the rewrite's lock. */
static int store_make_room_held(hdb_store *s, size_t new_bytes, size_t old_bytes, int heap_add,
                                const hdb_entry *keep, int expiry_record, int *done,
                                hdb_err *err)
{
    int64_t now = 0;
    /* Before any key goes: if the change could not fit even with every
     * key eviction may take gone (and no growth), it is refused now,
     * instead of after evicting them all for nothing. Expired keys may
     * still be reclaimed below; they are not data. */
    if (s->eviction != HDB_EVICT_NONE) {
        size_t evictable = s->eviction == HDB_EVICT_LRU ? s->table.entry_bytes
                                                        : s->table.ttl_entry_bytes;
        if (keep != NULL && (s->eviction == HDB_EVICT_LRU || (keep->slot & ENTRY_HAS_TTL)))
            evictable -= table_entry_size(&s->table, keep->key_len, keep->val_len,
                                          (keep->slot & ENTRY_HAS_TTL) != 0);
        uint64_t floor = store_memory_entered(s) - evictable;
        /* The first places of the expiry heap are needed whatever goes. */
        if (heap_add && s->table.ttl_cap == 0)
            floor += table_insert_growth(&s->table, 0, 1);
        if (new_bytes > old_bytes && floor + (new_bytes - old_bytes) > s->max_memory)
            return hdb_fail(err, HDB_CODE_NO_MEMORY, "no memory");
    }
    int evicting = 0;
    for (;;) {
        uint64_t need = new_bytes + table_insert_growth(&s->table, keep == NULL, heap_add);
        /* A change that needs nothing more goes through, even when the
         * buffers have grown past the bound meanwhile. */
        int fits = need <= old_bytes || store_memory_entered(s) + (need - old_bytes) <= s->max_memory;
        /* Once keys go, room is made for the shrink of the index their
         * going calls for too, if there are keys for it: else a store kept
         * at its bound would keep the bucket array of its largest size for
         * good. */
        size_t shrink = evicting ? table_shrink_room(&s->table) : 0;
        if (fits && (shrink == 0 ||
                     store_memory_entered(s) + shrink + (need > old_bytes ? need - old_bytes : 0) <=
                         s->max_memory))
            return HDB_OK;
        hdb_entry *top = table_first_to_expire(&s->table);
        if (top != NULL && now == 0)
            now = expiry_clock_ms();
        if (top != NULL && top != keep && entry_expired(top, now)) {
            store_remove_entry(s, top);
            s->expired_keys++;
            continue;
        }
        hdb_entry *victim = NULL;
        if (s->eviction == HDB_EVICT_LRU) {
            victim = table_sample_lru(&s->table, LRU_SAMPLES, keep, &s->sample_rng);
        } else if (s->eviction == HDB_EVICT_VOLATILE_TTL) {
            /* The key being written may be the nearest to expiry: then the
             * next nearest, one of the top's two children. */
            victim = top != keep ? top : table_next_to_expire(&s->table);
        }
        if (victim == NULL || victim == keep) {
            if (fits)
                return HDB_OK; /* room for the change, if not for the shrink */
            return hdb_fail(err, HDB_CODE_NO_MEMORY, "no memory");
        }
        /* What may fail after a key was evicted for the change is done
         * before the first eviction: making the file version 4, if the
         * change's record needs it (and only then: a refused change leaves
         * the header alone). */
        if (expiry_record && !(*done & HDB_DONE_EVICTED) && s->aof &&
            flusher_prepare_expiry_format(s->aof, err) != 0)
            return HDB_ERR;
        if (store_delete_entry(s, victim, err) != HDB_OK)
            return HDB_ERR;
        s->evicted_keys++;
        *done |= HDB_DONE_EVICTED;
        evicting = 1;
    }
}

/* store_make_room_held, with the index's shrinks held meanwhile: the memory
 * each eviction frees is the room being made, not room for a second bucket
 * array (the next change that is not making room may shrink it). */
static int store_make_room(hdb_store *s, size_t new_bytes, size_t old_bytes, int heap_add,
                           const hdb_entry *keep, int expiry_record, int *done, hdb_err *err)
{
    int reserved = s->table.reserved;
    s->table.reserved = 1;
    int rc = store_make_room_held(s, new_bytes, old_bytes, heap_add, keep, expiry_record, done,
                                  err);
    s->table.reserved = reserved;
    return rc;
}

static int check_expiry(int64_t expire_ms, hdb_err *err)
{
    if (expire_ms < 0 || expire_ms > AOF_EXPIRE_MAX_MS)
        return hdb_fail(err, HDB_CODE_INVALID, "expiry time out of range (%" PRId64 " ms; "
                        "1 to %" PRId64 ")", expire_ms, AOF_EXPIRE_MAX_MS);
    return 0;
}

int hdb_set(hdb_store *s, const char *key, size_t key_len,
            const char *val, size_t val_len, hdb_err *err)
{
    int done;
    return hdb_set_ex(s, key, key_len, val, val_len, 0, 0, &done, err);
}

int hdb_set_ex(hdb_store *s, const char *key, size_t key_len, const char *val, size_t val_len,
               int64_t expire_ms, int flags, int *done, hdb_err *err)
{
    *done = 0;
    if (check_lengths(key_len, val_len, err) != 0 ||
        check_expiry((flags & HDB_SET_TTL) ? 0 : expire_ms, err) != 0)
        return HDB_ERR;
    int locked = rewrite_enter(s->rw);
    int64_t now;
    if (expire_ms > 0) {
        /* One reading of the clock: the time rounded down, for what has
         * expired, and up, for the expiry of a time to live. */
        struct timespec ts = {0, 0};
        (void)clock_gettime(CLOCK_REALTIME, &ts);
        now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        if (flags & HDB_SET_TTL) {
            expire_ms = expire_ms > AOF_EXPIRE_MAX_MS ? -1
                                                      : expire_ms + now + (ts.tv_nsec % 1000000 != 0);
            if (check_expiry(expire_ms, err) != 0) {
                if (locked)
                    rewrite_leave(s->rw);
                return HDB_ERR;
            }
        }
    } else {
        now = store_now(s);
    }
    uint32_t h;
    hdb_entry *old = store_lookup_live(s, key, key_len, now, &h);
    int rc = HDB_OK;
    if (((flags & HDB_SET_IF_ABSENT) && old != NULL) || ((flags & HDB_SET_IF_PRESENT) && old == NULL))
        goto out;
    if ((flags & HDB_SET_KEEP_TTL) && old != NULL && expire_ms == 0)
        expire_ms = entry_expiry(old);
    if (expire_ms > 0 && expire_ms <= now) {
        /* Set and expired at once (a time already past): the key is gone. */
        if (old != NULL)
            rc = store_delete_entry(s, old, err);
        if (rc == HDB_OK)
            *done |= HDB_DONE_WRITTEN;
        goto out;
    }
    int64_t old_expiry = old != NULL ? entry_expiry(old) : 0;
    if (s->max_memory != 0) {
        if (old != NULL)
            table_touch(&s->table, old); /* the last an LRU eviction picks */
        size_t new_bytes = table_entry_size(&s->table, key_len, val_len, expire_ms > 0);
        size_t old_bytes = old != NULL ? table_entry_size(&s->table, key_len, old->val_len,
                                                          old_expiry > 0) : 0;
        if (store_make_room(s, new_bytes, old_bytes, expire_ms > 0 && old_expiry == 0, old,
                            expire_ms > 0, done, err) != HDB_OK) {
            rc = HDB_ERR;
            goto out;
        }
    }
    if (old != NULL && old->val_len == val_len && (old_expiry > 0) == (expire_ms > 0)) {
        /* Same size, same kind of entry: overwritten in place, once the
         * record is appended. */
        if (s->aof && flusher_append_set_px(s->aof, key, key_len, val, val_len, expire_ms,
                                            err) != 0) {
            rc = HDB_ERR;
            goto out;
        }
        s->live_bytes -= entry_record_len(old);
        table_update_value(&s->table, old, val, val_len);
        table_touch(&s->table, old);
        if (expire_ms > 0 && expire_ms != old_expiry)
            table_set_expiry(&s->table, old, expire_ms);
        s->live_bytes += entry_record_len(old);
        *done |= HDB_DONE_WRITTEN;
        goto out;
    }
    hdb_entry *e = table_entry_new(&s->table, old, h, key, key_len, val, val_len, expire_ms);
    if (e == NULL) {
        rc = hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        goto out;
    }
    if (s->aof && flusher_append_set_px(s->aof, key, key_len, val, val_len, expire_ms, err) != 0) {
        table_entry_discard(&s->table, e);
        rc = HDB_ERR;
        goto out;
    }
    if (old != NULL)
        s->live_bytes -= entry_record_len(old);
    table_commit(&s->table, e, old);
    s->live_bytes += entry_record_len(e);
    *done |= HDB_DONE_WRITTEN;
out:
    if (locked)
        rewrite_leave(s->rw);
    if (rc == HDB_OK && *done)
        store_after_write(s, key_len + val_len);
    return rc;
}

int hdb_delete(hdb_store *s, const char *key, size_t key_len, int *existed, hdb_err *err)
{
    *existed = 0;
    int locked = rewrite_enter(s->rw);
    uint32_t h;
    hdb_entry *old = store_lookup_live(s, key, key_len, store_now(s), &h);
    int rc = HDB_OK;
    if (old != NULL) {
        rc = store_delete_entry(s, old, err);
        *existed = rc == HDB_OK;
    }
    if (locked)
        rewrite_leave(s->rw);
    if (*existed)
        store_after_write(s, key_len);
    return rc;
}

int hdb_expire_at(hdb_store *s, const char *key, size_t key_len, int64_t expire_ms,
                  int *done, hdb_err *err)
{
    *done = 0;
    if (check_expiry(expire_ms, err) != 0)
        return HDB_ERR;
    int locked = rewrite_enter(s->rw);
    int64_t now = expiry_clock_ms();
    uint32_t h;
    hdb_entry *old = store_lookup_live(s, key, key_len, now, &h);
    int rc = HDB_OK;
    if (old == NULL)
        goto out;
    if (expire_ms <= now) {
        /* A time already past: the key expires now (as in Redis). */
        rc = store_delete_entry(s, old, err);
        *done = rc == HDB_OK ? HDB_DONE_WRITTEN : 0;
        goto out;
    }
    /* Rebuilt first, where the entry gains its expiry, so that a failure
     * leaves the store as it was. */
    hdb_entry *e = NULL;
    if (!(old->slot & ENTRY_HAS_TTL) && s->max_memory != 0 &&
        store_make_room(s, table_entry_size(&s->table, key_len, old->val_len, 1),
                        table_entry_size(&s->table, key_len, old->val_len, 0), 1, old, 1, done,
                        err) != HDB_OK) {
        rc = HDB_ERR;
        goto out;
    }
    if (!(old->slot & ENTRY_HAS_TTL) &&
        (e = table_entry_new(&s->table, old, old->hash, key, key_len, entry_val(old),
                             old->val_len, expire_ms)) == NULL) {
        rc = hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        goto out;
    }
    if (s->aof && flusher_append_pexpireat(s->aof, key, key_len, expire_ms, err) != 0) {
        if (e != NULL)
            table_entry_discard(&s->table, e);
        rc = HDB_ERR;
        goto out;
    }
    s->live_bytes -= entry_record_len(old);
    if (e != NULL) {
        table_commit(&s->table, e, old);
        s->live_bytes += entry_record_len(e);
    } else {
        table_set_expiry(&s->table, old, expire_ms);
        s->live_bytes += entry_record_len(old);
    }
    *done |= HDB_DONE_WRITTEN;
out:
    if (locked)
        rewrite_leave(s->rw);
    if (rc == HDB_OK && *done)
        store_after_write(s, key_len);
    return rc;
}

int hdb_persist(hdb_store *s, const char *key, size_t key_len, int *removed, hdb_err *err)
{
    *removed = 0;
    int locked = rewrite_enter(s->rw);
    uint32_t h;
    hdb_entry *old = store_lookup_live(s, key, key_len, store_now(s), &h);
    int rc = HDB_OK;
    if (old == NULL || !(old->slot & ENTRY_HAS_TTL))
        goto out;
    hdb_entry *e = table_entry_new(&s->table, old, old->hash, key, key_len, entry_val(old),
                                   old->val_len, 0);
    if (e == NULL) {
        rc = hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        goto out;
    }
    if (s->aof && flusher_append_persist(s->aof, key, key_len, err) != 0) {
        table_entry_discard(&s->table, e);
        rc = HDB_ERR;
        goto out;
    }
    s->live_bytes -= entry_record_len(old);
    table_commit(&s->table, e, old);
    s->live_bytes += entry_record_len(e);
    *removed = 1;
out:
    if (locked)
        rewrite_leave(s->rw);
    if (*removed)
        store_after_write(s, key_len);
    return rc;
}

int hdb_flush_all(hdb_store *s, hdb_err *err)
{
    int locked = rewrite_enter(s->rw);
    int rc = HDB_OK;
    if (s->aof && flusher_append_flushall(s->aof, err) != 0) {
        rc = HDB_ERR;
    } else {
        table_free(&s->table);
        s->live_bytes = 0;
    }
    if (locked)
        rewrite_leave(s->rw);
    if (rc == HDB_OK)
        store_after_write(s, 0);
    return rc;
}

int64_t hdb_clock_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + (ts.tv_nsec + 999999) / 1000000;
}

uint64_t hdb_flush_expired(hdb_store *s, uint64_t max)
{
    if (s->table.ttl_count == 0)
        return 0;
    int locked = rewrite_enter(s->rw);
    uint64_t n = store_reclaim(s, expiry_clock_ms(), max);
    if (locked)
        rewrite_leave(s->rw);
    return n;
}

int hdb_rewrite(hdb_store *s, int wait, hdb_err *err)
{
    if (s->aof == NULL)
        return hdb_fail(err, HDB_CODE_MEMORY_ONLY, "a memory-only store has no file to rewrite");
    if (flusher_in_forked_child(s->aof))
        return hdb_fail(err, HDB_CODE_FORKED, "store %s was opened by another process (before "
                        "a fork); it cannot be rewritten from this process", s->path);
    store_after_rewrite(s, rewrite_poll(s->rw));
    if (!rewrite_running(s->rw)) {
        if (store_start_rewrite(s, err) != 0)
            return HDB_ERR;
    } else if (!wait) {
        return hdb_fail(err, HDB_CODE_BUSY, "a rewrite of %s is already running", s->path);
    }
    if (!wait)
        return HDB_OK;
    int was_running = rewrite_running(s->rw);
    int rc = rewrite_wait(s->rw, err);
    if (was_running) {
        rewrite_stats st;
        rewrite_get_stats(s->rw, &st);
        store_after_rewrite(s, st.last_status);
    }
    return rc == 0 ? HDB_OK : HDB_ERR;
}

int hdb_get_ex(hdb_store *s, const char *key, size_t key_len, const char **val,
               size_t *val_len, int64_t *expire_ms)
{
    int64_t now = store_now(s);
    hdb_entry *top = table_first_to_expire(&s->table);
    uint32_t h;
    hdb_entry *e;
    if (top != NULL && entry_expired(top, now)) {
        /* Something to reclaim: done under the rewrite's lock. */
        int locked = rewrite_enter(s->rw);
        e = store_lookup_live(s, key, key_len, now, &h);
        if (locked)
            rewrite_leave(s->rw);
    } else {
        e = table_lookup(&s->table, key, key_len, &h);
    }
    if (e == NULL)
        return 0;
    table_touch(&s->table, e);
    *val = entry_val(e);
    *val_len = e->val_len;
    if (expire_ms != NULL)
        *expire_ms = entry_expiry(e);
    return 1;
}

int hdb_get(hdb_store *s, const char *key, size_t key_len,
            const char **val, size_t *val_len)
{
    return hdb_get_ex(s, key, key_len, val, val_len, NULL);
}

uint64_t hdb_count(hdb_store *s)
{
    hdb_flush_expired(s, 0);
    return s->table.count;
}

uint64_t hdb_changes(const hdb_store *s)
{
    return s->table.changes;
}

int hdb_sync(hdb_store *s, hdb_err *err)
{
    if (s->aof == NULL)
        return HDB_OK;
    return flusher_sync(s->aof, err) == 0 ? HDB_OK : HDB_ERR;
}

void hdb_get_stats(hdb_store *s, hdb_stats *st)
{
    memset(st, 0, sizeof *st);
    st->keys = s->table.count;
    st->expired_keys = s->expired_keys;
    st->keys_with_ttl = s->table.ttl_count;
    st->evicted_keys = s->evicted_keys;
    st->data_bytes = sizeof *s + s->table.bytes;
    st->max_memory = s->max_memory;
    st->memory_bytes = sizeof *s + s->table.bytes;
    st->loaded_records = s->loaded_records;
    st->dropped_bytes = s->dropped_bytes;
    st->warning = s->warning != NULL ? s->warning : "";
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
        store_after_rewrite(s, rewrite_poll(s->rw));
        rewrite_stats rs;
        rewrite_get_stats(s->rw, &rs);
        st->memory_bytes += rs.memory;
        st->rewrite_running = rs.running;
        st->rewrites = rs.completed;
        st->rewrites_failed = rs.failed;
        st->last_rewrite_status = rs.last_status;
        st->last_rewrite_seconds = rs.last_seconds;
        memcpy(st->last_rewrite_error, rs.last_error, sizeof st->last_rewrite_error);
        st->rewrite_base_bytes = s->base_size;
        st->live_bytes = aof_header_len(s->codec) + s->live_bytes;
    }
}

const char *hdb_path(const hdb_store *s)
{
    return s->path;
}

int hdb_next(const hdb_store *s, uint32_t *cursor, const char **key,
             size_t *key_len, const char **val, size_t *val_len)
{
    int64_t now = store_now(s);
    hdb_entry *e;
    do {
        e = table_next(&s->table, cursor);
        if (e == NULL)
            return 0;
    } while (entry_expired(e, now));
    *key = entry_key(e);
    *key_len = e->key_len;
    *val = entry_val(e);
    *val_len = e->val_len;
    return 1;
}
