/*
 * hdb_flusher: the AOF writer of one store.
 *
 * Callers append RESP records to a pending buffer under a short lock and
 * return. With sync_time > 0 a background thread, every sync_time ms, takes
 * the pending buffer (swapping it with an empty one, so callers keep
 * appending while it writes), closes it as a batch with a checksum line,
 * writes it and calls fdatasync. With sync_time == 0 the caller does the same
 * before its call returns.
 * A failed write or fdatasync keeps the batch in memory: the next flush
 * writes it again at the same offset, and until one succeeds, appends are
 * refused with the error, so no caller believes a write durable that is not.
 * The flusher never touches the hash table, and its thread blocks every
 * signal, since it may live inside an nginx worker that owns its signals.
 */
#ifndef HDB_FLUSHER_H
#define HDB_FLUSHER_H

#include <stddef.h>
#include <stdint.h>

#include "hdb_buf.h"
#include "hurrahdb.h"

typedef struct hdb_flusher hdb_flusher;

typedef struct flusher_stats {
    uint64_t file_bytes;    /* bytes written to the file, header included */
    uint64_t pending_bytes; /* appended but not yet written (and synced) */
    int64_t last_sync_ms;   /* wall-clock time of the last completed flush, 0 if none */
    uint64_t errors;        /* failed write/fdatasync attempts */
    uint64_t backpressure_waits; /* appends that waited for the disk (max_pending) */
    char last_error[256];   /* "" if none */
} flusher_stats;

/* Takes over `fd` (open for writing and locked, `size` bytes of valid
 * content in format version 2, 3 or 4 (expiry_format) whose key is file_key
 * and whose next batch is number next_seq), and, when sync_time_ms > 0,
 * starts the background thread. On failure returns -1 with err filled and
 * fd left open for the caller to close. */
int flusher_start(hdb_flusher **out, int fd, const char *path, uint64_t size,
                  const uint64_t file_key[2], uint64_t next_seq, int expiry_format,
                  unsigned sync_time_ms, int use_fsync, uint64_t max_pending,
                  hdb_err *err);

/* Appends a record. With sync_time == 0 also writes and syncs it; if that
 * fails the record is withdrawn, so the file and the buffer are as before.
 * When max_pending bytes are unwritten, first writes them (waiting for the
 * disk), and appends nothing if that fails.
 * Returns 0, or -1 with err filled: the file failing (HDB_CODE_IO, now or
 * in an earlier write whose failure still stands, with that one's message),
 * no memory, a forked child (HDB_CODE_FORKED), the process exiting. */
int flusher_append_set(hdb_flusher *f, const char *key, size_t key_len,
                       const char *val, size_t val_len, hdb_err *err);
int flusher_append_del(hdb_flusher *f, const char *key, size_t key_len, hdb_err *err);

/* The records of format version 4 (see hdb_aof.h): the first one makes the
 * file version 4 (one byte of its header, synced) before it is appended,
 * and fails, appending nothing, if that write fails. */
int flusher_append_set_px(hdb_flusher *f, const char *key, size_t key_len,
                          const char *val, size_t val_len, int64_t expire_ms, hdb_err *err);
int flusher_append_pexpireat(hdb_flusher *f, const char *key, size_t key_len,
                             int64_t expire_ms, hdb_err *err);
int flusher_append_persist(hdb_flusher *f, const char *key, size_t key_len, hdb_err *err);
int flusher_append_flushall(hdb_flusher *f, hdb_err *err);

/* Whether the file is of format version 4, so that a rewrite makes its new
 * file version 4 too. */
int flusher_expiry_format(hdb_flusher *f);

/* Makes the file of format version 4 now if it is not (an append that
 * needs it does so itself): a write that must not fail after changing the
 * store (evicting keys) calls it first. -1 with err filled if the header
 * cannot be written, the store refuses writes, or in a forked child. */
int flusher_prepare_expiry_format(hdb_flusher *f, hdb_err *err);

/* Writes and (unless fsync is off) fdatasyncs everything appended so far.
 * Fails in a forked child (HDB_CODE_FORKED). */
int flusher_sync(hdb_flusher *f, hdb_err *err);

/* Syncs, stops the thread, releases the lock and closes the file. On a
 * failed sync returns -1 and leaves everything running, with the unwritten
 * records kept. Returns 1 with err filled if everything was written but
 * close(2) reported an error: the file is closed all the same. In a forked
 * child, writes nothing and succeeds: flusher_free releases the copy. */
int flusher_stop(hdb_flusher *f, hdb_err *err);

/* For exit(): writes and syncs what is pending, then releases the file's
 * lock (a child forked after the open would otherwise keep it locked after
 * this process is gone); from then on appends are refused (HDB_CODE_EXITING)
 * and nothing more is written. Returns 0, or -1 with err saying why the last
 * records could not be written. Does nothing in a forked child. */
int flusher_release_at_exit(hdb_flusher *f, hdb_err *err);

/* Releases the flusher. If flusher_stop did not succeed, unwritten records are
 * lost; in a forked child nothing is written and no thread is joined. */
void flusher_free(hdb_flusher *f);

void flusher_get_stats(hdb_flusher *f, flusher_stats *st);

/* Memory held by the buffers, for stats. */
size_t flusher_memory(hdb_flusher *f);

/* The rewrite's side (hdb_rewrite.h). While a rewrite runs, every record
 * appended is also copied into a tail that the rewrite takes.
 * flusher_tail_take: the first call starts the copying; each later one moves
 * what was copied since into out (appending). Fails when the tail passed
 * max_pending bytes (it was dropped: writes outpaced the rewrite,
 * HDB_CODE_OUTPACED) or the process is exiting. The caller must make sure that no write call is
 * under way (see hdb_rewrite.c), so that the tail never holds a record
 * that is still to be withdrawn. */
int flusher_tail_take(hdb_flusher *f, hdb_buf *out, hdb_err *err);

/* Stops the copying and drops the tail (a rewrite that failed). */
void flusher_tail_stop(hdb_flusher *f);

/* Moves the store onto its rewritten file (fd, locked, *size_io bytes,
 * file_key, next batch next_seq; of format version 4 if expiry_format, and
 * made so here if the old file became version 4 meanwhile). With the flusher kept off the old file,
 * writes the tail (records appended since the rewrite's last take, which
 * the old file may already have made durable) into the new file and syncs
 * it, then calls install, which renames it to file_path, and syncs that
 * directory (a failed sync is retried by every flush, which fails until it
 * succeeds). If install succeeds, the new file becomes the flusher's (*size_io its size),
 * the records appended since become its pending records, and the old file
 * is unlocked and closed. Fails, changing nothing, if the directory cannot
 * be opened, file_path no longer names the flusher's file (HDB_CODE_MOVED),
 * the tail overflowed (HDB_CODE_OUTPACED), the process is exiting, or a
 * write, sync or install fails. */
int flusher_switch(hdb_flusher *f, int fd, int expiry_format, uint64_t *size_io,
                   const uint64_t file_key[2], uint64_t next_seq, const char *file_path,
                   int (*install)(void *ud, hdb_err *err),
                   void *ud, hdb_err *err);

/* True when every append is written and synced by its own call
 * (sync_time 0). */
int flusher_is_synchronous(const hdb_flusher *f);

/* Bytes the file holds once what is pending is written (its batch lines
 * aside), header included. */
uint64_t flusher_file_size(hdb_flusher *f);

/* True in a child process forked after the flusher started. */
int flusher_in_forked_child(const hdb_flusher *f);

#endif
