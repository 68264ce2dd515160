#include "hdb_rewrite.h"
#include "hdb_aof.h"
#include "hdb_buf.h"
#include "hdb_err.h"
#include "hdb_file.h"
#include "hdb_lock.h"
#include "hdb_thread.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* One chunk, read under the lock: at most this many entries, and it stops
 * once this many bytes were copied (a single larger entry is copied
 * whole). The owner waits for at most one chunk. */
#define REWRITE_CHUNK_KEYS 256
#define REWRITE_CHUNK_BYTES (64u << 10)

/* Records go to the new file in batches of about this size. */
#define REWRITE_BATCH_BYTES (1u << 20)

/* After every this many bytes written, the kernel is asked to start writing
 * them to the disk, so that the disk works while the thread formats the
 * next records, and the sync at the end has little left to wait for. (A
 * sync every so often instead made the thread wait for the disk.) */
#define REWRITE_WRITEBACK_BYTES (1u << 20)

/* What one rewrite's thread works with. */
typedef struct rewrite_job {
    hdb_rewriter *rw;
    char *tmp;
    int fd;
    uint64_t offset, advised, seq;
    hdb_buf out;
    hdb_err err;
} rewrite_job;

struct hdb_rewriter {
    hdb_table *table;
    hdb_flusher *aof;
    char *path;
    char *file_path;

    /* `lock` is what the owner's changes of the table and the thread's
     * chunks take; it also guards the fields from `cancel` on. */
    pthread_mutex_t lock;
    /* The owner tells the thread it is waiting for `lock`, so that the
     * thread, which takes it again right after letting it go, lets the
     * owner in first. */
    pthread_mutex_t gate;
    pthread_cond_t gate_cv;
    int owner_waiting;
    pthread_cond_t done_cv;

    int running;        /* the thread exists; the owner's field */
    pthread_t thread;
    unsigned long fork_gen;

    int cancel;
    int finished;       /* the thread is done; set by it */
    int ok;
    char error[256];
    int error_code;
    uint64_t key[2];
    char *codec;        /* the store's codec, written in the new file's header */
    int expiry_format;  /* the new file is of format version 4 */
    uint64_t size;      /* of the new file when it took the name */
    uint64_t keys;
    struct timespec started, ended;
    size_t buf_cap;

    /* The thread's, while it runs. It lives here rather than on the
     * thread's stack so that what it points to stays reachable from the
     * store in a child forked meanwhile, where the thread does not exist
     * (leak checkers follow the store, not a stack nobody runs). */
    rewrite_job job;

    rewrite_stats st;   /* the owner's: updated when a rewrite is reaped */
};

/* ---- the file ---- */

char *rewrite_temp_name(const char *file_path)
{
    size_t len = strlen(file_path) + sizeof REWRITE_SUFFIX;
    char *tmp = malloc(len);
    if (tmp != NULL)
        snprintf(tmp, len, "%s" REWRITE_SUFFIX, file_path);
    return tmp;
}

int rewrite_remove_leftover(const char *tmp, hdb_err *err)
{
    /* Read-only is enough for flock, and opens a leftover whose mode lets
     * nobody write it. */
    int fd = open(tmp, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return 0;
        if (e != ELOOP)
            return hdb_fail(err, hdb_errno_code(e), "cannot open the leftover %s: %s", tmp,
                            strerror(e));
        /* A symbolic link: removing the name touches nothing it points to. */
        if (unlink(tmp) != 0 && (e = errno) != ENOENT)
            return hdb_fail(err, hdb_errno_code(e), "cannot remove %s: %s", tmp, strerror(e));
        return 0;
    }
    /* A crash's leftover is locked by nobody: this store holds its own
     * file's lock, so no rewrite of it is running. A locked one is a live
     * file of somebody else's, never removed. */
    hdb_err why;
    int locked = lock_acquire(fd, tmp, 0, &why);
    if (locked < 0) {
        hdb_fail(err, why.code, "%s, the name of this store's temporary file, is in use: %s",
                 tmp, why.msg);
        close(fd);
        return -1;
    }
    int rc = 0;
    if (locked == 0) {
        int e;
        if (unlink(tmp) != 0 && (e = errno) != ENOENT)
            rc = hdb_fail(err, hdb_errno_code(e), "cannot remove the leftover %s: %s", tmp,
                          strerror(e));
        lock_release(fd);
    }
    close(fd);
    return rc;
}

