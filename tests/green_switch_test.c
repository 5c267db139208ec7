/* conc green threads, the switch: conc_yield's inline fast path (the
 * caller joins the ready queue's tail, the head runs next, no detour
 * through the loop) and what must still happen at a switch — round-robin
 * order with two and with many ready, from green threads and from the
 * main context; kills (local and from another OS thread) and Timeout
 * scopes delivered to a yielding green thread; timers and cross-thread
 * wakeups served while green threads only yield (the loop's fairness
 * turn); the FP control words kept per context; the switch counter; a
 * dump (its backtrace signal) landing among the switches.
 *
 * Every loop is bounded in time, so a broken switch fails a test instead
 * of hanging it. */
#include "test_util.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conc/green.h"
#include "conc/io.h"
#include "conc/sync.h"
#include "conc/trace.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

/* What g returned (g has ended). */
static void *result_of(conc_green_t *g)
{
    void *r = PTR(0xbad);
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    return r;
}

/* ------------------------------------------------------ round-robin order */

#define RING_MAX 8

typedef struct {
    int n;           /* green threads in the ring */
    long rounds;     /* yields of each */
    long pos;        /* next slot of seq */
    int *seq;        /* who ran, in order */
    int err;         /* a yield's nonzero code */
} ring_t;

typedef struct {
    ring_t *r;
    int id;
} ring_arg_t;

static void *ring_body(void *arg)
{
    ring_arg_t *a = arg;
    ring_t *r = a->r;
    for (long i = 0; i < r->rounds; i++) {
        r->seq[r->pos++] = a->id;
        int rc = conc_yield();
        if (rc != 0) {
            r->err = rc;
            break;
        }
    }
    return NULL;
}

/* n green threads yielding `rounds` times each run strictly in turn, past
 * many of the loop's fairness turns (one every 64 switches). */
static void check_ring(int n, long rounds)
{
    ring_t r = {n, rounds, 0, calloc((size_t)(n * rounds), sizeof(int)), 0};
    cr_assert_not_null(r.seq);
    conc_green_t *g[RING_MAX];
    ring_arg_t a[RING_MAX];
    for (int i = 0; i < n; i++) {
        a[i] = (ring_arg_t){&r, i};
        cr_assert_eq(conc_go(&g[i], ring_body, &a[i]), 0);
    }
    cr_assert_eq(conc_green_joinall(g, (size_t)n, 10.0), 0);
    cr_assert_eq(r.err, 0, "conc_yield returned %d", r.err);
    cr_assert_eq(r.pos, n * rounds);
    for (long k = 0; k < n * rounds; k++)
        cr_assert_eq(r.seq[k], (int)(k % n), "slot %ld: green thread %d ran, %d expected", k, r.seq[k],
                     (int)(k % n));
    for (int i = 0; i < n; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
    free(r.seq);
}

Test(green_switch, two_alternate_strictly, .timeout = TU_TIMEOUT) { check_ring(2, 1000); }

Test(green_switch, many_run_round_robin, .timeout = TU_TIMEOUT) { check_ring(5, 300); }

/* Stack colour (green/internal.h, conc__stack_record): the records — and
 * so the frames and saved slots below them — of green threads on
 * neighbouring stack slots sit 2 KiB apart modulo 4 KiB, never at the
 * same page offset, so a switch's loads from one side's slots do not
 * alias the other side's stores (4K aliasing). A handle is its record.
 * Among 16 green threads alive at once (default stacks: from the hub's
 * cache or carved in order), the records take exactly two page offsets,
 * 2 KiB apart, and the ring still runs strictly in turn. */
static void *colour_body(void *arg)
{
    uintptr_t *where = arg;
    volatile char local = 0;
    *where = (uintptr_t)&local;
    return conc_yield() == 0 ? NULL : PTR(1);
}

Test(green_switch, neighbouring_stacks_sit_at_two_page_offsets, .timeout = TU_TIMEOUT)
{
    enum { N = 16 };
    conc_green_t *g[N];
    uintptr_t local[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(conc_go(&g[i], colour_body, &local[i]), 0);
    cr_assert_eq(conc_green_joinall(g, N, 10.0), 0);
    uintptr_t first = (uintptr_t)g[0] & 4095;
    int other = 0;
    for (int i = 0; i < N; i++) {
        uintptr_t off = (uintptr_t)g[i] & 4095;
        cr_assert(off == first || off == ((first + 2048) & 4095), "record %d at page offset %#lx (first %#lx)", i,
                  (unsigned long)off, (unsigned long)first);
        other += off != first;
        /* the same frame, the same distance below each record (ASan may
         * put the local on a fake stack of its own) */
        if (!TU_SANITIZED)
            cr_assert_eq((uintptr_t)g[i] - local[i], (uintptr_t)g[0] - local[0]);
        cr_assert_null(result_of(g[i]));
    }
    cr_assert(other > 0 && other < N, "all 16 records at one page offset");
    for (int i = 0; i < N; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
    check_ring(2, 200);
    check_ring(3, 200);
}

static void *count_yields(void *arg)
{
    atomic_long *n = arg;
    for (int i = 0; i < 50; i++) {
        atomic_fetch_add(n, 1);
        if (conc_yield() != 0)
            return PTR(1);
    }
    return NULL;
}

/* The main context's yield takes the fast path too: each one lets every
 * ready green thread run exactly once before main runs again. */
Test(green_switch, main_yield_runs_each_ready_once, .timeout = TU_TIMEOUT)
{
    atomic_long n[2] = {0, 0};
    conc_green_t *g[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_go(&g[i], count_yields, &n[i]), 0);
    for (long k = 1; k <= 50; k++) {
        cr_assert_eq(conc_yield(), 0);
        cr_assert_eq(atomic_load(&n[0]), k, "after main's yield %ld: %ld", k, atomic_load(&n[0]));
        cr_assert_eq(atomic_load(&n[1]), k, "after main's yield %ld: %ld", k, atomic_load(&n[1]));
    }
    cr_assert_eq(conc_green_joinall(g, 2, 5.0), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_null(result_of(g[i]));
        cr_assert_eq(conc_green_free(g[i]), 0);
    }
}

/* ------------------------------------------------------ kills and scopes */

typedef struct {
    atomic_long yields;
    atomic_int rc;
    atomic_int stop; /* the partner: stop yielding */
} spin_t;

/* Yield until a yield returns nonzero (kill, scope) or 5 s pass. */
static void *yield_until_cut(void *arg)
{
    spin_t *s = arg;
    double dl = tu_now() + 5.0;
    int rc = 0;
    while (rc == 0 && tu_now() < dl) {
        rc = conc_yield();
        atomic_fetch_add(&s->yields, 1);
    }
    atomic_store(&s->rc, rc == 0 ? 1 : rc);
    return NULL;
}

/* Yield (keeping the ready queue non-empty) until told to stop. */
static void *partner(void *arg)
{
    spin_t *s = arg;
    double dl = tu_now() + 5.0;
    while (!atomic_load(&s->stop) && tu_now() < dl)
        conc_yield();
    return NULL;
}

typedef struct {
    conc_green_t *victim;
    spin_t *s;
} killer_t;

static void *local_killer(void *arg)
{
    killer_t *k = arg;
    while (atomic_load(&k->s->yields) < 100)
        conc_yield();
    return PTR(conc_green_kill(k->victim, false, 0));
}

/* A kill from a green thread of the same hub reaches a green thread that
 * only yields: its next yield returns CONC_EKILLED. */
Test(green_switch, kill_reaches_a_yielding_green_thread, .timeout = TU_TIMEOUT)
{
    spin_t s = {0};
    conc_green_t *v, *p, *k;
    cr_assert_eq(conc_go(&v, yield_until_cut, &s), 0);
    cr_assert_eq(conc_go(&p, partner, &s), 0);
    killer_t kr = {v, &s};
    cr_assert_eq(conc_go(&k, local_killer, &kr), 0);
    cr_assert_eq(conc_green_join(v, 10.0), 0);
    atomic_store(&s.stop, 1);
    cr_assert_eq(conc_green_join(p, 10.0), 0);
    cr_assert_eq(conc_green_join(k, 10.0), 0);
    cr_assert_eq(INT(result_of(k)), 0);
    cr_assert_eq(atomic_load(&s.rc), CONC_EKILLED, "yield returned %d", atomic_load(&s.rc));
    cr_assert(conc_green_killed(v));
    conc_green_free(v);
    conc_green_free(p);
    conc_green_free(k);
}

typedef struct {
    conc_green_t *g[2];
    spin_t *s;
} remote_t;

static void *remote_killer(void *arg)
{
    remote_t *r = arg;
    while (atomic_load(&r->s[0].yields) < 100 || atomic_load(&r->s[1].yields) < 100)
        tu_sleep(0.0005);
    for (int i = 0; i < 2; i++)
        if (conc_green_kill(r->g[i], false, 0) != 0)
            return PTR(1);
    return NULL;
}

/* Kills from another OS thread reach two green threads that only yield
 * to each other (the loop drains the kill requests at its fairness turn). */
Test(green_switch, remote_kill_reaches_yielding_green_threads, .timeout = TU_TIMEOUT)
{
    spin_t s[2] = {{0}, {0}};
    remote_t r = {{NULL, NULL}, s};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_go(&r.g[i], yield_until_cut, &s[i]), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, remote_killer, &r), 0);
    cr_assert_eq(conc_green_joinall(r.g, 2, 10.0), 0);
    void *res = PTR(1);
    pthread_join(th, &res);
    cr_assert_null(res);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(atomic_load(&s[i].rc), CONC_EKILLED, "green thread %d: yield returned %d", i,
                     atomic_load(&s[i].rc));
        cr_assert(conc_green_killed(r.g[i]));
        conc_green_free(r.g[i]);
    }
}

