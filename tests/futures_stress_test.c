/* Futures under load: many submitters with checked sums, cancel racing the
 * start of a task (from many threads), completion racing completion,
 * callbacks added while the future completes (each runs exactly once),
 * waiters racing completions, and futures freed at random moments by random
 * threads; the work-stealing deque alone (its owner's pops and the two-deep
 * take of an inline run racing thieves, growing under them). Iterations
 * scale down under sanitizers (tu_iters). */
#include "test_util.h"

#include "futures/deque.h"
#include "futures/internal.h"

#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))

static conc_executor_t *mkpool(size_t max_workers)
{
    conc_thread_pool_opts_t o = {.max_workers = max_workers};
    conc_executor_t *ex = NULL;
    int rc = conc_thread_pool_new(&ex, &o);
    cr_assert_eq(rc, 0, "conc_thread_pool_new = %d", rc);
    return ex;
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* ------------------------------------------------------ many submitters */

static conc_executor_t *pool;
static atomic_long task_sum, task_count;
static atomic_int sub_errors;
static long per_thread;

static void *add_task(void *arg)
{
    atomic_fetch_add(&task_sum, (long)U(arg));
    atomic_fetch_add(&task_count, 1);
    if ((U(arg) & 63) == 0)
        return conc_fail(CONC_ERANGE, "%lu", (unsigned long)U(arg));
    return P(U(arg) * 3);
}

static void submitter(void *p, int idx)
{
    (void)p;
    enum { BATCH = 64 };
    conc_future_t *fs[BATCH];
    uintptr_t args[BATCH];
    uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(idx + 1);
    long i = 0;
    while (i < per_thread) {
        int n = 0;
        for (; n < BATCH && i < per_thread; n++, i++) {
            args[n] = (uintptr_t)(idx * per_thread + i + 1);
            if (conc_submit(pool, &fs[n], add_task, P(args[n])) != 0) {
                atomic_fetch_add(&sub_errors, 1);
                return;
            }
        }
        for (int k = 0; k < n; k++) {
            /* some are checked, some dropped unread (fire and forget) */
            if (rnd(&seed) % 4 != 0) {
                void *r = NULL;
                int rc = conc_future_result(fs[k], 30, &r);
                bool fails = (args[k] & 63) == 0;
                if (fails ? rc != CONC_EFAILED : (rc != 0 || U(r) != args[k] * 3))
                    atomic_fetch_add(&sub_errors, 1);
            }
            conc_future_free(fs[k]);
        }
    }
}

Test(futures_stress, many_submitters_checked_sums, .timeout = TU_TIMEOUT)
{
    const int T = 8;
    per_thread = tu_iters(20000);
    atomic_store(&task_sum, 0);
    atomic_store(&task_count, 0);
    atomic_store(&sub_errors, 0);
    pool = mkpool(4);
    tu_run_threads(T, submitter, NULL);
    cr_assert_eq(conc_executor_free(pool), 0);
    long n = T * per_thread;
    cr_assert_eq(atomic_load(&sub_errors), 0, "%d wrong results or failed submits", atomic_load(&sub_errors));
    cr_assert_eq(atomic_load(&task_count), n, "%ld tasks ran, %ld submitted", atomic_load(&task_count), n);
    cr_assert_eq(atomic_load(&task_sum), n * (n + 1) / 2);
}

/* nested submitters: tasks that submit tasks, from many threads at once */
static void *leaf_task(void *arg)
{
    atomic_fetch_add(&task_sum, (long)U(arg));
    atomic_fetch_add(&task_count, 1);
    return arg;
}
static void *fanout_task(void *arg)
{
    conc_future_t *fs[4];
    long sum = 0;
    int n = 0;
    for (; n < 4; n++)
        if (conc_submit(pool, &fs[n], leaf_task, P(U(arg) * 4 + (uintptr_t)n)) != 0)
            break;
    for (int k = 0; k < n; k++) {
        void *r = NULL;
        if (conc_future_result(fs[k], CONC_FOREVER, &r) == 0) /* untimed: the worker helps */
            sum += (long)U(r);
        conc_future_free(fs[k]);
    }
    if (n != 4)
        return conc_fail(CONC_EFAILED, "submit failed");
    return P(sum);
}

static void fanout_submitter(void *p, int idx)
{
    (void)p;
    for (long i = 0; i < per_thread; i++) {
        uintptr_t a = (uintptr_t)(idx * per_thread + i);
        conc_future_t *f;
        if (conc_submit(pool, &f, fanout_task, P(a)) != 0) {
            atomic_fetch_add(&sub_errors, 1);
            return;
        }
        void *r = NULL;
        if (conc_future_result(f, 30, &r) != 0 || U(r) != 16 * a + 6)
            atomic_fetch_add(&sub_errors, 1);
        conc_future_free(f);
    }
}

Test(futures_stress, nested_submits_from_many_threads, .timeout = TU_TIMEOUT)
{
    const int T = 6;
    per_thread = tu_iters(2000);
    atomic_store(&task_sum, 0);
    atomic_store(&task_count, 0);
    atomic_store(&sub_errors, 0);
    pool = mkpool(2);
    tu_run_threads(T, fanout_submitter, NULL);
    cr_assert_eq(conc_executor_free(pool), 0);
    cr_assert_eq(atomic_load(&sub_errors), 0);
    long leaves = 4L * T * per_thread;
    cr_assert_eq(atomic_load(&task_count), leaves);
    cr_assert_eq(atomic_load(&task_sum), leaves * (leaves - 1) / 2);
}

/* ------------------------------------------ cancel racing the task start */

#define NF 256
static conc_future_t *cf[NF];
static atomic_int ran[NF], cb_calls[NF], cancel_true[NF], cancel_false[NF];
static atomic_int srnc_rc[NF];
static int nf;

static void *mark_ran(void *arg)
{
    atomic_fetch_add(&ran[U(arg)], 1);
    return arg;
}

static void count_cb(conc_future_t *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&cb_calls[U(arg)], 1);
}

static void canceller(void *p, int idx)
{
    (void)p;
    uint64_t seed = 0x1234567ull + (uint64_t)idx * 7919;
    /* walk the futures in a random rotation, each thread differently */
    int start = (int)(rnd(&seed) % (uint64_t)nf), step = (idx & 1) ? 1 : nf - 1;
    for (int k = 0, i = start; k < nf; k++, i = (i + step) % nf) {
        if (conc_future_cancel(cf[i]))
            atomic_fetch_add(&cancel_true[i], 1);
        else
            atomic_fetch_add(&cancel_false[i], 1);
    }
}

static void reset_race(int n)
{
    nf = n;
    for (int i = 0; i < NF; i++) {
        atomic_store(&ran[i], 0);
        atomic_store(&cb_calls[i], 0);
        atomic_store(&cancel_true[i], 0);
        atomic_store(&cancel_false[i], 0);
        atomic_store(&srnc_rc[i], 99);
    }
}

Test(futures_stress, cancel_races_task_start, .timeout = TU_TIMEOUT)
{
    const int C = 3;
    long rounds = tu_iters(200);
    long total_cancelled = 0, total_ran = 0;
    for (long r = 0; r < rounds; r++) {
        reset_race(NF);
        pool = mkpool(2);
        for (int i = 0; i < nf; i++) {
            cr_assert_eq(conc_submit(pool, &cf[i], mark_ran, P(i)), 0);
            cr_assert_eq(conc_future_add_done_callback(cf[i], count_cb, P(i)), 0);
        }
        tu_run_threads(C, canceller, NULL);
        cr_assert_eq(conc_executor_free(pool), 0);
        for (int i = 0; i < nf; i++) {
            bool c = conc_future_cancelled(cf[i]);
            cr_assert(conc_future_done(cf[i]), "future %d not done after shutdown(wait)", i);
            int rn = atomic_load(&ran[i]), t = atomic_load(&cancel_true[i]), fl = atomic_load(&cancel_false[i]);
            cr_assert_eq(rn + (c ? 1 : 0), 1, "future %d: ran %d times, cancelled %d", i, rn, c);
            if (c)
                cr_assert_eq(t, C, "future %d cancelled, but %d of %d cancel() calls said no", i, fl, C);
            else
                cr_assert_eq(fl, C, "future %d ran, but %d cancel() calls said yes", i, t);
            cr_assert_eq(atomic_load(&cb_calls[i]), 1, "future %d: %d callback calls", i,
                         atomic_load(&cb_calls[i]));
            cr_assert_eq(conc_future_result(cf[i], 0, NULL), c ? CONC_ECANCELLED : 0);
            total_cancelled += c;
            total_ran += rn;
            conc_future_free(cf[i]);
        }
    }
    TU_TRACE("cancel race: %ld cancelled, %ld ran", total_cancelled, total_ran);
    cr_assert_eq(total_cancelled + total_ran, rounds * NF);
}

/* the same race on bare futures: set_running_or_notify_cancel vs cancel */
static void starter(void *p, int idx)
{
    (void)p;
    (void)idx;
    for (int i = 0; i < nf; i++) {
        int rc = conc_future_set_running_or_notify_cancel(cf[i]);
        atomic_store(&srnc_rc[i], rc);
        if (rc == 1) {
            atomic_fetch_add(&ran[i], 1);
            conc_future_set_result(cf[i], P(i));
        }
    }
}

static void race_starter_and_cancellers(void *p, int idx)
{
    if (idx == 0)
        starter(p, idx);
    else
        canceller(p, idx);
}

Test(futures_stress, cancel_races_set_running, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(1000);
    const int C = 3;
    for (long r = 0; r < rounds; r++) {
        reset_race(NF);
        for (int i = 0; i < nf; i++) {
            cr_assert_eq(conc_future_new(&cf[i]), 0);
            cr_assert_eq(conc_future_add_done_callback(cf[i], count_cb, P(i)), 0);
        }
        tu_run_threads(C + 1, race_starter_and_cancellers, NULL);
        for (int i = 0; i < nf; i++) {
            int s = atomic_load(&srnc_rc[i]);
            bool c = conc_future_cancelled(cf[i]);
            cr_assert(s == 0 || s == 1, "set_running_or_notify_cancel = %d", s);
            cr_assert_eq(s == 0, c, "future %d: srnc %d but cancelled %d", i, s, c);
            cr_assert_eq(atomic_load(&cancel_true[i]), c ? C : 0);
            cr_assert_eq(atomic_load(&cancel_false[i]), c ? 0 : C);
            cr_assert_eq(conc_future_state(cf[i]), c ? CONC_FUTURE_CANCELLED : CONC_FUTURE_FINISHED);
            cr_assert_eq(atomic_load(&cb_calls[i]), 1, "future %d: %d callback calls", i,
                         atomic_load(&cb_calls[i]));
            conc_future_free(cf[i]);
        }
    }
}

