#include "hdb_flusher.h"
#include "hdb_aof.h"
#include "hdb_buf.h"
#include "hdb_err.h"
#include "hdb_file.h"
#include "hdb_lock.h"
#include "hdb_thread.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A written buffer keeps up to this much capacity, or four times its last
 * batch if more, for the next turn. */
#define FLUSHER_IDLE_KEEP (1u << 20)

/* When this much is pending, the thread flushes without waiting for the end
 * of the period. Under heavy writes the two buffers then take turns at about
 * this size: memory that is already mapped gets reused (first-touch page
 * faults were a third of the cost of a set in the caller), memory stays
 * bounded, and a crash loses less. */
#define FLUSHER_EARLY_BYTES (4u << 20)

struct hdb_flusher {
    int fd;
    char *path;
    unsigned sync_time_ms;
    int use_fsync;
    uint64_t file_key[2];   /* tags the batch lines (see hdb_aof.h) */

    /* buf_lock guards pending, stop, and the stats fields. Callers hold it
     * only to append, so they never wait for the disk. */
    pthread_mutex_t buf_lock;
    pthread_cond_t wake;
    hdb_buf pending;
    int stop;
    int early;              /* pending passed FLUSHER_EARLY_BYTES; the thread was woken */
    int failing;            /* the last flush failed; appends are refused */
    int exiting;            /* the process is exiting and the lock is released:
                               nothing more is appended or written */
    uint64_t errors;
    char last_error[256];
    int last_error_code;    /* reported with last_error while `failing` */
    int64_t last_sync_ms;
    uint64_t file_bytes;
    size_t inflight_bytes;  /* taken by a flush, not yet durable */
    size_t writing_cap;     /* capacity of `writing`, for stats */

    /* io_lock serialises flushes (thread, sync(), close()), so batches reach
     * the file in append order. It guards writing, file_size and tail_dirty. */
    pthread_mutex_t io_lock;
    hdb_buf writing;
    uint64_t file_size;     /* end of the last complete batch on disk */
    uint64_t next_seq;      /* number of the next batch written */
    int expiry_format;      /* the file is of format version 4 (AOF_VERSION_EXPIRY);
                               set holding io_lock and buf_lock (by the store's
                               thread, or a rewrite's switch), so either lock
                               is enough to read it */
    int tail_dirty;         /* a failed write may have left bytes past file_size */
    int dir_unsynced_fd;    /* a rewritten file took the name, and the sync of its
                               directory (this descriptor) failed: retried before
                               the next batch, which could not survive a power
                               loss before it; -1 otherwise */

    /* While a rewrite runs (see hdb_rewrite.h), every record appended is
     * also copied into `tail`, which the rewrite takes from time to time;
     * guarded by buf_lock. */
    int tail_on;
    int tail_overflowed;    /* the tail passed max_pending and was dropped */
    int tail_switching;     /* flusher_switch is installing the new file */
    size_t tail_last_len;   /* bytes of the last record copied, for a withdrawal */
    hdb_buf tail;
    /* flusher_switch's own, under io_lock: kept here rather than on the
     * rewrite thread's stack so that they stay reachable from the store in
     * a child forked meanwhile (where that thread does not exist). */
    hdb_buf switch_last;
    int switch_dir_fd;

    uint64_t max_pending;   /* unwritten bytes before appends wait for the disk */
    size_t early_bytes;     /* pending bytes that wake the thread before its time */
    uint64_t backpressure_waits;

    int has_thread;
    pthread_t thread;
    unsigned long fork_gen; /* fork generation when started */
};

int flusher_sync(hdb_flusher *f, hdb_err *err);

/* Counts forks of this process, so a store can tell that it is being used in
 * a child (where its thread does not exist and its file belongs to the
 * parent). Written only by the atfork handler. */
static volatile unsigned long flusher_fork_generation;
static pthread_once_t flusher_atfork_once = PTHREAD_ONCE_INIT;
static int flusher_atfork_status;

static void flusher_on_fork_child(void) { flusher_fork_generation++; }

static void flusher_register_atfork(void)
{
    flusher_atfork_status = pthread_atfork(NULL, NULL, flusher_on_fork_child);
}

int flusher_in_forked_child(const hdb_flusher *f)
{
    return f->fork_gen != flusher_fork_generation;
}

static int64_t wall_clock_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Replaces the descriptor in *field with next, then closes the old one: in
 * that order, so that a child forked in between never finds in the field
 * the number of a descriptor already closed (which its close of the store
 * would close again, whatever the child has opened under that number
 * since). */
