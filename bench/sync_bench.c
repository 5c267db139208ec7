/*
 * bench/sync_bench.c — the threading module's benchmark (issue 2):
 * conc's Lock, RLock, Event, Condition, Thread and Timer against the
 * peers a C or Python programmer would otherwise use, in the same run.
 *
 * Rows (value = median over the repetitions; see bench/README.md):
 *   lock.uncontended    ns per acquire+release       conc pthread gmutex python
 *   lock.contended2     ops/s, 2 threads x 1M        conc pthread gmutex python
 *   rlock.uncontended   ns per acquire+release       conc pthread python
 *   event.pingpong      round trips/s, 2 threads     conc pthread python
 *   condition.pingpong  round trips/s, 2 threads     conc pthread python
 *   thread.start_join   us per start+join            conc pthread python
 *   timer.100k          ms first due -> last fired   conc
 *
 * Method: every C impl of a row runs the same iteration count; one warm-up
 * run per impl is discarded, then the repetitions are interleaved (rep 1 of
 * every impl, rep 2 of every impl, ... with the order rotated each rep) so
 * slow drifts in machine load hit every impl alike. Timing is
 * CLOCK_MONOTONIC. Every run checks its result (counters, totals, return
 * codes): a broken impl is reported FAILED, never measured. The Python
 * peer (bench/sync_python.py, run with the interpreter given by --python)
 * does its own warm-up and repetitions and prints one value per line.
 *
 * Usage: sync_bench [--reps N] [--scale F] [--only row,row] [--impls a,b] [--jsonl FILE]
 *                   [--python PYTHON --python-script sync_python.py]
 */
#define _GNU_SOURCE
#include "bench_util.h"
#include "bench_gate.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "conc/base.h"
#include "conc/sync.h"
#include "conc/thread.h"

#ifdef CONC_BENCH_HAVE_GLIB
#include <glib.h>
#endif

enum { IMPL_CONC, IMPL_PTHREAD, IMPL_GMUTEX };
static const char *impl_names[] = {"conc", "pthread", "gmutex"};

static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_only;
static const char *opt_impls; /* --impls a,b: only these (e.g. to profile one) */
static const char *opt_jsonl;
static const char *opt_python;
static const char *opt_python_script;

