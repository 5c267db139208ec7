/* Green-thread stress:
 * - 100k green threads ping-ponging through queues (50k pairs, each with
 *   two bounded queues of one slot, many rounds, all pairs at once);
 * - 1M idle green threads (default stack size) created, all parked on one
 *   Event at the same time, then woken and joined: checks that the stacks
 *   do not run into vm.max_map_count (one mapping per stack plus one per
 *   guard page would cap a process near 32k; green.h keeps guard pages
 *   only while the budget allows) with a quarter of it left for the rest
 *   of the process, and that the RSS per idle
 *   green thread stays sane (the memory is grown in stages, and the test
 *   stops early if the per-thread cost is already too high, so a bad
 *   implementation fails instead of eating the machine).
 * Sizes scale with tu_iters (10% under sanitizers; the idle test 1%; under
 * TSan at most 400 alive at once: see TSAN_MAX_ALIVE). */
#include "test_util.h"

#include "conc/green.h"

#define PTR(x) ((void *)(uintptr_t)(x))

/* TSan makes each green thread a fiber: it dies past 8128 live threads,
 * every synchronisation costs time proportional to the number of them
 * (vector clocks: ~0.2 ms per queue handoff with 200 alive, ~1 ms with
 * 6000) and each costs ~900 KB of its memory. */
#define TSAN_MAX_ALIVE 400L

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * sysconf(_SC_PAGESIZE);
}

static long count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    long n = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static long max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long v = -1;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

/* ---------------------------------------------------------- ping-pong */

typedef struct {
    conc_queue_t *ping, *pong;
} pair_t;

static long rounds;
static atomic_long errors, done_pairs;

static void *pinger(void *arg)
{
    pair_t *p = arg;
    for (long i = 0; i < rounds; i++) {
        void *it = NULL;
        if (conc_queue_put(p->ping, PTR(i), true, 30.0) != 0 || conc_queue_get(p->pong, &it, true, 30.0) != 0 ||
            it != PTR(i + 1)) {
            atomic_fetch_add(&errors, 1);
            return NULL;
        }
    }
    atomic_fetch_add(&done_pairs, 1);
    return NULL;
}

static void *ponger(void *arg)
{
    pair_t *p = arg;
    for (long i = 0; i < rounds; i++) {
        void *it = NULL;
        if (conc_queue_get(p->ping, &it, true, 30.0) != 0 ||
            conc_queue_put(p->pong, PTR((uintptr_t)it + 1), true, 30.0) != 0) {
            atomic_fetch_add(&errors, 1);
            return NULL;
        }
    }
    return NULL;
}