static void flusher_drop_dir_fd(int *field, int next)
{
    int old = *field;
    *field = next;
    if (old >= 0)
        close(old);
}

/* Records a failure for stats and for the refusal of later appends.
 * Caller holds io_lock; takes buf_lock. */
static void flusher_record_error(hdb_flusher *f, const char *what, int errnum, hdb_err *err)
{
    pthread_mutex_lock(&f->buf_lock);
    f->failing = 1;
    f->errors++;
    snprintf(f->last_error, sizeof f->last_error, "%s %s: %s", what, f->path,
             strerror(errnum));
    f->last_error_code = hdb_errno_code(errnum);
    hdb_fail(err, f->last_error_code, "%s", f->last_error);
    pthread_mutex_unlock(&f->buf_lock);
}

/* The one flush path. Caller holds io_lock. Moves pending into writing,
 * writes the batch's line and the batch at the end of the last good batch
 * and syncs. On failure the batch stays in `writing` and keeps its number;
 * its line is made again next time, since more records may join it. */
static int flusher_flush_locked(hdb_flusher *f, hdb_err *err)
{
    if (f->exiting) /* the file may already be another process's */
        return 0;
    pthread_mutex_lock(&f->buf_lock);
    if (f->writing.len == 0) {
        hdb_buf_swap(&f->pending, &f->writing);
    } else if (f->pending.len > 0 &&
               hdb_buf_append(&f->writing, f->pending.data, f->pending.len) == 0) {
        f->pending.len = 0;
    }
    f->inflight_bytes = f->writing.len;
    f->writing_cap = f->writing.cap;
    pthread_mutex_unlock(&f->buf_lock);

    if (f->writing.len == 0 && !f->tail_dirty && f->dir_unsynced_fd < 0)
        return 0;

    if (f->dir_unsynced_fd >= 0) {
        int e = file_sync_dir(f->dir_unsynced_fd);
        if (e != 0) {
            flusher_record_error(f, "cannot sync the directory of", e, err);
            return -1;
        }
        flusher_drop_dir_fd(&f->dir_unsynced_fd, -1);
        if (f->writing.len == 0 && !f->tail_dirty)
            return 0;
    }

    if (f->tail_dirty) {
        if (ftruncate(f->fd, (off_t)f->file_size) != 0) {
            flusher_record_error(f, "cannot truncate", errno, err);
            return -1;
        }
        f->tail_dirty = 0;
        if (f->writing.len == 0) { /* a withdrawn record's bytes are now gone */
            if (f->use_fsync && fdatasync(f->fd) != 0) {
                f->tail_dirty = 1;
                flusher_record_error(f, "cannot fdatasync", errno, err);
                return -1;
            }
            return 0;
        }
    }

    uint64_t end = f->file_size;
    int e = file_write_batch(f->fd, f->file_key, f->next_seq, f->writing.data, f->writing.len,
                             &end);
    const char *what = "cannot write";
    if (e == 0 && f->use_fsync && fdatasync(f->fd) != 0) {
        e = errno;
        what = "cannot fdatasync";
    }
    if (e != 0) {
        /* Cut what reached the file off it now, so that a crash before the
         * next flush cannot bring back a batch this call reports as failed
         * (in synchronous mode, a write the caller was told is refused). The
         * next flush cuts again and syncs the cut with its own batch. */
        if (ftruncate(f->fd, (off_t)f->file_size) != 0) {
            /* the next flush's ftruncate reports it */
        }
        f->tail_dirty = 1;
        flusher_record_error(f, what, e, err);
        return -1;
    }

    f->file_size = end;
    f->next_seq++;
    /* The two buffers take turns; each keeps its capacity so that a steady
     * write rate appends into memory that is already mapped. Only a buffer
     * much larger than this batch needed (after a burst) is released. */
    size_t keep = 4 * f->writing.len > FLUSHER_IDLE_KEEP ? 4 * f->writing.len : FLUSHER_IDLE_KEEP;
    f->writing.len = 0;
    hdb_buf_shrink_if_idle(&f->writing, keep);

    pthread_mutex_lock(&f->buf_lock);
    f->failing = 0;
    f->last_sync_ms = wall_clock_ms();
    f->file_bytes = f->file_size;
    f->inflight_bytes = 0;
    f->writing_cap = f->writing.cap;
    pthread_mutex_unlock(&f->buf_lock);
    return 0;
}