typedef struct {
    spin_t s;
    int end_rc;
    double took;
} scoped_t;

static void *scoped_yielder(void *arg)
{
    scoped_t *sc = arg;
    double t0 = tu_now();
    if (conc_timeout_begin(0.02) != 0)
        return PTR(1);
    yield_until_cut(&sc->s);
    sc->took = tu_now() - t0;
    sc->end_rc = conc_timeout_end();
    atomic_store(&sc->s.stop, 1);
    return NULL;
}

/* A Timeout scope cuts a yield once its deadline passed, while another
 * green thread keeps the ready queue busy. */
Test(green_switch, timeout_scope_cuts_a_yield, .timeout = TU_TIMEOUT)
{
    scoped_t sc = {0};
    conc_green_t *g, *p;
    cr_assert_eq(conc_go(&g, scoped_yielder, &sc), 0);
    cr_assert_eq(conc_go(&p, partner, &sc.s), 0);
    cr_assert_eq(conc_green_join(g, 10.0), 0);
    cr_assert_eq(conc_green_join(p, 10.0), 0);
    cr_assert_null(result_of(g));
    cr_assert_eq(atomic_load(&sc.s.rc), CONC_ETIMEDOUT, "yield returned %d", atomic_load(&sc.s.rc));
    cr_assert(sc.took >= 0.02 - TU_EPS && sc.took < 0.02 + TU_SLACK, "cut after %.3f s", sc.took);
    cr_assert_gt(atomic_load(&sc.s.yields), 1);
    conc_green_free(g);
    conc_green_free(p);
}

/* --------------------------------------------- the loop's turn still comes */

typedef struct {
    conc_event_t ev;
    atomic_int slept, woke;
} waker_t;

static void *short_sleeper(void *arg)
{
    waker_t *w = arg;
    atomic_store(&w->slept, conc_sleep(0.01) == 0 ? 1 : 2);
    return NULL;
}

static void *event_waiter(void *arg)
{
    waker_t *w = arg;
    atomic_store(&w->woke, conc_event_wait(&w->ev, 5.0) == 0 ? 1 : 2);
    return NULL;
}

static void *event_setter(void *arg)
{
    tu_sleep(0.01);
    conc_event_set(&((waker_t *)arg)->ev);
    return NULL;
}

static void *yield_until_served(void *arg)
{
    waker_t *w = arg;
    double dl = tu_now() + 5.0;
    while ((!atomic_load(&w->slept) || !atomic_load(&w->woke)) && tu_now() < dl)
        if (conc_yield() != 0)
            return PTR(1);
    return NULL;
}

/* Two green threads that only yield do not starve a timer of the same hub
 * nor a wakeup from another OS thread. */
Test(green_switch, timers_and_remote_wakeups_served_while_yielding, .timeout = TU_TIMEOUT)
{
    waker_t w = {0};
    cr_assert_eq(conc_event_init(&w.ev), 0);
    conc_green_t *g[4];
    cr_assert_eq(conc_go(&g[0], short_sleeper, &w), 0);
    cr_assert_eq(conc_go(&g[1], event_waiter, &w), 0);
    cr_assert_eq(conc_go(&g[2], yield_until_served, &w), 0);
    cr_assert_eq(conc_go(&g[3], yield_until_served, &w), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, event_setter, &w), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_green_joinall(g, 4, 10.0), 0);
    double took = tu_now() - t0;
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&w.slept), 1);
    cr_assert_eq(atomic_load(&w.woke), 1);
    cr_assert_lt(took, 0.01 + TU_SLACK, "served after %.3f s", took);
    for (int i = 0; i < 4; i++) {
        cr_assert_null(result_of(g[i]));
        conc_green_free(g[i]);
    }
}

/* The same for a green thread that spawns and joins (no deadline) in a
 * loop: each end switches straight to its joiner (hub.c h->handoff) when
 * nothing else is ready, and the join's park still counts toward the
 * loop's turn, so a timer, a wakeup from another OS thread and an fd
 * event of the same hub are served. */
static void *nothing(void *arg) { return arg; }

static int sj_fds[2];
static atomic_int sj_read;
static void *sj_reader(void *arg)
{
    (void)arg;
    char c;
    atomic_store(&sj_read, conc_read(sj_fds[0], &c, 1, 5.0) == 1 ? 1 : 2);
    return NULL;
}

static void *sj_writer(void *arg)
{
    (void)arg;
    tu_sleep(0.01);
    ssize_t r = write(sj_fds[1], "x", 1);
    (void)r;
    return NULL;
}

/* Joins the waker threads, checks that the timer, the event and the fd
 * were served within the slack of a 10 ms sleep, and frees g[0..n). */
static void sj_served_check(waker_t *w, conc_green_t **g, int n, double took, pthread_t th, pthread_t tw)
{
    pthread_join(th, NULL);
    pthread_join(tw, NULL);
    cr_assert_eq(atomic_load(&w->slept), 1);
    cr_assert_eq(atomic_load(&w->woke), 1);
    cr_assert_eq(atomic_load(&sj_read), 1);
    cr_assert_lt(took, 0.01 + TU_SLACK, "served after %.3f s", took);
    for (int i = 0; i < n; i++) {
        cr_assert_null(result_of(g[i]));
        conc_green_free(g[i]);
    }
    conc_close(sj_fds[0]);
    conc_close(sj_fds[1]);
}

static void *spawn_join_until_served(void *arg)
{
    waker_t *w = arg;
    double dl = tu_now() + 5.0;
    while ((!atomic_load(&w->slept) || !atomic_load(&w->woke) || !atomic_load(&sj_read)) && tu_now() < dl) {
        conc_green_t *c;
        if (conc_go(&c, nothing, NULL) != 0 || conc_green_join(c, CONC_FOREVER) != 0)
            return PTR(1);
        conc_green_free(c);
    }
    return NULL;
}

Test(green_switch, timers_fds_and_remote_wakeups_served_while_spawning_and_joining, .timeout = TU_TIMEOUT)
{
    waker_t w = {0};
    cr_assert_eq(conc_event_init(&w.ev), 0);
    cr_assert_eq(conc_socketpair(sj_fds), 0);
    atomic_store(&sj_read, 0);
    conc_green_t *g[4];
    cr_assert_eq(conc_go(&g[0], short_sleeper, &w), 0);
    cr_assert_eq(conc_go(&g[1], event_waiter, &w), 0);
    cr_assert_eq(conc_go(&g[2], sj_reader, NULL), 0);
    cr_assert_eq(conc_go(&g[3], spawn_join_until_served, &w), 0);
    pthread_t th, tw;
    cr_assert_eq(pthread_create(&th, NULL, event_setter, &w), 0);
    cr_assert_eq(pthread_create(&tw, NULL, sj_writer, NULL), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_green_joinall(g, 4, 10.0), 0);
    double took = tu_now() - t0;
    sj_served_check(&w, g, 4, took, th, tw);
}

/* The same with the OS thread's own context spawning and joining (the
 * ended green thread hands off to it). */
