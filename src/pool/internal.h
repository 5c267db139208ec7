/* internal.h — the process-pool engine shared by ProcessPoolExecutor and
 * multiprocessing.Pool (private). See engine.c for how it works. */
#ifndef CONC_POOL_INTERNAL_H
#define CONC_POOL_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "conc/futures.h"
#include "conc/ipc_queue.h"
#include "conc/pool.h"
#include "conc/sync.h"
#include "process/internal.h"

/* ------------------------------------------------------------ wire */

enum {
    M_TASKS = 1,    /* parent -> worker: hdr, n x (wtask, name, data)      */
    M_STOP = 2,     /* parent -> worker: exit once this is read             */
    M_RESULTS = 3,  /* worker -> parent: hdr, n x (wres, table, data)       */
    M_RETIRE = 4,   /* worker -> parent: max_tasks_per_child reached        */
    M_INITFAIL = 5, /* worker -> parent: hdr, int32 code, message (NUL)     */
    M_DIED = 6,     /* watcher -> manager: hdr, wdied                       */
    M_WAKE = 7      /* anyone -> manager: look at the state again           */
};

enum { K_BYTES = 1, K_WORD = 2, K_CHUNK = 3 };

typedef struct {
    uint32_t type, worker, n, gen;
} mhdr_t;

typedef struct {
    uint64_t id;
    uint32_t kind, count, namelen, stride; /* stride 0 (chunk): offsets */
    uint64_t datalen;                      /* bytes after the padded name */
} wtask_t;

typedef struct {
    uint64_t id;
    uint32_t first, count;  /* items [first, first+count) of the task */
    uint64_t datalen;       /* bytes after the table */
    uint64_t elapsed_ns;    /* time spent on these items */
    uint32_t unilen;        /* WRES_UNIFORM: every item's result length */
    uint32_t flags;
} wres_t;

/* A piece without a table: every item succeeded with unilen bytes, and
 * the data is the items' results one after the other. */
#define WRES_UNIFORM 1u

typedef struct {
    int32_t code;           /* 0 or the item's failure code */
    uint32_t len;           /* result bytes, or message bytes with the NUL */
} witem_t;

typedef struct {
    int32_t pid, exitcode;
    uint64_t proc;          /* the proc_t * (same address space) */
} wdied_t;

typedef struct {
    uint32_t idx, gen, max_tasks, initname_len;
    uint64_t initarg_len;
} wcfg_t;

#define PAD8(n) (((n) + 7) & ~(size_t)7)
#define WIRE_HEAD sizeof(mhdr_t)

/* -------------------------------------------------------- results */

#define CRES_MAGIC 0x43524553u

typedef struct {
    uint64_t off;
    uint32_t len;
    int32_t code;
} citem_t;

/* The outcome of one task (1 item, or a chunk), as one malloc block: the
 * future owns it (as its result and through its msg field, which the
 * futures module frees with the future). Uniform (table == 0): every item
 * succeeded with unilen result bytes, item j's at j * unilen, and there is
 * no table — what a map of fixed-size results gets, so neither side
 * touches a per-item record. Otherwise count citem_t come first. */
typedef struct cres {
    uint32_t magic, count, got, nfail; /* nfail: items with a failure code */
    size_t cap, used;       /* data area */
    size_t blk;             /* bytes malloc'd for the whole block */
    uint32_t unilen, table;
    citem_t items[];        /* table: count of them; then the data area */
} cres_t;

static inline unsigned char *cres_data(cres_t *r)
{
    return r->table ? (unsigned char *)&r->items[r->count] : (unsigned char *)r->items;
}

/* Item j's code, data offset and length. */
static inline int32_t cres_item(const cres_t *r, size_t j, uint64_t *off, uint32_t *len)
{
    if (!r->table) {
        *off = (uint64_t)j * r->unilen;
        *len = r->unilen;
        return 0;
    }
    *off = r->items[j].off;
    *len = r->items[j].len;
    return r->items[j].code;
}

/* Where a task writes its result (worker.c, remote.c; threads.c for a
 * ThreadPool): base is where this item's bytes start in p, len how many
 * it has written so far. */
struct conc_pool_out {
    unsigned char *p;
    size_t cap, base, len;
    bool fixed;             /* p is not this buffer's to realloc (bytes.c: a
                               block that also holds the task's argument):
                               growing moves to a new malloc'd buffer */
};

/* ---------------------------------------------------------- engine */