static void *flusher_thread_main(void *arg)
{
    hdb_flusher *f = arg;
    struct timespec deadline;
    thread_set_name("hdb-flusher");

    pthread_mutex_lock(&f->buf_lock);
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    for (;;) {
        deadline.tv_sec += f->sync_time_ms / 1000;
        deadline.tv_nsec += (long)(f->sync_time_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (!f->stop && !f->early && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&f->wake, &f->buf_lock, &deadline);
        if (f->stop)
            break;
        f->early = 0;
        int have_work = f->pending.len > 0 || f->failing;
        pthread_mutex_unlock(&f->buf_lock);

        if (have_work) {
            pthread_mutex_lock(&f->io_lock);
            flusher_flush_locked(f, NULL);
            pthread_mutex_unlock(&f->io_lock);
        }

        pthread_mutex_lock(&f->buf_lock);
        /* Measure the next period from the end of this flush, so that a slow
         * disk does not make the thread flush back to back. */
        clock_gettime(CLOCK_MONOTONIC, &deadline);
    }
    pthread_mutex_unlock(&f->buf_lock);
    return NULL;
}

static int flusher_start_thread(hdb_flusher *f, hdb_err *err)
{
    if (thread_start_quiet(&f->thread, flusher_thread_main, f, "flusher", err) != 0)
        return -1;
    f->has_thread = 1;
    return 0;
}

int flusher_start(hdb_flusher **out, int fd, const char *path, uint64_t size,
                  const uint64_t file_key[2], uint64_t next_seq, int expiry_format,
                  unsigned sync_time_ms, int use_fsync, uint64_t max_pending,
                  hdb_err *err)
{
    pthread_once(&flusher_atfork_once, flusher_register_atfork);
    if (flusher_atfork_status != 0) {
        /* pthread_atfork fails only for want of memory. */
        hdb_fail(err, HDB_CODE_NO_MEMORY, "cannot register the fork handler: %s",
                 strerror(flusher_atfork_status));
        return -1;
    }
    hdb_flusher *f = calloc(1, sizeof *f);
    if (f == NULL || (f->path = strdup(path)) == NULL) {
        free(f);
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
        return -1;
    }
    f->fd = fd;
    f->expiry_format = expiry_format;
    f->dir_unsynced_fd = -1;
    f->switch_dir_fd = -1;
    f->sync_time_ms = sync_time_ms;
    f->use_fsync = use_fsync;
    f->file_size = size;
    f->file_bytes = size;
    f->file_key[0] = file_key[0];
    f->file_key[1] = file_key[1];
    f->next_seq = next_seq;
    f->fork_gen = flusher_fork_generation;
    f->max_pending = max_pending;
    f->early_bytes = max_pending / 2 < FLUSHER_EARLY_BYTES ? (size_t)(max_pending / 2)
                                                           : FLUSHER_EARLY_BYTES;
    hdb_buf_init(&f->pending);
    hdb_buf_init(&f->writing);
    hdb_buf_init(&f->tail);

    pthread_condattr_t ca;
    int e = pthread_condattr_init(&ca);
    if (e == 0) {
        e = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (e == 0)
            e = pthread_cond_init(&f->wake, &ca);
        pthread_condattr_destroy(&ca);
    }
    /* These fail only for want of memory or of other resources. */
    if (e != 0) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "cannot create a condition variable: %s",
                 strerror(e));
        free(f->path);
        free(f);
        return -1;
    }
    if ((e = pthread_mutex_init(&f->buf_lock, NULL)) != 0) {
        pthread_cond_destroy(&f->wake);
        hdb_fail(err, HDB_CODE_NO_MEMORY, "cannot create a mutex: %s", strerror(e));
        free(f->path);
        free(f);
        return -1;
    }
    if ((e = pthread_mutex_init(&f->io_lock, NULL)) != 0) {
        pthread_mutex_destroy(&f->buf_lock);
        pthread_cond_destroy(&f->wake);
        hdb_fail(err, HDB_CODE_NO_MEMORY, "cannot create a mutex: %s", strerror(e));
        free(f->path);
        free(f);
        return -1;
    }
    if (sync_time_ms > 0 && flusher_start_thread(f, err) != 0) {
        f->fd = -1;
        flusher_free(f);
        return -1;
    }
    *out = f;
    return 0;
}

/* Refuses appends while the file is failing. Caller holds buf_lock. */
static int flusher_check_writable(hdb_flusher *f, hdb_err *err)
{
    if (f->exiting) {
        hdb_fail(err, HDB_CODE_EXITING, "store %s: the process is exiting; its file was "
                 "written and released", f->path);
        return -1;
    }
    if (f->failing) {
        hdb_fail(err, f->last_error_code, "%s", f->last_error);
        return -1;
    }
    return 0;
}