Test(green_switch, timers_fds_and_remote_wakeups_served_while_main_spawns_and_joins, .timeout = TU_TIMEOUT)
{
    waker_t w = {0};
    cr_assert_eq(conc_event_init(&w.ev), 0);
    cr_assert_eq(conc_socketpair(sj_fds), 0);
    atomic_store(&sj_read, 0);
    conc_green_t *g[3];
    cr_assert_eq(conc_go(&g[0], short_sleeper, &w), 0);
    cr_assert_eq(conc_go(&g[1], event_waiter, &w), 0);
    cr_assert_eq(conc_go(&g[2], sj_reader, NULL), 0);
    pthread_t th, tw;
    cr_assert_eq(pthread_create(&th, NULL, event_setter, &w), 0);
    cr_assert_eq(pthread_create(&tw, NULL, sj_writer, NULL), 0);
    double t0 = tu_now();
    cr_assert_null(spawn_join_until_served(&w));
    double took = tu_now() - t0;
    cr_assert_eq(conc_green_joinall(g, 3, 10.0), 0);
    sj_served_check(&w, g, 3, took, th, tw);
}

/* ---------------------------------------------------- FP control words */

#if defined(__x86_64__)
static unsigned get_mxcsr(void)
{
    unsigned v;
    __asm__ __volatile__("stmxcsr %0" : "=m"(v));
    return v;
}
static void set_mxcsr(unsigned v) { __asm__ __volatile__("ldmxcsr %0" : : "m"(v)); }
static unsigned short get_fpucw(void)
{
    unsigned short v;
    __asm__ __volatile__("fnstcw %0" : "=m"(v));
    return v;
}
static void set_fpucw(unsigned short v) { __asm__ __volatile__("fldcw %0" : : "m"(v)); }

typedef struct {
    unsigned mx;        /* MXCSR control bits this one sets */
    unsigned short cw;  /* x87 control word this one sets */
    int bad;            /* a yield came back with other words */
} fpw_t;

#define MX_CTRL 0xffc0u

static void *fp_body(void *arg)
{
    fpw_t *f = arg;
    unsigned mx0 = get_mxcsr();
    unsigned short cw0 = get_fpucw();
    set_mxcsr((mx0 & ~MX_CTRL) | f->mx);
    set_fpucw(f->cw);
    for (int i = 0; i < 200; i++) {
        if (conc_yield() != 0)
            f->bad |= 4;
        if ((get_mxcsr() & MX_CTRL) != f->mx)
            f->bad |= 1;
        if (get_fpucw() != f->cw)
            f->bad |= 2;
    }
    set_mxcsr(mx0);
    set_fpucw(cw0);
    return NULL;
}

/* The FP control words are callee-saved (System V): each context keeps
 * its own rounding modes and masks across switches, whatever the others
 * set. */
Test(green_switch, fp_control_words_kept_per_context, .timeout = TU_TIMEOUT)
{
    unsigned mx_main = get_mxcsr() & MX_CTRL;
    unsigned short cw_main = get_fpucw();
    fpw_t f[3] = {
        {0x1f80u | 0x6000u, 0x0f7fu, 0}, /* toward zero / x87 toward zero */
        {0x1f80u | 0x8040u, 0x077fu, 0}, /* FZ + DAZ / x87 round up */
        {0x1f80u, 0x037fu, 0},           /* the defaults */
    };
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_go(&g[i], fp_body, &f[i]), 0);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(conc_yield(), 0);
        cr_assert_eq(get_mxcsr() & MX_CTRL, mx_main);
        cr_assert_eq(get_fpucw(), cw_main);
    }
    cr_assert_eq(conc_green_joinall(g, 3, 5.0), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(f[i].bad, 0, "green thread %d: control words lost across a switch (%d)", i, f[i].bad);
        conc_green_free(g[i]);
    }
}

/* A new green thread starts with its spawner's FP control words (as a
 * POSIX thread starts with its creator's), whatever the green thread that
 * ran on its recycled stack and record before left in them, and on a
 * fresh stack too. The words are those at spawn time (conc_green_new),
 * not at the start. */
typedef struct {
    unsigned mx;
    unsigned short cw;
} fpseen_t;

static void *fp_leave_dirty(void *arg)
{
    (void)arg;
    set_mxcsr((get_mxcsr() & ~MX_CTRL) | 0x1f80u | 0x4000u); /* round up */
    set_fpucw(0x0b7fu);                                        /* x87 round up */
    return NULL; /* ends with them set: its stack keeps them */
}

static void *fp_report(void *arg)
{
    fpseen_t *f = arg;
    f->mx = get_mxcsr() & MX_CTRL;
    f->cw = get_fpucw();
    return NULL;
}

static fpseen_t spawn_and_see(const conc_green_opts_t *opts)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fp_leave_dirty, NULL), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    conc_green_free(g); /* its record and stack go back to the hub */
    fpseen_t f = {0, 0};
    cr_assert_eq(conc_go_opts(&g, opts, fp_report, &f), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    conc_green_free(g);
    return f;
}

static void *fp_green_spawner(void *arg)
{
    fpseen_t *f = arg;
    set_mxcsr((get_mxcsr() & ~MX_CTRL) | 0x1f80u | 0x8040u); /* FZ + DAZ */
    set_fpucw(0x077fu);
    *f = spawn_and_see(NULL);
    return NULL;
}

Test(green_switch, fp_control_words_come_from_the_spawner, .timeout = TU_TIMEOUT)
{
    unsigned mx0 = get_mxcsr();
    unsigned short cw0 = get_fpucw();
    /* the defaults, after one that ended with others */
    fpseen_t f = spawn_and_see(NULL);
    cr_assert_eq(f.mx, mx0 & MX_CTRL, "MXCSR %#x, spawner's %#x", f.mx, mx0 & MX_CTRL);
    cr_assert_eq(f.cw, cw0, "x87 cw %#x, spawner's %#x", f.cw, cw0);
    /* the spawner's own words (toward zero), on a recycled stack */
    set_mxcsr((mx0 & ~MX_CTRL) | 0x1f80u | 0x6000u);
    set_fpucw(0x0f7fu);
    f = spawn_and_see(NULL);
    cr_assert_eq(f.mx, 0x1f80u | 0x6000u, "MXCSR %#x", f.mx);
    cr_assert_eq(f.cw, 0x0f7fu, "x87 cw %#x", f.cw);
    /* on a fresh stack (a size not used before in this process) */
    conc_green_opts_t big = {.stack_size = 3u << 20};
    f = spawn_and_see(&big);
    cr_assert_eq(f.mx, 0x1f80u | 0x6000u, "fresh stack: MXCSR %#x", f.mx);
    cr_assert_eq(f.cw, 0x0f7fu, "fresh stack: x87 cw %#x", f.cw);
    /* a green thread's spawn: its words, not main's nor the hub's */
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fp_green_spawner, &f), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    conc_green_free(g);
    cr_assert_eq(f.mx, 0x1f80u | 0x8040u, "green spawner: MXCSR %#x", f.mx);
    cr_assert_eq(f.cw, 0x077fu, "green spawner: x87 cw %#x", f.cw);
    cr_assert_eq(get_mxcsr() & MX_CTRL, 0x1f80u | 0x6000u, "main's own words kept");
    /* the words at conc_green_new, not at conc_green_start */
    cr_assert_eq(conc_go(&g, fp_leave_dirty, NULL), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    conc_green_free(g);
    cr_assert_eq(conc_green_new(&g, NULL, fp_report, &f), 0);
    set_mxcsr(mx0);
    set_fpucw(cw0);
    cr_assert_eq(conc_green_start(g), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    conc_green_free(g);
    cr_assert_eq(f.mx, 0x1f80u | 0x6000u, "made under toward-zero: MXCSR %#x", f.mx);
    cr_assert_eq(f.cw, 0x0f7fu);
    cr_assert_eq(get_mxcsr() & MX_CTRL, mx0 & MX_CTRL);
}
#else
Test(green_switch, fp_control_words_come_from_the_spawner)
{
    cr_skip_test("checked on x86-64 here; tests/arch/green_smoke.c checks FPCR on AArch64");
}
Test(green_switch, fp_control_words_kept_per_context)
{
    cr_skip_test("the FP control words are checked on x86-64 only (AArch64's switch leaves FPCR to the thread)");
}
#endif

/* ------------------------------------------------- counters and the dump */

/* Every fast-path switch counts in conc_stats' green_switches. */
Test(green_switch, stats_count_every_switch, .timeout = TU_TIMEOUT)
{
    bool was = conc_stats_enable(true);
    conc_stats_reset();
    atomic_long n[2] = {0, 0};
    conc_green_t *g[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_go(&g[i], count_yields, &n[i]), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 5.0), 0);
    conc_stats_t st;
    cr_assert_eq(conc_stats(&st), 0);
    conc_stats_enable(was);
    cr_assert_geq(st.green_switches, 100, "%llu switches counted for 100 yields", st.green_switches);
    for (int i = 0; i < 2; i++)
        conc_green_free(g[i]);
}