static long scaled(long n)
{
    long v = (long)((double)n * opt_scale);
    return v < 1 ? 1 : v;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A measurement returns its value, or NAN after writing why it failed. */
typedef double (*measure_fn)(int impl, char *why, size_t whylen);

#define FAIL(...) (snprintf(why, whylen, __VA_ARGS__), NAN)

/* ------------------------------------------------------ lock.uncontended */

static long g_counter; /* touched inside critical sections */

#define UNCONTENDED_LOOP(n, ACQ, REL)                                                    \
    do {                                                                               \
        for (long i_ = 0; i_ < (n); i_++) {                                            \
            err |= (ACQ);                                                              \
            g_counter++;                                                               \
            err |= (REL);                                                              \
            BENCH_CLOBBER();                                                           \
        }                                                                              \
    } while (0)

static double lock_uncontended(int impl, char *why, size_t whylen)
{
    long n = scaled(10000000);
    int err = 0;
    double t0, t1;
    g_counter = 0;
    BENCH_CLOBBER();
    switch (impl) {
    case IMPL_CONC: {
        static conc_lock_t l = CONC_LOCK_INIT;
        conc_lock_init(&l);
        t0 = bench_now();
        UNCONTENDED_LOOP(n, conc_lock_acquire(&l, true, CONC_FOREVER), conc_lock_release(&l));
        t1 = bench_now();
        if (conc_lock_locked(&l))
            return FAIL("lock still locked after the loop");
        break;
    }
    case IMPL_PTHREAD: {
        static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
        t0 = bench_now();
        UNCONTENDED_LOOP(n, pthread_mutex_lock(&m), pthread_mutex_unlock(&m));
        t1 = bench_now();
        break;
    }
#ifdef CONC_BENCH_HAVE_GLIB
    case IMPL_GMUTEX: {
        static GMutex m; /* statically allocated GMutex needs no init */
        t0 = bench_now();
        UNCONTENDED_LOOP(n, (g_mutex_lock(&m), 0), (g_mutex_unlock(&m), 0));
        t1 = bench_now();
        break;
    }
#endif
    default:
        return FAIL("unknown impl");
    }
    BENCH_CLOBBER();
    if (err)
        return FAIL("acquire/release returned an error (%d)", err);
    if (g_counter != n)
        return FAIL("counter %ld, expected %ld", g_counter, n);
    return (t1 - t0) * 1e9 / (double)n;
}

/* ----------------------------------------------------- rlock.uncontended */

static double rlock_uncontended(int impl, char *why, size_t whylen)
{
    long n = scaled(10000000);
    int err = 0;
    double t0, t1;
    g_counter = 0;
    BENCH_CLOBBER();
    switch (impl) {
    case IMPL_CONC: {
        static conc_rlock_t r = CONC_RLOCK_INIT;
        conc_rlock_init(&r);
        t0 = bench_now();
        UNCONTENDED_LOOP(n, conc_rlock_acquire(&r, true, CONC_FOREVER), conc_rlock_release(&r));
        t1 = bench_now();
        if (conc_rlock_level(&r) != 0)
            return FAIL("rlock still owned after the loop");
        break;
    }
    case IMPL_PTHREAD: {
        static pthread_mutex_t m;
        static int inited;
        if (!inited) {
            pthread_mutexattr_t a;
            pthread_mutexattr_init(&a);
            pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
            pthread_mutex_init(&m, &a);
            pthread_mutexattr_destroy(&a);
            inited = 1;
        }
        t0 = bench_now();
        UNCONTENDED_LOOP(n, pthread_mutex_lock(&m), pthread_mutex_unlock(&m));
        t1 = bench_now();
        break;
    }
    default:
        return FAIL("unknown impl");
    }
    BENCH_CLOBBER();
    if (err)
        return FAIL("acquire/release returned an error (%d)", err);
    if (g_counter != n)
        return FAIL("counter %ld, expected %ld", g_counter, n);
    return (t1 - t0) * 1e9 / (double)n;
}

/* ------------------------------------------------------- lock.contended2 */

static struct {
    bench_gate_t gate;
    int impl;
    long n;
    conc_lock_t cl;
    pthread_mutex_t pm;
#ifdef CONC_BENCH_HAVE_GLIB
    GMutex gm;
#endif
    long counter;
    atomic_int err;
    double end[2];
} ct;

static void *contended_worker(void *arg)
{
    int id = (int)(intptr_t)arg, err = 0;
    long n = ct.n;
    bench_gate_arrive(&ct.gate, false);
    switch (ct.impl) {
    case IMPL_CONC:
        for (long i = 0; i < n; i++) {
            err |= conc_lock_acquire(&ct.cl, true, CONC_FOREVER);
            ct.counter++;
            err |= conc_lock_release(&ct.cl);
        }
        break;
    case IMPL_PTHREAD:
        for (long i = 0; i < n; i++) {
            err |= pthread_mutex_lock(&ct.pm);
            ct.counter++;
            err |= pthread_mutex_unlock(&ct.pm);
        }
        break;
#ifdef CONC_BENCH_HAVE_GLIB
    case IMPL_GMUTEX:
        for (long i = 0; i < n; i++) {
            g_mutex_lock(&ct.gm);
            ct.counter++;
            g_mutex_unlock(&ct.gm);
        }
        break;
#endif
    }
    ct.end[id] = bench_now();
    if (err)
        atomic_store(&ct.err, err);
    return NULL;
}

static double lock_contended2(int impl, char *why, size_t whylen)
{
    pthread_t th[2];
    ct.impl = impl;
    ct.n = scaled(1000000);
    ct.counter = 0;
    atomic_store(&ct.err, 0);
    bench_gate_reset(&ct.gate);
    conc_lock_init(&ct.cl);
    pthread_mutex_init(&ct.pm, NULL);
#ifdef CONC_BENCH_HAVE_GLIB
    g_mutex_init(&ct.gm);
#endif
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, contended_worker, (void *)(intptr_t)i) != 0)
            return FAIL("pthread_create failed");
    double t0 = bench_gate_open(&ct.gate, 2);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    double t1 = ct.end[0] > ct.end[1] ? ct.end[0] : ct.end[1];
#ifdef CONC_BENCH_HAVE_GLIB
    g_mutex_clear(&ct.gm);
#endif
    pthread_mutex_destroy(&ct.pm);
    if (atomic_load(&ct.err))
        return FAIL("acquire/release returned an error (%d)", atomic_load(&ct.err));
    if (ct.counter != 2 * ct.n)
        return FAIL("lost updates: total %ld, expected %ld", ct.counter, 2 * ct.n);
    return (double)(2 * ct.n) / (t1 - t0);
}

