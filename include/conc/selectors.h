/*
 * conc/selectors.h — Python's `selectors` module in C: wait until one of
 * many file descriptors is ready, with a choice of kernel mechanism.
 *
 *     conc_selector_t *s;
 *     conc_selector_new(&s, CONC_SEL_DEFAULT);          // DefaultSelector()
 *     conc_selector_register(s, fd, CONC_SEL_READ, conn, NULL);
 *     conc_selector_ready_t ev[16];
 *     int n = conc_selector_select(s, 1.0, ev, 16);     // sel.select(1.0)
 *     for (int i = 0; i < n; i++) handle(ev[i].key->data, ev[i].events);
 *     conc_selector_close(s);
 *
 * Backends (Python's SelectSelector, PollSelector, EpollSelector, plus two
 * that Python does not have):
 *   CONC_SEL_SELECT   select(2); fds must be < FD_SETSIZE (1024)
 *   CONC_SEL_POLL     poll(2)
 *   CONC_SEL_EPOLL    epoll(7), level-triggered
 *   CONC_SEL_URING    io_uring poll operations (IORING_OP_POLL_ADD), through
 *                     raw system calls (no liburing needed). Not available
 *                     where io_uring_setup fails (seccomp, io_uring_disabled,
 *                     kernels older than 5.11): conc_selector_new returns
 *                     CONC_ENOTSUP.
 *   CONC_SEL_SIGNAL   signal-driven I/O: O_ASYNC + F_SETSIG with a real-time
 *                     signal, read through a signalfd, confirmed with poll(2);
 *                     a signal-queue overflow (the kernel then sends SIGIO)
 *                     triggers a full rescan. Limits below.
 *   CONC_SEL_DEFAULT  the best available: epoll. (io_uring is not the default:
 *                     for readiness polling it is not faster than epoll —
 *                     every reported fd must be re-armed with a new
 *                     submission — and it may be unavailable; see
 *                     docs/selectors.md and bench/selectors_bench.c.)
 *
 * Semantics are those of CPython's Lib/selectors.py:
 *   - one key per fd; registering an fd twice is CONC_EKEY (KeyError), and
 *     so are modify / unregister / get_key of an fd that is not registered;
 *   - unregistering an fd that was closed while registered works (the key
 *     is forgotten; the kernel side is cleaned up as far as it can be);
 *   - events must be a non-empty subset of CONC_SEL_READ | CONC_SEL_WRITE,
 *     and fd must be >= 0, else CONC_EINVAL;
 *   - select reports each ready key once per call with its ready events
 *     (registered events only; an error or hang-up counts as both, as in
 *     Python). It is level-triggered: a key stays ready until its fd is
 *     drained / filled;
 *   - timeout: CONC_FOREVER blocks; 0 polls; a negative timeout is 0 (as
 *     Python's selectors); NaN is CONC_EINVAL. When a signal handler
 *     interrupts the wait, the wait resumes with the time left (PEP 475):
 *     it neither returns early nor restarts the full timeout.
 *
 * Colorless: called from a green thread, conc_selector_select parks only
 * that green thread (its hub keeps running others) and is cut short by
 * conc_green_kill (CONC_EKILLED) and Timeout scopes (CONC_ETIMEDOUT).
 * On an OS thread it blocks in the backend's own system call; Timeout
 * scopes apply there too.
 *
 * Threads: a selector is not thread-safe (like Python's): one thread (or
 * the green threads of one hub) uses it at a time. The signal backend is
 * further tied to the OS thread that created it (signals are directed to
 * that thread): select from another thread is CONC_EPERM, and a thread
 * has at most one open signal selector (a second is CONC_EAGAIN).
 *
 * Ownership: conc_selector_new allocates; conc_selector_close frees the
 * selector and its keys (it never closes the registered fds). A key
 * pointer stays valid, and is updated in place by modify, until its fd is
 * unregistered or the selector is closed. The data pointer is the
 * caller's; conc never touches it.
 */
#ifndef CONC_SELECTORS_H
#define CONC_SELECTORS_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Python's selectors.EVENT_READ / EVENT_WRITE. */
enum { CONC_SEL_READ = 1, CONC_SEL_WRITE = 2 };

typedef enum conc_selector_backend {
    CONC_SEL_DEFAULT = 0,
    CONC_SEL_SELECT,
    CONC_SEL_POLL,
    CONC_SEL_EPOLL,
    CONC_SEL_URING,
    CONC_SEL_SIGNAL
} conc_selector_backend_t;

/* Python's SelectorKey(fileobj, fd, events, data): fileobj is the fd. */
typedef struct conc_selector_key {
    int fd;
    int events;  /* CONC_SEL_READ | CONC_SEL_WRITE, as registered */
    void *data;  /* the caller's, as registered */
} conc_selector_key_t;

/* One (key, events) pair of select's result. */
typedef struct conc_selector_ready {
    const conc_selector_key_t *key;
    int events;  /* the ready subset of key->events, never 0 */
} conc_selector_ready_t;