/* Wakes the thread once when enough is pending. Caller holds buf_lock. */
static inline void flusher_wake_if_full(hdb_flusher *f)
{
    if (f->pending.len >= f->early_bytes && f->has_thread && !f->early) {
        f->early = 1;
        pthread_cond_signal(&f->wake);
    }
}

/* In synchronous mode a failed flush leaves nothing acknowledged unwritten:
 * no thread exists, so `writing` holds at most the one record whose call is
 * failing, which is dropped (withdrawn); the next call tries the disk again
 * (first cutting the dropped bytes off the file). Caller holds io_lock. */
static void flusher_withdraw_failed(hdb_flusher *f)
{
    f->writing.len = 0;
    pthread_mutex_lock(&f->buf_lock);
    /* The record is the tail's last too, if it was copied there: the
     * rewrite takes the tail only while no write call is under way. */
    if (f->tail_on && f->tail_last_len <= f->tail.len)
        f->tail.len -= f->tail_last_len;
    f->tail_last_len = 0;
    f->inflight_bytes = 0;
    f->failing = 0;
    pthread_mutex_unlock(&f->buf_lock);
}

/* Common tail of both appends: in synchronous mode, make the record durable
 * now, or withdraw it (flusher_sync does both). */
static int flusher_after_append(hdb_flusher *f, hdb_err *err)
{
    return f->sync_time_ms > 0 ? 0 : flusher_sync(f, err);
}

/* Copies a record just appended into the rewrite's tail. A tail the rewrite
 * does not take fast enough (its disk is slower than the writers) is
 * dropped, which fails that rewrite, rather than holding memory without
 * bound or making writers wait for it; but not while the rewrite is
 * installing its file, whose last records the tail is. Returns -1 when
 * there is no memory for the copy: the caller refuses the write. Caller
 * holds buf_lock. */
static int flusher_copy_to_tail(hdb_flusher *f, const char *rec, size_t len)
{
    if (!f->tail_switching && f->tail.len + len > f->max_pending) {
        f->tail_on = 0;
        f->tail_overflowed = 1;
        f->tail_last_len = 0;
        hdb_buf_free(&f->tail);
        return 0;
    }
    if (hdb_buf_append(&f->tail, rec, len) != 0)
        return -1;
    f->tail_last_len = len;
    return 0;
}

/* Marks the file as format version 4 before its first record that versions
 * 2 and 3 do not have: the digit of the header's version (which its
 * checksum does not cover), made durable before any such record can be
 * written, so that an older build refuses the file as newer instead of
 * taking the records for damage. Runs on the store's thread. */
static int flusher_upgrade_format(hdb_flusher *f, hdb_err *err)
{
    pthread_mutex_lock(&f->io_lock);
    int e = 0;
    const char *what = "write";
    if (!f->expiry_format) {
        char digit = '0' + AOF_VERSION_EXPIRY;
        e = file_write_all_at(f->fd, &digit, 1, AOF_VERSION_OFFSET);
        if (e == 0 && f->use_fsync && fdatasync(f->fd) != 0) {
            e = errno;
            what = "fdatasync";
        }
        if (e == 0) {
            pthread_mutex_lock(&f->buf_lock);
            f->expiry_format = 1;
            pthread_mutex_unlock(&f->buf_lock);
        }
    }
    pthread_mutex_unlock(&f->io_lock);
    if (e != 0)
        return hdb_fail(err, hdb_errno_code(e), "cannot %s the header of %s (to format "
                        "version %d, for expiries): %s", what, f->path, AOF_VERSION_EXPIRY,
                        strerror(e));
    return 0;
}

/* Fails with HDB_CODE_FORKED in a child forked after the open: before any
 * lock, as a mutex there may be held for good by a thread of the parent's,
 * which does not exist in the child. `refused` says what is refused. */
static int flusher_refuse_in_child(hdb_flusher *f, const char *refused, hdb_err *err)
{
    if (!flusher_in_forked_child(f))
        return 0;
    hdb_fail(err, HDB_CODE_FORKED, "store %s was opened by another process (before a fork); %s",
             f->path, refused);
    return -1;
}

int flusher_prepare_expiry_format(hdb_flusher *f, hdb_err *err)
{
    if (flusher_refuse_in_child(f, "writes from this process are refused", err) != 0)
        return -1;
    pthread_mutex_lock(&f->buf_lock);
    int rc = flusher_check_writable(f, err);
    int ready = f->expiry_format;
    pthread_mutex_unlock(&f->buf_lock);
    if (rc != 0)
        return -1;
    return ready ? 0 : flusher_upgrade_format(f, err);
}

