/*
 * conc/ipc_queue.h — multiprocessing.Queue, JoinableQueue and SimpleQueue:
 * a queue of byte messages shared between processes.
 *
 *     conc_mpqueue_t *q;
 *     conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 0);     // mp.Queue()
 *     if (fork() == 0) { conc_mpqueue_put(q, "hi", 3, true, CONC_FOREVER); _exit(0); }
 *     char buf[64]; size_t n;
 *     conc_mpqueue_get(q, buf, sizeof buf, &n, true, CONC_FOREVER);  // "hi", n == 3
 *     conc_mpqueue_free(q);
 *
 * Messages are byte strings of any length from 0 up to the queue's capacity
 * minus 16 (conc_mpqueue_max_message). They live in a ring inside a memfd
 * shared-memory segment: a forked child uses the same handle as its parent;
 * a spawned (exec'd) child receives the segment's fd (conc_mpqueue_fd) and
 * calls conc_mpqueue_attach. The segment goes away when the last process
 * that maps it closes it or exits.
 *
 * put copies the message into shared memory and returns: there is no
 * feeder thread, so nothing is left to flush at exit and a message whose
 * put returned is in the queue even if its sender dies right away.
 * Order: FIFO over the messages of all producers (in the order their puts
 * took effect).
 *
 * Bounds: capacity bytes (rounded up to a power of two; each message costs
 * 8 + its length rounded up to 8, and 8 bytes always stay free) and,
 * optionally, maxsize messages (Python's maxsize). put waits while either
 * is exhausted.
 *
 * Crash safety: a process killed (even SIGKILL) in the middle of any call
 * leaves the queue usable by the others. A message is published by one
 * store after its bytes are written, so a put that dies is either fully in
 * the queue or absent, and a get that dies before its one commit store
 * leaves its message in the queue (after it, the message was taken — as
 * if the process had died just after get returned). Repairs happen in the
 * next process that wants the lock: it notices within a few milliseconds
 * that the holder died. All processes sharing a queue must be in one pid
 * namespace (the locks record thread ids).
 *
 * Hostile peers: any process that maps the segment can write anything in
 * it. Each shared field is read once, checked (positions multiples of 8,
 * head <= tail <= head + capacity, message lengths and journal entries
 * that fit the ring) and only the copy is used; a bad one marks this
 * handle broken: that call and every later put/get/task_done/join return
 * CONC_EBROKEN. No value makes a call read or write outside the segment
 * (docs/security.md). A live peer can still make calls wait (by holding a
 * side's lock), as a slow one would.
 *
 * Speed: while only one thread (of one process) puts, it keeps the
 * producers' lock between its puts, and likewise for gets, so a put or a
 * get costs no atomic read-modify-write; the first other thread that
 * wants the lock takes it over at once (the holder may live, have exited
 * or have been killed) and from then on that side is locked per call. A
 * process using a queue registers for membarrier(2)
 * MEMBARRIER_CMD_GLOBAL_EXPEDITED (Linux 4.16+; where it is missing the
 * queue falls back to plain locks and full fences).
 *
 * block/timeout as in multiprocessing.Queue: block=false never waits for
 * room or a message (the timeout is ignored; it waits at most 0.1 s for
 * the side's lock, held only across a copy, so that a dead holder's lock
 * is still taken over: a holder that lives and keeps it makes the call
 * report CONC_EFULL/CONC_EEMPTY); block=true waits up to timeout seconds
 * (CONC_FOREVER: no limit; a negative timeout is already up, as
 * multiprocessing's SemLock clamps it to 0: one try, as block=false, then
 * CONC_EFULL / CONC_EEMPTY; NaN: CONC_EINVAL). join treats a negative
 * timeout the same way. Waits spin briefly,
 * then sleep on a futex in the shared segment; nobody is woken unless
 * somebody sleeps. Waits are colorless: a green thread parks alone, and a
 * conc_green_kill of it or a Timeout scope (conc/green.h; OS threads too)
 * ends put / get / join with CONC_EKILLED / CONC_ETIMEDOUT (not
 * CONC_EFULL / CONC_EEMPTY), the queue untouched; a get that an item
 * reached as it was cut returns the item.
 *
 * Handles: a conc_mpqueue_t is a per-process handle (malloc'd, owned by
 * the caller, freed with conc_mpqueue_free). A forked child inherits a
 * copy of it and must free its copy too (or just exit). Calls on one
 * handle from several threads of a process are safe.
 */
