/*
 * hurrahdb: the storage engine.
 *
 * A store maps binary-safe byte-string keys to byte-string values in memory,
 * optionally backed by an append-only file (AOF) that is replayed at open and
 * written by a flusher (see hdb_flusher.h). The engine knows nothing of Lua.
 *
 * Error contract: functions that can fail return HDB_OK or HDB_ERR and, on
 * HDB_ERR, fill the caller's hdb_err: a message naming the cause and a code
 * saying what kind of failure it is (see enum hdb_code). A failed call leaves
 * the store as it was, in memory and on disk.
 * Threads: a store is used by one thread at a time (its owner); the flusher's
 * own thread is internal.
 */
#ifndef HURRAHDB_H
#define HURRAHDB_H

#include <stddef.h>
#include <stdint.h>

#define HDB_VERSION "0.4.0"

#define HDB_OK 0
#define HDB_ERR (-1)
#define HDB_ERR_CLOSED (-2) /* hdb_close: closed all the same (see there) */

/* Room for an error's message; longer messages are truncated. */
#define HDB_ERRLEN 512

/* What kind of failure an error is. Programs decide what to do by the code
 * (its name, from hdb_code_name, is what the Lua binding returns), never by
 * the message, whose wording may change. A new failure takes the code that
 * tells its caller what to do about it. */
enum hdb_code {
    HDB_CODE_NONE = 0,
    HDB_CODE_IO,          /* a system call on the file or its directory failed
                             (disk full included) */
    HDB_CODE_NO_MEMORY,   /* an allocation failed */
    HDB_CODE_LOCKED,      /* another process holds the file */
    HDB_CODE_ALREADY_OPEN, /* this process holds the file already */
    HDB_CODE_DAMAGED,     /* the file fails its checks at open */
    HDB_CODE_FORKED,      /* refused in a child forked after the open */
    HDB_CODE_BUSY,        /* a rewrite is already running; an incr kept being overtaken */
    HDB_CODE_MEMORY_ONLY, /* the operation needs a file */
    HDB_CODE_OUTPACED,    /* writes outpaced a rewrite (max_pending) */
    HDB_CODE_MOVED,       /* the file was moved, replaced or removed from outside */
    HDB_CODE_CANCELLED,   /* a rewrite cancelled by close */
    HDB_CODE_TOO_LARGE,   /* a key, value or file past a size limit */
    HDB_CODE_INVALID,     /* an argument refused at open (a path that cannot
                             be a store's file) */
    HDB_CODE_EXITING,     /* the process is exiting: its stores' files were
                             written and released */
    HDB_CODE_VALUE,       /* the binding: a value its codec cannot encode or decode */
    HDB_CODE_CODEC,       /* the binding: the file was written with another codec */
    HDB_CODE_NOT_FOUND,   /* the binding: incr of an absent key without init */
    HDB_CODE_NOT_A_NUMBER, /* the binding: incr of a value that is not a number */
    HDB_CODE_OVERFLOW     /* the binding: incr past what the number type holds exactly */
};

typedef struct hdb_err {
    int code;             /* an enum hdb_code */
    char msg[HDB_ERRLEN];
} hdb_err;

/* The stable name of a code ("io", "no memory", ...); "unknown" for a value
 * that is none of them. */
const char *hdb_code_name(int code);

/* Fills e (if not NULL: a caller that does not want the message passes
 * NULL) with code and the formatted message. Returns HDB_ERR, so that a
 * failure reads `return hdb_fail(err, HDB_CODE_IO, ...)`. */
int hdb_fail(hdb_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

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
    const char *codec;     /* what the values are: NULL or "json" for JSON, else
                              the name of the codec that makes them (1 to 64 of
                              A-Z a-z 0-9 . _ - +), recorded in the file's header;
                              a file of another codec is refused (HDB_CODE_CODEC) */
    unsigned sync_time_ms; /* 0: every write is written and synced before it returns */
    int use_fsync;         /* 0: write to the OS, never fdatasync */
    int repair;            /* damage mid-file: keep the good prefix, move the rest aside */
    unsigned lock_timeout_ms; /* how long to wait for another store to release the file */
    uint64_t max_pending;  /* bytes appended but not written before set waits for the disk */
    unsigned auto_rewrite_percentage; /* rewrite when the file grew by this much over its
                                         size after the last rewrite or open; 0: never */
    uint64_t auto_rewrite_min_size;   /* ... and is at least this large */
    uint64_t max_memory;   /* bound of hdb_stats' data_bytes; 0: none */
    int eviction;          /* HDB_EVICT_*: what a write that would pass it does */
} hdb_options;

