/* The banker against the runtime deadlock detector (conc/deadlock.h, from
 * the lock-order/deadlock work of the same issue): the banker's workload
 * done with plain per-unit Locks instead deadlocks, and the detector
 * catches it (a wait returns CONC_EDEADLK, the client backs off); the
 * same workload through the banker never deadlocks and the detector,
 * switched on, reports nothing. Built only where conc/deadlock.h exists;
 * elsewhere one test prints why it is skipped. */
#include "test_util.h"

#include "conc/banker.h"

#if __has_include("conc/deadlock.h")
#include "conc/deadlock.h"

/* ---------------------------------- two clients, two single-unit types */

typedef struct {
    conc_lock_t r[2];
    conc_banker_t *b;
    conc_banker_client_t *c[2];
    pthread_barrier_t bar;
    atomic_int rc[2];
    atomic_int deadlocks, timeouts, errors;
} pair_t;

static pair_t pr;

/* Without the banker: client i takes unit i, then (after the other took
 * its own) unit 1-i: the classic cycle. */
static void locks_client(void *arg, int i)
{
    (void)arg;
    if (conc_lock_acquire(&pr.r[i], true, 10.0) != 0) {
        atomic_fetch_add(&pr.errors, 1);
        return;
    }
    pthread_barrier_wait(&pr.bar);
    int rc = conc_lock_acquire(&pr.r[1 - i], true, 10.0);
    atomic_store(&pr.rc[i], rc);
    if (rc == CONC_EDEADLK) {
        atomic_fetch_add(&pr.deadlocks, 1);
        conc_lock_release(&pr.r[i]); /* back off: the other proceeds */
        return;
    }
    if (rc == CONC_ETIMEDOUT)
        atomic_fetch_add(&pr.timeouts, 1);
    if (rc == 0)
        conc_lock_release(&pr.r[1 - i]);
    conc_lock_release(&pr.r[i]);
}

/* With the banker: the same two steps as requests of claim (1,1). */
static void banker_client(void *arg, int i)
{
    (void)arg;
    long first[2] = {i == 0, i == 1}, second[2] = {i == 1, i == 0}, all[2] = {1, 1};
    int rc = conc_banker_request(pr.c[i], first, 10.0);
    if (rc == 0) {
        tu_sleep(0.05); /* the other asks meanwhile */
        rc = conc_banker_request(pr.c[i], second, 10.0);
        if (rc == 0)
            conc_banker_release(pr.c[i], all);
        else
            conc_banker_release(pr.c[i], first);
    }
    atomic_store(&pr.rc[i], rc);
    if (rc == CONC_EDEADLK)
        atomic_fetch_add(&pr.deadlocks, 1);
    else if (rc == CONC_ETIMEDOUT)
        atomic_fetch_add(&pr.timeouts, 1);
    else if (rc != 0)
        atomic_fetch_add(&pr.errors, 1);
}

Test(banker_detect, two_clients_locks_deadlock_is_caught, .timeout = TU_TIMEOUT)
{
    memset(&pr, 0, sizeof pr);
    pthread_barrier_init(&pr.bar, NULL, 2);
    conc_set_name(&pr.r[0], "resource 0");
    conc_set_name(&pr.r[1], "resource 1");
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_DEADLOCK), 0);
    tu_run_threads(2, locks_client, NULL);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    pthread_barrier_destroy(&pr.bar);
    cr_assert_eq(atomic_load(&pr.errors), 0);
    cr_assert_eq(atomic_load(&pr.timeouts), 0, "the deadlock was not caught: a wait timed out");
    cr_assert_geq(atomic_load(&pr.deadlocks), 1, "no CONC_EDEADLK: rc %d %d", atomic_load(&pr.rc[0]),
                  atomic_load(&pr.rc[1]));
    cr_assert_not(conc_lock_locked(&pr.r[0]));
    cr_assert_not(conc_lock_locked(&pr.r[1]));
    conc_set_name(&pr.r[0], NULL);
    conc_set_name(&pr.r[1], NULL);
}

