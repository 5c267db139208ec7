/*
 * engine.c — the parent side of conc's process pools (ProcessPoolExecutor
 * and multiprocessing.Pool share it; see ppe.c and pool.c for the APIs).
 *
 * Transport. Every worker slot owns a task queue (a conc_mpqueue_t: a
 * shared-memory ring with futex wakeups) that only the parent writes and
 * only that slot's current process reads; all workers write their results
 * into one shared result queue that only the manager thread reads. A
 * message carries a batch of tasks (or of results): the batch size comes
 * from the measured run time of recent tasks (about 200 µs of work per
 * message), so short tasks cost no system call each, while long tasks go
 * one at a time (at most two in flight per worker, as Python keeps
 * max_workers + 1 calls queued).
 *
 * Dispatch. Submitted tasks wait in a backlog (under mu); pump() moves
 * them into the task queues of workers with room, from the submitting
 * thread when a worker has room, otherwise from the manager each time
 * results free some. Futures turn RUNNING when dispatched (Python marks
 * them running when they enter the call queue), so cancel works until
 * then. Each worker's in-flight tasks are kept in dispatch order; a
 * worker handles its queue in order, so a result record always belongs to
 * (nearly) the head of its list.
 *
 * Deaths. A watcher thread epoll()s every worker's pidfd; when one becomes
 * readable it reaps the child and puts an M_DIED message into the result
 * queue. The queue is FIFO, so every result the worker sent before dying
 * is handled before its death notice: at that point the tasks still in
 * its in-flight list that were in messages it had taken (messages put
 * minus those still queued) are exactly the ones it held. The executor
 * breaks (fails everything, kills the others); Pool fails those tasks and
 * starts a replacement on the same task queue, which picks up whatever
 * was still queued — no task and no wakeup is lost. max_tasks_per_child
 * works the same way: the worker announces M_RETIRE after its last task,
 * the parent sends it no more than its budget and starts the replacement
 * on the same queue at once.
 *
 * Shutdown. close() stops submits; once the backlog is empty an M_STOP
 * goes to every task queue, after the tasks; workers exit on it, the
 * watcher reports their deaths, and the manager ends when no process is
 * left (then the watcher ends too). terminate() and a broken pool signal
 * the workers instead. Every process is reaped by the watcher.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conc/deadlock.h"
#include "core/park.h"
#include "core/time.h"
#include "futures/internal.h"
#include "ipc/queue_internal.h"
#include "pool/internal.h"
#include "pool/remote.h"
#include "thread/internal.h"
#include "trace/obs.h"

#define BATCH_NS 200000.0
#define BATCH_MAX 1024

/* ------------------------------------------------------------ helpers */

static void lock(engine_t *e) { conc_lock_acquire(&e->mu, true, CONC_FOREVER); }
static void unlock(engine_t *e) { conc_lock_release(&e->mu); }

const conc_registration_t *conc__pool_entry(void (*fn)(void), bool word)
{
    const conc_registration_t *r =
        conc__require_registered(fn, "a process pool's workers find their tasks by name",
                                 word ? "CONC_REGISTER" : "CONC_POOL_REGISTER");
    if (!r)
        return NULL;
    if (word)
        return (r->sig == CONC_SIG_TASK || r->sig == CONC_SIG_OTHER) ? r : NULL;
    return (r->sig == CONC_SIG_POOL || r->sig == CONC_SIG_OTHER) ? r : NULL;
}

int conc__task_new(engine_t *e, task_t **out, const conc_registration_t *reg, uint32_t kind,
                   const void *items, size_t item_size, size_t count, bool borrow)
{
    size_t namelen = strlen(reg->name);
    size_t datalen;
    if (kind == K_CHUNK && item_size == 0) {
        const conc_buf_t *b = items;
        datalen = (count + 1) * 8;
        for (size_t i = 0; i < count; i++) {
            if (!b[i].data && b[i].len)
                return CONC_EINVAL;
            datalen += b[i].len;
        }
    } else {
        datalen = item_size * count;
    }
    size_t headlen = sizeof(wtask_t) + PAD8(namelen);
    size_t wirelen = headlen + PAD8(datalen);
    size_t tmax = e ? e->tmsg_max : CONC__REMOTE_MAX; /* no engine: a remote backend's task */
    if (wirelen + sizeof(mhdr_t) > tmax || count > UINT32_MAX || item_size > UINT32_MAX)
        return CONC_ERANGE;
    borrow = borrow && kind == K_CHUNK && item_size && datalen > 4096;
    size_t own = borrow ? headlen : wirelen;
    task_t *t = malloc(sizeof *t);
    if (!t)
        return CONC_ENOMEM;
    unsigned char *blk = WIRE_HEAD + own <= sizeof t->inl ? t->inl : malloc(WIRE_HEAD + own);
    if (!blk) {
        free(t);
        return CONC_ENOMEM;
    }
    t->wire = blk + WIRE_HEAD;
    t->next = NULL;
    t->f = NULL;
    t->res = NULL;
    t->running = false;
    t->kind = kind;
    t->count = (uint32_t)count;
    t->wirelen = wirelen;
    t->headlen = headlen;
    t->ext = borrow ? items : NULL;
    wtask_t *w = (wtask_t *)t->wire;
    *w = (wtask_t){0, kind, (uint32_t)count, (uint32_t)namelen, (uint32_t)item_size, datalen};
    unsigned char *p = t->wire + sizeof *w;
    memcpy(p, reg->name, namelen);
    memset(p + namelen, 0, PAD8(namelen) - namelen);
    t->name = reg->name;
    p += PAD8(namelen);
    if (borrow) {
        *out = t;
        return 0;
    }
    if (kind == K_CHUNK && item_size == 0) {
        const conc_buf_t *b = items;
        uint64_t *offs = (uint64_t *)p;
        unsigned char *d = p + (count + 1) * 8;
        uint64_t off = 0;
        for (size_t i = 0; i < count; i++) {
            offs[i] = off;
            if (b[i].len)
                memcpy(d + off, b[i].data, b[i].len);
            off += b[i].len;
        }
        offs[count] = off;
    } else if (datalen) {
        memcpy(p, items, datalen);
    }
    memset(p + datalen, 0, PAD8(datalen) - datalen);
    *out = t;
    return 0;
}