int rewrite_file_create(const char *file_path, const uint64_t key[2], const char *codec,
                        int expiry_format,
                        char **tmp_out, int *fd_out, hdb_err *err)
{
    /* Handed out at once, so that the caller holds it (reachable from its
     * own structures) during the system calls below. */
    char *tmp = rewrite_temp_name(file_path);
    *tmp_out = tmp;
    if (tmp == NULL)
        return hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory");
    const char *what = "create";
    int e = 0;
    if (rewrite_remove_leftover(tmp, err) != 0) {
        *tmp_out = NULL;
        free(tmp);
        return -1;
    }
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        e = errno;
        goto fail;
    }
    if (lock_acquire(fd, tmp, 0, err) != 0) {
        /* Created a moment ago, with O_EXCL: only another process can have
         * put its own file at the name, or locked this one, since. */
        hdb_fail(err, HDB_CODE_LOCKED, "cannot lock %s: another process replaced or locked it",
                 tmp);
        close(fd);
        unlink(tmp);
        *tmp_out = NULL;
        free(tmp);
        return -1;
    }
    /* The new file takes the old one's owner and permissions: a rewrite
     * run by another user (root, say) must not lock the store's own user
     * out. Only the owner can be refused (giving a file away needs
     * privilege); then the rewrite is refused too. */
    struct stat old;
    if (stat(file_path, &old) != 0) {
        e = errno;
        what = "stat the file for";
    } else if ((old.st_uid != geteuid() || old.st_gid != getegid()) &&
               fchown(fd, old.st_uid, old.st_gid) != 0) {
        e = errno;
        what = "give the owner of the file to";
    } else if (fchmod(fd, old.st_mode & 07777) != 0) {
        e = errno;
        what = "give the permissions of the file to";
    } else {
        char header[AOF_HEADER_MAX + 1];
        size_t header_len = aof_format_header(header, key, codec, expiry_format);
        e = file_write_all_at(fd, header, header_len, 0);
        what = "write";
    }
    if (e != 0) {
        hdb_fail(err, hdb_errno_code(e), "cannot %s %s: %s", what, tmp, strerror(e));
        rewrite_file_discard(fd, tmp);
        *tmp_out = NULL;
        free(tmp);
        return -1;
    }
    *fd_out = fd;
    return 0;
fail:
    hdb_fail(err, hdb_errno_code(e), "cannot %s %s: %s", what, tmp, strerror(e));
    *tmp_out = NULL;
    free(tmp);
    return -1;
}

int rewrite_file_rename(const char *tmp, const char *file_path, hdb_err *err)
{
    if (rename(tmp, file_path) != 0) {
        int e = errno;
        return hdb_fail(err, hdb_errno_code(e), "cannot rename %s to %s: %s", tmp, file_path,
                        strerror(e));
    }
    return 0;
}

void rewrite_file_discard(int fd, const char *tmp)
{
    /* Removed while still locked, so that nobody can be waiting for a lock
     * on a file that is about to have no name; and only if the name is
     * still this file's (never another store's temporary file). */
    struct stat held, named;
    if (fstat(fd, &held) == 0 && stat(tmp, &named) == 0 && held.st_dev == named.st_dev &&
        held.st_ino == named.st_ino)
        unlink(tmp);
    lock_release(fd);
    close(fd);
}

/* ---- the lock shared by the owner and the thread ---- */

/* Counts forks, like the flusher, so that a child never waits for a lock
 * the parent's thread held at the fork. */
static volatile unsigned long rewrite_fork_generation;
static pthread_once_t rewrite_atfork_once = PTHREAD_ONCE_INIT;
static int rewrite_atfork_status;

static void rewrite_on_fork_child(void) { rewrite_fork_generation++; }

static void rewrite_register_atfork(void)
{
    rewrite_atfork_status = pthread_atfork(NULL, NULL, rewrite_on_fork_child);
}

static int rewrite_in_forked_child(const hdb_rewriter *rw)
{
    return rw->fork_gen != rewrite_fork_generation;
}

int rewrite_enter(hdb_rewriter *rw)
{
    if (rw == NULL || !rw->running || rewrite_in_forked_child(rw))
        return 0;
    if (pthread_mutex_trylock(&rw->lock) == 0)
        return 1;
    pthread_mutex_lock(&rw->gate);
    rw->owner_waiting = 1;
    pthread_mutex_unlock(&rw->gate);
    pthread_mutex_lock(&rw->lock);
    pthread_mutex_lock(&rw->gate);
    rw->owner_waiting = 0;
    pthread_cond_signal(&rw->gate_cv);
    pthread_mutex_unlock(&rw->gate);
    return 1;
}

void rewrite_leave(hdb_rewriter *rw)
{
    pthread_mutex_unlock(&rw->lock);
}