/* What a write that would pass max_memory does (expired keys are always
 * reclaimed first): */
enum {
    HDB_EVICT_NONE = 0,    /* fails with HDB_CODE_NO_MEMORY, changing nothing */
    HDB_EVICT_LRU,         /* evicts the least recently used of a few sampled
                              keys (each entry keeps a 4-byte stamp), repeatedly */
    HDB_EVICT_VOLATILE_TTL /* evicts the key nearest to expiry, then fails when
                              no key has an expiry */
};

typedef struct hdb_stats {
    uint64_t keys;              /* held in memory: expired keys not yet reclaimed
                                   are included (hdb_count has the live ones) */
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
    uint64_t expired_keys;      /* expired keys reclaimed since the open */
    uint64_t keys_with_ttl;     /* keys that have an expiry */
    uint64_t evicted_keys;      /* evicted for max_memory since the open */
    uint64_t max_memory;        /* the option; 0: none */
    uint64_t data_bytes;        /* what max_memory bounds: the keys' memory (entries,
                                   buckets, slots, expiry heap), no buffers */
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
 * process calls exit(). Returns NULL with err filled: HDB_CODE_LOCKED or
 * HDB_CODE_ALREADY_OPEN (the file is held), HDB_CODE_DAMAGED, HDB_CODE_INVALID
 * (a path that cannot be a store's file), HDB_CODE_IO, HDB_CODE_NO_MEMORY,
 * HDB_CODE_TOO_LARGE (a file larger than this platform can address). */
hdb_store *hdb_open(const hdb_options *opt, hdb_err *err);

/* Flushes and syncs pending records, stops the flusher and closes the file.
 * On failure (the disk refuses the last records) returns HDB_ERR and the
 * store stays open with nothing lost, so the caller may retry. Returns
 * HDB_ERR_CLOSED, with err filled, if everything was written but closing
 * the file reported an error (NFS): the store is closed, nothing to retry. */
int hdb_close(hdb_store *s, hdb_err *err);

/* Frees the store; call after hdb_close succeeded, or to abandon it. */
void hdb_free(hdb_store *s);

/* Fails with HDB_CODE_TOO_LARGE (past HDB_MAX_ITEM_LEN), HDB_CODE_NO_MEMORY,
 * HDB_CODE_FORKED, HDB_CODE_EXITING, or HDB_CODE_IO (the disk refused this
 * write, or an earlier one whose failure still stands). */
int hdb_set(hdb_store *s, const char *key, size_t key_len,
            const char *val, size_t val_len, hdb_err *err);

/* What hdb_set_ex did (bits of *done). */
#define HDB_DONE_WRITTEN 1 /* the key was written */
#define HDB_DONE_EVICTED 2 /* ... and other keys were evicted to make room */

/* Conditions and options of hdb_set_ex. */
#define HDB_SET_IF_ABSENT 1  /* only if the key is absent (or expired) */
#define HDB_SET_IF_PRESENT 2 /* only if it is present */
#define HDB_SET_KEEP_TTL 4   /* with expire_ms 0: keep the key's expiry */
#define HDB_SET_TTL 8        /* expire_ms is a time to live in ms, counted
                                from the call's time rounded up (as
                                hdb_clock_ms() + expire_ms), read once */

/* hdb_set with an expiry and conditions. expire_ms: Unix time in ms (the
 * wall clock) when the key expires, or 0 for none (the key's expiry, if it
 * had one, is removed, unless HDB_SET_KEEP_TTL). A time already past sets
 * and expires the key at once: it is deleted. *done: HDB_DONE_* bits, 0
 * when a condition kept the write from happening (nothing was written).
 * Under max_memory, evicts other keys (each written as a DEL) or, with
 * eviction none or nothing left to evict, fails with HDB_CODE_NO_MEMORY,
 * "no memory". Fails as hdb_set
 * does, and with HDB_CODE_INVALID for an expiry past 2^53 ms. An
 * expired key is absent to every call; a call that reads or writes a key
 * also reclaims up to 16 expired keys. */
int hdb_set_ex(hdb_store *s, const char *key, size_t key_len, const char *val, size_t val_len,
               int64_t expire_ms, int flags, int *done, hdb_err *err);

/* Gives a present key the expiry expire_ms (Unix ms; a time already past
 * deletes the key). *done: HDB_DONE_WRITTEN if the key was there, with
 * HDB_DONE_EVICTED if keys were evicted for the room its expiry takes. */
int hdb_expire_at(hdb_store *s, const char *key, size_t key_len, int64_t expire_ms,
                  int *done, hdb_err *err);

/* Removes the key's expiry; *removed tells whether it had one. */
int hdb_persist(hdb_store *s, const char *key, size_t key_len, int *removed, hdb_err *err);

/* Deletes every key (written as FLUSHALL). */
int hdb_flush_all(hdb_store *s, hdb_err *err);

/* The clock of expiries (Unix time in ms, the wall clock), rounded up: an
 * expiry of hdb_clock_ms() + ttl_ms is never reached before ttl_ms have
 * passed, as a key expires once the time rounded down reaches it. */
int64_t hdb_clock_ms(void);

/* Reclaims up to max (0: every) expired keys; returns how many. */
uint64_t hdb_flush_expired(hdb_store *s, uint64_t max);

/* *existed tells whether the key was there; deleting a missing key is not an
 * error and writes nothing. Fails as hdb_set does. */
int hdb_delete(hdb_store *s, const char *key, size_t key_len, int *existed,
               hdb_err *err);

/* Returns 1 and points *val into the store (valid until the next call on
 * the store but hdb_next), or 0 if the key is absent or expired. hdb_get_ex
 * also gives the key's expiry (Unix ms, 0 if none). */
int hdb_get(hdb_store *s, const char *key, size_t key_len,
            const char **val, size_t *val_len);
int hdb_get_ex(hdb_store *s, const char *key, size_t key_len, const char **val,
               size_t *val_len, int64_t *expire_ms);

/* The keys, once every expired one is reclaimed (the work is proportional
 * to their number). */
uint64_t hdb_count(hdb_store *s);

/* A number that changes whenever any key is written, removed (expired and
 * evicted keys included) or has its expiry changed: equal before and after
 * some other code ran, the store's contents did not change meanwhile. */
uint64_t hdb_changes(const hdb_store *s);

/* Writes and syncs every pending record now. A memory-only store succeeds.
 * Fails with HDB_CODE_IO, or HDB_CODE_FORKED in a forked child. */
int hdb_sync(hdb_store *s, hdb_err *err);

void hdb_get_stats(hdb_store *s, hdb_stats *st);

/* Rewrites the file in the background: one SET per live key (see
 * hdb_rewrite.h). Returns at once (wait == 0) or when it ended. Fails when
 * the store is memory-only, one is running (wait == 0), the process is a
 * forked child, or (wait) the rewrite failed: the store then goes on with
 * its old file. With wait and a rewrite already running, waits for that
 * one. Codes: HDB_CODE_MEMORY_ONLY, HDB_CODE_BUSY, HDB_CODE_FORKED; a failed
 * rewrite's own (HDB_CODE_IO, HDB_CODE_OUTPACED, HDB_CODE_MOVED,
 * HDB_CODE_LOCKED for its temporary file, HDB_CODE_NO_MEMORY). */
int hdb_rewrite(hdb_store *s, int wait, hdb_err *err);

/* The file of the store, or NULL if memory only. */
const char *hdb_path(const hdb_store *s);

/* Iteration: start with *cursor = 0; returns 1 with the next pair (pointers
 * valid until the next change of the store) or 0 at the end; expired keys
 * are skipped. The store may be
 * changed between calls: every key present for the whole iteration is
 * returned exactly once; keys added meanwhile may or may not be returned. */
int hdb_next(const hdb_store *s, uint32_t *cursor, const char **key,
             size_t *key_len, const char **val, size_t *val_len);

#endif
