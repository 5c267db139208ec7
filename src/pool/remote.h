/* remote.h — process-pool tasks run by a backend outside libconc (private).
 *
 * libconc_mpi's executor takes the process pool's own calls
 * (conc_submit_bytes, conc_map_bytes, the word calls) and gives
 * back the same futures and conc_results_t, so switching from a process
 * pool to MPI is one constructor. libconc stays free of MPI: the backend
 * registers its executor ops here, and these exported (CONC_API, but not
 * public) functions do the pool's part of the work on both sides:
 *
 *   parent:  api.c encodes each task (the engine's wire form: wtask_t,
 *            name, data) and hands it with its future to backend->submit;
 *            the backend ships the bytes, marks the future RUNNING when it
 *            dispatches it, and completes it with conc__pool_remote_complete
 *            (the result blob from the worker) or conc__pool_remote_fail.
 *   worker:  conc__pool_remote_run runs one wire task and returns its
 *            result blob.
 *
 * Blob (worker -> parent, untrusted there): rblob_t, then datalen bytes
 * (each item's result, or for a failed item its message with the NUL),
 * padding to 8, then (table) count witem_t. Without a table every item
 * succeeded with unilen bytes.
 */
#ifndef CONC_POOL_REMOTE_H
#define CONC_POOL_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "conc/futures.h"

/* The largest encoded task a remote backend takes (an MPI count is an int). */
#define CONC__REMOTE_MAX ((size_t)1 << 30)

typedef struct conc__rtask {
    conc_future_t *f;       /* borrowed: take a reference to keep it */
    const void *wire;       /* the encoded task, len bytes (copy them) ... */
    size_t len;
    const void *ext;        /* ... followed by extlen bytes here (a map's
                               items, not copied into wire), or NULL */
    size_t extlen;
    uint32_t kind, count;   /* what conc__pool_remote_complete needs back */
} conc__rtask_t;

typedef struct conc__pool_remote {
    const conc_executor_ops_t *ops; /* executors with these ops use this backend */
    /* Queue n tasks, all or none: 0, CONC_ESHUTDOWN, CONC_EBROKEN, CONC_ENOMEM. */
    int (*submit)(conc_executor_t *ex, const conc__rtask_t *ts, size_t n);
} conc__pool_remote_t;

typedef struct {
    uint32_t count, nfail, unilen, table;
    uint64_t datalen;
} conc__rblob_t;

#ifndef CONC_API
#define CONC_API __attribute__((visibility("default")))
#endif

/* Register a backend (kept for the life of the process; up to 4). 0 or
 * CONC_ENOMEM. */
CONC_API int conc__pool_remote_add(const conc__pool_remote_t *r);
/* conc_submit on a remote executor: refused with CONC_ENOTSUP, as on a
 * process pool (the word tasks go through conc_process_pool_submit_word /
 * conc_process_pool_map_word, which take remote executors too). */
CONC_API int conc__pool_remote_submit_word(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *),
                                           void *arg);
/* Worker: run the encoded task (len bytes, checked) and append its blob
 * to the malloc'd buffer *buf (capacity *cap, may be realloc'd) at *used
 * (8-aligned); *used moves to the blob's end, padded to 8. Returns 0;
 * CONC_EBROKEN for bytes that are not a task; CONC_ENOMEM. */
CONC_API int conc__pool_remote_run(const void *wire, size_t len, void **buf, size_t *cap, size_t *used);
/* The same for a blob in which all count items failed with code and msg
 * (a worker whose initializer failed). */
CONC_API int conc__pool_remote_fail_blob(uint32_t count, int code, const char *msg, void **buf, size_t *cap,
                                         size_t *used);
/* Parent: complete f (of a task of kind and count items) from the blob; a
 * malformed blob fails f with CONC_EBROKEN. Does nothing if f is done. */
CONC_API void conc__pool_remote_complete(conc_future_t *f, uint32_t kind, uint32_t count, const void *blob,
                                         size_t len);
/* Parent: fail f with code and msg (if it is not done). */
CONC_API void conc__pool_remote_fail(conc_future_t *f, int code, const char *msg);

#endif