void conc__task_free(task_t *t)
{
    if (!t)
        return;
    if (t->wire != t->inl + WIRE_HEAD)
        free(t->wire - WIRE_HEAD);
    free(t->res);
    if (t->f)
        conc_future_free(t->f);
    free(t);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Fault in len bytes at p now (Linux 5.14+; elsewhere a no-op): memory a
 * pool is sure to touch costs its page faults when the pool starts, not in
 * the first big map. */
void conc__pool_populate(void *p, size_t len)
{
    if (p && len)
        (void)madvise(p, len, MADV_POPULATE_WRITE);
}

void conc__pool_populate_queue(conc_mpqueue_t *q)
{
    if (q && q->shm)
        conc__pool_populate(q->ring, (size_t)q->cap);
}

/* The result-block cache (process-wide: results outlive their pool). */
#define CACHE_SLOTS 8
#define CACHE_MIN ((size_t)64 << 10)
#define CACHE_MAX_BYTES ((size_t)16 << 20)
static conc_lock_t cache_mu = CONC_LOCK_INIT;
static cres_t *cache[CACHE_SLOTS];
static size_t cache_bytes;

cres_t *conc__cres_alloc(size_t bytes)
{
    cres_t *c = NULL;
    if (bytes >= CACHE_MIN / 2) {
        conc_lock_acquire(&cache_mu, true, CONC_FOREVER);
        int best = -1;
        for (int i = 0; i < CACHE_SLOTS; i++)
            if (cache[i] && cache[i]->blk >= bytes && cache[i]->blk <= 2 * bytes + CACHE_MIN &&
                (best < 0 || cache[i]->blk < cache[best]->blk))
                best = i;
        if (best >= 0) {
            c = cache[best];
            cache[best] = NULL;
            cache_bytes -= c->blk;
        }
        conc_lock_release(&cache_mu);
    }
    if (!c) {
        c = malloc(bytes);
        if (c)
            c->blk = bytes;
    }
    return c;
}

void conc__cres_release(cres_t *c)
{
    if (!c)
        return;
    if (c->blk >= CACHE_MIN && c->blk <= CACHE_MAX_BYTES / 2) {
        conc_lock_acquire(&cache_mu, true, CONC_FOREVER);
        for (int i = 0; i < CACHE_SLOTS && c; i++)
            if (!cache[i] && cache_bytes + c->blk <= CACHE_MAX_BYTES) {
                cache[i] = c;
                cache_bytes += c->blk;
                c = NULL;
            }
        conc_lock_release(&cache_mu);
    }
    free(c);
}

/* A list of tasks to complete outside the lock. */
typedef struct {
    task_t *head, **tail;
} tlist_t;

static void tl_init(tlist_t *l)
{
    l->head = NULL;
    l->tail = &l->head;
}

static void tl_push(tlist_t *l, task_t *t)
{
    t->next = NULL;
    *l->tail = t;
    l->tail = &t->next;
}

/* Fail code/msg stored on the task for finish(). */
static void task_fail(task_t *t, int code, const char *msg)
{
    free(t->res);
    size_t n = strlen(msg) + 1;
    t->res = malloc(sizeof(cres_t) + sizeof(citem_t) + n);
    if (t->res) {
        t->res->magic = 0; /* a failure record, never handed out */
        t->res->count = 1;
        t->res->got = 1;
        t->res->nfail = 1;
        t->res->blk = sizeof(cres_t) + sizeof(citem_t) + n;
        t->res->unilen = 0;
        t->res->table = 1;
        t->res->cap = t->res->used = n;
        t->res->items[0] = (citem_t){0, (uint32_t)n, code};
        memcpy(cres_data(t->res), msg, n);
    }
    t->kind |= 0x100; /* failed as a whole */
}

/* Complete one task's future (outside the lock, may run callbacks). */
static void finish_task(task_t *t)
{
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__trace_task(CONC__TASK_DONE, NULL, t);
    conc_future_t *f = t->f;
    cres_t *r = t->res;
    uint64_t off0 = 0;
    uint32_t len0 = 0;
    int32_t code0 = r ? cres_item(r, 0, &off0, &len0) : 0;
    if (t->kind & 0x100) {
        int code = r ? code0 : CONC_EBROKEN;
        conc__future_fail_now(f, code, r ? (const char *)cres_data(r) : "process pool failure");
    } else if (!r) {
        conc__future_fail_now(f, CONC_ENOMEM, "out of memory for a result");
    } else if (t->kind != K_CHUNK && code0) {
        conc__future_fail_now(f, code0, (const char *)cres_data(r) + off0);
    } else if (t->kind == K_WORD) {
        uint64_t v = 0;
        if (len0 == 8)
            memcpy(&v, cres_data(r) + off0, 8);
        conc_future_set_result(f, (void *)(uintptr_t)v);
    } else {
        /* The future owns the block from here: it frees what it owns with
         * its last reference. */
        r->magic = CRES_MAGIC;
        if (f->owned == NULL && conc_future_state(f) == CONC_FUTURE_RUNNING) {
            f->owned = r;
            t->res = NULL;
            conc_future_set_result(f, r);
        }
    }
    conc__task_free(t);
}

static void finish_list(tlist_t *l)
{
    for (task_t *t = l->head, *n; t; t = n) {
        n = t->next;
        finish_task(t);
    }
}

/* ------------------------------------------------------------ workers */

static conc_lock_t reg_mu = CONC_LOCK_INIT;
static engine_t *registry;
static pthread_once_t hook_once = PTHREAD_ONCE_INIT;

static int start_proc(engine_t *e, uint32_t idx)
{
    wslot_t *w = &e->w[idx];
    proc_t *p = calloc(1, sizeof *p);
    size_t namelen = e->init ? strlen(e->init->name) : 0;
    size_t cfglen = sizeof(wcfg_t) + namelen + e->initarg_len;
    unsigned char *cfg = malloc(cfglen);
    if (!p || !cfg) {
        free(p);
        free(cfg);
        return CONC_ENOMEM;
    }
    w->gen++;
    p->idx = idx;
    p->gen = w->gen;
    wcfg_t *c = (wcfg_t *)cfg;
    *c = (wcfg_t){idx, w->gen, e->max_tasks, (uint32_t)namelen, e->initarg_len};
    if (namelen)
        memcpy(cfg + sizeof *c, e->init->name, namelen);
    if (e->initarg_len)
        memcpy(cfg + sizeof *c + namelen, e->initarg, e->initarg_len);
    char *name = p->name;
    snprintf(p->name, sizeof p->name, "%s-%u", e->mode == E_POOL ? "PoolWorker" : "ProcessPoolWorker",
             ++e->nstarted);
    int fds[2] = {conc_mpqueue_fd(w->tq), conc_mpqueue_fd(e->rq)};
    conc__launch_t l = {.entry = conc__pool_worker_entry(),
                        .arg = cfg,
                        .len = cfglen,
                        .method = e->method,
                        .name = name,
                        .daemon = e->mode == E_POOL,
                        .fds = fds,
                        .nfds = 2};
    int rc = conc__child_start(&p->child, &l);
    free(cfg);
    if (rc) {
        free(p);
        return rc;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, p->child.pidfd, &ev) < 0) {
        conc__child_signal(&p->child, SIGKILL);
        conc__child_wait(&p->child, CONC__NO_DEADLINE);
        conc__child_release(&p->child);
        free(p);
        return CONC_ESYS;
    }
    p->all_next = e->all;
    e->all = p;
    w->proc = p;
    w->budget_used = 0;
    e->live++;
    return 0;
}

