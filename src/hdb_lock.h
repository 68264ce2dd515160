/*
 * hdb_lock: one writer per file.
 *
 * A store holds an exclusive flock(2) on its AOF for as long as it is open.
 * flock belongs to the open file description, so a second open of the same
 * path conflicts whether it comes from another process or from this one, and
 * closing some unrelated descriptor of the file does not drop it (as it
 * would with POSIX fcntl locks).
 */
#ifndef HDB_LOCK_H
#define HDB_LOCK_H

#include "hurrahdb.h"

/* Takes the lock on fd, waiting up to timeout_ms for another holder to let
 * go. On failure returns -1 with err naming the path and, when the system
 * says, the holder's pid: HDB_CODE_ALREADY_OPEN when the holder is this
 * process, HDB_CODE_LOCKED for another (or an unknown) one, HDB_CODE_IO when
 * flock itself fails. Returns 1 (with the lock released again) if, once
 * locked, fd is no longer the file at `path` (its holder replaced the file
 * while this one waited): the caller opens the path again and retries. */
int lock_acquire(int fd, const char *path, unsigned timeout_ms, hdb_err *err);

/* Releases the lock held through fd, for every process that shares its open
 * file description (a forked child). Only the process that took it calls
 * this: a child closing its copy must never release its parent's lock. */
void lock_release(int fd);

#endif
