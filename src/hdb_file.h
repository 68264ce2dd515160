/*
 * hdb_file: the file and directory I/O every part of the engine shares.
 *
 * One place for the loops that POSIX leaves to the caller (short writes,
 * EINTR) and for making a new name durable (fsync of its directory), so the
 * store, the flusher and any later writer of files handle them the same way.
 */
#ifndef HDB_FILE_H
#define HDB_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "hurrahdb.h"

/* Writes all of buf at offset. Returns 0, or an errno value. A write that
 * returns 0 is reported as ENOSPC, the only reason a regular file accepts
 * nothing. */
int file_write_all_at(int fd, const void *buf, size_t len, uint64_t offset);

/* Writes a then b, contiguously, at offset: one system call in the common
 * case. Same return as file_write_all_at. */
int file_write2_all_at(int fd, const void *a, size_t alen, const void *b, size_t blen,
                       uint64_t offset);

/* Writes one batch of the AOF (its announcing line, then the records) at
 * *offset, and moves *offset past it. Returns 0, or an errno value with
 * *offset unchanged (bytes may have reached the file past it). */
int file_write_batch(int fd, const uint64_t key[2], uint64_t seq, const char *records,
                     size_t len, uint64_t *offset);

/* Opens the directory holding path (read-only, for file_sync_dir). Returns
 * the descriptor, or -1 with err filled and errno set. */
int file_open_parent_dir(const char *path, hdb_err *err);

/* fsyncs a directory. Returns 0, or an errno value. A file system that
 * cannot sync directories (EINVAL) counts as synced. */
int file_sync_dir(int dir_fd);

/* fsyncs the directory holding path, so that a file created or renamed there
 * keeps its name after a power loss. Returns 0, or -1 with err filled. */
int file_sync_parent_dir(const char *path, hdb_err *err);

/* Reads up to len bytes at offset, looping over EINTR and short reads.
 * Returns the number of bytes read (less than len only at end of file), or
 * -1 with errno set. */
long file_read_at(int fd, void *buf, size_t len, uint64_t offset);

#endif
