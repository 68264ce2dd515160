/*
 * hurrahdb: the storage engine.
 *
 * A store maps binary-safe byte-string keys to byte-string values in memory,
 * optionally backed by an append-only file (AOF) that is replayed at open and
 * written by a flusher (see hdb_flusher.h). The engine knows nothing of Lua.
 *
 * Error contract: functions that can fail return HDB_OK or HDB_ERR and, on
 * HDB_ERR, write a message naming the cause into the caller's buffer. A failed
 * call leaves the store as it was, in memory and on disk.
 * Threads: a store is used by one thread at a time (its owner); the flusher's
 * own thread is internal.
 */
#ifndef HURRAHDB_H
#define HURRAHDB_H

#include <stddef.h>
#include <stdint.h>

#define HDB_VERSION "0.3.0"

#define HDB_OK 0
#define HDB_ERR (-1)
#define HDB_ERR_CLOSED (-2) /* hdb_close: closed all the same (see there) */

/* Room callers should give error buffers; longer messages are truncated. */
#define HDB_ERRLEN 512

/* Largest key or value length accepted; also the limit of Redis bulk strings,
 * so that every file hurrahdb writes can be loaded by Redis. */
#define HDB_MAX_ITEM_LEN (512u * 1024u * 1024u)

#define HDB_DEFAULT_SYNC_TIME_MS 1000u
#define HDB_DEFAULT_MAX_PENDING (64u * 1024u * 1024u)
#define HDB_DEFAULT_AUTO_REWRITE_PERCENTAGE 100u
#define HDB_DEFAULT_AUTO_REWRITE_MIN_SIZE (64u * 1024u * 1024u)

typedef struct hdb_store hdb_store;

typedef struct hdb_options {
    const char *path;      /* NULL: memory only */
    unsigned sync_time_ms; /* 0: every write is written and synced before it returns */
    int use_fsync;         /* 0: write to the OS, never fdatasync */
    int repair;            /* damage mid-file: keep the good prefix, move the rest aside */
    unsigned lock_timeout_ms; /* how long to wait for another store to release the file */
    uint64_t max_pending;  /* bytes appended but not written before set waits for the disk */
    unsigned auto_rewrite_percentage; /* rewrite when the file grew by this much over its
                                         size after the last rewrite or open; 0: never */
    uint64_t auto_rewrite_min_size;   /* ... and is at least this large */
} hdb_options;

typedef struct hdb_stats {
    uint64_t keys;
    uint64_t memory_bytes;      /* held by the table and the AOF buffers */
    uint64_t aof_bytes;         /* file size written so far */
    uint64_t aof_pending_bytes; /* appended, not yet written and synced */
    int64_t last_sync_ms;       /* Unix time in ms of the last completed flush; 0 if none */
    uint64_t loaded_records;    /* records replayed at open */
    uint64_t dropped_bytes;     /* bytes of a torn final batch cut off at open */
    uint64_t errors;            /* failed writes or syncs so far */
    uint64_t backpressure_waits; /* writes that waited for the disk (max_pending) */
    char last_error[256];       /* "" if none */
    int rewrite_running;
    uint64_t rewrites;          /* rewrites that replaced the file */
    uint64_t rewrites_failed;   /* rewrites that failed or were cancelled */
    int last_rewrite_status;    /* 0: none yet; 1: the last one succeeded; -1: it failed */
    double last_rewrite_seconds;
    char last_rewrite_error[256];
    uint64_t rewrite_base_bytes; /* file size after the last rewrite or the open: what
                                    automatic rewrites measure growth against */
    uint64_t live_bytes;        /* about what a rewrite now would write */
    const char *warning;        /* what the open dropped or repaired; "" if nothing
                                   (points into the store; valid until it is freed) */
} hdb_stats;

/* Opens a store. With a path, creates the file (mode 0600, directory synced;
 * a symbolic link to a missing file creates its target) if missing, else
 * checks and replays it. What follows the last good batch is cut off the
 * file: an append that provably never finished is dropped; any other bad
 * bytes are first copied to a side file. A bad batch followed by good ones
 * fails the open, unless opt->repair, which keeps the batches before it and
 * moves the rest to a side file. Each repair is described in the stats'
 * warning. A file of format version 1 is rewritten in the current format.
 * Until closed, the store's pending records are also written when the
 * process calls exit(). Returns NULL with err filled. */
hdb_store *hdb_open(const hdb_options *opt, char *err, size_t errlen);

/* Flushes and syncs pending records, stops the flusher and closes the file.
 * On failure (the disk refuses the last records) returns HDB_ERR and the
 * store stays open with nothing lost, so the caller may retry. Returns
 * HDB_ERR_CLOSED, with err filled, if everything was written but closing
 * the file reported an error (NFS): the store is closed, nothing to retry. */
int hdb_close(hdb_store *s, char *err, size_t errlen);

/* Frees the store; call after hdb_close succeeded, or to abandon it. */
void hdb_free(hdb_store *s);

int hdb_set(hdb_store *s, const char *key, size_t key_len,
            const char *val, size_t val_len, char *err, size_t errlen);

/* *existed tells whether the key was there; deleting a missing key is not an
 * error and writes nothing. */
int hdb_delete(hdb_store *s, const char *key, size_t key_len, int *existed,
               char *err, size_t errlen);

/* Returns 1 and points *val into the store (valid until the next change of
 * the store), or 0 if the key is absent. */
int hdb_get(hdb_store *s, const char *key, size_t key_len,
            const char **val, size_t *val_len);

uint64_t hdb_count(const hdb_store *s);

/* Writes and syncs every pending record now. A memory-only store succeeds. */
int hdb_sync(hdb_store *s, char *err, size_t errlen);

void hdb_get_stats(hdb_store *s, hdb_stats *st);

/* Rewrites the file in the background: one SET per live key (see
 * hdb_rewrite.h). Returns at once (wait == 0) or when it ended. Fails when
 * the store is memory-only, one is running (wait == 0), the process is a
 * forked child, or (wait) the rewrite failed: the store then goes on with
 * its old file. With wait and a rewrite already running, waits for that
 * one. */
int hdb_rewrite(hdb_store *s, int wait, char *err, size_t errlen);

/* The file of the store, or NULL if memory only. */
const char *hdb_path(const hdb_store *s);

/* Iteration: start with *cursor = 0; returns 1 with the next pair (pointers
 * valid until the next change of the store) or 0 at the end. The store may be
 * changed between calls: every key present for the whole iteration is
 * returned exactly once; keys added meanwhile may or may not be returned. */
int hdb_next(const hdb_store *s, uint32_t *cursor, const char **key,
             size_t *key_len, const char **val, size_t *val_len);

#endif