/* ------------------------------------------ completion racing completion */

static atomic_int winners[NF], eperms[NF], others[NF];
static void completer(void *p, int idx)
{
    (void)p;
    for (int i = 0; i < nf; i++) {
        int rc;
        switch ((idx + i) % 3) {
        case 0: rc = conc_future_set_result(cf[i], P(idx + 1)); break;
        case 1: rc = conc_future_set_exception(cf[i], CONC_EEOF, "x"); break;
        default: rc = conc_future_cancel(cf[i]) ? 0 : CONC_EPERM; break;
        }
        if (rc == 0)
            atomic_fetch_add(&winners[i], 1);
        else if (rc == CONC_EPERM)
            atomic_fetch_add(&eperms[i], 1);
        else
            atomic_fetch_add(&others[i], 1);
    }
}

Test(futures_stress, set_result_set_exception_cancel_race, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(1000);
    const int T = 4;
    for (long r = 0; r < rounds; r++) {
        reset_race(NF);
        for (int i = 0; i < nf; i++) {
            atomic_store(&winners[i], 0);
            atomic_store(&eperms[i], 0);
            atomic_store(&others[i], 0);
            cr_assert_eq(conc_future_new(&cf[i]), 0);
            cr_assert_eq(conc_future_add_done_callback(cf[i], count_cb, P(i)), 0);
        }
        tu_run_threads(T, completer, NULL);
        for (int i = 0; i < nf; i++) {
            cr_assert_eq(atomic_load(&others[i]), 0);
            /* a cancel after a cancel also "wins" (idempotent); set_* after
             * anything is EPERM, so: exactly one winner unless the winner
             * was a cancel, in which case every cancel wins */
            bool c = conc_future_cancelled(cf[i]);
            int w = atomic_load(&winners[i]);
            if (!c)
                cr_assert_eq(w, 1, "future %d completed by %d threads", i, w);
            else
                cr_assert_geq(w, 1);
            cr_assert_eq(w + atomic_load(&eperms[i]), T);
            cr_assert(conc_future_done(cf[i]));
            cr_assert_eq(atomic_load(&cb_calls[i]), 1, "future %d: %d callback calls", i,
                         atomic_load(&cb_calls[i]));
            conc_future_free(cf[i]);
        }
    }
}

/* ------------------------------------- callbacks added during completion */

static atomic_int added[NF];
static void adder(void *p, int idx)
{
    (void)p;
    (void)idx;
    for (int i = 0; i < nf; i++)
        for (int k = 0; k < 4; k++)
            if (conc_future_add_done_callback(cf[i], count_cb, P(i)) == 0)
                atomic_fetch_add(&added[i], 1);
}
static void finisher(void *p, int idx)
{
    (void)p;
    (void)idx;
    for (int i = 0; i < nf; i++) {
        if (i & 1)
            conc_future_set_result(cf[i], NULL);
        else
            conc_future_cancel(cf[i]);
    }
}
static void adders_and_finisher(void *p, int idx)
{
    if (idx == 0)
        finisher(p, idx);
    else
        adder(p, idx);
}

Test(futures_stress, callbacks_added_while_completing, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(200);
    for (long r = 0; r < rounds; r++) {
        reset_race(NF);
        for (int i = 0; i < nf; i++) {
            atomic_store(&added[i], 0);
            cr_assert_eq(conc_future_new(&cf[i]), 0);
        }
        tu_run_threads(4, adders_and_finisher, NULL);
        for (int i = 0; i < nf; i++) {
            cr_assert_eq(atomic_load(&added[i]), 12);
            cr_assert_eq(atomic_load(&cb_calls[i]), 12, "future %d: %d of 12 callbacks ran", i,
                         atomic_load(&cb_calls[i]));
            conc_future_free(cf[i]);
        }
    }
}

/* --------------------------------------------- waiters racing completion */

static atomic_int wait_errors;
static void racing_waiter(void *p, int idx)
{
    (void)p;
    uint64_t seed = 77 + (uint64_t)idx;
    for (int i = 0; i < nf; i++) {
        switch (rnd(&seed) % 4) {
        case 0: {
            void *r = NULL;
            if (conc_future_result(cf[i], 30, &r) != 0 || U(r) != (uintptr_t)i)
                atomic_fetch_add(&wait_errors, 1);
            break;
        }
        case 1: {
            conc_future_t *fs[3] = {cf[i], cf[(i + 1) % nf], cf[i]};
            size_t nd = 0, nn = 0;
            conc_future_t *d[3], *n[3];
            if (conc_wait(fs, 3, 30, CONC_FIRST_COMPLETED, d, &nd, n, &nn) != 0 || nd < 1 || nd + nn != 2)
                atomic_fetch_add(&wait_errors, 1);
            break;
        }
        case 2: {
            conc_as_completed_t *it;
            conc_future_t *fs[2] = {cf[i], cf[(i + 7) % nf]}, *got;
            if (conc_as_completed_new(&it, fs, 2, 30) != 0) {
                atomic_fetch_add(&wait_errors, 1);
                break;
            }
            if (conc_as_completed_next(it, &got) != 0 || (got != fs[0] && got != fs[1]))
                atomic_fetch_add(&wait_errors, 1);
            conc_as_completed_free(it); /* with the other one maybe pending */
            break;
        }
        default:
            if (conc_future_result(cf[i], rnd(&seed) % 2 ? 0 : 0.0001, NULL) == CONC_EINVAL)
                atomic_fetch_add(&wait_errors, 1);
            break;
        }
    }
}
static void sequential_finisher(void *p, int idx)
{
    (void)p;
    (void)idx;
    for (int i = 0; i < nf; i++) {
        conc_future_set_result(cf[i], P(i));
        if ((i & 15) == 0)
            tu_sleep(0.0002);
    }
}
static void waiters_and_finisher(void *p, int idx)
{
    if (idx == 0)
        sequential_finisher(p, idx);
    else
        racing_waiter(p, idx);
}

Test(futures_stress, waiters_race_completion, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(100);
    atomic_store(&wait_errors, 0);
    for (long r = 0; r < rounds; r++) {
        reset_race(NF);
        for (int i = 0; i < nf; i++)
            cr_assert_eq(conc_future_new(&cf[i]), 0);
        tu_run_threads(5, waiters_and_finisher, NULL);
        for (int i = 0; i < nf; i++)
            conc_future_free(cf[i]);
        cr_assert_eq(atomic_load(&wait_errors), 0, "round %ld: %d wrong waits", r, atomic_load(&wait_errors));
    }
}

/* ------------------------------------------- futures freed at random times */

static pthread_mutex_t hand_mu = PTHREAD_MUTEX_INITIALIZER;
static conc_future_t *handoff[4096];
static int nhand;
static atomic_int producers_left;
static atomic_long rf_ran, rf_cb;

static void *rf_task(void *arg)
{
    if (U(arg) % 5 == 0)
        tu_sleep(0.0001);
    atomic_fetch_add(&rf_ran, 1);
    return arg;
}
static void rf_cb_fn(conc_future_t *f, void *arg)
{
    (void)f;
    (void)arg;
    atomic_fetch_add(&rf_cb, 1);
}

static void random_freer(void *p, int idx)
{
    (void)p;
    uint64_t seed = 0xabcdefull * (uint64_t)(idx + 3);
    if (idx % 2 == 0) { /* producers */
        for (long i = 0; i < per_thread; i++) {
            conc_future_t *f;
            if (conc_submit(pool, &f, rf_task, P(i)) != 0) {
                atomic_fetch_add(&sub_errors, 1);
                break;
            }
            uint64_t x = rnd(&seed);
            if (x & 1)
                conc_future_add_done_callback(f, rf_cb_fn, NULL);
            else
                atomic_fetch_add(&rf_cb, 1); /* keep the count simple */
            switch ((x >> 1) % 4) {
            case 0: conc_future_free(f); break;                    /* at once */
            case 1: conc_future_result(f, 30, NULL); conc_future_free(f); break; /* after */
            case 2: { /* a ref for later, the other now */
                conc_future_t *g = conc_future_ref(f);
                conc_future_free(f);
                if ((x >> 3) & 1)
                    conc_future_cancel(g);
                conc_future_free(g);
                break;
            }
            default: /* hand it to another thread */
                pthread_mutex_lock(&hand_mu);
                if (nhand < 4096) {
                    handoff[nhand++] = f;
                    f = NULL;
                }
                pthread_mutex_unlock(&hand_mu);
                if (f)
                    conc_future_free(f);
            }
        }
        atomic_fetch_sub(&producers_left, 1);
    } else { /* freers */
        for (;;) {
            conc_future_t *f = NULL;
            pthread_mutex_lock(&hand_mu);
            if (nhand > 0)
                f = handoff[--nhand];
            pthread_mutex_unlock(&hand_mu);
            if (f) {
                if (rnd(&seed) % 3 == 0)
                    conc_future_result(f, 0, NULL);
                conc_future_free(f);
            } else if (atomic_load(&producers_left) == 0) {
                break;
            } else {
                tu_sleep(0.0001);
            }
        }
    }
}

Test(futures_stress, futures_freed_at_random_times, .timeout = TU_TIMEOUT)
{
    const int T = 6;
    per_thread = tu_iters(10000);
    atomic_store(&sub_errors, 0);
    atomic_store(&rf_ran, 0);
    atomic_store(&rf_cb, 0);
    atomic_store(&producers_left, T / 2);
    nhand = 0;
    pool = mkpool(3);
    tu_run_threads(T, random_freer, NULL);
    cr_assert_eq(conc_executor_free(pool), 0);
    cr_assert_eq(atomic_load(&sub_errors), 0);
    long n = (T / 2) * per_thread;
    /* some were cancelled before they ran (case 2); none ran twice, and
     * every callback ran exactly once */
    cr_assert_leq(atomic_load(&rf_ran), n);
    cr_assert_eq(atomic_load(&rf_cb), n, "%ld of %ld callbacks", atomic_load(&rf_cb), n);
}

/* -------------------------- fork-join: inline runs racing thieves, cancels
 *
 * Trees of tasks that submit two or three subtasks and wait on them in
 * varying orders: the oldest first (the wait takes it out from under the
 * newer one, which goes back to the deque), the newest first, or one
 * deeper down (left in place, tidied later). Idle workers steal the put-
 * back entries meanwhile, outside threads cancel some subtasks and drop
 * references at random moments, done callbacks sit on some. Each task
 * runs at most once, a cancelled one never, every outcome matches what
 * ran, every callback runs once, and a cancelled subtask that the parent
 * then waits on (wait() without a timeout) is counted done. */