#ifndef CONC_IPC_QUEUE_H
#define CONC_IPC_QUEUE_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_mpqueue conc_mpqueue_t;

typedef enum conc_mpqueue_kind {
    CONC_MPQ_QUEUE = 0,    /* multiprocessing.Queue                           */
    CONC_MPQ_JOINABLE = 1, /* multiprocessing.JoinableQueue: task_done, join  */
    CONC_MPQ_SIMPLE = 2    /* multiprocessing.SimpleQueue: no maxsize         */
} conc_mpqueue_kind_t;

/* Default ring size in bytes when conc_mpqueue_new is given capacity 0. */
#define CONC_MPQ_DEFAULT_CAPACITY ((size_t)1 << 20)
/* Largest capacity accepted (bytes). */
#define CONC_MPQ_MAX_CAPACITY ((size_t)1 << 30)

/* Create a queue in a new shared-memory segment.
 * maxsize: most messages in the queue at once; <= 0 means no item limit
 * (ignored for CONC_MPQ_SIMPLE). capacity: ring size in bytes, 0 for
 * CONC_MPQ_DEFAULT_CAPACITY, otherwise rounded up to a power of two
 * (at least 64). Returns 0 and a new handle in *out; CONC_EINVAL (NULL,
 * unknown kind, capacity above CONC_MPQ_MAX_CAPACITY); CONC_ENOMEM;
 * CONC_ESYS (memfd_create/mmap failed; see errno). */
CONC_API int conc_mpqueue_new(conc_mpqueue_t **out, conc_mpqueue_kind_t kind, long maxsize,
                              size_t capacity);

/* Attach to the queue whose segment is open as fd (a conc_mpqueue_fd of
 * another process, received by inheritance or SCM_RIGHTS). The handle
 * keeps its own duplicate of fd: the caller still owns fd. Returns 0 and
 * a new handle in *out; CONC_EINVAL (NULL, fd is not a conc queue
 * segment — a memfd sealed against shrinking, so no peer can make our
 * accesses fault — or its header fails the checks); CONC_ENOMEM; CONC_ESYS. The
 * header's fields are read once and the handle keeps the checked copies
 * (capacity, kind, maxsize): a peer changing them later changes nothing
 * for this handle. */
CONC_API int conc_mpqueue_attach(conc_mpqueue_t **out, int fd);

/* A printable name for q's segment ("conc-mpq:<pid>:<fd>", at most
 * CONC_MPQ_NAME_MAX bytes with the NUL) that another process of the same
 * user can pass to conc_mpqueue_attach_name while this process keeps q
 * open — e.g. as the byte argument of a spawned or fork-server child,
 * which inherits no fds from us. Returns 0; CONC_EINVAL (NULL, closed,
 * cap too small). */
#define CONC_MPQ_NAME_MAX 48
CONC_API int conc_mpqueue_name(const conc_mpqueue_t *q, char *buf, size_t cap);
/* Attach through a name from conc_mpqueue_name (opens the segment via
 * /proc/<pid>/fd/<fd>). Returns as conc_mpqueue_attach; CONC_EINVAL also
 * for a malformed name or one whose process or fd is gone. */
CONC_API int conc_mpqueue_attach_name(conc_mpqueue_t **out, const char *name);

/* The segment's file descriptor (owned by q: dup it to keep it beyond
 * conc_mpqueue_close). It is close-on-exec; a spawner passes it on
 * explicitly. Returns the fd, or CONC_EINVAL (NULL or closed handle). */
CONC_API int conc_mpqueue_fd(const conc_mpqueue_t *q);

/* Queue.close(): this process will use q no more. Later calls through q
 * return CONC_EINVAL (Python's ValueError "Queue is closed"); other
 * processes are not affected. Calls of other threads that were already
 * running and do not wait finish normally; the segment stays mapped (and
 * the fd open) until conc_mpqueue_free. Returns 0; CONC_EINVAL (NULL,
 * already closed); CONC_EPERM when another thread of this process waits in
 * a blocking call on q (nothing is closed). */
CONC_API int conc_mpqueue_close(conc_mpqueue_t *q);