static void *dumper(void *arg)
{
    atomic_int *stop = arg;
    FILE *f = fopen("/dev/null", "w");
    if (!f)
        return PTR(1);
    int bad = 0;
    for (int i = 0; i < 20 && !atomic_load(stop); i++) {
        if (conc_dump(f) != 0)
            bad = 1;
        tu_sleep(0.002);
    }
    fclose(f);
    atomic_store(stop, 2);
    return PTR(bad);
}

static void *yield_until_stop(void *arg)
{
    atomic_int *stop = arg;
    double dl = tu_now() + 10.0;
    while (atomic_load(stop) != 2 && tu_now() < dl)
        if (conc_yield() != 0)
            return PTR(1);
    return NULL;
}

/* conc_dump from another thread (its backtrace signal lands anywhere,
 * mid-switch included) while two green threads switch flat out. */
Test(green_switch, dump_among_switches, .timeout = TU_TIMEOUT)
{
    atomic_int stop = 0;
    conc_green_t *g[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_go(&g[i], yield_until_stop, &stop), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, dumper, &stop), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 20.0), 0);
    void *res = PTR(1);
    pthread_join(th, &res);
    cr_assert_null(res, "conc_dump failed");
    for (int i = 0; i < 2; i++) {
        cr_assert_null(result_of(g[i]));
        conc_green_free(g[i]);
    }
}

/* ------------------------- blocking calls from the hub's loop context */

/* Code the loop context runs (here a signal handler that lands while the
 * loop sleeps in its poller, main and the only green thread parked) must
 * not block or switch: the loop runs on main's conc context, so a yield
 * or park from there was taken for main's and overwrote main's saved
 * stack pointer. Each returns CONC_EPERM instead (gevent's
 * BlockingSwitchOutError), and everything goes on. */
static struct {
    atomic_int ran, armed;
    int kind, rc_yield, rc_sleep0, rc_sleep, rc_event, rc_join, rc_join_forever, rc_fd, rc_queue;
    int fds[2];
    bool cur_null;
    conc_green_t *target;
    conc_event_t ev;
    conc_queue_t *q;
} inloop;

static void inloop_handler(int sig)
{
    (void)sig;
    inloop.kind = conc_context_kind();
    inloop.rc_yield = conc_yield();
    inloop.rc_sleep0 = conc_sleep(0);
    inloop.rc_sleep = conc_sleep(0.01);
    inloop.rc_event = conc_event_wait(&inloop.ev, 0.01);
    inloop.rc_join = conc_green_join(inloop.target, 0.01);
    inloop.rc_join_forever = conc_green_join(inloop.target, CONC_FOREVER); /* the hub-local join */
    inloop.rc_fd = conc_wait_read(inloop.fds[0], 0.01);
    void *item = NULL;
    inloop.rc_queue = conc_queue_get(inloop.q, &item, true, CONC_FOREVER); /* the presleep path */
    inloop.cur_null = conc_green_current() == NULL; /* the loop is no green thread */
    atomic_store(&inloop.ran, 1);
}

static void *inloop_sleeper(void *arg)
{
    (void)arg;
    atomic_store(&inloop.armed, 1);
    return PTR(conc_sleep(TU_SANITIZED ? 1.5 : 0.6));
}

static void *inloop_signaller(void *arg)
{
    pthread_t main_th = *(pthread_t *)arg;
    double dl = tu_now() + 5.0;
    while (!atomic_load(&inloop.armed) && tu_now() < dl)
        usleep(1000);
    usleep(TU_SANITIZED ? 300000 : 150000); /* both parked: the loop sleeps in its poller */
    pthread_kill(main_th, SIGUSR1);
    return NULL;
}

Test(green_loop, blocking_call_from_loop_is_eperm, .timeout = TU_TIMEOUT)
{
    memset(&inloop, 0, sizeof inloop);
    cr_assert_eq(conc_event_init(&inloop.ev), 0);
    cr_assert_eq(pipe(inloop.fds), 0);
    cr_assert_eq(conc_queue_new(&inloop.q, CONC_FIFO, 2), 0);
    struct sigaction sa = {0}, old;
    sa.sa_handler = inloop_handler;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, inloop_sleeper, NULL), 0);
    inloop.target = g;
    pthread_t self = pthread_self(), th;
    cr_assert_eq(pthread_create(&th, NULL, inloop_signaller, &self), 0);
    cr_assert_eq(conc_green_join(g, 10.0), 0);
    pthread_join(th, NULL);
    sigaction(SIGUSR1, &old, NULL);
    cr_assert(atomic_load(&inloop.ran), "the signal did not land");
    cr_assert_null(result_of(g));
    cr_expect_eq(inloop.kind, CONC_CTX_HUB);
    cr_expect_eq(inloop.rc_yield, CONC_EPERM);
    cr_expect_eq(inloop.rc_sleep0, CONC_EPERM);
    cr_expect_eq(inloop.rc_sleep, CONC_EPERM);
    cr_expect_eq(inloop.rc_event, CONC_EPERM);
    cr_expect_eq(inloop.rc_join, CONC_EPERM);
    cr_expect_eq(inloop.rc_join_forever, CONC_EPERM);
    cr_expect_eq(inloop.rc_fd, CONC_EPERM);
    cr_expect_eq(inloop.rc_queue, CONC_EPERM);
    cr_expect(inloop.cur_null);
    cr_expect_neq(conc_context_kind(), CONC_CTX_HUB); /* back on main (the hub detached once idle) */
    conc_green_free(g);
    /* the main context still works: a green thread, a yield, a sleep */
    cr_assert_eq(conc_go(&g, inloop_sleeper, NULL), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(conc_green_join(g, 10.0), 0);
    conc_green_free(g);
    close(inloop.fds[0]);
    close(inloop.fds[1]);
    /* the queue works for main after the refusals (no waiter left behind) */
    cr_assert_eq(conc_queue_put(inloop.q, PTR(7), true, 1.0), 0);
    void *item = NULL;
    cr_assert_eq(conc_queue_get(inloop.q, &item, true, 1.0), 0);
    cr_assert_eq(INT(item), 7);
    conc_queue_free(inloop.q, NULL);
}

/* ------------------------- recycled green thread records (spawn + join) */

/* An ended green thread's record stays on its stack for the hub's next
 * spawn (green.c: fresh_record sets once what every end leaves right;
 * conc_go resets only what a run may change). Whatever the last green
 * thread on a record did — killed, failed, linked, joined from another OS
 * thread, left a Timeout scope open, asked for its thread record — the
 * next one starts clean. Spawned one after the other, each reuses the
 * record the last one left. */

static void *recycle_sleep(void *arg)
{
    (void)arg;
    return PTR(conc_sleep(10.0));
}

static void *recycle_fail(void *arg)
{
    (void)arg;
    return conc_fail(CONC_EINVAL, "failed on purpose");
}

static void *recycle_leak_scope(void *arg)
{
    (void)arg;
    conc_timeout_begin(0.001); /* never ended: the record must not keep it */
    return NULL;
}

static void *recycle_probe(void *arg)
{
    /* a clean record: not interrupted, no scope, a sleep that sleeps */
    int *rc = arg;
    *rc = conc_sleep(0.002);
    return PTR(0x600d);
}

static void *count_ran(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return NULL;
}

static void *sleep_for(void *arg)
{
    return PTR(conc_sleep(*(double *)arg));
}

