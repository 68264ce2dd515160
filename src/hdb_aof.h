/*
 * hdb_aof: the append-only file format (see doc/aof-format.md).
 *
 * Version 2, written by this build: a header line carrying the file's random
 * 128-bit key (and a checksum of it, since one changed digit would make every
 * tag fail and the whole file look like junk), then batches. A batch is a line announcing it (sequence
 * number, length, CRC-32C of its records, and a SipHash-2-4 tag of those
 * three under the file's key), then its RESP commands (SET key json / DEL
 * key). Redis skips lines starting with '#', so the file loads into Redis 7
 * unchanged.
 * Why the announcing line comes first and is tagged: the loader walks the
 * file from line to line by the lengths they give and never searches the
 * records for framing, so keys and values (which users control) cannot pose
 * as framing, and the walk is linear in the file. A line that fails its tag
 * is not one this file's writer wrote; the sequence numbers show a missing,
 * repeated or reordered batch; a batch whose line is intact but whose bytes
 * run past the end of the file is provably an append that never finished.
 * Version 1 (hurrahdb 0.2.0: a checksum line after each batch) is still read.
 * This unit only formats and parses bytes; it does no I/O.
 */
#ifndef HDB_AOF_H
#define HDB_AOF_H

#include <stddef.h>
#include <stdint.h>

#include "hdb_buf.h"
#include "hurrahdb.h"

#define AOF_FORMAT_VERSION 2
/* The version of a file that holds (or may hold) expiries or FLUSHALL:
 * version 2 or 3 with more kinds of record. A file becomes version 4 in
 * place (one byte of its header, at AOF_VERSION_OFFSET) before the first
 * such record is written to it, so that older builds refuse it as newer
 * instead of taking those records for damage. */
#define AOF_VERSION_EXPIRY 4
#define AOF_VERSION_OFFSET 14
/* "#hurrahdb aof 2 " + 32 hex digits of the key + " " + 8 hex digits of
 * their CRC-32C + CRLF */
#define AOF_HEADER_LEN 59
/* A codec's name in the header (see doc/aof-format.md): 1 to 64 bytes of
 * A-Z a-z 0-9 . _ - +, never "json" (JSON values carry no name). */
#define AOF_CODEC_NAME_MAX 64
/* The longest header: " codec " + the name + " " + 8 hex digits more. */
#define AOF_HEADER_MAX (AOF_HEADER_LEN + 7 + AOF_CODEC_NAME_MAX + 1 + 8)
/* Room for a batch's announcing line: "#hdb <seq> <len> <crc8> <tag16>\r\n" */
#define AOF_BEGIN_MAX 80

/* The latest expiry a file may hold (Unix ms): 2^53, far beyond any
 * clock, and every such time is exact in a double. */
#define AOF_EXPIRE_MAX_MS (INT64_C(1) << 53)

/* Appends one RESP command to b. Return 0, or -1 on ENOMEM with b unchanged.
 * aof_append_set_px writes `SET key val PXAT ms` (expire_ms > 0, Unix ms)
 * or, with expire_ms 0, a plain SET. */
int aof_append_set(hdb_buf *b, const char *key, size_t key_len,
                   const char *val, size_t val_len);
int aof_append_set_px(hdb_buf *b, const char *key, size_t key_len,
                      const char *val, size_t val_len, int64_t expire_ms);
int aof_append_del(hdb_buf *b, const char *key, size_t key_len);
int aof_append_pexpireat(hdb_buf *b, const char *key, size_t key_len, int64_t expire_ms);
int aof_append_persist(hdb_buf *b, const char *key, size_t key_len);
int aof_append_flushall(hdb_buf *b);

/* Number of bytes aof_append_set would append. */
size_t aof_set_record_len(size_t key_len, size_t val_len);

/* ... and aof_append_set_px. */
size_t aof_set_px_record_len(size_t key_len, size_t val_len, int64_t expire_ms);

/* Whether name (len bytes) may name a codec in a header. */
int aof_codec_name_valid(const char *name, size_t len);

/* Whether codec names JSON values: NULL, "" or "json". */
int aof_codec_is_json(const char *codec);

/* The length of the header aof_format_header writes for codec. */
size_t aof_header_len(const char *codec);

/* Writes the header of a new file with the given key and codec (JSON: see
 * aof_codec_is_json; else a valid name) into out (AOF_HEADER_MAX + 1 bytes,
 * NUL-terminated); returns its length. With `expiry`, the header is of
 * version 4 (AOF_VERSION_EXPIRY); else of version 2 (JSON) or 3. */
size_t aof_format_header(char *out, const uint64_t key[2], const char *codec, int expiry);

/* Writes the line announcing batch number `seq`, made of the `len` bytes of
 * records at `records`, into out (AOF_BEGIN_MAX bytes); returns its length. */
size_t aof_format_begin(char *out, const uint64_t key[2], uint64_t seq,
                        const char *records, size_t len);