#define FJ_MAX 8192
static conc_executor_t *fj_pool;
static atomic_int fj_next, fj_errors, fj_cancelled_by_other;
static atomic_int fj_ran[FJ_MAX], fj_seen[FJ_MAX], fj_cb[FJ_MAX], fj_cb_want[FJ_MAX];
static pthread_mutex_t fj_mu = PTHREAD_MUTEX_INITIALIZER;
static conc_future_t *fj_box[64];
static int fj_nbox;
static atomic_int fj_done_building;

static void fj_count_cb(conc_future_t *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&fj_cb[U(arg)], 1);
}

static void *fj_node(void *arg)
{
    unsigned id = (unsigned)(U(arg) >> 8), depth = (unsigned)(U(arg) & 0xff);
    atomic_fetch_add(&fj_ran[id], 1);
    if (depth == 0) {
        for (volatile int i = 0; i < (int)(id % 5) * 40; i++) {
        }
        return P(1);
    }
    unsigned h = id * 2654435761u;
    int k = (h >> 7) % 4 == 0 ? 3 : 2;
    conc_future_t *c[3] = {NULL, NULL, NULL};
    unsigned cid[3];
    for (int i = 0; i < k; i++) {
        cid[i] = (unsigned)atomic_fetch_add(&fj_next, 1);
        if (cid[i] >= FJ_MAX || conc_submit(fj_pool, &c[i], fj_node, P((uintptr_t)cid[i] << 8 | (depth - 1))) != 0) {
            atomic_fetch_add(&fj_errors, 1);
            for (int j = 0; j < i; j++) {
                conc_future_result(c[j], CONC_FOREVER, NULL);
                conc_future_free(c[j]);
            }
            return P(1);
        }
        if ((h >> (9 + i)) % 3 == 0) {
            atomic_fetch_add(&fj_cb_want[cid[i]], 1);
            if (conc_future_add_done_callback(c[i], fj_count_cb, P(cid[i])) != 0)
                atomic_fetch_add(&fj_errors, 1);
        }
    }
    /* hand one subtask to the cancellers now and then (their reference) */
    if ((h >> 13) % 8 == 0) {
        int v = (int)((h >> 15) % (unsigned)k);
        pthread_mutex_lock(&fj_mu);
        if (fj_nbox < 64)
            fj_box[fj_nbox++] = conc_future_ref(c[v]);
        pthread_mutex_unlock(&fj_mu);
        sched_yield();
    }
    static const int orders[4][3] = {{0, 1, 2}, {1, 0, 2}, {2, 1, 0}, {0, 2, 1}};
    const int *ord = orders[(h >> 17) % 4];
    uintptr_t total = 1;
    for (int n = 0; n < 3; n++) {
        int i = ord[n];
        if (i >= k)
            continue;
        void *r = NULL;
        int rc = conc_future_result(c[i], CONC_FOREVER, &r);
        if (rc == 0) {
            atomic_store(&fj_seen[cid[i]], 1);
            total += U(r);
        } else if (rc == CONC_ECANCELLED) {
            atomic_store(&fj_seen[cid[i]], 2);
            /* wait() without a timeout counts it: notified by then */
            conc_future_t *fs[1] = {c[i]};
            size_t nd = 0;
            if (conc_wait(fs, 1, CONC_FOREVER, CONC_ALL_COMPLETED, NULL, &nd, NULL, NULL) != 0 || nd != 1)
                atomic_fetch_add(&fj_errors, 1);
        } else {
            atomic_fetch_add(&fj_errors, 1);
        }
    }
    for (int i = 0; i < k; i++)
        conc_future_free(c[i]);
    return P(total);
}

static void fj_canceller(void *p, int idx)
{
    (void)p;
    uint64_t seed = 0xabcdefull + (uint64_t)idx * 104729;
    for (;;) {
        conc_future_t *f = NULL;
        pthread_mutex_lock(&fj_mu);
        if (fj_nbox) {
            int i = (int)(rnd(&seed) % (uint64_t)fj_nbox);
            f = fj_box[i];
            fj_box[i] = fj_box[--fj_nbox];
        }
        pthread_mutex_unlock(&fj_mu);
        if (!f) {
            if (atomic_load(&fj_done_building))
                return;
            sched_yield();
            continue;
        }
        unsigned what = (unsigned)(rnd(&seed) % 4);
        if (what < 2 && conc_future_cancel(f))
            atomic_fetch_add(&fj_cancelled_by_other, 1);
        if (what == 2) {
            /* an iterator takes its own reference and hangs a callback
             * while the pool publishes and drops its own */
            conc_as_completed_t *it = NULL;
            conc_future_t *got = NULL;
            if (conc_as_completed_new(&it, &f, 1, 30) != 0 || conc_as_completed_next(it, &got) != 0 || got != f)
                atomic_fetch_add(&fj_errors, 1);
            if (it)
                conc_as_completed_free(it);
        } else if (what == 3) {
            conc_future_t *more = conc_future_ref(f); /* and let go of both at once */
            conc_future_free(more);
        }
        conc_future_free(f);
    }
}

static void fj_driver(void *p, int idx)
{
    long rounds = *(long *)p;
    if (idx != 0) {
        fj_canceller(p, idx);
        return;
    }
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < FJ_MAX; i++) {
            atomic_store(&fj_ran[i], 0);
            atomic_store(&fj_seen[i], 0);
            atomic_store(&fj_cb[i], 0);
            atomic_store(&fj_cb_want[i], 0);
        }
        atomic_store(&fj_next, 1);
        conc_future_t *root = NULL;
        void *res = NULL;
        if (conc_submit(fj_pool, &root, fj_node, P((uintptr_t)0 << 8 | 7)) != 0 ||
            conc_future_result(root, 60, &res) != 0) {
            atomic_fetch_add(&fj_errors, 1000);
            break;
        }
        conc_future_free(root);
        /* every callback runs once the pool let go of its entries */
        int n = atomic_load(&fj_next);
        double dl = tu_now() + 30;
        for (int i = 1; i < n; i++)
            while (atomic_load(&fj_cb[i]) != atomic_load(&fj_cb_want[i]) && tu_now() < dl)
                sched_yield();
        long ran = 0;
        for (int i = 0; i < n; i++) {
            int rn = atomic_load(&fj_ran[i]), seen = atomic_load(&fj_seen[i]);
            ran += rn;
            if (rn > 1 || (i > 0 && (seen == 1) != (rn == 1)) || (i > 0 && seen == 2 && rn != 0) ||
                atomic_load(&fj_cb[i]) != atomic_load(&fj_cb_want[i])) {
                fprintf(stderr, "fork-join round %ld node %d: ran %d, outcome %d, callbacks %d of %d\n", r, i, rn,
                        seen, atomic_load(&fj_cb[i]), atomic_load(&fj_cb_want[i]));
                atomic_fetch_add(&fj_errors, 1);
            }
        }
        if (ran != (long)U(res)) {
            fprintf(stderr, "fork-join round %ld: %ld ran, the root counted %lu\n", r, ran, (unsigned long)U(res));
            atomic_fetch_add(&fj_errors, 1);
        }
    }
    atomic_store(&fj_done_building, 1);
}

Test(futures_stress, fork_join_inline_runs_race_thieves_and_cancels, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(100);
    atomic_store(&fj_errors, 0);
    atomic_store(&fj_cancelled_by_other, 0);
    atomic_store(&fj_done_building, 0);
    fj_nbox = 0;
    fj_pool = mkpool(4);
    tu_run_threads(3, fj_driver, &rounds);
    cr_assert_eq(conc_executor_free(fj_pool), 0);
    cr_assert_eq(atomic_load(&fj_errors), 0, "%d errors", atomic_load(&fj_errors));
    TU_TRACE("fork-join: %ld rounds, %d nodes in the last, %d cancelled by others", rounds, atomic_load(&fj_next),
             atomic_load(&fj_cancelled_by_other));
}

/* ------------------------------------- the deque: owner pops versus thieves
 *
 * The owner pushes items and takes them back the ways a pool worker does:
 * a plain pop, and the inline run's take of the second-newest entry (pop
 * the newest, pop the one below, push the newest back), with bursts that
 * make a small array grow while thieves steal. Every item is taken exactly
 * once, by the owner or by one thief, and a take never yields anything
 * that was not pushed. */

#define DQ_MAX (1 << 20)
static conc__deque_t dq;
static unsigned char dq_taken[DQ_MAX];
static atomic_int dq_stop, dq_bad;

static void dq_take(conc_future_t *f, long n)
{
    uintptr_t id = U(f);
    if (id == 0 || id > (uintptr_t)n) {
        atomic_fetch_add(&dq_bad, 1);
        return;
    }
    /* one writer per id when correct; a second take shows up as 2 */
    __atomic_fetch_add(&dq_taken[id], 1, __ATOMIC_RELAXED);
}

static void dq_thief(void *p, int idx)
{
    long n = *(long *)p;
    (void)idx;
    while (!atomic_load(&dq_stop)) {
        conc_future_t *f = conc__deque_steal(&dq);
        if (f)
            dq_take(f, n);
        else
            sched_yield();
    }
    conc_future_t *f;
    while ((f = conc__deque_steal(&dq)) != NULL || conc__deque_nonempty(&dq))
        if (f)
            dq_take(f, n);
}

static void dq_owner(void *p, int idx)
{
    long n = *(long *)p;
    if (idx != 0) {
        dq_thief(p, idx);
        return;
    }
    uint64_t seed = 0x51ed270b27ull;
    uintptr_t next = 1;
    while (next <= (uintptr_t)n) {
        unsigned r = (unsigned)(rnd(&seed) % 8);
        if (r < 3) { /* push one, pop one */
            if (!conc__deque_push(&dq, P(next++)))
                atomic_fetch_add(&dq_bad, 1);
            conc_future_t *f = conc__deque_pop(&dq);
            if (f)
                dq_take(f, n);
        } else if (r < 7 && next + 1 <= (uintptr_t)n) { /* the inline run's two-deep take */
            conc_future_t *a = P(next++), *b = P(next++);
            if (!conc__deque_push(&dq, a) || !conc__deque_push(&dq, b))
                atomic_fetch_add(&dq_bad, 1);
            if (r == 6)
                sched_yield(); /* let thieves at them */
            conc_future_t *above = conc__deque_peek(&dq);
            if (above && conc__deque_peek_at(&dq, 2) == a) {
                above = conc__deque_pop(&dq);
                if (above) {
                    conc_future_t *g = conc__deque_pop(&dq);
                    if (g && g != a)
                        atomic_fetch_add(&dq_bad, 1000);
                    if (g)
                        dq_take(g, n);
                    if (!conc__deque_push(&dq, above))
                        atomic_fetch_add(&dq_bad, 1);
                }
            }
        } else { /* a burst: the array grows under the thieves */
            for (int k = 0; k < 40 && next <= (uintptr_t)n; k++)
                if (!conc__deque_push(&dq, P(next++)))
                    atomic_fetch_add(&dq_bad, 1);
            for (int k = 0; k < 30; k++) {
                conc_future_t *f = conc__deque_pop(&dq);
                if (f)
                    dq_take(f, n);
            }
        }
    }
    conc_future_t *f;
    while ((f = conc__deque_pop(&dq)) != NULL)
        dq_take(f, n);
    atomic_store(&dq_stop, 1);
}

