/*
 * executor.c — the MPI executor's parent side (see conc/mpi.h).
 *
 * One communication thread ("conc-mpi") makes every MPI call of the
 * parent, for every executor: submitters only queue work under G.mu, so
 * MPI_THREAD_SERIALIZED is enough and no green or OS thread ever blocks in
 * MPI. Tasks arrive already encoded by the process pool's API (remote.h:
 * the engine's wire form), each with its future.
 *
 * Dispatch. Each executor keeps a backlog (FIFO). The thread moves tasks
 * to workers with room — at most INFLIGHT messages per worker — in
 * batches sized from the measured run time of recent tasks (about 200 µs
 * of work per message, as the process pool does), so trivial tasks cost a
 * fraction of a message each while long ones go one at a time. A future
 * turns RUNNING when its batch is sent (cancel works until then). A
 * worker answers each T_TASKS message with one T_RESULTS message, in
 * order, so a worker's in-flight batches are a FIFO and a reply always
 * belongs to its head.
 *
 * Waiting. The thread probes for replies with MPI_Iprobe; with work in
 * flight it spins briefly, then yields, then sleeps up to 1 ms at a time
 * (Open MPI has no file descriptor to wait on); with nothing in flight it
 * sleeps on a condition variable that submitters signal.
 *
 * Failure. A task's failure travels in its result blob. An initializer's
 * failure (T_INITFAIL) breaks the executor: every pending and in-flight
 * future fails with CONC_EBROKEN. Worker deaths: each worker reports its
 * pid and host; for workers on this host the thread polls a pidfd every
 * 20 ms, and a death breaks the executor the same way (if Open MPI lets
 * this process live: under mpirun it ends the whole job; docs/mpi.md).
 *
 * Shutdown. close marks the executor (cancelling the backlog if asked);
 * once the backlog is empty and every live worker has answered, the thread
 * sends T_EXIT (spawned workers: they disconnect and exit) or T_DETACH
 * (mpirun's ranks: they wait for the next executor), and sets `done`.
 * At rank 0's exit (mpi.c's atexit) live executors are shut down with
 * wait, the thread stops, the world's ranks get T_EXIT, MPI is finalized.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "conc/sync.h"
#include "mpi/internal.h"
#include "pool/remote.h"

#define INFLIGHT 2
#define BATCH_NS 200000.0
#define BATCH_MAX 256
#define BATCH_BYTES ((size_t)4 << 20)
#define DEATH_CHECK_NS 20000000

typedef struct pend {
    struct pend *next;
    conc_future_t *f;       /* our reference */
    uint32_t kind, count;
    size_t len;             /* of wire (padded to 8 with zeros) */
    /* a task sent alone goes out as is: bh, blen and wire are one T_TASKS
     * message (a big map chunk is not copied again) */
    mbatch_t bh;
    uint64_t blen;
    unsigned char wire[];
} pend_t;

_Static_assert(offsetof(pend_t, wire) == offsetof(pend_t, bh) + sizeof(mbatch_t) + 8,
               "a lone task's message is contiguous");

typedef struct batch {
    struct batch *next;
    uint32_t n;
    pend_t **ts;
    unsigned char *msg;     /* while the send may be pending */
    MPI_Request req;
} batch_t;

typedef struct {
    int rank, pid, pidfd;
    batch_t *head, *tail;
    unsigned nb;
    bool dead;
    int64_t last;           /* when it last answered (or was set up) */
} wrk_t;

enum { X_NEW, X_RUNNING, X_DONE };

typedef struct mx {
    conc_executor_t base;
    struct mx *next;
    /* under G.mu */
    int state;
    bool closing, broken;
    bool abandoned;         /* its creator gave up waiting for the setup:
                               the thread ends and frees it */
    pend_t *bl_head, **bl_tail;
    size_t nbl;
    char broken_msg[400];
    /* the thread's */
    MPI_Comm comm;
    bool spawned;
    size_t nw;
    wrk_t *w;
    double avg_ns;
    int setup_rc;
    conc_event_t ready, done;
    /* options */
    char initname[256];
    unsigned char *initarg;
    size_t initarg_len;
    char *command;
    char **args;
    size_t want;
} mx_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, stop, sleeping, world_busy;
    pthread_t th;
    mx_t *list;
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static char host[64];

static void lock(void) { pthread_mutex_lock(&G.mu); }
static void unlock(void) { pthread_mutex_unlock(&G.mu); }
static void wake(void)
{
    if (G.sleeping)
        pthread_cond_signal(&G.cv);
}