/* The commands a file holds. */
enum aof_kind {
    AOF_SET = 0,   /* SET key val [PXAT ms] */
    AOF_DEL,       /* DEL key */
    AOF_PEXPIREAT, /* PEXPIREAT key ms (version 4) */
    AOF_PERSIST,   /* PERSIST key (version 4) */
    AOF_FLUSHALL   /* FLUSHALL (version 4) */
};

/* One command of a file, pointing into the caller's bytes. */
typedef struct aof_record {
    int kind;                  /* an enum aof_kind */
    const char *key, *val;     /* val: NULL but for a SET; key: NULL for FLUSHALL */
    size_t key_len, val_len;
    int64_t expire_ms;         /* a SET's PXAT (0: none), a PEXPIREAT's time */
} aof_record;

/* Records reach the replay in groups of up to this many, so that it can
 * start fetching the memory of a whole group before it applies the first. */
#define AOF_REPLAY_GROUP 16

typedef struct aof_replay {
    void *ud;
    /* Applies n records (1 <= n <= AOF_REPLAY_GROUP), in order. Returns n,
     * or the number applied before one failed (out of memory), which stops
     * the load. */
    size_t (*apply)(void *ud, const aof_record *r, size_t n);
    /* Optional (may be NULL): called once, before the first record is
     * replayed, with the number of SETs the replay holds (an upper bound of
     * the keys it leaves). */
    void (*reserve)(void *ud, uint64_t set_records);
    /* The codec of the caller's values (see aof_codec_is_json): a file whose
     * header names another is refused before anything is replayed... */
    const char *codec;
    /* ... unless any_codec: a reader of the file's framing alone. */
    int any_codec;
} aof_replay;

/* What follows the last good batch of a file that otherwise loaded. */
enum aof_tail {
    AOF_TAIL_NONE = 0,
    AOF_TAIL_TORN,        /* provably an append that never finished: its own
                             line says it runs past the end of the file, or
                             the file ends inside that line; safe to drop */
    AOF_TAIL_TORN_HEADER, /* the file is a prefix of a header that is long
                             enough to be hurrahdb's ("#hurrahdb aof "): a
                             crash while it was created; rewrite it */
    AOF_TAIL_BAD          /* bytes that are not a valid batch, with no valid
                             batch after them: the caller must keep them (a
                             side file), since nothing proves they were never
                             acknowledged */
};

typedef struct aof_load_result {
    int version;        /* the file's format version; 0 for an empty file */
    uint64_t key[2];    /* version 2: the file's key */
    char codec[AOF_CODEC_NAME_MAX + 1]; /* the codec the header names; "" for JSON */
    uint64_t next_seq;  /* version 2: the number of the next batch to write */
    uint64_t records;   /* commands replayed */
    uint64_t set_records; /* SETs among the commands of the good batches */
    uint64_t batches;
    size_t good_len;    /* bytes made of the header and whole, valid batches */
    enum aof_tail tail;
    size_t tail_bytes;  /* bytes after good_len, when tail != AOF_TAIL_NONE */
    size_t damage_at;   /* with AOF_LOAD_DAMAGED: where the bad batch starts */
    char why[200];      /* with AOF_TAIL_BAD or AOF_TAIL_TORN: what is wrong there */
} aof_load_result;

enum aof_load_status {
    AOF_LOAD_OK = 0,
    AOF_LOAD_NOT_AOF,     /* no hurrahdb header: never write to such a file */
    AOF_LOAD_VERSION,     /* a hurrahdb file this build cannot read (newer
                             version, or its line endings were converted) */
    AOF_LOAD_DAMAGED,     /* a bad batch followed by a valid one, or a
                             damaged version-2 header (damage_at 0) */
    AOF_LOAD_NOMEM,       /* a replay callback failed */
    AOF_LOAD_CODEC        /* the file's values are of another codec than the
                             caller's: nothing replayed */
};

/* Checks and replays a whole file held in memory. Every batch is verified
 * before any record is replayed, so replay stops on a batch boundary.
 * A bad batch followed by a valid one is damage: AOF_LOAD_DAMAGED, with
 * everything before res->good_len (== res->damage_at) replayed and err naming
 * the offset. Otherwise the result is AOF_LOAD_OK and res->tail says what, if
 * anything, follows the good batches (see enum aof_tail).
 * Version 1 files have no announcing lines, so nothing in a bad version-1
 * batch proves it torn: it is always AOF_TAIL_BAD; and since finding "a valid
 * batch after it" would mean searching content for framing, none is looked
 * for. `len` == 0 is a valid empty file (the caller writes the header). The
 * time taken is linear in len. Whatever is not AOF_LOAD_OK fills err: with
 * HDB_CODE_NO_MEMORY for AOF_LOAD_NOMEM, HDB_CODE_CODEC for AOF_LOAD_CODEC,
 * else HDB_CODE_DAMAGED. */
int aof_load(const char *data, size_t len, const aof_replay *replay,
             aof_load_result *res, hdb_err *err);

#endif