static void unlink_proc(engine_t *e, proc_t *p)
{
    for (proc_t **pp = &e->all; *pp; pp = &(*pp)->all_next)
        if (*pp == p) {
            *pp = p->all_next;
            break;
        }
    conc__child_release(&p->child);
    free(p);
}

static void kill_all(engine_t *e, int sig)
{
    for (proc_t *p = e->all; p; p = p->all_next) {
        p->killed = true;
        conc__child_signal(&p->child, sig);
    }
}

/* ----------------------------------------------------------- dispatch */

static size_t batch_size(engine_t *e)
{
    if (e->avg_ns <= 0)
        return 1;
    double b = BATCH_NS / e->avg_ns;
    return b < 1 ? 1 : b > BATCH_MAX ? BATCH_MAX : (size_t)b;
}

/* Queue STOP behind each worker's tasks, without waiting (this runs under
 * mu): a queue that is full now gets it at a later pump, once the worker
 * has taken some of its tasks. stop_sent once every queue has it. */
static void send_stop(engine_t *e)
{
    mhdr_t h = {M_STOP, 0, 0, 0};
    bool all = true;
    for (size_t i = 0; i < e->nw; i++) {
        wslot_t *w = &e->w[i];
        if (w->stop_put)
            continue;
        if (conc_mpqueue_put_nowait(w->tq, &h, sizeof h) == 0) {
            w->stop_put = true;
            w->msgs_put++;
        } else {
            all = false;
        }
    }
    e->stop_sent = all;
}

/* Move backlog tasks into workers' queues (under mu). Cancelled futures
 * are dropped onto *drop. */
static void pump(engine_t *e, tlist_t *drop)
{
    if (e->state >= S_TERMINATING)
        return;
    size_t batch = batch_size(e);
    size_t limit = batch * 2 > 2 ? batch * 2 : 2;
    /* a short backlog is spread over the workers */
    size_t share = (e->nbacklog + e->nw - 1) / e->nw;
    for (size_t k = 0; k < e->nw && e->bl_head; k++) {
        wslot_t *w = &e->w[(e->rr + k) % e->nw];
        if (!w->proc || w->proc->retired)
            continue;
        size_t given = 0;
        while (e->bl_head && w->ninflight < limit && given < share) {
            size_t room = limit - w->ninflight;
            if (room > batch)
                room = batch;
            if (room > share - given)
                room = share - given;
            if (e->max_tasks) {
                size_t left = e->max_tasks - w->budget_used;
                if (left == 0)
                    break;
                if (room > left)
                    room = left;
            }
            size_t len = sizeof(mhdr_t), n = 0;
            task_t *first = NULL, **tail = &first;
            while (e->bl_head && n < room && len + e->bl_head->wirelen <= e->tmsg_max) {
                task_t *t = e->bl_head;
                e->bl_head = t->next;
                if (!e->bl_head)
                    e->bl_tail = NULL;
                e->nbacklog--;
                if (!t->running && conc_future_set_running_or_notify_cancel(t->f) != 1) {
                    tl_push(drop, t);
                    continue;
                }
                t->running = true;
                ((wtask_t *)t->wire)->id = t->id;
                len += t->wirelen;
                t->msgseq = w->msgs_put;
                t->next = NULL;
                *tail = t;
                tail = &t->next;
                n++;
            }
            if (n == 0)
                break;
            /* A task alone (a big map chunk) goes from its own block, with
             * the header in the room before it; several are gathered. */
            unsigned char *msg;
            if (n == 1 && !first->ext) {
                msg = first->wire - WIRE_HEAD;
            } else {
                msg = e->scratch;
                size_t pos = sizeof(mhdr_t);
                for (task_t *t = first; t; t = t->next) {
                    if (!t->ext) {
                        memcpy(msg + pos, t->wire, t->wirelen);
                    } else {
                        size_t dl = t->wirelen - t->headlen, real = ((wtask_t *)t->wire)->datalen;
                        memcpy(msg + pos, t->wire, t->headlen);
                        memcpy(msg + pos + t->headlen, t->ext, real);
                        memset(msg + pos + t->headlen + real, 0, dl - real);
                    }
                    pos += t->wirelen;
                }
            }
            *(mhdr_t *)msg = (mhdr_t){M_TASKS, 0, (uint32_t)n, 0};
            if (conc_mpqueue_put_nowait(w->tq, msg, len) != 0) {
                /* No room (a slow worker): back to the front, RUNNING
                 * futures and all; try again when results come. */
                *tail = e->bl_head;
                e->bl_head = first;
                if (!e->bl_tail)
                    e->bl_tail = (task_t *)((char *)tail - offsetof(task_t, next));
                e->nbacklog += n;
                break;
            }
            w->msgs_put++;
            given += n;
            w->budget_used += (unsigned)n;
            if (w->tail)
                w->tail->next = first;
            else
                w->head = first;
            w->tail = (task_t *)((char *)tail - offsetof(task_t, next));
            w->ninflight += n;
        }
    }
    e->rr++;
    if (e->state == S_CLOSING && !e->bl_head && !e->stop_sent)
        send_stop(e);
}