static void pend_free(pend_t *p)
{
    if (p->f)
        conc_future_free(p->f);
    free(p);
}

static bool is_comm_thread(void) { return G.started && pthread_equal(pthread_self(), G.th); }

/* ------------------------------------------------------------ breaking */

static void fail_batches(mx_t *x, int code, const char *msg)
{
    for (size_t i = 0; i < x->nw; i++)
        for (batch_t *b = x->w[i].head; b; b = b->next)
            for (uint32_t j = 0; j < b->n; j++)
                conc__pool_remote_fail(b->ts[j]->f, code, msg);
}

/* Break x: every pending and in-flight future fails with CONC_EBROKEN. */
static void break_exec(mx_t *x, const char *msg)
{
    lock();
    if (!x->broken) {
        x->broken = true;
        snprintf(x->broken_msg, sizeof x->broken_msg, "%s", msg);
    }
    pend_t *p = x->bl_head;
    x->bl_head = NULL;
    x->bl_tail = &x->bl_head;
    x->nbl = 0;
    unlock();
    for (pend_t *n; p; p = n) {
        n = p->next;
        conc__pool_remote_fail(p->f, CONC_EBROKEN, x->broken_msg);
        pend_free(p);
    }
    fail_batches(x, CONC_EBROKEN, x->broken_msg);
}

/* ------------------------------------------------------------ setup */

static int send_config(mx_t *x, int rank)
{
    size_t nl = strlen(x->initname);
    size_t len = sizeof(mcfg_t) + nl + x->initarg_len;
    unsigned char *m = malloc(len);
    if (!m)
        return MPI_ERR_NO_MEM;
    mcfg_t c = {(uint32_t)nl, 0, x->initarg_len};
    memcpy(m, &c, sizeof c);
    memcpy(m + sizeof c, x->initname, nl);
    if (x->initarg_len)
        memcpy(m + sizeof c + nl, x->initarg, x->initarg_len);
    int rc = MPI_Send(m, (int)len, MPI_BYTE, rank, T_CONFIG, x->comm);
    free(m);
    return rc;
}

static void setup(mx_t *x)
{
    int rc = 0;
    if (!x->spawned) {
        x->comm = conc__mpi_world;
    } else {
        int *errs = calloc(x->nw, sizeof *errs);
        char exe[PATH_MAX];
        const char *cmd = x->command;
        if (!cmd) {
            ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
            exe[n > 0 ? n : 0] = 0;
            cmd = exe;
        }
        int src = errs ? MPI_Comm_spawn(cmd, x->args ? x->args : MPI_ARGV_NULL, (int)x->nw, MPI_INFO_NULL, 0,
                                        MPI_COMM_SELF, &x->comm, errs)
                       : MPI_ERR_NO_MEM;
        if (src != MPI_SUCCESS) {
            rc = CONC_ESYS;
            x->comm = MPI_COMM_NULL;
        } else {
            MPI_Comm_set_errhandler(x->comm, MPI_ERRORS_RETURN);
            for (size_t i = 0; i < x->nw; i++)
                if (errs[i] != MPI_SUCCESS)
                    rc = CONC_ESYS;
        }
        free(errs);
    }
    for (size_t i = 0; rc == 0 && i < x->nw; i++) {
        x->w[i] = (wrk_t){(int)(x->spawned ? i : i + 1), -1, -1, NULL, NULL, 0, false, conc__mpi_now()};
        if (send_config(x, x->w[i].rank) != MPI_SUCCESS)
            rc = CONC_ESYS;
    }
    x->setup_rc = rc;
    lock();
    x->state = rc ? X_DONE : X_RUNNING;
    bool abandoned = x->abandoned;
    unlock();
    if (!abandoned)
        conc_event_set(&x->ready); /* x is its creator's again */
}

/* ------------------------------------------------------------ dispatch */

static size_t batch_size(mx_t *x)
{
    if (x->avg_ns <= 0)
        return 1;
    double b = BATCH_NS / x->avg_ns;
    return b < 1 ? 1 : b > BATCH_MAX ? BATCH_MAX : (size_t)b;
}