static void recycle_count_cb(conc_green_t *g, void *arg)
{
    (void)g;
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void *recycle_join_from_thread(void *arg)
{
    return PTR(conc_green_join((conc_green_t *)arg, 10.0));
}

/* Spawn and check a probe: it must run as a new green thread would. */
static void recycle_check_clean(const char *after)
{
    int rc = -1;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, recycle_probe, &rc), 0);
    cr_expect(!conc_green_has_links(g), "%s: links left", after);
    cr_expect(!conc_green_dead(g) && !conc_green_started(g), "%s", after);
    atomic_int links = 0;
    cr_assert_eq(conc_green_link(g, recycle_count_cb, &links), 0);
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0, "%s: get", after);
    cr_expect_eq(INT(r), 0x600d, "%s", after);
    cr_expect_eq(rc, 0, "%s: its sleep returned %d", after, rc);
    cr_expect(!conc_green_killed(g) && conc_green_successful(g), "%s", after);
    cr_expect_eq(conc_green_exception(g, NULL), 0, "%s: exception left", after);
    cr_expect_eq(atomic_load(&links), 1, "%s: its link ran %d times", after, atomic_load(&links));
    cr_expect_eq(strncmp(conc_green_name(g), "Green-", 6), 0, "%s: name %s", after, conc_green_name(g));
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green_recycle, killed_failed_linked_then_reused, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    /* killed while it ran (parked in a sleep) */
    cr_assert_eq(conc_go(&g, recycle_sleep, NULL), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert(conc_green_killed(g));
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after a kill while running");
    /* killed before it started */
    cr_assert_eq(conc_go(&g, recycle_sleep, NULL), 0);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert(conc_green_killed(g) && !conc_green_started(g));
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after a kill before the start");
    /* failed */
    cr_assert_eq(conc_go(&g, recycle_fail, NULL), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    const char *msg = NULL;
    cr_assert_eq(conc_green_exception(g, &msg), CONC_EINVAL);
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after a failure");
    /* ended with a link not yet run when it was made, and one unlinked */
    atomic_int n = 0;
    int probe_rc = -1;
    cr_assert_eq(conc_go(&g, recycle_probe, &probe_rc), 0);
    cr_assert_eq(conc_green_link(g, recycle_count_cb, &n), 0);
    cr_assert_eq(conc_green_link(g, recycle_count_cb, PTR(0)), 0);
    cr_assert_eq(conc_green_unlink(g, recycle_count_cb, PTR(0)), 1);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_eq(atomic_load(&n), 1);
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after links");
    /* a Timeout scope left open */
    cr_assert_eq(conc_go(&g, recycle_leak_scope, NULL), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after a leaked Timeout scope");
    /* joined from another OS thread (its `done` event used) */
    cr_assert_eq(conc_go(&g, recycle_sleep, NULL), 0);
    cr_assert_eq(conc_yield(), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, recycle_join_from_thread, g), 0);
    tu_sleep(0.02);
    cr_assert_eq(conc_green_kill(g, false, 0), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0); /* the hub runs: the kill lands */
    void *jr = PTR(1);
    pthread_join(th, &jr);
    cr_assert_eq(INT(jr), 0);
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after a remote join");
    /* and again joined remotely, on the record that had a remote joiner */
    cr_assert_eq(conc_go(&g, recycle_sleep, NULL), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(pthread_create(&th, NULL, recycle_join_from_thread, g), 0);
    tu_sleep(0.02);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    pthread_join(th, &jr);
    cr_assert_eq(INT(jr), 0);
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after a second remote join");
}

/* A detached green thread's record comes back at its end; one whose
 * handle was freed before it ended comes back when it ends. */
Test(green_recycle, detached_and_freed_early, .timeout = TU_TIMEOUT)
{
    atomic_int n = 0;
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(conc_go(NULL, count_ran, &n), 0);
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, count_ran, &n), 0);
        cr_assert_eq(conc_green_free(g), 0); /* before it ran */
        cr_assert_eq(conc_yield(), 0);
    }
    cr_assert_eq(conc_sleep(0.001), 0);
    cr_assert_eq(atomic_load(&n), 100);
    recycle_check_clean("after detached ones");
}

/* ------------------------------ the hub-local join and its wake-ups */

typedef struct {
    conc_green_t *target;
    double timeout;
    atomic_int rc, done;
} joiner_t;

static void *join_it(void *arg)
{
    joiner_t *j = arg;
    atomic_store(&j->rc, conc_green_join(j->target, j->timeout));
    atomic_store(&j->done, 1);
    return NULL;
}

static void *kill_it(void *arg)
{
    return PTR(conc_green_kill((conc_green_t *)arg, false, 0));
}

/* The target is killed by a third green thread while main joins it. */
Test(green_join_local, target_killed_while_joined, .timeout = TU_TIMEOUT)
{
    conc_green_t *t, *k;
    cr_assert_eq(conc_go(&t, recycle_sleep, NULL), 0);
    cr_assert_eq(conc_go(&k, kill_it, t), 0); /* runs after t parked */
    cr_assert_eq(conc_green_join(t, CONC_FOREVER), 0);
    cr_assert(conc_green_killed(t));
    cr_assert_eq(INT(result_of(k)), 0);
    conc_green_free(k);
    conc_green_free(t);
}

/* Two green threads and main join one target: all woken, in join order,
 * by its end; a joiner that times out leaves the list clean. */
Test(green_join_local, joined_by_three_one_times_out, .timeout = TU_TIMEOUT)
{
    conc_green_t *t, *a, *b, *c;
    int probe_rc = -1;
    cr_assert_eq(conc_go(&t, recycle_probe, &probe_rc), 0);
    joiner_t ja = {.target = t, .timeout = CONC_FOREVER}, jb = {.target = t, .timeout = CONC_FOREVER};
    joiner_t jc = {.target = t, .timeout = 0.0005};
    cr_assert_eq(conc_go(&a, join_it, &ja), 0);
    cr_assert_eq(conc_go(&c, join_it, &jc), 0);
    cr_assert_eq(conc_go(&b, join_it, &jb), 0);
    cr_assert_eq(conc_green_join(t, CONC_FOREVER), 0);
    cr_assert_eq(conc_green_join(a, 5.0), 0);
    cr_assert_eq(conc_green_join(b, 5.0), 0);
    cr_assert_eq(conc_green_join(c, 5.0), 0);
    cr_expect_eq(atomic_load(&ja.rc), 0);
    cr_expect_eq(atomic_load(&jb.rc), 0);
    cr_expect(atomic_load(&jc.rc) == CONC_ETIMEDOUT || atomic_load(&jc.rc) == 0);
    conc_green_free(a);
    conc_green_free(b);
    conc_green_free(c);
    conc_green_free(t);
}

/* A joiner killed while it waits leaves the target's list (its waiter was
 * on its own stack); the target's end later wakes nobody stale. */
Test(green_join_local, joiner_killed_target_runs_on, .timeout = TU_TIMEOUT)
{
    conc_green_t *t, *j;
    double secs = 0.05;
    cr_assert_eq(conc_go(&t, sleep_for, &secs), 0);
    joiner_t jj = {.target = t, .timeout = CONC_FOREVER};
    cr_assert_eq(conc_go(&j, join_it, &jj), 0);
    cr_assert_eq(conc_yield(), 0); /* both parked */
    cr_assert_eq(conc_green_kill(j, true, 5.0), 0);
    cr_assert_eq(atomic_load(&jj.rc), CONC_EKILLED);
    conc_green_free(j);
    /* the joiner's record is reused while t still sleeps */
    recycle_check_clean("after a killed joiner");
    cr_assert_eq(conc_green_join(t, 5.0), 0);
    cr_assert(!conc_green_killed(t));
    conc_green_free(t);
}

/* A dump (another OS thread walking the hub's list of live green threads)
 * while records end, go back to the hub and come out again as new green
 * threads, over and over. */
static atomic_int dump_stop;

static void *dump_loop(void *arg)
{
    (void)arg;
    FILE *f = fopen("/dev/null", "w");
    if (!f)
        return PTR(1);
    long n = 0;
    while (!atomic_load(&dump_stop) || n < 3) {
        if (conc_dump(f) != 0) {
            fclose(f);
            return PTR(2);
        }
        n++;
    }
    fclose(f);
    return NULL;
}

static void *yield_once(void *arg)
{
    (void)arg;
    return PTR(conc_yield());
}