Test(futures_stress, deque_owner_takes_race_thieves_and_growth, .timeout = TU_TIMEOUT)
{
    long n = tu_iters(400000);
    if (n >= DQ_MAX)
        n = DQ_MAX - 1;
    memset(dq_taken, 0, sizeof dq_taken);
    atomic_store(&dq_stop, 0);
    atomic_store(&dq_bad, 0);
    cr_assert_eq(conc__deque_init(&dq, 4), 0);
    tu_run_threads(3, dq_owner, &n);
    long missing = 0, twice = 0;
    for (long i = 1; i <= n; i++) {
        missing += dq_taken[i] == 0;
        twice += dq_taken[i] > 1;
    }
    conc__deque_destroy(&dq);
    cr_assert_eq(atomic_load(&dq_bad), 0, "%d bad takes", atomic_load(&dq_bad));
    cr_assert_eq(missing, 0, "%ld items never taken", missing);
    cr_assert_eq(twice, 0, "%ld items taken twice", twice);
}

/* ------------------------------------------------------- leapfrogging
 *
 * A worker (the waiter, W) waits on F, which the pool's other worker (the
 * thief, T) took and runs; F queues leaves on T's deque and spins until
 * one ran elsewhere. With leapfrogging the waiter runs them (they are F's
 * subtasks) when the pool was made with .leapfrog; with a timed wait, or
 * in a default pool (Python's semantics: a wait runs nothing but the
 * awaited task itself), it runs none. Modes (all but LF_OFF in a pool
 * with .leapfrog): plain, the oldest half cancelled before the waiter
 * looks, every leaf failing, a timed wait, a default pool, and F with no
 * subtasks at all. */

enum { LF_PLAIN, LF_CANCEL, LF_FAIL, LF_TIMED, LF_OFF, LF_EMPTY, LF_SHUTDOWN, LF_SCOPE, LF_GREEN };
#define LF_N 8
#define LF_SHUT_N 64
static conc_executor_t *lf_pool;
static int lf_mode;
static atomic_long lf_waiter_tid;
static atomic_int lf_ready, lf_on_waiter, lf_bad, lf_leaf_runs[LF_SHUT_N], lf_shut_ran, lf_shut_cancelled;

static long lf_tid(void)
{
    return (long)syscall(SYS_gettid);
}

/* As the library decides (core/park.c): on one CPU a waiting worker does
 * not spin, so it does not leapfrog either. */
static bool lf_smp(void)
{
    return sysconf(_SC_NPROCESSORS_ONLN) > 1;
}

/* The waiting task's first half in the leapfrog tests (A, on the waiter):
 * note its thread in *tid, submit T (fn) to ex, and wait until ready()
 * says T runs elsewhere with its subtasks queued (10 s at most). The
 * caller then waits on T: the wait that leapfrogs. NULL: submit failed. */
static conc_future_t *lf_submit_when(conc_executor_t *ex, atomic_long *tid, void *(*fn)(void *), bool (*ready)(void))
{
    atomic_store(tid, lf_tid());
    conc_future_t *t = NULL;
    if (conc_submit(ex, &t, fn, NULL) != 0)
        return NULL;
    double dl = tu_now() + 10;
    while (!ready() && tu_now() < dl)
        sched_yield();
    return t;
}

/* result(t) without a timeout, then free t. */
static int lf_result_free(conc_future_t *t, void **r)
{
    int rc = conc_future_result(t, CONC_FOREVER, r);
    conc_future_free(t);
    return rc;
}

static void *lf_leaf(void *arg)
{
    uintptr_t i = U(arg);
    atomic_fetch_add(&lf_leaf_runs[i], 1);
    if (lf_tid() == atomic_load(&lf_waiter_tid))
        atomic_store(&lf_on_waiter, 1);
    if (lf_mode == LF_SHUTDOWN)
        tu_sleep(0.001);
    if (lf_mode == LF_FAIL)
        return conc_fail(CONC_ERANGE, "leaf %u", (unsigned)i);
    return P(i * 3 + 1);
}

/* F, on the thief. */
static void *lf_awaited(void *arg)
{
    (void)arg;
    int n = lf_mode == LF_EMPTY ? 0 : lf_mode == LF_SHUTDOWN ? LF_SHUT_N : LF_N;
    conc_future_t *g[LF_SHUT_N];
    for (int i = 0; i < n; i++)
        if (conc_submit(lf_pool, &g[i], lf_leaf, P(i)) != 0)
            return conc_fail(CONC_EFAILED, "submit");
    if (lf_mode == LF_CANCEL)
        for (int i = 0; i < n / 2; i++) /* the oldest: what a thief's steal meets first */
            atomic_fetch_add(&lf_bad, !conc_future_cancel(g[i]));
    atomic_store(&lf_ready, 1);
    bool expect = lf_smp() && n > 0 && lf_mode != LF_TIMED && lf_mode != LF_OFF && lf_mode != LF_SCOPE &&
                  lf_mode != LF_GREEN;
    double dl = tu_now() + (expect ? 10 : 0.2);
    while (!atomic_load(&lf_on_waiter) && tu_now() < dl)
        sched_yield();
    if (lf_mode == LF_EMPTY)
        tu_sleep(0.02);
    if (lf_mode == LF_CANCEL && expect && atomic_load(&lf_on_waiter)) {
        /* the waiter met the cancelled ones first and dropped them from
         * the pool, notified: wait() counts them done at once */
        size_t ndone = 0;
        atomic_fetch_add(&lf_bad, conc_wait(g, (size_t)n / 2, 0, CONC_ALL_COMPLETED, NULL, &ndone, NULL, NULL) != 0 ||
                                      ndone != (size_t)n / 2);
    }
    uintptr_t sum = 0;
    for (int i = 0; i < n; i++) {
        void *r = NULL;
        int rc = conc_future_result(g[i], CONC_FOREVER, &r);
        int code = 0;
        const char *msg = NULL;
        if (lf_mode == LF_CANCEL && i < n / 2) {
            atomic_fetch_add(&lf_bad, rc != CONC_ECANCELLED || atomic_load(&lf_leaf_runs[i]) != 0);
        } else if (lf_mode == LF_FAIL) {
            char want[32];
            snprintf(want, sizeof want, "leaf %d", i);
            atomic_fetch_add(&lf_bad, rc != CONC_EFAILED ||
                                          conc_future_exception(g[i], 0, &code, &msg) != 0 || code != CONC_ERANGE ||
                                          !msg || strcmp(msg, want) != 0);
        } else if (lf_mode == LF_SHUTDOWN) {
            /* ran (once), or cancelled by the shutdown before it started */
            int runs = atomic_load(&lf_leaf_runs[i]);
            if (rc == 0 && U(r) == (uintptr_t)i * 3 + 1 && runs == 1)
                atomic_fetch_add(&lf_shut_ran, 1);
            else if (rc == CONC_ECANCELLED && runs == 0)
                atomic_fetch_add(&lf_shut_cancelled, 1);
            else
                atomic_fetch_add(&lf_bad, 1);
        } else {
            atomic_fetch_add(&lf_bad, rc != 0 || U(r) != (uintptr_t)i * 3 + 1 || atomic_load(&lf_leaf_runs[i]) != 1);
            sum += U(r);
        }
        conc_future_free(g[i]);
    }
    return P(sum + 1);
}

/* The waiter's wait in a green thread of the worker's hub. */
static void *lf_green_wait(void *arg)
{
    void *r = NULL;
    int rc = conc_future_result(arg, CONC_FOREVER, &r);
    return rc ? conc_fail(rc, "result(F) in a green thread") : r;
}

/* until the other worker took F and queued its leaves */
static bool lf_is_ready(void)
{
    return atomic_load(&lf_ready);
}

/* A, on the waiter. */
static void *lf_waiter_task(void *arg)
{
    (void)arg;
    conc_future_t *f = lf_submit_when(lf_pool, &lf_waiter_tid, lf_awaited, lf_is_ready);
    if (!f)
        return conc_fail(CONC_EFAILED, "submit");
    void *r = NULL;
    int rc;
    if (lf_mode == LF_SCOPE) { /* a Timeout scope open: the wait must stay cuttable */
        conc_timeout_begin(30);
        rc = conc_future_result(f, CONC_FOREVER, &r);
        conc_timeout_end();
    } else if (lf_mode == LF_GREEN) {
        conc_green_t *g = NULL;
        rc = conc_go(&g, lf_green_wait, f);
        if (rc == 0) {
            rc = conc_green_get(g, 30, &r);
            conc_green_free(g);
        }
    } else {
        rc = conc_future_result(f, lf_mode == LF_TIMED ? 30 : CONC_FOREVER, &r);
    }
    int mine = conc_failure(NULL); /* leaves that failed here did not touch our record */
    conc_future_free(f);
    if (rc != 0 || mine != 0)
        return conc_fail(CONC_EFAILED, "result(F) = %d, the waiter's own failure = %d", rc, mine);
    return r;
}

