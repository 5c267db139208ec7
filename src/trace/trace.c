/*
 * trace.c — recording every state transition of every context, cheaply.
 *
 * How it works. Each OS thread that records anything owns one buffer
 * (conc__tbuf_t, found through a thread-local pointer): a fixed array of
 * 32-byte records and a count. Only the owner appends: it fills the next
 * record and publishes it with a release store of the count — no lock, no
 * atomic read-modify-write, no syscall. A full buffer drops the record and
 * counts the drop. Green threads record into the buffer of the OS thread
 * that runs them, naming their own track in the record.
 *
 * The hot paths record raw facts only: "this context parks on X", "that
 * context wakes this one", "the hub switches from A to B". The states
 * (running, ready, blocked) and the flows from waker to woken are derived
 * from the facts at conc_trace_stop (write.c), off every traced thread.
 *
 * Invariants:
 *   - conc_trace_start / _stop are serialised by trace_mu; a trace has a
 *     generation number; a buffer's records belong to the generation in
 *     its gen field, and its owner resets it (count 0, dropped 0, a new
 *     array if the size changed) the first time it records in a newer
 *     generation. The writer reads only buffers of its own generation, and
 *     only records below the count it loaded (acquire), so it never reads
 *     a record being written and an owner never reuses a record being read
 *     (a reset needs a newer generation, which needs the writer done).
 *   - Buffers live on a list until their thread ended (dead) and a stop
 *     has written them; then they are freed (their counters folded into
 *     the totals first).
 *   - Track ids: every context gets one lazily (ctx->trace_id, from a
 *     counter, set by a CAS). A hub's loop context shares its OS thread's
 *     context, so its track is that id with the top bit set. A context
 *     names its track (thread / green name, kind, its hub's track) the
 *     first time it records in a trace (ctx->trace_gen).
 *   - A forked child stops tracing without writing (the parent writes).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "conc/green.h"
#include "conc/thread.h"
#include "core/time.h"
#include "green/internal.h"
#include "trace/internal.h"

#define DEFAULT_EVENTS 65536u
#define LOOP_BIT 0x80000000u

/* Every buffer is on the list tbufs. A thread's first record puts its
 * buffer in front with a CAS (no lock: a traced thread never waits for
 * the one that writes the trace); everything else that walks the list or
 * takes buffers off it does so under tbufs_lock, and takes the first one
 * off with a CAS too (new ones may be put in front meanwhile). */
static pthread_mutex_t tbufs_lock = PTHREAD_MUTEX_INITIALIZER;
static conc__tbuf_t *tbufs;                  /* every buffer; atomic head */
static uint64_t retired[CONC__ST_N];         /* counters of freed buffers */
__thread conc__tbuf_t *conc__tl_tbuf __attribute__((tls_model("initial-exec")));
static pthread_key_t tbuf_key;
static pthread_once_t tbuf_once = PTHREAD_ONCE_INIT;

uint32_t conc__trace_gen;      /* atomic: the current (or last) trace */
static uint32_t trace_cap = DEFAULT_EVENTS; /* atomic: events per buffer */
static uint32_t next_track;    /* atomic */

static pthread_mutex_t trace_mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *trace_file;
static conc_trace_opts_t trace_opts;
static char trace_svg[4096];

/* ------------------------------------------------------------- the clock
 * A record's time is the CPU's invariant counter where there is one (x86
 * TSC with constant_tsc, aarch64's virtual counter): a few ns, where
 * clock_gettime costs 20-70 ns (more in VMs). conc_trace_stop maps counts
 * to CLOCK_MONOTONIC ns by two clock readings, at start and at stop. */

bool conc__use_cycles;
static int64_t clk_ns0;
static uint64_t clk_cyc0;

