/*
 * ipc_timeout_rule_test.c — the timeout rule of conc/base.h on the
 * process side (issue 12 §2). multiprocessing's SemLock clamps a negative
 * timeout to 0, so its primitives, Queue, Connection.poll, Process.join
 * and pool results treat one as "already up" (one try); a Manager's Lock
 * and Queue are threading.Lock / queue.Queue on the server, so there a
 * negative timeout is ValueError (CONC_EINVAL), and an unbounded put
 * ignores it. -1.0 never waits forever anywhere.
 *
 * Own main with CONC_PROCESS_MAIN (pools and managers may spawn).
 */
#include "test_util.h"

#include <signal.h>
#include <sys/wait.h>

#include <conc/pool.h>

#define QUICK 2.0

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(ipc_timeout_rule, .init = setup, .timeout = TU_TIMEOUT);

static int sleeper(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    tu_sleep(30);
    return 0;
}
CONC_REGISTER(sleeper);

static int slow_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg;
    (void)len;
    (void)out;
    tu_sleep(30);
    return 0;
}
CONC_POOL_REGISTER(slow_task);

typedef struct {
    conc_plock_t lock;
    conc_prlock_t rlock;
    conc_psemaphore_t sem;
    conc_pevent_t ev;
    conc_pcond_t cond;
    conc_pbarrier_t barrier;
} shared_t;

