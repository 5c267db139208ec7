/*
 * timer.c — threading.Timer: one shared timer thread and a binary min-heap.
 *
 * How it works
 *   Every armed timer sits in one global binary min-heap ordered by
 *   (due, seq): due is an absolute CLOCK_MONOTONIC time in ns, seq a global
 *   start counter, so timers due at the same instant fire in start order.
 *   One daemon thread, "conc-timer", created lazily by the first
 *   conc_timer_start through the public conc_thread_* API, loops:
 *     - heap empty: wait on `wake` (no timeout);
 *     - top not due: wait on `wake` until the top's due time;
 *     - top due: pop it, mark it RUNNING, drop the lock, run fn(arg), retake
 *       the lock, mark it FIRED, set its `done` event.
 *   conc_timer_start notifies `wake` only when the new timer becomes the
 *   heap top (an earlier deadline than the one the thread sleeps toward).
 *   All waiting goes through conc's own Lock/Condition/Event, hence through
 *   the park layer.
 *
 * Invariants (all under g.lock)
 *   - t->state == PENDING  <=> t is in the heap, and g.heap[t->idx].t == t.
 *   - at most one timer is RUNNING: g.running; fn runs without g.lock held,
 *     so fn may start, cancel, free or join (other, finished) timers.
 *   - PENDING -> RUNNING -> FIRED, or PENDING -> CANCELLED; FIRED and
 *     CANCELLED are final, and `done` is set exactly when one is reached.
 *   - references: the user's handle holds one, the heap (or the running
 *     slot) holds one while PENDING/RUNNING; the last conc_timer_free or
 *     release frees the struct, so free is safe from any thread at any time.
 *     cancel removes the entry from the heap in O(log n) using t->idx.
 *
 * Failure: fn may call conc_fail(); after fn returns the failure goes to
 *   the excepthook (conc_set_excepthook) naming the timer thread, and is
 *   cleared.
 *
 * Join: waits on t->done. On the timer thread a join of an unfinished timer
 *   can never succeed through firing (the only thread that fires timers is
 *   the one waiting), so it returns CONC_EPERM, not only for fn's own timer.
 *
 * Exit: the first time the thread is created an exit hook is registered
 *   with the thread module (thread/internal.h); it waits until the heap is
 *   empty and nothing runs, like Python joining non-daemon Timer threads
 *   (skipped when exit() is called on the timer thread itself). The exit
 *   sequence alternates it with joining threads until neither a timer nor
 *   such a thread is left: a thread may start a timer after the heap first
 *   drained, and a timer may start a thread.
 *
 * Fork: pthread_atfork; prepare takes g.lock so the child inherits a
 *   consistent heap. In the child there is no timer thread: every pending
 *   timer becomes CANCELLED (its event re-initialised and set, so joins
 *   return), the heap is emptied, the locks are fresh, and the next start
 *   creates a new thread. If fork() was called from inside fn, the forking
 *   thread finishes that timer in the child and then calls exit(0): it is
 *   the child's main thread and its "program" (fn) is over.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "conc/base.h"
#include "conc/sync.h"
#include "conc/thread.h"
#include "thread/internal.h"

enum { T_PENDING, T_RUNNING, T_FIRED, T_CANCELLED };

#define NO_IDX SIZE_MAX
/* Intervals past this many ns (~146 years) clamp: they never fire. */
#define MAX_INTERVAL_NS ((uint64_t)1 << 62)

struct conc_timer {
    atomic_int refs;
    atomic_int state;   /* written under g.lock, read without it */
    uint64_t due;       /* absolute CLOCK_MONOTONIC ns */
    uint64_t seq;       /* start order, breaks ties between equal dues */
    size_t idx;         /* index in g.heap while PENDING */
    void (*fn)(void *);
    void *arg;
    conc_event_t done;  /* set once FIRED or CANCELLED */
};

/* Keys live in the array, so sifting compares without touching timers. */
struct hent {
    uint64_t due, seq;
    conc_timer_t *t;
};

static struct {
    conc_lock_t lock;
    conc_cond_t wake;    /* the timer thread waits here */
    conc_cond_t idle;    /* the exit hook waits here */
    struct hent *heap;
    size_t n, cap;
    uint64_t seq;
    conc_timer_t *running;
    unsigned idle_waiters;
    bool thread_up;
    bool atexit_done;    /* the exit hook is registered */
    unsigned gen;        /* bumped in a forked child */
} g;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Thread_local bool tl_timer_thread;     /* this is a timer thread */
static _Thread_local conc_timer_t *tl_current; /* timer whose fn runs here */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void timer_unref(conc_timer_t *t)
{
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        free(t);
}

/* ------------------------------------------------------------ the heap */

static bool before(const struct hent *a, const struct hent *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_place(size_t i, struct hent e)
{
    g.heap[i] = e;
    e.t->idx = i;
}

static void sift_up(size_t i)
{
    struct hent e = g.heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&e, &g.heap[p]))
            break;
        heap_place(i, g.heap[p]);
        i = p;
    }
    heap_place(i, e);
}