/* -------------------------------------------------------- event.pingpong */

/* The event a C programmer writes by hand: a flag under a mutex, with a
 * condition variable to wait for it. */
typedef struct pevent {
    pthread_mutex_t m;
    pthread_cond_t c;
    int flag;
} pevent_t;

static void pevent_init(pevent_t *e)
{
    pthread_mutex_init(&e->m, NULL);
    pthread_cond_init(&e->c, NULL);
    e->flag = 0;
}

static void pevent_destroy(pevent_t *e)
{
    pthread_cond_destroy(&e->c);
    pthread_mutex_destroy(&e->m);
}

static int pevent_set(pevent_t *e)
{
    pthread_mutex_lock(&e->m);
    e->flag = 1;
    pthread_cond_broadcast(&e->c);
    return pthread_mutex_unlock(&e->m);
}

static int pevent_clear(pevent_t *e)
{
    pthread_mutex_lock(&e->m);
    e->flag = 0;
    return pthread_mutex_unlock(&e->m);
}

static int pevent_wait(pevent_t *e)
{
    pthread_mutex_lock(&e->m);
    while (!e->flag)
        pthread_cond_wait(&e->c, &e->m);
    return pthread_mutex_unlock(&e->m);
}

/* Line-aligned, so this struct's own layout decides which words share a
 * cache line (ce1's and ce2's state words share one, as do pe1's and
 * pe2's first words), not where the linker happens to put it: with the
 * start 32 bytes into a line (as any library change to .bss alignment can
 * make it) the two states sit on two lines and a round trip moves about
 * twice as many lines — conc 6 M -> 3.5-4.4 M rt/s with no change to the
 * event code (bench/README.md, fifth session). */
static _Alignas(64) struct {
    bench_gate_t gate;
    int impl;
    long n;
    conc_event_t ce1, ce2;
    pevent_t pe1, pe2;
    long b_rounds;
    atomic_int err;
} ev;

/* B: wait e1, clear it, set e2. */
static void *event_b(void *arg)
{
    (void)arg;
    int err = 0;
    long n = ev.n, rounds = 0;
    bench_gate_arrive(&ev.gate, false);
    for (long i = 0; i < n; i++) {
        if (ev.impl == IMPL_CONC) {
            err |= conc_event_wait(&ev.ce1, CONC_FOREVER);
            err |= conc_event_clear(&ev.ce1);
            err |= conc_event_set(&ev.ce2);
        } else {
            err |= pevent_wait(&ev.pe1);
            err |= pevent_clear(&ev.pe1);
            err |= pevent_set(&ev.pe2);
        }
        rounds++;
    }
    ev.b_rounds = rounds;
    if (err)
        atomic_store(&ev.err, err);
    return NULL;
}

static double event_pingpong(int impl, char *why, size_t whylen)
{
    pthread_t b;
    int err = 0;
    long rounds = 0;
    ev.impl = impl;
    ev.n = scaled(50000);
    ev.b_rounds = 0;
    atomic_store(&ev.err, 0);
    bench_gate_reset(&ev.gate);
    conc_event_init(&ev.ce1);
    conc_event_init(&ev.ce2);
    pevent_init(&ev.pe1);
    pevent_init(&ev.pe2);
    if (pthread_create(&b, NULL, event_b, NULL) != 0)
        return FAIL("pthread_create failed");
    double t0 = bench_gate_open(&ev.gate, 1);
    /* A: set e1, wait e2, clear e2. */
    for (long i = 0; i < ev.n; i++) {
        if (impl == IMPL_CONC) {
            err |= conc_event_set(&ev.ce1);
            err |= conc_event_wait(&ev.ce2, CONC_FOREVER);
            err |= conc_event_clear(&ev.ce2);
        } else {
            err |= pevent_set(&ev.pe1);
            err |= pevent_wait(&ev.pe2);
            err |= pevent_clear(&ev.pe2);
        }
        rounds++;
    }
    double t1 = bench_now();
    pthread_join(b, NULL);
    pevent_destroy(&ev.pe1);
    pevent_destroy(&ev.pe2);
    if (err || atomic_load(&ev.err))
        return FAIL("set/wait/clear returned an error (%d/%d)", err, atomic_load(&ev.err));
    if (rounds != ev.n || ev.b_rounds != ev.n)
        return FAIL("round trips %ld/%ld, expected %ld", rounds, ev.b_rounds, ev.n);
    return (double)ev.n / (t1 - t0);
}

