/*
 * registry.c — the registry of execution contexts that the dump
 * (observe/dump.c) and the deadlock detector (observe/deadlock.c) read.
 *
 * OS threads: every context of an OS thread that conc knows (threads conc
 * started, registered by the thread itself when it starts; threads that
 * got a context on first use, the main thread among them) is on one
 * doubly linked list under one mutex. A context leaves the list before its
 * memory goes (thread end, the key destructor of a foreign thread), so a
 * reader holding the mutex may follow any pointer on the list.
 *
 * Green threads are not on this list: spawning one must stay cheap. Each
 * hub keeps its live green threads on its own list (hub->all) under a
 * spin guard of its own, and the green module sets conc__reg_green_walk
 * to walk it; the hub of an OS context is found from the context itself.
 *
 * Serials: every context gets a 32-bit serial, nonzero, unique for four
 * billion contexts; a Lock records its last acquirer's serial in a spare
 * word (no pointer that could dangle), and the detector looks the serial
 * up here — a context that ended is simply not found. A lookup copies
 * what its caller needs (conc__ctx_snap_t) while the context is pinned —
 * reg_mu for an OS thread's, the hub's guard for a green thread's — and
 * hands back only that copy: a green thread lives on its stack, which is
 * reused the moment it ends, so no pointer to it may outlive the guard.
 *
 * Fork: the mutex is held across fork; in the child only the forking
 * thread's context stays on the list (the others' threads do not exist);
 * forked from a green thread, that is the context of the OS thread that
 * runs its hub (conc__reg_green_os), through which the green thread is
 * found.
 * Lock order: reg_mu, then lockdep's graph mutex, then the names' mutex
 * (observe/): their atfork handlers are registered in the reverse order
 * (constructor priorities 104, 105, 107), so fork takes them in this one.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/observe.h"
#include "core/park.h"
#include "core/sanitize.h"
#include "observe/internal.h" /* conc__ctx_name */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static conc__ctx_t *reg_head;
static uint32_t serial_counter; /* atomic */

void (*conc__reg_green_walk)(conc__ctx_t *os, bool (*fn)(conc__ctx_t *, void *), void *arg);
conc__ctx_t *(*conc__reg_green_os)(conc__ctx_t *green);

uint32_t conc__serial_next(void)
{
    uint32_t s;
    do
        s = atomic_fetch_add_explicit(CONC__A(&serial_counter), 1u, RLX) + 1u;
    while (s == 0);
    return s;
}

/* n consecutive serials, none of them 0: a hub hands them to its green
 * threads one by one (green.c), one shared atomic add per n spawns. */
uint32_t conc__serial_take(uint32_t n)
{
    for (;;) {
        uint32_t s = atomic_fetch_add_explicit(CONC__A(&serial_counter), n, RLX) + 1u;
        if (s != 0 && (uint32_t)(s + n - 1u) >= s) /* the block does not wrap through 0 */
            return s;
    }
}