static void sift_down(size_t i)
{
    struct hent e = g.heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= g.n)
            break;
        if (c + 1 < g.n && before(&g.heap[c + 1], &g.heap[c]))
            c++;
        if (!before(&g.heap[c], &e))
            break;
        heap_place(i, g.heap[c]);
        i = c;
    }
    heap_place(i, e);
}

static int heap_push(conc_timer_t *t)
{
    if (g.n == g.cap) {
        size_t cap = g.cap ? g.cap * 2 : 64;
        struct hent *h = realloc(g.heap, cap * sizeof *h);
        if (!h)
            return CONC_ENOMEM;
        g.heap = h;
        g.cap = cap;
    }
    g.heap[g.n] = (struct hent){t->due, t->seq, t};
    t->idx = g.n++;
    sift_up(t->idx);
    return 0;
}

static void heap_remove(conc_timer_t *t)
{
    size_t i = t->idx;
    struct hent last = g.heap[--g.n];
    t->idx = NO_IDX;
    if (i != g.n) {
        heap_place(i, last);
        sift_down(i);
        sift_up(last.t->idx);
    }
    /* Give memory back after a burst (keep at least 64 slots). */
    if (g.cap > 64 && g.n < g.cap / 4) {
        struct hent *h = realloc(g.heap, g.cap / 2 * sizeof *h);
        if (h) {
            g.heap = h;
            g.cap /= 2;
        }
    }
}

/* Wake the exit hook if it waits and there is nothing left to do. */
static void check_idle(void)
{
    if (g.idle_waiters && g.n == 0 && !g.running)
        conc_cond_notify_all(&g.idle);
}

/* -------------------------------------------------------- init and fork */

static void init_locks(void)
{
    conc_lock_init(&g.lock);
    conc_cond_init(&g.wake, &g.lock);
    conc_cond_init(&g.idle, &g.lock);
}

static void fork_prepare(void)
{
    conc_lock_acquire(&g.lock, true, CONC_FOREVER);
}

static void fork_parent(void)
{
    conc_lock_release(&g.lock);
}

/* Mark t finished without firing in a child, where its waiters are gone. */
static void child_finish(conc_timer_t *t)
{
    atomic_store_explicit(&t->state, T_CANCELLED, memory_order_release);
    conc_event_init(&t->done);
    conc_event_set(&t->done);
    timer_unref(t);
}

static void fork_child(void)
{
    init_locks();
    g.gen++;
    for (size_t i = 0; i < g.n; i++) {
        g.heap[i].t->idx = NO_IDX;
        child_finish(g.heap[i].t);
    }
    g.n = 0;
    g.idle_waiters = 0;
    g.thread_up = false;
    if (g.running && tl_current != g.running) {
        /* Its fn was running on a thread that does not exist here. */
        child_finish(g.running);
        g.running = NULL;
    } else if (g.running) {
        /* Forked from its fn: this thread sets done later; drop stale
         * waiters of the parent first. */
        conc_event_init(&g.running->done);
    }
    /* If fork() came from inside fn, this thread finishes that timer and
     * then leaves the loop (g.gen changed); it is no timer thread now. */
    tl_timer_thread = false;
}