int flusher_expiry_format(hdb_flusher *f)
{
    if (flusher_in_forked_child(f))
        return f->expiry_format;
    pthread_mutex_lock(&f->buf_lock);
    int v = f->expiry_format;
    pthread_mutex_unlock(&f->buf_lock);
    return v;
}

/* One record to append. */
typedef struct flusher_record {
    int kind; /* an enum aof_kind */
    const char *key, *val;
    size_t key_len, val_len;
    int64_t expire_ms;
} flusher_record;

static int flusher_format_record(hdb_buf *b, const flusher_record *r)
{
    switch (r->kind) {
    case AOF_SET:
        return aof_append_set_px(b, r->key, r->key_len, r->val ? r->val : "", r->val_len,
                                 r->expire_ms);
    case AOF_DEL:
        return aof_append_del(b, r->key, r->key_len);
    case AOF_PEXPIREAT:
        return aof_append_pexpireat(b, r->key, r->key_len, r->expire_ms);
    case AOF_PERSIST:
        return aof_append_persist(b, r->key, r->key_len);
    default:
        return aof_append_flushall(b);
    }
}

/* Appends one record. When the bytes not yet written pass max_pending, the
 * disk is slower than the writers: the caller first writes them itself,
 * waiting for the disk, so memory stays bounded; if that fails, nothing is
 * appended. */
static int flusher_append(hdb_flusher *f, const flusher_record *r, hdb_err *err)
{
    if (flusher_refuse_in_child(f, "writes from this process are refused", err) != 0)
        return -1;
    int needs_v4 = r->kind >= AOF_PEXPIREAT || (r->kind == AOF_SET && r->expire_ms > 0);
    pthread_mutex_lock(&f->buf_lock);
    int rc = flusher_check_writable(f, err);
    /* expiry_format is read under buf_lock: a rewrite's switch, on its own
     * thread, sets it under that lock. */
    if (rc == 0 && needs_v4 && !f->expiry_format) {
        pthread_mutex_unlock(&f->buf_lock);
        if (flusher_upgrade_format(f, err) != 0)
            return -1;
        pthread_mutex_lock(&f->buf_lock);
        rc = flusher_check_writable(f, err);
    }
    if (rc == 0 && f->pending.len + f->inflight_bytes >= f->max_pending) {
        pthread_mutex_unlock(&f->buf_lock);
        if (flusher_sync(f, err) != 0)
            return -1;
        pthread_mutex_lock(&f->buf_lock);
        f->backpressure_waits++;
    }
    if (rc == 0) {
        size_t before = f->pending.len;
        if (flusher_format_record(&f->pending, r) != 0) {
            hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory appending to %s", f->path);
            rc = -1;
        } else if (f->tail_on &&
                   flusher_copy_to_tail(f, f->pending.data + before, f->pending.len - before) != 0) {
            f->pending.len = before;
            hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory appending to %s", f->path);
            rc = -1;
        }
    }
    flusher_wake_if_full(f);
    pthread_mutex_unlock(&f->buf_lock);
    return rc == 0 ? flusher_after_append(f, err) : rc;
}

int flusher_append_set(hdb_flusher *f, const char *key, size_t key_len,
                       const char *val, size_t val_len, hdb_err *err)
{
    flusher_record r = {AOF_SET, key, val, key_len, val_len, 0};
    return flusher_append(f, &r, err);
}

int flusher_append_set_px(hdb_flusher *f, const char *key, size_t key_len,
                          const char *val, size_t val_len, int64_t expire_ms, hdb_err *err)
{
    flusher_record r = {AOF_SET, key, val, key_len, val_len, expire_ms};
    return flusher_append(f, &r, err);
}

int flusher_append_del(hdb_flusher *f, const char *key, size_t key_len, hdb_err *err)
{
    flusher_record r = {AOF_DEL, key, NULL, key_len, 0, 0};
    return flusher_append(f, &r, err);
}

int flusher_append_pexpireat(hdb_flusher *f, const char *key, size_t key_len,
                             int64_t expire_ms, hdb_err *err)
{
    flusher_record r = {AOF_PEXPIREAT, key, NULL, key_len, 0, expire_ms};
    return flusher_append(f, &r, err);
}

int flusher_append_persist(hdb_flusher *f, const char *key, size_t key_len, hdb_err *err)
{
    flusher_record r = {AOF_PERSIST, key, NULL, key_len, 0, 0};
    return flusher_append(f, &r, err);
}

int flusher_append_flushall(hdb_flusher *f, hdb_err *err)
{
    flusher_record r = {AOF_FLUSHALL, NULL, NULL, 0, 0, 0};
    return flusher_append(f, &r, err);
}