static void wake_manager(engine_t *e)
{
    mhdr_t h = {M_WAKE, 0, 0, 0};
    conc_mpqueue_put(e->rq, &h, sizeof h, true, CONC_FOREVER);
}

int conc__engine_submit(engine_t *e, task_t **ts, size_t n)
{
    if (conc__obs_on(CONC__OBS_TRACE))
        for (size_t i = 0; i < n; i++)
            conc__trace_task(CONC__TASK_SUBMIT, NULL, ts[i]); /* matched by the task */
    tlist_t drop;
    tl_init(&drop);
    lock(e);
    if (e->state == S_BROKEN) {
        unlock(e);
        return CONC_EBROKEN;
    }
    if (e->state != S_RUNNING) {
        unlock(e);
        return CONC_ESHUTDOWN;
    }
    for (size_t i = 0; i < n; i++) {
        task_t *t = ts[i];
        t->id = ++e->next_id;
        t->next = NULL;
        if (t->f) { /* what a waiter waits on, for the dump (futures/internal.h) */
            t->f->owner = e;
            t->f->arg = (void *)(uintptr_t)t->name;
        }
        if (e->bl_tail)
            e->bl_tail->next = t;
        else
            e->bl_head = t;
        e->bl_tail = t;
        e->nbacklog++;
    }
    pump(e, &drop);
    unlock(e);
    for (task_t *t = drop.head, *nx; t; t = nx) {
        nx = t->next;
        conc__task_free(t);
    }
    return 0;
}

void conc__engine_unborrow(engine_t *e)
{
    tlist_t out;
    tl_init(&out);
    lock(e);
    task_t *prev = NULL;
    for (task_t *t = e->bl_head, *nx; t; t = nx) {
        nx = t->next;
        if (!t->ext) {
            prev = t;
            continue;
        }
        unsigned char *blk = malloc(WIRE_HEAD + t->wirelen);
        if (blk) {
            size_t real = ((wtask_t *)t->wire)->datalen;
            memcpy(blk + WIRE_HEAD, t->wire, t->headlen);
            memcpy(blk + WIRE_HEAD + t->headlen, t->ext, real);
            memset(blk + WIRE_HEAD + t->headlen + real, 0, t->wirelen - t->headlen - real);
            if (t->wire != t->inl + WIRE_HEAD)
                free(t->wire - WIRE_HEAD);
            t->wire = blk + WIRE_HEAD;
            t->ext = NULL;
            prev = t;
            continue;
        }
        /* no memory for a copy: the task fails rather than read freed data */
        if (prev)
            prev->next = nx;
        else
            e->bl_head = nx;
        if (e->bl_tail == t)
            e->bl_tail = prev;
        e->nbacklog--;
        t->ext = NULL;
        task_fail(t, CONC_ENOMEM, "out of memory");
        tl_push(&out, t);
    }
    unlock(e);
    finish_list(&out);
}

/* Everything queued or in flight fails with code/msg (under mu). */
static void fail_everything(engine_t *e, int code, const char *msg, tlist_t *out)
{
    for (task_t *t = e->bl_head, *n; t; t = n) {
        n = t->next;
        task_fail(t, code, msg);
        tl_push(out, t);
    }
    e->bl_head = e->bl_tail = NULL;
    e->nbacklog = 0;
    for (size_t i = 0; i < e->nw; i++) {
        wslot_t *w = &e->w[i];
        for (task_t *t = w->head, *n; t; t = n) {
            n = t->next;
            task_fail(t, code, msg);
            tl_push(out, t);
        }
        w->head = w->tail = NULL;
        w->ninflight = 0;
    }
}

static void cancel_backlog(engine_t *e, tlist_t *out)
{
    for (task_t *t = e->bl_head, *n; t; t = n) {
        n = t->next;
        if (conc_future_cancel(t->f))
            conc__future_notify_cancel(t->f); /* dropped: wait()/as_completed count it */
        else
            task_fail(t, CONC_ECANCELLED, "cancelled"); /* went back after a full queue */
        tl_push(out, t); /* finish_task on a cancelled future is a no-op */
    }
    e->bl_head = e->bl_tail = NULL;
    e->nbacklog = 0;
}

void conc__engine_close(engine_t *e, bool cancel)
{
    tlist_t out;
    tl_init(&out);
    lock(e);
    if (cancel)
        cancel_backlog(e, &out);
    if (e->state == S_RUNNING) {
        e->state = S_CLOSING;
        pump(e, &out);
    }
    unlock(e);
    finish_list(&out);
    wake_manager(e);
}

void conc__engine_terminate(engine_t *e)
{
    tlist_t out;
    tl_init(&out);
    lock(e);
    if (e->state <= S_CLOSING) {
        e->state = S_TERMINATING;
        cancel_backlog(e, &out);
        fail_everything(e, CONC_ESHUTDOWN, "pool terminated", &out);
        kill_all(e, SIGTERM);
    }
    unlock(e);
    finish_list(&out);
    wake_manager(e);
}

/* ------------------------------------------------------------ manager */

static void describe_death(char *buf, size_t cap, pid_t pid, int code)
{
    if (code < 0)
        snprintf(buf, cap, "worker process %d died (killed by signal %d: %s)", (int)pid, -code,
                 strsignal(-code));
    else
        snprintf(buf, cap, "worker process %d died (exit status %d)", (int)pid, code);
}

/* A uniform block becomes a tabled one (a piece that does not fit the
 * uniform layout came): room for the table before the data, entries for
 * the items already there (items [0, got), in order). */
static cres_t *cres_to_table(cres_t *c)
{
    size_t tab = (size_t)c->count * sizeof(citem_t);
    size_t blk = sizeof *c + tab + c->cap;
    cres_t *nc = blk <= c->blk ? c : realloc(c, blk);
    if (!nc)
        return NULL;
    if (blk > nc->blk)
        nc->blk = blk;
    memmove((unsigned char *)nc->items + tab, nc->items, nc->used);
    for (uint32_t j = 0; j < nc->got; j++)
        nc->items[j] = (citem_t){(uint64_t)j * nc->unilen, nc->unilen, 0};
    nc->table = 1;
    return nc;
}