static inline uint64_t cycles(void)
{
#if defined(__x86_64__)
    return __builtin_ia32_rdtsc();
#elif defined(__aarch64__)
    uint64_t v;
    __asm__ __volatile__("isb; mrs %0, cntvct_el0" : "=r"(v));
    return v;
#else
    return 0;
#endif
}


static void clock_probe(void)
{
#if defined(__x86_64__)
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[4096];
    bool inv = false;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "flags", 5) == 0) {
            inv = strstr(line, " constant_tsc") && strstr(line, " nonstop_tsc");
            break;
        }
    if (f)
        fclose(f);
    conc__use_cycles = inv;
#elif defined(__aarch64__)
    conc__use_cycles = true;
#endif
}

/* Map every record's stamp to ns since the clock's origin. */
static void clock_convert(conc__tev_t *ev, size_t n)
{
    if (!conc__use_cycles)
        return;
    int64_t ns1 = conc__now_ns();
    uint64_t c1 = cycles();
    double k = c1 > clk_cyc0 ? (double)(ns1 - clk_ns0) / (double)(c1 - clk_cyc0) : 1.0;
    for (size_t i = 0; i < n; i++)
        ev[i].ts = clk_ns0 + (int64_t)((double)((int64_t)((uint64_t)ev[i].ts - clk_cyc0)) * k);
}

/* ------------------------------------------------------------- buffers */

static void tbuf_thread_exit(void *p)
{
    conc__tbuf_t *b = p;
    if (conc__tl_tbuf == b)
        conc__tl_tbuf = NULL;
    atomic_store_explicit(CONC__A(&b->dead), 1, memory_order_release);
}

static void tbuf_key_init(void) { pthread_key_create(&tbuf_key, tbuf_thread_exit); }