/* ---------------------------------------------------- condition.pingpong */

static struct {
    bench_gate_t gate;
    int impl;
    long n;
    conc_lock_t cl;
    conc_cond_t cc;
    pthread_mutex_t pm;
    pthread_cond_t pc;
    int turn;
    long turns[2];
    atomic_int err;
} cv;

/* Player k: n times, wait for its turn, pass the turn, notify. */
static void cond_player(int k)
{
    int err = 0;
    long n = cv.n, turns = 0;
    for (long i = 0; i < n; i++) {
        if (cv.impl == IMPL_CONC) {
            err |= conc_cond_acquire(&cv.cc, true, CONC_FOREVER);
            while (cv.turn != k)
                err |= conc_cond_wait(&cv.cc, CONC_FOREVER);
            cv.turn = 1 - k;
            turns++;
            err |= conc_cond_notify(&cv.cc, 1);
            err |= conc_cond_release(&cv.cc);
        } else {
            err |= pthread_mutex_lock(&cv.pm);
            while (cv.turn != k)
                err |= pthread_cond_wait(&cv.pc, &cv.pm);
            cv.turn = 1 - k;
            turns++;
            err |= pthread_cond_signal(&cv.pc);
            err |= pthread_mutex_unlock(&cv.pm);
        }
    }
    cv.turns[k] = turns;
    if (err)
        atomic_store(&cv.err, err);
}

static void *cond_b(void *arg)
{
    (void)arg;
    bench_gate_arrive(&cv.gate, false);
    cond_player(1);
    return NULL;
}

static double condition_pingpong(int impl, char *why, size_t whylen)
{
    pthread_t b;
    cv.impl = impl;
    cv.n = scaled(50000);
    cv.turn = 0;
    cv.turns[0] = cv.turns[1] = 0;
    atomic_store(&cv.err, 0);
    bench_gate_reset(&cv.gate);
    conc_lock_init(&cv.cl);
    if (conc_cond_init(&cv.cc, &cv.cl) != 0)
        return FAIL("conc_cond_init failed");
    pthread_mutex_init(&cv.pm, NULL);
    pthread_cond_init(&cv.pc, NULL);
    if (pthread_create(&b, NULL, cond_b, NULL) != 0)
        return FAIL("pthread_create failed");
    double t0 = bench_gate_open(&cv.gate, 1);
    cond_player(0);
    double t1 = bench_now();
    pthread_join(b, NULL);
    pthread_cond_destroy(&cv.pc);
    pthread_mutex_destroy(&cv.pm);
    if (atomic_load(&cv.err))
        return FAIL("a call returned an error (%d)", atomic_load(&cv.err));
    if (cv.turns[0] != cv.n || cv.turns[1] != cv.n || cv.turn != 0)
        return FAIL("turns %ld/%ld, expected %ld each", cv.turns[0], cv.turns[1], cv.n);
    /* Player 0 finishes right after taking its last turn; player 1 takes one
     * more: that half round trip is well inside the noise for n this big. */
    return (double)cv.n / (t1 - t0);
}

/* ----------------------------------------------------- thread.start_join */

static char marker;

static void *empty_thread(void *arg)
{
    return arg;
}

static double thread_start_join(int impl, char *why, size_t whylen)
{
    long n = scaled(2000);
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        void *res = NULL;
        if (impl == IMPL_CONC) {
            conc_thread_t *t;
            int rc = conc_thread_spawn(&t, empty_thread, &marker, NULL);
            if (rc != 0)
                return FAIL("conc_thread_spawn: %s", conc_strerror(rc));
            rc = conc_thread_join(t, CONC_FOREVER, &res);
            if (rc != 0)
                return FAIL("conc_thread_join: %s", conc_strerror(rc));
            conc_thread_free(t);
        } else {
            pthread_t t;
            if (pthread_create(&t, NULL, empty_thread, &marker) != 0)
                return FAIL("pthread_create failed");
            pthread_join(t, &res);
        }
        if (res != &marker)
            return FAIL("thread result %p, expected %p", res, (void *)&marker);
    }
    double t1 = bench_now();
    return (t1 - t0) * 1e6 / (double)n;
}

/* ------------------------------------------------------------ timer.100k */

