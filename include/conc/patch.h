/*
 * conc/patch.h — libconc_patch.so, gevent.monkey for C: a library that,
 * preloaded (LD_PRELOAD=libconc_patch.so) or linked before libc, makes the
 * blocking libc calls of unmodified code — read, write, recv, send,
 * accept, connect, poll, select, epoll_wait, sleep, nanosleep,
 * getaddrinfo... — cooperative when a green thread makes them: the call
 * parks only that green thread and its hub runs the others. On OS threads
 * every call goes to libc unchanged. The list of calls, and why each is or
 * is not patched, is in docs/patch.md.
 *
 * Programs that use it must link libconc dynamically (libconc.so,
 * conc::conc): the patch links libconc.so and must see the program's green
 * threads, so both must be one copy. A program with its own static copy
 * is not patched; the first blocking call made on one of its green threads
 * prints a warning saying so.
 *
 * A call that a kill (conc_green_kill) or a timeout scope
 * (conc_timeout_begin) cuts short returns -1 with errno EINTR (sleep
 * returns the seconds left, clock_nanosleep returns EINTR), the way a
 * signal interrupts a blocking call: nothing was transferred. Many clients
 * (hiredis, libcurl) retry on EINTR, which makes the cut a no-op for them;
 * conc_patch_set_cut_errno chooses another errno (ECANCELED, ETIMEDOUT)
 * that such clients report as an error instead. The environment variable
 * CONC_PATCH_CUT_ERRNO (a number, or EINTR, ECANCELED, ETIMEDOUT, EIO)
 * sets it at load time.
 *
 * These functions live in libconc_patch.so, not libconc: link
 * conc::conc_patch to call them, or look them up with dlsym.
 */
#ifndef CONC_PATCH_H
#define CONC_PATCH_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from libconc_patch.so (not libconc.so, so not CONC_API). */
#define CONC_PATCH_API __attribute__((visibility("default")))

/* The errno of a patched call cut short by a kill or a timeout scope, for
 * the whole process (EINTR at first). e: a positive errno value. Returns
 * the previous value, or CONC_EINVAL (e <= 0). Thread-safe. */
CONC_PATCH_API int conc_patch_set_cut_errno(int e);

/* True while the patch is loaded and active (it is off when
 * CONC_PATCH=0 is in the environment at load time). */
CONC_PATCH_API bool conc_patch_active(void);

#ifdef __cplusplus
}
#endif
#endif /* CONC_PATCH_H */