static void lf_case(int mode)
{
    lf_mode = mode;
    atomic_store(&lf_waiter_tid, 0);
    atomic_store(&lf_ready, 0);
    atomic_store(&lf_on_waiter, 0);
    atomic_store(&lf_bad, 0);
    atomic_store(&lf_shut_ran, 0);
    atomic_store(&lf_shut_cancelled, 0);
    for (int i = 0; i < LF_SHUT_N; i++)
        atomic_store(&lf_leaf_runs[i], 0);
    conc_thread_pool_opts_t o = {.max_workers = 2, .leapfrog = mode != LF_OFF};
    cr_assert_eq(conc_thread_pool_new(&lf_pool, &o), 0);
    conc_future_t *a = NULL;
    cr_assert_eq(conc_submit(lf_pool, &a, lf_waiter_task, NULL), 0);
    if (mode == LF_SHUTDOWN) {
        /* shut down (cancelling what is queued) while the waiter leapfrogs */
        double dl = tu_now() + 10;
        while (!atomic_load(&lf_on_waiter) && tu_now() < dl)
            sched_yield();
        cr_assert_eq(conc_executor_shutdown(lf_pool, true, true), 0);
    }
    void *r = NULL;
    int rc = conc_future_result(a, 30, &r);
    const char *msg = NULL;
    int code = 0;
    conc_future_exception(a, 0, &code, &msg);
    cr_assert_eq(rc, 0, "mode %d: the waiting task: %d (%s)", mode, rc, msg ? msg : "");
    conc_future_free(a);
    cr_assert_eq(conc_executor_free(lf_pool), 0);
    cr_assert_eq(atomic_load(&lf_bad), 0, "mode %d: %d leaves with a wrong outcome", mode, atomic_load(&lf_bad));
    bool expect = lf_smp() && mode != LF_TIMED && mode != LF_OFF && mode != LF_EMPTY && mode != LF_SCOPE &&
                  mode != LF_GREEN;
    if (expect)
        cr_assert_eq(atomic_load(&lf_on_waiter), 1, "mode %d: no subtask of F ran on the waiting worker", mode);
    else
        cr_assert_eq(atomic_load(&lf_on_waiter), 0, "mode %d: a subtask of F ran on the waiting worker", mode);
    if (mode == LF_PLAIN)
        cr_assert_eq(U(r), 1 + LF_N + 3 * (LF_N * (LF_N - 1) / 2));
    if (mode == LF_SHUTDOWN)
        cr_assert_eq(atomic_load(&lf_shut_ran) + atomic_load(&lf_shut_cancelled), LF_SHUT_N, "ran %d cancelled %d",
                     atomic_load(&lf_shut_ran), atomic_load(&lf_shut_cancelled));
    if (!lf_smp())
        cr_log_info("one CPU: a waiting worker sleeps at once, nothing to leapfrog");
}

Test(futures_stress, leapfrog_waiter_runs_the_thiefs_subtasks, .timeout = TU_TIMEOUT) { lf_case(LF_PLAIN); }
Test(futures_stress, leapfrog_meets_cancelled_subtasks, .timeout = TU_TIMEOUT) { lf_case(LF_CANCEL); }
Test(futures_stress, leapfrog_subtasks_fail_in_their_own_context, .timeout = TU_TIMEOUT) { lf_case(LF_FAIL); }
Test(futures_stress, leapfrog_not_on_a_timed_wait, .timeout = TU_TIMEOUT) { lf_case(LF_TIMED); }
Test(futures_stress, leapfrog_off_in_a_default_pool, .timeout = TU_TIMEOUT) { lf_case(LF_OFF); }
Test(futures_stress, leapfrog_thief_with_nothing_queued, .timeout = TU_TIMEOUT) { lf_case(LF_EMPTY); }
Test(futures_stress, leapfrog_during_shutdown_cancel_futures, .timeout = TU_TIMEOUT) { lf_case(LF_SHUTDOWN); }
Test(futures_stress, leapfrog_not_in_a_timeout_scope, .timeout = TU_TIMEOUT) { lf_case(LF_SCOPE); }
Test(futures_stress, leapfrog_not_from_a_green_thread, .timeout = TU_TIMEOUT) { lf_case(LF_GREEN); }

/* A chain deeper than the inline-run context cache, each link pausing
 * after its submit so the other worker steals the child: the two workers
 * leapfrog each other down the chain (each running the other's
 * grandchildren nested in its wait). */
#define LFC_DEPTH 80
static conc_executor_t *lfc_pool;
static atomic_int lfc_crossed;
static void *lfc_link(void *arg)
{
    uintptr_t d = U(arg) & 0xffff;
    long parent = (long)(U(arg) >> 16);
    long me = lf_tid();
    if (parent && parent != me)
        atomic_fetch_add(&lfc_crossed, 1);
    if (d == 0)
        return P(1);
    conc_future_t *c = NULL;
    if (conc_submit(lfc_pool, &c, lfc_link, P((uintptr_t)me << 16 | (d - 1))) != 0)
        return conc_fail(CONC_EFAILED, "submit");
    tu_sleep(0.0003);
    void *r = NULL;
    int rc = conc_future_result(c, CONC_FOREVER, &r);
    conc_future_free(c);
    if (rc != 0)
        return conc_fail(rc, "link %u", (unsigned)d);
    return P(U(r) + 1);
}

Test(futures_stress, leapfrog_chain_deeper_than_the_context_cache, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(20);
    if (rounds < 2)
        rounds = 2;
    atomic_store(&lfc_crossed, 0);
    lfc_pool = mkpool(2);
    for (long k = 0; k < rounds; k++) {
        conc_future_t *f = NULL;
        void *r = NULL;
        cr_assert_eq(conc_submit(lfc_pool, &f, lfc_link, P(LFC_DEPTH)), 0);
        cr_assert_eq(conc_future_result(f, 60, &r), 0);
        cr_assert_eq(U(r), LFC_DEPTH + 1);
        conc_future_free(f);
    }
    cr_assert_eq(conc_executor_free(lfc_pool), 0);
    TU_TRACE("leapfrog chain: %ld rounds of depth %d, %d links ran on another thread than their parent", rounds,
             LFC_DEPTH, atomic_load(&lfc_crossed));
}

/* The leapfrog put-back's slot (lf_try reserves it before its steal):
 * after conc__deque_reserve the push needs no memory (the array already
 * has room), also when the deque was full; with room, reserve allocates
 * nothing. */
Test(futures_stress, deque_reserve_leaves_room_for_a_put_back)
{
    conc__deque_t d;
    cr_assert_eq(conc__deque_init(&d, 4), 0);
    conc__darray_t *a0 = atomic_load(&d.array);
    cr_assert(conc__deque_reserve(&d, 1));
    cr_assert_eq(atomic_load(&d.array), a0, "room already: no new array");
    for (int i = 0; i < 4; i++)
        cr_assert(conc__deque_push(&d, (conc_future_t *)P(0x1000 + 16 * i)));
    cr_assert(conc__deque_reserve(&d, 1)); /* full: grows now */
    conc__darray_t *a1 = atomic_load(&d.array);
    cr_assert_neq(a1, a0);
    cr_assert_geq(a1->size, 5);
    cr_assert(conc__deque_push(&d, (conc_future_t *)P(0x2000)));
    cr_assert_eq(atomic_load(&d.array), a1, "the push used the reserved room");
    cr_assert_eq(conc__deque_pop(&d), (conc_future_t *)P(0x2000));
    conc__deque_destroy(&d);
}

/* The leapfrog steal takes only entries at or above a base index. */
Test(futures_stress, deque_steal_min_respects_the_base)
{
    conc__deque_t d;
    cr_assert_eq(conc__deque_init(&d, 4), 0);
    conc_future_t *items[6];
    size_t base0 = conc__deque_bottom(&d);
    for (int i = 0; i < 6; i++) {
        items[i] = (conc_future_t *)P(0x1000 + 16 * i);
        cr_assert(conc__deque_push(&d, items[i])); /* grows past 4 */
    }
    cr_assert_null(conc__deque_steal_min(&d, base0 + 2), "the top entry is below the base");
    cr_assert_eq(conc__deque_steal_min(&d, base0), items[0]);
    cr_assert_null(conc__deque_steal_min(&d, base0 + 2));
    cr_assert_eq(conc__deque_steal_min(&d, base0 + 1), items[1]);
    cr_assert_eq(conc__deque_steal_min(&d, base0 + 2), items[2]);
    cr_assert_eq(conc__deque_pop(&d), items[5]);
    cr_assert_eq(conc__deque_pop(&d), items[4]);
    cr_assert_eq(conc__deque_steal_min(&d, base0), items[3]);
    cr_assert_null(conc__deque_steal_min(&d, base0), "empty");
    cr_assert_null(conc__deque_pop(&d));
    conc__deque_destroy(&d);
}

/* Leapfrogging runs only the awaited task's subtasks, even after the
 * thief ran a task that is not one inline (H, submitted from outside) and
 * then a future H left at the top of its deque (L): L is no subtask of T,
 * so what L queues is not either. A (on the waiter) waits on T (on the
 * thief); T waits on H, then on L, whose second child M2 lands at or
 * above the base the thief's record got back after H's run. The waiter
 * must not run M2. */
static conc_executor_t *lfu_pool;
static _Atomic(conc_future_t *) lfu_h;
static atomic_int lfu_t_started, lfu_pushed, lfu_m2_ran;
static atomic_long lfu_waiter_tid, lfu_m2_tid;

static void *lfu_m(void *arg)
{
    if (U(arg) == 2) {
        atomic_store(&lfu_m2_tid, lf_tid());
        atomic_store(&lfu_m2_ran, 1);
    }
    return arg;
}

/* L: queues M1 and M2, lets the waiter look, then waits for both. */
static void *lfu_l(void *arg)
{
    (void)arg;
    conc_future_t *m1 = NULL, *m2 = NULL;
    if (conc_submit(lfu_pool, &m1, lfu_m, P(1)) != 0 || conc_submit(lfu_pool, &m2, lfu_m, P(2)) != 0)
        return conc_fail(CONC_EFAILED, "submit");
    atomic_store(&lfu_pushed, 1);
    double dl = tu_now() + (TU_SANITIZED ? 0.5 : 0.2);
    while (!atomic_load(&lfu_m2_ran) && tu_now() < dl)
        sched_yield();
    void *r1 = NULL, *r2 = NULL;
    int rc = conc_future_result(m2, CONC_FOREVER, &r2) | conc_future_result(m1, CONC_FOREVER, &r1);
    conc_future_free(m1);
    conc_future_free(m2);
    return rc || U(r1) != 1 || U(r2) != 2 ? conc_fail(CONC_EFAILED, "M1/M2") : P(7);
}

/* H (submitted from outside, run inline by T): queues L, returns it. */
static void *lfu_hfn(void *arg)
{
    (void)arg;
    conc_future_t *l = NULL;
    if (conc_submit(lfu_pool, &l, lfu_l, NULL) != 0)
        return conc_fail(CONC_EFAILED, "submit L");
    return l;
}

/* T, on the thief (stolen from the waiter's deque: it gets a record). */
static void *lfu_t(void *arg)
{
    (void)arg;
    atomic_store(&lfu_t_started, 1);
    double dl = tu_now() + 10;
    conc_future_t *h;
    while (!(h = atomic_load(&lfu_h)) && tu_now() < dl)
        sched_yield();
    if (!h)
        return conc_fail(CONC_EFAILED, "no H");
    void *l = NULL;
    if (conc_future_result(h, CONC_FOREVER, &l) != 0 || !l)
        return conc_fail(CONC_EFAILED, "H");
    void *r = NULL;
    int rc = conc_future_result(l, CONC_FOREVER, &r);
    conc_future_free(l);
    return rc || U(r) != 7 ? conc_fail(CONC_EFAILED, "L") : P(5);
}