Test(green_recycle, dump_while_records_recycle, .timeout = TU_TIMEOUT)
{
    atomic_store(&dump_stop, 0);
    pthread_t th;
    conc_green_t *warm;
    cr_assert_eq(conc_go(&warm, yield_once, NULL), 0); /* the hub exists before the dumper looks */
    cr_assert_eq(conc_green_join(warm, 5.0), 0);
    conc_green_free(warm);
    cr_assert_eq(pthread_create(&th, NULL, dump_loop, NULL), 0);
    long rounds = tu_iters(20000);
    double end = tu_now() + (TU_SANITIZED ? 3.0 : 1.0);
    for (long i = 0; i < rounds && tu_now() < end; i++) {
        conc_green_t *g[3];
        for (int k = 0; k < 3; k++)
            cr_assert_eq(conc_go(&g[k], yield_once, NULL), 0);
        for (int k = 0; k < 3; k++) {
            cr_assert_eq(conc_green_join(g[k], CONC_FOREVER), 0);
            conc_green_free(g[k]);
        }
    }
    atomic_store(&dump_stop, 1);
    void *r = PTR(9);
    pthread_join(th, &r);
    cr_assert_null(r, "conc_dump failed (%d)", INT(r));
}

/* More ways a record's last green thread may end (review of the recycled
 * records): blocked in an fd wait and killed (the fd then becomes ready:
 * no stale waiter may wake the record's next green thread), a pool
 * member killed in a timed wait, one killed while another OS thread links
 * and joins it, and an unstarted one (conc_green_new) freed. */

static void *recycle_wait_fd(void *arg)
{
    return PTR(conc_wait_read(*(int *)arg, 10.0));
}

static void *recycle_link_join_from_thread(void *arg)
{
    atomic_int *n = (atomic_int *)((void **)arg)[1];
    conc_green_t *g = ((void **)arg)[0];
    if (conc_green_link(g, recycle_count_cb, n) != 0)
        return PTR(-1);
    return PTR(conc_green_join(g, 10.0));
}

Test(green_recycle, fd_wait_pool_remote_link_unstarted_then_reused, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    /* blocked in an fd wait, killed */
    cr_assert_eq(conc_go(&g, recycle_wait_fd, &fds[0]), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert(conc_green_killed(g));
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after a kill in an fd wait");
    cr_assert_eq(write(fds[1], "x", 1), 1); /* ready now: nobody waits */
    recycle_check_clean("after the fd became ready");
    char c;
    cr_assert_eq(read(fds[0], &c, 1), 1);
    /* the fd waited on again by the record's next green thread */
    cr_assert_eq(conc_go(&g, recycle_wait_fd, &fds[0]), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(write(fds[1], "y", 1), 1);
    void *r = PTR(1);
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq(INT(r), 0);
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after an fd wait that ended");
    close(fds[0]);
    close(fds[1]);
    /* a pool member killed in a timed wait */
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 2), 0);
    cr_assert_eq(conc_green_pool_spawn(p, &g, recycle_sleep, NULL, 5.0), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_eq(conc_green_pool_join(p, 5.0), 0);
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after a pool member's kill");
    cr_assert_eq(conc_green_pool_free_count(p), 2);
    cr_assert_eq(conc_green_pool_free(p), 0);
    /* linked and joined from another OS thread while killed */
    for (int i = 0; i < 3; i++) {
        atomic_int n = 0;
        cr_assert_eq(conc_go(&g, recycle_sleep, NULL), 0);
        cr_assert_eq(conc_yield(), 0);
        void *args[2] = {g, &n};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, recycle_link_join_from_thread, args), 0);
        tu_sleep(i * 0.01);
        cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
        void *jr = PTR(1);
        pthread_join(th, &jr);
        cr_assert_eq(INT(jr), 0);
        cr_assert_eq(atomic_load(&n), 1);
        cr_assert_eq(conc_green_free(g), 0);
        recycle_check_clean("after a remote link and join");
    }
    /* made, never started, freed (it ends unrun on the freeing call) */
    atomic_int ran = 0;
    cr_assert_eq(conc_green_new(&g, NULL, count_ran, &ran), 0);
    cr_assert_eq(conc_green_free(g), 0);
    recycle_check_clean("after an unstarted one was freed");
    cr_assert_eq(atomic_load(&ran), 0);
}

/* ------------------------------------------------------------------------
 * green_park's switch (hub.c schedule_inline): a park switches straight to
 * the next ready context, or to the loop on its fairness turn or when none
 * is ready. A ring of green threads hands a token on through Events (each
 * hand-off parks one and readies the next) until a timer stops it: the
 * timer can only fire on a loop turn taken while the ring always has a
 * member ready. Meanwhile a kill, a Timeout scope and a wakeup from
 * another OS thread reach green threads parked beside the ring, and the
 * main context parks in joins (it detaches once nothing green is left). */

#define PARK_RING 4
typedef struct {
    conc_event_t go[PARK_RING];
    atomic_int stop, order_bad, timed_out_ring;
    atomic_long passes;
    double deadline;
    int last; /* the member that had the token last */
} park_ring_t;

typedef struct {
    park_ring_t *r;
    int i;
} park_member_t;

static void *park_ring_member(void *arg)
{
    park_member_t *m = arg;
    park_ring_t *r = m->r;
    for (;;) {
        int rc = conc_event_wait(&r->go[m->i], CONC_FOREVER);
        if (rc != 0)
            return PTR(100 + (rc < 0 ? -rc : rc));
        conc_event_clear(&r->go[m->i]);
        if (atomic_load(&r->stop) || tu_now() > r->deadline) {
            if (!atomic_load(&r->stop))
                atomic_store(&r->timed_out_ring, 1); /* the timer never fired */
            atomic_store(&r->stop, 1);
            conc_event_set(&r->go[(m->i + 1) % PARK_RING]); /* the next one ends too */
            return NULL;
        }
        if (r->last != (m->i + PARK_RING - 1) % PARK_RING)
            atomic_fetch_add(&r->order_bad, 1);
        r->last = m->i;
        atomic_fetch_add(&r->passes, 1);
        conc_event_set(&r->go[(m->i + 1) % PARK_RING]);
    }
}

static conc_event_t park_never = CONC_EVENT_INIT;

static void *park_forever(void *arg)
{
    (void)arg;
    return PTR(conc_event_wait(&park_never, CONC_FOREVER)); /* only a kill ends it */
}

static void *park_timed(void *arg)
{
    park_ring_t *r = arg;
    double t0 = tu_now();
    int rc = conc_event_wait(&park_never, 0.02);
    atomic_store(&r->stop, 1);
    return PTR(rc == CONC_ETIMEDOUT && tu_now() - t0 >= 0.02 - TU_EPS ? 1 : 200 + (rc < 0 ? -rc : rc));
}

static void *park_scoped(void *arg)
{
    (void)arg;
    if (conc_timeout_begin(0.02) != 0)
        return PTR(300);
    int rc = conc_event_wait(&park_never, CONC_FOREVER);
    int fired = conc_timeout_end();
    return PTR(rc == CONC_ETIMEDOUT && fired == 1 ? 1 : 400 + (rc < 0 ? -rc : rc));
}

static conc_event_t park_remote_ev = CONC_EVENT_INIT;

static void *park_remote_waiter(void *arg)
{
    (void)arg;
    return PTR(conc_event_wait(&park_remote_ev, 10.0) == 0 ? 1 : 500);
}

static void *park_remote_setter(void *arg)
{
    (void)arg;
    usleep(20000);
    conc_event_set(&park_remote_ev);
    return NULL;
}