static void init_once(void)
{
    init_locks();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ------------------------------------------------------ the timer thread */

static void report_failure(void)
{
    if (conc_failure(NULL) == 0)
        return;
    /* Through threading.excepthook, naming the timer thread (Python runs
     * each Timer in its own thread, whose failure goes the same way). */
    conc__thread_report_failure(conc_current_thread());
    conc_fail_clear();
}

static void *timer_main(void *arg)
{
    (void)arg;
    tl_timer_thread = true;
    conc_lock_acquire(&g.lock, true, CONC_FOREVER);
    unsigned gen = g.gen;
    uint64_t now = 0; /* a past reading: the clock is read only when needed */
    while (gen == g.gen) {
        if (g.n == 0) {
            check_idle();
            conc_cond_wait(&g.wake, CONC_FOREVER);
            continue;
        }
        conc_timer_t *t = g.heap[0].t;
        if (g.heap[0].due > now && g.heap[0].due > (now = now_ns())) {
            conc_cond_wait(&g.wake, (double)(t->due - now) / 1e9);
            continue;
        }
        heap_remove(t);
        atomic_store_explicit(&t->state, T_RUNNING, memory_order_release);
        g.running = t; /* the heap's reference moves to the running slot */
        conc_lock_release(&g.lock);

        tl_current = t;
        t->fn(t->arg);
        tl_current = NULL;
        report_failure();

        conc_lock_acquire(&g.lock, true, CONC_FOREVER);
        atomic_store_explicit(&t->state, T_FIRED, memory_order_release);
        g.running = NULL;
        conc_event_set(&t->done);
        timer_unref(t);
    }
    /* Forked from inside fn: in the child this thread is the main thread,
     * and fn returning is the end of its program. Returning from here would
     * leave the process alive as long as any daemon thread (the new timer
     * thread, say) lives, so end it like main returning: exit(0) runs the
     * exit-time waits for timers and non-daemon threads first. */
    check_idle();
    conc_lock_release(&g.lock);
    exit(0);
}

static bool drained(void)
{
    conc_lock_acquire(&g.lock, true, CONC_FOREVER);
    bool d = !g.thread_up || (g.n == 0 && !g.running);
    conc_lock_release(&g.lock);
    return d;
}

/* Exit hook (thread/internal.h): wait until no timer is pending or
 * running, like Python's non-daemon Timer threads; true if it waited. The
 * exit sequence alternates this with joining threads, since timers may
 * start threads and threads may start timers. */
static bool timers_exit_hook(void)
{
    if (tl_timer_thread || drained())
        return false; /* exit() from a timer function: nobody else can fire them */
    conc_lock_acquire(&g.lock, true, CONC_FOREVER);
    while (g.thread_up && (g.n > 0 || g.running)) {
        g.idle_waiters++;
        conc_cond_wait(&g.idle, CONC_FOREVER);
        g.idle_waiters--;
    }
    conc_lock_release(&g.lock);
    return true;
}

/* Called with g.lock held. */
static int ensure_thread(void)
{
    if (g.thread_up)
        return 0;
    conc_thread_opts_t o = {.name = "conc-timer", .daemon = true};
    conc_thread_t *th;
    int rc = conc_thread_spawn(&th, timer_main, NULL, &o);
    if (rc != 0)
        return rc == CONC_ENOMEM ? rc : CONC_EAGAIN;
    conc_thread_free(th); /* we never join it; the thread keeps running */
    g.thread_up = true;
    if (!g.atexit_done) {
        g.atexit_done = true;
        conc__at_exit(timers_exit_hook);
    }
    return 0;
}

/* ------------------------------------------------------------ public API */

int conc_timer_start(conc_timer_t **out, double interval, void (*fn)(void *), void *arg)
{
    if (!out || !fn || isnan(interval))
        return CONC_EINVAL;
    /* Python's Timer waits finished.wait(interval): a negative interval
     * is already up (fires at once), a huge one never comes. */
    uint64_t delta;
    double ns = interval * 1e9;
    delta = !(ns > 0) ? 0 : ns >= (double)MAX_INTERVAL_NS ? MAX_INTERVAL_NS : (uint64_t)ns;

    conc_timer_t *t = calloc(1, sizeof *t);
    if (!t)
        return CONC_ENOMEM;
    atomic_init(&t->refs, 2);
    atomic_init(&t->state, T_PENDING);
    t->fn = fn;
    t->arg = arg;
    t->idx = NO_IDX;
    conc_event_init(&t->done);

    pthread_once(&g_once, init_once);
    conc_lock_acquire(&g.lock, true, CONC_FOREVER);
    int rc = ensure_thread();
    if (rc == 0) {
        t->due = now_ns() + delta;
        t->seq = g.seq++;
        rc = heap_push(t);
    }
    if (rc == 0 && t->idx == 0)
        conc_cond_notify(&g.wake, 1); /* a new earliest deadline */
    conc_lock_release(&g.lock);
    if (rc != 0) {
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int conc_timer_cancel(conc_timer_t *t)
{
    if (!t)
        return CONC_EINVAL;
    if (atomic_load_explicit(&t->state, memory_order_acquire) != T_PENDING)
        return 0; /* fired, running or cancelled already */
    conc_lock_acquire(&g.lock, true, CONC_FOREVER);
    bool removed = false;
    if (atomic_load_explicit(&t->state, memory_order_relaxed) == T_PENDING) {
        heap_remove(t);
        atomic_store_explicit(&t->state, T_CANCELLED, memory_order_release);
        conc_event_set(&t->done);
        check_idle();
        removed = true;
        /* No need to wake the thread if t was the top: it wakes at t's old
         * due time, finds a later top, and sleeps again. */
    }
    conc_lock_release(&g.lock);
    if (removed)
        timer_unref(t); /* the heap's reference */
    return 0;
}

int conc_timer_join(conc_timer_t *t, double timeout)
{
    if (!t)
        return CONC_EINVAL;
    int st = atomic_load_explicit(&t->state, memory_order_acquire);
    if (st == T_FIRED || st == T_CANCELLED)
        return 0; /* final states are stored before done is set */
    if (tl_timer_thread || tl_current == t)
        return CONC_EPERM; /* it could only fire after we return */
    return conc_event_wait(&t->done, timeout);
}

bool conc_timer_is_alive(const conc_timer_t *t)
{
    if (!t)
        return false;
    int st = atomic_load_explicit(&((conc_timer_t *)t)->state, memory_order_acquire);
    return st == T_PENDING || st == T_RUNNING;
}

bool conc_timer_fired(const conc_timer_t *t)
{
    if (!t)
        return false;
    return atomic_load_explicit(&((conc_timer_t *)t)->state, memory_order_acquire) == T_FIRED;
}

int conc_timer_free(conc_timer_t *t)
{
    if (!t)
        return CONC_EINVAL;
    timer_unref(t);
    return 0;
}