Test(banker_detect, two_clients_banker_never_deadlocks, .timeout = TU_TIMEOUT)
{
    memset(&pr, 0, sizeof pr);
    cr_assert_eq(conc_banker_new(&pr.b, 2, (long[]){1, 1}), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_banker_claim(pr.b, (long[]){1, 1}, &pr.c[i]), 0);
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_DEADLOCK), 0);
    tu_run_threads(2, banker_client, NULL);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    cr_assert_eq(atomic_load(&pr.errors), 0);
    cr_assert_eq(atomic_load(&pr.deadlocks), 0);
    cr_assert_eq(atomic_load(&pr.timeouts), 0);
    cr_assert_eq(atomic_load(&pr.rc[0]), 0);
    cr_assert_eq(atomic_load(&pr.rc[1]), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_banker_unclaim(pr.c[i]), 0);
    cr_assert_eq(conc_banker_free(pr.b), 0);
}

/* ------------------------- the 16-client random workload, with Locks */

#define SC 16
#define SM 4
static const long st_total[SM] = {6, 5, 7, 4};
#define NUNITS 22 /* sum of st_total */

typedef struct {
    conc_lock_t unit[NUNITS];
    long max[SC][SM];
    atomic_int stop;
    atomic_long deadlocks, timeouts, errors, rounds;
} rnd_t;

static rnd_t rw;

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static void random_locks_client(void *arg, int idx)
{
    (void)arg;
    unsigned seed = 0x9e3779b9u * (unsigned)(idx + 1);
    int want[NUNITS], held[NUNITS];
    while (!atomic_load(&rw.stop)) {
        /* the units of this round: max[idx][i] distinct units of type i */
        int n = 0, base = 0;
        for (int i = 0; i < SM; i++) {
            int off = (int)(rnd(&seed) % (unsigned)st_total[i]);
            for (long k = 0; k < rw.max[idx][i]; k++)
                want[n++] = base + (int)((off + k) % st_total[i]);
            base += (int)st_total[i];
        }
        for (int k = n - 1; k > 0; k--) { /* any order: no lock ordering */
            int j = (int)(rnd(&seed) % (unsigned)(k + 1)), t = want[k];
            want[k] = want[j];
            want[j] = t;
        }
        int nh = 0;
        for (int k = 0; k < n; k++) {
            int rc = conc_lock_acquire(&rw.unit[want[k]], true, 20.0);
            if (rc == 0) {
                held[nh++] = want[k];
                sched_yield();
                continue;
            }
            if (rc == CONC_EDEADLK)
                atomic_fetch_add(&rw.deadlocks, 1);
            else if (rc == CONC_ETIMEDOUT)
                atomic_fetch_add(&rw.timeouts, 1);
            else
                atomic_fetch_add(&rw.errors, 1);
            break; /* back off: release everything, try a new round */
        }
        while (nh > 0)
            conc_lock_release(&rw.unit[held[--nh]]);
        atomic_fetch_add(&rw.rounds, 1);
    }
}

Test(banker_detect, random_workload_with_locks_deadlocks_and_is_caught, .timeout = 120)
{
    memset(&rw, 0, sizeof rw);
    unsigned seed = 12345;
    for (int k = 0; k < SC; k++)
        for (int i = 0; i < SM; i++) /* small claims: 1..2 units of a type */
            rw.max[k][i] = 1 + (long)(rnd(&seed) % 2u);
    for (int i = 0, u = 0; i < SM; i++)
        for (long k = 0; k < st_total[i]; k++, u++) {
            char name[48]; /* room for any int and long (-Wformat-truncation at -O1) */
            snprintf(name, sizeof name, "type %d unit %ld", i, k);
            conc_set_name(&rw.unit[u], name);
        }
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_DEADLOCK), 0);
    static tu_bunch_t b;
    tu_bunch_start(&b, SC, random_locks_client, NULL);
    /* run until the detector caught a few deadlocks (or 20 s) */
    TU_WAIT_UNTIL(atomic_load(&rw.deadlocks) >= 3, 20.0);
    atomic_store(&rw.stop, 1);
    tu_bunch_join(&b);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    cr_assert_eq(atomic_load(&rw.errors), 0);
    cr_assert_eq(atomic_load(&rw.timeouts), 0, "a deadlock went unnoticed: a wait timed out");
    cr_assert_geq(atomic_load(&rw.deadlocks), 1, "no deadlock in %ld rounds", atomic_load(&rw.rounds));
    for (int u = 0; u < NUNITS; u++) {
        cr_assert_not(conc_lock_locked(&rw.unit[u]));
        conc_set_name(&rw.unit[u], NULL);
    }
}

#else

Test(banker_detect, skipped)
{
    printf("banker_detect: skipped: conc/deadlock.h (the runtime deadlock detector) is not in this "
           "tree yet\n");
    cr_skip_test("conc/deadlock.h is not in this tree yet");
}

#endif