Test(green_park_switch, ring_timer_kill_scope_remote_and_main, .timeout = TU_TIMEOUT)
{
    park_ring_t *r = calloc(1, sizeof *r);
    cr_assert_not_null(r);
    r->deadline = tu_now() + 10.0;
    r->last = PARK_RING - 1;
    park_member_t m[PARK_RING];
    conc_green_t *g[PARK_RING];
    for (int i = 0; i < PARK_RING; i++) {
        m[i] = (park_member_t){r, i};
        cr_assert_eq(conc_go(&g[i], park_ring_member, &m[i]), 0);
    }
    conc_green_t *forever, *timed, *scoped, *remote;
    cr_assert_eq(conc_go(&forever, park_forever, NULL), 0);
    cr_assert_eq(conc_go(&timed, park_timed, r), 0);
    cr_assert_eq(conc_go(&scoped, park_scoped, NULL), 0);
    cr_assert_eq(conc_go(&remote, park_remote_waiter, NULL), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, park_remote_setter, NULL), 0);
    conc_event_set(&r->go[0]);
    for (int i = 0; i < PARK_RING; i++) {
        cr_assert_eq(conc_green_join(g[i], i == 0 ? CONC_FOREVER : 30.0), 0); /* the hub-local join, then join_park */
        cr_assert_null(result_of(g[i]), "ring member %d: %p", i, result_of(g[i]));
        conc_green_free(g[i]);
    }
    cr_assert_eq(atomic_load(&r->timed_out_ring), 0, "the timer never fired while the ring ran");
    cr_assert_gt(atomic_load(&r->passes), 64, "only %ld hand-offs", atomic_load(&r->passes));
    cr_assert_eq(atomic_load(&r->order_bad), 0, "the token went out of order %d times", atomic_load(&r->order_bad));
    cr_assert_eq(conc_green_join(timed, 10.0), 0);
    cr_assert_eq(INT(result_of(timed)), 1, "timed wait: %d", INT(result_of(timed)));
    cr_assert_eq(conc_green_join(scoped, 10.0), 0);
    cr_assert_eq(INT(result_of(scoped)), 1, "scoped wait: %d", INT(result_of(scoped)));
    cr_assert_eq(conc_green_join(remote, 10.0), 0);
    cr_assert_eq(INT(result_of(remote)), 1);
    pthread_join(th, NULL);
    cr_assert_not(conc_green_dead(forever));
    cr_assert_eq(conc_green_kill(forever, true, 10.0), 0);
    cr_assert(conc_green_killed(forever));
    conc_green_t *rest[] = {timed, scoped, remote, forever};
    for (int i = 0; i < 4; i++)
        conc_green_free(rest[i]);
    /* nothing green left: main went back to plain parking */
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
    free(r);
}

/* The main context parked in green_park (an Event wait, not a join) is
 * woken by a green thread; once nothing green is left it detaches. */
static conc_event_t park_main_ev = CONC_EVENT_INIT;
static void *park_set_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++)
        conc_yield();
    conc_event_set(&park_main_ev);
    return NULL;
}

Test(green_park_switch, main_parked_woken_by_green_then_detached, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_go(NULL, park_set_main, NULL), 0);
    cr_assert_eq(conc_event_wait(&park_main_ev, 10.0), 0);
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD); /* the setter ended before main ran again */
}

/* ------------------------------------------- the join's direct hand-off */

/* The usual spawn + join (green.c, hub.c): the ended green thread switches
 * straight back to its one joiner when nothing else is ready (h->handoff),
 * and the main context stays attached, idle, after the join of the last
 * green thread (no detach + attach per spawn + join). Everything else —
 * kills, Timeout scopes, blocking, nesting, other OS threads, links,
 * failures, more joiners — goes the way it went before. */

static void *jd_count(void *arg)
{
    atomic_fetch_add((_Atomic long *)arg, 1);
    return PTR(7);
}

Test(green_join_direct, spawn_join_loop_hands_off_and_main_reads_as_a_thread, .timeout = TU_TIMEOUT)
{
    _Atomic long ran = 0;
    long n = tu_iters(20000);
    for (long i = 0; i < n; i++) {
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, jd_count, &ran), 0);
        cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
        cr_assert(conc_green_successful(g));
        cr_assert_eq(conc_green_free(g), 0);
        /* nothing green alive: a plain thread's context, as before */
        if (i % 1000 == 0)
            cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
    }
    cr_assert_eq(atomic_load(&ran), n);
    cr_assert_null(conc_green_current());
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
    /* while one is alive, main is gevent's main greenlet */
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, jd_count, &ran), 0);
    cr_assert_eq(conc_context_kind(), CONC_CTX_MAIN);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
    conc_green_free(g);
}

/* Main stays attached after the join, with nothing green alive: a wait it
 * makes next behaves as a plain thread's — no LoopExit although the only
 * other thread is one conc never saw (such a thread is ignored for
 * LoopExit while green threads are alive: green_timeout). */
static conc_event_t jd_ev;
static void *jd_raw_setter(void *arg)
{
    (void)arg;
    usleep(50 * 1000);
    conc_event_set(&jd_ev);
    return NULL;
}

Test(green_join_direct, idle_main_waits_as_a_thread_no_loopexit, .timeout = TU_TIMEOUT)
{
    _Atomic long ran = 0;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, jd_count, &ran), 0);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
    conc_green_free(g);
    memset(&jd_ev, 0, sizeof jd_ev);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, jd_raw_setter, NULL), 0);
    cr_assert_eq(conc_event_wait(&jd_ev, CONC_FOREVER), 0);
    pthread_join(th, NULL);
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
    /* a sleep, a timed wait that times out, and a pipe read fed by another
     * thread, from the idle main context */
    cr_assert_eq(conc_go(&g, jd_count, &ran), 0);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
    conc_green_free(g);
    double t0 = tu_now();
    cr_assert_eq(conc_sleep(0.02), 0);
    cr_assert_geq(tu_now() - t0, 0.02 - TU_EPS);
    conc_event_t never = CONC_EVENT_INIT;
    cr_assert_eq(conc_event_wait(&never, 0.02), CONC_ETIMEDOUT);
    cr_assert_eq(conc_go(&g, jd_count, &ran), 0);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
    conc_green_free(g);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(write(p[1], "x", 1), 1);
    char c = 0;
    cr_assert_eq(conc_read(p[0], &c, 1, 5.0), 1);
    cr_assert_eq(c, 'x');
    cr_assert_eq(conc_close(p[0]), 0);
    cr_assert_eq(conc_close(p[1]), 0);
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
    cr_assert_eq(atomic_load(&ran), 3);
}

/* A joiner killed while the green thread it joins runs: the kill is
 * delivered (at the join or at its next blocking call), the green thread
 * it joined still runs to its end. */
typedef struct {
    conc_green_t *joiner;
    _Atomic int g_ran, join_rc, after_rc;
} jd_kill_t;

static void *jd_kills_its_joiner(void *arg)
{
    jd_kill_t *k = arg;
    conc_green_kill(k->joiner, false, 0);
    atomic_store(&k->g_ran, 1);
    return NULL;
}

static void *jd_joiner(void *arg)
{
    jd_kill_t *k = arg;
    conc_green_t *g;
    if (conc_go(&g, jd_kills_its_joiner, k) != 0)
        return NULL;
    atomic_store(&k->join_rc, conc_green_join(g, CONC_FOREVER));
    atomic_store(&k->after_rc, conc_sleep(0.001));
    conc_green_join(g, 5.0);
    conc_green_free(g);
    return NULL;
}

Test(green_join_direct, kill_of_the_joiner_while_it_joins, .timeout = TU_TIMEOUT)
{
    jd_kill_t k = {0};
    atomic_store(&k.join_rc, 99);
    atomic_store(&k.after_rc, 99);
    cr_assert_eq(conc_go(&k.joiner, jd_joiner, &k), 0);
    cr_assert_eq(conc_green_join(k.joiner, 10.0), 0);
    cr_assert_eq(atomic_load(&k.g_ran), 1);
    int jr = atomic_load(&k.join_rc), ar = atomic_load(&k.after_rc);
    /* the kill cut the join short, or the join had its answer first and
     * the kill came at the next blocking call */
    cr_assert(jr == CONC_EKILLED || (jr == 0 && ar == CONC_EKILLED), "join %d, after %d", jr, ar);
    cr_assert(conc_green_killed(k.joiner));
    conc_green_free(k.joiner);
}

/* Kill of the joined green thread: before it started (it never runs, the
 * joiner wakes) and while it blocks. */
static void *jd_block_forever(void *arg)
{
    conc_event_t *ev = arg;
    conc_event_wait(ev, CONC_FOREVER);
    return PTR(1);
}

static conc_green_t *jd_target;
static void *jd_killer(void *arg)
{
    (void)arg;
    conc_green_kill(jd_target, false, 0);
    return NULL;
}

Test(green_join_direct, kill_of_the_joined_green_thread, .timeout = TU_TIMEOUT)
{
    _Atomic long ran = 0;
    for (int started = 0; started < 2; started++) {
        conc_green_t *g, *k;
        conc_event_t ev = CONC_EVENT_INIT;
        if (started) { /* g first: it blocks, then k kills it */
            cr_assert_eq(conc_go(&g, jd_block_forever, &ev), 0);
            jd_target = g;
            cr_assert_eq(conc_go(&k, jd_killer, NULL), 0);
        } else { /* k first: g is killed before it starts */
            cr_assert_eq(conc_go(&k, jd_killer, NULL), 0);
            cr_assert_eq(conc_go(&g, jd_count, &ran), 0);
            jd_target = g; /* (neither ran yet) */
        }
        cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
        cr_assert(conc_green_killed(g));
        cr_assert_eq(conc_green_started(g), started);
        cr_assert_eq(conc_green_join(k, CONC_FOREVER), 0);
        conc_green_free(g);
        conc_green_free(k);
    }
    cr_assert_eq(atomic_load(&ran), 0);
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
}

