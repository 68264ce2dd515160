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
    uint64_t records; /* commands replayed */
    uint64_t batches;
    size_t good_len;  /* bytes of the file made of the header and whole, valid batches */
    size_t torn_bytes; /* bytes after good_len of a final batch cut short */
} aof_load_result;

enum aof_load_status {
    AOF_LOAD_OK = 0,
    AOF_LOAD_NOT_AOF,     /* no hurrahdb header: never write to such a file */
    AOF_LOAD_VERSION,     /* a hurrahdb file of a format this build cannot read */
    AOF_LOAD_DAMAGED,     /* bad record, bad checksum or incomplete batch */
    AOF_LOAD_NOMEM        /* a replay callback failed */
};

/* Checks and replays a whole file held in memory. Each batch is verified
 * against its checksum before any of its records is replayed, so replay
 * stops on a batch boundary. On error, `err` names the cause and the byte
 * offset where the damage starts, and res->good_len says how much of the file
 * was good. A final batch cut short by the end of the file (a crash during
 * an append) is not replayed and not an error: res->torn_bytes says how many
 * bytes it had, and the caller truncates the file to res->good_len.
 * `len` == 0 is a valid empty file (the caller writes the header). */
int aof_load(const char *data, size_t len, const aof_replay *replay,
             aof_load_result *res, char *err, size_t errlen);

#endif