int flusher_sync(hdb_flusher *f, hdb_err *err)
{
    if (flusher_refuse_in_child(f, "it cannot be synced from this process", err) != 0)
        return -1;
    pthread_mutex_lock(&f->io_lock);
    int rc = flusher_flush_locked(f, err);
    if (rc != 0 && f->sync_time_ms == 0)
        flusher_withdraw_failed(f);
    pthread_mutex_unlock(&f->io_lock);
    return rc;
}

static void flusher_stop_thread(hdb_flusher *f)
{
    if (!f->has_thread)
        return;
    pthread_mutex_lock(&f->buf_lock);
    f->stop = 1;
    pthread_cond_signal(&f->wake);
    pthread_mutex_unlock(&f->buf_lock);
    pthread_join(f->thread, NULL);
    f->has_thread = 0;
}

int flusher_stop(hdb_flusher *f, hdb_err *err)
{
    /* In a forked child, the pending records are the parent's to write;
     * closing this copy just lets it go (flusher_free). */
    if (flusher_in_forked_child(f))
        return 0;
    if (flusher_sync(f, err) != 0)
        return -1;
    flusher_stop_thread(f);
    /* The thread is gone, so nothing can have been appended meanwhile except
     * by this (the owning) thread, which is here. */
    int fd = f->fd;
    f->fd = -1;
    /* A forked child shares the open file description and with it the
     * lock: let go explicitly, or the file stays locked while it lives. */
    lock_release(fd);
    if (close(fd) != 0) {
        /* The records were written (and synced) above; a file system that
         * reports an error only now (NFS) leaves nothing to retry: the
         * descriptor is gone either way. */
        int e = errno;
        hdb_fail(err, hdb_errno_code(e), "cannot close %s: %s (the store is closed)", f->path,
                 strerror(e));
        return 1;
    }
    return 0;
}

int flusher_release_at_exit(hdb_flusher *f, hdb_err *err)
{
    if (flusher_in_forked_child(f))
        return 0;
    int rc = 0;
    pthread_mutex_lock(&f->io_lock);
    if (!f->exiting) {
        rc = flusher_flush_locked(f, err);
        pthread_mutex_lock(&f->buf_lock);
        f->exiting = 1;
        pthread_mutex_unlock(&f->buf_lock);
        lock_release(f->fd);
    }
    pthread_mutex_unlock(&f->io_lock);
    return rc;
}

void flusher_free(hdb_flusher *f)
{
    if (f == NULL)
        return;
    if (flusher_in_forked_child(f)) {
        /* The parent's thread does not exist here and its locks may have been
         * held at the fork: touch neither, just close this copy of the file.
         * Its buffers may have been in the middle of a swap by the parent's
         * threads: kept, not freed (see thread_keep_after_fork). */
        if (f->fd >= 0)
            close(f->fd);
        if (f->dir_unsynced_fd >= 0)
            close(f->dir_unsynced_fd);
        if (f->switch_dir_fd >= 0)
            close(f->switch_dir_fd);
        thread_keep_after_fork(f);
        return;
    }
    flusher_stop_thread(f);
    if (f->fd >= 0) {
        lock_release(f->fd);
        close(f->fd);
    }
    pthread_mutex_destroy(&f->io_lock);
    pthread_mutex_destroy(&f->buf_lock);
    pthread_cond_destroy(&f->wake);
    hdb_buf_free(&f->pending);
    hdb_buf_free(&f->writing);
    hdb_buf_free(&f->tail);
    hdb_buf_free(&f->switch_last);
    if (f->dir_unsynced_fd >= 0)
        close(f->dir_unsynced_fd);
    free(f->path);
    free(f);
}

/* In a forked child the locks may be held by the parent's thread, which does
 * not exist here (so nothing changes the fields either): read them as they
 * are. */
static int flusher_lock_stats(hdb_flusher *f)
{
    if (flusher_in_forked_child(f))
        return 0;
    pthread_mutex_lock(&f->buf_lock);
    return 1;
}

void flusher_get_stats(hdb_flusher *f, flusher_stats *st)
{
    int locked = flusher_lock_stats(f);
    st->file_bytes = f->file_bytes;
    st->pending_bytes = f->pending.len + f->inflight_bytes;
    st->last_sync_ms = f->last_sync_ms;
    st->errors = f->errors;
    st->backpressure_waits = f->backpressure_waits;
    memcpy(st->last_error, f->last_error, sizeof st->last_error);
    if (locked)
        pthread_mutex_unlock(&f->buf_lock);
}