int64_t conc__now_coarse(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Ticks to seconds. x86-64: the TSC's rate, measured against the
 * monotonic clock since the library was loaded (a long baseline, so
 * accurate enough for "blocked for 2.1 s"); AArch64: the timer's own
 * frequency register. */
static int64_t tick0, ns0;

double conc__obs_tick_age(int64_t tick)
{
    int64_t t = conc__obs_tick();
    if (t <= tick)
        return 0;
#if defined(__x86_64__)
    int64_t ns = conc__now_ns();
    if (ns - ns0 < 1000000) { /* too short a baseline: take 1 ms more */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        t = conc__obs_tick();
        ns = conc__now_ns();
    }
    double per_ns = (double)(t - tick0) / (double)(ns - ns0);
    return per_ns > 0 ? (double)(t - tick) / per_ns / 1e9 : 0;
#elif defined(__aarch64__)
    uint64_t f;
    __asm__ __volatile__("mrs %0, cntfrq_el0" : "=r"(f));
    return f ? (double)(t - tick) / (double)f : 0;
#else
    return (double)(t - tick) / 1e9;
#endif
}

void conc__reg_lock(void) { pthread_mutex_lock(&reg_mu); }
void conc__reg_unlock(void) { pthread_mutex_unlock(&reg_mu); }
conc__ctx_t *conc__reg_os_first(void) { return reg_head; }

void conc__reg_os_add(conc__ctx_t *ctx)
{
    ctx->pt = (unsigned long)pthread_self();
    ctx->tid = (long)syscall(SYS_gettid);
    pthread_mutex_lock(&reg_mu);
    if (!ctx->registered) {
        ctx->reg_prev = NULL;
        ctx->reg_next = reg_head;
        if (reg_head)
            reg_head->reg_prev = ctx;
        reg_head = ctx;
        ctx->registered = 1;
    }
    pthread_mutex_unlock(&reg_mu);
}

void conc__reg_os_remove(conc__ctx_t *ctx)
{
    pthread_mutex_lock(&reg_mu);
    if (ctx->registered) {
        if (ctx->reg_prev)
            ctx->reg_prev->reg_next = ctx->reg_next;
        else
            reg_head = ctx->reg_next;
        if (ctx->reg_next)
            ctx->reg_next->reg_prev = ctx->reg_prev;
        ctx->reg_next = ctx->reg_prev = NULL;
        ctx->registered = 0;
    }
    pthread_mutex_unlock(&reg_mu);
}

typedef struct {
    uint32_t serial;
    const void *ptr;
    conc__ctx_snap_t *out;
    bool found;
} find_t;

/* Called with c pinned (reg_mu held for an OS context, c's hub's list
 * guard for a green one): everything the caller needs is copied here. */
static bool find_step(conc__ctx_t *c, void *arg)
{
    find_t *f = arg;
    if ((f->serial && c->serial == f->serial) || (f->ptr && (const void *)c == f->ptr)) {
        conc__ctx_snap_t *o = f->out;
        o->id = c;
        o->serial = c->serial;
        o->blocked = __atomic_load_n(&c->blocked, __ATOMIC_ACQUIRE) != 0;
        o->wait_obj = __atomic_load_n(&c->wait_obj, __ATOMIC_RELAXED);
        o->wait_kind = __atomic_load_n(&c->wait_kind, __ATOMIC_RELAXED);
        conc__ctx_name(c, o->name, sizeof o->name);
        f->found = true;
        return false;
    }
    return true;
}

/* c runs a hub (c->green is set by c's own thread, published with release
 * (green/hub.c); the walk itself reads it again and works under the
 * hub's guard). */
static bool has_hub(const conc__ctx_t *c)
{
    return !c->is_green && __atomic_load_n(&c->green, __ATOMIC_ACQUIRE) != NULL;
}

void (*conc__reg_found_hook)(const conc__ctx_t *found);

static bool find(find_t *f)
{
    for (conc__ctx_t *c = reg_head; c && !f->found; c = c->reg_next) {
        if (!find_step(c, f))
            break;
        if (conc__reg_green_walk && has_hub(c))
            conc__reg_green_walk(c, find_step, f);
    }
    void (*hook)(const conc__ctx_t *) = __atomic_load_n(&conc__reg_found_hook, __ATOMIC_ACQUIRE);
    if (f->found && hook) /* tests: the context may go now */
        hook(f->out->id);
    return f->found;
}

bool conc__reg_find_serial(uint32_t serial, conc__ctx_snap_t *out)
{
    find_t f = {serial, NULL, out, false};
    return serial ? find(&f) : false;
}

bool conc__reg_find_ptr(const void *p, conc__ctx_snap_t *out)
{
    find_t f = {0, p, out, false};
    return p ? find(&f) : false;
}

void conc__wait_label(const void *obj, int kind)
{
    conc__ctx_t *c = conc__ctx();
    c->lbl_obj = obj;
    c->lbl_kind = (uint8_t)kind;
}

static void reg_atfork_prepare(void) { pthread_mutex_lock(&reg_mu); }
static void reg_atfork_parent(void) { pthread_mutex_unlock(&reg_mu); }
static void reg_atfork_child(void)
{
    conc__ctx_t *me = conc__cur;
    /* Forked from a green thread: the OS thread that runs its hub is the
     * child's one thread; keeping its context keeps the hub, so the
     * child's dump and detector see the forking green thread (and the
     * hub's others, which the child has too). */
    if (me && me->is_green)
        me = conc__reg_green_os ? conc__reg_green_os(me) : NULL;
    for (conc__ctx_t *c = reg_head; c; c = c->reg_next)
        c->registered = 0;
    reg_head = NULL;
    if (me && !me->is_green && me->pt == (unsigned long)pthread_self()) {
        /* the same pthread_t in the child: keep it, with its new tid */
        me->tid = (long)syscall(SYS_gettid);
        me->reg_next = me->reg_prev = NULL;
        me->registered = 1;
        reg_head = me;
    }
    pthread_mutex_unlock(&reg_mu);
}

__attribute__((constructor(107))) static void reg_init(void)
{
    tick0 = conc__obs_tick();
    ns0 = conc__now_ns();
    pthread_atfork(reg_atfork_prepare, reg_atfork_parent, reg_atfork_child);
    conc__dump_env(); /* CONC_DUMP_SIGNAL (observe/dump.c) */
}