/* A join in a Timeout scope: cut when the scope fires, 0 when the green
 * thread ends first (it ended through the hand-off). */
static void *jd_sleep(void *arg)
{
    conc_sleep(*(double *)arg);
    return PTR(3);
}

Test(green_join_direct, join_in_a_timeout_scope, .timeout = TU_TIMEOUT)
{
    double long_s = 10, short_s = 0;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, jd_sleep, &long_s), 0);
    cr_assert_eq(conc_timeout_begin(0.05), 0);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_not(conc_green_dead(g));
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    conc_green_free(g);
    cr_assert_eq(conc_go(&g, jd_sleep, &short_s), 0);
    cr_assert_eq(conc_timeout_begin(5.0), 0);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
    cr_assert_eq(conc_timeout_end(), 0);
    cr_assert_eq(INT(result_of(g)), 3);
    conc_green_free(g);
}

/* The joined green thread blocks (an event another green thread sets, a
 * sleep) before it ends; and a chain of green threads each joining the one
 * it spawned. */
typedef struct {
    conc_event_t ev;
    _Atomic int order;
    int waited_at, set_at;
} jd_block_t;

static void *jd_waits(void *arg)
{
    jd_block_t *b = arg;
    conc_event_wait(&b->ev, CONC_FOREVER);
    b->waited_at = atomic_fetch_add(&b->order, 1);
    conc_sleep(0.001);
    return PTR(5);
}

static void *jd_sets(void *arg)
{
    jd_block_t *b = arg;
    b->set_at = atomic_fetch_add(&b->order, 1);
    conc_event_set(&b->ev);
    return NULL;
}

static void *jd_chain(void *arg)
{
    long depth = (long)(uintptr_t)arg;
    if (depth == 0)
        return PTR(1);
    conc_green_t *g;
    if (conc_go(&g, jd_chain, PTR(depth - 1)) != 0)
        return PTR(0);
    void *r = PTR(0);
    if (conc_green_get(g, CONC_FOREVER, &r) != 0)
        r = PTR(0);
    conc_green_free(g);
    return PTR(INT(r) + 1);
}

Test(green_join_direct, joined_one_blocks_then_ends_and_nested_joins, .timeout = TU_TIMEOUT)
{
    for (int i = 0; i < 50; i++) {
        jd_block_t b = {.ev = CONC_EVENT_INIT};
        conc_green_t *w, *s;
        cr_assert_eq(conc_go(&w, jd_waits, &b), 0);
        cr_assert_eq(conc_go(&s, jd_sets, &b), 0);
        cr_assert_eq(conc_green_join(w, CONC_FOREVER), 0);
        cr_assert_eq(INT(result_of(w)), 5);
        cr_assert_eq(b.set_at, 0);
        cr_assert_eq(b.waited_at, 1);
        cr_assert(conc_green_dead(s)); /* it ran before w woke */
        conc_green_free(w);
        conc_green_free(s);
    }
    for (int i = 0; i < 20; i++) {
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, jd_chain, PTR(20)), 0);
        cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
        cr_assert_eq(INT(result_of(g)), 21);
        conc_green_free(g);
    }
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
}

/* Two joiners on the green thread's hub (a green thread and main) and one
 * on another OS thread: all wake, the links run before the joins return,
 * a failure is the green thread's outcome. */
typedef struct {
    conc_green_t *g;
    _Atomic int rc;
} jd_remote_t;

static void *jd_remote_join(void *arg)
{
    jd_remote_t *r = arg;
    atomic_store(&r->rc, conc_green_join(r->g, 10.0));
    return NULL;
}

static void *jd_green_joiner(void *arg)
{
    return PTR(conc_green_join(arg, CONC_FOREVER) == 0 ? 11 : 12);
}

static void *jd_yields_then_fails(void *arg)
{
    for (int i = 0; i < 200; i++)
        conc_yield();
    return conc_fail(CONC_EINVAL, "jd %d", *(int *)arg);
}

static void jd_link(conc_green_t *g, void *arg)
{
    (void)g;
    atomic_fetch_add((_Atomic int *)arg, 1);
}

Test(green_join_direct, more_joiners_links_and_failure, .timeout = TU_TIMEOUT)
{
    int tag = 42;
    _Atomic int linked = 0;
    conc_green_t *g, *j;
    cr_assert_eq(conc_go(&g, jd_yields_then_fails, &tag), 0);
    cr_assert_eq(conc_green_link(g, jd_link, &linked), 0);
    cr_assert_eq(conc_go(&j, jd_green_joiner, g), 0);
    jd_remote_t r = {.g = g};
    atomic_store(&r.rc, 99);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, jd_remote_join, &r), 0);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
    cr_assert_eq(atomic_load(&linked), 1);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&r.rc), 0);
    cr_assert_eq(conc_green_join(j, CONC_FOREVER), 0);
    cr_assert_eq(INT(result_of(j)), 11);
    void *res = PTR(1);
    cr_assert_eq(conc_green_get(g, 0, &res), CONC_EFAILED);
    const char *msg = NULL;
    cr_assert_eq(conc_green_exception(g, &msg), CONC_EINVAL);
    cr_assert_str_eq(msg, "jd 42");
    conc_green_free(j);
    conc_green_free(g);
    /* a failure on the plain hand-off path (no link, one joiner) */
    cr_assert_eq(conc_go(&g, jd_yields_then_fails, &tag), 0);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
    cr_assert_eq(conc_green_exception(g, NULL), CONC_EINVAL);
    conc_green_free(g);
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
}

/* A green thread's join of its own hub's green thread, ended through the
 * hand-off, while other contexts are ready: they keep their order (the
 * hand-off happens only with nothing else ready). */
static _Atomic int jd_seq;
static void *jd_stamp(void *arg)
{
    *(int *)arg = atomic_fetch_add(&jd_seq, 1);
    return NULL;
}

Test(green_join_direct, others_ready_keep_their_order, .timeout = TU_TIMEOUT)
{
    atomic_store(&jd_seq, 0);
    int a = -1, b = -1, c = -1;
    conc_green_t *ga, *gb, *gc;
    cr_assert_eq(conc_go(&ga, jd_stamp, &a), 0);
    cr_assert_eq(conc_go(&gb, jd_stamp, &b), 0);
    cr_assert_eq(conc_go(&gc, jd_stamp, &c), 0);
    cr_assert_eq(conc_green_join(gb, CONC_FOREVER), 0);
    cr_assert_eq(a, 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(conc_green_join(gc, CONC_FOREVER), 0);
    cr_assert_eq(c, 2);
    conc_green_free(ga);
    conc_green_free(gb);
    conc_green_free(gc);
}

/* The idle main context's fd waits detach it first: they wait as a plain
 * thread's and leave the hub nothing to forget — a plain close() and a new
 * pipe that gets the same fd number then wait as they should (a hub that
 * kept the first fd registered would never watch the second). */
typedef struct {
    int fd;
    double delay;
} jd_write_t;

static void *jd_late_writer(void *arg)
{
    jd_write_t *w = arg;
    usleep((useconds_t)(w->delay * 1e6));
    if (write(w->fd, "y", 1) != 1)
        return PTR(1);
    return NULL;
}

Test(green_join_direct, idle_main_fd_waits_leave_the_hub_nothing, .timeout = TU_TIMEOUT)
{
    _Atomic long ran = 0;
    for (int round = 0; round < 3; round++) {
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, jd_count, &ran), 0);
        cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
        conc_green_free(g);
        int p[2];
        cr_assert_eq(pipe(p), 0);
        jd_write_t w = {p[1], 0.02};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, jd_late_writer, &w), 0);
        char c = 0;
        cr_assert_eq(conc_read(p[0], &c, 1, 5.0), 1, "round %d", round); /* it waits */
        cr_assert_eq(c, 'y');
        pthread_join(th, NULL);
        close(p[0]); /* plain closes: a plain thread may use them */
        close(p[1]);
        cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
    }
    cr_assert_eq(atomic_load(&ran), 3);
}