typedef struct conc_selector conc_selector_t;

/* Options: zero = defaults (the default backend, signal SIGRTMIN+4). */
typedef struct conc_selector_opts {
    conc_selector_backend_t backend;
    int signo;  /* CONC_SEL_SIGNAL only: the real-time signal to use (0:
                   SIGRTMIN+4); must be in SIGRTMIN..SIGRTMAX, and is blocked
                   in the creating thread while the selector is open */
} conc_selector_opts_t;

/* Create a selector with backend. Returns 0 and sets *out, CONC_EINVAL (NULL
 * out, unknown backend), CONC_ENOTSUP (the kernel refuses the backend:
 * io_uring unavailable), CONC_EAGAIN (a second signal selector on this
 * thread), CONC_ENOMEM, CONC_ESYS (errno set). */
CONC_API int conc_selector_new(conc_selector_t **out, conc_selector_backend_t backend);
/* The same with options (NULL = defaults). */
CONC_API int conc_selector_new_opts(conc_selector_t **out, const conc_selector_opts_t *opts);

/* Python's close(): forget every key, release the kernel objects, free s.
 * Registered fds are left open (and, on the signal backend, their O_ASYNC
 * flag is cleared). NULL is ignored. */
CONC_API void conc_selector_close(conc_selector_t *s);

/* The backend s really uses (CONC_SEL_DEFAULT resolved), and its name
 * ("select", "poll", "epoll", "uring", "signal"). */
CONC_API conc_selector_backend_t conc_selector_backend(const conc_selector_t *s);
CONC_API const char *conc_selector_backend_name(conc_selector_backend_t b);

/* Python's register(fileobj, events, data). Returns 0 and, when key is not
 * NULL, points *key at the new key. CONC_EINVAL: NULL s, fd < 0, events 0
 * or with unknown bits; CONC_EKEY: fd already registered; CONC_ERANGE:
 * select backend and fd >= FD_SETSIZE; CONC_ESYS: the kernel refused the
 * fd (e.g. EBADF for a closed fd on epoll/signal; EPERM for a regular file
 * on epoll, as Python's EpollSelector); CONC_ENOMEM. Nothing is registered
 * on error. */
CONC_API int conc_selector_register(conc_selector_t *s, int fd, int events, void *data,
                                    const conc_selector_key_t **key);

/* Python's modify(fileobj, events, data): change the events and data of a
 * registered fd; the key is updated in place. Errors as register
 * (CONC_EKEY when fd is not registered); on error the key is unchanged
 * unless the kernel refused, in which case the fd is unregistered (as
 * Python's modify, which unregisters then registers) and CONC_ESYS is
 * returned. */
CONC_API int conc_selector_modify(conc_selector_t *s, int fd, int events, void *data,
                                  const conc_selector_key_t **key);

/* Python's unregister(fileobj). Works even when fd was already closed.
 * Returns 0, CONC_EKEY (not registered), CONC_EINVAL (NULL s, fd < 0).
 * The key is freed: pointers to it become invalid. When old is not NULL,
 * *old receives a copy of the key. */
CONC_API int conc_selector_unregister(conc_selector_t *s, int fd, conc_selector_key_t *old);

/* Python's select(timeout): wait until at least one registered fd is ready
 * or timeout seconds pass, then write up to max (key, events) pairs to out
 * (caller's array; the key pointers are owned by s). Returns the number of
 * pairs written (0: the timeout passed — Python's empty list), or
 * CONC_EINVAL (NULL s or out, max <= 0, NaN timeout),
 * CONC_ETIMEDOUT (a Timeout scope ended the wait), CONC_EKILLED (the
 * calling green thread was killed), CONC_EPERM (signal backend, wrong
 * thread), CONC_ESYS (errno set). With no fd registered it just waits for
 * the timeout (CPython's behaviour; CONC_FOREVER then blocks until a kill
 * or scope). When more than max keys are ready, the rest are reported by
 * the next call. */
CONC_API int conc_selector_select(conc_selector_t *s, double timeout, conc_selector_ready_t *out,
                                  int max);

/* Python's get_key(fileobj): 0 and *key, or CONC_EKEY / CONC_EINVAL. */
CONC_API int conc_selector_get_key(const conc_selector_t *s, int fd,
                                   const conc_selector_key_t **key);

/* len(get_map()): the number of registered fds (0 for NULL). */
CONC_API int conc_selector_count(const conc_selector_t *s);

/* Iterate get_map(): *cursor starts at 0; each call returns the next key
 * (in fd order) and advances *cursor, or NULL at the end. Registering or
 * unregistering during an iteration is allowed; keys added behind the
 * cursor are skipped. */
CONC_API const conc_selector_key_t *conc_selector_next_key(const conc_selector_t *s, int *cursor);

/* Signal backend only: how many full rescans a signal-queue overflow (SIGIO)
 * caused so far; 0 for the other backends. */
CONC_API long conc_selector_rescans(const conc_selector_t *s);

#ifdef __cplusplus
}
#endif
#endif /* CONC_SELECTORS_H */