size_t flusher_memory(hdb_flusher *f)
{
    int locked = flusher_lock_stats(f);
    size_t n = sizeof *f + f->pending.cap + f->writing_cap + f->tail.cap;
    if (locked)
        pthread_mutex_unlock(&f->buf_lock);
    return n;
}

/* ---- the rewrite's side (see hdb_flusher.h) ---- */

/* The most of the tail copied while the writers wait (about 0.1 ms); more is
 * handed over by swapping buffers. */
#define TAIL_COPY_MAX (1024u * 1024u)

int flusher_tail_take(hdb_flusher *f, hdb_buf *out, hdb_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&f->buf_lock);
    if (f->tail_overflowed) {
        rc = hdb_fail(err, HDB_CODE_OUTPACED, "writes outpaced the rewrite (more than %" PRIu64
                      " bytes written meanwhile waited for it)", f->max_pending);
    } else if (f->exiting) {
        rc = hdb_fail(err, HDB_CODE_EXITING, "the process is exiting");
    } else if (!f->tail_on) {
        f->tail_on = 1;
    } else if (f->tail.len <= TAIL_COPY_MAX && f->tail.len <= out->cap - out->len) {
        /* A small tail is copied, so that each buffer keeps its capacity,
         * with its pages mapped: the rewrite's for its batches, the tail
         * for the writers' copies. */
        if (f->tail.len > 0) /* an empty tail may have no buffer at all */
            memcpy(out->data + out->len, f->tail.data, f->tail.len);
        out->len += f->tail.len;
        f->tail.len = 0;
    } else if (out->len == 0) {
        /* A large one is swapped: copying it would hold the writers up for
         * as long as the copy (and the first touch of a grown buffer). */
        hdb_buf_swap(out, &f->tail);
        f->tail.len = 0;
    } else if (hdb_buf_append(out, f->tail.data, f->tail.len) == 0) {
        f->tail.len = 0;
    } else {
        rc = hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
    }
    f->tail_last_len = 0;
    pthread_mutex_unlock(&f->buf_lock);
    return rc;
}

void flusher_tail_stop(hdb_flusher *f)
{
    pthread_mutex_lock(&f->buf_lock);
    f->tail_on = 0;
    f->tail_overflowed = 0;
    f->tail_switching = 0;
    f->tail_last_len = 0;
    hdb_buf_free(&f->tail);
    pthread_mutex_unlock(&f->buf_lock);
}

/* Whether path still names the file the flusher writes: something outside
 * the store may have moved or removed it since the open, and another store
 * may hold the name now. Caller holds io_lock. */
static int flusher_file_still_named(const hdb_flusher *f, const char *path)
{
    /* lstat: a symbolic link put in the file's place (the file moved to
     * another disk, say) is not the file, and must not be renamed over. */
    struct stat held, named;
    return fstat(f->fd, &held) == 0 && lstat(path, &named) == 0 &&
           held.st_dev == named.st_dev && held.st_ino == named.st_ino;
}