static bool lfu_is_pushed(void)
{
    return atomic_load(&lfu_pushed);
}

/* A, on the waiter. */
static void *lfu_a(void *arg)
{
    (void)arg;
    conc_future_t *t = lf_submit_when(lfu_pool, &lfu_waiter_tid, lfu_t, lfu_is_pushed);
    if (!t)
        return conc_fail(CONC_EFAILED, "submit T");
    void *r = NULL;
    int rc = lf_result_free(t, &r);
    return rc || U(r) != 5 ? conc_fail(CONC_EFAILED, "T") : P(3);
}

Test(futures_stress, leapfrog_never_runs_what_a_foreign_inline_run_queued, .timeout = TU_TIMEOUT)
{
    long rounds = TU_SANITIZED ? 1 : 3;
    conc_thread_pool_opts_t o = {.max_workers = 2, .leapfrog = true};
    for (long k = 0; k < rounds; k++) {
        atomic_store(&lfu_h, NULL);
        atomic_store(&lfu_t_started, 0);
        atomic_store(&lfu_pushed, 0);
        atomic_store(&lfu_m2_ran, 0);
        atomic_store(&lfu_waiter_tid, 0);
        atomic_store(&lfu_m2_tid, 0);
        cr_assert_eq(conc_thread_pool_new(&lfu_pool, &o), 0);
        conc_future_t *a = NULL, *h = NULL;
        cr_assert_eq(conc_submit(lfu_pool, &a, lfu_a, NULL), 0);
        double dl = tu_now() + 10;
        while (!atomic_load(&lfu_t_started) && tu_now() < dl)
            sched_yield();
        cr_assert(atomic_load(&lfu_t_started), "T never started");
        /* both workers busy now: H stays queued until T runs it inline */
        cr_assert_eq(conc_submit(lfu_pool, &h, lfu_hfn, NULL), 0);
        atomic_store(&lfu_h, h);
        void *r = NULL;
        cr_assert_eq(conc_future_result(a, 30, &r), 0);
        cr_assert_eq(U(r), 3);
        conc_future_free(a);
        conc_future_free(h);
        cr_assert_eq(conc_executor_free(lfu_pool), 0);
        cr_assert_neq(atomic_load(&lfu_m2_tid), atomic_load(&lfu_waiter_tid),
                      "round %ld: the waiter on T ran M2, a child of L (queued by H, which T ran inline)", k);
    }
}

/* Leapfrogging under churn: independent fork-join trees (fib) from
 * several outside roots on a pool with more workers than CPUs, so thieves
 * keep finishing tasks and starting others (and futures are recycled)
 * while waiters read their records. Every task runs exactly once, every
 * sum is right, and a task nested on a thread (leapfrogged or run inline
 * in a wait) always belongs to the tree of the task it is nested in. */
#define LFS_ROOTS 4
static conc_executor_t *lfs_pool;
static atomic_long lfs_runs, lfs_foreign, lfs_nested;
static __thread int lfs_depth;
static __thread unsigned lfs_stack[64];
static __thread unsigned lfs_me; /* a small number per thread, 0: none yet */
static atomic_uint lfs_threads;
static atomic_long lfs_leapt;

static unsigned lfs_self(void)
{
    if (!lfs_me)
        lfs_me = (atomic_fetch_add(&lfs_threads, 1) % 255) + 1;
    return lfs_me;
}

static void *lfs_fib(void *arg)
{
    unsigned root = (unsigned)(U(arg) >> 24), parent = (unsigned)(U(arg) >> 16) & 0xff,
             n = (unsigned)(U(arg) & 0xffff);
    unsigned me = lfs_self();
    atomic_fetch_add(&lfs_runs, 1);
    if (lfs_depth > 0) {
        atomic_fetch_add(&lfs_nested, 1);
        if (parent != me) /* nested here, submitted on another thread: leapfrogged */
            atomic_fetch_add(&lfs_leapt, 1);
        if (lfs_stack[lfs_depth - 1] != root)
            atomic_fetch_add(&lfs_foreign, 1);
    }
    if (n < 2) {
        for (volatile int i = 0; i < 400; i++) {
        }
        return P(1);
    }
    int d = lfs_depth++;
    if (d < 64)
        lfs_stack[d] = root;
    conc_future_t *a = NULL, *b = NULL;
    void *ra = NULL, *rb = NULL;
    uintptr_t tag = (uintptr_t)root << 24 | (uintptr_t)me << 16;
    int rc = conc_submit(lfs_pool, &a, lfs_fib, P(tag | (n - 1)));
    rc |= conc_submit(lfs_pool, &b, lfs_fib, P(tag | (n - 2)));
    if (n >= 6) /* let thieves take the older child (and start on it) before we wait */
        for (volatile int i = 0; i < 3000; i++) {
        }
    if (rc == 0)
        rc = conc_future_result(a, CONC_FOREVER, &ra) | conc_future_result(b, CONC_FOREVER, &rb);
    lfs_depth = d;
    conc_future_free(a);
    conc_future_free(b);
    return rc ? conc_fail(CONC_EFAILED, "fib %u", n) : P(U(ra) + U(rb));
}

Test(futures_stress, leapfrog_churn_runs_each_task_once_within_its_tree, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(40);
    if (rounds < 3)
        rounds = 3;
    const unsigned n = TU_SANITIZED ? 12 : 15;
    uintptr_t fib[16] = {1, 1};
    for (int i = 2; i < 16; i++)
        fib[i] = fib[i - 1] + fib[i - 2];
    atomic_store(&lfs_runs, 0);
    atomic_store(&lfs_foreign, 0);
    atomic_store(&lfs_nested, 0);
    atomic_store(&lfs_leapt, 0);
    conc_thread_pool_opts_t o = {.max_workers = 4, .leapfrog = true};
    cr_assert_eq(conc_thread_pool_new(&lfs_pool, &o), 0);
    for (long k = 0; k < rounds; k++) {
        conc_future_t *f[LFS_ROOTS];
        for (unsigned r = 0; r < LFS_ROOTS; r++)
            cr_assert_eq(conc_submit(lfs_pool, &f[r], lfs_fib, P((uintptr_t)(r + 1) << 24 | (n - (r & 1)))), 0);
        for (unsigned r = 0; r < LFS_ROOTS; r++) {
            void *v = NULL;
            cr_assert_eq(conc_future_result(f[r], 60, &v), 0);
            cr_assert_eq(U(v), fib[n - (r & 1)]);
            conc_future_free(f[r]);
        }
    }
    cr_assert_eq(conc_executor_free(lfs_pool), 0);
    long want = 0;
    for (unsigned r = 0; r < LFS_ROOTS; r++)
        want += (long)(2 * fib[n - (r & 1)] - 1); /* calls of fib(m): 2 fib(m) - 1 with fib(0) = fib(1) = 1 */
    cr_assert_eq(atomic_load(&lfs_runs), want * rounds, "runs %ld, want %ld", atomic_load(&lfs_runs), want * rounds);
    cr_assert_eq(atomic_load(&lfs_foreign), 0, "%ld tasks ran nested in a task of another tree",
                 atomic_load(&lfs_foreign));
    TU_TRACE("leapfrog churn: %ld rounds, %ld nested runs, %ld of them leapfrogged", rounds,
             atomic_load(&lfs_nested), atomic_load(&lfs_leapt));
}

/* The put-back path: the thief's record keeps changing (T runs outside
 * futures inline, one per leaf it queues, each clearing and restoring its
 * record) while the waiter steals the leaves, so many steals straddle a
 * change and the stolen leaf goes back into the pool through the waiter's
 * deque. Each leaf still runs exactly once, with the right outcome. */
#define LFP_LEAVES 256
static conc_executor_t *lfp_pool;
static _Atomic(conc_future_t **) lfp_hs;
static atomic_int lfp_started, lfp_bad, lfp_runs[LFP_LEAVES];
static atomic_long lfp_waiter_tid, lfp_on_waiter;

static void *lfp_leaf(void *arg)
{
    atomic_fetch_add(&lfp_runs[U(arg)], 1);
    if (lf_tid() == atomic_load(&lfp_waiter_tid))
        atomic_fetch_add(&lfp_on_waiter, 1);
    return P(U(arg) * 5 + 2);
}

static void *lfp_nop(void *arg)
{
    return arg;
}

static void *lfp_t(void *arg)
{
    (void)arg;
    atomic_store(&lfp_started, 1);
    double dl = tu_now() + 10;
    conc_future_t **hs;
    while (!(hs = atomic_load(&lfp_hs)) && tu_now() < dl)
        sched_yield();
    if (!hs)
        return conc_fail(CONC_EFAILED, "no outside futures");
    conc_future_t *g[LFP_LEAVES];
    for (int i = 0; i < LFP_LEAVES; i++) {
        if (conc_submit(lfp_pool, &g[i], lfp_leaf, P(i)) != 0)
            return conc_fail(CONC_EFAILED, "submit");
        void *r = NULL; /* an inline run of a future not ours: the record goes and comes back */
        atomic_fetch_add(&lfp_bad, conc_future_result(hs[i], CONC_FOREVER, &r) != 0 || U(r) != (uintptr_t)i);
    }
    for (int i = 0; i < LFP_LEAVES; i++) {
        void *r = NULL;
        int rc = conc_future_result(g[i], CONC_FOREVER, &r);
        atomic_fetch_add(&lfp_bad, rc != 0 || U(r) != (uintptr_t)i * 5 + 2);
        conc_future_free(g[i]);
    }
    return P(9);
}

static bool lfp_has_hs(void)
{
    return atomic_load(&lfp_hs) != NULL;
}

static void *lfp_a(void *arg)
{
    (void)arg;
    conc_future_t *t = lf_submit_when(lfp_pool, &lfp_waiter_tid, lfp_t, lfp_has_hs);
    if (!t)
        return conc_fail(CONC_EFAILED, "submit T");
    void *r = NULL;
    int rc = lf_result_free(t, &r);
    return rc || U(r) != 9 ? conc_fail(CONC_EFAILED, "T") : P(4);
}