Test(green_stress, ping_pong_100k_green_threads_through_queues, .timeout = 120)
{
    long npairs = tu_iters(50000);
    if (TU_TSAN && npairs > TSAN_MAX_ALIVE / 2)
        npairs = TSAN_MAX_ALIVE / 2;
    rounds = 4;
    atomic_store(&errors, 0);
    atomic_store(&done_pairs, 0);
    pair_t *pairs = calloc((size_t)npairs, sizeof *pairs);
    conc_green_t **g = calloc((size_t)npairs * 2, sizeof *g);
    cr_assert(pairs && g);
    for (long i = 0; i < npairs; i++) {
        cr_assert_eq(conc_queue_new(&pairs[i].ping, CONC_FIFO, 1), 0);
        cr_assert_eq(conc_queue_new(&pairs[i].pong, CONC_FIFO, 1), 0);
    }
    double t0 = tu_now();
    for (long i = 0; i < npairs; i++) {
        /* pongers first for half of the pairs, pingers first for the rest */
        int a = (int)(i & 1);
        cr_assert_eq(conc_go(&g[2 * i + a], pinger, &pairs[i]), 0, "spawn %ld", i);
        cr_assert_eq(conc_go(&g[2 * i + 1 - a], ponger, &pairs[i]), 0);
    }
    cr_assert_eq(conc_green_joinall(g, (size_t)npairs * 2, 60.0), 0, "pairs done: %ld of %ld",
                 atomic_load(&done_pairs), npairs);
    double dt = tu_now() - t0;
    cr_assert_eq(atomic_load(&errors), 0);
    cr_assert_eq(atomic_load(&done_pairs), npairs);
    cr_log_info("%ld green threads, %ld round trips each: %.3fs (%.0f ns per queue handoff)", 2 * npairs, rounds, dt,
                dt * 1e9 / (double)(npairs * rounds * 2));
    for (long i = 0; i < 2 * npairs; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
    for (long i = 0; i < npairs; i++) {
        cr_assert_eq(conc_queue_free(pairs[i].ping, NULL), 0);
        cr_assert_eq(conc_queue_free(pairs[i].pong, NULL), 0);
    }
    free(pairs);
    free(g);
}

/* All pairs share one pool of queues: green threads of one hub and an OS
 * thread's green threads hand items to each other through them. */
typedef struct {
    conc_queue_t *q[2];
    long n;
    atomic_long sum;
} cross_t;

static void *cross_producer(void *arg)
{
    cross_t *c = arg;
    for (long i = 1; i <= c->n; i++)
        if (conc_queue_put(c->q[i & 1], PTR(i), true, 30.0) != 0) {
            atomic_fetch_add(&errors, 1);
            break;
        }
    return NULL;
}

static void *cross_consumer(void *arg)
{
    cross_t *c = arg;
    for (long i = 1; i <= c->n; i++) {
        void *it;
        if (conc_queue_get(c->q[i & 1], &it, true, 30.0) != 0) {
            atomic_fetch_add(&errors, 1);
            break;
        }
        atomic_fetch_add(&c->sum, (long)(uintptr_t)it);
    }
    return NULL;
}

static void *consumer_hub(void *arg)
{
    cross_t *c = arg;
    conc_green_t *g[50];
    int rc = 0;
    for (int i = 0; i < 50; i++)
        if ((rc = conc_go(&g[i], cross_consumer, c)) != 0)
            return PTR(rc);
    rc = conc_green_joinall(g, 50, 60.0);
    for (int i = 0; i < 50; i++)
        conc_green_free(g[i]);
    return PTR(rc);
}

Test(green_stress, green_threads_of_two_hubs_share_queues, .timeout = 120)
{
    atomic_store(&errors, 0);
    static cross_t c;
    c.n = tu_iters(2000);
    atomic_store(&c.sum, 0);
    cr_assert_eq(conc_queue_new(&c.q[0], CONC_FIFO, 4), 0);
    cr_assert_eq(conc_queue_new(&c.q[1], CONC_FIFO, 4), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, consumer_hub, &c), 0);
    conc_green_t *g[50];
    for (int i = 0; i < 50; i++)
        cr_assert_eq(conc_go(&g[i], cross_producer, &c), 0);
    cr_assert_eq(conc_green_joinall(g, 50, 60.0), 0);
    void *r = PTR(1);
    pthread_join(th, &r);
    cr_assert_eq((int)(intptr_t)r, 0);
    cr_assert_eq(atomic_load(&errors), 0);
    cr_assert_eq(atomic_load(&c.sum), 50 * (c.n * (c.n + 1) / 2));
    for (int i = 0; i < 50; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
    conc_queue_free(c.q[0], NULL);
    conc_queue_free(c.q[1], NULL);
}

/* ---------------------------------------------------------- 1M idle */

static conc_event_t wake = CONC_EVENT_INIT;
static atomic_long parked, woke;

static void *idle(void *arg)
{
    (void)arg;
    atomic_fetch_add(&parked, 1);
    /* forever: the test's own waits carry the timeouts */
    if (conc_event_wait(&wake, CONC_FOREVER) == 0)
        atomic_fetch_add(&woke, 1);
    return NULL;
}

/* Sane: well above the ~4 KiB target, far below a committed 128 KiB stack.
 * Sanitizers add shadow memory and fake stacks per green thread. */
#define MAX_RSS_PER_GREEN (TU_TSAN ? 4096 * 1024 : TU_SANITIZED ? 96 * 1024 : 16 * 1024)

Test(green_stress, one_million_idle_green_threads, .timeout = 300)
{
    /* sanitized: 1% (10k), to keep their per-thread overhead bounded */
    long n = TU_SANITIZED ? tu_iters(100000) : tu_iters(1000000);
    if (TU_TSAN && n > TSAN_MAX_ALIVE)
        n = TSAN_MAX_ALIVE;
    long mmc = max_map_count();
    conc_green_t **g = calloc((size_t)n, sizeof *g);
    cr_assert_not_null(g);
    atomic_store(&parked, 0);
    atomic_store(&woke, 0);
    conc_event_clear(&wake);
    long maps0 = count_maps();
    long rss0 = rss_bytes();
    double t0 = tu_now();
    long made = 0;
    /* grow in stages; check the per-thread cost before going further */
    for (long stage = n / 100 > 0 ? n / 100 : 1; made < n; stage *= 10) {
        long upto = stage < n ? stage : n;
        for (; made < upto; made++) {
            int rc = conc_go(&g[made], idle, NULL);
            if (rc != 0) {
                long m = count_maps();
                /* free what was made before failing */
                conc_event_set(&wake);
                conc_green_joinall(g, (size_t)made, 60.0);
                for (long i = 0; i < made; i++)
                    conc_green_free(g[i]);
                free(g);
                cr_assert_fail("conc_go #%ld failed: %s (maps %ld, vm.max_map_count %ld)", made,
                               conc_strerror(rc), m, mmc);
            }
        }
        /* let them all run to their wait */
        cr_assert(TU_WAIT_UNTIL((conc_sleep(0), atomic_load(&parked) == made), 60.0), "parked %ld of %ld",
                  atomic_load(&parked), made);
        long per = (rss_bytes() - rss0) / made;
        if ((made >= 10000 || made == n) && per > MAX_RSS_PER_GREEN) {
            conc_event_set(&wake);
            conc_green_joinall(g, (size_t)made, 60.0);
            for (long i = 0; i < made; i++)
                conc_green_free(g[i]);
            free(g);
            cr_assert_fail("%ld bytes of RSS per idle green thread with %ld alive (limit %d)", per, made,
                           MAX_RSS_PER_GREEN);
        }
    }
    double t_spawn = tu_now() - t0;
    long rss1 = rss_bytes();
    long maps1 = count_maps();
    long per = (rss1 - rss0) / n;
    cr_log_info("%ld idle green threads: %.2fs to spawn and park, %ld bytes RSS each, %ld -> %ld mappings "
                "(vm.max_map_count %ld)",
                n, t_spawn, per, maps0, maps1, mmc);
    cr_assert_leq(per, MAX_RSS_PER_GREEN);
    if (mmc > 0)
        cr_assert_lt(maps1, mmc, "mappings %ld reach vm.max_map_count %ld", maps1, mmc);
    /* Guard pages cost mappings only while the budget allows (green.h):
     * the rest of the process must keep plenty of headroom. */
    if (mmc > 0)
        cr_assert_lt(maps1, mmc - mmc / 4, "mappings %ld leave little of vm.max_map_count %ld", maps1, mmc);

    for (long i = 0; i < n; i += n / 7 + 1)
        cr_assert_not(conc_green_dead(g[i]));
    t0 = tu_now();
    cr_assert_eq(conc_event_set(&wake), 0);
    cr_assert_eq(conc_green_joinall(g, (size_t)n, 120.0), 0, "woke %ld of %ld", atomic_load(&woke), n);
    double t_join = tu_now() - t0;
    cr_assert_eq(atomic_load(&woke), n);
    for (long i = 0; i < n; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
    free(g);
    cr_log_info("woken and joined in %.2fs", t_join);
}