/* False when the piece is malformed (the worker wrote nonsense). A piece
 * of a task we no longer track (failed when its worker was reported dead)
 * is dropped. */
static bool add_piece(engine_t *e, wslot_t *w, const wres_t *r, const witem_t *tab, const unsigned char *data,
                      tlist_t *done)
{
    task_t *prev = NULL, *t = w->head;
    while (t && t->id != r->id) {
        prev = t;
        t = t->next;
    }
    if (!t)
        return true;
    if ((uint64_t)r->first + r->count > t->count)
        return false;
    bool uni = r->flags & WRES_UNIFORM;
    if (uni && (uint64_t)r->unilen * r->count != r->datalen)
        return false;
    if (!uni) { /* the items' lengths must add up to the data, exactly, and
                   a failed item's message must end in its NUL */
        uint64_t sum = 0;
        for (uint32_t j = 0; j < r->count; j++) {
            uint32_t len = tab[j].len;
            if (tab[j].code != 0 && (len == 0 || sum + len > r->datalen || data[sum + len - 1] != 0))
                return false;
            sum += len; /* u32 each, at most 2^32 of them: no overflow */
        }
        if (sum != r->datalen)
            return false;
    }
    if (r->first != (t->res ? t->res->got : 0))
        return false; /* a worker sends a task's pieces in order, each once:
                         anything else would leave table entries unset */
    cres_t *c = t->res;
    if (!c) {
        size_t est = r->datalen;
        if (r->count && r->count < t->count)
            est = r->datalen / r->count * t->count + 64;
        size_t tabsz = uni ? 0 : t->count * sizeof(citem_t);
        c = conc__cres_alloc(sizeof *c + tabsz + est);
        if (!c)
            goto oom;
        c->magic = 0;
        c->count = t->count;
        c->got = 0;
        c->nfail = 0;
        c->cap = c->blk - sizeof *c - tabsz; /* a reused block may be larger */
        c->used = 0;
        c->unilen = uni ? r->unilen : 0;
        c->table = !uni;
        t->res = c;
    }
    if (!c->table && (!uni || r->unilen != c->unilen || r->first != c->got)) {
        cres_t *nc = cres_to_table(c);
        if (!nc)
            goto oom;
        c = t->res = nc;
    }
    if (c->used + r->datalen > c->cap) {
        size_t cap = c->cap + c->cap / 2;
        if (cap < c->used + r->datalen)
            cap = c->used + r->datalen;
        size_t tabsz = c->table ? c->count * sizeof(citem_t) : 0;
        size_t blk = sizeof *c + tabsz + cap;
        cres_t *nc = blk <= c->blk ? c : realloc(c, blk);
        if (!nc)
            goto oom;
        c = t->res = nc;
        c->cap = cap;
        if (blk > c->blk)
            c->blk = blk;
    }
    if (c->table) {
        uint64_t off = c->used;
        for (uint32_t j = 0; j < r->count; j++) {
            uint32_t len = uni ? r->unilen : tab[j].len;
            int32_t code = uni ? 0 : tab[j].code;
            c->items[r->first + j] = (citem_t){off, len, code};
            c->nfail += code != 0;
            off += len;
        }
    }
    if (r->datalen)
        memcpy(cres_data(c) + c->used, data, r->datalen);
    c->used += r->datalen;
    c->got += r->count;
    double ns = (double)r->elapsed_ns;
    if (r->count && r->count < t->count)
        ns = ns / r->count * t->count;
    e->avg_ns = e->avg_ns <= 0 ? ns : 0.8 * e->avg_ns + 0.2 * ns;
    if (c->got < c->count)
        return true;
done_task:
    if (prev)
        prev->next = t->next;
    else
        w->head = t->next;
    if (w->tail == t)
        w->tail = prev;
    w->ninflight--;
    tl_push(done, t);
    return true;
oom:
    task_fail(t, CONC_ENOMEM, "out of memory for a result");
    goto done_task;
}

/* A results message (copied out of the shared ring, but written by a
 * worker: any bytes). Every length is checked against what is left before
 * it is used, without overflow. False when it is malformed (the caller
 * breaks the pool). */
static bool on_results(engine_t *e, const unsigned char *m, size_t n, tlist_t *done)
{
    mhdr_t h;
    memcpy(&h, m, sizeof h);
    if (h.worker >= e->nw)
        return false;
    wslot_t *w = &e->w[h.worker];
    size_t pos = sizeof h;
    for (uint32_t i = 0; i < h.n; i++) {
        size_t rem = n - pos;
        if (rem < sizeof(wres_t))
            return false;
        const wres_t *r = (const wres_t *)(m + pos);
        rem -= sizeof *r;
        size_t tab = r->flags & WRES_UNIFORM ? 0 : (size_t)r->count * sizeof(witem_t);
        if (tab > rem || r->datalen > rem - tab)
            return false;
        if (!add_piece(e, w, r, (const witem_t *)(r + 1), m + pos + sizeof *r + tab, done))
            return false;
        size_t step = sizeof *r + tab + PAD8((size_t)r->datalen);
        if (step > n - pos)
            break; /* the last piece, unpadded */
        pos += step;
    }
    return true;
}

/* For the fuzzer (tests/fuzz/pool_fuzz.c): parse one results message for
 * e; the tasks it completed come back in *done (linked by next). */
bool conc__engine_parse_results(engine_t *e, const unsigned char *m, size_t n, task_t **done)
{
    tlist_t l;
    tl_init(&l);
    bool ok = n >= sizeof(mhdr_t) && on_results(e, m, n, &l);
    *done = l.head;
    return ok;
}

/* The proc that sent a message, if it is still the slot's current one. */
static proc_t *current(engine_t *e, const mhdr_t *h)
{
    if (h->worker >= e->nw)
        return NULL;
    proc_t *p = e->w[h->worker].proc;
    return p && p->gen == h->gen ? p : NULL;
}