/* The thread's side: after a chunk, lets an owner that is waiting for the
 * lock have it before the next chunk. */
static void rewrite_yield_to_owner(hdb_rewriter *rw)
{
    pthread_mutex_lock(&rw->gate);
    while (rw->owner_waiting)
        pthread_cond_wait(&rw->gate_cv, &rw->gate);
    pthread_mutex_unlock(&rw->gate);
}

/* ---- the thread ---- */

/* Copies the next chunk of the table (and first, the tail of records
 * written since the last one) into job->out. Returns 1 when the table has
 * been read to its end, 0 if not, -1 on failure. */
static int rewrite_take_chunk(rewrite_job *job, uint32_t *cursor)
{
    hdb_rewriter *rw = job->rw;
    int rc = 0;
    pthread_mutex_lock(&rw->lock);
    if (rw->cancel)
        rc = hdb_fail(&job->err, HDB_CODE_CANCELLED, "cancelled (the store is closing)");
    else if (flusher_tail_take(rw->aof, &job->out, &job->err) != 0)
        rc = -1;
    size_t start = job->out.len;
    /* Every key the table holds is written, one that has expired but is
     * not reclaimed yet included (a later load drops it): the file then
     * holds what memory holds even if the clock steps back meanwhile. */
    for (int n = 0; rc == 0 && n < REWRITE_CHUNK_KEYS && job->out.len - start < REWRITE_CHUNK_BYTES;
         n++) {
        hdb_entry *e = table_next(rw->table, cursor);
        if (e == NULL) {
            rc = 1;
            break;
        }
        if (aof_append_set_px(&job->out, entry_key(e), e->key_len, entry_val(e), e->val_len,
                              entry_expiry(e)) != 0) {
            rc = hdb_fail(&job->err, HDB_CODE_NO_MEMORY, "out of memory");
            break;
        }
        rw->keys++;
    }
    rw->buf_cap = job->out.cap;
    pthread_mutex_unlock(&rw->lock);
    rewrite_yield_to_owner(rw);
    return rc;
}

/* Writes what job->out holds as a batch. */
static int rewrite_write_out(rewrite_job *job)
{
    if (job->out.len == 0)
        return 0;
    int e = file_write_batch(job->fd, job->rw->key, job->seq, job->out.data, job->out.len,
                             &job->offset);
    if (e != 0)
        return hdb_fail(&job->err, hdb_errno_code(e), "cannot write %s: %s", job->tmp,
                        strerror(e));
    job->seq++;
    job->out.len = 0;
    if (job->offset - job->advised >= REWRITE_WRITEBACK_BYTES) {
        /* On Linux, POSIX_FADV_DONTNEED starts the writeback of the range's
         * dirty pages without waiting for it (and drops only pages already
         * clean, none of these yet). It is advice: where it fails or does
         * nothing, the syncs still make the file durable, only later. */
        int advice_rc = posix_fadvise(job->fd, (off_t)job->advised,
                                      (off_t)(job->offset - job->advised), POSIX_FADV_DONTNEED);
        (void)advice_rc;
        job->advised = job->offset;
    }
    return 0;
}

static int rewrite_sync(rewrite_job *job)
{
    if (fdatasync(job->fd) != 0) {
        int e = errno;
        return hdb_fail(&job->err, hdb_errno_code(e), "cannot fdatasync %s: %s", job->tmp,
                        strerror(e));
    }
    return 0;
}

static int rewrite_install_cb(void *ud, hdb_err *err)
{
    rewrite_job *job = ud;
    return rewrite_file_rename(job->tmp, job->rw->file_path, err);
}