#define TIMER_N 100000
#define TIMER_SPREAD 0.050 /* due times spread over base .. base+50 ms */
#define TIMER_LEAD 0.250   /* base = start of arming + 250 ms */
/* conc computes each due time itself from the interval; a timer whose
 * conc_timer_start call took longer than this (the arming thread was
 * preempted) may be due later than we think, so it is left out of the
 * order check. */
#define TIMER_ORDER_SLACK 0.0005
#define TIMER_EARLY_SLACK 0.00005 /* firing this much before due is early */

typedef struct tslot {
    double due;  /* intended due time (bench_now clock) */
    atomic_bool exact; /* armed quickly: its due time is known within slack */
} tslot_t;

static struct {
    atomic_long fired;
    long n;
    double last;
    double max_due_seen;
    long out_of_order;
    long early;
    double worst_early;
    conc_event_t done;
    tslot_t *slot;
    conc_timer_t **h;
} tm;

static void timer_fn(void *arg)
{
    tslot_t *s = arg;
    double now = bench_now();
    /* fn runs on conc's single timer thread, so these plain fields are only
     * written there; the main thread reads them after `done` is set. */
    if (now < s->due - TIMER_EARLY_SLACK) {
        tm.early++;
        if (s->due - now > tm.worst_early)
            tm.worst_early = s->due - now;
    }
    if (atomic_load_explicit(&s->exact, memory_order_relaxed)) {
        if (s->due < tm.max_due_seen - TIMER_ORDER_SLACK)
            tm.out_of_order++;
        if (s->due > tm.max_due_seen)
            tm.max_due_seen = s->due;
    }
    if (atomic_fetch_add(&tm.fired, 1) + 1 == tm.n) {
        tm.last = now;
        conc_event_set(&tm.done);
    }
}

static double timer_100k(int impl, char *why, size_t whylen)
{
    (void)impl;
    long n = scaled(TIMER_N);
    double result;
    tm.n = n;
    atomic_store(&tm.fired, 0);
    tm.last = 0;
    tm.max_due_seen = -1;
    tm.out_of_order = 0;
    tm.early = 0;
    tm.worst_early = 0;
    conc_event_init(&tm.done);
    tm.slot = calloc((size_t)n, sizeof *tm.slot);
    tm.h = calloc((size_t)n, sizeof *tm.h);
    if (!tm.slot || !tm.h) {
        free(tm.slot);
        free(tm.h);
        return FAIL("out of memory");
    }
    /* Arm in a scrambled order (i*step mod n is a permutation when step and
     * n are coprime) so the heap sees due times out of order. */
    long step = 7919;
    while (n > 1 && (n % step == 0 || (step % 2 == 0 && n % 2 == 0)))
        step += 2;
    double base = bench_now() + TIMER_LEAD;
    long armed = 0, inexact = 0;
    for (long i = 0; i < n; i++) {
        long k = (long)(((unsigned long long)i * (unsigned long long)step) % (unsigned long long)n);
        tslot_t *s = &tm.slot[i];
        s->due = base + TIMER_SPREAD * (double)k / (double)n;
        double before = bench_now();
        double interval = s->due - before;
        if (interval < 0)
            interval = 0;
        atomic_init(&s->exact, false);
        int rc = conc_timer_start(&tm.h[i], interval, timer_fn, s);
        if (rc != 0) {
            snprintf(why, whylen, "conc_timer_start #%ld: %s", i, conc_strerror(rc));
            break;
        }
        armed++;
        /* Set after the call (it is timed); the timer is then still > 1 ms
         * away, and a timer that fires before seeing it is just left out
         * of the order check. */
        if (bench_now() - before <= TIMER_ORDER_SLACK && interval > 0.001)
            atomic_store_explicit(&s->exact, true, memory_order_relaxed);
        else
            inexact++;
    }
    double armed_at = bench_now();
    if (armed != n) {
        for (long i = 0; i < armed; i++)
            conc_timer_cancel(tm.h[i]);
        result = NAN;
        goto out;
    }
    int rc = conc_event_wait(&tm.done, 30.0);
    if (rc != 0) {
        result = FAIL("only %ld of %ld timers fired within 30 s (%s)", atomic_load(&tm.fired), n,
                      conc_strerror(rc));
        for (long i = 0; i < armed; i++)
            conc_timer_cancel(tm.h[i]);
        goto out;
    }
    if (armed_at > base)
        fprintf(stderr, "note: timer.100k: arming %ld timers took %.0f ms, past the first due time\n",
                n, (armed_at - base + TIMER_LEAD) * 1e3);
    if (tm.out_of_order)
        fprintf(stderr, "note: timer.100k: %ld timers fired after one due over %.1f ms later "
                        "(%ld slow arms left out of the check)\n",
                tm.out_of_order, TIMER_ORDER_SLACK * 1e3, inexact);
    if (tm.early)
        fprintf(stderr, "note: timer.100k: %ld timers fired before their due time (worst %.3f ms early)\n",
                tm.early, tm.worst_early * 1e3);
    if (tm.last < base + TIMER_SPREAD * (double)(n - 1) / (double)n)
        result = FAIL("last timer fired %.3f ms before its due time", (base + TIMER_SPREAD - tm.last) * 1e3);
    else
        result = (tm.last - base) * 1e3;
out:
    for (long i = 0; i < armed; i++)
        conc_timer_free(tm.h[i]);
    free(tm.h);
    free(tm.slot);
    tm.h = NULL;
    tm.slot = NULL;
    return result;
}