static void break_pool_sig(engine_t *e, const char *msg, tlist_t *out, int sig);
static void break_pool(engine_t *e, const char *msg, tlist_t *out)
{
    break_pool_sig(e, msg, out, SIGKILL);
}

static void break_pool_sig(engine_t *e, const char *msg, tlist_t *out, int sig)
{
    if (e->state == S_BROKEN || e->state == S_TERMINATING)
        return;
    e->state = S_BROKEN;
    /* The message names what broke (CONC_EBROKEN alone cannot). */
    snprintf(e->broken_msg, sizeof e->broken_msg, "%s%s",
             e->mode == E_EXECUTOR ? "BrokenProcessPool: " : "multiprocessing.Pool broken: ", msg);
    fail_everything(e, CONC_EBROKEN, e->broken_msg, out);
    kill_all(e, sig);
}

void conc__engine_force_stop(engine_t *e, int sig)
{
    tlist_t out;
    tl_init(&out);
    lock(e);
    cancel_backlog(e, &out); /* shutdown(wait=False, cancel_futures=True) */
    if (e->state <= S_CLOSING)
        break_pool_sig(e,
                       sig == SIGKILL ? "A child process terminated abruptly (kill_workers)"
                                      : "A child process terminated abruptly (terminate_workers)",
                       &out, sig);
    else
        kill_all(e, sig); /* broken or terminating already: whoever is left */
    unlock(e);
    finish_list(&out);
    wake_manager(e);
}

/* Start a replacement unless the pool is going away and the slot has
 * nothing left to do. Breaks the pool if one is needed and cannot start. */
static void maybe_replace(engine_t *e, uint32_t idx, tlist_t *out)
{
    wslot_t *w = &e->w[idx];
    if (e->state >= S_TERMINATING)
        return;
    if (w->stop_put && w->ninflight == 0 && conc_mpqueue_qsize(w->tq) == 0)
        return;
    int rc = start_proc(e, idx);
    if (rc) {
        char msg[160];
        snprintf(msg, sizeof msg, "could not start a replacement worker: %s", conc_strerror(rc));
        break_pool(e, msg, out);
    }
}

static void on_died(engine_t *e, const unsigned char *m, size_t n, tlist_t *out)
{
    if (n < sizeof(mhdr_t) + sizeof(wdied_t))
        return;
    const mhdr_t *h = (const mhdr_t *)m;
    const wdied_t *d = (const wdied_t *)(h + 1);
    /* The notice came through shared memory every worker can write: use
     * the pointer only if it names one of our live instances. */
    proc_t *p = NULL;
    for (proc_t *q = e->all; q; q = q->all_next)
        if ((uintptr_t)q == (uintptr_t)d->proc) {
            p = q;
            break;
        }
    /* A worker can forge a notice, even with a real pointer: act only on
     * one the watcher sent (its private flag), and take the pid and exit
     * code from our own records, not from the message. */
    if (!p || __atomic_load_n(&p->noticed, __ATOMIC_ACQUIRE) != 1)
        return;
    __atomic_store_n(&p->noticed, 2, __ATOMIC_RELAXED); /* one notice per death */
    wdied_t real = {p->child.pid, p->child.exitcode, 0};
    d = &real;
    uint32_t idx = p->idx;
    wslot_t *w = &e->w[idx];
    e->live--;
    bool cur = w->proc == p;
    bool killed = p->killed;
    unlink_proc(e, p);
    if (!cur)
        return; /* a retired instance, already replaced */
    w->proc = NULL;
    if (e->state >= S_TERMINATING || killed)
        return;
    bool expected = w->stop_put && d->exitcode == 0 && w->ninflight == 0 && conc_mpqueue_qsize(w->tq) == 0;
    if (expected)
        return;
    char msg[200];
    describe_death(msg, sizeof msg, d->pid, d->exitcode);
    if (e->mode == E_EXECUTOR) {
        char full[320];
        snprintf(full, sizeof full, "A process in the process pool was terminated abruptly: %s", msg);
        break_pool(e, full, out);
        return;
    }
    /* Pool: fail what it held, replace it. */
    size_t queued = conc_mpqueue_qsize(w->tq);
    uint64_t taken = w->msgs_put - (queued < w->msgs_put ? queued : w->msgs_put);
    task_t *prev = NULL;
    for (task_t *t = w->head, *nx; t; t = nx) {
        nx = t->next;
        if (t->msgseq < taken) {
            if (prev)
                prev->next = nx;
            else
                w->head = nx;
            if (w->tail == t)
                w->tail = prev;
            w->ninflight--;
            task_fail(t, CONC_EBROKEN, msg);
            tl_push(out, t);
        } else {
            prev = t;
        }
    }
    maybe_replace(e, idx, out);
}

static bool manager_finished(engine_t *e)
{
    return e->live == 0 && e->state != S_RUNNING;
}

static void *manager_main(void *arg)
{
    engine_t *e = arg;
    size_t cap = conc_mpqueue_max_message(e->rq);
    unsigned char *buf = malloc(cap);
    if (buf && cap * 2 <= POPULATE_MAX)
        conc__pool_populate(buf, cap / 4 + 4096); /* a worker's messages are at most a quarter */
    for (;;) {
        size_t n = 0;
        conc__wait_label(e, CONC__WAIT_POOL); /* the dump: "results from the workers of pool e" */
        int rc = buf ? conc_mpqueue_get(e->rq, buf, cap, &n, true, CONC_FOREVER) : CONC_ENOMEM;
        conc__wait_label(NULL, 0);
        tlist_t out;
        tl_init(&out);
        lock(e);
        if (rc == 0 && n >= sizeof(mhdr_t)) {
            const mhdr_t *h = (const mhdr_t *)buf;
            switch (h->type) {
            case M_RESULTS:
                if (!on_results(e, buf, n, &out))
                    break_pool(e, "a worker sent a malformed result message", &out);
                break;
            case M_RETIRE: {
                proc_t *p = current(e, h);
                if (p) {
                    p->retired = true;
                    e->w[p->idx].proc = NULL;
                    maybe_replace(e, p->idx, &out);
                }
                break;
            }
            case M_INITFAIL: {
                char msg[200];
                const char *m = n > sizeof *h + 4 ? (const char *)buf + sizeof *h + 4 : "";
                buf[n - 1] = 0;
                snprintf(msg, sizeof msg, "the pool's initializer failed: %s", m);
                break_pool(e, msg, &out);
                break;
            }
            case M_DIED: on_died(e, buf, n, &out); break;
            default: break;
            }
        } else if (rc == CONC_ENOMEM) {
            break_pool(e, "out of memory in the pool's manager", &out);
        }
        pump(e, &out);
        bool fin = manager_finished(e);
        unlock(e);
        finish_list(&out);
        if (fin)
            break;
    }
    free(buf);
    uint64_t one = 1;
    ssize_t wr = write(e->evfd, &one, sizeof one);
    (void)wr;
    pthread_join(e->watcher, NULL);
    conc_event_set(&e->done);
    return NULL;
}

