/*
 * hdb_check: reads a store's file and reports what it holds, without
 * opening the store: no lock is taken and nothing is written, so it works
 * on a file another process has open (it sees the batches written so far).
 * What `hurrahdb check` and `hurrahdb stats` print.
 */
#ifndef HDB_CHECK_H
#define HDB_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "hdb_aof.h"
#include "hurrahdb.h"

/* The state of the bytes after the last good batch. */
enum check_tail {
    CHECK_TAIL_NONE = 0,
    CHECK_TAIL_TORN,        /* an append that never finished: an open drops it */
    CHECK_TAIL_TORN_HEADER, /* a header cut short: an open writes it again */
    CHECK_TAIL_BAD          /* bytes that are no valid batch, none after them: an open
                               moves them to a side file */
};

typedef struct hdb_check_report {
    int version;            /* the file's format version; 0 for an empty file */
    char codec[AOF_CODEC_NAME_MAX + 1]; /* the codec its header names; "" for JSON */
    uint64_t file_bytes;
    uint64_t batches;
    uint64_t records;       /* commands in the good batches */
    uint64_t set_records, del_records, expire_records, persist_records, flushall_records;
    /* The keys an open would hold (expired ones left out), those of them
     * with an expiry, and the keys whose expiry has passed (an open drops
     * them). */
    uint64_t keys, keys_with_ttl, expired_keys;
    /* live_bytes: what a rewrite would write for the keys (one SET each,
     * with PXAT for those with an expiry); dead_bytes: the rest of the
     * good batches' bytes (records overwritten or deleted, framing). */
    uint64_t live_bytes, dead_bytes;
    uint64_t good_len;      /* bytes of the header and the good batches */
    enum check_tail tail;
    uint64_t tail_bytes;
    int damaged;            /* a bad batch with a good one after it: an open
                               refuses the file (repair moves the rest aside) */
    uint64_t damage_at;     /* where the first bad batch starts */
    char problem[HDB_ERRLEN]; /* what is wrong at the tail or the damage, if anything */
    int64_t now_ms;         /* the time expiries were compared with (Unix ms) */
} hdb_check_report;

/* A file read as hdb_check_file reads it, kept open for its keys. */
typedef struct hdb_reader hdb_reader;

/* Reads the file at path (a regular file) and fills the reader's report
 * (hdb_reader_report). Returns NULL with err filled when the file cannot be
 * read as a store's file: HDB_CODE_IO (cannot open or read it),
 * HDB_CODE_INVALID (not a regular file), HDB_CODE_DAMAGED (not a hurrahdb
 * file, or of a version this build does not read), HDB_CODE_NO_MEMORY,
 * HDB_CODE_TOO_LARGE; damage and tails are reported, not failures. now_ms
 * is the time expiries are compared with (Unix ms). Memory: the file's
 * mapping, and 100 to 200 bytes per distinct key. The time is linear in the
 * file's size, whatever its content (a FLUSHALL costs O(1)). */
hdb_reader *hdb_reader_open(const char *path, int64_t now_ms, hdb_err *err);

const hdb_check_report *hdb_reader_report(const hdb_reader *r);

/* The next key an open would hold (expired ones left out), from *cursor
 * (0 to start): its bytes, its value's stored text, its expiry (Unix ms, 0
 * for none). They point into the reader, valid until it is closed. Returns
 * 0 when there are no more. */
int hdb_reader_next(const hdb_reader *r, size_t *cursor, const char **key, size_t *key_len,
                    const char **val, size_t *val_len, int64_t *expire_ms);

void hdb_reader_close(hdb_reader *r);

/* hdb_reader_open and its report, the reader closed at once. */
int hdb_check_file(const char *path, int64_t now_ms, hdb_check_report *report, hdb_err *err);

#endif