/* ------------------------------------------------------------- driver */

typedef struct rowdef {
    const char *name;
    const char *unit;
    bool lower_better;
    measure_fn fn;
    int impls[3];
    int nimpls;
    bool python;
} rowdef_t;

static const rowdef_t rowdefs[] = {
    {"lock.uncontended", "ns", true, lock_uncontended, {IMPL_CONC, IMPL_PTHREAD, IMPL_GMUTEX}, 3, true},
    {"lock.contended2", "ops/s", false, lock_contended2, {IMPL_CONC, IMPL_PTHREAD, IMPL_GMUTEX}, 3, true},
    {"rlock.uncontended", "ns", true, rlock_uncontended, {IMPL_CONC, IMPL_PTHREAD}, 2, true},
    {"event.pingpong", "rt/s", false, event_pingpong, {IMPL_CONC, IMPL_PTHREAD}, 2, true},
    {"condition.pingpong", "rt/s", false, condition_pingpong, {IMPL_CONC, IMPL_PTHREAD}, 2, true},
    {"thread.start_join", "us", true, thread_start_join, {IMPL_CONC, IMPL_PTHREAD}, 2, true},
    {"timer.100k", "ms", true, timer_100k, {IMPL_CONC}, 1, false},
};
#define NROWDEFS ((int)(sizeof rowdefs / sizeof rowdefs[0]))

static bool selected(const char *name)
{
    return bench_in_list(opt_only, name);
}

static bool impl_available(int impl, char *why, size_t whylen)
{
    if (!bench_in_list(opt_impls, impl_names[impl])) {
        snprintf(why, whylen, "not in --impls");
        return false;
    }
#ifndef CONC_BENCH_HAVE_GLIB
    if (impl == IMPL_GMUTEX) {
        snprintf(why, whylen, "GLib (pkg-config glib-2.0) was not found when the bench was built");
        return false;
    }
#endif
    (void)impl;
    (void)why;
    (void)whylen;
    return true;
}

static void run_python(const rowdef_t *d, bench_impl_t *im)
{
    char why[200] = "";
    if (!opt_python || !opt_python_script) {
        bench_impl_note(im, BENCH_SKIPPED, "no Python interpreter given (--python)");
        return;
    }
    if (access(opt_python, X_OK) != 0) {
        bench_impl_note(im, BENCH_SKIPPED, "%s not found", opt_python);
        return;
    }
    char reps[32], scale[32];
    snprintf(reps, sizeof reps, "%d", opt_reps);
    snprintf(scale, sizeof scale, "%g", opt_scale);
    char *argv[] = {(char *)opt_python, (char *)opt_python_script, "--reps", reps, "--scale", scale,
                    (char *)d->name, NULL};
    double vals[BENCH_MAX_REPS];
    int n = bench_run_peer(argv, vals, BENCH_MAX_REPS, why, sizeof why);
    if (n < 0) {
        bench_impl_note(im, BENCH_FAILED, "%s", why);
        return;
    }
    if (n < opt_reps) {
        bench_impl_note(im, BENCH_FAILED, "python peer printed %d values, expected %d", n, opt_reps);
        return;
    }
    for (int i = 0; i < n; i++)
        bench_impl_record(im, vals[i]);
}

