/*
 * hdb_aof: the append-only file format (see doc/aof-format.md).
 *
 * A file is a header annotation line, then batches. A batch is one or more
 * RESP commands (SET key json / DEL key) closed by an annotation line that
 * gives the batch's length and CRC-32C. Redis skips lines starting with '#',
 * so the same file loads into Redis 7 unchanged.
 * This unit only formats and parses bytes; it does no I/O.
 */
#ifndef HDB_AOF_H
#define HDB_AOF_H

#include <stddef.h>
#include <stdint.h>

#include "hdb_buf.h"

#define AOF_FORMAT_VERSION 1
#define AOF_HEADER "#hurrahdb aof 1\r\n"
#define AOF_HEADER_LEN (sizeof(AOF_HEADER) - 1)
#define AOF_TRAILER_MAX 64

/* Appends one RESP command to b. Return 0, or -1 on ENOMEM with b unchanged. */
int aof_append_set(hdb_buf *b, const char *key, size_t key_len,
                   const char *val, size_t val_len);
int aof_append_del(hdb_buf *b, const char *key, size_t key_len);

/* Number of bytes aof_append_set would append. */
size_t aof_set_record_len(size_t key_len, size_t val_len);

/* Writes the closing line of a batch made of `len` bytes at `batch` into out
 * (AOF_TRAILER_MAX bytes) and returns its length. */
size_t aof_format_trailer(char *out, const char *batch, size_t len);

typedef struct aof_replay {
    void *ud;
    /* Each returns 0, or -1 to stop the load (out of memory). */
    int (*on_set)(void *ud, const char *key, size_t key_len,
                  const char *val, size_t val_len);
    int (*on_del)(void *ud, const char *key, size_t key_len);
} aof_replay;

typedef struct aof_load_result {
    uint64_t records;  /* commands replayed */
    uint64_t batches;
    size_t good_len;   /* bytes of the file made of the header and whole, valid batches */
    size_t torn_bytes; /* bytes after good_len of a bad final batch */
    size_t damage_at;  /* with AOF_LOAD_DAMAGED: where the bad batch starts */
} aof_load_result;

enum aof_load_status {
    AOF_LOAD_OK = 0,
    AOF_LOAD_NOT_AOF,     /* no hurrahdb header: never write to such a file */
    AOF_LOAD_VERSION,     /* a hurrahdb file of a format this build cannot read */
    AOF_LOAD_DAMAGED,     /* a bad batch followed by good ones */
    AOF_LOAD_NOMEM        /* a replay callback failed */
};

/* Checks and replays a whole file held in memory. Each batch is verified
 * against its checksum before any of its records is replayed, so replay
 * stops on a batch boundary.
 * A bad batch (cut short, unparsable, or failing its checksum) with no good
 * batch after it is the torn end of an interrupted append: it is not
 * replayed, the result is AOF_LOAD_OK, and res->torn_bytes says how long it
 * was (the caller truncates the file to res->good_len). A bad batch followed
 * by a good one is damage: AOF_LOAD_DAMAGED, with everything before
 * res->good_len (== res->damage_at) replayed and err naming the offset.
 * `len` == 0 is a valid empty file (the caller writes the header). */
int aof_load(const char *data, size_t len, const aof_replay *replay,
             aof_load_result *res, char *err, size_t errlen);

#endif