int flusher_switch(hdb_flusher *f, int fd, int expiry_format, uint64_t *size_io,
                   const uint64_t file_key[2], uint64_t next_seq, const char *file_path,
                   int (*install)(void *ud, hdb_err *err),
                   void *ud, hdb_err *err)
{
    /* Opened first: a directory that cannot be opened (no read permission)
     * could never be synced, so the new file must not take the name. And
     * once it has taken it, nothing may fail for want of a descriptor
     * before the flusher knows the directory still needs a sync. Kept in
     * the flusher rather than on this thread's stack, so that it stays
     * reachable in a child forked meanwhile. */
    hdb_err why;
    int dir_fd = f->switch_dir_fd = file_open_parent_dir(file_path, &why);
    if (dir_fd < 0) {
        hdb_fail(err, why.code, "%s (the rewritten file could not be made durable there)",
                 why.msg);
        return -1;
    }
    /* io_lock keeps the flusher off the old file from here on. Records the
     * old file received since the rewrite's last take of the tail may have
     * been reported durable (sync_time 0, or a sync): they are taken now and
     * made durable in the new file before it takes the name. What is
     * appended after this take was never written anywhere: it becomes the
     * new file's pending records. */
    pthread_mutex_lock(&f->io_lock);
    uint64_t size = *size_io;
    hdb_buf *last = &f->switch_last;
    int moved = !flusher_file_still_named(f, file_path);
    pthread_mutex_lock(&f->buf_lock);
    int refuse = moved || f->exiting || f->tail_overflowed || !f->tail_on;
    if (moved)
        hdb_fail(err, HDB_CODE_MOVED, "%s is no longer this store's file (it was moved, "
                 "replaced or removed since the store was opened): the rewritten file does "
                 "not take its name", file_path);
    else if (f->exiting)
        hdb_fail(err, HDB_CODE_EXITING, "the process is exiting");
    else if (refuse)
        hdb_fail(err, HDB_CODE_OUTPACED, "writes outpaced the rewrite (more than %" PRIu64
                 " bytes written meanwhile waited for it)", f->max_pending);
    if (!refuse) {
        hdb_buf_swap(last, &f->tail);
        f->tail_last_len = 0;
        f->tail_switching = 1;
    }
    pthread_mutex_unlock(&f->buf_lock);
    int installed = 0;
    if (!refuse) {
        int e = 0;
        const char *what = "write";
        /* The old file became version 4 while the rewrite ran: so does the
         * new one, before it can take the name. */
        char digit = '0' + AOF_VERSION_EXPIRY;
        int upgrade = f->expiry_format && !expiry_format;
        if (upgrade)
            e = file_write_all_at(fd, &digit, 1, AOF_VERSION_OFFSET);
        if (e == 0 && last->len > 0 &&
            (e = file_write_batch(fd, file_key, next_seq, last->data, last->len, &size)) == 0)
            next_seq++;
        if (e == 0 && (upgrade || last->len > 0) && fdatasync(fd) != 0) {
            e = errno;
            what = "fdatasync";
        }
        if (e != 0)
            hdb_fail(err, hdb_errno_code(e), "cannot %s the rewritten file of %s: %s", what,
                     f->path, strerror(e));
        else
            installed = install(ud, err) == 0;
    }
    hdb_buf_free(last);
    /* The name is durable only once its directory is synced. If that fails,
     * the next flush retries it before its batch, and fails (refusing
     * writes, or in synchronous mode the write) while it keeps failing: a
     * write acknowledged in the new file before the name is durable could
     * vanish with it at a power loss. */
    int dir_synced = installed && file_sync_dir(dir_fd) == 0;
    pthread_mutex_lock(&f->buf_lock);
    f->tail_switching = 0;
    f->switch_dir_fd = -1; /* closed below, or kept as dir_unsynced_fd */
    if (!installed) {
        pthread_mutex_unlock(&f->buf_lock);
        pthread_mutex_unlock(&f->io_lock);
        close(dir_fd);
        return -1;
    }
    flusher_drop_dir_fd(&f->dir_unsynced_fd, dir_synced ? -1 : dir_fd);
    if (dir_synced)
        close(dir_fd);
    /* Everything appended before the take above is in the new file; the
     * old file's unwritten records are covered by it, so they are dropped
     * with the old file. */
    /* A small tail is copied into the pending buffer, which keeps its
     * capacity: its pages are mapped already, and a fresh buffer would make
     * the next writes pay the first touch of every page as it grows. A large
     * one is swapped in: the writers wait while this runs. */
    f->pending.len = 0;
    if (f->tail.len <= TAIL_COPY_MAX && f->tail.len <= f->pending.cap) {
        if (f->tail.len > 0)
            memcpy(f->pending.data, f->tail.data, f->tail.len);
        f->pending.len = f->tail.len;
    } else {
        hdb_buf_swap(&f->pending, &f->tail);
    }
    hdb_buf_free(&f->tail);
    f->tail_on = 0;
    f->tail_last_len = 0;
    f->writing.len = 0;
    f->inflight_bytes = 0;
    f->failing = 0;
    f->tail_dirty = 0;
    int old_fd = f->fd;
    f->fd = fd;
    f->file_size = size;
    f->file_bytes = size;
    *size_io = size;
    f->file_key[0] = file_key[0];
    f->file_key[1] = file_key[1];
    f->next_seq = next_seq;
    f->expiry_format = f->expiry_format || expiry_format;
    f->last_sync_ms = wall_clock_ms();
    flusher_wake_if_full(f);
    pthread_mutex_unlock(&f->buf_lock);
    /* Openers waiting for the old file's lock get it, see that it is no
     * longer the file at the path, and retry on the new one, which this
     * store locked before it took the name. */
    lock_release(old_fd);
    close(old_fd);
    pthread_mutex_unlock(&f->io_lock);
    return 0;
}

int flusher_is_synchronous(const hdb_flusher *f)
{
    return f->sync_time_ms == 0;
}

uint64_t flusher_file_size(hdb_flusher *f)
{
    int locked = flusher_lock_stats(f);
    uint64_t n = f->file_bytes + f->pending.len + f->inflight_bytes;
    if (locked)
        pthread_mutex_unlock(&f->buf_lock);
    return n;
}
