/*
 * examples/tour/deadlock.h — the tour's chapter on deadlock (死锁):
 * dining philosophers deadlocking under the runtime detector, then fixed
 * by lock ordering, a butler semaphore and RLock; the four Coffman
 * conditions, each broken; lock-order checking; the dump of who waits on
 * what. (The banker's algorithm is the GIL chapter's neighbour section.)
 * Included by examples/tour.c; uses its CHECK and struct section.
 */

#define PHILS 5

static conc_lock_t forks[PHILS];
static conc_barrier_t table_barrier;
static atomic_int meals, victims;

static void forks_init(void)
{
    for (int i = 0; i < PHILS; i++)
        conc_lock_init(&forks[i]);
    atomic_store(&meals, 0);
    atomic_store(&victims, 0);
}

/* Everyone takes the left fork, waits until all have one (so the cycle
 * surely forms), then reaches for the right one. The detector gives one
 * of them CONC_EDEADLK; it puts its fork down, waits, and tries again. */
static void *phil_naive(void *arg)
{
    int i = (int)(intptr_t)arg;
    conc_lock_t *left = &forks[i], *right = &forks[(i + 1) % PHILS];
    bool first = true;
    for (;;) {
        conc_lock_acquire(left, true, CONC_FOREVER);
        if (first)
            conc_barrier_wait(&table_barrier, 10, NULL);
        first = false;
        int rc = conc_lock_acquire(right, true, 10);
        if (rc == 0) {
            atomic_fetch_add(&meals, 1); /* eat */
            conc_lock_release(right);
            conc_lock_release(left);
            return NULL;
        }
        if (rc == CONC_EDEADLK)
            atomic_fetch_add(&victims, 1);
        conc_lock_release(left); /* back off: the others can eat */
        conc_sleep(0.05);
    }
}

static int run_phils(void *(*fn)(void *))
{
    conc_thread_t *t[PHILS];
    for (int i = 0; i < PHILS; i++) {
        if (conc_thread_new(&t[i], fn, (void *)(intptr_t)i, NULL) || conc_thread_start(t[i]))
            return -1;
    }
    for (int i = 0; i < PHILS; i++) {
        conc_thread_join(t[i], 30, NULL);
        conc_thread_free(t[i]);
    }
    return 0;
}

static int sec_dl_philosophers(void)
{
    forks_init();
    conc_barrier_init(&table_barrier, PHILS, NULL, NULL, 10);
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    printf("   5 philosophers each hold their left fork and wait for the right one: a cycle.\n"
           "   CONC_DEBUG=deadlock (here: conc_debug_enable) finds it after 100 ms; the detector's\n"
           "   report goes to stderr:\n");
    expected_stderr_begin("the deadlock detector's report");
    double t0 = conc_monotonic();
    run_phils(phil_naive);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    expected_stderr_end();
    printf("   %d meals eaten in %.2f s; %d philosopher(s) got CONC_EDEADLK, put the fork down and "
           "retried\n",
           atomic_load(&meals), conc_monotonic() - t0, atomic_load(&victims));
    CHECK(atomic_load(&meals) == PHILS);
    CHECK(atomic_load(&victims) >= 1);
    return 0;
}

/* Fix 1 (circular wait broken): a global order — lower fork first. */
static void *phil_ordered(void *arg)
{
    int i = (int)(intptr_t)arg;
    int a = i, b = (i + 1) % PHILS;
    conc_lock_t *lo = &forks[a < b ? a : b], *hi = &forks[a < b ? b : a];
    for (int k = 0; k < 20; k++) {
        conc_lock_acquire(lo, true, CONC_FOREVER);
        conc_lock_acquire(hi, true, CONC_FOREVER);
        atomic_fetch_add(&meals, 1);
        conc_lock_release(hi);
        conc_lock_release(lo);
    }
    return NULL;
}

static int sec_dl_ordering(void)
{
    forks_init();
    conc_debug_enable(CONC_DEBUG_LOCKORDER | CONC_DEBUG_DEADLOCK);
    run_phils(phil_ordered);
    conc_debug_disable(CONC_DEBUG_LOCKORDER | CONC_DEBUG_DEADLOCK);
    printf("   everyone takes the lower-numbered fork first: %d meals, no cycle, and the lock-order\n"
           "   checker (CONC_DEBUG=lockorder) saw nothing to report\n",
           atomic_load(&meals));
    CHECK(atomic_load(&meals) == PHILS * 20);
    return 0;
}

/* Fix 2: a butler lets at most N-1 sit down: someone always gets two forks. */
static conc_semaphore_t butler;

