/* patch/internal.h — what the files of libconc_patch.so share (private).
 *
 * REAL(name) is the next definition of a libc function after ours (libc's),
 * found with dlsym(RTLD_NEXT) on first use and cached. */
#ifndef CONC_PATCH_INTERNAL_H
#define CONC_PATCH_INTERNAL_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "conc/green.h"
#include "conc/patch.h"

#define PATCH_EXPORT __attribute__((visibility("default")))

void *conc__patch_resolve(const char *name);

/* The libc function `name` with the type of our own definition. */
#define REAL(name)                                                                                                 \
    ({                                                                                                             \
        static __typeof__(&name) real_;                                                                            \
        __typeof__(&name) f_ = __atomic_load_n(&real_, __ATOMIC_RELAXED);                                          \
        if (__builtin_expect(!f_, 0)) {                                                                            \
            f_ = (__typeof__(&name))conc__patch_resolve(#name);                                                    \
            __atomic_store_n(&real_, f_, __ATOMIC_RELAXED);                                                        \
        }                                                                                                          \
        f_;                                                                                                        \
    })

/* True when the caller is a green thread of libconc.so, the call does not
 * come from libconc.so itself, and patching is on: the intercepted call
 * must be made cooperative. On an OS thread's own stack and in the hub's
 * loop it is false (the call goes to libc as is); on a stack that is
 * neither (a green thread of a second, statically linked libconc; another
 * coroutine library) it is false too, and a warning is printed once (see
 * patch.c). ret: the return address of the intercepted call. */
bool conc__patch_green(const void *ret);
#define PATCH_GREEN() conc__patch_green(__builtin_return_address(0))

/* How a wait ended. */
enum { W_READY = 0, W_TIMEOUT = 1, W_CUT = 2, W_ERROR = 3 };

/* Absolute deadlines in conc_monotonic() seconds; PATCH_NEVER = none. */
#define PATCH_NEVER (1.0 / 0.0)
double conc__patch_deadline_ms(int ms);
double conc__patch_deadline_ts(const struct timespec *ts);
/* The deadline SO_RCVTIMEO (write: SO_SNDTIMEO) of fd gives a call that
 * starts now; PATCH_NEVER without one (or for a non-socket). */
double conc__patch_sock_deadline(int fd, bool wr);

/* Wait until fd is ready for POLLIN / POLLOUT (events: a poll(2) mask)
 * or the deadline: W_READY (maybe spuriously), W_TIMEOUT (the deadline
 * passed), W_CUT (a kill or a timeout scope of the caller), W_ERROR (the
 * wait itself failed: the caller's next syscall will tell why). */
int conc__patch_wait_fd(int fd, short events, double deadline);
/* The same for a whole pollfd array (poll.c). */
int conc__patch_wait_many(const struct pollfd *fds, nfds_t n, double deadline);

/* The errno a cut-short call reports (EINTR unless changed). */
int conc__patch_cut_errno(void);

/* Forget fd in the caller's hub and close it (close(2)'s result). */
int conc__patch_close(int fd);

#endif