/* Send one batch to worker i (called unlocked with the tasks popped). */
static void send_batch(mx_t *x, wrk_t *w, pend_t *list, uint32_t n)
{
    batch_t *b = calloc(1, sizeof *b);
    pend_t **ts = malloc(n * sizeof *ts);
    size_t len = sizeof(mbatch_t);
    uint32_t k = 0;
    for (pend_t *p = list, *nx; p; p = nx) {
        nx = p->next;
        /* RUNNING from here; a future cancelled meanwhile is dropped */
        if (!b || !ts || conc_future_set_running_or_notify_cancel(p->f) != 1) {
            if (!b || !ts)
                conc__pool_remote_fail(p->f, CONC_ENOMEM, "out of memory");
            pend_free(p);
            continue;
        }
        ts[k++] = p;
        len += 8 + MPAD8(p->len);
    }
    if (k == 0) {
        free(ts);
        free(b);
        return;
    }
    unsigned char *m = k == 1 ? (unsigned char *)&ts[0]->bh : malloc(len);
    if (!m) {
        for (uint32_t j = 0; j < k; j++) {
            conc__pool_remote_fail(ts[j]->f, CONC_ENOMEM, "out of memory");
            pend_free(ts[j]);
        }
        free(ts);
        free(b);
        return;
    }
    mbatch_t h = {k, 0, 0};
    memcpy(m, &h, sizeof h);
    size_t pos = sizeof h;
    if (k == 1) {
        ts[0]->blen = ts[0]->len;
        pos = len;
    }
    for (uint32_t j = 0; j < k && k > 1; j++) {
        uint64_t l = ts[j]->len;
        memcpy(m + pos, &l, 8);
        memcpy(m + pos + 8, ts[j]->wire, l);
        memset(m + pos + 8 + l, 0, MPAD8(l) - l);
        pos += 8 + MPAD8(l);
    }
    b->n = k;
    b->ts = ts;
    b->msg = k == 1 ? NULL : m; /* a lone task's message is its pend */
    b->req = MPI_REQUEST_NULL;
    if (w->tail)
        w->tail->next = b;
    else
        w->head = b;
    w->tail = b;
    w->nb++;
    if (MPI_Isend(m, (int)len, MPI_BYTE, w->rank, T_TASKS, x->comm, &b->req) != MPI_SUCCESS) {
        char msg[128];
        snprintf(msg, sizeof msg, "BrokenMPIExecutor: sending to worker rank %d failed", w->rank);
        break_exec(x, msg);
    }
}

/* Move backlog tasks to workers with room (G.mu held; dropped and
 * retaken while sending). Returns true if it sent anything. */
static bool dispatch(mx_t *x)
{
    bool did = false;
    while (x->nbl && !x->broken) {
        /* the worker with the least in flight, and among those the one
         * that answered last: it is still polling, not asleep (workers
         * back off when idle), so a lone task gets the fastest answer */
        wrk_t *w = NULL;
        size_t free_workers = 0;
        for (size_t i = 0; i < x->nw; i++) {
            wrk_t *c = &x->w[i];
            if (c->dead || c->nb >= INFLIGHT)
                continue;
            free_workers++;
            if (!w || c->nb < w->nb || (c->nb == w->nb && c->last > w->last))
                w = c;
        }
        if (!w)
            break;
        size_t want = batch_size(x);
        size_t share = (x->nbl + free_workers - 1) / (free_workers ? free_workers : 1);
        if (want > share)
            want = share; /* spread what there is over the free workers */
        pend_t *head = x->bl_head, **tail = &x->bl_head;
        size_t n = 0, bytes = 0;
        while (*tail && n < want && (n == 0 || bytes + (*tail)->len <= BATCH_BYTES)) {
            bytes += (*tail)->len;
            tail = &(*tail)->next;
            n++;
        }
        x->bl_head = *tail;
        if (!x->bl_head)
            x->bl_tail = &x->bl_head;
        *tail = NULL;
        x->nbl -= n;
        unlock();
        send_batch(x, w, head, (uint32_t)n);
        lock();
        did = true;
    }
    return did;
}

/* ------------------------------------------------------------ replies */

static wrk_t *worker_of(mx_t *x, int source)
{
    size_t i = x->spawned ? (size_t)source : (size_t)source - 1;
    return source >= 0 && i < x->nw ? &x->w[i] : NULL;
}

static void batch_done(batch_t *b)
{
    if (b->req != MPI_REQUEST_NULL)
        MPI_Wait(&b->req, MPI_STATUS_IGNORE);
    for (uint32_t j = 0; j < b->n; j++)
        pend_free(b->ts[j]);
    free(b->ts);
    free(b->msg);
    free(b);
}