static void *phil_butler(void *arg)
{
    int i = (int)(intptr_t)arg;
    for (int k = 0; k < 20; k++) {
        conc_semaphore_acquire(&butler, true, CONC_FOREVER);
        conc_lock_acquire(&forks[i], true, CONC_FOREVER);
        conc_lock_acquire(&forks[(i + 1) % PHILS], true, CONC_FOREVER);
        atomic_fetch_add(&meals, 1);
        conc_lock_release(&forks[(i + 1) % PHILS]);
        conc_lock_release(&forks[i]);
        conc_semaphore_release(&butler, 1);
    }
    return NULL;
}

static int sec_dl_butler(void)
{
    forks_init();
    conc_semaphore_init(&butler, PHILS - 1);
    run_phils(phil_butler);
    printf("   a butler Semaphore(%d): left fork first again, but only %d at the table: %d meals\n", PHILS - 1,
           PHILS - 1, atomic_load(&meals));
    CHECK(atomic_load(&meals) == PHILS * 20);
    return 0;
}

/* Fix 3: when the "cycle" is one thread taking its own lock again. */
static int depth_lock(conc_lock_t *l, int depth)
{
    int rc = conc_lock_acquire(l, true, CONC_FOREVER);
    if (rc)
        return rc;
    if (depth > 0)
        rc = depth_lock(l, depth - 1);
    conc_lock_release(l);
    return rc;
}

static int depth_rlock(conc_rlock_t *r, int depth)
{
    conc_rlock_acquire(r, true, CONC_FOREVER);
    int rc = depth > 0 ? depth_rlock(r, depth - 1) : 0;
    conc_rlock_release(r);
    return rc;
}

static int sec_dl_reentrant(void)
{
    conc_lock_t l = CONC_LOCK_INIT;
    conc_rlock_t r = CONC_RLOCK_INIT;
    expected_stderr_begin("the detector's report of a Lock taken again by its holder");
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    int rc = depth_lock(&l, 2);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    expected_stderr_end();
    printf("   a recursive function taking a Lock again: %s at once (without detection: a silent hang)\n",
           conc_errname(rc));
    int rc2 = depth_rlock(&r, 2);
    printf("   the same with an RLock: %s\n", rc2 == 0 ? "fine, its owner may re-enter" : conc_errname(rc2));
    CHECK(rc == CONC_EDEADLK);
    CHECK(rc2 == 0);
    return 0;
}

/* The four Coffman conditions; break any one and deadlock cannot happen. */
static atomic_long shared_total;

static void *phil_all_or_nothing(void *arg) /* hold-and-wait broken */
{
    int i = (int)(intptr_t)arg;
    for (int k = 0; k < 20;) {
        conc_lock_acquire(&forks[i], true, CONC_FOREVER);
        if (conc_lock_acquire(&forks[(i + 1) % PHILS], false, CONC_FOREVER) == 0) {
            atomic_fetch_add(&meals, 1);
            k++;
            conc_lock_release(&forks[(i + 1) % PHILS]);
        }
        conc_lock_release(&forks[i]); /* never wait while holding */
        if (k < 20)
            conc_yield();
    }
    return NULL;
}

static void *phil_preempt(void *arg) /* no-preemption broken */
{
    int i = (int)(intptr_t)arg;
    for (int k = 0; k < 20;) {
        conc_lock_acquire(&forks[i], true, CONC_FOREVER);
        if (conc_lock_acquire(&forks[(i + 1) % PHILS], true, 0.001) == 0) {
            atomic_fetch_add(&meals, 1);
            k++;
            conc_lock_release(&forks[(i + 1) % PHILS]);
        }
        conc_lock_release(&forks[i]); /* timed out: give up what we hold */
    }
    return NULL;
}

static void *phil_no_mutex(void *arg) /* mutual exclusion broken: nothing to lock */
{
    (void)arg;
    for (int k = 0; k < 20; k++)
        atomic_fetch_add(&shared_total, 1);
    return NULL;
}

static int sec_dl_coffman(void)
{
    printf("   deadlock needs all four (Coffman, 1971); each fix below breaks one:\n");
    atomic_store(&shared_total, 0);
    run_phils(phil_no_mutex);
    printf("   1. mutual exclusion: share nothing that needs a lock (an atomic counter): %ld\n",
           atomic_load(&shared_total));
    forks_init();
    run_phils(phil_all_or_nothing);
    printf("   2. hold and wait: take the second fork only if free, else drop the first: %d meals\n",
           atomic_load(&meals));
    int m2 = atomic_load(&meals);
    forks_init();
    run_phils(phil_preempt);
    printf("   3. no preemption: a timed acquire; on timeout, give back what you hold: %d meals\n",
           atomic_load(&meals));
    int m3 = atomic_load(&meals);
    printf("   4. circular wait: one global order of acquisition (see deadlock/ordering)\n");
    CHECK(atomic_load(&shared_total) == PHILS * 20);
    CHECK(m2 == PHILS * 20);
    CHECK(m3 == PHILS * 20);
    return 0;
}