typedef struct task {
    struct task *next;
    uint64_t id;
    uint64_t msgseq;        /* which message of its worker carried it */
    conc_future_t *f;       /* the engine's reference */
    uint32_t kind, count;
    bool running;           /* its future is RUNNING already */
    const char *name;       /* the task function's registered name (the dump) */
    cres_t *res;            /* being assembled */
    size_t wirelen;         /* wtask + name + data, padded */
    size_t headlen;         /* wtask + name, padded */
    const unsigned char *ext; /* borrowed data (a blocking map's items,
                               valid until it returns), or NULL: in wire */
    unsigned char *wire;    /* points into inl or a malloc'd block, after
                               WIRE_HEAD bytes of room for a message
                               header (a task sent alone goes as is) */
    unsigned char inl[112];
} task_t;

typedef struct proc {
    conc__child_t child;
    struct proc *all_next;
    uint32_t idx, gen;
    bool retired;           /* sent M_RETIRE */
    char name[32];          /* "ProcessPoolWorker-3" (the dump) */
    bool killed;            /* we signalled it */
    int noticed;            /* atomic: the watcher saw it end and sent M_DIED
                               (the notice travels through memory workers can
                               write: only this private flag makes it real) */
} proc_t;

typedef struct {
    conc_mpqueue_t *tq;
    proc_t *proc;           /* current instance or NULL */
    task_t *head, *tail;    /* in flight: dispatched, not resolved */
    size_t ninflight;
    uint64_t msgs_put;
    bool stop_put;          /* its queue holds (or held) the STOP message */
    unsigned budget_used;   /* tasks sent to the current instance */
    uint32_t gen;
} wslot_t;

enum { E_EXECUTOR = 1, E_POOL = 2 };
enum { S_RUNNING = 0, S_CLOSING = 1, S_TERMINATING = 2, S_BROKEN = 3 };

typedef struct engine {
    int mode;
    conc_lock_t mu;
    int state;
    bool stop_sent;
    size_t nw;
    wslot_t *w;
    conc_mpqueue_t *rq;
    size_t tmsg_max;        /* largest task message */
    task_t *bl_head, *bl_tail; /* backlog */
    size_t nbacklog;
    uint64_t next_id;
    int live;               /* processes started and not yet seen dead */
    proc_t *all;            /* every proc not yet released */
    char broken_msg[384];
    double avg_ns;          /* EWMA of a task's run time */
    unsigned rr;            /* round-robin start for dispatch */
    conc_start_method_t method;
    const conc_registration_t *init;
    void *initarg;
    size_t initarg_len;
    unsigned max_tasks;
    unsigned nstarted;
    unsigned char *scratch; /* a task message being built (tmsg_max) */
    int epfd, evfd;
    pthread_t manager, watcher;
    bool threads;
    conc_event_t done;      /* set when the manager has finished */
    conc_lock_t join_mu;
    bool joined;
    struct engine *reg_next;
} engine_t;

typedef struct {
    size_t workers;
    conc_start_method_t method;
    conc_process_fn initializer;
    const void *initarg;
    size_t initarg_len;
    unsigned max_tasks;
    size_t queue_capacity;
} engine_opts_t;

int conc__engine_new(engine_t **out, int mode, const engine_opts_t *o);
/* Make a task: fn's registry entry, kind, payload. Returns 0 or an error. */
int conc__task_new(engine_t *e, task_t **out, const conc_registration_t *reg, uint32_t kind,
                   const void *items, size_t item_size, size_t count, bool borrow);
/* Copy the borrowed data of every task still waiting in the backlog (a
 * blocking map is about to return early). */
void conc__engine_unborrow(engine_t *e);
void conc__task_free(task_t *t);
/* Queue tasks (each with a future set), all or none. 0, CONC_EBROKEN,
 * CONC_ESHUTDOWN. On error the tasks are not consumed. */
int conc__engine_submit(engine_t *e, task_t **ts, size_t n);
/* Stop accepting; cancel queued futures if asked; workers exit when done. */
void conc__engine_close(engine_t *e, bool cancel);
void conc__engine_terminate(engine_t *e);
/* ProcessPoolExecutor.terminate_workers / kill_workers (3.14): cancel the
 * backlog, break the pool (in-flight futures fail with CONC_EBROKEN) and
 * send sig to every worker. */
void conc__engine_force_stop(engine_t *e, int sig);
/* Wait for the manager to finish (0 or CONC_ETIMEDOUT). */
int conc__engine_join(engine_t *e, int64_t deadline);
void conc__engine_destroy(engine_t *e);
size_t conc__engine_pids(engine_t *e, int *pids, size_t cap);
/* The dump (observe/dump.c): every live engine with its pending and
 * running work, then its workers as child processes; returns how many
 * worker lines it printed. */