static void *watcher_main(void *arg)
{
    engine_t *e = arg;
    for (;;) {
        struct epoll_event evs[16];
        int n = epoll_wait(e->epfd, evs, 16, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            proc_t *p = evs[i].data.ptr;
            if (!p)
                return NULL;
            epoll_ctl(e->epfd, EPOLL_CTL_DEL, p->child.pidfd, NULL);
            if (conc__child_wait(&p->child, conc__now_ns() + 10 * 1000000000LL) != 0)
                p->child.exitcode = 255;
            __atomic_store_n(&p->noticed, 1, __ATOMIC_RELEASE);
            struct {
                mhdr_t h;
                wdied_t d;
            } m = {{M_DIED, p->idx, 0, p->gen}, {p->child.pid, p->child.exitcode, (uint64_t)(uintptr_t)p}};
            conc_mpqueue_put(e->rq, &m, sizeof m, true, CONC_FOREVER);
        }
    }
}

/* The pool's two threads complete futures that green threads may wait on:
 * they count as wakers (LoopExit, core/park.h) from before they are
 * created until they end, not only once they first use a conc context. */
static void name_thread(engine_t *e, const char *what)
{
    char nm[64];
    snprintf(nm, sizeof nm, "conc %s %p %s", e->mode == E_POOL ? "Pool" : "process pool", (void *)e, what);
    conc_set_name(conc__ctx(), nm); /* conc__ctx_name shows it in the dump */
}

static void *watcher_entry(void *arg)
{
    name_thread(arg, "watcher");
    void *r = watcher_main(arg);
    conc_set_name(conc__ctx(), NULL);
    conc__wakers_add(-1);
    return r;
}

static void *manager_entry(void *arg)
{
    name_thread(arg, "results");
    void *r = manager_main(arg);
    conc_set_name(conc__ctx(), NULL);
    conc__wakers_add(-1);
    return r;
}

size_t conc__engines_dump(FILE *f)
{
    size_t nk = 0;
    conc_lock_acquire(&reg_mu, true, CONC_FOREVER);
    for (engine_t *e = registry; e; e = e->reg_next) {
        const char *kind = e->mode == E_POOL ? "Pool" : "ProcessPoolExecutor";
        if (conc_lock_acquire(&e->mu, true, 0.5) != 0) {
            fprintf(f, "Executor %s %p: busy (its lock is held), not shown\n", kind, (void *)e);
            continue;
        }
        /* a worker runs the first task sent to it; the others wait in its queue */
        size_t running = 0, pending = e->nbacklog;
        for (size_t i = 0; i < e->nw; i++)
            if (e->w[i].ninflight) {
                running++;
                pending += e->w[i].ninflight - 1;
            }
        static const char *const st[] = {"", ", closing", ", terminating", ", broken"};
        fprintf(f, "Executor %s %p: %d of %zu worker processes, %zu pending work items, %zu running%s\n", kind,
                (void *)e, e->live, e->nw, pending, running, st[e->state & 3]);
        int shown = 0;
        for (size_t i = 0; i < e->nw && shown < 4; i++)
            for (task_t *t = e->w[i].head ? e->w[i].head->next : NULL; t && shown < 4; t = t->next, shown++)
                fprintf(f, "  pending: task %s (id %llu, sent to worker %zu)\n", t->name ? t->name : "?",
                        (unsigned long long)t->id, i);
        for (task_t *t = e->bl_head; t && shown < 4; t = t->next, shown++)
            fprintf(f, "  pending: task %s (id %llu)\n", t->name ? t->name : "?", (unsigned long long)t->id);
        if ((size_t)shown < pending)
            fprintf(f, "  pending: ... %zu more\n", pending - (size_t)shown);
        for (size_t i = 0; i < e->nw; i++) {
            proc_t *p = e->w[i].proc;
            if (!p)
                continue;
            bool alive = !__atomic_load_n(&p->noticed, __ATOMIC_ACQUIRE);
            fprintf(f, "Process \"%s\" pid %d: worker %zu of %s %p, %s", p->name, (int)p->child.pid, i, kind,
                    (void *)e, alive ? "alive" : "exited");
            task_t *t = e->w[i].head;
            if (alive && t)
                fprintf(f, ", running task %s (id %llu)", t->name ? t->name : "?", (unsigned long long)t->id);
            else if (alive)
                fprintf(f, ", idle");
            fputc('\n', f);
            nk++;
        }
        conc_lock_release(&e->mu);
    }
    conc_lock_release(&reg_mu);
    return nk;
}

/* ------------------------------------------------------- create / exit */

static bool exit_hook(void)
{
    bool any = false;
    for (;;) {
        conc_lock_acquire(&reg_mu, true, CONC_FOREVER);
        engine_t *e = registry;
        while (e && conc_event_is_set(&e->done))
            e = e->reg_next;
        conc_lock_release(&reg_mu);
        if (!e)
            return any;
        any = true;
        if (e->mode == E_POOL)
            conc__engine_terminate(e);
        else
            conc__engine_close(e, false);
        conc__engine_join(e, CONC__NO_DEADLINE);
    }
}

/* A forked child has copies of the pools but none of their threads or
 * workers: it must not wait for them at its exit. */
static void atfork_child(void)
{
    registry = NULL;
    conc_lock_init(&reg_mu);
    conc_lock_init(&cache_mu);
}