Test(ipc_timeout_rule, shared_primitives_negative_is_one_try)
{
    shared_t *s;
    cr_assert_eq(conc_shared_alloc(sizeof *s, (void **)&s), 0);
    cr_assert_eq(conc_plock_init(&s->lock), 0);
    cr_assert_eq(conc_prlock_init(&s->rlock), 0);
    cr_assert_eq(conc_psemaphore_init(&s->sem, 1), 0);
    cr_assert_eq(conc_pevent_init(&s->ev), 0);
    cr_assert_eq(conc_pcond_init_rlock(&s->cond, &s->rlock), 0);
    cr_assert_eq(conc_pbarrier_init(&s->barrier, 2, NULL, NULL, CONC_FOREVER), 0);

    double t0 = tu_now();
    cr_assert_eq(conc_plock_acquire(&s->lock, true, -1.0), 0, "free: the one try takes it");
    cr_assert_eq(conc_plock_acquire(&s->lock, true, -1.0), CONC_ETIMEDOUT, "held: no wait");
    cr_assert_eq(conc_plock_acquire(&s->lock, false, -1.0), CONC_EINVAL, "blocking=false with a timeout");
    cr_assert_eq(conc_plock_acquire(&s->lock, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_plock_release(&s->lock), 0);
    cr_assert_eq(conc_prlock_acquire(&s->rlock, true, -1.0), 0);
    cr_assert_eq(conc_prlock_release(&s->rlock), 0);
    cr_assert_eq(conc_psemaphore_acquire(&s->sem, true, -1.0), 0);
    cr_assert_eq(conc_psemaphore_acquire(&s->sem, true, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_psemaphore_value(&s->sem), 0);
    cr_assert_eq(conc_pevent_wait(&s->ev, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_pcond_acquire(&s->cond, true, -1.0), 0);
    cr_assert_eq(conc_pcond_wait(&s->cond, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_prlock_level(&s->rlock), 1, "the lock came back");
    cr_assert_eq(conc_pcond_release(&s->cond), 0);
    cr_assert_eq(conc_pbarrier_wait(&s->barrier, -1.0, NULL), CONC_EBROKEN);
    cr_assert(conc_pbarrier_broken(&s->barrier));
    cr_assert_lt(tu_now() - t0, QUICK);
    /* a negative default: accepted (Python's Barrier takes it) */
    cr_assert_eq(conc_pbarrier_init(&s->barrier, 2, NULL, NULL, -1.0), 0);
    cr_assert_eq(conc_pbarrier_wait(&s->barrier, CONC_BARRIER_DEFAULT, NULL), CONC_EBROKEN);
    conc_shared_free(s);
}

Test(ipc_timeout_rule, mp_queue_and_connection_negative_is_one_try)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_JOINABLE, 1, 0), 0);
    char b[8];
    size_t n;
    double t0 = tu_now();
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, -1.0), CONC_EEMPTY);
    cr_assert_eq(conc_mpqueue_put(q, "a", 1, true, -1.0), 0, "room: the one try puts");
    cr_assert_eq(conc_mpqueue_put(q, "b", 1, true, -1.0), CONC_EFULL);
    cr_assert_eq(conc_mpqueue_put(q, "b", 1, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_join(q, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_mpqueue_qsize(q), 1);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, -1.0), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(conc_mpqueue_task_done(q), 0);
    cr_assert_eq(conc_mpqueue_join(q, -1.0), 0);
    cr_assert_eq(conc_mpqueue_free(q), 0);

    conc_conn_t *a, *c;
    cr_assert_eq(conc_pipe(true, &a, &c), 0);
    cr_assert_eq(conc_conn_poll(c, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_conn_send_bytes(a, "x", 1), 0);
    cr_assert_eq(conc_conn_poll(c, -1.0), 0);
    cr_assert_lt(tu_now() - t0, QUICK);
    conc_conn_close(a);
    conc_conn_close(c);
}

Test(ipc_timeout_rule, process_join_negative_is_a_check)
{
    conc_process_t *p;
    cr_assert_eq(conc_process_new(&p, sleeper, NULL, 0, NULL), 0);
    cr_assert_eq(conc_process_start(p), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_process_join(p, -1.0), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_eq(conc_process_join(p, NAN), CONC_EINVAL);
    cr_assert_eq(conc_process_terminate(p), 0);
    cr_assert_eq(conc_process_join(p, 30), 0);
    cr_assert_eq(conc_process_join(p, -1.0), 0, "ended: joins with no time");
    conc_process_free(p);
}

Test(ipc_timeout_rule, pool_results_negative_are_already_up)
{
    conc_pool_t *p;
    conc_pool_opts_t o = {.processes = 1};
    cr_assert_eq(conc_pool_new(&p, &o), 0);
    conc_future_t *f;
    cr_assert_eq(conc_pool_apply_async(p, slow_task, NULL, 0, NULL, NULL, NULL, &f), 0);
    const void *d;
    size_t n;
    double t0 = tu_now();
    cr_assert_eq(conc_future_bytes(f, -1.0, &d, &n), CONC_ETIMEDOUT);
    cr_assert_eq(conc_pool_close(p), 0);
    cr_assert_eq(conc_pool_join(p, -1.0), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_eq(conc_pool_terminate(p), 0);
    conc_future_free(f);
    cr_assert_eq(conc_pool_free(p), 0);

    /* ProcessPoolExecutor.map(timeout=-1): nothing waited for */
    conc_executor_t *ex;
    conc_process_pool_opts_t po = {.max_workers = 1};
    cr_assert_eq(conc_process_pool_new(&ex, &po), 0);
    conc_results_t *r = NULL;
    t0 = tu_now();
    cr_assert_eq(conc_process_pool_map(ex, slow_task, "ab", 1, 2, 1, -1.0, &r), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_null(r);
    cr_assert_eq(conc_executor_shutdown(ex, false, true), 0);
    int pids[4];
    size_t np = conc_process_pool_pids(ex, pids, 4);
    for (size_t i = 0; i < np; i++)
        kill(pids[i], SIGKILL); /* the running slow task would keep free() waiting 30 s */
    cr_assert_eq(conc_executor_free(ex), 0);
}

Test(ipc_timeout_rule, manager_lock_and_queue_follow_threading_and_queue)
{
    conc_manager_t *m;
    conc_manager_opts_t mo = {.timeout = 10};
    int rc = conc_manager_start(&m, &mo);
    cr_assert_eq(rc, 0, "start: %s", conc_strerror(rc));
    conc_mlock_t *l;
    cr_assert_eq(conc_manager_lock(m, "l", &l), 0);
    cr_assert_eq(conc_mlock_acquire(l, true, -1.0), CONC_EINVAL, "threading.Lock: ValueError");
    cr_assert_eq(conc_mlock_acquire(l, false, 0), CONC_EINVAL);
    bool locked = true;
    cr_assert_eq(conc_mlock_locked(l, &locked), 0);
    cr_assert_not(locked, "a refused acquire took the lock");
    cr_assert_eq(conc_mlock_acquire(l, true, 0), 0);
    cr_assert_eq(conc_mlock_release(l), 0);

    conc_mqueue_t *bq, *uq;
    cr_assert_eq(conc_manager_queue(m, "bq", 1, &bq), 0);
    cr_assert_eq(conc_manager_queue(m, "uq", 0, &uq), 0);
    void *it = NULL;
    size_t n;
    cr_assert_eq(conc_mqueue_get(bq, &it, &n, true, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_mqueue_put(bq, "x", 1, true, -1.0), CONC_EINVAL, "bounded put: ValueError");
    cr_assert_eq(conc_mqueue_put(uq, "x", 1, true, -1.0), 0, "unbounded put ignores its timeout");
    size_t qn = 9;
    cr_assert_eq(conc_mqueue_qsize(bq, &qn), 0);
    cr_assert_eq(qn, 0);
    cr_assert_eq(conc_mqueue_qsize(uq, &qn), 0);
    cr_assert_eq(qn, 1);
    cr_assert_eq(conc_mqueue_get(uq, &it, &n, true, CONC_FOREVER), 0);
    free(it);
    conc_mlock_free(l);
    conc_mqueue_free(bq);
    conc_mqueue_free(uq);
    cr_assert_eq(conc_manager_free(m), 0);
}

TU_MAIN_WITH_PROCESS_GUARD()
