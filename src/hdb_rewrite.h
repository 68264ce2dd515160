/*
 * hdb_rewrite: compaction of a store's AOF, in the background, without fork.
 *
 * A rewrite writes a new file holding one SET per live key, under the name
 * "<file>.rewrite" beside the store's file, then gives it the store's name
 * with rename(2). Its thread reads the table in chunks, holding the
 * rewrite's lock for one chunk at a time; the owner thread takes the same
 * lock around every change of the table while a rewrite runs, so the two
 * never touch the same entries at once, and the owner waits at most for one
 * chunk to be copied. Reads of the table (get, iteration) take no lock: the
 * thread reads only the slot array and the entries' bytes, which only
 * changes move.
 *
 * Writes made while a rewrite runs reach both files: the flusher keeps
 * writing the old file as always (so a crash at any moment leaves the old
 * file with everything the sync_time promise covers) and copies each record
 * into a tail that the thread takes with each chunk, in the order they
 * happened, and writes into the new file after the chunks read before them.
 * Replaying the new file therefore ends in the table's state: a key written
 * after its chunk was copied has its later records after that chunk, and a
 * key written before its chunk is copied with its new value.
 *
 * The new file is made durable (fdatasync) before it takes the name; while
 * it takes it the flusher is kept off the old file, and the records
 * appended since the thread's last take of the tail become the new file's
 * pending records (see flusher_switch). The new file is locked before it
 * has the name, so one writer per file holds across the replacement.
 */
#ifndef HDB_REWRITE_H
#define HDB_REWRITE_H

#include <stddef.h>
#include <stdint.h>

#include "hdb_flusher.h"
#include "hdb_table.h"

typedef struct hdb_rewriter hdb_rewriter;

typedef struct rewrite_stats {
    int running;
    uint64_t completed;        /* rewrites that replaced the file */
    uint64_t failed;           /* rewrites that failed or were cancelled */
    int last_status;           /* 0: none yet, 1: the last one succeeded, -1: it failed */
    double last_seconds;       /* duration of the last one to end */
    uint64_t last_size;        /* file size right after the last successful one */
    uint64_t last_keys;        /* keys it wrote */
    char last_error[256];      /* why the last one failed; "" otherwise */
    int last_error_code;       /* ... and its enum hdb_code */
    size_t memory;             /* bytes held by the running one's buffers */
} rewrite_stats;

/* Prepares the rewrites of a store (no thread yet). path names the store in
 * messages; file_path is its file, links resolved. */
hdb_rewriter *rewrite_new(hdb_table *t, hdb_flusher *f, const char *path, const char *file_path,
                          const char *codec);

/* Cancels a running rewrite and waits for its thread, then frees. In a
 * forked child, only frees this process's copy. */
void rewrite_free(hdb_rewriter *rw);

/* Starts a rewrite whose new file gets the given key. Fails, with err,
 * when one is running (HDB_CODE_BUSY). Owner thread. */
int rewrite_start(hdb_rewriter *rw, const uint64_t key[2], hdb_err *err);

/* Waits for the running rewrite (if any) to end; returns 0 if it
 * succeeded, -1 with err if it failed, with the code of its failure. With
 * none running, returns the outcome of the last (0 if none). Owner thread. */
int rewrite_wait(hdb_rewriter *rw, hdb_err *err);

/* Cancels a running rewrite and waits for its thread. Owner thread. */
void rewrite_cancel(hdb_rewriter *rw);

/* Reaps a rewrite whose thread has ended. Returns 1 if one ended
 * successfully by this call, -1 if one failed, 0 otherwise. Owner thread. */
int rewrite_poll(hdb_rewriter *rw);

/* True while a rewrite's thread exists (it may have ended, unreaped). */
int rewrite_running(const hdb_rewriter *rw);

/* Around every change of the table (set, delete) while a rewrite runs: keeps
 * the thread from reading the table meanwhile. rewrite_enter returns 1 when
 * it locked (rewrite_leave must follow), 0 when no rewrite runs. */
int rewrite_enter(hdb_rewriter *rw);
void rewrite_leave(hdb_rewriter *rw);

void rewrite_get_stats(hdb_rewriter *rw, rewrite_stats *st);

/* The memory the rewriter holds; the caller holds its lock (rewrite_enter)
 * or no rewrite runs. */
size_t rewrite_memory_entered(const hdb_rewriter *rw);

/* The file side, shared with the conversion of an old file at open.
 * rewrite_file_create: creates "<file_path>.rewrite" (removing one a crash
 * left, see rewrite_remove_leftover), locks it before anyone can know it, gives it the owner and
 * permissions of file_path, and writes a header with key (of format
 * version 4 if expiry_format). *tmp is
 * malloc'd. rewrite_file_rename: renames it over file_path (the caller
 * syncs the directory). rewrite_file_discard: removes it (if the name is
 * still the file's), unlocks and closes it. */
int rewrite_file_create(const char *file_path, const uint64_t key[2], const char *codec,
                        int expiry_format,
                        char **tmp, int *fd,
                        hdb_err *err);
int rewrite_file_rename(const char *tmp, const char *file_path, hdb_err *err);
void rewrite_file_discard(int fd, const char *tmp);

/* Removes the temporary file a crash left at tmp (or a symbolic link
 * there), unless another store holds it locked: then fails with err naming
 * the holder (and lock_acquire's code). Returns 0 when nothing is left at
 * tmp. The caller holds the store's lock. */
int rewrite_remove_leftover(const char *tmp, hdb_err *err);

/* The name of the temporary file of file_path (malloc'd), or NULL: file_path
 * with this suffix. No store's file may have such a name. */
#define REWRITE_SUFFIX ".rewrite"
/* The name of the temporary file of file_path (malloc'd), or NULL. */
char *rewrite_temp_name(const char *file_path);

#endif