/* Close q if still open and free the handle. NULL is a no-op. Returns 0;
 * CONC_EPERM when other threads are inside calls on q (nothing is freed). */
CONC_API int conc_mpqueue_free(conc_mpqueue_t *q);

/* Put the len bytes at data (data may be NULL when len is 0). Returns
 * once the message is in shared memory: 0; CONC_EFULL when block is false
 * and there is no room, or when the timeout passed (queue.Full);
 * CONC_ERANGE when the message could never fit (len >
 * conc_mpqueue_max_message(q)); CONC_EINVAL (NULL, closed handle, bad
 * timeout); CONC_EBROKEN (a peer scribbled on the segment, see above).
 * Blocks only while the queue is full. */
CONC_API int conc_mpqueue_put(conc_mpqueue_t *q, const void *data, size_t len, bool block,
                              double timeout);
CONC_API int conc_mpqueue_put_nowait(conc_mpqueue_t *q, const void *data, size_t len);

/* Take the next message: copy it into buf (cap bytes) and its length into
 * *len. Returns 0; CONC_EEMPTY when block is false and the queue is empty,
 * or when the timeout passed (queue.Empty); CONC_ERANGE when the message is
 * longer than cap: *len is set to its length and the message stays at the
 * head of the queue (Python's BufferTooShort, minus the loss); CONC_EINVAL
 * (NULL q/len, NULL buf with cap > 0, closed handle, bad timeout);
 * CONC_EBROKEN (a bad header or position in the segment). */
CONC_API int conc_mpqueue_get(conc_mpqueue_t *q, void *buf, size_t cap, size_t *len, bool block,
                              double timeout);
CONC_API int conc_mpqueue_get_nowait(conc_mpqueue_t *q, void *buf, size_t cap, size_t *len);

/* Like conc_mpqueue_get, but *data is a new malloc'd copy of the message
 * (the caller frees it; never NULL on success, even for an empty
 * message). CONC_ENOMEM leaves the message in the queue. */
CONC_API int conc_mpqueue_get_alloc(conc_mpqueue_t *q, void **data, size_t *len, bool block,
                                    double timeout);

/* Messages in the queue (approximate while others put or get, exact when
 * nothing runs concurrently). 0 for NULL or a closed handle. */
CONC_API size_t conc_mpqueue_qsize(const conc_mpqueue_t *q);
/* qsize() == 0. true for NULL or a closed handle. */
CONC_API bool conc_mpqueue_empty(const conc_mpqueue_t *q);
/* maxsize messages are in the queue, or the ring has no room left for
 * even an empty message. false for NULL or a closed handle. */
CONC_API bool conc_mpqueue_full(const conc_mpqueue_t *q);
/* The limits of q: maxsize (0: none), ring capacity in bytes, largest
 * message. 0 for NULL or a closed handle. */
CONC_API long conc_mpqueue_maxsize(const conc_mpqueue_t *q);
CONC_API size_t conc_mpqueue_capacity(const conc_mpqueue_t *q);
CONC_API size_t conc_mpqueue_max_message(const conc_mpqueue_t *q);

/* JoinableQueue.task_done(): one message taken with get is processed.
 * Returns 0; CONC_EINVAL when called more times than messages were put
 * (ValueError), for a queue that is not CONC_MPQ_JOINABLE, NULL or a
 * closed handle. */
CONC_API int conc_mpqueue_task_done(conc_mpqueue_t *q);
/* JoinableQueue.join(): wait until every message ever put (by any
 * process) has been marked done. Python has no timeout; CONC_FOREVER gives
 * its behaviour. Returns 0, CONC_ETIMEDOUT, CONC_EINVAL (not joinable,
 * NULL, closed, bad timeout). */
CONC_API int conc_mpqueue_join(conc_mpqueue_t *q, double timeout);
/* Messages put and not yet marked done (0 when not joinable). */
CONC_API size_t conc_mpqueue_unfinished_tasks(const conc_mpqueue_t *q);

/* How many times a process found a lock of q's segment held by a process
 * that had died and repaired the queue (diagnostics; 0 for NULL). */
CONC_API unsigned long conc_mpqueue_recoveries(const conc_mpqueue_t *q);

#ifdef __cplusplus
}
#endif
#endif /* CONC_IPC_QUEUE_H */