/* Lock-order checking: ABBA one after the other never deadlocks here,
 * yet it is reported (it would, some day, under load). */
static conc_lock_t lo_a = CONC_LOCK_INIT, lo_b = CONC_LOCK_INIT;

static void *take_ab(void *arg)
{
    bool ab = arg != NULL;
    conc_lock_acquire(ab ? &lo_a : &lo_b, true, CONC_FOREVER);
    conc_lock_acquire(ab ? &lo_b : &lo_a, true, CONC_FOREVER);
    conc_lock_release(ab ? &lo_b : &lo_a);
    conc_lock_release(ab ? &lo_a : &lo_b);
    return NULL;
}

static int sec_dl_lockorder(void)
{
    conc_debug_enable(CONC_DEBUG_LOCKORDER);
    conc_set_name(&lo_a, "accounts");
    conc_set_name(&lo_b, "audit-log");
    printf("   thread 1 takes accounts then audit-log; later thread 2 takes them the other way.\n"
           "   Nothing hangs, but CONC_DEBUG=lockorder reports the inversion (stderr), with both stacks:\n");
    expected_stderr_begin("the lock-order checker's report");
    for (int k = 0; k < 2; k++) {
        conc_thread_t *t;
        conc_thread_new(&t, take_ab, k == 0 ? (void *)1 : NULL, NULL);
        conc_thread_start(t);
        conc_thread_join(t, 10, NULL);
        conc_thread_free(t);
    }
    conc_debug_disable(CONC_DEBUG_LOCKORDER);
    expected_stderr_end();
    conc_debug_forget(&lo_a);
    conc_debug_forget(&lo_b);
    return 0;
}

/* The dump: who waits on what (conc_dump; or CONC_DUMP_SIGNAL=QUIT and kill -QUIT). */
static conc_lock_t dump_lock = CONC_LOCK_INIT;

static void *dump_waiter(void *arg)
{
    (void)arg;
    if (conc_lock_acquire(&dump_lock, true, 5) == 0)
        conc_lock_release(&dump_lock);
    return NULL;
}

static int sec_dl_dump(void)
{
    conc_debug_enable(CONC_DEBUG_LOCKORDER); /* so the Lock's holder is recorded */
    conc_lock_acquire(&dump_lock, true, CONC_FOREVER);
    conc_debug_disable(CONC_DEBUG_LOCKORDER);
    conc_set_name(&dump_lock, "config");
    conc_thread_t *t;
    conc_thread_opts_t o = {.name = "reloader"};
    conc_thread_new(&t, dump_waiter, NULL, &o);
    conc_thread_start(t);
    conc_sleep(0.2);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    conc_dump(f);
    fclose(f);
    printf("   conc_dump(stdout), backtraces left out:\n");
    bool seen = false;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        const char *s = line;
        while (*s == ' ')
            s++;
        if (*s == '#')
            continue;
        printf("     %s\n", line);
        seen |= strstr(line, "reloader") && strstr(line, "held by MainThread");
    }
    free(buf);
    conc_lock_release(&dump_lock);
    conc_thread_join(t, 10, NULL);
    conc_thread_free(t);
    CHECK(seen);
    return 0;
}

static const struct section deadlock_sections[] = {
    {"philosophers", "dining philosophers deadlock, found by the runtime detector", sec_dl_philosophers,
     "with forks[i]: with forks[(i+1)%5]: eat()  # all five: stuck forever"},
    {"ordering", "fix: one global lock order (breaks circular wait)", sec_dl_ordering,
     "first, second = sorted((i, (i+1)%5)); with forks[first]: with forks[second]: eat()"},
    {"butler", "fix: a butler Semaphore(N-1)", sec_dl_butler, "with butler: with left: with right: eat()"},
    {"reentrant", "fix: RLock where a thread re-takes its own lock", sec_dl_reentrant,
     "lock = threading.RLock()  # a Lock would hang here"},
    {"philosophers_banker", "fix: the banker's algorithm grants a fork only when the state stays safe",
     sec_philosophers_banker, "banker.request(me, left_fork)  # waits while granting it would be unsafe"},
    {"coffman", "the four Coffman conditions, each broken", sec_dl_coffman,
     "if right.acquire(blocking=False): eat()  # else put left down"},
    {"lockorder", "lock-order checking: an inversion reported before it deadlocks", sec_dl_lockorder,
     "CONC_DEBUG=lockorder ./prog"},
    {"dump", "who waits on what: conc_dump (Go's SIGQUIT dump, py-spy dump)", sec_dl_dump,
     "faulthandler.dump_traceback(all_threads=True)"},
    {NULL, NULL, NULL, NULL},
};