static void on_results(mx_t *x, wrk_t *w, const unsigned char *m, size_t n)
{
    batch_t *b = w->head;
    if (!b)
        return; /* nothing asked: ignore */
    w->head = b->next;
    if (!w->head)
        w->tail = NULL;
    w->nb--;
    w->last = conc__mpi_now();
    mbatch_t h = {0, 0, 0};
    if (n >= sizeof h)
        memcpy(&h, m, sizeof h);
    size_t pos = sizeof h;
    uint32_t ran = 0;
    for (uint32_t j = 0; j < b->n; j++) {
        pend_t *p = b->ts[j];
        uint64_t bl = 0;
        if (j < h.n && n >= pos + 8) {
            memcpy(&bl, m + pos, 8);
            if (bl <= n - pos - 8) {
                conc__pool_remote_complete(p->f, p->kind, p->count, m + pos + 8, bl);
                pos += 8 + (MPAD8(bl) <= n - pos - 8 ? MPAD8(bl) : n - pos - 8);
                ran += p->count;
                continue;
            }
        }
        conc__pool_remote_fail(p->f, CONC_EBROKEN, "BrokenMPIExecutor: a worker sent a malformed reply");
        pos = n;
    }
    if (ran) {
        double per = (double)h.elapsed_ns / ran;
        x->avg_ns = x->avg_ns <= 0 ? per : 0.7 * x->avg_ns + 0.3 * per;
    }
    batch_done(b);
}

static void on_ready(mx_t *x, wrk_t *w, const unsigned char *m, size_t n)
{
    mready_t r;
    if (n < sizeof r)
        return;
    memcpy(&r, m, sizeof r);
    r.host[sizeof r.host - 1] = 0;
    if (w->pidfd >= 0 || strcmp(r.host, host) != 0)
        return;
    __atomic_store_n(&w->pid, r.pid, __ATOMIC_RELEASE);
    w->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)r.pid, 0);
    (void)x;
}

static void on_initfail(mx_t *x, wrk_t *w, const unsigned char *m, size_t n)
{
    int32_t code = 0;
    char msg[400];
    if (n >= 4)
        memcpy(&code, m, 4);
    size_t ml = n > 4 ? n - 4 : 0;
    char text[256];
    snprintf(text, sizeof text, "%.*s", (int)(ml < 255 ? ml : 255), n > 4 ? (const char *)m + 4 : "");
    snprintf(msg, sizeof msg, "BrokenMPIExecutor: initializer failed in worker rank %d (code %d): %s", w->rank,
             (int)code, text);
    fprintf(stderr, "Exception in initializer: %s\n", text);
    break_exec(x, msg);
}

/* Test hook (tests/mpi, atomic): the next reply buffer that must grow
 * cannot be had. */
bool conc__mpi_test_nomem;

/* A reply the heap has no room for. MPI cannot receive a message in
 * parts, and a truncating receive is not safe (Open MPI's single-copy
 * path writes past the buffer), so it is received whole into scratch
 * pages (mmap'd, MAP_NORESERVE: no commit charge up front), which go back
 * at once: a reply to a batch fails that batch's futures with CONC_ENOMEM
 * (the worker ran them; their results cannot be kept), any other message
 * breaks the executor. Returns false when not even that was possible: the
 * message stays queued and is tried again at the next poll. */
static bool drop_reply(mx_t *x, int source, int tag, size_t n)
{
    __atomic_store_n(&conc__mpi_test_nomem, false, __ATOMIC_RELAXED);
    size_t len = n ? n : 1;
    void *scratch = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (scratch == MAP_FAILED)
        return false;
    int rc = MPI_Recv(scratch, (int)n, MPI_BYTE, source, tag, x->comm, MPI_STATUS_IGNORE);
    munmap(scratch, len);
    wrk_t *w = worker_of(x, source);
    if (rc != MPI_SUCCESS || !w || tag != T_RESULTS || !w->head) {
        break_exec(x, rc != MPI_SUCCESS ? "BrokenMPIExecutor: MPI_Recv failed"
                                        : "BrokenMPIExecutor: out of memory for a reply");
        return true;
    }
    batch_t *b = w->head;
    w->head = b->next;
    if (!w->head)
        w->tail = NULL;
    w->nb--;
    w->last = conc__mpi_now();
    for (uint32_t j = 0; j < b->n; j++)
        conc__pool_remote_fail(b->ts[j]->f, CONC_ENOMEM, "out of memory for the result of this task");
    batch_done(b);
    return true;
}

