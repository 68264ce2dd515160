/*
 * hdb_thread: the engine's background threads (the flusher, the rewrite).
 *
 * They may live inside an nginx worker, which owns its signals: every signal
 * is blocked in them, so that the process's handlers keep running on the
 * threads that expect them.
 */
#ifndef HDB_THREAD_H
#define HDB_THREAD_H

#include <pthread.h>
#include <stddef.h>

#include "hurrahdb.h"

/* Starts fn(arg) on a new thread with every signal blocked. Returns 0, or
 * -1 with err naming `what` (HDB_CODE_NO_MEMORY: the system lacks the
 * resources for another thread, EAGAIN, or the memory for its stack). */
int thread_start_quiet(pthread_t *thread, void *(*fn)(void *), void *arg, const char *what,
                       hdb_err *err);

/* Names the calling thread (shown by top -H, perf, gdb); best effort. */
void thread_set_name(const char *name);

/* For a forked child: keeps `block` (and what it points to) allocated and
 * reachable for the life of the process, instead of freeing it. A thread
 * of the parent that does not exist in the child may have been changing
 * it at the fork (a buffer being swapped or reallocated), so freeing it
 * could free twice; its pages are the parent's, shared copy-on-write, so
 * keeping them costs the child nothing it has not already got. */
void thread_keep_after_fork(void *block);

#endif