conc__tbuf_t *conc__tbuf_self(void)
{
    conc__tbuf_t *b = conc__tl_tbuf;
    if (__builtin_expect(b != NULL, 1))
        return b;
    pthread_once(&tbuf_once, tbuf_key_init);
    b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    conc__tbuf_t *head = __atomic_load_n(&tbufs, __ATOMIC_RELAXED);
    do
        b->next = head;
    while (!__atomic_compare_exchange_n(&tbufs, &head, b, true, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    pthread_setspecific(tbuf_key, b);
    conc__tl_tbuf = b;
    return b;
}

/* Free the buffers of ended threads (their records are written or
 * abandoned). Under tbufs_lock. */
static void reap_dead_locked(void)
{
    conc__tbuf_t *prev = NULL, *b = __atomic_load_n(&tbufs, __ATOMIC_ACQUIRE);
    while (b) {
        conc__tbuf_t *next = b->next;
        if (!atomic_load_explicit(CONC__A(&b->dead), memory_order_acquire)) {
            prev = b;
            b = next;
            continue;
        }
        if (prev) {
            prev->next = next;
        } else {
            conc__tbuf_t *exp = b;
            if (!__atomic_compare_exchange_n(&tbufs, &exp, next, false, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
                b = exp; /* new buffers in front: b is further down now */
                continue;
            }
        }
        for (int k = 0; k < CONC__ST_N; k++)
            retired[k] += atomic_load_explicit(CONC__A(&b->stats[k]), memory_order_relaxed);
        free(b->w);
        free(b);
        b = next;
    }
}

/* The owner's buffer ready for generation gen (NULL: no memory). */
static __attribute__((noinline)) conc__tbuf_t *tbuf_for(uint32_t gen)
{
    conc__tbuf_t *b = conc__tbuf_self();
    if (!b)
        return NULL;
    uint32_t cap = 2 * atomic_load_explicit(CONC__A(&trace_cap), memory_order_relaxed);
    if (!b->w || b->cap != cap) {
        free(b->w);
        b->w = malloc((size_t)cap * sizeof *b->w);
        b->cap = b->w ? cap : 0;
    }
    atomic_store_explicit(CONC__A(&b->n), 0u, memory_order_relaxed);
    atomic_store_explicit(CONC__A(&b->dropped), (uint64_t)0, memory_order_relaxed);
    atomic_store_explicit(CONC__A(&b->gen), gen, memory_order_release);
    return b;
}

/* Records are 2 to 4 words: [stamp - base (48 bits) | extra words << 8 |
 * type] [track | x << 32] [a] [b]. Types with one extra word keep a in it
 * and b in x; with none, a in x (x is sign-extended when read back). */
static inline int nextra(uint32_t type)
{
    switch (type) {
    case T_INFO: case T_NAME: case T_NAME2: case T_SUBMIT: case T_TSTART: case T_TFINISH: case T_TDONE: return 2;
    case T_PARK: case T_PSTART: case T_PEXIT: return 1;
    default: return 0;
    }
}

int64_t conc__clk_base; /* atomic: stamps are stored relative to it */

/* Append one record (dropped and counted when the buffer is full). */
static inline void rec(uint32_t type, uint32_t track, uint64_t a, uint64_t b)
{
    uint32_t gen = atomic_load_explicit(CONC__A(&conc__trace_gen), memory_order_relaxed);
    conc__tbuf_t *t = conc__tl_tbuf;
    if (__builtin_expect(!t || t->gen != gen, 0) && !(t = tbuf_for(gen)))
        return;
    int k = nextra(type);
    uint32_t n = t->n; /* only the owner writes it */
    if (__builtin_expect(n + 2 + (uint32_t)k > t->cap, 0)) {
        atomic_fetch_add_explicit(CONC__A(&t->dropped), (uint64_t)1, memory_order_relaxed);
        return;
    }
    uint64_t *w = &t->w[n];
    int64_t base = atomic_load_explicit(CONC__A(&conc__clk_base), memory_order_relaxed);
    w[0] = ((uint64_t)(conc__stamp() - base) << 16) | ((uint64_t)k << 8) | type;
    uint32_t x = k == 0 ? (uint32_t)a : k == 1 ? (uint32_t)b : 0;
    w[1] = track | ((uint64_t)x << 32);
    if (k >= 1)
        w[2] = a;
    if (k == 2)
        w[3] = b;
    atomic_store_explicit(CONC__A(&t->n), n + 2 + (uint32_t)k, memory_order_release);
}

/* Decode n words of a buffer into records; returns how many. */
static size_t decode(const uint64_t *w, uint32_t n, conc__tev_t *out, int64_t base)
{
    size_t m = 0;
    for (uint32_t i = 0; i + 2 <= n;) {
        uint64_t h = w[i];
        int k = (int)((h >> 8) & 3);
        if (i + 2 + (uint32_t)k > n)
            break;
        conc__tev_t *e = &out[m++];
        e->ts = base + ((int64_t)h >> 16); /* 48 bits, sign-extended */
        e->type = (uint32_t)(h & 0xff);
        e->track = (uint32_t)w[i + 1];
        int64_t x = (int32_t)(uint32_t)(w[i + 1] >> 32);
        e->a = k >= 1 ? w[i + 2] : (uint64_t)x;
        e->b = k == 2 ? w[i + 3] : k == 1 ? (uint64_t)x : 0;
        i += 2 + (uint32_t)k;
    }
    return m;
}

/* -------------------------------------------------------------- counters */

void conc__stat_inc(int k)
{
    conc__tbuf_t *b = conc__tbuf_self();
    if (!b)
        return;
    uint64_t *c = &b->stats[k]; /* owner-only writes: no RMW needed */
    atomic_store_explicit(CONC__A(c), atomic_load_explicit(CONC__A(c), memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void obs_set(uint32_t bit, bool on)
{
#ifndef CONC_NO_OBSERVE
    if (on)
        atomic_fetch_or_explicit(CONC__A(&conc__obs_flags), bit, memory_order_seq_cst);
    else
        atomic_fetch_and_explicit(CONC__A(&conc__obs_flags), ~bit, memory_order_seq_cst);
#else
    (void)bit;
    (void)on;
#endif
}

static bool obs_get(uint32_t bit)
{
#ifndef CONC_NO_OBSERVE
    return (atomic_load_explicit(CONC__A(&conc__obs_flags), memory_order_relaxed) & bit) != 0;
#else
    (void)bit;
    return false;
#endif
}

bool conc_stats_enable(bool on)
{
    bool was = obs_get(CONC__OBS_STATS);
    obs_set(CONC__OBS_STATS, on);
    return was;
}

int conc_stats(conc_stats_t *out)
{
    if (!out)
        return CONC_EINVAL;
    uint64_t sum[CONC__ST_N];
    pthread_mutex_lock(&tbufs_lock);
    memcpy(sum, retired, sizeof sum);
    for (conc__tbuf_t *b = __atomic_load_n(&tbufs, __ATOMIC_ACQUIRE); b; b = b->next)
        for (int k = 0; k < CONC__ST_N; k++)
            sum[k] += atomic_load_explicit(CONC__A(&b->stats[k]), memory_order_relaxed);
    pthread_mutex_unlock(&tbufs_lock);
    out->parks = sum[CONC__ST_PARK];
    out->spins_won = sum[CONC__ST_SPIN_WON];
    out->futex_sleeps = sum[CONC__ST_FUTEX_SLEEP];
    out->green_switches = sum[CONC__ST_GREEN_SWITCH];
    out->steals = sum[CONC__ST_STEAL];
    out->timer_fires = sum[CONC__ST_TIMER_FIRE];
    return 0;
}

void conc_stats_reset(void)
{
    pthread_mutex_lock(&tbufs_lock);
    memset(retired, 0, sizeof retired);
    for (conc__tbuf_t *b = __atomic_load_n(&tbufs, __ATOMIC_ACQUIRE); b; b = b->next)
        for (int k = 0; k < CONC__ST_N; k++)
            atomic_store_explicit(CONC__A(&b->stats[k]), (uint64_t)0, memory_order_relaxed);
    pthread_mutex_unlock(&tbufs_lock);
}

/* ---------------------------------------------------------------- tracks */

static uint32_t track_id(conc__ctx_t *c)
{
    uint32_t id = atomic_load_explicit(CONC__A(&c->trace_id), memory_order_relaxed);
    if (__builtin_expect(id != 0, 1))
        return id;
    uint32_t fresh = (atomic_fetch_add_explicit(CONC__A(&next_track), 1u, memory_order_relaxed) + 1) & ~LOOP_BIT;
    if (fresh == 0)
        fresh = 1;
    if (atomic_compare_exchange_strong_explicit(CONC__A(&c->trace_id), &id, fresh, memory_order_relaxed,
                                                memory_order_relaxed))
        return fresh;
    return id;
}

static void rec_name(uint32_t track, const char *name)
{
    char buf[32] = {0};
    strncpy(buf, name, sizeof buf - 1);
    uint64_t w[4];
    memcpy(w, buf, sizeof w);
    rec(T_NAME, track, w[0], w[1]);
    if (buf[15] && buf[16])
        rec(T_NAME2, track, w[2], w[3]);
}

/* Name c's track in this trace (c is the calling thread's own context,
 * or a green thread its spawner just made). */
static __attribute__((noinline)) void track_name(conc__ctx_t *c, uint32_t id, uint32_t gen)
{
    c->trace_gen = gen;
    char buf[48];
    const char *name;
    if (c->is_green) {
        conc__gs_t *gs = c->green;
        uint32_t group = (gs && gs->hub && gs->hub->main.ctx) ? track_id(gs->hub->main.ctx) : 0;
        rec(T_INFO, id, TK_GREEN, group);
        name = conc_green_name((conc_green_t *)c);
    } else {
        long tid = syscall(SYS_gettid);
        rec(T_INFO, id, TK_THREAD | ((uint64_t)tid << 8), 0);
        if (c->thread)
            name = conc_thread_name(c->thread);
        else if (tid == getpid())
            name = "MainThread";
        else {
            snprintf(buf, sizeof buf, "thread %ld", tid);
            name = buf;
        }
    }
    rec_name(id, name ? name : "?");
}

/* The calling context's track (the hub's loop has its own). */
static inline uint32_t cur_track(void)
{
    conc__ctx_t *c = conc__ctx();
    conc__hub_t *h = conc__tl_hub;
    bool loop = h && h->cur == &h->loop;
    if (loop && h->os_ctx)
        c = h->os_ctx; /* the loop runs on a context of its own: its OS thread's track */
    uint32_t id = track_id(c);
    uint32_t gen = atomic_load_explicit(CONC__A(&conc__trace_gen), memory_order_relaxed);
    if (__builtin_expect(c->trace_gen != gen, 0))
        track_name(c, id, gen);
    if (loop)
        id |= LOOP_BIT;
    return id;
}

/* ------------------------------------------------------------------ hooks */

int conc__obs_park(conc__waiter_t *w, int64_t deadline)
{
    bool tr = conc__obs_on(CONC__OBS_TRACE), pr = conc__obs_on(CONC__OBS_PROFILE);
    CONC__STAT(CONC__ST_PARK);
    uint32_t track = 0;
    if (tr) {
        track = cur_track();
        rec(T_PARK, track, (uintptr_t)w->obj, w->kind);
    }
    int64_t t0 = pr ? conc__now_ns() : 0;
    int rc = conc__park_plain(w, deadline);
    if (pr)
        conc__profile_note(w, conc__now_ns() - t0, __builtin_return_address(0));
    if (tr)
        rec(T_RESUME, track, (uint64_t)(int64_t)rc, 0);
    return rc;
}

void conc__obs_unpark(conc__waiter_t *w)
{
    if (conc__obs_on(CONC__OBS_TRACE)) {
        uint32_t me = cur_track();
        rec(T_WAKE, me, track_id(w->ctx), 0);
    }
}

#ifndef CONC_NO_OBSERVE
__attribute__((noinline)) static void switch_slow(conc__ctx_t *from, int from_loop, conc__ctx_t *to, int to_loop)
{
    if (!from || !to)
        return;
    uint32_t gen = atomic_load_explicit(CONC__A(&conc__trace_gen), memory_order_relaxed);
    uint32_t f = track_id(from), t = track_id(to);
    if (from->trace_gen != gen && !from->is_green)
        track_name(from, f, gen);
    rec(T_SWITCH, f | (from_loop ? LOOP_BIT : 0), t | (to_loop ? LOOP_BIT : 0), 0);
    if (to->trace_gen != gen)
        track_name(to, t, gen); /* recorded on its track as it starts to run */
}
#endif

/* On every switch of a traced hub: the common case (both tracks named in
 * this trace, a buffer of this trace with room) is one record written
 * here with no call; anything else takes switch_slow. */
void conc__obs_switch(conc__ctx_t *from, int from_loop, conc__ctx_t *to, int to_loop)
{
#ifndef CONC_NO_OBSERVE
    uint32_t fl = atomic_load_explicit(CONC__A(&conc__obs_flags), memory_order_relaxed);
    if (fl & CONC__OBS_STATS)
        conc__stat_inc(CONC__ST_GREEN_SWITCH);
    if (!(fl & CONC__OBS_TRACE))
        return;
    uint32_t gen = atomic_load_explicit(CONC__A(&conc__trace_gen), memory_order_relaxed);
    conc__tbuf_t *t = conc__tl_tbuf;
    if (__builtin_expect(!t || !from || !to || t->gen != gen || from->trace_gen != gen || to->trace_gen != gen, 0))
        return switch_slow(from, from_loop, to, to_loop);
    uint32_t f = atomic_load_explicit(CONC__A(&from->trace_id), memory_order_relaxed);
    uint32_t d = atomic_load_explicit(CONC__A(&to->trace_id), memory_order_relaxed);
    uint32_t n = t->n;
    if (__builtin_expect(n + 2 > t->cap, 0))
        return switch_slow(from, from_loop, to, to_loop); /* counts the drop */
    uint64_t *w = &t->w[n];
    int64_t base = atomic_load_explicit(CONC__A(&conc__clk_base), memory_order_relaxed);
    w[0] = ((uint64_t)(conc__stamp() - base) << 16) | T_SWITCH;
    w[1] = (f | (from_loop ? LOOP_BIT : 0)) | ((uint64_t)(d | (to_loop ? LOOP_BIT : 0)) << 32);
    atomic_store_explicit(CONC__A(&t->n), n + 2, memory_order_release);
#else
    (void)from, (void)from_loop, (void)to, (void)to_loop;
#endif
}

int conc__trace_sleep(double seconds, int (*sleep_fn)(double))
{
    uint32_t track = cur_track();
    rec(T_PARK, track, 0, CONC__WAIT_SLEEP);
    int rc = sleep_fn(seconds);
    rec(T_RESUME, track, (uint64_t)(int64_t)CONC_ETIMEDOUT, 0);
    return rc;
}

void conc__trace_hub(int what)
{
    static const uint32_t types[] = {T_TURN_B, T_TURN_E, T_IO_B, T_IO_E};
    rec(types[what], cur_track(), 0, 0);
}

void conc__trace_spawn(conc__ctx_t *g, const char *name)
{
    uint32_t me = cur_track();
    uint32_t id = track_id(g);
    uint32_t gen = atomic_load_explicit(CONC__A(&conc__trace_gen), memory_order_relaxed);
    g->trace_gen = gen;
    conc__gs_t *gs = g->green;
    uint32_t group = (gs && gs->hub && gs->hub->main.ctx) ? track_id(gs->hub->main.ctx) : 0;
    rec(T_INFO, id, TK_GREEN, group);
    rec_name(id, name ? name : conc_green_name((conc_green_t *)g));
    rec(T_SPAWN, me, id, 0);
}

void conc__trace_end(conc__ctx_t *ctx)
{
    conc__ctx_t *c = ctx ? ctx : conc__ctx();
    rec(T_END, track_id(c), 0, 0);
}

void conc__trace_thread_start(const char *name)
{
    conc__ctx_t *c = conc__ctx();
    uint32_t id = track_id(c);
    uint32_t gen = atomic_load_explicit(CONC__A(&conc__trace_gen), memory_order_relaxed);
    c->trace_gen = gen;
    rec(T_INFO, id, TK_THREAD | ((uint64_t)syscall(SYS_gettid) << 8), 0);
    rec_name(id, name ? name : "?");
}

void conc__trace_thread_end(void) { conc__trace_end(NULL); }

void conc__trace_task(int what, void *(*fn)(void *), void *arg)
{
    static const uint32_t types[] = {T_SUBMIT, T_TSTART, T_TFINISH, T_TDONE};
    rec(types[what], cur_track(), (uintptr_t)fn, (uintptr_t)arg);
}

void conc__trace_process(int what, long pid, int code)
{
    rec(what == CONC__PROC_START ? T_PSTART : T_PEXIT, cur_track(), (uint64_t)pid, (uint64_t)(int64_t)code);
}

/* ------------------------------------------------------------ start/stop */

bool conc_trace_active(void) { return obs_get(CONC__OBS_TRACE); }

int conc_trace_start_opts(const char *path, const conc_trace_opts_t *opts)
{
    if (!path || !*path)
        return CONC_EINVAL;
    if (opts && (opts->buffer_events > (1u << 26) || opts->ascii_width < 0))
        return CONC_EINVAL;
#ifdef CONC_NO_OBSERVE
    return CONC_ENOTSUP;
#endif
    pthread_mutex_lock(&trace_mu);
    if (trace_file) {
        pthread_mutex_unlock(&trace_mu);
        return CONC_EPERM;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        pthread_mutex_unlock(&trace_mu);
        return CONC_ESYS;
    }
    trace_opts = opts ? *opts : (conc_trace_opts_t){0};
    trace_svg[0] = 0;
    if (trace_opts.svg_path) {
        snprintf(trace_svg, sizeof trace_svg, "%s", trace_opts.svg_path);
        trace_opts.svg_path = trace_svg;
    }
    uint32_t cap = (uint32_t)trace_opts.buffer_events;
    if (cap == 0) {
        const char *e = getenv("CONC_TRACE_BUFFER");
        cap = DEFAULT_EVENTS;
        if (e && *e) {
            char *end;
            errno = 0;
            long v = strtol(e, &end, 10);
            if (errno == 0 && *end == 0 && v > 0 && v <= (1L << 26))
                cap = (uint32_t)v;
            else
                fprintf(stderr, "conc: CONC_TRACE_BUFFER=%s: not a number of events in 1..%ld; using %u\n", e,
                        1L << 26, DEFAULT_EVENTS);
        }
    }
    trace_file = f;
    pthread_mutex_lock(&tbufs_lock);
    reap_dead_locked();
    pthread_mutex_unlock(&tbufs_lock);
    atomic_store_explicit(CONC__A(&trace_cap), cap, memory_order_relaxed);
    clk_ns0 = conc__now_ns();
    clk_cyc0 = cycles();
    atomic_store_explicit(CONC__A(&conc__clk_base), conc__use_cycles ? (int64_t)clk_cyc0 : clk_ns0, memory_order_relaxed);
    atomic_fetch_add_explicit(CONC__A(&conc__trace_gen), 1u, memory_order_seq_cst);
    obs_set(CONC__OBS_TRACE, true);
    pthread_mutex_unlock(&trace_mu);
    return 0;
}

int conc_trace_start(const char *path) { return conc_trace_start_opts(path, NULL); }

static int cmp_ts(const void *x, const void *y)
{
    const conc__tev_t *a = x, *b = y;
    if (a->ts != b->ts)
        return (a->ts > b->ts) - (a->ts < b->ts);
    return (a->seq > b->seq) - (a->seq < b->seq);
}

int conc_trace_stop(void)
{
    pthread_mutex_lock(&trace_mu);
    FILE *f = trace_file;
    if (!f) {
        pthread_mutex_unlock(&trace_mu);
        return CONC_EPERM;
    }
    obs_set(CONC__OBS_TRACE, false);
    uint32_t gen = atomic_load_explicit(CONC__A(&conc__trace_gen), memory_order_relaxed);
    /* Gather every record of this trace into one array. */
    size_t total = 0, cap = 0;
    uint64_t dropped = 0;
    conc__tev_t *all = NULL;
    int rc = 0;
    pthread_mutex_lock(&tbufs_lock);
    for (conc__tbuf_t *b = __atomic_load_n(&tbufs, __ATOMIC_ACQUIRE); b; b = b->next) {
        if (atomic_load_explicit(CONC__A(&b->gen), memory_order_acquire) != gen)
            continue;
        uint32_t n = atomic_load_explicit(CONC__A(&b->n), memory_order_acquire);
        dropped += atomic_load_explicit(CONC__A(&b->dropped), memory_order_relaxed);
        if (total + n / 2 > cap) { /* at most n / 2 records */
            size_t nc = (total + n / 2) * 2 + 64;
            conc__tev_t *na = realloc(all, nc * sizeof *all);
            if (!na) {
                rc = CONC_ENOMEM;
                break;
            }
            all = na;
            cap = nc;
        }
        total += decode(b->w, n, all + total, atomic_load_explicit(CONC__A(&conc__clk_base), memory_order_relaxed));
    }
    reap_dead_locked();
    pthread_mutex_unlock(&tbufs_lock);
    if (rc == 0) {
        clock_convert(all, total);
        /* Records from different threads interleave: order by time (a
         * stable order within one thread: its clock reads rise). */
        for (size_t i = 0; i < total; i++)
            all[i].seq = (uint32_t)i; /* ties keep each buffer's order */
        if (total)
            qsort(all, total, sizeof *all, cmp_ts);
        conc__timeline_t tl = {0};
        tl.dropped = dropped;
        tl.events = total;
        tl.buffer_events = atomic_load_explicit(CONC__A(&trace_cap), memory_order_relaxed);
        rc = conc__timeline_build(&tl, all, total);
        if (rc == 0) {
            rc = conc__timeline_json(&tl, f);
            if (trace_opts.svg_path) {
                FILE *s = fopen(trace_opts.svg_path, "w");
                if (!s || conc__timeline_svg(&tl, s) != 0)
                    rc = rc ? rc : CONC_ESYS;
                if (s && fclose(s) != 0)
                    rc = rc ? rc : CONC_ESYS;
            }
            if (trace_opts.ascii)
                conc__timeline_ascii(&tl, trace_opts.ascii, trace_opts.ascii_width ? trace_opts.ascii_width : 72);
        }
        conc__timeline_free(&tl);
    }
    free(all);
    if (fclose(f) != 0 && rc == 0)
        rc = CONC_ESYS;
    trace_file = NULL;
    pthread_mutex_unlock(&trace_mu);
    return rc;
}

/* ---------------------------------------------------- environment, fork */

static void trace_atfork_child(void)
{
    /* The parent writes the trace; the child's copy of it is dropped. */
    obs_set(CONC__OBS_TRACE, false);
    pthread_mutex_init(&trace_mu, NULL);
    pthread_mutex_init(&tbufs_lock, NULL);
    if (trace_file) {
        fclose(trace_file); /* nothing buffered: records are written at stop */
        trace_file = NULL;
    }
}

static char env_path[4096]; /* CONC_TRACE's file, for the messages */

static void trace_at_exit(void)
{
    if (obs_get(CONC__OBS_TRACE)) {
        int rc = conc_trace_stop();
        if (rc) /* at exit nobody else can hear of it */
            fprintf(stderr, "conc: CONC_TRACE: the trace could not be written to %s (%s)\n", env_path,
                    conc_strerror(rc));
    }
}

void conc__profile_env(void);

__attribute__((constructor)) static void trace_env_init(void)
{
    pthread_atfork(NULL, NULL, trace_atfork_child);
    clock_probe();
    const char *e = getenv("CONC_STATS");
    if (e && *e && strcmp(e, "0") != 0)
        obs_set(CONC__OBS_STATS, true);
    conc__profile_env();
    e = getenv("CONC_TRACE");
    if (e && *e) {
        /* "%p" in the path is this process's pid: processes started from
         * here (spawn, forkserver, exec) inherit the variable and trace to
         * their own files. Without it only this process traces: the
         * variable is taken out of the environment its children inherit. */
        char *path = env_path;
        const char *pp = strstr(e, "%p");
        if (pp)
            snprintf(path, sizeof env_path, "%.*s%ld%s", (int)(pp - e), e, (long)getpid(), pp + 2);
        else
            snprintf(path, sizeof env_path, "%s", e);
        if (!pp)
            unsetenv("CONC_TRACE");
        int rc = conc_trace_start(path);
        if (rc == 0)
            atexit(trace_at_exit);
        else
            fprintf(stderr, "conc: CONC_TRACE: no trace: %s: %s\n", path,
                    rc == CONC_ESYS ? strerror(errno) : conc_strerror(rc));
    }
}