/* Receive everything waiting on x's communicator. */
static bool poll_exec(mx_t *x, unsigned char **buf, size_t *cap)
{
    bool did = false;
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, x->comm, &flag, &st) != MPI_SUCCESS) {
            break_exec(x, "BrokenMPIExecutor: MPI_Iprobe failed");
            return did;
        }
        if (!flag)
            return did;
        did = true;
        int cnt = 0;
        MPI_Get_count(&st, MPI_BYTE, &cnt);
        size_t n = cnt > 0 ? (size_t)cnt : 0;
        if (n + 1 > *cap) {
            size_t want = n + 1 < 65536 ? 65536 : n + 1;
            unsigned char *nb = __atomic_load_n(&conc__mpi_test_nomem, __ATOMIC_RELAXED) ? NULL : malloc(want);
            if (!nb) {
                if (!drop_reply(x, st.MPI_SOURCE, st.MPI_TAG, n))
                    return did; /* no memory at all: the next poll tries again */
                continue;
            }
            free(*buf);
            *buf = nb;
            *cap = want;
        }
        if (MPI_Recv(*buf, cnt, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, x->comm, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
            break_exec(x, "BrokenMPIExecutor: MPI_Recv failed");
            return did;
        }
        wrk_t *w = worker_of(x, st.MPI_SOURCE);
        if (!w)
            continue;
        if (st.MPI_TAG == T_RESULTS)
            on_results(x, w, *buf, n);
        else if (st.MPI_TAG == T_READY)
            on_ready(x, w, *buf, n);
        else if (st.MPI_TAG == T_INITFAIL)
            on_initfail(x, w, *buf, n);
    }
}

static void check_deaths(mx_t *x)
{
    for (size_t i = 0; i < x->nw; i++) {
        wrk_t *w = &x->w[i];
        if (w->dead || w->pidfd < 0)
            continue;
        struct pollfd p = {w->pidfd, POLLIN, 0};
        if (poll(&p, 1, 0) != 1)
            continue;
        w->dead = true;
        char msg[160];
        snprintf(msg, sizeof msg, "BrokenMPIExecutor: worker rank %d (pid %d) died", w->rank, w->pid);
        break_exec(x, msg);
    }
}

/* ------------------------------------------------------------ finish */

static bool can_finish(mx_t *x)
{
    if (x->state != X_RUNNING || !x->closing || x->nbl)
        return false;
    for (size_t i = 0; i < x->nw; i++)
        if (!x->w[i].dead && x->w[i].nb)
            return false;
    return true;
}

static void finish(mx_t *x)
{
    bool anydead = false;
    for (size_t i = 0; i < x->nw; i++) {
        wrk_t *w = &x->w[i];
        anydead |= w->dead;
        if (!w->dead)
            MPI_Send(NULL, 0, MPI_BYTE, w->rank, x->spawned ? T_EXIT : T_DETACH, x->comm);
        for (batch_t *b = w->head, *n; b; b = n) { /* a dead worker's: never answered */
            n = b->next;
            if (b->req != MPI_REQUEST_NULL)
                MPI_Request_free(&b->req);
            /* MPI may still read the message (b->msg, or a lone task's
             * pend): only the futures are given back, the rest is left */
            for (uint32_t j = 0; j < b->n; j++)
                b->ts[j]->f = (conc_future_free(b->ts[j]->f), NULL);
        }
        w->head = w->tail = NULL;
        w->nb = 0;
    }
    if (x->spawned && x->comm != MPI_COMM_NULL) {
        if (anydead)
            MPI_Comm_free(&x->comm);
        else
            MPI_Comm_disconnect(&x->comm);
    }
    /* wait (briefly) until the workers on this host are gone, so none is
     * left running once shutdown(wait) returns */
    for (size_t i = 0; x->spawned && i < x->nw; i++) {
        wrk_t *w = &x->w[i];
        if (w->pidfd >= 0 && !w->dead) {
            struct pollfd p = {w->pidfd, POLLIN, 0};
            poll(&p, 1, 5000);
        }
    }
    for (size_t i = 0; i < x->nw; i++)
        if (x->w[i].pidfd >= 0) {
            close(x->w[i].pidfd);
            x->w[i].pidfd = -1;
        }
}

static void mx_destroy(conc_executor_t *ex);