static int rewrite_run(rewrite_job *job)
{
    hdb_rewriter *rw = job->rw;
    if (rewrite_file_create(rw->file_path, rw->key, rw->codec, rw->expiry_format, &job->tmp, &job->fd, &job->err) != 0)
        return -1;
    /* The buffer a batch is built in, sized and touched once, here: grown
     * while a chunk is copied, its fresh pages would be faulted in with the
     * lock held, which the owner's writes wait for (a fault costs
     * microseconds on a virtual machine; a MiB of them, milliseconds). */
    if (hdb_buf_reserve(&job->out, REWRITE_BATCH_BYTES + REWRITE_CHUNK_BYTES) != 0)
        return hdb_fail(&job->err, HDB_CODE_NO_MEMORY, "out of memory");
    memset(job->out.data, 0, job->out.cap);
    /* Counted in stats().memory from now on (the capacity rounds up to a
     * power of two: 2 MiB). */
    pthread_mutex_lock(&rw->lock);
    rw->buf_cap = job->out.cap;
    pthread_mutex_unlock(&rw->lock);
    job->offset = aof_header_len(rw->codec);
    job->seq = 1;
    uint32_t cursor = 0;
    int rc;
    do {
        rc = rewrite_take_chunk(job, &cursor);
        if (rc < 0)
            return -1;
        if ((job->out.len >= REWRITE_BATCH_BYTES || rc == 1) && rewrite_write_out(job) != 0)
            return -1;
    } while (rc == 0);
    if (rewrite_sync(job) != 0)
        return -1;
    /* What was written while the file was synced: a small tail, written and
     * synced again, so that the switch finds little in the flusher's
     * pending records. */
    uint32_t end = cursor;
    if (rewrite_take_chunk(job, &end) < 0 || rewrite_write_out(job) != 0 || rewrite_sync(job) != 0)
        return -1;
    /* In synchronous mode a write call appends its record (copying it into
     * the tail) and then waits for the disk; if the switch took the tail in
     * between, the record would be made durable in the new file while the
     * call, whose flush then fails (a directory that cannot be synced), is
     * refused. Holding the lock of the owner's changes keeps every write
     * call out of the switch: one is either wholly before it or wholly
     * after. (Those calls wait for the disk anyway; with sync_time > 0 no
     * call refuses a record it appended, and writers must not wait.) */
    int hold = flusher_is_synchronous(rw->aof);
    if (hold) {
        pthread_mutex_lock(&rw->lock);
        if (rw->cancel) {
            pthread_mutex_unlock(&rw->lock);
            return hdb_fail(&job->err, HDB_CODE_CANCELLED, "cancelled (the store is closing)");
        }
    }
    rc = flusher_switch(rw->aof, job->fd, rw->expiry_format, &job->offset, rw->key, job->seq, rw->file_path,
                        rewrite_install_cb, job, &job->err);
    if (hold)
        pthread_mutex_unlock(&rw->lock);
    if (rc != 0)
        return -1;
    job->fd = -1; /* the flusher's now */
    return 0;
}

static void *rewrite_thread_main(void *arg)
{
    hdb_rewriter *rw = arg;
    thread_set_name("hdb-rewrite");
    rewrite_job *job = &rw->job;
    memset(job, 0, sizeof *job);
    job->rw = rw;
    job->fd = -1;
    hdb_buf_init(&job->out);
    int rc = rewrite_run(job);
    if (rc != 0) {
        flusher_tail_stop(rw->aof);
        if (job->fd >= 0)
            rewrite_file_discard(job->fd, job->tmp);
    }
    hdb_buf_free(&job->out);
    free(job->tmp);
    job->tmp = NULL;
    pthread_mutex_lock(&rw->lock);
    rw->ok = rc == 0;
    if (rc == 0)
        rw->size = job->offset;
    snprintf(rw->error, sizeof rw->error, "%.*s", (int)sizeof rw->error - 1,
             rc == 0 ? "" : job->err.msg);
    rw->error_code = rc == 0 ? HDB_CODE_NONE : job->err.code;
    clock_gettime(CLOCK_MONOTONIC, &rw->ended);
    rw->buf_cap = 0;
    rw->finished = 1;
    pthread_cond_broadcast(&rw->done_cv);
    pthread_mutex_unlock(&rw->lock);
    return NULL;
}

/* ---- the owner's side ---- */

hdb_rewriter *rewrite_new(hdb_table *t, hdb_flusher *f, const char *path, const char *file_path,
                          const char *codec)
{
    pthread_once(&rewrite_atfork_once, rewrite_register_atfork);
    if (rewrite_atfork_status != 0)
        return NULL;
    hdb_rewriter *rw = calloc(1, sizeof *rw);
    if (rw == NULL)
        return NULL;
    rw->table = t;
    rw->aof = f;
    rw->fork_gen = rewrite_fork_generation;
    rw->path = strdup(path);
    rw->file_path = strdup(file_path);
    rw->codec = strdup(codec);
    int inited = 0;
    if (rw->path != NULL && rw->file_path != NULL && rw->codec != NULL) {
        if (pthread_mutex_init(&rw->lock, NULL) == 0) {
            inited = 1;
            if (pthread_mutex_init(&rw->gate, NULL) == 0) {
                inited = 2;
                if (pthread_cond_init(&rw->gate_cv, NULL) == 0) {
                    inited = 3;
                    if (pthread_cond_init(&rw->done_cv, NULL) == 0)
                        return rw;
                }
            }
        }
    }
    if (inited >= 3)
        pthread_cond_destroy(&rw->gate_cv);
    if (inited >= 2)
        pthread_mutex_destroy(&rw->gate);
    if (inited >= 1)
        pthread_mutex_destroy(&rw->lock);
    free(rw->path);
    free(rw->file_path);
    free(rw->codec);
    free(rw);
    return NULL;
}