Test(futures_stress, leapfrog_put_back_when_the_record_changes, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(20);
    if (rounds < 2)
        rounds = 2;
    conc_thread_pool_opts_t o = {.max_workers = 2, .leapfrog = true};
    long leapt = 0;
    for (long k = 0; k < rounds; k++) {
        atomic_store(&lfp_hs, NULL);
        atomic_store(&lfp_started, 0);
        atomic_store(&lfp_bad, 0);
        atomic_store(&lfp_waiter_tid, 0);
        atomic_store(&lfp_on_waiter, 0);
        for (int i = 0; i < LFP_LEAVES; i++)
            atomic_store(&lfp_runs[i], 0);
        cr_assert_eq(conc_thread_pool_new(&lfp_pool, &o), 0);
        conc_future_t *a = NULL;
        static conc_future_t *hs[LFP_LEAVES];
        cr_assert_eq(conc_submit(lfp_pool, &a, lfp_a, NULL), 0);
        double dl = tu_now() + 10;
        while (!atomic_load(&lfp_started) && tu_now() < dl)
            sched_yield();
        cr_assert(atomic_load(&lfp_started), "T never started");
        /* both workers busy: these stay queued until T runs them inline */
        for (int i = 0; i < LFP_LEAVES; i++)
            cr_assert_eq(conc_submit(lfp_pool, &hs[i], lfp_nop, P(i)), 0);
        atomic_store(&lfp_hs, hs);
        void *r = NULL;
        cr_assert_eq(conc_future_result(a, 30, &r), 0);
        cr_assert_eq(U(r), 4);
        conc_future_free(a);
        for (int i = 0; i < LFP_LEAVES; i++)
            conc_future_free(hs[i]);
        cr_assert_eq(conc_executor_free(lfp_pool), 0);
        cr_assert_eq(atomic_load(&lfp_bad), 0, "round %ld: %d wrong outcomes", k, atomic_load(&lfp_bad));
        for (int i = 0; i < LFP_LEAVES; i++)
            cr_assert_eq(atomic_load(&lfp_runs[i]), 1, "round %ld: leaf %d ran %d times", k, i,
                         atomic_load(&lfp_runs[i]));
        leapt += atomic_load(&lfp_on_waiter);
    }
    TU_TRACE("leapfrog put-back: %ld rounds, %ld leaves ran on the waiter", rounds, leapt);
}

/* ----------------------------------- shutdown(cancel_futures) vs put-backs
 *
 * A fork-join wait (submit a, submit b, result(a)) takes the two newest
 * entries out of the waiter's deque and puts b back; tidy-ups and
 * leapfrog requeues do the same. A shutdown(cancel_futures) whose drain
 * falls in that window (here: made to, by the pool's test hook, which
 * shuts the pool down right there) misses b; b must still not run
 * (Python: no pending work item runs after shutdown(cancel_futures)). It
 * is cancelled (its callbacks run) where it would start. */
static conc_executor_t *sc_pool;
static atomic_int sc_hooked, sc_b_ran, sc_b_cb, sc_bad;
static _Atomic(conc_future_t *) sc_b;

static void sc_hook(conc_future_t *f)
{
    if (f == atomic_load(&sc_b) && !atomic_exchange(&sc_hooked, 1))
        atomic_fetch_add(&sc_bad, conc_executor_shutdown(sc_pool, false, true) != 0);
}

static void *sc_leaf(void *arg)
{
    atomic_fetch_add(&sc_b_ran, 1); /* a or b */
    return arg;
}

static void sc_cb(conc_future_t *f, void *arg)
{
    (void)arg;
    atomic_fetch_add(&sc_b_cb, conc_future_cancelled(f) ? 1 : 100);
}

static void *sc_task(void *arg)
{
    bool wait_b = arg != NULL; /* else the worker's loop meets b */
    conc_future_t *a = NULL, *b = NULL;
    if (conc_submit(sc_pool, &a, sc_leaf, NULL) != 0 || conc_submit(sc_pool, &b, sc_leaf, P(1)) != 0)
        return conc_fail(CONC_EFAILED, "submit");
    conc_future_add_done_callback(b, sc_cb, NULL);
    atomic_store(&sc_b, b);
    void *r = NULL;
    /* Pops b and a, puts b back (the hook shuts down), runs a: a too was
     * pending when the shutdown came, not started: cancelled as well (in
     * Python it would have sat in the queue the drain emptied). */
    int ra = conc_future_result(a, CONC_FOREVER, &r);
    int rb = wait_b ? conc_future_result(b, CONC_FOREVER, NULL) : CONC_ECANCELLED;
    conc_future_free(a);
    if (wait_b)
        conc_future_free(b); /* else the test does, after the pool's end */
    if (ra != CONC_ECANCELLED || rb != CONC_ECANCELLED)
        return conc_fail(CONC_EFAILED, "result(a) = %d, result(b) = %d", ra, rb);
    return P(3);
}

Test(futures_stress, put_back_missed_by_shutdown_cancel_futures_does_not_run, .timeout = TU_TIMEOUT)
{
    for (int mode = 0; mode < 4; mode++) {
        bool lf = mode & 1, wait_b = !(mode & 2);
        atomic_store(&sc_hooked, 0);
        atomic_store(&sc_b_ran, 0);
        atomic_store(&sc_b_cb, 0);
        atomic_store(&sc_bad, 0);
        atomic_store(&sc_b, NULL);
        conc_thread_pool_opts_t o = {.max_workers = 1, .leapfrog = lf};
        cr_assert_eq(conc_thread_pool_new(&sc_pool, &o), 0);
        conc__pool_put_back_hook = sc_hook;
        conc_future_t *t = NULL;
        cr_assert_eq(conc_submit(sc_pool, &t, sc_task, wait_b ? P(1) : NULL), 0);
        void *r = NULL;
        int rc = conc_future_result(t, 30, &r);
        conc__pool_put_back_hook = NULL;
        const char *msg = NULL;
        int code = 0;
        conc_future_exception(t, 0, &code, &msg);
        cr_assert_eq(rc, 0, "mode %d: %d (%s)", mode, rc, msg ? msg : "");
        cr_assert_eq(U(r), 3);
        conc_future_free(t);
        cr_assert_eq(conc_executor_free(sc_pool), 0);
        if (!wait_b) {
            conc_future_t *b = atomic_load(&sc_b);
            cr_assert(conc_future_cancelled(b), "b not cancelled");
            conc_future_free(b);
        }
        cr_assert_eq(atomic_load(&sc_hooked), 1, "mode %d: the put-back never happened", mode);
        cr_assert_eq(atomic_load(&sc_bad), 0);
        cr_assert_eq(atomic_load(&sc_b_ran), 0, "mode %d: a or b ran after shutdown(cancel_futures)", mode);
        cr_assert_eq(atomic_load(&sc_b_cb), 1, "mode %d: b's callback: %d", mode, atomic_load(&sc_b_cb));
    }
}

/* --------------------------- leapfrog: pushes from a worker's green threads
 *
 * A task T1 leaves a green thread G behind on its worker W (detached,
 * parked on an event). A later task T2 that W stole from worker A's deque
 * carries W's leapfrog record; T2 sets the event and blocks, so W's hub
 * runs G, which submits X: X lands in W's deque above T2's record base,
 * but X is not T2's subtask. A's task, waiting on T2 meanwhile, must not
 * run X (a waiter runs only the awaited task's subtasks): a push from a
 * thread with a hub never counts as the recorded task's. */
static conc_executor_t *lh_pool;
static atomic_long lh_w_tid, lh_a_tid;
static atomic_int lh_started, lh_pstarted, lh_bad, lh_x_ran, lh_t2_done, lh_x_on_waiter;
static _Atomic(conc_future_t *) lh_x;
static conc_event_t lh_e1, lh_e2;

static void lh_rendezvous(atomic_int *n)
{
    atomic_fetch_add(n, 1);
    double dl = tu_now() + 10;
    while (atomic_load(n) < 2 && tu_now() < dl)
        sched_yield();
}

static void *lh_x_fn(void *arg)
{
    (void)arg;
    if (lf_tid() == atomic_load(&lh_a_tid) && !atomic_load(&lh_t2_done))
        atomic_store(&lh_x_on_waiter, 1);
    atomic_fetch_add(&lh_x_ran, 1);
    return P(5);
}

static void *lh_green(void *arg)
{
    (void)arg;
    if (conc_event_wait(&lh_e1, 30) != 0) {
        atomic_store(&lh_bad, 1);
        return NULL;
    }
    conc_future_t *x = NULL;
    if (conc_submit(lh_pool, &x, lh_x_fn, NULL) != 0)
        atomic_store(&lh_bad, 1);
    atomic_store(&lh_x, x);
    return NULL;
}

static void *lh_t1(void *arg)
{
    if (arg) { /* the one that leaves a green thread behind */
        atomic_store(&lh_w_tid, lf_tid());
        if (conc_go(NULL, lh_green, NULL) != 0)
            atomic_store(&lh_bad, 1);
    }
    lh_rendezvous(&lh_started); /* both workers busy: T1s on distinct ones */
    return NULL;
}

static void *lh_t2(void *arg)
{
    (void)arg;
    conc_event_set(&lh_e1);
    conc_event_wait(&lh_e2, 0.05); /* parks through the hub: G runs, pushes X */
    double dl = tu_now() + 10; /* the waiter had its chance */
    while (!atomic_load(&lh_x) && tu_now() < dl)
        tu_sleep(0.001);
    tu_sleep(0.002);
    atomic_store(&lh_t2_done, 1);
    return P(2);
}

static bool lh_x_pushed(void) /* W stole T2; G pushed X */
{
    return atomic_load(&lh_x) != NULL;
}

static void *lh_p(void *arg)
{
    (void)arg;
    lh_rendezvous(&lh_pstarted);
    if (lf_tid() == atomic_load(&lh_w_tid))
        return P(0); /* W: free it for T2 */
    conc_future_t *t2 = lf_submit_when(lh_pool, &lh_a_tid, lh_t2, lh_x_pushed);
    if (!t2)
        return conc_fail(CONC_EFAILED, "submit T2");
    void *r = NULL;
    int rc = lf_result_free(t2, &r); /* the leapfrogging wait */
    return rc || U(r) != 2 ? conc_fail(CONC_EFAILED, "T2: %d", rc) : P(1);
}