/* ------------------------------------------------------------ the thread */

static void *comm_main(void *arg)
{
    (void)arg;
    unsigned char *buf = NULL;
    size_t cap = 0;
    int64_t idle_since = 0, last_check = 0;
    mx_t **snap = NULL;
    size_t snapcap = 0;
    lock();
    for (;;) {
        bool did = false;
        for (mx_t *x = G.list; x; x = x->next)
            if (x->state == X_NEW) {
                unlock();
                setup(x);
                lock();
                did = true;
            }
        for (mx_t *x = G.list; x; x = x->next)
            if (x->state == X_RUNNING && x->nbl)
                did |= dispatch(x);
        for (mx_t **pp = &G.list; *pp;) {
            mx_t *x = *pp;
            if (x->state == X_DONE || can_finish(x)) {
                *pp = x->next;
                bool run = x->state == X_RUNNING, abandoned = x->abandoned;
                x->state = X_DONE;
                if (!x->spawned)
                    G.world_busy = false;
                unlock();
                if (run)
                    finish(x);
                if (abandoned)
                    mx_destroy(&x->base);
                else
                    conc_event_set(&x->done); /* x may be freed from here */
                lock();
                did = true;
                pp = &G.list;
                continue;
            }
            pp = &x->next;
        }
        if (G.stop && !G.list)
            break;
        size_t ns = 0, nlist = 0;
        bool inflight = false;
        for (mx_t *x = G.list; x; x = x->next)
            nlist++;
        if (nlist > snapcap) {
            mx_t **ns2 = realloc(snap, nlist * 2 * sizeof *snap);
            if (ns2) {
                snap = ns2;
                snapcap = nlist * 2;
            }
        }
        for (mx_t *x = G.list; x && ns < snapcap; x = x->next)
            if (x->state == X_RUNNING) {
                snap[ns++] = x;
                for (size_t i = 0; i < x->nw; i++)
                    inflight |= x->w[i].nb > 0;
            }
        unlock();
        for (size_t i = 0; i < ns; i++)
            did |= poll_exec(snap[i], &buf, &cap);
        int64_t now = conc__mpi_now();
        if (now - last_check > DEATH_CHECK_NS) {
            last_check = now;
            for (size_t i = 0; i < ns; i++)
                check_deaths(snap[i]);
        }
        lock();
        if (did) {
            idle_since = 0;
            continue;
        }
        if (!idle_since)
            idle_since = now;
        int64_t idle = now - idle_since;
        bool work = G.stop;
        for (mx_t *x = G.list; x && !work; x = x->next)
            work = x->state != X_RUNNING || (x->nbl && !x->broken) || can_finish(x);
        if (work)
            continue;
        if (idle < 200000) {
            unlock();
            sched_yield();
            lock();
            continue;
        }
        int64_t sleep_ns = inflight ? (idle / 8 < 1000000 ? idle / 8 : 1000000) : DEATH_CHECK_NS;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + sleep_ns;
        ts.tv_sec = t / 1000000000;
        ts.tv_nsec = t % 1000000000;
        G.sleeping = true;
        pthread_cond_timedwait(&G.cv, &G.mu, &ts);
        G.sleeping = false;
    }
    unlock();
    free(buf);
    free(snap);
    return NULL;
}

static int start_thread(void)
{
    if (G.started)
        return 0;
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_destroy(&G.cv);
    pthread_cond_init(&G.cv, &a);
    pthread_condattr_destroy(&a);
    gethostname(host, sizeof host - 1);
    G.stop = false;
    if (pthread_create(&G.th, NULL, comm_main, NULL))
        return CONC_EAGAIN;
    pthread_setname_np(G.th, "conc-mpi");
    G.started = true;
    return 0;
}

/* ------------------------------------------------------------ executor */

