#include "hdb_thread.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

int thread_start_quiet(pthread_t *thread, void *(*fn)(void *), void *arg, const char *what,
                       char *err, size_t errlen)
{
    sigset_t all, old;
    sigfillset(&all);
    int e = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (e != 0) {
        snprintf(err, errlen, "cannot block signals for the %s thread: %s", what, strerror(e));
        return -1;
    }
    /* The new thread inherits the full mask; the caller gets its own back. */
    e = pthread_create(thread, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        snprintf(err, errlen, "cannot start the %s thread: %s", what, strerror(e));
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