static double seconds_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* Joins an ended thread and moves its outcome into the stats. */
static int rewrite_reap(hdb_rewriter *rw)
{
    pthread_join(rw->thread, NULL);
    rw->running = 0;
    /* The thread is gone: its fields can be read without the lock. */
    rw->st.last_seconds = seconds_between(&rw->started, &rw->ended);
    rw->st.last_keys = rw->keys;
    if (rw->ok) {
        rw->st.completed++;
        rw->st.last_status = 1;
        rw->st.last_size = rw->size;
        rw->st.last_error[0] = '\0';
        rw->st.last_error_code = HDB_CODE_NONE;
        return 1;
    }
    rw->st.failed++;
    rw->st.last_status = -1;
    snprintf(rw->st.last_error, sizeof rw->st.last_error, "%s", rw->error);
    rw->st.last_error_code = rw->error_code;
    return -1;
}

int rewrite_poll(hdb_rewriter *rw)
{
    if (rw == NULL || !rw->running || rewrite_in_forked_child(rw))
        return 0;
    pthread_mutex_lock(&rw->lock);
    int finished = rw->finished;
    pthread_mutex_unlock(&rw->lock);
    return finished ? rewrite_reap(rw) : 0;
}

int rewrite_running(const hdb_rewriter *rw)
{
    return rw != NULL && rw->running;
}

int rewrite_start(hdb_rewriter *rw, const uint64_t key[2], hdb_err *err)
{
    rewrite_poll(rw);
    if (rw->running)
        return hdb_fail(err, HDB_CODE_BUSY, "a rewrite of %s is already running", rw->path);
    rw->cancel = 0;
    rw->finished = 0;
    rw->ok = 0;
    rw->error[0] = '\0';
    rw->error_code = HDB_CODE_NONE;
    rw->keys = 0;
    rw->size = 0;
    rw->key[0] = key[0];
    rw->key[1] = key[1];
    rw->expiry_format = flusher_expiry_format(rw->aof) || rw->table->ttl_count > 0;
    clock_gettime(CLOCK_MONOTONIC, &rw->started);
    if (thread_start_quiet(&rw->thread, rewrite_thread_main, rw, "rewrite", err) != 0)
        return -1;
    rw->running = 1;
    return 0;
}

int rewrite_wait(hdb_rewriter *rw, hdb_err *err)
{
    if (rw->running) {
        pthread_mutex_lock(&rw->lock);
        while (!rw->finished)
            pthread_cond_wait(&rw->done_cv, &rw->lock);
        pthread_mutex_unlock(&rw->lock);
        rewrite_reap(rw);
    }
    if (rw->st.last_status < 0)
        return hdb_fail(err, rw->st.last_error_code, "rewrite of %s failed: %s", rw->path,
                        rw->st.last_error);
    return 0;
}

void rewrite_cancel(hdb_rewriter *rw)
{
    if (rw == NULL || !rw->running || rewrite_in_forked_child(rw))
        return;
    pthread_mutex_lock(&rw->lock);
    rw->cancel = 1;
    pthread_mutex_unlock(&rw->lock);
    rewrite_wait(rw, NULL);
}

void rewrite_free(hdb_rewriter *rw)
{
    if (rw == NULL)
        return;
    if (rewrite_in_forked_child(rw)) {
        /* The parent's thread does not exist here, its locks may have been
         * held at the fork and its buffers (rw->job) may have been in the
         * middle of a change: touch none of them, keep them. */
        thread_keep_after_fork(rw);
        return;
    }
    rewrite_cancel(rw);
    pthread_cond_destroy(&rw->done_cv);
    pthread_cond_destroy(&rw->gate_cv);
    pthread_mutex_destroy(&rw->gate);
    pthread_mutex_destroy(&rw->lock);
    free(rw->path);
    free(rw->file_path);
    free(rw->codec);
    free(rw);
}

size_t rewrite_memory_entered(const hdb_rewriter *rw)
{
    return sizeof *rw + (rw->running ? rw->buf_cap : 0);
}

void rewrite_get_stats(hdb_rewriter *rw, rewrite_stats *st)
{
    *st = rw->st;
    st->running = rw->running;
    st->memory = sizeof *rw;
    if (rw->running && !rewrite_in_forked_child(rw)) {
        pthread_mutex_lock(&rw->lock);
        st->memory += rw->buf_cap;
        pthread_mutex_unlock(&rw->lock);
    }
}