static int mx_submit(conc_executor_t *ex, const conc__rtask_t *ts, size_t n)
{
    mx_t *x = (mx_t *)ex;
    pend_t *head = NULL, **tail = &head;
    for (size_t i = 0; i < n; i++) {
        size_t len = MPAD8(ts[i].len + ts[i].extlen);
        pend_t *p = malloc(sizeof *p + len);
        if (!p) {
            for (pend_t *q = head, *nx; q; q = nx) {
                nx = q->next;
                pend_free(q);
            }
            return CONC_ENOMEM;
        }
        p->next = NULL;
        p->f = conc_future_ref(ts[i].f);
        p->kind = ts[i].kind;
        p->count = ts[i].count;
        p->len = len;
        memcpy(p->wire, ts[i].wire, ts[i].len);
        if (ts[i].extlen)
            memcpy(p->wire + ts[i].len, ts[i].ext, ts[i].extlen);
        memset(p->wire + ts[i].len + ts[i].extlen, 0, len - ts[i].len - ts[i].extlen);
        *tail = p;
        tail = &p->next;
    }
    lock();
    int rc = x->broken ? CONC_EBROKEN : x->closing ? CONC_ESHUTDOWN : 0;
    if (rc == 0) {
        *x->bl_tail = head;
        x->bl_tail = tail;
        x->nbl += n;
        wake();
    }
    unlock();
    if (rc)
        for (pend_t *q = head, *nx; q; q = nx) {
            nx = q->next;
            q->f = (conc_future_free(q->f), NULL);
            free(q);
        }
    return rc;
}

static int mx_submit_word(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *arg)
{
    return conc__pool_remote_submit_word(ex, out, fn, arg);
}

static int mx_shutdown(conc_executor_t *ex, bool wait, bool cancel_futures)
{
    mx_t *x = (mx_t *)ex;
    pend_t *p = NULL;
    lock();
    x->closing = true;
    if (cancel_futures) {
        p = x->bl_head;
        x->bl_head = NULL;
        x->bl_tail = &x->bl_head;
        x->nbl = 0;
    }
    wake();
    unlock();
    for (pend_t *n; p; p = n) {
        n = p->next;
        conc_future_cancel(p->f);
        conc_future_set_running_or_notify_cancel(p->f);
        pend_free(p);
    }
    if (wait && is_comm_thread())
        return CONC_EPERM; /* from a callback run by the thread: it would wait for itself */
    if (wait)
        conc_event_wait(&x->done, CONC_FOREVER);
    return 0;
}

static void mx_destroy(conc_executor_t *ex)
{
    mx_t *x = (mx_t *)ex;
    free(x->w);
    free(x->initarg);
    free(x->command);
    if (x->args) {
        for (char **a = x->args; *a; a++)
            free(*a);
        free(x->args);
    }
    free(x);
}

static const conc_executor_ops_t mx_ops = {"MPIPoolExecutor", mx_submit_word, mx_shutdown, mx_destroy};
static const conc__pool_remote_t mx_remote = {&mx_ops, mx_submit};

/* An executable file at path, or (no slash) in a PATH directory. */
static bool program_found(const char *cmd)
{
    if (!*cmd)
        return false;
    if (strchr(cmd, '/'))
        return access(cmd, X_OK) == 0;
    const char *path = getenv("PATH");
    char buf[PATH_MAX];
    while (path && *path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        if (snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, cmd) < (int)sizeof buf && access(buf, X_OK) == 0)
            return true;
        path = end ? end + 1 : NULL;
    }
    return false;
}

static int copy_opts(mx_t *x, const conc_mpi_opts_t *o)
{
    if (o->initializer) {
        const conc_registration_t *r = conc_registry_find_fn((void (*)(void))o->initializer);
        if (!r || strlen(r->name) > 255)
            return CONC_EINVAL;
        snprintf(x->initname, sizeof x->initname, "%s", r->name);
    }
    if (o->initarg_len) {
        if (!o->initarg || !(x->initarg = malloc(o->initarg_len)))
            return o->initarg ? CONC_ENOMEM : CONC_EINVAL;
        memcpy(x->initarg, o->initarg, o->initarg_len);
        x->initarg_len = o->initarg_len;
    }
    if (o->command && !program_found(o->command))
        return CONC_EINVAL; /* Open MPI 4.1's spawn of a missing program never returns */
    if (o->command && !(x->command = strdup(o->command)))
        return CONC_ENOMEM;
    if (o->args) {
        size_t n = 0;
        while (o->args[n])
            n++;
        if (!(x->args = calloc(n + 1, sizeof *x->args)))
            return CONC_ENOMEM;
        for (size_t i = 0; i < n; i++)
            if (!(x->args[i] = strdup(o->args[i])))
                return CONC_ENOMEM;
    }
    return 0;
}