static void hook_init(void)
{
    conc__at_exit(exit_hook);
    pthread_atfork(NULL, NULL, atfork_child);
}

int conc__engine_new(engine_t **out, int mode, const engine_opts_t *o)
{
    if (o->workers == 0 || o->workers > 1024)
        return CONC_EINVAL;
    const conc_registration_t *init = NULL;
    if (o->initializer) {
        init = conc_registry_find_fn((void (*)(void))o->initializer);
        if (!init || init->sig != CONC_SIG_PROCESS)
            return CONC_EINVAL;
    }
    if (o->initarg_len && !o->initarg)
        return CONC_EINVAL;
    size_t qcap = o->queue_capacity ? o->queue_capacity : (size_t)4 << 20;
    if (qcap > CONC_MPQ_MAX_CAPACITY / 2)
        return CONC_EINVAL;
    engine_t *e = calloc(1, sizeof *e);
    if (!e)
        return CONC_ENOMEM;
    e->mode = mode;
    e->nw = o->workers;
    e->method = o->method;
    e->init = init;
    e->max_tasks = o->max_tasks;
    e->epfd = e->evfd = -1;
    conc_event_init(&e->done);
    int rc = CONC_ENOMEM;
    e->w = calloc(e->nw, sizeof *e->w);
    if (!e->w)
        goto fail;
    if (o->initarg_len) {
        if (!(e->initarg = malloc(o->initarg_len)))
            goto fail;
        memcpy(e->initarg, o->initarg, o->initarg_len);
        e->initarg_len = o->initarg_len;
    }
    if ((rc = conc_mpqueue_new(&e->rq, CONC_MPQ_SIMPLE, 0, qcap * 2)))
        goto fail;
    for (size_t i = 0; i < e->nw; i++)
        if ((rc = conc_mpqueue_new(&e->w[i].tq, CONC_MPQ_SIMPLE, 0, qcap)))
            goto fail;
    e->tmsg_max = conc_mpqueue_max_message(e->w[0].tq) / 2;
    /* The rings' pages: allocated here, once, while they are few enough
     * (a busy pool goes round each ring anyway); workers map them when
     * they start. */
    if ((qcap * 2 + qcap * e->nw) <= POPULATE_MAX) {
        conc__pool_populate_queue(e->rq);
        for (size_t i = 0; i < e->nw; i++)
            conc__pool_populate_queue(e->w[i].tq);
    }
    rc = CONC_ENOMEM;
    if (!(e->scratch = malloc(e->tmsg_max)))
        goto fail;
    rc = CONC_ESYS;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->evfd = eventfd(0, EFD_CLOEXEC);
    if (e->epfd < 0 || e->evfd < 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->evfd, &ev) < 0)
        goto fail;
    /* Workers first: while this process has one thread, the default start
     * method may still fork. */
    for (size_t i = 0; i < e->nw; i++)
        if ((rc = start_proc(e, (uint32_t)i)))
            goto fail;
    /* after the forks: pages present at a fork are shared copy-on-write
     * with the child, and the first write to each would copy it */
    if (e->tmsg_max * 4 <= POPULATE_MAX)
        conc__pool_populate(e->scratch, e->tmsg_max);
    rc = CONC_EAGAIN;
    conc__wakers_add(2);
    if (pthread_create(&e->watcher, NULL, watcher_entry, e)) {
        conc__wakers_add(-2);
        goto fail;
    }
    if (pthread_create(&e->manager, NULL, manager_entry, e)) {
        conc__wakers_add(-1);
        uint64_t one = 1;
        ssize_t wr = write(e->evfd, &one, sizeof one);
        (void)wr;
        pthread_join(e->watcher, NULL);
        goto fail;
    }
    e->threads = true;
    pthread_once(&hook_once, hook_init);
    conc_lock_acquire(&reg_mu, true, CONC_FOREVER);
    e->reg_next = registry;
    registry = e;
    conc_lock_release(&reg_mu);
    *out = e;
    return 0;
fail:
    kill_all(e, SIGKILL);
    while (e->all) {
        conc__child_wait(&e->all->child, CONC__NO_DEADLINE);
        unlink_proc(e, e->all);
    }
    conc__engine_destroy(e);
    return rc;
}

int conc__engine_join(engine_t *e, int64_t deadline)
{
    if (!e->threads)
        return 0;
    double timeout = CONC_FOREVER;
    if (deadline != CONC__NO_DEADLINE) {
        int64_t left = deadline - conc__now_ns();
        timeout = left > 0 ? left / 1e9 : 0;
    }
    if (conc_event_wait(&e->done, timeout) != 0)
        return CONC_ETIMEDOUT;
    conc_lock_acquire(&e->join_mu, true, CONC_FOREVER);
    if (!e->joined) {
        pthread_join(e->manager, NULL);
        e->joined = true;
    }
    conc_lock_release(&e->join_mu);
    return 0;
}

void conc__engine_destroy(engine_t *e)
{
    if (!e)
        return;
    if (e->threads) {
        conc__engine_join(e, CONC__NO_DEADLINE);
        conc_lock_acquire(&reg_mu, true, CONC_FOREVER);
        for (engine_t **pp = &registry; *pp; pp = &(*pp)->reg_next)
            if (*pp == e) {
                *pp = e->reg_next;
                break;
            }
        conc_lock_release(&reg_mu);
    }
    tlist_t out;
    tl_init(&out);
    fail_everything(e, CONC_ESHUTDOWN, "pool freed", &out);
    finish_list(&out);
    if (e->w)
        for (size_t i = 0; i < e->nw; i++)
            conc_mpqueue_free(e->w[i].tq);
    conc_mpqueue_free(e->rq);
    if (e->epfd >= 0)
        close(e->epfd);
    if (e->evfd >= 0)
        close(e->evfd);
    free(e->scratch);
    free(e->initarg);
    free(e->w);
    free(e);
}

size_t conc__engine_pids(engine_t *e, int *pids, size_t cap)
{
    size_t n = 0;
    lock(e);
    for (size_t i = 0; i < e->nw; i++)
        if (e->w[i].proc) {
            if (n < cap && pids)
                pids[n] = e->w[i].proc->child.pid;
            n++;
        }
    unlock(e);
    return n;
}