Test(futures_stress, leapfrog_never_runs_what_a_workers_green_thread_pushed, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(5);
    if (rounds < 2)
        rounds = 2;
    conc_thread_pool_opts_t o = {.max_workers = 2, .leapfrog = true};
    for (long k = 0; k < rounds; k++) {
        atomic_store(&lh_w_tid, 0);
        atomic_store(&lh_a_tid, 0);
        atomic_store(&lh_started, 0);
        atomic_store(&lh_pstarted, 0);
        atomic_store(&lh_bad, 0);
        atomic_store(&lh_x_ran, 0);
        atomic_store(&lh_t2_done, 0);
        atomic_store(&lh_x_on_waiter, 0);
        atomic_store(&lh_x, NULL);
        cr_assert_eq(conc_event_init(&lh_e1), 0);
        cr_assert_eq(conc_event_init(&lh_e2), 0);
        cr_assert_eq(conc_thread_pool_new(&lh_pool, &o), 0);
        conc_future_t *t1[2], *p[2];
        cr_assert_eq(conc_submit(lh_pool, &t1[0], lh_t1, P(1)), 0);
        cr_assert_eq(conc_submit(lh_pool, &t1[1], lh_t1, NULL), 0);
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(conc_future_result(t1[i], 30, NULL), 0);
            conc_future_free(t1[i]);
        }
        for (int i = 0; i < 2; i++)
            cr_assert_eq(conc_submit(lh_pool, &p[i], lh_p, NULL), 0);
        uintptr_t sum = 0;
        for (int i = 0; i < 2; i++) {
            void *r = NULL;
            cr_assert_eq(conc_future_result(p[i], 30, &r), 0, "round %ld: P %d", k, i);
            sum += U(r);
            conc_future_free(p[i]);
        }
        cr_assert_eq(sum, 1, "round %ld: the two P tasks did not run on distinct workers", k);
        conc_future_t *x = atomic_load(&lh_x);
        cr_assert(x, "round %ld: the green thread pushed nothing", k);
        void *r = NULL;
        cr_assert_eq(conc_future_result(x, 30, &r), 0);
        conc_future_free(x);
        cr_assert_eq(conc_executor_free(lh_pool), 0);
        cr_assert_eq(atomic_load(&lh_bad), 0);
        cr_assert_eq(atomic_load(&lh_x_ran), 1);
        cr_assert_eq(atomic_load(&lh_x_on_waiter), 0,
                     "round %ld: the waiter on T2 ran X, a task a green thread of T2's worker pushed", k);
    }
}

/* ---------------------------------------------------------- wake-ups
 * Every sleeping worker must be woken when a burst needs them all: N
 * tasks that each wait for all N at a barrier, submitted to N workers
 * that fell asleep (a wake-up lost or held back leaves tasks queued
 * behind blocked workers: the barrier times out). Then single submits and
 * short bursts, each to a sleeping pool. */
#define WC_N 4
static conc_barrier_t wc_barrier;
static atomic_int wc_broken;

static void *wc_meet(void *arg)
{
    (void)arg;
    int rc = conc_barrier_wait(&wc_barrier, 20.0, NULL);
    if (rc != 0)
        atomic_fetch_add(&wc_broken, 1);
    return NULL;
}

static void *wc_nop(void *arg) { return arg; }

Test(futures_stress, sleeping_workers_are_all_woken_for_a_burst, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(WC_N);
    long rounds = tu_iters(40);
    cr_assert_eq(conc_barrier_init(&wc_barrier, WC_N, NULL, NULL, CONC_FOREVER), 0);
    atomic_store(&wc_broken, 0);
    for (long k = 0; k < rounds; k++) {
        /* all N workers exist after the first round; let them fall asleep
         * (a 20 us spin and a few yields) */
        tu_sleep(0.01);
        conc_future_t *fs[WC_N];
        for (int i = 0; i < WC_N; i++)
            cr_assert_eq(conc_submit(ex, &fs[i], wc_meet, NULL), 0);
        for (int i = 0; i < WC_N; i++) {
            cr_assert_eq(conc_future_result(fs[i], 30.0, NULL), 0, "round %ld task %d", k, i);
            conc_future_free(fs[i]);
        }
        cr_assert_eq(atomic_load(&wc_broken), 0, "round %ld: a barrier wait timed out or broke", k);
    }
    /* single submits to a sleeping pool, and short bursts */
    for (long k = 0; k < rounds; k++) {
        tu_sleep(0.005);
        int n = 1 + (int)(k % 3);
        conc_future_t *fs[3];
        for (int i = 0; i < n; i++)
            cr_assert_eq(conc_submit(ex, &fs[i], wc_nop, P(i + 1)), 0);
        for (int i = 0; i < n; i++) {
            void *r = NULL;
            cr_assert_eq(conc_future_result(fs[i], 30.0, &r), 0, "round %ld: a task never ran", k);
            cr_assert_eq(U(r), (uintptr_t)i + 1);
            conc_future_free(fs[i]);
        }
    }
    cr_assert_eq(conc_executor_free(ex), 0);
}

/* ------------------- shutdown(cancel_futures) racing fork-join work (review)
 *
 * Trees of fork-join tasks (submit a, submit b, wait a, wait b; some wait
 * with conc_wait) run while shutdown(wait, cancel_futures) comes at a
 * random moment. Afterwards every future is done: a task that started
 * finished (shutdown(wait) waited for it; cancel_futures never cancels
 * started work), one that did not is cancelled and notified (wait() counts
 * it); each done callback ran exactly once, with the future in its final
 * state; no task ran twice. */
#define SR_MAX 1024
#define SR_DEPTH 5
static conc_executor_t *sr_pool;
static conc_future_t *sr_fs[SR_MAX];
static atomic_int sr_started[SR_MAX], sr_finished[SR_MAX], sr_cbs[SR_MAX], sr_cb_state[SR_MAX];
static atomic_int sr_n, sr_bad, sr_use_wait;

static void sr_cb(conc_future_t *f, void *arg)
{
    int i = (int)U(arg);
    atomic_fetch_add(&sr_cbs[i], 1);
    atomic_store(&sr_cb_state[i], (int)conc_future_state(f));
}

static void *sr_task(void *arg);

/* Submit a task of depth d; NULL if the pool refused (shut down). */
static conc_future_t *sr_submit(int d)
{
    int i = atomic_fetch_add(&sr_n, 1);
    if (i >= SR_MAX) {
        atomic_store(&sr_bad, 1);
        return NULL;
    }
    conc_future_t *f = NULL;
    int rc = conc_submit(sr_pool, &f, sr_task, P((uintptr_t)i << 4 | (uintptr_t)d));
    if (rc) {
        if (rc != CONC_ESHUTDOWN)
            atomic_store(&sr_bad, 2);
        return NULL;
    }
    sr_fs[i] = conc_future_ref(f);
    if (conc_future_add_done_callback(f, sr_cb, P(i)) != 0)
        atomic_store(&sr_bad, 3);
    return f;
}

static void *sr_task(void *arg)
{
    int i = (int)(U(arg) >> 4), d = (int)(U(arg) & 15);
    if (atomic_exchange(&sr_started[i], 1))
        atomic_store(&sr_bad, 4); /* ran twice */
    if (d > 0) {
        conc_future_t *a = sr_submit(d - 1), *b = sr_submit(d - 1);
        if (atomic_load(&sr_use_wait) && a && b) {
            conc_future_t *both[2] = {a, b};
            size_t nd = 0;
            if (conc_wait(both, 2, CONC_FOREVER, CONC_ALL_COMPLETED, NULL, &nd, NULL, NULL) != 0 || nd != 2)
                atomic_store(&sr_bad, 5);
        }
        conc_future_t *ab[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            if (!ab[k])
                continue;
            int rc = conc_future_result(ab[k], CONC_FOREVER, NULL);
            if (rc != 0 && rc != CONC_ECANCELLED)
                atomic_store(&sr_bad, 6);
            conc_future_free(ab[k]);
        }
    } else {
        double end = tu_now() + 20e-6; /* the tree takes a few ms */
        while (tu_now() < end) {
        }
    }
    atomic_store(&sr_finished[i], 1);
    return arg;
}

Test(futures_stress, shutdown_cancel_futures_racing_fork_join, .timeout = TU_TIMEOUT)
{
    long rounds = tu_iters(60);
    if (rounds < 4)
        rounds = 4;
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (long k = 0; k < rounds; k++) {
        for (int i = 0; i < SR_MAX; i++) {
            sr_fs[i] = NULL;
            atomic_store(&sr_started[i], 0);
            atomic_store(&sr_finished[i], 0);
            atomic_store(&sr_cbs[i], 0);
            atomic_store(&sr_cb_state[i], -1);
        }
        atomic_store(&sr_n, 0);
        atomic_store(&sr_bad, 0);
        atomic_store(&sr_use_wait, (int)(k & 2));
        conc_thread_pool_opts_t o = {.max_workers = 1 + (size_t)(k % 3), .leapfrog = k & 1};
        cr_assert_eq(conc_thread_pool_new(&sr_pool, &o), 0);
        conc_future_t *roots[4];
        for (int r = 0; r < 4; r++)
            cr_assert_not_null(roots[r] = sr_submit(SR_DEPTH));
        tu_sleep((double)(rnd(&seed) % 3000) * 1e-6);
        bool wait = (k % 4) != 3;
        cr_assert_eq(conc_executor_shutdown(sr_pool, wait, true), 0);
        if (!wait)
            cr_assert_eq(conc_executor_shutdown(sr_pool, true, false), 0);
        for (int r = 0; r < 4; r++)
            conc_future_free(roots[r]);
        int n = atomic_load(&sr_n);
        cr_assert_eq(atomic_load(&sr_bad), 0, "round %ld: bad %d", k, atomic_load(&sr_bad));
        int started = 0;
        for (int i = 0; i < n && i < SR_MAX; i++) {
            conc_future_t *f = sr_fs[i];
            if (!f)
                continue; /* refused */
            conc_future_state_t s = conc_future_state(f);
            if (atomic_load(&sr_started[i])) {
                started++;
                cr_assert_eq(s, CONC_FUTURE_FINISHED, "round %ld: task %d started but its future is %d", k, i, s);
                cr_assert(atomic_load(&sr_finished[i]), "round %ld: task %d started, not finished", k, i);
            } else {
                cr_assert_eq(s, CONC_FUTURE_CANCELLED, "round %ld: task %d never started, its future is %d", k, i,
                             s);
                size_t nd = 0;
                cr_assert_eq(conc_wait(&f, 1, 0, CONC_ALL_COMPLETED, NULL, &nd, NULL, NULL), 0);
                cr_assert_eq(nd, 1, "round %ld: task %d cancelled but not notified", k, i);
            }
            cr_assert_eq(atomic_load(&sr_cbs[i]), 1, "round %ld: task %d: %d callbacks", k, i,
                         atomic_load(&sr_cbs[i]));
            cr_assert_eq(atomic_load(&sr_cb_state[i]), (int)s, "round %ld: task %d: callback saw %d, final %d", k,
                         i, atomic_load(&sr_cb_state[i]), s);
        }
        cr_assert_eq(conc_executor_free(sr_pool), 0);
        for (int i = 0; i < n && i < SR_MAX; i++)
            if (sr_fs[i])
                conc_future_free(sr_fs[i]);
        TU_TRACE("shutdown race round %ld: %d tasks, %d started", k, n, started);
    }
}