static void run_row(const rowdef_t *d)
{
    bench_row_t *r = bench_row_new(d->name, d->unit, d->lower_better);
    bench_impl_t *ims[4];
    char why[200];
    fprintf(stderr, "running %s ...\n", d->name);
    for (int i = 0; i < d->nimpls; i++) {
        ims[i] = bench_impl_add(r, impl_names[d->impls[i]]);
        why[0] = 0;
        if (!impl_available(d->impls[i], why, sizeof why)) {
            bench_impl_note(ims[i], BENCH_SKIPPED, "%s", why);
            continue;
        }
        /* warm-up, discarded (also catches a broken impl early) */
        double v = d->fn(d->impls[i], why, sizeof why);
        if (isnan(v))
            bench_impl_note(ims[i], BENCH_FAILED, "%s", why);
    }
    for (int rep = 0; rep < opt_reps; rep++) {
        for (int j = 0; j < d->nimpls; j++) {
            int i = (j + rep) % d->nimpls;
            if (ims[i]->status != BENCH_OK)
                continue;
            why[0] = 0;
            double v = d->fn(d->impls[i], why, sizeof why);
            if (isnan(v))
                bench_impl_note(ims[i], BENCH_FAILED, "%s", why);
            else
                bench_impl_record(ims[i], v);
        }
    }
    if (d->python)
        run_python(d, bench_impl_add(r, "python"));
    for (int i = 0; i < r->nimpl; i++)
        if (r->impl[i].status != BENCH_OK)
            fprintf(stderr, "note: %s: %s %s: %s\n", d->name, r->impl[i].name,
                    r->impl[i].status == BENCH_FAILED ? "FAILED" : "skipped", r->impl[i].note);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sync_bench [--reps N] [--scale F] [--only row,row] [--impls a,b] [--jsonl FILE]\n"
               "                  [--python PYTHON --python-script sync_python.py] [--list]\n");
}

static void list_rows(void)
{
    for (int k = 0; k < NROWDEFS; k++)
        printf("%s\n", rowdefs[k].name);
}

int main(int argc, char **argv)
{
    static const bench_args_t args = {
        .prog = "sync_bench", .usage = usage, .list = list_rows, .reps = &opt_reps, .scale = &opt_scale,
        .only = &opt_only, .impls = &opt_impls, .jsonl = &opt_jsonl, .python = &opt_python,
        .python_script = &opt_python_script};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    if (!opt_python)
        fprintf(stderr, "note: python peer skipped (no --python given)\n");
    else if (access(opt_python, X_OK) != 0)
        fprintf(stderr, "note: python peer skipped: %s not found\n", opt_python);
#ifndef CONC_BENCH_HAVE_GLIB
    fprintf(stderr, "note: gmutex peer skipped: GLib (pkg-config glib-2.0) was not found at build time\n");
#endif

    /* glibc's pthread_mutex_lock/unlock skip their atomic instructions
     * while the process has never had a second thread (a single-threaded
     * shortcut that GLib and conc do not take). A program that needs locks
     * has threads, so measure every impl in a multi-threaded process: start
     * and join one thread first (glibc never goes back to the shortcut). */
    {
        pthread_t t;
        if (pthread_create(&t, NULL, empty_thread, NULL) != 0 || pthread_join(t, NULL) != 0) {
            fprintf(stderr, "sync_bench: cannot start a thread\n");
            return 1;
        }
    }

    bench_note_load();
    double t_start = bench_now();
    for (int k = 0; k < NROWDEFS; k++)
        if (selected(rowdefs[k].name))
            run_row(&rowdefs[k]);
    if (bench_nrows == 0) {
        fprintf(stderr, "sync_bench: no row matches --only %s\n", opt_only);
        return 2;
    }

    bench_print_header("sync", opt_reps);
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);

    printf("\ntargets (issue 2), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    bench_target_tally(&tally, "lock.uncontended", "gmutex", 1.0, "lock.uncontended: conc time <= 1.0x gmutex");
    bench_target_tally(&tally, "lock.contended2", "gmutex", 1.0, "lock.contended2: conc ops/s >= 1.0x gmutex");
    bench_target_tally(&tally, "event.pingpong", "pthread", 100.0, "event.pingpong: conc >= 100x pthread");
    bench_target_tally(&tally, "thread.start_join", "pthread", 1.0, "thread.start_join: conc time <= 1.0x pthread");
    bench_python_targets(&tally, 20.0);
    return bench_finish("sync", &tally, opt_jsonl, t_start);
}
