/*
 * examples/tour/banker.h — the tour's section "philosophers_banker" of the
 * deadlock chapter (死锁): the dining philosophers made safe by the
 * banker's algorithm (银行家算法). Included by examples/tour.c. The rest of
 * the deadlock chapter (the philosophers deadlocking, the detector, the
 * other three cures) is in tour/deadlock.h, whose section list includes
 * sec_philosophers_banker (so this file comes first).
 *
 * Five philosophers, five forks. Each fork is a resource type with one
 * unit; philosopher i claims forks i and i+1 (its maximum claim), then
 * always picks up its left fork first and its right fork second — the
 * order that deadlocks with plain locks when all five hold their left
 * fork. The banker refuses (makes wait) the left-fork request that would
 * leave nobody able to finish: the fifth philosopher waits until a
 * neighbour has eaten, so all of them eat, every time.
 */

enum { PHIL_N = 5, PHIL_MEALS = 30 };

struct phil_table {
    conc_banker_t *b;
    conc_banker_client_t *c[PHIL_N];
    atomic_int meals[PHIL_N];
    atomic_int made_wait[PHIL_N]; /* left-fork requests the banker held back */
    atomic_int errors;
    atomic_int eating_now, most_eating;
};

struct phil_arg {
    struct phil_table *t;
    int i;
};

static void *philosopher(void *arg)
{
    struct phil_arg *a = arg;
    struct phil_table *t = a->t;
    int i = a->i, r = (i + 1) % PHIL_N;
    long left[PHIL_N] = {0}, right[PHIL_N] = {0}, both[PHIL_N] = {0};
    left[i] = 1;
    right[r] = 1;
    both[i] = both[r] = 1;
    for (int m = 0; m < PHIL_MEALS; m++) {
        sched_yield(); /* think */
        if (conc_banker_query(t->c[i], left) != 0)
            atomic_fetch_add(&t->made_wait[i], 1);
        if (conc_banker_request(t->c[i], left, 10.0) != 0) { /* pick up the left fork */
            atomic_fetch_add(&t->errors, 1);
            break;
        }
        sched_yield(); /* the moment that deadlocks with plain locks */
        if (conc_banker_request(t->c[i], right, 10.0) != 0) { /* then the right one */
            atomic_fetch_add(&t->errors, 1);
            conc_banker_release(t->c[i], left);
            break;
        }
        int now = atomic_fetch_add(&t->eating_now, 1) + 1; /* eat */
        int most = atomic_load(&t->most_eating);
        while (now > most && !atomic_compare_exchange_weak(&t->most_eating, &most, now)) {
        }
        atomic_fetch_add(&t->meals[i], 1);
        atomic_fetch_sub(&t->eating_now, 1);
        conc_banker_release(t->c[i], both);
    }
    return NULL;
}

static int sec_philosophers_banker(void)
{
    printf("  Five philosophers, five forks (one unit each), every one left fork first.\n"
           "  Philosopher i declares its maximum claim: forks i and i+1. The banker\n"
           "  grants a fork only if everyone could still finish afterwards.\n");
    long ones[PHIL_N] = {1, 1, 1, 1, 1};
    struct phil_table t;
    memset(&t, 0, sizeof t);
    int rc = conc_banker_new(&t.b, PHIL_N, ones);
    CHECK(rc == 0);
    if (rc)
        return 1;
    for (int i = 0; i < PHIL_N; i++) {
        long claim[PHIL_N] = {0};
        claim[i] = claim[(i + 1) % PHIL_N] = 1;
        CHECK(conc_banker_claim(t.b, claim, &t.c[i]) == 0);
    }
    /* What the banker sees when four hold their left fork: */
    for (int i = 0; i < PHIL_N - 1; i++) {
        long left[PHIL_N] = {0};
        left[i] = 1;
        CHECK(conc_banker_request(t.c[i], left, 0) == 0);
    }
    long left4[PHIL_N] = {0, 0, 0, 0, 1};
    int q = conc_banker_query(t.c[4], left4);
    size_t seq[PHIL_N], n = 0;
    conc_banker_safe_sequence(t.b, seq, PHIL_N, &n);
    printf("    P0..P3 hold their left forks; safe sequence now:");
    for (size_t k = 0; k < n; k++)
        printf(" P%zu", seq[k]);
    printf("\n    P4 asks for its left fork (the last free one): %s\n",
           q == CONC_EDEADLK ? "refused for now: the state would be unsafe (CONC_EDEADLK)"
                             : conc_strerror(q));
    CHECK(q == CONC_EDEADLK);
    for (int i = 0; i < PHIL_N - 1; i++) {
        long left[PHIL_N] = {0};
        left[i] = 1;
        conc_banker_release(t.c[i], left);
    }

    pthread_t th[PHIL_N];
    struct phil_arg args[PHIL_N];
    double t0 = conc_monotonic();
    for (int i = 0; i < PHIL_N; i++) {
        args[i] = (struct phil_arg){&t, i};
        pthread_create(&th[i], NULL, philosopher, &args[i]);
    }
    for (int i = 0; i < PHIL_N; i++)
        pthread_join(th[i], NULL);
    double dt = conc_monotonic() - t0;
    printf("    %-12s %6s %22s\n", "philosopher", "meals", "left fork held back");
    int total = 0;
    for (int i = 0; i < PHIL_N; i++) {
        printf("    P%-11d %6d %22d\n", i, atomic_load(&t.meals[i]), atomic_load(&t.made_wait[i]));
        total += atomic_load(&t.meals[i]);
    }
    printf("  %d meals in %.3f s, at most %d eating at once, no deadlock.\n", total, dt,
           atomic_load(&t.most_eating));
    CHECK(total == PHIL_N * PHIL_MEALS);
    CHECK(atomic_load(&t.errors) == 0);
    CHECK(atomic_load(&t.most_eating) <= PHIL_N / 2);
    for (int i = 0; i < PHIL_N; i++)
        CHECK(conc_banker_unclaim(t.c[i]) == 0);
    CHECK(conc_banker_free(t.b) == 0);
    return 0;
}
