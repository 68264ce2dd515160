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

/* Starts fn(arg) on a new thread with every signal blocked. Returns 0, or
 * -1 with err naming `what`. */
int thread_start_quiet(pthread_t *thread, void *(*fn)(void *), void *arg, const char *what,
                       char *err, size_t errlen);

/* Names the calling thread (shown by top -H, perf, gdb); best effort. */
void thread_set_name(const char *name);

#endif