int conc_mpi_executor_new(conc_executor_t **out, const conc_mpi_opts_t *opts)
{
    if (!out)
        return CONC_EINVAL;
    conc_mpi_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.max_workers > 4096)
        return CONC_EINVAL;
    int rc = conc__pool_remote_add(&mx_remote);
    if (rc)
        return rc;
    if ((rc = conc__mpi_init(NULL, NULL)))
        return rc;
    mx_t *x = calloc(1, sizeof *x);
    if (!x)
        return CONC_ENOMEM;
    x->base.ops = &mx_ops;
    x->bl_tail = &x->bl_head;
    x->comm = MPI_COMM_NULL;
    conc_event_init(&x->ready);
    conc_event_init(&x->done);
    if ((rc = copy_opts(x, &o))) {
        mx_destroy(&x->base);
        return rc;
    }
    lock();
    int size = conc__mpi_wsize;
    x->spawned = o.spawn || conc__mpi_world == MPI_COMM_NULL;
    if (!x->spawned) {
        if (G.world_busy)
            rc = CONC_EAGAIN;
        else if (o.max_workers > (size_t)size - 1)
            rc = CONC_EINVAL;
        x->nw = o.max_workers ? o.max_workers : (size_t)size - 1;
    } else {
        x->nw = o.max_workers ? o.max_workers : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
    }
    if (rc == 0 && !(x->w = calloc(x->nw ? x->nw : 1, sizeof *x->w)))
        rc = CONC_ENOMEM;
    if (rc == 0)
        rc = start_thread();
    if (rc == 0) {
        if (!x->spawned)
            G.world_busy = true;
        x->state = X_NEW;
        x->next = G.list;
        G.list = x;
        pthread_cond_signal(&G.cv);
    }
    unlock();
    if (rc) {
        mx_destroy(&x->base);
        return rc;
    }
    double limit = o.start_timeout > 0 ? o.start_timeout : 60;
    if (conc_event_wait(&x->ready, limit) != 0) {
        lock();
        bool pending = x->state == X_NEW;
        if (pending) {
            x->abandoned = true; /* the thread finishes and frees it */
            x->closing = true;
        }
        unlock();
        if (pending)
            return CONC_ETIMEDOUT;
        conc_event_wait(&x->ready, CONC_FOREVER); /* it finished just now */
    }
    if (x->setup_rc) {
        rc = x->setup_rc;
        conc_event_wait(&x->done, CONC_FOREVER);
        mx_destroy(&x->base);
        return rc;
    }
    *out = &x->base;
    return 0;
}

size_t conc_mpi_executor_pids(conc_executor_t *ex, int *pids, size_t cap)
{
    if (!ex || ex->ops != &mx_ops)
        return 0;
    mx_t *x = (mx_t *)ex;
    /* the pids arrive with T_READY: wait a little for them */
    for (int tries = 0; tries < 2000; tries++) {
        bool all = true;
        for (size_t i = 0; i < x->nw; i++)
            all &= __atomic_load_n(&x->w[i].pid, __ATOMIC_ACQUIRE) > 0 || x->broken;
        if (all)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < x->nw && i < cap; i++)
        pids[i] = __atomic_load_n(&x->w[i].pid, __ATOMIC_ACQUIRE);
    return x->nw;
}

/* At exit (registered by mpi.c when conc started MPI): shut down live
 * executors with wait, stop the thread, release the world's ranks and
 * finalize MPI. */
void conc__mpi_atexit(void)
{
    /* each shutdown(wait) returns once the thread has taken its executor
     * off the list */
    for (;;) {
        lock();
        mx_t *x = G.list;
        while (x && x->abandoned)
            x = x->next;
        unlock();
        if (!x || !G.started)
            break;
        mx_shutdown(&x->base, true, false);
    }
    if (G.started) {
        lock();
        G.stop = true;
        pthread_cond_signal(&G.cv);
        unlock();
        /* bounded: the thread may be stuck in an MPI_Comm_spawn that
         * never returns (an executor whose start timed out) */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10;
        if (pthread_timedjoin_np(G.th, NULL, &ts) != 0) {
            fprintf(stderr, "conc: the MPI communication thread is stuck in MPI; exiting without MPI_Finalize\n");
            return;
        }
        G.started = false;
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized)
        return;
    if (conc__mpi_world != MPI_COMM_NULL) {
        int size = 1;
        MPI_Comm_size(conc__mpi_world, &size);
        for (int r = 1; r < size; r++)
            MPI_Send(NULL, 0, MPI_BYTE, r, T_EXIT, conc__mpi_world);
        MPI_Comm_free(&conc__mpi_world);
    }
    MPI_Finalize();
}