size_t conc__engines_dump(FILE *f);

/* The registry entry of a task function; NULL if not a usable one. */
const conc_registration_t *conc__pool_entry(void (*fn)(void), bool word);

/* Fault in memory / a queue's ring now (madvise MADV_POPULATE_WRITE). */
#define POPULATE_MAX ((size_t)64 << 20) /* most ring bytes a pool populates */
void conc__pool_populate(void *p, size_t len);
void conc__pool_populate_queue(conc_mpqueue_t *q);

/* Result blocks: a new one of at least bytes (malloc, or one a finished
 * map gave back), and giving one back (kept for reuse while the cache is
 * small: a big map's blocks would otherwise go back to the kernel and be
 * faulted in again, page by page, by the next). */
cres_t *conc__cres_alloc(size_t bytes);
void conc__cres_release(cres_t *c);

/* For the fuzzer: parse one M_RESULTS message (any bytes) for e; false
 * when malformed. Tasks it completed are linked from *done. */
bool conc__engine_parse_results(engine_t *e, const unsigned char *m, size_t n, task_t **done);

/* threads.c: multiprocessing.pool.ThreadPool's backend. A job runs
 * items (fixed size: item_size > 0; or conc_buf_t: item_size 0) through
 * fn in a thread of ex and completes f (a fresh conc__future_alloc, whose
 * reference the job takes) with a cres_t block, as a worker's results do
 * (apply: one item, and its failure fails f, as a K_BYTES task's does).
 * 0 or an error (nothing queued; f untouched). */
typedef struct tpool tpool_t;
int conc__tpool_new(tpool_t **out, size_t threads, conc_process_fn init, const void *initarg, size_t initarg_len);
int conc__tpool_submit(tpool_t *tp, conc_future_t *f, conc_pool_fn fn, const void *items,
                       size_t item_size, size_t count, bool apply);
void conc__tpool_close(tpool_t *tp);
void conc__tpool_terminate(tpool_t *tp);
int conc__tpool_join(tpool_t *tp, int64_t deadline);
void conc__tpool_destroy(tpool_t *tp);
/* Run fn(arg) on the pool's result-handler thread (started on first use),
 * after the calls deferred before it; join waits for it. 0, or CONC_ENOMEM
 * / CONC_EAGAIN (no thread): the caller runs it itself. */
int conc__tpool_defer(tpool_t *tp, void (*fn)(void *), void *arg);
/* p's thread backend (NULL: a process Pool). */
tpool_t *conc__pool_tpool(const conc_pool_t *p);

/* bytes.c: bytes tasks on an executor that runs them in this process.
 * Submits one job of count items (fixed size: item_size > 0; or
 * conc_buf_t: item_size 0), copied first, with conc_submit(ex) and
 * returns its future in *out: it completes with a cres_t result — uniform
 * for one item, whose failure fails the future (chunk false); a table of
 * every item's outcome for a chunk. The future owns the job's block
 * (f->owned, freed by conc__bytes_free), and the result is
 * conc__bytes_result(f->owned). 0 or what conc_submit returned;
 * CONC_EINVAL, CONC_ERANGE, CONC_ENOMEM (nothing queued). */
int conc__bytes_submit(conc_executor_t *ex, conc_future_t **out, conc_pool_fn fn, const void *items,
                       size_t item_size, size_t count, bool chunk);
/* The same for one item of len bytes (the submit of a bytes task). */
int conc__bytes_submit_one(conc_executor_t *ex, conc_future_t **out, conc_pool_fn fn, const void *arg,
                           size_t len);
void conc__bytes_free(void *block);
const void *conc__bytes_result(const void *block);

/* api.c, for async.c: map_async's start (copies the items) and the
 * chunks of a results object. */
int conc__pool_map_start(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                         size_t chunksize, conc_results_t **out);
size_t conc__results_nchunks(const conc_results_t *r);
size_t conc__results_chunksize(const conc_results_t *r);
conc_future_t *conc__results_chunk(const conc_results_t *r, size_t c);

/* worker.c */
/* Do a chunk task's items lie inside its data (datalen bytes at data)? */
bool conc__pool_chunk_ok(const wtask_t *t, const unsigned char *data);
extern const conc_registration_t *conc__pool_worker_entry(void);

#endif
