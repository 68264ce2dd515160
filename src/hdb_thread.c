#include "hdb_thread.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

int thread_start_quiet(pthread_t *thread, void *(*fn)(void *), void *arg, const char *what,
                       hdb_err *err)
{
    sigset_t all, old;
    sigfillset(&all);
    int e = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (e != 0) {
        /* It fails only on an argument this call never passes; should it
         * fail all the same, the thread cannot start, as without resources. */
        hdb_fail(err, HDB_CODE_NO_MEMORY, "cannot block signals for the %s thread: %s", what,
                 strerror(e));
        return -1;
    }
    /* The new thread inherits the full mask; the caller gets its own back. */
    e = pthread_create(thread, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "cannot start the %s thread: %s", what, strerror(e));
        return -1;
    }
    return 0;
}

void thread_set_name(const char *name)
{
#if defined(__linux__)
    prctl(PR_SET_NAME, name, 0, 0, 0);
#else
    (void)name;
#endif
}

/* The blocks kept by forked children. The lock is held across fork() by
 * the atfork handlers, so that a child never inherits it held by a thread
 * it does not have. */
typedef struct kept_block {
    struct kept_block *next;
    void *block;
} kept_block;

static kept_block *kept_blocks;
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;

static void kept_lock_take(void) { pthread_mutex_lock(&kept_lock); }
static void kept_lock_give(void) { pthread_mutex_unlock(&kept_lock); }

static void kept_register_atfork(void)
{
    /* Without the handlers, a fork while another thread of a child keeps a
     * block could leave the grandchild's lock held: only children keep
     * blocks, and only while closing a store, so it is not worth failing
     * the close for. */
    if (pthread_atfork(kept_lock_take, kept_lock_give, kept_lock_give) != 0)
        return;
}

void thread_keep_after_fork(void *block)
{
    if (block == NULL)
        return;
    pthread_once(&kept_once, kept_register_atfork);
    kept_block *k = malloc(sizeof *k);
    /* Without memory the block stays allocated all the same, only
     * unreachable: a leak of the child, never a double free. */
    if (k == NULL)
        return;
    k->block = block;
    pthread_mutex_lock(&kept_lock);
    k->next = kept_blocks;
    kept_blocks = k;
    pthread_mutex_unlock(&kept_lock);
}
