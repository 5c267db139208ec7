/*
 * tour.c — a guided tour of conc, one chapter per Python module.
 *
 *     tour                 run every chapter
 *     tour threads         run one chapter
 *     tour threads/race    run one section of a chapter
 *     tour --list          list chapters and sections
 *
 * Adding a chapter: write its section functions, list them in a
 * `struct section[]`, and add one line to `chapters[]` below. Each section
 * prints what it shows and returns 0 if everything behaved as promised.
 */
#define _GNU_SOURCE
#include <conc.h>

#include <ctype.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct section {
    const char *name;
    const char *python;  /* the Python concept it mirrors */
    int (*run)(void);
    const char *snippet; /* the same thing in Python, one line */
};

struct chapter {
    const char *name;
    const char *title;
    const struct section *sections;
};

/* Print a failed check and count it. */
static int failures;
#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            printf("    !! check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);          \
            failures++;                                                                      \
        }                                                                                    \
    } while (0)

/* Some sections show an error report on purpose (an excepthook's line, the
 * deadlock detector's report...). It goes to stderr, as in a real program;
 * these markers label it there too, so a piped or logged stderr does not
 * read as a failure. */
static void expected_stderr_begin(const char *what)
{
    fflush(stdout);
    fprintf(stderr, "    [expected error output, shown on purpose: %s]\n", what);
}

static void expected_stderr_end(void)
{
    fflush(stderr);
    fprintf(stderr, "    [end of the expected error output]\n");
}

/* Give other threads a chance to run right now (the "GIL switch" that makes
 * races visible). */
static void yield_now(void) { sched_yield(); }

/* ================================================ chapter: threads */

/* ---- threads/names: Thread(name=...), current_thread, enumerate ---- */

static void *show_self(void *arg)
{
    conc_event_t *go = arg;
    conc_thread_t *me = conc_current_thread();
    printf("    in %-9s ident=%lu native_id=%ld daemon=%s\n", conc_thread_name(me),
           conc_get_ident(), conc_get_native_id(), conc_thread_daemon(me) ? "yes" : "no");
    conc_event_wait(go, CONC_FOREVER); /* stay alive until main has looked */
    return NULL;
}

static int sec_names(void)
{
    conc_event_t go = CONC_EVENT_INIT;
    conc_thread_t *t[3];
    const char *names[3] = {"reader", "writer", "logger"};
    printf("  main_thread() is \"%s\", current_thread() here is \"%s\"\n",
           conc_thread_name(conc_main_thread()), conc_thread_name(conc_current_thread()));
    for (int i = 0; i < 3; i++) {
        conc_thread_opts_t o = {.name = names[i], .daemon = i == 2};
        CHECK(conc_thread_spawn(&t[i], show_self, &go, &o) == 0);
    }
    conc_sleep_thread(0.05); /* let each print its line */

    conc_thread_t *all[16];
    size_t n = conc_thread_enumerate(all, 16);
    printf("  active_count() = %zu; enumerate():\n", conc_active_count());
    for (size_t i = 0; i < n && i < 16; i++) {
        printf("    %-12s alive=%s ident=%lu native_id=%ld\n", conc_thread_name(all[i]),
               conc_thread_is_alive(all[i]) ? "yes" : "no", conc_thread_ident(all[i]),
               conc_thread_native_id(all[i]));
        conc_thread_free(all[i]);
    }
    CHECK(n >= 4);

    conc_event_set(&go);
    for (int i = 0; i < 3; i++) {
        CHECK(conc_thread_join(t[i], CONC_FOREVER, NULL) == 0);
        CHECK(!conc_thread_is_alive(t[i]));
        conc_thread_free(t[i]);
    }
    printf("  joined all three; is_alive() is now false for each\n");
    return 0;
}

/* ---- threads/race: interleaved output and the lost update ---- */

enum { RACE_THREADS = 4, RACE_ITERS = 2000 };
static const char *const words[RACE_THREADS] = {"alpha ", "bravo ", "charlie ", "delta "};

struct race {
    atomic_long counter; /* loaded and stored separately: a logical race */
    conc_lock_t lock;
    bool use_lock;
    conc_event_t start;
    char out[64]; /* the shared "terminal" */
    atomic_int pos;
};

struct racer {
    struct race *r;
    int id;
};

static void *race_worker(void *arg)
{
    struct racer *me = arg;
    struct race *r = me->r;
    conc_event_wait(&r->start, CONC_FOREVER);
    /* print(word), one character at a time */
    if (r->use_lock)
        conc_lock_acquire(&r->lock, true, CONC_FOREVER);
    for (const char *c = words[me->id]; *c; c++) {
        r->out[atomic_fetch_add(&r->pos, 1)] = *c;
        yield_now();
    }
    if (r->use_lock)
        conc_lock_release(&r->lock);
    /* counter += 1, spelled out the way Python's bytecode does it */
    for (int i = 0; i < RACE_ITERS; i++) {
        if (r->use_lock)
            conc_lock_acquire(&r->lock, true, CONC_FOREVER);
        long v = atomic_load_explicit(&r->counter, memory_order_relaxed);
        if (i % 64 == 0)
            yield_now(); /* a thread switch between the read and the write */
        atomic_store_explicit(&r->counter, v + 1, memory_order_relaxed);
        if (r->use_lock)
            conc_lock_release(&r->lock);
    }
    return NULL;
}

static long run_race(bool use_lock, char *out)
{
    static struct race r;
    memset(&r, 0, sizeof r);
    conc_lock_init(&r.lock);
    conc_event_init(&r.start);
    r.use_lock = use_lock;
    struct racer rs[RACE_THREADS];
    conc_thread_t *t[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++) {
        rs[i] = (struct racer){&r, i};
        CHECK(conc_thread_spawn(&t[i], race_worker, &rs[i], NULL) == 0);
    }
    conc_event_set(&r.start);
    for (int i = 0; i < RACE_THREADS; i++) {
        conc_thread_join(t[i], CONC_FOREVER, NULL);
        conc_thread_free(t[i]);
    }
    strcpy(out, r.out);
    return atomic_load(&r.counter);
}

static int sec_race(void)
{
    char out[64];
    long expect = (long)RACE_THREADS * RACE_ITERS;
    printf("  %d threads each print a word, one character at a time, then do\n"
           "  `counter += 1` %d times (read, a thread switch now and then, write)\n",
           RACE_THREADS, RACE_ITERS);
    long lost = run_race(false, out);
    printf("  without a lock:\n    printed: \"%s\"\n", out);
    printf("    counter = %ld, expected %ld -> %ld updates lost\n", lost, expect, expect - lost);
    if (lost == expect)
        printf("    (no update was lost this time: the scheduler was kind)\n");
    long ok = run_race(true, out);
    printf("  with a Lock around each print and each increment:\n    printed: \"%s\"\n", out);
    printf("    counter = %ld, expected %ld -> correct\n", ok, expect);
    CHECK(ok == expect);
    return 0;
}

/* ---- threads/rlock: re-entering an RLock ---- */

static conc_rlock_t tree_lock = CONC_RLOCK_INIT;

static int count_nodes(int depth)
{
    conc_rlock_acquire(&tree_lock, true, CONC_FOREVER);
    printf("    %*sdepth %d: rlock level %lu\n", depth * 2, "", depth,
           conc_rlock_level(&tree_lock));
    int n = 1;
    if (depth < 3)
        n += count_nodes(depth + 1); /* takes tree_lock again */
    conc_rlock_release(&tree_lock);
    return n;
}

static void *rlock_intruder(void *arg)
{
    (void)arg;
    int rc = conc_rlock_release(&tree_lock);
    printf("  another thread calling release() gets %s, as in Python\n", conc_errname(rc));
    return NULL;
}

static int sec_rlock(void)
{
    printf("  a recursive function takes the same RLock at every level:\n");
    int n = count_nodes(0);
    CHECK(n == 4);
    CHECK(!conc_rlock_is_owned(&tree_lock));
    conc_rlock_acquire(&tree_lock, true, CONC_FOREVER);
    conc_thread_t *t;
    conc_thread_spawn(&t, rlock_intruder, NULL, NULL);
    conc_thread_join(t, CONC_FOREVER, NULL);
    conc_thread_free(t);
    conc_rlock_release(&tree_lock);
    return 0;
}

/* ---- threads/condition: producer / consumer ---- */

enum { BOX_CAP = 3, ITEMS = 10 };

struct box {
    conc_lock_t lock;
    conc_cond_t not_empty, not_full;
    int items[BOX_CAP];
    int head, len;
    bool done;
};

static void *producer(void *arg)
{
    struct box *b = arg;
    for (int i = 1; i <= ITEMS; i++) {
        conc_lock_acquire(&b->lock, true, CONC_FOREVER);
        while (b->len == BOX_CAP)
            conc_cond_wait(&b->not_full, CONC_FOREVER);
        b->items[(b->head + b->len++) % BOX_CAP] = i * i;
        conc_cond_notify(&b->not_empty, 1);
        conc_lock_release(&b->lock);
    }
    conc_lock_acquire(&b->lock, true, CONC_FOREVER);
    b->done = true;
    conc_cond_notify_all(&b->not_empty);
    conc_lock_release(&b->lock);
    return NULL;
}

static bool box_ready(void *arg)
{
    struct box *b = arg;
    return b->len > 0 || b->done;
}

static int sec_condition(void)
{
    struct box b = {.head = 0};
    conc_lock_init(&b.lock);
    conc_cond_init(&b.not_empty, &b.lock);
    conc_cond_init(&b.not_full, &b.lock);
    conc_thread_t *t;
    conc_thread_spawn(&t, producer, &b, NULL);
    printf("  producer puts squares into a box of %d slots; consumer takes them:\n   ",
           BOX_CAP);
    long sum = 0;
    int got = 0;
    for (;;) {
        conc_lock_acquire(&b.lock, true, CONC_FOREVER);
        conc_cond_wait_for(&b.not_empty, box_ready, &b, CONC_FOREVER);
        if (b.len == 0 && b.done) {
            conc_lock_release(&b.lock);
            break;
        }
        int v = b.items[b.head];
        b.head = (b.head + 1) % BOX_CAP;
        b.len--;
        conc_cond_notify(&b.not_full, 1);
        conc_lock_release(&b.lock);
        printf(" %d", v);
        sum += v;
        got++;
    }
    printf("\n  consumed %d items, sum %ld (expected 385)\n", got, sum);
    conc_thread_join(t, CONC_FOREVER, NULL);
    conc_thread_free(t);
    CHECK(got == ITEMS && sum == 385);
    return 0;
}

/* ---- threads/semaphore: at most N at a time ---- */

enum { SEM_LIMIT = 3, SEM_WORKERS = 8 };
static conc_semaphore_t pool_slots = CONC_BOUNDED_SEMAPHORE_INIT(SEM_LIMIT);
static atomic_int inside, max_inside;

static void *use_slot(void *arg)
{
    (void)arg;
    conc_semaphore_acquire(&pool_slots, true, CONC_FOREVER);
    int now = atomic_fetch_add(&inside, 1) + 1;
    int m = atomic_load(&max_inside);
    while (now > m && !atomic_compare_exchange_weak(&max_inside, &m, now)) {
    }
    conc_sleep_thread(0.02); /* "download" */
    atomic_fetch_sub(&inside, 1);
    conc_semaphore_release(&pool_slots, 1);
    return NULL;
}

static int sec_semaphore(void)
{
    conc_thread_t *t[SEM_WORKERS];
    for (int i = 0; i < SEM_WORKERS; i++)
        conc_thread_spawn(&t[i], use_slot, NULL, NULL);
    for (int i = 0; i < SEM_WORKERS; i++) {
        conc_thread_join(t[i], CONC_FOREVER, NULL);
        conc_thread_free(t[i]);
    }
    printf("  %d workers share a BoundedSemaphore(%d): max concurrency observed = %d\n",
           SEM_WORKERS, SEM_LIMIT, atomic_load(&max_inside));
    int rc = conc_semaphore_release(&pool_slots, 1);
    printf("  one release() too many on the BoundedSemaphore gets %s, as in Python\n",
           conc_errname(rc));
    CHECK(atomic_load(&max_inside) <= SEM_LIMIT && rc == CONC_EINVAL);
    return 0;
}

/* ---- threads/event: one set() releases every waiter ---- */

static conc_event_t ready = CONC_EVENT_INIT;

static void *wait_ready(void *arg)
{
    double t0 = *(double *)arg;
    int rc = conc_event_wait(&ready, 5.0);
    printf("    %s released after %3.0f ms (wait returned %s)\n",
           conc_thread_name(conc_current_thread()), (conc_monotonic() - t0) * 1e3,
           rc == 0 ? "True" : "False");
    return NULL;
}

static int sec_event(void)
{
    double t0 = conc_monotonic();
    conc_thread_t *t[3];
    char name[32];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "waiter-%d", i);
        conc_thread_opts_t o = {.name = name};
        conc_thread_spawn(&t[i], wait_ready, &t0, &o);
    }
    printf("  three threads wait(); main sleeps 100 ms, then set():\n");
    conc_sleep_thread(0.1);
    conc_event_set(&ready);
    for (int i = 0; i < 3; i++) {
        conc_thread_join(t[i], CONC_FOREVER, NULL);
        conc_thread_free(t[i]);
    }
    conc_event_clear(&ready);
    int rc = conc_event_wait(&ready, 0.01);
    printf("  after clear(), wait(0.01) returns %s\n", rc == 0 ? "True" : "False");
    CHECK(rc == CONC_ETIMEDOUT);
    return 0;
}

/* ---- threads/barrier: parties meet, an action runs once per cycle ---- */

static conc_barrier_t meet;
static atomic_int cycles;

static void cycle_done(void *arg)
{
    (void)arg;
    printf("    -- barrier action: cycle %d complete, all 3 parties arrived\n",
           atomic_fetch_add(&cycles, 1) + 1);
}

static void *runner(void *arg)
{
    long id = (long)arg;
    for (int lap = 0; lap < 3; lap++) {
        conc_sleep_thread(0.005 * (double)id); /* arrive at different times */
        int idx;
        conc_barrier_wait(&meet, CONC_BARRIER_DEFAULT, &idx);
    }
    return NULL;
}

static int sec_barrier(void)
{
    conc_barrier_init(&meet, 3, cycle_done, NULL, 5.0);
    printf("  3 threads run 3 laps, waiting for each other at the end of each:\n");
    conc_thread_t *t[3];
    for (long i = 0; i < 3; i++)
        conc_thread_spawn(&t[i], runner, (void *)i, NULL);
    for (int i = 0; i < 3; i++) {
        conc_thread_join(t[i], CONC_FOREVER, NULL);
        conc_thread_free(t[i]);
    }
    int rc = conc_barrier_wait(&meet, 0.02, NULL);
    printf("  a lone wait(timeout=0.02) breaks it: %s; broken() = %s\n", conc_errname(rc),
           conc_barrier_broken(&meet) ? "True" : "False");
    CHECK(atomic_load(&cycles) == 3 && rc == CONC_EBROKEN);
    return 0;
}

/* ---- threads/timer: run later, in order, unless cancelled ---- */

static char fired_order[8];
static atomic_int fired_n;

static void ring(void *arg)
{
    fired_order[atomic_fetch_add(&fired_n, 1)] = *(const char *)arg;
}

static int sec_timer(void)
{
    static const char labels[] = "EDCBA";
    static const double delays[] = {0.10, 0.08, 0.06, 0.04, 0.02};
    conc_timer_t *t[5];
    printf("  start timers E D C B A with delays 100 80 60 40 20 ms; cancel C\n");
    for (int i = 0; i < 5; i++)
        conc_timer_start(&t[i], delays[i], ring, (void *)&labels[i]);
    conc_timer_cancel(t[2]);
    for (int i = 0; i < 5; i++)
        conc_timer_join(t[i], CONC_FOREVER);
    printf("  fired in order: %s; C fired? %s\n", fired_order,
           conc_timer_fired(t[2]) ? "yes" : "no");
    CHECK(strcmp(fired_order, "ABDE") == 0 && !conc_timer_fired(t[2]));
    for (int i = 0; i < 5; i++)
        conc_timer_free(t[i]);
    return 0;
}

/* ---- threads/local: one value per thread ---- */

static conc_local_t *request_id;

static void forget(void *v)
{
    printf("    thread ended: its local value %ld is freed by the destructor\n", *(long *)v);
    free(v);
}

static void *handle_request(void *arg)
{
    long *mine = malloc(sizeof *mine);
    *mine = (long)arg;
    conc_local_set(request_id, mine, NULL);
    conc_sleep_thread(0.0001 * (double)*mine); /* the others set theirs meanwhile */
    printf("    %s sees request_id = %ld\n", conc_thread_name(conc_current_thread()),
           *(long *)conc_local_get(request_id));
    return NULL;
}

static int sec_local(void)
{
    conc_local_new(&request_id, forget);
    conc_thread_t *t[3];
    for (long i = 1; i <= 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "handler-%ld", i);
        conc_thread_opts_t o = {.name = name};
        conc_thread_spawn(&t[i - 1], handle_request, (void *)(i * 100), &o);
    }
    for (int i = 0; i < 3; i++) {
        conc_thread_join(t[i], CONC_FOREVER, NULL);
        conc_thread_free(t[i]);
    }
    printf("  main's own value is still %s\n", conc_local_get(request_id) ? "set" : "NULL");
    CHECK(conc_local_get(request_id) == NULL);
    conc_local_free(request_id);
    return 0;
}

/* ---- threads/excepthook: a thread that "raises" ---- */

static void *parse_config(void *arg)
{
    (void)arg;
    return conc_fail(CONC_EINVAL, "line %d: expected '=', got '%s'", 7, "::");
}

static atomic_int hook_calls;

static void my_hook(conc_thread_t *t, int code, const char *msg, void *arg)
{
    printf("    my excepthook [%s]: thread \"%s\" raised %s: %s\n", (const char *)arg,
           conc_thread_name(t), conc_errname(code), msg);
    atomic_fetch_add(&hook_calls, 1);
}

static int sec_excepthook(void)
{
    conc_excepthook_fn old = conc_set_excepthook(my_hook, "tour");
    conc_thread_opts_t o = {.name = "config-loader"};
    conc_thread_t *t;
    printf("  a thread function returns conc_fail(...) -- Python's raise:\n");
    conc_thread_spawn(&t, parse_config, NULL, &o);
    conc_thread_join(t, CONC_FOREVER, NULL);
    conc_thread_free(t);
    conc_set_excepthook(old, NULL);
    CHECK(atomic_load(&hook_calls) == 1);
    printf("  with the default hook back, the same failure is a line on stderr:\n");
    expected_stderr_begin("the default excepthook reports a failed thread");
    conc_thread_spawn(&t, parse_config, NULL, &o);
    conc_thread_join(t, CONC_FOREVER, NULL);
    conc_thread_free(t);
    expected_stderr_end();
    return 0;
}

static const struct section threads_sections[] = {
    {"names", "Thread(name=...), current_thread, main_thread, enumerate, active_count",
     sec_names, "Thread(target=f, name='reader').start(); threading.enumerate()"},
    {"race", "the lost update of `counter += 1`, then `with lock:`", sec_race,
     "with lock: counter += 1"},
    {"rlock", "threading.RLock re-entered by its owner", sec_rlock,
     "with rlock: walk(node.child)  # walk() takes rlock again"},
    {"condition", "threading.Condition: producer / consumer", sec_condition,
     "with cond: cond.wait_for(lambda: items); items.pop()"},
    {"semaphore", "threading.BoundedSemaphore limiting concurrency", sec_semaphore,
     "with slots: download()"},
    {"event", "threading.Event releasing waiting threads", sec_event,
     "ready.wait(5.0)  ...  ready.set()"},
    {"barrier", "threading.Barrier with an action per cycle", sec_barrier,
     "b = Barrier(3, action=report); b.wait()"},
    {"timer", "threading.Timer: ordered firing, cancel", sec_timer,
     "t = Timer(0.1, ring, args=('E',)); t.start(); t.cancel()"},
    {"local", "threading.local", sec_local, "ctx = threading.local(); ctx.request_id = 100"},
    {"excepthook", "threading.excepthook", sec_excepthook,
     "threading.excepthook = my_hook; raise ValueError(...)"},
    {NULL, NULL, NULL, NULL},
};

/* ================================================ chapter: queue */

/* Items are void *: small integers travel as (void *)(intptr_t)n. */
#define JOB(n) ((void *)(intptr_t)(n))
#define JOB_NO(p) ((int)(intptr_t)(p))

static const char *me(void) { return conc_thread_name(conc_current_thread()); }

static conc_thread_t *spawn_named(void *(*fn)(void *), void *arg, const char *name)
{
    conc_thread_t *t = NULL;
    conc_thread_opts_t o = {.name = name};
    CHECK(conc_thread_spawn(&t, fn, arg, &o) == 0);
    return t;
}

static void join_free(conc_thread_t *t)
{
    CHECK(conc_thread_join(t, CONC_FOREVER, NULL) == 0);
    conc_thread_free(t);
}

/* ---- queue/bounded: a bounded buffer, a slow consumer, back-pressure ---- */

enum { BP_MAXSIZE = 3, BP_JOBS = 8 };
#define BP_WORK 0.05 /* seconds the consumer spends on each job */

struct bounded {
    conc_queue_t *q;
    double t0;
    double longest_put; /* written by the producer only */
    size_t max_qsize;   /* written by the producer only */
    int order[BP_JOBS]; /* written by the consumer only */
    int got;
    int last_rc;
};

static void *bp_producer(void *arg)
{
    struct bounded *s = arg;
    for (int i = 1; i <= BP_JOBS; i++) {
        double t = conc_monotonic();
        CHECK(conc_queue_put(s->q, JOB(i), true, CONC_FOREVER) == 0);
        double waited = conc_monotonic() - t;
        size_t n = conc_queue_qsize(s->q);
        if (waited > s->longest_put)
            s->longest_put = waited;
        if (n > s->max_qsize)
            s->max_qsize = n;
        char what[40];
        if (waited < 0.001)
            snprintf(what, sizeof what, "put(job %d): at once", i);
        else
            snprintf(what, sizeof what, "put(job %d): blocked %.0f ms", i, waited * 1e3);
        printf("    %4.0f ms  %-10s %-32s qsize=%zu\n", (conc_monotonic() - s->t0) * 1e3, me(),
               what, n);
    }
    return NULL;
}

static void *bp_consumer(void *arg)
{
    struct bounded *s = arg;
    for (;;) {
        void *job;
        int rc = conc_queue_get(s->q, &job, true, CONC_FOREVER);
        if (rc != 0) {
            s->last_rc = rc;
            printf("    %4.0f ms  %-10s get() raised %s: no more work, exit\n",
                   (conc_monotonic() - s->t0) * 1e3, me(), conc_errname(rc));
            return NULL;
        }
        char what[40];
        snprintf(what, sizeof what, "get() -> job %d, working...", JOB_NO(job));
        printf("    %4.0f ms  %-10s %-32s qsize=%zu\n", (conc_monotonic() - s->t0) * 1e3, me(),
               what, conc_queue_qsize(s->q));
        conc_sleep_thread(BP_WORK); /* the slow part */
        if (s->got < BP_JOBS)
            s->order[s->got++] = JOB_NO(job);
        CHECK(conc_queue_task_done(s->q) == 0);
    }
}

static int sec_bounded(void)
{
    struct bounded s = {.last_rc = 0};
    printf("  Producer and consumer never call each other: they share only q, a bounded\n"
           "  buffer of %d slots. The producer has %d jobs; the consumer needs %.0f ms per\n"
           "  job, so the buffer fills up and put() blocks until a slot frees: the slow\n"
           "  side sets the pace (back-pressure), and memory stays bounded.\n",
           BP_MAXSIZE, BP_JOBS, BP_WORK * 1e3);
    CHECK(conc_queue_new(&s.q, CONC_FIFO, BP_MAXSIZE) == 0);
    s.t0 = conc_monotonic();
    conc_thread_t *c = spawn_named(bp_consumer, &s, "consumer");
    conc_thread_t *p = spawn_named(bp_producer, &s, "producer");
    join_free(p);
    printf("    %4.0f ms  %-10s producer is done; q.join() waits for every task_done()\n",
           (conc_monotonic() - s.t0) * 1e3, me());
    CHECK(conc_queue_join(s.q, 10.0) == 0);
    printf("    %4.0f ms  %-10s q.join() returned: unfinished_tasks=%zu; q.shutdown()\n",
           (conc_monotonic() - s.t0) * 1e3, me(), conc_queue_unfinished_tasks(s.q));
    CHECK(conc_queue_unfinished_tasks(s.q) == 0);
    CHECK(conc_queue_shutdown(s.q, false, NULL) == 0);
    join_free(c);

    bool in_order = s.got == BP_JOBS;
    for (int i = 0; i < s.got; i++)
        in_order = in_order && s.order[i] == i + 1;
    printf("  consumed %d jobs in the order put: %s; longest put() wait %.0f ms;\n"
           "  qsize never above maxsize: %s (max seen %zu)\n",
           s.got, in_order ? "yes" : "NO", s.longest_put * 1e3,
           s.max_qsize <= BP_MAXSIZE ? "yes" : "NO", s.max_qsize);
    CHECK(in_order);
    CHECK(s.longest_put >= BP_WORK / 2); /* the producer really was held back */
    CHECK(s.max_qsize <= BP_MAXSIZE);
    CHECK(s.last_rc == CONC_ESHUTDOWN);
    CHECK(conc_queue_free(s.q, NULL) == 0);
    return 0;
}

/* ---- queue/join: task_done() / join() across a pool of workers ---- */

enum { JOIN_WORKERS = 3, JOIN_JOBS = 12 };

struct pool {
    conc_queue_t *q;
    atomic_long sum;
    atomic_int done;
    atomic_int per_worker[JOIN_WORKERS];
};

struct worker_arg {
    struct pool *pool;
    int id;
};

static void *join_worker(void *arg)
{
    struct worker_arg *w = arg;
    void *job;
    while (conc_queue_get(w->pool->q, &job, true, CONC_FOREVER) == 0) {
        long n = JOB_NO(job);
        conc_sleep_thread(0.01); /* "resize image n" */
        atomic_fetch_add(&w->pool->sum, n * n);
        atomic_fetch_add(&w->pool->done, 1);
        atomic_fetch_add(&w->pool->per_worker[w->id], 1);
        conc_queue_task_done(w->pool->q); /* after the result is stored */
    }
    return NULL; /* get() raised ShutDown */
}

static int sec_join(void)
{
    static struct pool pool;
    memset(&pool, 0, sizeof pool);
    CHECK(conc_queue_new(&pool.q, CONC_FIFO, 0) == 0); /* Queue(): unbounded */
    struct worker_arg args[JOIN_WORKERS];
    conc_thread_t *t[JOIN_WORKERS];
    for (int i = 0; i < JOIN_WORKERS; i++) {
        char name[32];
        snprintf(name, sizeof name, "worker-%d", i + 1);
        args[i] = (struct worker_arg){&pool, i};
        t[i] = spawn_named(join_worker, &args[i], name);
    }
    double t0 = conc_monotonic();
    long expect = 0;
    for (int n = 1; n <= JOIN_JOBS; n++) {
        CHECK(conc_queue_put(pool.q, JOB(n), true, CONC_FOREVER) == 0);
        expect += (long)n * n;
    }
    printf("  main put %d jobs for %d workers; unfinished_tasks = %zu right after\n", JOIN_JOBS,
           JOIN_WORKERS, conc_queue_unfinished_tasks(pool.q));
    printf("  (get() does not finish a job: task_done() does, once the work is stored)\n");
    int rc = conc_queue_join(pool.q, 10.0);
    printf("  q.join() returned %s after %.0f ms: %d jobs done, sum of squares %ld "
           "(expected %ld)\n",
           conc_errname(rc), (conc_monotonic() - t0) * 1e3, atomic_load(&pool.done),
           atomic_load(&pool.sum), expect);
    printf("  jobs per worker:");
    for (int i = 0; i < JOIN_WORKERS; i++)
        printf(" worker-%d=%d", i + 1, atomic_load(&pool.per_worker[i]));
    printf("\n");
    CHECK(rc == 0);
    CHECK(atomic_load(&pool.done) == JOIN_JOBS && atomic_load(&pool.sum) == expect);
    conc_queue_shutdown(pool.q, false, NULL); /* the workers' get() raises ShutDown */
    for (int i = 0; i < JOIN_WORKERS; i++)
        join_free(t[i]);
    printf("  q.shutdown(): the idle workers' get() raised ShutDown and all %d returned\n",
           JOIN_WORKERS);
    rc = conc_queue_task_done(pool.q);
    printf("  one task_done() too many: %s (\"task_done() called too many times\")\n",
           conc_errname(rc));
    CHECK(rc == CONC_EINVAL);
    CHECK(conc_queue_free(pool.q, NULL) == 0);
    return 0;
}

/* ---- queue/shutdown: Queue.shutdown() (3.13), graceful and immediate ---- */

enum { SD_CONSUMERS = 3, SD_ITEMS = 7 };

struct sd_consumer {
    conc_queue_t *q;
    int got;
    int rc;
};

static void *sd_consume(void *arg)
{
    struct sd_consumer *c = arg;
    void *item;
    while ((c->rc = conc_queue_get(c->q, &item, true, 5.0)) == 0) {
        c->got++;
        conc_queue_task_done(c->q);
        conc_sleep_thread(0.005);
    }
    printf("    %s: took %d item(s), then get() raised %s\n", me(), c->got, conc_errname(c->rc));
    return NULL;
}

static void *sd_blocked_put(void *arg)
{
    conc_queue_t *q = arg;
    int rc = conc_queue_put(q, JOB(2), true, 5.0); /* the queue is full: blocks */
    printf("    %s: its blocked put() raised %s\n", me(), conc_errname(rc));
    return (void *)(intptr_t)rc;
}

static void *sd_joiner(void *arg)
{
    conc_queue_t *q = arg;
    int rc = conc_queue_join(q, 5.0);
    printf("    %s: its join() returned %s\n", me(), conc_errname(rc));
    return (void *)(intptr_t)rc;
}

static atomic_int discarded;

static void discard_order(void *item)
{
    printf("    discard(\"%s\") frees it: the queue never owned it\n", (char *)item);
    free(item);
    atomic_fetch_add(&discarded, 1);
}

static int sec_shutdown(void)
{
    /* graceful: consumers drain what is left, then get ShutDown */
    conc_queue_t *q;
    CHECK(conc_queue_new(&q, CONC_FIFO, 0) == 0);
    struct sd_consumer cs[SD_CONSUMERS];
    conc_thread_t *t[SD_CONSUMERS];
    for (int i = 0; i < SD_CONSUMERS; i++) {
        char name[32];
        snprintf(name, sizeof name, "consumer-%d", i + 1);
        cs[i] = (struct sd_consumer){q, 0, 0};
        t[i] = spawn_named(sd_consume, &cs[i], name);
    }
    conc_sleep_thread(0.02); /* let them block in get() */
    for (int i = 1; i <= SD_ITEMS; i++)
        CHECK(conc_queue_put(q, JOB(i), true, CONC_FOREVER) == 0);
    printf("  shutdown(): %d consumers, %d items put, then q.shutdown() at once\n",
           SD_CONSUMERS, SD_ITEMS);
    conc_queue_shutdown(q, false, NULL);
    int rc = conc_queue_put(q, JOB(99), true, CONC_FOREVER);
    printf("    main: put() after shutdown raised %s\n", rc == 0 ? "nothing" : conc_errname(rc));
    CHECK(rc == CONC_ESHUTDOWN);
    int total = 0;
    for (int i = 0; i < SD_CONSUMERS; i++) {
        join_free(t[i]);
        total += cs[i].got;
        CHECK(cs[i].rc == CONC_ESHUTDOWN);
    }
    printf("  every item was still delivered (%d of %d) and every consumer stopped cleanly\n",
           total, SD_ITEMS);
    CHECK(total == SD_ITEMS);
    CHECK(conc_queue_free(q, NULL) == 0);

    /* a putter blocked on a full queue */
    CHECK(conc_queue_new(&q, CONC_FIFO, 1) == 0);
    CHECK(conc_queue_put(q, JOB(1), true, CONC_FOREVER) == 0);
    conc_thread_t *p = spawn_named(sd_blocked_put, q, "producer");
    conc_sleep_thread(0.02);
    printf("  a producer is blocked in put() on a full Queue(1); q.shutdown():\n");
    conc_queue_shutdown(q, false, NULL);
    void *res;
    conc_thread_join(p, CONC_FOREVER, &res);
    conc_thread_free(p);
    CHECK(JOB_NO(res) == CONC_ESHUTDOWN);
    void *item;
    rc = conc_queue_get(q, &item, true, CONC_FOREVER);
    int rc2 = conc_queue_get(q, &item, true, CONC_FOREVER);
    printf("    main: get() -> %s (the item already in), then get() -> %s\n",
           rc == 0 ? "job 1" : conc_errname(rc), conc_errname(rc2));
    CHECK(rc == 0 && rc2 == CONC_ESHUTDOWN);
    CHECK(conc_queue_free(q, NULL) == 0);

    /* immediate: the items left are discarded, joiners released */
    static const char *orders[] = {"order-1", "order-2", "order-3", "order-4"};
    CHECK(conc_queue_new(&q, CONC_FIFO, 8) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(conc_queue_put(q, strdup(orders[i]), true, CONC_FOREVER) == 0);
    conc_thread_t *j = spawn_named(sd_joiner, q, "joiner");
    conc_sleep_thread(0.02);
    printf("  shutdown(immediate=True): %zu malloc'd orders queued, a thread waits in "
           "join()\n",
           conc_queue_qsize(q));
    conc_queue_shutdown(q, true, discard_order);
    conc_thread_join(j, CONC_FOREVER, &res);
    conc_thread_free(j);
    rc = conc_queue_get_nowait(q, &item);
    printf("  after it: qsize=%zu unfinished_tasks=%zu, get_nowait() raised %s\n",
           conc_queue_qsize(q), conc_queue_unfinished_tasks(q), conc_errname(rc));
    CHECK(JOB_NO(res) == 0 && atomic_load(&discarded) == 4 && rc == CONC_ESHUTDOWN);
    CHECK(conc_queue_qsize(q) == 0 && conc_queue_unfinished_tasks(q) == 0);
    CHECK(conc_queue_free(q, free) == 0);
    return 0;
}

/* ---- queue/timeouts: Full and Empty ---- */

static int sec_timeouts(void)
{
    conc_queue_t *q;
    CHECK(conc_queue_new(&q, CONC_FIFO, 2) == 0);
    int a = conc_queue_put_nowait(q, JOB(1));
    int b = conc_queue_put_nowait(q, JOB(2));
    int c = conc_queue_put_nowait(q, JOB(3));
    printf("  Queue(2): put_nowait x3 -> %s, %s, %s   (full() = %s)\n", conc_errname(a),
           conc_errname(b), conc_errname(c), conc_queue_full(q) ? "True" : "False");
    CHECK(a == 0 && b == 0 && c == CONC_EFULL && conc_queue_full(q));
    double t = conc_monotonic();
    int rc = conc_queue_put(q, JOB(3), true, 0.05);
    double waited = conc_monotonic() - t;
    printf("  put(x, timeout=0.05) on the full queue: %s after %.0f ms\n", conc_errname(rc),
           waited * 1e3);
    CHECK(rc == CONC_EFULL && waited >= 0.04);

    void *x, *y, *z;
    a = conc_queue_get_nowait(q, &x);
    b = conc_queue_get_nowait(q, &y);
    c = conc_queue_get_nowait(q, &z);
    printf("  get_nowait x3 -> %s, %s, %s   (empty() = %s)\n", conc_errname(a), conc_errname(b),
           conc_errname(c), conc_queue_empty(q) ? "True" : "False");
    CHECK(a == 0 && b == 0 && c == CONC_EEMPTY && JOB_NO(x) == 1 && JOB_NO(y) == 2);
    t = conc_monotonic();
    rc = conc_queue_get(q, &x, true, 0.05);
    waited = conc_monotonic() - t;
    printf("  get(timeout=0.05) on the empty queue: %s after %.0f ms\n", conc_errname(rc),
           waited * 1e3);
    CHECK(rc == CONC_EEMPTY && waited >= 0.04);
    rc = conc_queue_get(q, &x, true, -2.0);
    printf("  get(timeout=-2) is a ValueError in Python; here: %s\n", conc_errname(rc));
    CHECK(rc == CONC_EINVAL);
    CHECK(conc_queue_free(q, NULL) == 0);
    return 0;
}

/* ---- queue/ordering: Queue vs LifoQueue vs PriorityQueue vs SimpleQueue ---- */

struct task {
    int priority;
    const char *name;
};

static int by_priority(const void *a, const void *b)
{
    const struct task *x = a, *y = b;
    return (x->priority > y->priority) - (x->priority < y->priority);
}

static int sec_ordering(void)
{
    static const int in[] = {3, 1, 4, 1, 5, 9, 2, 6};
    enum { N = sizeof in / sizeof in[0] };
    static const int want[3][N] = {
        {3, 1, 4, 1, 5, 9, 2, 6}, /* FIFO */
        {6, 2, 9, 5, 1, 4, 1, 3}, /* LIFO */
        {1, 1, 2, 3, 4, 5, 6, 9}, /* lowest first */
    };
    static const struct {
        conc_queue_kind_t kind;
        const char *python;
    } kinds[3] = {{CONC_FIFO, "Queue()        "},
                  {CONC_LIFO, "LifoQueue()    "},
                  {CONC_PRIORITY, "PriorityQueue()"}};
    printf("  put 3 1 4 1 5 9 2 6 into each, then get until empty:\n");
    for (int k = 0; k < 3; k++) {
        conc_queue_t *q;
        CHECK(conc_queue_new(&q, kinds[k].kind, 0) == 0);
        for (int i = 0; i < N; i++)
            conc_queue_put(q, JOB(in[i]), true, CONC_FOREVER);
        printf("    %s ->", kinds[k].python);
        void *item;
        for (int i = 0; conc_queue_get_nowait(q, &item) == 0; i++) {
            printf(" %d", JOB_NO(item));
            CHECK(i < N && JOB_NO(item) == want[k][i]);
        }
        printf("\n");
        CHECK(conc_queue_free(q, NULL) == 0);
    }

    /* a comparator over structs; equal priorities keep their put order */
    static struct task tasks[] = {
        {2, "write docs"}, {1, "fix bug"}, {3, "lunch"}, {1, "ship release"}, {2, "review"}};
    static const char *const expect[] = {"fix bug", "ship release", "write docs", "review",
                                         "lunch"};
    conc_queue_t *pq;
    CHECK(conc_priority_queue_new(&pq, 0, by_priority) == 0);
    for (size_t i = 0; i < sizeof tasks / sizeof tasks[0]; i++)
        conc_queue_put(pq, &tasks[i], true, CONC_FOREVER);
    printf("  PriorityQueue with a comparator over (priority, name) structs:\n   ");
    void *item;
    for (int i = 0; conc_queue_get_nowait(pq, &item) == 0; i++) {
        const struct task *tk = item;
        printf(" (%d, %s)", tk->priority, tk->name);
        CHECK(i < 5 && strcmp(tk->name, expect[i]) == 0);
    }
    printf("\n  equal priorities come out in the order they were put (first in, first out)\n");
    CHECK(conc_queue_free(pq, NULL) == 0);

    conc_queue_t *sq;
    CHECK(conc_queue_new(&sq, CONC_SIMPLE, 0) == 0);
    conc_queue_put(sq, JOB(7), true, CONC_FOREVER);
    int rc = conc_queue_get(sq, &item, true, CONC_FOREVER);
    int td = conc_queue_task_done(sq);
    printf("  SimpleQueue(): unbounded FIFO, put never blocks; got %d; it has no "
           "task_done(): %s\n",
           JOB_NO(item), conc_errname(td));
    CHECK(rc == 0 && JOB_NO(item) == 7 && td == CONC_EINVAL);
    CHECK(conc_queue_free(sq, NULL) == 0);
    return 0;
}

/* ---- queue/select: wait on two queues at once (beyond Python) ---- */

enum { SEL_ALERTS = 3, SEL_LOGS = 6 };

struct feed {
    conc_queue_t *q;
    const char *prefix;
    int count;
    double every;
};

static void *feed_run(void *arg)
{
    struct feed *f = arg;
    for (int i = 1; i <= f->count; i++) {
        conc_sleep_thread(f->every);
        conc_queue_put(f->q, JOB(i), true, CONC_FOREVER);
    }
    conc_queue_shutdown(f->q, false, NULL); /* "no more from me" */
    return NULL;
}

static int sec_select(void)
{
    conc_queue_t *qs[2];
    const char *names[2] = {"alerts", "logs"};
    CHECK(conc_queue_new(&qs[0], CONC_FIFO, 4) == 0);
    CHECK(conc_queue_new(&qs[1], CONC_FIFO, 4) == 0);

    /* fairness: both queues ready, select takes turns */
    for (int i = 1; i <= 3; i++) {
        conc_queue_put(qs[0], JOB(i), true, CONC_FOREVER);
        conc_queue_put(qs[1], JOB(i), true, CONC_FOREVER);
    }
    printf("  both queues hold 3 items; six select(timeout=0) calls take from:\n   ");
    size_t idx, prev = 2;
    void *item;
    bool alternates = true;
    for (int i = 0; i < 6; i++) {
        CHECK(conc_queue_select(qs, 2, &idx, &item, 0) == 0);
        printf(" %s", names[idx]);
        alternates = alternates && idx != prev;
        prev = idx;
    }
    int rc = conc_queue_select(qs, 2, &idx, &item, 0);
    printf("\n  ready queues take turns: %s; a seventh select(timeout=0): %s\n",
           alternates ? "yes" : "NO", conc_errname(rc));
    CHECK(alternates && rc == CONC_EEMPTY);

    /* two producers at different rates; one consumer waits on both */
    struct feed feeds[2] = {{qs[0], "alert", SEL_ALERTS, 0.03},
                            {qs[1], "log", SEL_LOGS, 0.012}};
    conc_thread_t *t[2] = {spawn_named(feed_run, &feeds[0], "alerter"),
                           spawn_named(feed_run, &feeds[1], "logger")};
    printf("  an alerter (every 30 ms) and a logger (every 12 ms) feed one consumer:\n   ");
    int got[2] = {0, 0};
    double t0 = conc_monotonic();
    while ((rc = conc_queue_select(qs, 2, &idx, &item, 5.0)) == 0) {
        printf(" %s-%d", feeds[idx].prefix, JOB_NO(item));
        got[idx]++;
        CHECK(conc_queue_task_done(qs[idx]) == 0); /* select counts as a get */
    }
    printf("\n  after %.0f ms select returned %s: both queues shut down and drained\n",
           (conc_monotonic() - t0) * 1e3, conc_errname(rc));
    printf("  received %d alerts and %d log lines, each from the queue it was put in\n",
           got[0], got[1]);
    CHECK(rc == CONC_ESHUTDOWN && got[0] == SEL_ALERTS && got[1] == SEL_LOGS);
    for (int i = 0; i < 2; i++) {
        join_free(t[i]);
        CHECK(conc_queue_free(qs[i], NULL) == 0);
    }
    return 0;
}

static const struct section queue_sections[] = {
    {"bounded", "queue.Queue(maxsize): a slow consumer makes put() block (back-pressure)",
     sec_bounded, "q = Queue(maxsize=3); q.put(job)  # waits while 3 jobs are queued"},
    {"join", "Queue.task_done() / Queue.join(): knowing all work is finished", sec_join,
     "q.put(job) x12; q.join()  # returns once every job got its task_done()"},
    {"shutdown", "Queue.shutdown() (3.13): stop consumers cleanly", sec_shutdown,
     "q.shutdown(); q.get()  # drains what is left, then raises queue.ShutDown"},
    {"timeouts", "queue.Full and queue.Empty: nowait and timeouts", sec_timeouts,
     "q.put_nowait(x)  # raises Full;  q.get(timeout=0.05)  # raises Empty"},
    {"ordering", "Queue vs LifoQueue vs PriorityQueue vs SimpleQueue", sec_ordering,
     "pq = PriorityQueue(); pq.put((1, 'fix bug')); pq.get()"},
    {"select", "beyond Python: wait on several queues (Go's select)", sec_select,
     "(none in Python; Go: select { case a := <-alerts: ... case l := <-logs: ... })"},
    {NULL, NULL, NULL, NULL},
};

/* ================================================ chapter: futures */

/* A Future is the promise of a result: submit() hands one back at once, the
 * task runs on a pool thread, and whoever holds the future can wait for the
 * outcome, or leave a callback (回调函数) that the pool calls when it is
 * ready. Every wait below is bounded, so a broken pool fails a check
 * instead of hanging the tour. */

static conc_executor_t *new_pool(size_t workers, const char *prefix)
{
    conc_executor_t *ex = NULL;
    conc_thread_pool_opts_t o = {.max_workers = workers, .thread_name_prefix = prefix};
    CHECK(conc_thread_pool_new(&ex, &o) == 0);
    return ex;
}

static conc_future_t *submit(conc_executor_t *ex, void *(*fn)(void *), void *arg)
{
    conc_future_t *f = NULL;
    CHECK(conc_submit(ex, &f, fn, arg) == 0);
    return f;
}

/* ---- futures/callbacks: Future.add_done_callback ---- */

struct cb_log {
    conc_event_t fired;
    atomic_int calls;
    char thread[32]; /* where the callback ran */
    int code;        /* the future's exception (0: it succeeded) */
    char text[96];   /* its result, or the exception's message */
};

/* The callback: it gets the finished future and reads its outcome without
 * waiting (timeout 0), as Python's fn(future) would call future.result(). */
static void on_done(conc_future_t *f, void *arg)
{
    struct cb_log *log = arg;
    snprintf(log->thread, sizeof log->thread, "%s", me());
    void *r = NULL;
    const char *msg = NULL;
    if (conc_future_exception(f, 0, &log->code, &msg) == 0 && log->code == 0 &&
        conc_future_result(f, 0, &r) == 0)
        snprintf(log->text, sizeof log->text, "%s", (const char *)r);
    else
        snprintf(log->text, sizeof log->text, "%s", msg ? msg : "?");
    atomic_fetch_add(&log->calls, 1);
    conc_event_set(&log->fired);
}

static void *brew(void *gate)
{
    conc_event_wait(gate, 5.0); /* hold the task until main has added its callback */
    return "espresso";
}

static void *brew_unknown(void *arg)
{
    return conc_fail(CONC_EINVAL, "no such drink: '%s'", (const char *)arg);
}

static void bad_callback(conc_future_t *f, void *arg)
{
    (void)f;
    (void)arg;
    conc_fail(CONC_ERANGE, "the receipt printer is out of paper");
}

static atomic_int cb_hook_calls;

static void cb_hook(conc_thread_t *t, int code, const char *msg, void *arg)
{
    (void)arg;
    printf("    excepthook: a callback in %s raised %s: %s\n", conc_thread_name(t),
           conc_errname(code), msg);
    atomic_fetch_add(&cb_hook_calls, 1);
}

static int sec_callbacks(void)
{
    conc_executor_t *ex = new_pool(2, "barista");
    conc_event_t gate = CONC_EVENT_INIT;
    struct cb_log later = {.fired = CONC_EVENT_INIT}, at_once = {.fired = CONC_EVENT_INIT},
                  failed = {.fired = CONC_EVENT_INIT};

    /* 1. a callback on a pending future runs in the thread that completes it */
    conc_future_t *f = submit(ex, brew, &gate);
    CHECK(conc_future_add_done_callback(f, on_done, &later) == 0);
    printf("  submit(brew) returned a future at once; done() = %s; callback added\n",
           conc_future_done(f) ? "true" : "false");
    CHECK(!conc_future_done(f) && atomic_load(&later.calls) == 0);
    conc_event_set(&gate); /* let the task finish */
    CHECK(conc_event_wait(&later.fired, 5.0) == 0);
    printf("  the task returned; the callback ran in %s and saw result '%s'\n", later.thread,
           later.text);
    CHECK(atomic_load(&later.calls) == 1 && strcmp(later.text, "espresso") == 0);
    CHECK(strncmp(later.thread, "barista", 7) == 0); /* a pool thread, not MainThread */

    /* 2. on a future that is already done, the callback runs at once, here */
    CHECK(conc_future_add_done_callback(f, on_done, &at_once) == 0);
    printf("  added to the finished future: the callback ran before add_done_callback "
           "returned, in %s\n", at_once.thread);
    CHECK(atomic_load(&at_once.calls) == 1 && strcmp(at_once.thread, me()) == 0);

    /* 3. a failing task: its exception reaches the callback */
    conc_future_t *g = submit(ex, brew_unknown, "kale smoothie");
    CHECK(conc_future_add_done_callback(g, on_done, &failed) == 0);
    CHECK(conc_event_wait(&failed.fired, 5.0) == 0);
    printf("  a task that raises: the callback saw %s: %s\n", conc_errname(failed.code),
           failed.text);
    CHECK(failed.code == CONC_EINVAL && strcmp(failed.text, "no such drink: 'kale smoothie'") == 0);
    void *r = NULL;
    CHECK(conc_future_result(g, 0, &r) == CONC_EFAILED); /* result() re-raises it: "the task failed" */

    /* 4. a callback that raises is reported and changes nothing */
    conc_excepthook_fn old = conc_set_excepthook(cb_hook, NULL);
    CHECK(conc_future_add_done_callback(f, bad_callback, NULL) == 0);
    conc_set_excepthook(old, NULL);
    CHECK(atomic_load(&cb_hook_calls) == 1);
    CHECK(conc_future_result(f, 0, &r) == 0 && strcmp(r, "espresso") == 0);
    printf("  ...and the future still holds its result '%s'\n", (const char *)r);

    conc_future_free(f);
    conc_future_free(g);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

/* ---- futures/then: a chain of steps, each running when the last is done ---- */

static atomic_int steps_run;

static void *load_cart(void *arg) /* the first step runs on the pool */
{
    conc_event_t *gate = ((void **)arg)[0];
    int cart = JOB_NO(((void **)arg)[1]);
    conc_event_wait(gate, 5.0);
    atomic_fetch_add(&steps_run, 1);
    if (cart == 0)
        return conc_fail(CONC_EINVAL, "cart %d is empty", cart);
    printf("    load_cart(%d)        in %-9s -> 1250 cents\n", cart, me());
    return JOB(1250);
}

static void *add_tax(void *cents, void *arg)
{
    (void)arg;
    atomic_fetch_add(&steps_run, 1);
    int total = JOB_NO(cents) * 6 / 5; /* +20% */
    printf("    add_tax(%d)       in %-9s -> %d cents\n", JOB_NO(cents), me(), total);
    return JOB(total);
}

static void *format_total(void *cents, void *buf)
{
    atomic_fetch_add(&steps_run, 1);
    snprintf(buf, 32, "total: %d.%02d EUR", JOB_NO(cents) / 100, JOB_NO(cents) % 100);
    printf("    format_total(%d)  in %-9s -> \"%s\"\n", JOB_NO(cents), me(), (char *)buf);
    return buf;
}

/* cart -> load_cart -> add_tax -> format_total; returns the last future. */
static conc_future_t *checkout(conc_executor_t *ex, void **args, char *buf)
{
    conc_future_t *loaded = submit(ex, load_cart, args), *taxed = NULL, *text = NULL;
    CHECK(conc_future_then(loaded, &taxed, add_tax, NULL) == 0);
    CHECK(conc_future_then(taxed, &text, format_total, buf) == 0);
    /* The chain holds what it needs: our references to the middle steps
     * can go now, the last one is all we keep. */
    conc_future_free(loaded);
    conc_future_free(taxed);
    return text;
}

static int sec_then(void)
{
    conc_executor_t *ex = new_pool(1, "shop");
    conc_event_t gate = CONC_EVENT_INIT;
    char buf[32] = "";
    void *args[2] = {&gate, JOB(7)};

    printf("  chain: submit(load_cart, 7).then(add_tax).then(format_total)\n");
    conc_future_t *text = checkout(ex, args, buf);
    conc_event_set(&gate);
    void *r = NULL;
    int rc = conc_future_result(text, 5.0, &r);
    printf("  result() of the last future: \"%s\"\n", rc == 0 ? (char *)r : conc_errname(rc));
    CHECK(rc == 0 && r == buf && strcmp(buf, "total: 15.00 EUR") == 0);
    CHECK(atomic_load(&steps_run) == 3);
    conc_future_free(text);

    /* a failure skips the remaining steps and comes out at the end */
    atomic_store(&steps_run, 0);
    args[1] = JOB(0);
    text = checkout(ex, args, buf);
    int code = 0;
    const char *msg = NULL;
    CHECK(conc_future_exception(text, 5.0, &code, &msg) == 0);
    printf("  load_cart(0) raises: add_tax and format_total never run; the last future "
           "holds %s: %s\n", conc_errname(code), msg ? msg : "?");
    CHECK(code == CONC_EINVAL && msg && strcmp(msg, "cart 0 is empty") == 0);
    CHECK(atomic_load(&steps_run) == 1);
    conc_future_free(text);

    /* cancelling the first step cancels the ones after it */
    conc_future_t *order = NULL, *next = NULL;
    CHECK(conc_future_new(&order) == 0); /* a bare future nobody runs yet */
    CHECK(conc_future_then(order, &next, add_tax, NULL) == 0);
    CHECK(conc_future_cancel(order));
    printf("  a step whose input is cancelled is cancelled too: cancelled() = %s\n",
           conc_future_cancelled(next) ? "true" : "false");
    CHECK(conc_future_cancelled(next) && conc_future_result(next, 0, &r) == CONC_ECANCELLED);
    conc_future_free(order);
    conc_future_free(next);

    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

/* ---- futures/map: Executor.map over a slow function, with a progress bar ---- */

enum { MAP_ITEMS = 40, MAP_WORKERS = 4, MAP_BAR = 30 };

static int thumb_ms(int i) { return 20 + (i * 7) % 31; } /* 20..50 ms, mixed */
static atomic_int thumbs_made;
static int thumb_fail_at = -1;

static void *make_thumbnail(void *arg)
{
    int i = JOB_NO(arg);
    atomic_fetch_add(&thumbs_made, 1);
    if (i == thumb_fail_at) /* the header is wrong: fail at once */
        return conc_fail(CONC_EINVAL, "photo %d is not a JPEG", i);
    conc_sleep_thread(thumb_ms(i) / 1000.0);
    return JOB(1000 + i); /* "the thumbnail's id" */
}

struct bar {
    bool tty;   /* redraw one line with \r, or print a few lines for logs */
    double t0;
    size_t calls, last;
    bool in_steps; /* each call reported exactly one more item */
    unsigned quarter;
};

static void draw_bar(size_t done, size_t total, void *arg)
{
    struct bar *b = arg;
    b->in_steps = b->in_steps && done == b->last + 1;
    b->last = done;
    b->calls++;
    char cells[MAP_BAR + 1];
    size_t fill = total ? done * MAP_BAR / total : MAP_BAR;
    memset(cells, '#', fill);
    memset(cells + fill, '.', MAP_BAR - fill);
    cells[MAP_BAR] = 0;
    double ms = (conc_monotonic() - b->t0) * 1e3;
    if (b->tty) {
        printf("\r  [%s] %2zu/%zu %5.0f ms", cells, done, total, ms);
        if (done == total)
            printf("\n");
        fflush(stdout);
    } else if (done * 4 >= total * b->quarter) { /* not a terminal: 25%, 50%, 75%, 100% */
        printf("  [%s] %2zu/%zu %5.0f ms\n", cells, done, total, ms);
        while (done * 4 >= total * b->quarter)
            b->quarter++;
    }
}

static int sec_map(void)
{
    conc_executor_t *ex = new_pool(MAP_WORKERS, "thumbs");
    void *args[MAP_ITEMS], *results[MAP_ITEMS];
    int work_ms = 0;
    for (int i = 0; i < MAP_ITEMS; i++) {
        args[i] = JOB(i);
        results[i] = NULL;
        work_ms += thumb_ms(i);
    }
    struct bar b = {.tty = isatty(STDOUT_FILENO), .t0 = conc_monotonic(), .in_steps = true,
                    .quarter = 1};
    conc_map_opts_t o = {.timeout = 30.0, .progress = draw_bar, .progress_arg = &b};
    printf("  %d photos, 20-50 ms each, on %d workers:\n", MAP_ITEMS, MAP_WORKERS);
    int rc = conc_map(ex, make_thumbnail, args, MAP_ITEMS, results, &o);
    double took = conc_monotonic() - b.t0;
    bool in_order = true;
    for (int i = 0; i < MAP_ITEMS; i++)
        in_order = in_order && JOB_NO(results[i]) == 1000 + i;
    printf("  map returned %s; results in submission order: %s; %d ms of work took "
           "%.0f ms\n", conc_errname(rc), in_order ? "yes" : "NO", work_ms, took * 1e3);
    CHECK(rc == 0 && in_order);
    CHECK(b.calls == MAP_ITEMS && b.last == MAP_ITEMS && b.in_steps);
    CHECK(took < work_ms / 1000.0 / 2); /* four sleepers at a time, not one */

    /* One item fails: map raises its exception, and what had not started is
     * cancelled. (Item 0: map looks at the items in order, and the pool
     * does not promise to start them in order -- it is the first item that
     * is sure to start first.) */
    atomic_store(&thumbs_made, 0);
    thumb_fail_at = 0;
    size_t bad = 0;
    conc_future_t *why = NULL;
    conc_map_opts_t o2 = {.timeout = 30.0, .failed_index = &bad, .failed_future = &why};
    rc = conc_map(ex, make_thumbnail, args, MAP_ITEMS, results, &o2);
    CHECK(conc_executor_shutdown(ex, true, false) == 0); /* let running items finish */
    int made = atomic_load(&thumbs_made);
    int why_code = 0;
    CHECK(why && conc_future_exception(why, 0, &why_code, NULL) == 0);
    printf("  with photo 0 broken: map raised %s (%s) at item %zu; %d of %d tasks ran, "
           "the rest were cancelled\n", conc_errname(rc), conc_errname(why_code), bad, made, MAP_ITEMS);
    CHECK(rc == CONC_EFAILED && why_code == CONC_EINVAL && bad == 0 && made < MAP_ITEMS);
    conc_future_free(why);
    thumb_fail_at = -1;
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

/* ---- futures/as_completed: results in the order they finish ---- */

struct download {
    const char *name;
    int ms;    /* how long it takes */
    int bytes;
};

static const struct download downloads[] = {
    {"index.html", 180, 5120}, {"logo.png", 60, 20480}, {"app.js", 120, 81920},
    {"style.css", 30, 4096},   {"video.mp4", 240, 1 << 20}, {"font.woff", 90, 30720},
};
enum { NDL = sizeof downloads / sizeof downloads[0] };

static void *download(void *arg)
{
    const struct download *d = arg;
    conc_sleep_thread(d->ms / 1000.0);
    return JOB(d->bytes);
}

static int sec_as_completed(void)
{
    conc_executor_t *ex = new_pool(NDL, "fetch");
    conc_future_t *fs[NDL];
    printf("  submitted in this order:");
    for (int i = 0; i < NDL; i++) {
        fs[i] = submit(ex, download, (void *)&downloads[i]);
        printf(" %s", downloads[i].name);
    }
    printf("\n");
    double t0 = conc_monotonic();
    conc_as_completed_t *it = NULL;
    CHECK(conc_as_completed_new(&it, fs, NDL, 10.0) == 0);
    conc_future_t *f;
    int rc, n = 0, prev = -1, inversions = 0, shortest_first = 1;
    unsigned seen = 0;
    while ((rc = conc_as_completed_next(it, &f)) == 0) {
        int i = 0;
        while (i < NDL && fs[i] != f)
            i++;
        CHECK(i < NDL && !(seen & (1u << i)));
        if (i >= NDL)
            break;
        seen |= 1u << i;
        void *bytes = NULL;
        CHECK(conc_future_result(f, 0, &bytes) == 0 && JOB_NO(bytes) == downloads[i].bytes);
        printf("  %4.0f ms  %-10s %7d bytes  (submitted #%d)\n", (conc_monotonic() - t0) * 1e3,
               downloads[i].name, JOB_NO(bytes), i + 1);
        inversions += prev > i;
        shortest_first &= prev < 0 || downloads[prev].ms < downloads[i].ms;
        prev = i;
        n++;
    }
    printf("  as_completed ended with %s after %d futures: %s\n", conc_errname(rc), n,
           shortest_first ? "the shortest download first, the longest last"
                          : "out of submission order");
    CHECK(rc == CONC_EEOF && n == NDL && seen == (1u << NDL) - 1);
    CHECK(inversions > 0); /* not submission order: 180 ms index.html came after 30 ms style.css */
    CHECK(conc_as_completed_free(it) == 0);
    for (int i = 0; i < NDL; i++)
        conc_future_free(fs[i]);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

/* ---- futures/wait: FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED ---- */

static conc_event_t mirrors_gate = CONC_EVENT_INIT;

static void *ask_slow_mirror(void *arg)
{
    conc_event_wait(&mirrors_gate, 5.0); /* answers only when main opens the gate */
    return arg;
}

static void *ask_fast_mirror(void *arg)
{
    conc_sleep_thread(0.04);
    return arg;
}

static void *ask_broken_mirror(void *arg)
{
    conc_sleep_thread(0.02);
    return conc_fail(CONC_EEOF, "%s closed the connection", (const char *)arg);
}

static const char *which(conc_future_t *f, conc_future_t *const *fs, const char *const *names,
                         size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fs[i] == f)
            return names[i];
    return "?";
}

static void show_sets(const char *what, conc_future_t *const *fs, const char *const *names,
                      size_t n, conc_future_t **done, size_t nd, conc_future_t **not_done,
                      size_t nn)
{
    printf("  %-28s done = {", what);
    for (size_t i = 0; i < nd; i++)
        printf("%s%s", i ? ", " : "", which(done[i], fs, names, n));
    printf("}  not_done = {");
    for (size_t i = 0; i < nn; i++)
        printf("%s%s", i ? ", " : "", which(not_done[i], fs, names, n));
    printf("}\n");
}

static int sec_wait(void)
{
    conc_event_clear(&mirrors_gate);
    conc_executor_t *ex = new_pool(4, "mirror");
    const char *names[4] = {"eu", "us", "asia", "moon"};
    conc_future_t *fs[4] = {submit(ex, ask_slow_mirror, "eu"), submit(ex, ask_fast_mirror, "us"),
                            submit(ex, ask_slow_mirror, "asia"), NULL};
    conc_future_t *done[4], *not_done[4];
    size_t nd = 0, nn = 0;

    CHECK(conc_wait(fs, 3, 5.0, CONC_FIRST_COMPLETED, done, &nd, not_done, &nn) == 0);
    show_sets("wait(FIRST_COMPLETED):", fs, names, 4, done, nd, not_done, nn);
    CHECK(nd == 1 && done[0] == fs[1] && nn == 2);

    double t0 = conc_monotonic();
    CHECK(conc_wait(fs, 3, 0.05, CONC_ALL_COMPLETED, done, &nd, not_done, &nn) == 0);
    show_sets("wait(timeout=0.05):", fs, names, 4, done, nd, not_done, nn);
    printf("  %-28s (returned after %.0f ms with the two sets, no exception)\n", "",
           (conc_monotonic() - t0) * 1e3);
    CHECK(nd == 1 && nn == 2);

    fs[3] = submit(ex, ask_broken_mirror, "moon");
    CHECK(conc_wait(fs, 4, 5.0, CONC_FIRST_EXCEPTION, done, &nd, not_done, &nn) == 0);
    show_sets("wait(FIRST_EXCEPTION):", fs, names, 4, done, nd, not_done, nn);
    CHECK(nd == 2 && nn == 2 && conc_future_done(fs[3]) && conc_future_result(fs[3], 0, NULL) == CONC_EFAILED);

    conc_event_set(&mirrors_gate);
    conc_future_t *dup[5] = {fs[0], fs[1], fs[2], fs[3], fs[0]}; /* a duplicate counts once */
    CHECK(conc_wait(dup, 5, 5.0, CONC_ALL_COMPLETED, done, &nd, not_done, &nn) == 0);
    show_sets("gate open, wait(ALL_COMPLETED):", fs, names, 4, done, nd, not_done, nn);
    CHECK(nd == 4 && nn == 0);

    for (int i = 0; i < 4; i++)
        conc_future_free(fs[i]);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

/* ---- futures/cancel: Future.cancel() and shutdown(cancel_futures=True) ---- */

enum { CANCEL_JOBS = 8, CANCEL_WORKERS = 2 };
static conc_event_t jobs_gate = CONC_EVENT_INIT;
static conc_semaphore_t jobs_started = CONC_SEMAPHORE_INIT(0);
static atomic_int jobs_ran;

static void *long_job(void *arg)
{
    atomic_fetch_add(&jobs_ran, 1);
    conc_semaphore_release(&jobs_started, 1);
    conc_event_wait(&jobs_gate, 5.0);
    return arg;
}

static int sec_cancel(void)
{
    conc_event_clear(&jobs_gate);
    conc_executor_t *ex = new_pool(CANCEL_WORKERS, "batch");
    conc_future_t *fs[CANCEL_JOBS];
    for (int i = 0; i < CANCEL_JOBS; i++)
        fs[i] = submit(ex, long_job, JOB(i));
    for (int i = 0; i < CANCEL_WORKERS; i++) /* both workers are busy now */
        CHECK(conc_semaphore_acquire(&jobs_started, true, 5.0) == 0);

    int running = -1, pending = -1;
    for (int i = 0; i < CANCEL_JOBS; i++) {
        if (conc_future_running(fs[i]) && running < 0)
            running = i;
        if (conc_future_state(fs[i]) == CONC_FUTURE_PENDING && pending < 0)
            pending = i;
    }
    CHECK(running >= 0 && pending >= 0);
    if (running < 0 || pending < 0) {
        conc_event_set(&jobs_gate);
        conc_executor_free(ex);
        for (int i = 0; i < CANCEL_JOBS; i++)
            conc_future_free(fs[i]);
        return 1;
    }
    bool c1 = conc_future_cancel(fs[running]), c2 = conc_future_cancel(fs[pending]);
    printf("  %d workers busy, %d jobs queued\n", CANCEL_WORKERS, CANCEL_JOBS - CANCEL_WORKERS);
    printf("  cancel() on running job %d: %s; on queued job %d: %s\n", running,
           c1 ? "true" : "false", pending, c2 ? "true" : "false");
    CHECK(!c1 && c2 && conc_future_result(fs[pending], 0, NULL) == CONC_ECANCELLED);

    CHECK(conc_executor_shutdown(ex, false, true) == 0); /* wait=False, cancel_futures=True */
    conc_future_t *late = NULL;
    int rc = conc_submit(ex, &late, long_job, JOB(99));
    printf("  shutdown(wait=False, cancel_futures=True); a submit after it: %s\n",
           conc_errname(rc));
    CHECK(rc == CONC_ESHUTDOWN);

    conc_event_set(&jobs_gate); /* the two running jobs may finish now */
    CHECK(conc_executor_shutdown(ex, true, false) == 0);
    int finished = 0, cancelled = 0;
    printf("  states:");
    for (int i = 0; i < CANCEL_JOBS; i++) {
        conc_future_state_t s = conc_future_state(fs[i]);
        finished += s == CONC_FUTURE_FINISHED;
        cancelled += s == CONC_FUTURE_CANCELLED;
        printf(" %d:%s", i, s == CONC_FUTURE_FINISHED ? "finished" :
                            s == CONC_FUTURE_CANCELLED ? "cancelled" : "?");
        conc_future_free(fs[i]);
    }
    printf("\n  %d finished, %d cancelled; %d jobs ever started\n", finished, cancelled,
           atomic_load(&jobs_ran));
    CHECK(finished == CANCEL_WORKERS && cancelled == CANCEL_JOBS - CANCEL_WORKERS);
    CHECK(atomic_load(&jobs_ran) == CANCEL_WORKERS);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static const struct section futures_sections[] = {
    {"callbacks", "Future.add_done_callback: run code when a result is ready (回调函数 — callback function)",
     sec_callbacks, "f = pool.submit(brew); f.add_done_callback(lambda f: print(f.result()))"},
    {"then", "beyond Python: chain steps with then()", sec_then,
     "(none in Python; JavaScript: loadCart(7).then(addTax).then(formatTotal))"},
    {"map", "Executor.map over a slow function, with a live progress bar", sec_map,
     "thumbs = list(pool.map(make_thumbnail, photos))  # plus a progress callback"},
    {"as_completed", "concurrent.futures.as_completed: results as they finish",
     sec_as_completed, "for f in as_completed(fs): print(f.result())"},
    {"wait", "concurrent.futures.wait: FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED",
     sec_wait, "done, not_done = wait(fs, return_when=FIRST_COMPLETED)"},
    {"cancel", "Future.cancel() and Executor.shutdown(cancel_futures=True)", sec_cancel,
     "pool.shutdown(wait=False, cancel_futures=True)  # queued work never starts"},
    {NULL, NULL, NULL, NULL},
};

/* ================================================ chapter: processes (进程) */

/* A child started by spawn or by the fork server shares nothing with us, so
 * everything it needs travels in its argument bytes: numbers, and the names
 * of shared objects (a SharedMemory segment, a Value, a Queue) that it
 * attaches to. A fork child could simply use our pointers; going by name
 * keeps the start method a detail, as in Python. */

enum { LOG_CAP = 8 };

struct lab {                   /* one SharedMemory segment per section */
    conc_plock_t lock;         /* multiprocessing.Lock() */
    conc_psemaphore_t started; /* each child releases one unit once it runs */
    conc_pevent_t go, stop, holding;
    atomic_int nlog;
    struct {
        int pid;
        int done;
    } log[LOG_CAP];
};

struct kid {       /* a child's argument (copied into the child) */
    char lab[64];  /* the lab's SharedMemory name */
    char name1[64], name2[64]; /* names of a Value or Queues */
    int n, flag, parent;
};

/* Copy a child's argument out of its byte buffer; false if it is not one. */
static bool kid_get(struct kid *k, const void *arg, size_t len)
{
    if (len != sizeof *k)
        return false;
    memcpy(k, arg, sizeof *k);
    return true;
}

/* In the parent: a new zero-filled lab (an unlocked Lock, clear Events, a
 * Semaphore of 0) and a kid argument that names it. */
static conc_shm_t *lab_new(struct lab **out, struct kid *k)
{
    conc_shm_t *s = NULL;
    memset(k, 0, sizeof *k);
    k->parent = (int)getpid();
    *out = NULL;
    CHECK(conc_shm_create(NULL, sizeof(struct lab), 0, &s) == 0);
    if (!s)
        return NULL;
    snprintf(k->lab, sizeof k->lab, "%s", conc_shm_name(s));
    *out = conc_shm_buf(s);
    return s;
}

static void lab_free(conc_shm_t *s)
{
    if (s) {
        conc_shm_unlink(s);
        conc_shm_close(s);
    }
}

/* In a child: attach to the lab named in k (SharedMemory(name)). */
static struct lab *lab_attach(const struct kid *k, conc_shm_t **s)
{
    return conc_shm_attach(k->lab, s) == 0 ? conc_shm_buf(*s) : NULL;
}

/* Print from a child: one write per line, at once (a spawned child's stdout
 * is not line buffered). */
static void say(const char *fmt, ...) CONC_PRINTF(1, 2);
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* Start fn(k) in a new process named name. Never NULL unless out of memory;
 * a failed start is a failed check (finish() then reports no exit code). */
static conc_process_t *start_kid(conc_process_fn fn, const struct kid *k, const char *name,
                                 conc_start_method_t method)
{
    conc_process_t *p = NULL;
    conc_process_opts_t o = {.name = name, .method = method};
    int rc = conc_process_new(&p, fn, k, sizeof *k, &o);
    if (rc == 0)
        rc = conc_process_start(p);
    if (rc != 0)
        printf("    !! could not start %s: %s\n", name, conc_errname(rc));
    CHECK(rc == 0);
    return p;
}

enum { NO_EXITCODE = -1000 };

/* p.join(timeout) -- killing p if it still runs then -- and p.exitcode;
 * frees the handle. NO_EXITCODE when there is none. */
static int finish(conc_process_t *p, double timeout)
{
    if (!p)
        return NO_EXITCODE;
    int rc = conc_process_join(p, timeout);
    if (rc == CONC_ETIMEDOUT) {
        printf("    !! %s still running after %.0f s: killed\n", conc_process_name(p), timeout);
        failures++;
        conc_process_kill(p);
        conc_process_join(p, 5.0);
    }
    int code = NO_EXITCODE;
    if (conc_process_exitcode(p, &code) != 0)
        code = NO_EXITCODE;
    conc_process_free(p);
    return code;
}

/* Wait until n children have said they run (released lab->started). */
static bool wait_started(struct lab *lab, int n)
{
    for (int i = 0; i < n; i++)
        if (conc_psemaphore_acquire(&lab->started, true, 10.0) != 0) {
            printf("    !! only %d of %d children started within 10 s\n", i, n);
            failures++;
            return false;
        }
    return true;
}

/* Field `field` (1-based, as numbered in proc(5)) of /proc/<pid>/stat
 * (pid 0: this process) into out; false when the process is gone. */
static bool proc_stat(int pid, int field, char *out, size_t cap)
{
    char path[64], buf[1024];
    if (pid)
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
    else
        snprintf(path, sizeof path, "/proc/self/stat");
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return false;
    p++;
    for (int i = 3; i <= field; i++) {
        while (*p == ' ')
            p++;
        char *end = p;
        while (*end && *end != ' ' && *end != '\n')
            end++;
        if (i == field) {
            snprintf(out, cap, "%.*s", (int)(end - p), p);
            return end > p;
        }
        p = end;
    }
    return false;
}

/* The state letter of pid (R running or ready, S blocked, Z zombie...),
 * '-' when it is gone. */
static char proc_state(int pid)
{
    char s[8];
    return proc_stat(pid, 3, s, sizeof s) ? s[0] : '-';
}

static int thread_count(void)
{
    char s[16];
    return proc_stat(0, 20, s, sizeof s) ? atoi(s) : -1;
}

/* The names of this process's threads ("tour, conc-timer") into out. */
static void thread_names(char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "?";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f))
                comm[strcspn(comm, "\n")] = 0;
            fclose(f);
        }
        int n = snprintf(out + used, cap - used, "%s%s", used ? ", " : "", comm);
        if (n < 0 || (size_t)n >= cap - used)
            break;
        used += (size_t)n;
    }
    closedir(d);
}

/* Seconds pid has spent on a CPU (running) and waiting for one (ready):
 * /proc/<pid>/schedstat. False when the kernel does not tell. */
static bool proc_sched(int pid, double *running, double *ready)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    unsigned long long run_ns, wait_ns;
    bool ok = fscanf(f, "%llu %llu", &run_ns, &wait_ns) == 2;
    fclose(f);
    *running = (double)run_ns / 1e9;
    *ready = (double)wait_ns / 1e9;
    return ok;
}

/* ---- processes/start: Process, the three start methods, exit codes ---- */

static int square_child(const void *arg, size_t len)
{
    struct kid k;
    if (!kid_get(&k, arg, len))
        return 2;
    conc_process_t *me = conc_current_process(), *parent = conc_parent_process();
    int ppid = parent ? conc_process_pid(parent) : 0;
    say("    [child] %s: pid %d, parent %d, started by %s: %d*%d\n", conc_process_name(me),
        conc_process_pid(me), ppid, conc_start_method_name((conc_start_method_t)k.flag), k.n,
        k.n);
    if (ppid != k.parent)
        return 3; /* parent_process() must be the tour, even for a fork-server child */
    return k.n * k.n; /* the exit code carries the result */
}
CONC_REGISTER(square_child);

static int failing_child(const void *arg, size_t len)
{
    struct kid k;
    if (!kid_get(&k, arg, len))
        return 2;
    if (k.n < 0) {
        conc_fail(CONC_EINVAL, "side must be positive, got %d", k.n); /* raise ValueError */
        return 0;
    }
    return k.n * k.n;
}
CONC_REGISTER(failing_child);

static int waiting_child(const void *arg, size_t len)
{
    struct kid k;
    conc_shm_t *s;
    struct lab *lab;
    if (!kid_get(&k, arg, len) || !(lab = lab_attach(&k, &s)))
        return 2;
    conc_psemaphore_release(&lab->started, 1);
    int rc = conc_pevent_wait(&lab->stop, 30.0); /* until stop.set() (or a signal) */
    conc_shm_close(s);
    return rc == 0 ? 0 : 4;
}
CONC_REGISTER(waiting_child);

struct idler {
    conc_event_t running, release;
};

static void *idle_thread(void *arg)
{
    struct idler *d = arg;
    conc_event_set(&d->running);
    conc_event_wait(&d->release, 10.0);
    return NULL;
}

static int sec_start(void)
{
    printf("  A Process runs one function in a new process: its own memory, its own pid.\n"
           "  The function gets a copy of its argument (bytes here, pickled objects in\n"
           "  Python); what it returns is the exit code. Three ways to start one:\n"
           "    fork        copy this process as it is (fast; unsafe once threads run)\n"
           "    spawn       run this program afresh: CONC_PROCESS_MAIN, the first line of\n"
           "                main, is the `if __name__ == '__main__':` that runs the function\n"
           "    forkserver  ask a small single-threaded server process to fork for us\n"
           "    default     fork while this process has one thread, forkserver once it\n"
           "                has more\n");
    static const conc_start_method_t methods[3] = {CONC_FORK, CONC_SPAWN, CONC_FORKSERVER};
    struct kid k = {.parent = (int)getpid()};
    for (int i = 0; i < 3; i++) {
        k.n = 5 + i;
        k.flag = methods[i];
        double t0 = conc_monotonic();
        conc_process_t *p = start_kid(square_child, &k, NULL, methods[i]);
        int pid = p ? conc_process_pid(p) : 0;
        int code = finish(p, 10.0);
        printf("  %-10s  pid %d  exitcode %d (expected %d)  start+join %.1f ms\n",
               conc_start_method_name(methods[i]), pid, code, k.n * k.n,
               (conc_monotonic() - t0) * 1e3);
        CHECK(code == k.n * k.n);
    }

    /* The default: fork while we have one thread, forkserver once we have more. */
    struct idler hold = {CONC_EVENT_INIT, CONC_EVENT_INIT};
    conc_thread_t *t = NULL;
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            conc_thread_opts_t o = {.name = "idler"};
            CHECK(conc_thread_spawn(&t, idle_thread, &hold, &o) == 0);
            CHECK(conc_event_wait(&hold.running, 10.0) == 0); /* it has named itself */
        }
        char names[256];
        thread_names(names, sizeof names);
        int threads = thread_count();
        k.n = 3;
        k.flag = CONC_START_DEFAULT;
        conc_process_t *p = start_kid(square_child, &k, NULL, CONC_START_DEFAULT);
        conc_start_method_t used = p ? conc_process_method(p) : CONC_START_DEFAULT;
        int code = finish(p, 10.0);
        printf("  with %d thread%s (%s), the default start method used %s (exitcode %d)\n",
               threads, threads == 1 ? "" : "s", names, conc_start_method_name(used), code);
        CHECK(code == 9);
        CHECK(threads >= 1 && used == (threads == 1 ? CONC_FORK : CONC_FORKSERVER));
        if (round == 0 && threads > 1)
            printf("  (`build/tour processes` runs before any thread exists: there the "
                   "default is fork)\n");
    }
    conc_event_set(&hold.release);
    if (t) {
        conc_thread_join(t, CONC_FOREVER, NULL);
        conc_thread_free(t);
    }
    printf("  (a fork copies only the thread that calls it: a lock another thread held\n"
           "  stays locked in the child forever -- so the default never forks then)\n");

    /* Failing and killed children. */
    k.n = -4;
    expected_stderr_begin("a child process reports its failure");
    conc_process_t *p = start_kid(failing_child, &k, "Parser", CONC_START_DEFAULT);
    int code = finish(p, 10.0);
    expected_stderr_end();
    printf("  a child that fails with conc_fail (Python: raises): exitcode %d\n", code);
    CHECK(code == 1);
    struct lab *lab;
    conc_shm_t *s = lab_new(&lab, &k);
    if (!s)
        return 1;
    p = start_kid(waiting_child, &k, "Waiter", CONC_START_DEFAULT);
    wait_started(lab, 1);
    CHECK(conc_process_is_alive(p));
    CHECK(conc_process_terminate(p) == 0);
    code = finish(p, 10.0);
    printf("  a child stopped by p.terminate() (SIGTERM): exitcode %d (-SIGTERM)\n", code);
    CHECK(code == -SIGTERM);
    lab_free(s);
    return 0;
}

/* ---- processes/states: running, ready, blocked, zombie ---- */

static int spin_child(const void *arg, size_t len)
{
    struct kid k;
    conc_shm_t *s;
    struct lab *lab;
    if (!kid_get(&k, arg, len) || !(lab = lab_attach(&k, &s)))
        return 2;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(k.n, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) /* both spinners share CPU k.n */
        return 3;
    conc_psemaphore_release(&lab->started, 1);
    double give_up = conc_monotonic() + 15.0; /* never spin on if the tour was killed */
    unsigned long spins = 0;
    while (!conc_pevent_is_set(&lab->stop)) { /* while not stop.is_set(): pass */
        if (++spins % 65536 == 0 && conc_monotonic() > give_up)
            return 5;
    }
    conc_shm_close(s);
    return 0;
}
CONC_REGISTER(spin_child);

static int reader_child(const void *arg, size_t len)
{
    struct kid k;
    conc_shm_t *s;
    struct lab *lab;
    conc_mpqueue_t *q;
    if (!kid_get(&k, arg, len) || !(lab = lab_attach(&k, &s)))
        return 2;
    if (conc_mpqueue_attach_name(&q, k.name1) != 0)
        return 3;
    conc_psemaphore_release(&lab->started, 1);
    char msg[32];
    size_t n;
    int rc = conc_mpqueue_get(q, msg, sizeof msg, &n, true, 30.0); /* q.get() */
    conc_mpqueue_free(q);
    conc_shm_close(s);
    return rc == 0 ? 0 : 4;
}
CONC_REGISTER(reader_child);

enum { NSTATE = 4 };

static int sec_states(void)
{
    printf("  A process is always in one of a few states; /proc/<pid>/stat shows it as\n"
           "  a letter (the STAT column of `ps`):\n"
           "    running  R  on a CPU right now\n"
           "    ready    R  could run, waits for a free CPU (Linux says R for both)\n"
           "    blocked  S  waits for something: a lock, a message, the end of a sleep\n"
           "    zombie   Z  has ended; its parent has not join()ed it yet\n"
           "\n"
           "    start() --> ready <--- the scheduler ---> running --> ended: zombie --> gone\n"
           "                  ^                              |                  join()\n"
           "                  +--------- blocked <-----------+\n"
           "           the event came              waits for a lock, I/O, sleep()\n\n");
    struct lab *lab;
    struct kid k;
    conc_shm_t *s = lab_new(&lab, &k);
    conc_mpqueue_t *q = NULL;
    CHECK(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 0) == 0);
    if (!s || !q) {
        lab_free(s);
        conc_mpqueue_free(q);
        return 1;
    }
    CHECK(conc_mpqueue_name(q, k.name1, sizeof k.name1) == 0);
    cpu_set_t mine;
    k.n = 0;
    if (sched_getaffinity(0, sizeof mine, &mine) == 0)
        while (k.n < CPU_SETSIZE - 1 && !CPU_ISSET(k.n, &mine))
            k.n++;

    static const char *const names[NSTATE] = {"spinner-1", "spinner-2", "waiter", "reader"};
    static const char *const doing[NSTATE] = {"while not stop.is_set(): pass",
                                              "while not stop.is_set(): pass", "stop.wait()",
                                              "q.get()"};
    static const conc_process_fn fns[NSTATE] = {spin_child, spin_child, waiting_child,
                                                reader_child};
    conc_process_t *p[NSTATE];
    int pid[NSTATE];
    for (int i = 0; i < NSTATE; i++) {
        p[i] = start_kid(fns[i], &k, names[i], CONC_START_DEFAULT);
        pid[i] = p[i] ? conc_process_pid(p[i]) : 0;
    }
    bool ok = wait_started(lab, NSTATE);

    /* Sample the states until each child has shown the expected one. */
    static const char expect[NSTATE] = {'R', 'R', 'S', 'S'};
    bool seen[NSTATE] = {false};
    double deadline = conc_monotonic() + 5.0;
    for (int all = 0; ok && all < NSTATE && conc_monotonic() < deadline;) {
        all = 0;
        for (int i = 0; i < NSTATE; i++) {
            seen[i] = seen[i] || proc_state(pid[i]) == expect[i];
            all += seen[i];
        }
        if (all < NSTATE)
            conc_sleep_thread(0.005);
    }
    for (int i = 0; i < NSTATE; i++)
        CHECK(seen[i]);

    /* How the next 300 ms are spent: on a CPU, waiting for one, or blocked. */
    double run0[NSTATE], ready0[NSTATE], run1[NSTATE], ready1[NSTATE];
    bool sched = ok;
    double w0 = conc_monotonic();
    for (int i = 0; i < NSTATE; i++)
        sched = sched && proc_sched(pid[i], &run0[i], &ready0[i]);
    conc_sleep_thread(0.3);
    char state[NSTATE];
    for (int i = 0; i < NSTATE; i++) {
        sched = sched && proc_sched(pid[i], &run1[i], &ready1[i]);
        state[i] = proc_state(pid[i]);
    }
    double window = conc_monotonic() - w0;
    printf("  four children; both spinners are pinned to CPU %d:\n", k.n);
    printf("    %-7s %-10s %-31s %-5s %s\n", "pid", "name", "doing", "state",
           sched ? "running    ready  (ms of the last 300)" : "");
    for (int i = 0; i < NSTATE; i++) {
        printf("    %-7d %-10s %-31s   %c  ", pid[i], names[i], doing[i], state[i]);
        if (sched)
            printf("%8.0f %8.0f", (run1[i] - run0[i]) * 1e3, (ready1[i] - ready0[i]) * 1e3);
        printf("\n");
    }
    if (sched) {
        double run = run1[0] - run0[0] + run1[1] - run0[1];
        double ready = ready1[0] - ready0[0] + ready1[1] - ready0[1];
        printf("  The spinners take turns on their one CPU: while one runs, the other is\n"
               "  ready. Together they ran %.0f ms of %.0f (one CPU cannot give more; other\n"
               "  programs use it too) and were ready %.0f ms. The blocked two were neither:\n"
               "  they sleep in the kernel, using no CPU, until what they wait for happens.\n",
               run * 1e3, window * 1e3, ready * 1e3);
        CHECK(run <= window * 1.05 + 0.03);
        CHECK(ready >= window / 2);
    } else {
        printf("  (this kernel has no /proc/<pid>/schedstat: no running/ready times)\n");
    }

    /* The reader gets its message and ends; until join() it is a zombie. */
    CHECK(conc_mpqueue_put(q, "wake up", 7, true, 5.0) == 0);
    struct pollfd pfd = {.fd = p[3] ? conc_process_sentinel(p[3]) : -1, .events = POLLIN};
    CHECK(poll(&pfd, 1, 10000) == 1);
    char z = proc_state(pid[3]);
    bool forked = p[3] && conc_process_method(p[3]) == CONC_FORK;
    printf("  q.put(b'wake up'): the reader takes it and returns; its sentinel is ready.\n");
    if (forked) {
        printf("  Before join() its state is %c (zombie: only its exit code is left)\n", z);
        CHECK(z == 'Z');
    } else {
        printf("  (the fork server started it, so the server reaps it: no zombie of ours)\n");
    }
    int code = finish(p[3], 10.0);
    printf("  after join(): exitcode %d, /proc/%d %s\n", code, pid[3],
           proc_state(pid[3]) == '-' ? "is gone" : "still there");
    CHECK(code == 0);
    if (!forked) { /* show a zombie of our own: os.fork(), the child exits at once */
        fflush(stdout);
        pid_t c = fork();
        if (c == 0)
            _exit(0);
        siginfo_t info;
        CHECK(c > 0 && waitid(P_PID, (id_t)c, &info, WEXITED | WNOWAIT) == 0); /* not reaped */
        z = proc_state((int)c);
        printf("  os.fork() a child that exits at once: before os.waitpid() its state is %c\n"
               "  (zombie: only its exit status is left);",
               z);
        CHECK(z == 'Z');
        CHECK(waitpid(c, NULL, 0) == c);
        printf(" after waitpid(), /proc/%d %s\n", (int)c,
               proc_state((int)c) == '-' ? "is gone" : "still there");
    }

    CHECK(conc_pevent_set(&lab->stop) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(finish(p[i], 10.0) == 0);
    printf("  stop.set(): the spinners see it and the waiter wakes up; all joined\n");
    conc_mpqueue_free(q);
    lab_free(s);
    return 0;
}

/* ---- processes/three: "<pid> is running" / "<pid> is done" ---- */

static void log_step(struct lab *lab, int done)
{
    int i = atomic_fetch_add(&lab->nlog, 1);
    if (i < LOG_CAP) {
        lab->log[i].pid = (int)getpid();
        lab->log[i].done = done;
    }
}

static int three_child(const void *arg, size_t len)
{
    struct kid k;
    conc_shm_t *s;
    struct lab *lab;
    if (!kid_get(&k, arg, len) || !(lab = lab_attach(&k, &s)))
        return 2;
    conc_psemaphore_release(&lab->started, 1);
    if (conc_pevent_wait(&lab->go, 10.0) != 0)
        return 4;
    if (k.flag && conc_plock_acquire(&lab->lock, true, 10.0) != 0) /* with lock: */
        return 5;
    say("    %d is running\n", (int)getpid());
    log_step(lab, 0);
    conc_sleep_thread(0.1);
    say("    %d is done\n", (int)getpid());
    log_step(lab, 1);
    if (k.flag)
        conc_plock_release(&lab->lock);
    conc_shm_close(s);
    return 0;
}
CONC_REGISTER(three_child);

/* Run the three; true if their steps interleaved. */
static bool run_three(bool use_lock)
{
    struct lab *lab;
    struct kid k;
    conc_shm_t *s = lab_new(&lab, &k);
    if (!s)
        return false;
    k.flag = use_lock;
    conc_process_t *p[3];
    for (int i = 0; i < 3; i++)
        p[i] = start_kid(three_child, &k, NULL, CONC_START_DEFAULT);
    if (wait_started(lab, 3))
        conc_pevent_set(&lab->go); /* all three at once */
    for (int i = 0; i < 3; i++)
        CHECK(finish(p[i], 10.0) == 0);
    int n = atomic_load(&lab->nlog);
    CHECK(n == 6);
    bool interleaved = false, paired = n == 6;
    for (int i = 0; i + 1 < n && i + 1 < LOG_CAP; i += 2) {
        bool pair = lab->log[i].pid == lab->log[i + 1].pid && !lab->log[i].done &&
                    lab->log[i + 1].done;
        paired = paired && pair;
        interleaved = interleaved || !pair;
    }
    if (use_lock)
        CHECK(paired);
    lab_free(s);
    return interleaved;
}

static int sec_three(void)
{
    printf("  Each of three processes prints \"<pid> is running\", sleeps 0.1 s, then\n"
           "  prints \"<pid> is done\". Without a lock they all run at once:\n");
    bool mixed = run_three(false);
    if (mixed)
        printf("  -> interleaved: the three share the terminal with no order between them.\n");
    else
        printf("  -> (not interleaved this time: the scheduler ran them one by one)\n");
    printf("  With a process-shared Lock held from \"running\" to \"done\", one at a time:\n");
    run_three(true);
    printf("  -> each \"running\" is followed by its own \"done\" (the Lock lives in shared\n"
           "     memory: a threading.Lock would be copied into each child, not shared)\n");
    return 0;
}

/* ---- processes/pipe: Pipe() between the tour and a spawned child ---- */

static int echo_child(const void *arg, size_t len)
{
    struct kid k;
    conc_conn_t *c;
    if (!kid_get(&k, arg, len) || conc_conn_from_fd(k.n, true, true, &c) != 0)
        return 2;
    int served = 0, rc;
    void *msg;
    size_t n;
    while ((rc = conc_conn_recv_bytes(c, &msg, &n, 256)) == 0) { /* until EOFError */
        char *up = msg;
        for (size_t i = 0; i < n; i++)
            up[i] = (char)toupper((unsigned char)up[i]);
        rc = conc_conn_send_bytes(c, up, n);
        free(msg);
        if (rc != 0)
            break;
        served++;
    }
    conc_conn_close(c);
    return rc == CONC_EEOF ? served : 100;
}
CONC_REGISTER(echo_child);

static int sec_pipe(void)
{
    printf("  Pipe() gives two connected ends. The child gets one end: a spawned child\n"
           "  inherits the descriptor we mark inheritable and learns its number from its\n"
           "  argument (a fork child inherits it anyway; a fork-server child inherits\n"
           "  nothing -- give it a Queue by name instead). It answers in capitals.\n");
    struct kid k = {.parent = (int)getpid()};
    conc_conn_t *a = NULL, *b = NULL;
    CHECK(conc_pipe(true, &a, &b) == 0);
    if (!a || !b)
        return 1;
    CHECK(conc_conn_set_inheritable(b, true) == 0);
    k.n = conc_conn_fileno(b);
    conc_process_t *p = start_kid(echo_child, &k, "Echo", CONC_SPAWN);
    conc_conn_close(b); /* the child has its own copy now */
    int rc = conc_conn_poll(a, 0);
    printf("    a.poll() = %s: nothing to read yet\n", rc == 0 ? "True" : "False");
    CHECK(rc == CONC_ETIMEDOUT);
    static const char *const words[3] = {"hello", "from the", "parent"};
    for (int i = 0; i < 3; i++) {
        char buf[64], want[64];
        size_t n = 0;
        CHECK(conc_conn_send_bytes(a, words[i], strlen(words[i])) == 0);
        CHECK(conc_conn_poll(a, 10.0) == 0);
        rc = conc_conn_recv_bytes_into(a, buf, sizeof buf - 1, &n);
        buf[rc == 0 ? n : 0] = 0;
        size_t j = 0;
        for (; words[i][j]; j++)
            want[j] = (char)toupper((unsigned char)words[i][j]);
        want[j] = 0;
        printf("    a.send_bytes(b'%s') -> a.recv_bytes() = b'%s'\n", words[i], buf);
        CHECK(rc == 0 && strcmp(buf, want) == 0);
    }
    conc_conn_close(a); /* the child's recv now raises EOFError */
    int code = finish(p, 10.0);
    printf("  a.close(): the child reads EOF and exits with the number of messages: %d\n",
           code);
    CHECK(code == 3);
    return 0;
}

/* ---- processes/queue: producer-consumer (生产者消费者模型) across processes ---- */

enum { MPQ_JOBS = 20, MPQ_WORKERS = 2 };

struct answer {
    int pid, job, square;
};

static int producer_child(const void *arg, size_t len)
{
    struct kid k;
    conc_mpqueue_t *jobs;
    if (!kid_get(&k, arg, len) || conc_mpqueue_attach_name(&jobs, k.name1) != 0)
        return 2;
    for (int job = 1; job <= k.n; job++)
        if (conc_mpqueue_put(jobs, &job, sizeof job, true, 10.0) != 0)
            return 3;
    conc_mpqueue_free(jobs);
    return 0; /* exits at once: nothing left to flush */
}
CONC_REGISTER(producer_child);

static int consumer_child(const void *arg, size_t len)
{
    struct kid k;
    conc_mpqueue_t *jobs, *results;
    if (!kid_get(&k, arg, len) || conc_mpqueue_attach_name(&jobs, k.name1) != 0 ||
        conc_mpqueue_attach_name(&results, k.name2) != 0)
        return 200;
    int served = 0;
    for (;;) {
        int job;
        size_t n;
        if (conc_mpqueue_get(jobs, &job, sizeof job, &n, true, 10.0) != 0)
            return 201;
        if (n == 0) /* None: no more jobs */
            break;
        conc_sleep_thread(0.002); /* "work" */
        struct answer a = {(int)getpid(), job, job * job};
        if (conc_mpqueue_put(results, &a, sizeof a, true, 10.0) != 0)
            return 202;
        conc_mpqueue_task_done(jobs);
        served++;
    }
    conc_mpqueue_free(jobs);
    conc_mpqueue_free(results);
    return served;
}
CONC_REGISTER(consumer_child);

static int sec_mpqueue(void)
{
    printf("  A producer process fills a JoinableQueue with %d jobs and exits; %d consumer\n"
           "  processes square them into a results Queue. The queues live in shared\n"
           "  memory; each child attaches to them by name.\n",
           MPQ_JOBS, MPQ_WORKERS);
    conc_mpqueue_t *jobs = NULL, *results = NULL;
    CHECK(conc_mpqueue_new(&jobs, CONC_MPQ_JOINABLE, 0, 0) == 0);
    CHECK(conc_mpqueue_new(&results, CONC_MPQ_QUEUE, 0, 0) == 0);
    if (!jobs || !results) {
        conc_mpqueue_free(jobs);
        conc_mpqueue_free(results);
        return 1;
    }
    struct kid k = {.parent = (int)getpid(), .n = MPQ_JOBS};
    CHECK(conc_mpqueue_name(jobs, k.name1, sizeof k.name1) == 0);
    CHECK(conc_mpqueue_name(results, k.name2, sizeof k.name2) == 0);

    int code = finish(start_kid(producer_child, &k, "Producer", CONC_START_DEFAULT), 10.0);
    size_t queued = conc_mpqueue_qsize(jobs);
    printf("    producer: exitcode %d; jobs.qsize() = %zu -- its messages outlive it\n"
           "    (put() returns once the message is in shared memory: no feeder thread)\n",
           code, queued);
    CHECK(code == 0 && queued == MPQ_JOBS);

    conc_process_t *w[MPQ_WORKERS];
    int wpid[MPQ_WORKERS];
    for (int i = 0; i < MPQ_WORKERS; i++) {
        char name[16];
        snprintf(name, sizeof name, "Consumer-%d", i + 1);
        w[i] = start_kid(consumer_child, &k, name, CONC_START_DEFAULT);
        wpid[i] = w[i] ? conc_process_pid(w[i]) : 0;
    }
    int rc = conc_mpqueue_join(jobs, 20.0);
    printf("    jobs.join() -> %s: every job is task_done(); unfinished_tasks = %zu\n",
           rc == 0 ? "returned" : conc_errname(rc), conc_mpqueue_unfinished_tasks(jobs));
    CHECK(rc == 0);
    for (int i = 0; i < MPQ_WORKERS; i++)
        CHECK(conc_mpqueue_put(jobs, NULL, 0, true, 5.0) == 0); /* None: stop */

    long sum = 0;
    int got = 0, by[MPQ_WORKERS] = {0};
    bool seen[MPQ_JOBS + 1] = {false}, good = true;
    for (int i = 0; i < MPQ_JOBS; i++) {
        struct answer a;
        size_t n;
        if (conc_mpqueue_get(results, &a, sizeof a, &n, true, 10.0) != 0 || n != sizeof a) {
            good = false;
            break;
        }
        got++;
        sum += a.square;
        good = good && a.job >= 1 && a.job <= MPQ_JOBS && !seen[a.job] &&
               a.square == a.job * a.job;
        if (a.job >= 1 && a.job <= MPQ_JOBS)
            seen[a.job] = true;
        for (int j = 0; j < MPQ_WORKERS; j++)
            by[j] += a.pid == wpid[j];
    }
    int served = 0;
    for (int i = 0; i < MPQ_WORKERS; i++) {
        code = finish(w[i], 10.0);
        printf("    Consumer-%d (pid %d) squared %d jobs; exitcode %d\n", i + 1, wpid[i], by[i],
               code);
        CHECK(code == by[i]);
        served += by[i];
    }
    printf("  %d results, each job once, sum of squares %ld (expected 2870)\n", got, sum);
    CHECK(good && got == MPQ_JOBS && served == MPQ_JOBS && sum == 2870);
    conc_mpqueue_free(jobs);
    conc_mpqueue_free(results);
    return 0;
}

static const struct section processes_sections[] = {
    {"start", "multiprocessing.Process with fork, spawn and forkserver; exitcode", sec_start,
     "p = Process(target=square, args=(5,)); p.start(); p.join(); p.exitcode"},
    {"states", "进程状态 — process states: running, ready, blocked, zombie", sec_states,
     "p.start()  # ready -> running -> blocked on q.get() -> ... -> p.join()"},
    {"three", "three processes printing: interleaved, then one at a time with a Lock",
     sec_three, "with lock: print(pid, 'is running'); time.sleep(0.1); print(pid, 'is done')"},
    {"pipe", "multiprocessing.Pipe: messages between two processes", sec_pipe,
     "a, b = Pipe(); Process(target=echo, args=(b,)).start(); a.send_bytes(b'hello')"},
    {"queue", "multiprocessing.JoinableQueue: producer-consumer across processes", sec_mpqueue,
     "jobs = JoinableQueue(); Process(target=consume, args=(jobs, results)).start()"},
    {NULL, NULL, NULL, NULL},
};

/* ================================================ chapter: mutex (互斥锁) */

/* ---- mutex/counter: Value('l', 0) incremented by four processes ---- */

enum { COUNT_PROCS = 4, COUNT_ITERS = 10000 };

static int count_child(const void *arg, size_t len)
{
    struct kid k;
    conc_shm_t *s;
    struct lab *lab;
    conc_value_t *v;
    if (!kid_get(&k, arg, len) || !(lab = lab_attach(&k, &s)))
        return 2;
    if (conc_value_attach(k.name1, &v) != 0)
        return 3;
    volatile long *x = conc_value_ptr(v);
    conc_psemaphore_release(&lab->started, 1);
    if (conc_pevent_wait(&lab->go, 10.0) != 0)
        return 4;
    for (int i = 0; i < k.n; i++) {
        if (k.flag) /* with counter.get_lock(): */
            conc_value_acquire(v, true, CONC_FOREVER);
        long old = *x; /* counter.value += 1 is a read ... */
        if (i % 64 == 0)
            sched_yield(); /* ... another process may run here ... */
        *x = old + 1;  /* ... and a write */
        if (k.flag)
            conc_value_release(v);
    }
    conc_value_free(v);
    conc_shm_close(s);
    return 0;
}
CONC_REGISTER(count_child);

static long run_count(bool use_lock)
{
    struct lab *lab;
    struct kid k;
    conc_shm_t *s = lab_new(&lab, &k);
    conc_value_t *v = NULL;
    long zero = 0, result = -1;
    CHECK(conc_value_new(sizeof(long), &zero, true, &v) == 0); /* Value('l', 0) */
    if (!s || !v) {
        lab_free(s);
        conc_value_free(v);
        return -1;
    }
    snprintf(k.name1, sizeof k.name1, "%s", conc_value_name(v));
    k.n = COUNT_ITERS;
    k.flag = use_lock;
    conc_process_t *p[COUNT_PROCS];
    for (int i = 0; i < COUNT_PROCS; i++)
        p[i] = start_kid(count_child, &k, NULL, CONC_START_DEFAULT);
    if (wait_started(lab, COUNT_PROCS))
        conc_pevent_set(&lab->go);
    bool ok = true;
    for (int i = 0; i < COUNT_PROCS; i++)
        ok = finish(p[i], 20.0) == 0 && ok;
    CHECK(ok);
    if (ok)
        result = *(long *)conc_value_ptr(v);
    conc_value_free(v);
    lab_free(s);
    return result;
}

static int sec_counter(void)
{
    long expect = (long)COUNT_PROCS * COUNT_ITERS;
    printf("  counter = Value('l', 0) lives in shared memory. %d processes each do\n"
           "  `counter.value += 1` %d times: a read, then a write, and other processes\n"
           "  run in between (on other CPUs, or when the scheduler switches).\n",
           COUNT_PROCS, COUNT_ITERS);
    long lost = run_count(false);
    printf("  without the lock:          counter = %ld, expected %ld -> %ld updates lost\n",
           lost, expect, expect - lost);
    if (lost == expect)
        printf("    (no update was lost this time: the scheduler was kind)\n");
    CHECK(lost >= 0 && lost <= expect);
    long ok = run_count(true);
    printf("  with counter.get_lock():   counter = %ld, expected %ld -> %s\n", ok, expect,
           ok == expect ? "correct" : "WRONG");
    printf("  The lock is a mutex (互斥锁): between acquire() and release() only one\n"
           "  process runs the read-modify-write, so no update can be overwritten.\n");
    CHECK(ok == expect);
    return 0;
}

/* ---- mutex/dead_holder: beyond Python, a lock whose holder was killed ---- */

static int holder_child(const void *arg, size_t len)
{
    struct kid k;
    conc_shm_t *s;
    struct lab *lab;
    if (!kid_get(&k, arg, len) || !(lab = lab_attach(&k, &s)))
        return 2;
    if (conc_plock_acquire(&lab->lock, true, 10.0) != 0)
        return 3;
    conc_pevent_set(&lab->holding);
    conc_pevent_wait(&lab->stop, 30.0); /* killed before it releases */
    conc_plock_release(&lab->lock);
    conc_shm_close(s);
    return 0;
}
CONC_REGISTER(holder_child);

static int sec_dead_holder(void)
{
    printf("  A process takes the Lock and is killed (SIGKILL) before it releases it.\n"
           "  In Python the Lock stays locked forever and every later acquire() hangs.\n");
    struct lab *lab;
    struct kid k;
    conc_shm_t *s = lab_new(&lab, &k);
    if (!s)
        return 1;
    conc_process_t *p = start_kid(holder_child, &k, "Holder", CONC_START_DEFAULT);
    CHECK(conc_pevent_wait(&lab->holding, 10.0) == 0);
    int rc = conc_plock_acquire(&lab->lock, true, 0.1);
    printf("    holder has it: lock.acquire(timeout=0.1) -> %s\n", conc_errname(rc));
    CHECK(rc == CONC_ETIMEDOUT);
    CHECK(conc_process_kill(p) == 0);
    int code = finish(p, 10.0);
    printf("    p.kill(); p.join(): exitcode %d (-SIGKILL)\n", code);
    CHECK(code == -SIGKILL);
    double t0 = conc_monotonic();
    rc = conc_plock_acquire(&lab->lock, true, 5.0);
    printf("    lock.acquire(timeout=5) -> %s after %.0f ms: the waiter saw that the\n"
           "    holder is dead and took the lock over: it holds the lock now, and the\n"
           "    code (a robust mutex's EOWNERDEAD) says the data it guards may be\n"
           "    half-updated, to repair before use; recoveries = %u\n",
           conc_errname(rc), (conc_monotonic() - t0) * 1e3, conc_plock_recoveries(&lab->lock));
    CHECK(rc == CONC_EOWNERDEAD && conc_plock_recoveries(&lab->lock) == 1);
    if (rc == CONC_EOWNERDEAD)
        CHECK(conc_plock_release(&lab->lock) == 0);
    lab_free(s);
    return 0;
}

static const struct section mutex_sections[] = {
    {"counter", "a shared Value incremented by 4 processes, without and with its lock",
     sec_counter, "with counter.get_lock(): counter.value += 1"},
    {"dead_holder", "beyond Python: a Lock whose holder was killed is taken over",
     sec_dead_holder, "lock.acquire()  # in Python: hangs forever once the holder is killed"},
    {NULL, NULL, NULL, NULL},
};

/* ================================================ chapter: process pools (进程池) */

/* A pool keeps a few workers alive and hands them task after task. In a
 * process pool the task runs in another process, so it is a registered
 * function (CONC_POOL_REGISTER) that gets a copy of its argument bytes and
 * hands back result bytes (conc_pool_return): a pointer would mean nothing
 * over there. Python pickles the arguments; conc copies bytes through
 * shared memory. Every wait below is bounded: a broken pool fails a check
 * instead of hanging the tour. */

/* ---- pools/cpu: one CPU-bound job on a thread pool and on a process pool ---- */

enum { PRIME_LIMIT = 2000000, PRIME_SPANS = 16, PRIME_WORKERS = 2 };
enum { PRIMES_BELOW_LIMIT = 148933 }; /* pi(2,000,000), a number from the tables */
enum { BLOB_SIZE = 1 << 20, BLOBS = 16 };

struct span {
    long lo, hi; /* count the primes in [lo, hi) */
};

static atomic_int spans_counted_here; /* spans counted by THIS process */

static long count_primes(long lo, long hi)
{
    long n = 0;
    for (long x = lo < 2 ? 2 : lo; x < hi; x++) {
        bool prime = x == 2 || x % 2 != 0;
        for (long d = 3; prime && d * d <= x; d += 2)
            prime = x % d != 0;
        n += prime;
    }
    atomic_fetch_add(&spans_counted_here, 1);
    return n;
}

/* The thread-pool task: a pointer in, a number out. */
static void *primes_in_thread(void *arg)
{
    const struct span *s = arg;
    return (void *)(intptr_t)count_primes(s->lo, s->hi);
}

/* The process-pool task: bytes in, bytes out. */
static int primes_in_process(const void *arg, size_t len, conc_pool_out_t *out)
{
    struct span s;
    if (len != sizeof s) {
        conc_fail(CONC_EINVAL, "expected a span, got %zu bytes", len);
        return CONC_EINVAL;
    }
    memcpy(&s, arg, sizeof s);
    long n = count_primes(s.lo, s.hi);
    return conc_pool_return(out, &n, sizeof n);
}
CONC_POOL_REGISTER(primes_in_process);

static uint64_t checksum(const unsigned char *p, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum = sum * 31 + p[i];
    return sum;
}

static void *checksum_in_thread(void *arg) /* the data is shared: just a pointer */
{
    return (void *)(uintptr_t)checksum(arg, BLOB_SIZE);
}

static int checksum_in_process(const void *arg, size_t len, conc_pool_out_t *out)
{
    uint64_t sum = checksum(arg, len); /* arg is this worker's copy of the bytes */
    return conc_pool_return(out, &sum, sizeof sum);
}
CONC_POOL_REGISTER(checksum_in_process);

static int sec_cpu(void)
{
    printf("  Count the primes below %d, in %d spans, on %d workers. In Python only a\n"
           "  ProcessPoolExecutor runs this in parallel: the GIL lets one thread at a\n"
           "  time run Python code. C has no GIL, so both pools use every CPU here.\n",
           PRIME_LIMIT, PRIME_SPANS, PRIME_WORKERS);
    struct span spans[PRIME_SPANS];
    void *args[PRIME_SPANS], *thread_counts[PRIME_SPANS];
    long process_counts[PRIME_SPANS];
    for (int i = 0; i < PRIME_SPANS; i++) {
        spans[i].lo = (long)PRIME_LIMIT * i / PRIME_SPANS;
        spans[i].hi = (long)PRIME_LIMIT * (i + 1) / PRIME_SPANS;
        args[i] = &spans[i];
        thread_counts[i] = NULL;
        process_counts[i] = -1;
    }
    atomic_store(&spans_counted_here, 0);

    /* ThreadPoolExecutor */
    double t0 = conc_monotonic();
    conc_executor_t *tp = new_pool(PRIME_WORKERS, "primes");
    double t1 = conc_monotonic();
    conc_map_opts_t mo = {.timeout = 60.0};
    int trc = tp ? conc_map(tp, primes_in_thread, args, PRIME_SPANS, thread_counts, &mo)
                 : CONC_EINVAL;
    double t2 = conc_monotonic();
    int counted_by_threads = atomic_load(&spans_counted_here);

    /* ProcessPoolExecutor: the same spans, sent as bytes */
    conc_executor_t *pp = NULL;
    double t3 = conc_monotonic();
    int prc = conc_process_pool_new(&pp, &(conc_process_pool_opts_t){.max_workers = PRIME_WORKERS});
    double t4 = conc_monotonic();
    conc_results_t *res = NULL;
    if (prc == 0)
        prc = conc_process_pool_map(pp, primes_in_process, spans, sizeof spans[0], PRIME_SPANS, 1,
                                    60.0, &res);
    if (prc == 0)
        prc = conc_results_copy(res, process_counts, sizeof process_counts[0]);
    conc_results_free(res);
    double t5 = conc_monotonic();
    int counted_after_processes = atomic_load(&spans_counted_here);

    long thread_total = 0, process_total = 0;
    bool same = true;
    for (int i = 0; i < PRIME_SPANS; i++) {
        thread_total += (long)(intptr_t)thread_counts[i];
        process_total += process_counts[i];
        same = same && (long)(intptr_t)thread_counts[i] == process_counts[i];
    }
    printf("                          start the pool   count     primes found\n");
    printf("    ThreadPoolExecutor    %8.1f ms   %6.0f ms   %ld (%s)\n", (t1 - t0) * 1e3,
           (t2 - t1) * 1e3, thread_total, conc_errname(trc));
    printf("    ProcessPoolExecutor   %8.1f ms   %6.0f ms   %ld (%s)\n", (t4 - t3) * 1e3,
           (t5 - t4) * 1e3, process_total, conc_errname(prc));
    printf("  (The thread pool starts its threads with the first tasks; the process pool\n"
           "  starts its processes up front.) Both found %d primes, span by span the\n"
           "  same: %s. Timings are informal -- which pool wins is not the point.\n",
           PRIMES_BELOW_LIMIT, same ? "yes" : "NO");
    CHECK(trc == 0 && prc == 0);
    CHECK(thread_total == PRIMES_BELOW_LIMIT && process_total == PRIMES_BELOW_LIMIT && same);

    /* Isolation: the workers counted spans in their own copies of the
     * counter; the parent's did not move. */
    printf("  Isolation: count_primes() bumps a global counter. Here it reads %d after\n"
           "  the thread pool and still %d after the process pool: each worker process\n"
           "  changed its own copy (a stray write or a crash stays over there too).\n",
           counted_by_threads, counted_after_processes);
    CHECK(counted_by_threads == PRIME_SPANS && counted_after_processes == PRIME_SPANS);

    /* Copying: threads share memory, a process gets its own copy. */
    unsigned char *blob = malloc(BLOB_SIZE);
    CHECK(blob != NULL);
    if (blob && tp && pp) {
        for (size_t i = 0; i < BLOB_SIZE; i++)
            blob[i] = (unsigned char)(i * 7 + (i >> 9));
        void *bargs[BLOBS], *bsums[BLOBS];
        conc_buf_t bufs[BLOBS];
        uint64_t psums[BLOBS];
        for (int i = 0; i < BLOBS; i++) {
            bargs[i] = blob;
            bufs[i] = (conc_buf_t){blob, BLOB_SIZE};
        }
        double c0 = conc_monotonic();
        int rc1 = conc_map(tp, checksum_in_thread, bargs, BLOBS, bsums, &mo);
        double c1 = conc_monotonic();
        res = NULL;
        int rc2 = conc_process_pool_map(pp, checksum_in_process, bufs, 0, BLOBS, 1, 60.0, &res);
        if (rc2 == 0)
            rc2 = conc_results_copy(res, psums, sizeof psums[0]);
        conc_results_free(res);
        double c2 = conc_monotonic();
        bool equal = rc1 == 0 && rc2 == 0;
        for (int i = 0; equal && i < BLOBS; i++)
            equal = (uint64_t)(uintptr_t)bsums[i] == psums[i] &&
                    psums[i] == (uint64_t)(uintptr_t)bsums[0];
        printf("  Copying: checksum a 1 MiB buffer %d times. Threads get a pointer to it\n"
               "  (%.1f ms); processes get %d MiB of copies, written into and read out of\n"
               "  shared memory (%.1f ms). Same checksums: %s.\n",
               BLOBS, (c1 - c0) * 1e3, BLOBS, (c2 - c1) * 1e3, equal ? "yes" : "NO");
        CHECK(equal);
    }
    free(blob);
    printf("  So: processes buy isolation and cost start-up and copying. In C, reach\n"
           "  for a process pool when a task may crash, leak or must not share memory.\n");
    if (tp)
        CHECK(conc_executor_free(tp) == 0);
    if (pp)
        CHECK(conc_executor_free(pp) == 0);
    return 0;
}

/* ---- pools/imap: Pool.map, then imap_unordered with a progress bar ---- */

enum { RENDER_JOBS = 40, RENDER_PROCS = 4, SQUARES = 1000 };

static int square_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    long x;
    if (len != sizeof x) {
        conc_fail(CONC_EINVAL, "expected a long");
        return CONC_EINVAL;
    }
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(square_task);

/* A "render" of frame i: 20-50 ms of waiting, then the frame's number + 1000. */
static int render_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    int i;
    if (len != sizeof i) {
        conc_fail(CONC_EINVAL, "expected an int");
        return CONC_EINVAL;
    }
    memcpy(&i, arg, sizeof i);
    conc_sleep_thread(thumb_ms(i) / 1000.0);
    int r = 1000 + i;
    return conc_pool_return(out, &r, sizeof r);
}
CONC_POOL_REGISTER(render_task);

static int sec_imap(void)
{
    conc_pool_t *p = NULL;
    CHECK(conc_pool_new(&p, &(conc_pool_opts_t){.processes = RENDER_PROCS}) == 0);
    if (!p)
        return 1;

    /* Pool.map: all results at once, in order (default chunksize: the
     * items go in a few big chunks, so 1000 items are a handful of
     * messages). */
    long xs[SQUARES], ys[SQUARES];
    for (int i = 0; i < SQUARES; i++)
        xs[i] = i;
    conc_results_t *res = NULL;
    int rc = conc_pool_map(p, square_task, xs, sizeof xs[0], SQUARES, 0, &res);
    if (rc == 0)
        rc = conc_results_copy(res, ys, sizeof ys[0]);
    conc_results_free(res);
    long sum = 0;
    for (int i = 0; rc == 0 && i < SQUARES; i++)
        sum += ys[i];
    long expect = (long)(SQUARES - 1) * SQUARES * (2 * SQUARES - 1) / 6;
    printf("  p.map(square, range(%d)) -> %s, sum = %ld (expected %ld)\n", SQUARES,
           conc_errname(rc), sum, expect);
    CHECK(rc == 0 && sum == expect);

    /* imap_unordered: each result as soon as it is done. */
    int frames[RENDER_JOBS];
    int work_ms = 0;
    for (int i = 0; i < RENDER_JOBS; i++) {
        frames[i] = i;
        work_ms += thumb_ms(i);
    }
    printf("  %d frames, 20-50 ms each, on %d processes; the bar moves as results arrive:\n",
           RENDER_JOBS, RENDER_PROCS);
    struct bar b = {.tty = isatty(STDOUT_FILENO), .t0 = conc_monotonic(), .in_steps = true,
                    .quarter = 1};
    conc_pool_iter_t *it = NULL;
    CHECK(conc_pool_imap_unordered(p, render_task, frames, sizeof frames[0], RENDER_JOBS, 1, &it) ==
          0);
    int seen[RENDER_JOBS] = {0}, order[RENDER_JOBS];
    for (int i = 0; i < RENDER_JOBS; i++)
        order[i] = -1;
    size_t got = 0;
    bool right = true;
    int last = 0;
    while (it) {
        const void *data;
        size_t len, index;
        last = conc_pool_iter_next(it, 10.0, &data, &len, &index);
        if (last != 0)
            break;
        int r = 0;
        right = right && len == sizeof r && index < RENDER_JOBS;
        if (!right)
            break;
        memcpy(&r, data, sizeof r);
        right = r == 1000 + (int)index;
        seen[index]++;
        if (got < RENDER_JOBS)
            order[got] = (int)index;
        got++;
        draw_bar(got, RENDER_JOBS, &b);
    }
    double took = conc_monotonic() - b.t0;
    conc_pool_iter_free(it);
    bool each_once = true, in_order = true;
    for (int i = 0; i < RENDER_JOBS; i++)
        each_once = each_once && seen[i] == 1;
    for (size_t i = 0; i < got && i < RENDER_JOBS; i++)
        in_order = in_order && order[i] == (int)i;
    printf("  next() ended with %s after %zu results; every frame exactly once: %s;\n"
           "  arrival order starts %d, %d, %d, %d, %d ... (%s); %d ms of work took %.0f ms\n",
           conc_errname(last), got, each_once ? "yes" : "NO", order[0], order[1], order[2],
           order[3], order[4], in_order ? "in order this time" : "finish order, not item order",
           work_ms, took * 1e3);
    CHECK(last == CONC_EEOF && got == RENDER_JOBS && right && each_once);
    CHECK(b.calls == RENDER_JOBS && b.in_steps);

    CHECK(conc_pool_close(p) == 0); /* p.close(); p.join() */
    CHECK(conc_pool_join(p, 10.0) == 0);
    CHECK(conc_pool_free(p) == 0);
    return 0;
}

/* ---- pools/broken: a worker killed on purpose ---- */

enum { BROKEN_TASKS = 4 };

/* Says which process runs it (in the lab), then waits -- until the tour
 * sets lab->stop, or the worker is killed. */
static int napper_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    struct kid k;
    conc_shm_t *s;
    struct lab *lab;
    (void)out;
    if (!kid_get(&k, arg, len) || !(lab = lab_attach(&k, &s))) {
        conc_fail(CONC_EINVAL, "no lab");
        return CONC_EINVAL;
    }
    int slot = atomic_fetch_add(&lab->nlog, 1);
    if (slot < LOG_CAP)
        lab->log[slot].pid = (int)getpid();
    conc_psemaphore_release(&lab->started, 1);
    conc_pevent_wait(&lab->stop, 30.0);
    conc_shm_close(s);
    return 0;
}
CONC_POOL_REGISTER(napper_task);

static bool is_pid_in(int pid, const int *pids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

static int sec_broken(void)
{
    struct lab *lab;
    struct kid k;
    conc_shm_t *s = lab_new(&lab, &k);
    if (!s)
        return 1;

    /* ProcessPoolExecutor: a dead worker breaks the pool. */
    printf("  ProcessPoolExecutor(2): two tasks run (they wait), two are queued. Then\n"
           "  one worker is killed with SIGKILL:\n");
    conc_executor_t *ex = NULL;
    CHECK(conc_process_pool_new(&ex, &(conc_process_pool_opts_t){.max_workers = 2}) == 0);
    conc_future_t *fs[BROKEN_TASKS] = {0};
    for (int i = 0; ex && i < BROKEN_TASKS; i++)
        CHECK(conc_process_pool_submit(ex, &fs[i], napper_task, &k, sizeof k) == 0);
    int pids[8];
    size_t np = ex ? conc_process_pool_pids(ex, pids, 8) : 0;
    if (ex && wait_started(lab, 2) && np > 0) {
        double t0 = conc_monotonic();
        CHECK(kill(pids[0], SIGKILL) == 0);
        int broken = 0;
        double slowest = 0;
        const char *first_msg = NULL;
        for (int i = 0; i < BROKEN_TASKS; i++) {
            int code = 0;
            const char *msg = NULL;
            if (!fs[i] || conc_future_exception(fs[i], 5.0, &code, &msg) != 0)
                continue; /* not done within 5 s: counted as not broken */
            double at = conc_monotonic() - t0;
            slowest = at > slowest ? at : slowest;
            broken += code == CONC_EBROKEN;
            if (!first_msg)
                first_msg = msg;
        }
        printf("    kill -9 %d: all %d futures failed with %s within %.1f ms, none hangs:\n"
               "      \"%s\"\n",
               pids[0], broken, broken == BROKEN_TASKS ? "CONC_EBROKEN" : "?? (see below)",
               slowest * 1e3, first_msg ? first_msg : "(no message)");
        CHECK(broken == BROKEN_TASKS);
        conc_future_t *late = NULL;
        int rc = conc_process_pool_submit(ex, &late, napper_task, &k, sizeof k);
        printf("    a later submit -> %s\n",
               rc == CONC_EBROKEN ? "CONC_EBROKEN (BrokenProcessPool)" : conc_errname(rc));
        CHECK(rc == CONC_EBROKEN && late == NULL);
        if (late)
            conc_future_free(late);
    }
    for (int i = 0; i < BROKEN_TASKS; i++)
        if (fs[i])
            conc_future_free(fs[i]);
    conc_pevent_set(&lab->stop); /* if the pool did not break, its tasks end now */
    if (ex)
        CHECK(conc_executor_free(ex) == 0);
    conc_pevent_clear(&lab->stop);
    conc_psemaphore_init(&lab->started, 0);

    /* multiprocessing.Pool: the dead worker is replaced. */
    printf("  multiprocessing.Pool(2): one task runs (it waits); its worker is killed.\n"
           "  Python's Pool would wait for that result forever. conc's:\n");
    atomic_store(&lab->nlog, 0);
    conc_pool_t *p = NULL;
    CHECK(conc_pool_new(&p, &(conc_pool_opts_t){.processes = 2}) == 0);
    conc_future_t *f = NULL;
    if (p)
        CHECK(conc_pool_apply_async(p, napper_task, &k, sizeof k, NULL, NULL, NULL, &f) == 0);
    if (p && f && wait_started(lab, 1)) {
        int victim = lab->log[0].pid, before[2] = {0, 0}, after[2] = {0, 0};
        size_t nb = conc_pool_pids(p, before, 2);
        CHECK(nb == 2 && is_pid_in(victim, before, nb));
        double t0 = conc_monotonic();
        CHECK(kill(victim, SIGKILL) == 0);
        int code = 0;
        const char *msg = NULL;
        int rc = conc_future_exception(f, 5.0, &code, &msg);
        printf("    kill -9 %d: its task failed after %.1f ms with %s:\n      \"%s\"\n", victim,
               (conc_monotonic() - t0) * 1e3,
               rc != 0 ? conc_errname(rc) : code == CONC_EBROKEN ? "CONC_EBROKEN" : conc_errname(code),
               msg ? msg : "(no message)");
        CHECK(rc == 0 && code == CONC_EBROKEN);
        /* The replacement comes up in the background. */
        size_t na = 0;
        double until = conc_monotonic() + 10.0;
        while ((na = conc_pool_pids(p, after, 2)) != 2 || is_pid_in(victim, after, na)) {
            if (conc_monotonic() > until)
                break;
            conc_sleep_thread(0.005);
        }
        printf("    workers before: %d %d; after: %d %d (the dead one replaced)\n", before[0],
               before[1], after[0], after[1]);
        CHECK(na == 2 && !is_pid_in(victim, after, na));
        long x = 12;
        void *y = NULL;
        size_t ylen = 0;
        rc = conc_pool_apply(p, square_task, &x, sizeof x, &y, &ylen);
        long yv = rc == 0 && ylen == sizeof yv ? *(long *)y : -1;
        printf("    and the pool goes on: p.apply(square, (12,)) -> %ld\n", yv);
        CHECK(rc == 0 && yv == 144);
        free(y);
    }
    if (f)
        conc_future_free(f);
    conc_pevent_set(&lab->stop);
    if (p)
        CHECK(conc_pool_free(p) == 0);
    lab_free(s);
    return 0;
}

/* ---- pools/manager: a shared dict and a Lock, in a server process ---- */

enum { MGR_PROCS = 3, MGR_ITERS = 100 };

struct mgr_job {            /* what a worker needs to find the manager */
    char address[256];
    unsigned char key[64];
    size_t keylen;
    int id, use_lock;
};

/* d["count"] += 1, MGR_ITERS times, with or without `with lock:`; then
 * d["worker-<id>"] = its pid. */
static int mgr_worker(const void *arg, size_t len)
{
    struct mgr_job job;
    if (len != sizeof job)
        return 2;
    memcpy(&job, arg, sizeof job);
    conc_manager_t *m = NULL;
    if (conc_manager_connect(&m, job.address, job.key, job.keylen, 5.0) != 0)
        return 3; /* BaseManager(address, authkey).connect() */
    conc_mdict_t *d = NULL;
    conc_mlock_t *lock = NULL;
    int code = 0;
    if (conc_manager_dict(m, "tour-stats", &d) != 0 || conc_manager_lock(m, "tour-lock", &lock) != 0)
        code = 4;
    for (int i = 0; !code && i < MGR_ITERS; i++) {
        if (job.use_lock && conc_mlock_acquire(lock, true, 10.0) != 0) {
            code = 5;
            break;
        }
        long n = 0;
        void *v = NULL;
        size_t vlen = 0;
        int rc = conc_mdict_get(d, "count", 5, &v, &vlen); /* n = d.get("count", 0) */
        if (rc == 0 && vlen == sizeof n)
            memcpy(&n, v, sizeof n);
        else if (rc != CONC_EKEY)
            code = 6;
        free(v);
        n++;
        if (!code && conc_mdict_set(d, "count", 5, &n, sizeof n) != 0) /* d["count"] = n */
            code = 7;
        if (job.use_lock)
            conc_mlock_release(lock);
    }
    char key[32];
    int pid = (int)getpid();
    int klen = snprintf(key, sizeof key, "worker-%d", job.id);
    if (!code && conc_mdict_set(d, key, (size_t)klen, &pid, sizeof pid) != 0)
        code = 8;
    conc_mlock_free(lock);
    conc_mdict_free(d);
    conc_manager_free(m); /* only closes: the server is not ours */
    return code;
}
CONC_REGISTER(mgr_worker);

static long run_mgr_workers(conc_mdict_t *d, struct mgr_job *job, bool use_lock)
{
    conc_process_t *ps[MGR_PROCS] = {0};
    job->use_lock = use_lock;
    CHECK(conc_mdict_clear(d) == 0);
    for (int i = 0; i < MGR_PROCS; i++) {
        job->id = i;
        int rc = conc_process_new(&ps[i], mgr_worker, job, sizeof *job, NULL);
        if (rc == 0)
            rc = conc_process_start(ps[i]);
        CHECK(rc == 0);
    }
    bool ok = true;
    for (int i = 0; i < MGR_PROCS; i++) {
        int code = finish(ps[i], 30.0);
        if (code != 0)
            printf("    !! worker %d ended with exit code %d\n", i, code);
        ok = ok && code == 0;
    }
    CHECK(ok);
    long n = -1;
    void *v = NULL;
    size_t vlen = 0;
    if (conc_mdict_get(d, "count", 5, &v, &vlen) == 0 && vlen == sizeof n)
        memcpy(&n, v, sizeof n);
    free(v);
    return n;
}

static int sec_manager(void)
{
    conc_manager_t *m = NULL;
    int rc = conc_manager_start(&m, NULL); /* Manager(): a server process, a random authkey */
    CHECK(rc == 0);
    if (rc != 0)
        return 1;
    conc_mdict_t *d = NULL;
    conc_mlock_t *lock = NULL;
    CHECK(conc_manager_dict(m, "tour-stats", &d) == 0);
    CHECK(conc_manager_lock(m, "tour-lock", &lock) == 0);
    struct mgr_job job = {0};
    snprintf(job.address, sizeof job.address, "%s", conc_manager_address(m));
    const void *key = conc_manager_authkey(m, &job.keylen);
    if (key && job.keylen <= sizeof job.key)
        memcpy(job.key, key, job.keylen);
    printf("  The manager (pid %d) serves at %s. %d processes connect\n"
           "  with its address and authkey and do d[\"count\"] += 1, %d times each:\n",
           conc_manager_pid(m), conc_manager_address(m), MGR_PROCS, MGR_ITERS);
    long expect = (long)MGR_PROCS * MGR_ITERS;
    if (d && lock) {
        long lost = run_mgr_workers(d, &job, false);
        printf("    without the lock: count = %ld of %ld (a get and a set are two calls;\n"
               "    another process can run in between)\n", lost, expect);
        CHECK(lost > 0 && lost <= expect);
        long ok = run_mgr_workers(d, &job, true);
        printf("    with m.Lock():    count = %ld of %ld -> %s\n", ok, expect,
               ok == expect ? "correct" : "WRONG");
        CHECK(ok == expect);
        size_t n = 0;
        CHECK(conc_mdict_len(d, &n) == 0);
        printf("    the dict holds %zu keys: \"count\" and one \"worker-<i>\" per process\n", n);
        CHECK(n == 1 + MGR_PROCS);
    }
    /* A dead manager: proxies report it instead of hanging. */
    CHECK(conc_manager_shutdown(m) == 0);
    rc = d ? conc_mdict_len(d, &(size_t){0}) : CONC_EINVAL;
    printf("  m.shutdown(); len(d) -> %s: the server is gone, the proxy says so\n"
           "  at once (Python raises EOFError or BrokenPipeError)\n",
           rc == CONC_EBROKEN ? "CONC_EBROKEN" : conc_errname(rc));
    CHECK(rc == CONC_EBROKEN);
    if (lock)
        conc_mlock_free(lock);
    if (d)
        conc_mdict_free(d);
    CHECK(conc_manager_free(m) == 0);
    return 0;
}

#include "tour/one_word.h"

static const struct section pools_sections[] = {
    {"cpu", "a CPU-bound job on ThreadPoolExecutor and ProcessPoolExecutor, side by side",
     sec_cpu, "with ProcessPoolExecutor() as ex: total = sum(ex.map(count_primes, spans))"},
    {"one-word", "ThreadPoolExecutor -> ProcessPoolExecutor: the same bytes task, one word changed",
     sec_one_word, "ex = ProcessPoolExecutor()  # was ThreadPoolExecutor(); the rest unchanged"},
    {"imap", "Pool.map, then Pool.imap_unordered with a progress bar", sec_imap,
     "for r in pool.imap_unordered(render, frames): bar.update(1)"},
    {"broken", "a worker killed on purpose: BrokenProcessPool, and a Pool that replaces it",
     sec_broken, "os.kill(pid, SIGKILL); f.result()  # BrokenProcessPool, not a hang"},
    {"manager", "multiprocessing.Manager: a shared dict and a Lock used by 3 processes",
     sec_manager, "d, lock = m.dict(), m.Lock(); with lock: d['count'] = d.get('count', 0) + 1"},
    {NULL, NULL, NULL, NULL},
};

/* ================================================ chapter: green threads (协程) */

/* What concurrency needs at its core is two things: a way to switch from
 * one task to another, and a place where each suspended task keeps its
 * state until it runs again. A green thread is the smallest complete answer:
 * its state is its own stack (its local variables and return addresses stay
 * there while it is suspended), and a switch saves a few registers -- the
 * stack pointer, the resume address, the callee-saved ones -- and loads the
 * other task's. No system call, no kernel: the hub of the OS thread decides
 * who runs next, whenever the running green thread blocks or yields. */

/* ---- green/switch: two green threads hand control back and forth ---- */

enum { PP_ROUNDS = 4, PP_BENCH = 100000 };

struct pingpong {
    char log[PP_ROUNDS * 2][24];
    int n;
    const void *stack_of[2]; /* where each one's loop counter lives */
};

struct player {
    struct pingpong *pp;
    int who; /* 0 = ping, 1 = pong */
};

static void *play(void *arg)
{
    struct player *me = arg;
    const char *name = me->who ? "pong" : "ping";
    for (int i = 0; i < PP_ROUNDS; i++) { /* i lives on this green thread's own stack */
        if (i == 0)
            me->pp->stack_of[me->who] = &i;
        snprintf(me->pp->log[me->pp->n++], sizeof me->pp->log[0], "%s %d", name, i);
        conc_yield(); /* gevent.sleep(0): hand control to the other one */
    }
    return NULL;
}

static void *spin_yield(void *arg)
{
    for (int i = 0; i < PP_BENCH; i++)
        conc_yield();
    return arg;
}

static int sec_switch(void)
{
    struct pingpong pp = {.n = 0};
    struct player p[2] = {{&pp, 0}, {&pp, 1}};
    conc_green_t *g[2];
    printf("  two green threads on this one OS thread; each records a step, then yields:\n");
    CHECK(conc_go(&g[0], play, &p[0]) == 0);
    CHECK(conc_go(&g[1], play, &p[1]) == 0);
    /* main blocks in a conc call, so the hub runs the green threads */
    CHECK(conc_green_joinall(g, 2, 10.0) == 0);
    printf("    ");
    for (int i = 0; i < pp.n; i++)
        printf("%s%s", pp.log[i], i + 1 < pp.n ? " -> " : "\n");
    CHECK(pp.n == PP_ROUNDS * 2);
    for (int i = 0; i < pp.n; i++) {
        char want[32];
        snprintf(want, sizeof want, "%s %d", i % 2 ? "pong" : "ping", i / 2);
        CHECK(strcmp(pp.log[i], want) == 0);
    }
    long gap = labs((long)((const char *)pp.stack_of[0] - (const char *)pp.stack_of[1]));
    printf("  each kept its loop counter on its own stack while the other ran:\n"
           "    ping's `i` at %p, pong's at %p (%ld KiB apart)\n",
           pp.stack_of[0], pp.stack_of[1], gap / 1024);
    CHECK(pp.stack_of[0] != pp.stack_of[1]);
    for (int i = 0; i < 2; i++)
        conc_green_free(g[i]);

    /* what one switch costs (printed, not checked: the machine is shared) */
    double t0 = conc_monotonic();
    CHECK(conc_go(&g[0], spin_yield, NULL) == 0);
    CHECK(conc_go(&g[1], spin_yield, NULL) == 0);
    CHECK(conc_green_joinall(g, 2, 30.0) == 0);
    double dt = conc_monotonic() - t0;
    printf("  %d yields each, back and forth: %.1f ms, about %.0f ns per switch\n"
           "  (an OS thread switch goes through the kernel: a few microseconds)\n",
           PP_BENCH, dt * 1e3, dt * 1e9 / (2.0 * PP_BENCH));
    for (int i = 0; i < 2; i++)
        conc_green_free(g[i]);
    return 0;
}

/* ---- green/sleepers: 10,000 green threads asleep at once ---- */

/* TSan makes every green thread's stack a fiber and caps fibers like
 * threads (about 8,000): a TSan build of the tour runs fewer sleepers. */
#if defined(__SANITIZE_THREAD__)
#define TOUR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TOUR_TSAN 1
#endif
#endif
#ifdef TOUR_TSAN
enum { SLEEPERS = 400 };
#else
enum { SLEEPERS = 10000 };
#endif
#define SLEEP_S 0.2
static atomic_int asleep, slept_ok;

static void *sleeper(void *arg)
{
    (void)arg;
    atomic_fetch_add(&asleep, 1);
    if (conc_sleep(SLEEP_S) == 0) /* parks only this green thread */
        atomic_fetch_add(&slept_ok, 1);
    return NULL;
}

/* Field `field` (1-based) of /proc/self/statm, in bytes; 0 if unreadable. */
static double statm_bytes(int field)
{
    unsigned long v[7] = {0};
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return 0;
    int n = fscanf(f, "%lu %lu %lu %lu %lu %lu %lu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]);
    fclose(f);
    return n >= field ? (double)v[field - 1] * (double)sysconf(_SC_PAGESIZE) : 0;
}

static int sec_sleepers(void)
{
    conc_green_t **g = calloc(SLEEPERS, sizeof *g);
    if (!g)
        return 1;
    atomic_store(&asleep, 0);
    atomic_store(&slept_ok, 0);
    double rss0 = statm_bytes(2), vsz0 = statm_bytes(1);
    double t0 = conc_monotonic();
    for (int i = 0; i < SLEEPERS; i++)
        CHECK(conc_go(&g[i], sleeper, NULL) == 0);
    double spawned = conc_monotonic() - t0;
    conc_yield(); /* let every one of them start and fall asleep */
    double rss1 = statm_bytes(2), vsz1 = statm_bytes(1);
    int n = atomic_load(&asleep);
    printf("  %d green threads (spawned in %.0f ms) each call conc_sleep(%.1f); all %d are\n"
           "  asleep now\n",
           SLEEPERS, spawned * 1e3, SLEEP_S, n);
    CHECK(n == SLEEPERS);
    CHECK(conc_green_joinall(g, SLEEPERS, 30.0) == 0);
    double wall = conc_monotonic() - t0;
    printf("  joinall: %d slept the full %.1f s; wall time %.3f s -- one sleep, not %d of them\n",
           atomic_load(&slept_ok), SLEEP_S, wall, SLEEPERS);
    CHECK(atomic_load(&slept_ok) == SLEEPERS);
    CHECK(wall >= SLEEP_S && wall < 20 * SLEEP_S);
    double per_rss = (rss1 - rss0) / SLEEPERS, per_vsz = (vsz1 - vsz0) / SLEEPERS;
    printf("  /proc/self/statm while they slept: +%.1f MiB resident = %.1f KiB per green thread\n"
           "  (+%.0f KiB of address space each: a 128 KiB stack the kernel backs page by\n"
           "  page as it is touched; an OS thread reserves 8 MiB and needs a kernel task)\n",
           (rss1 - rss0) / 1048576.0, per_rss / 1024, per_vsz / 1024);
#ifdef TOUR_TSAN
    printf("  (under TSan each green thread is also a TSan fiber, which costs TSan far\n"
           "  more memory than the green thread itself)\n");
#else
    CHECK(per_rss < 64 * 1024); /* a sanity bound, far above the ~1 page expected */
#endif
    for (int i = 0; i < SLEEPERS; i++)
        conc_green_free(g[i]);
    free(g);
    return 0;
}

/* ---- green/echo: a green echo server and its clients ---- */

enum { ECHO_CLIENTS = 3, ECHO_MSGS = 2 };
static int echo_port;
static atomic_int echo_conns;
static long echo_main_tid;

static void *echo_conn(void *arg) /* one green thread per connection */
{
    int c = (int)(intptr_t)arg;
    char buf[256];
    ssize_t n;
    while ((n = conc_read(c, buf, sizeof buf, 10.0)) > 0) /* parks while no data */
        if (conc_write_all(c, buf, (size_t)n, NULL, 10.0) != 0)
            break;
    conc_close(c);
    return NULL;
}

static void *echo_server(void *arg)
{
    int lfd = (int)(intptr_t)arg, c;
    while ((c = conc_accept(lfd, NULL, NULL, CONC_FOREVER)) >= 0) { /* CONC_EKILLED ends it */
        atomic_fetch_add(&echo_conns, 1);
        conc_go(NULL, echo_conn, (void *)(intptr_t)c); /* detached: frees itself */
    }
    return (void *)(intptr_t)c;
}

static void *echo_client(void *arg)
{
    int id = (int)(intptr_t)arg, fd, rc;
    if ((rc = conc_tcp_dial("127.0.0.1", echo_port, 5.0, &fd)) != 0)
        return conc_fail(rc, "client %d: dial: %s", id, conc_strerror(rc));
    for (int i = 0; i < ECHO_MSGS; i++) {
        char out[64], in[64] = {0};
        int n = snprintf(out, sizeof out, "hello %d from client %d", i, id);
        if ((rc = conc_write_all(fd, out, (size_t)n, NULL, 5.0)) != 0 ||
            (rc = conc_read_exact(fd, in, (size_t)n, NULL, 5.0)) != 0) {
            conc_close(fd);
            return conc_fail(rc, "client %d: %s", id, conc_strerror(rc));
        }
        printf("    client %d (OS thread %ld): sent \"%s\", got back \"%s\"\n", id,
               conc_get_native_id(), out, in);
        if (memcmp(in, out, (size_t)n) != 0 || conc_get_native_id() != echo_main_tid) {
            conc_close(fd);
            return conc_fail(CONC_EFAILED, "client %d: wrong echo or wrong OS thread", id);
        }
    }
    conc_close(fd);
    return NULL;
}

static int sec_echo(void)
{
    int lfd, rc;
    CHECK((rc = conc_tcp_listen("127.0.0.1", 0, 0, &lfd)) == 0);
    if (rc != 0)
        return 1;
    echo_port = conc_socket_port(lfd);
    echo_main_tid = conc_get_native_id();
    atomic_store(&echo_conns, 0);
    printf("  server: conc_tcp_listen(\"127.0.0.1\", 0) -> port %d; a green thread accepts and\n"
           "  spawns a green thread per connection; %d green clients dial it, all on OS thread %ld:\n",
           echo_port, ECHO_CLIENTS, echo_main_tid);
    conc_green_t *srv, *cl[ECHO_CLIENTS];
    CHECK(conc_go(&srv, echo_server, (void *)(intptr_t)lfd) == 0);
    for (int i = 0; i < ECHO_CLIENTS; i++)
        CHECK(conc_go(&cl[i], echo_client, (void *)(intptr_t)i) == 0);
    CHECK(conc_green_joinall(cl, ECHO_CLIENTS, 20.0) == 0);
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        const char *msg;
        int code = conc_green_exception(cl[i], &msg);
        if (code)
            printf("    !! %s\n", msg);
        CHECK(conc_green_dead(cl[i]) && code == 0);
        conc_green_free(cl[i]);
    }
    CHECK(conc_green_kill(srv, true, 5.0) == 0); /* its conc_accept returns CONC_EKILLED */
    void *r = NULL;
    CHECK(conc_green_get(srv, 0, &r) == 0);
    printf("  %d connections served; server killed: its accept returned %s\n",
           atomic_load(&echo_conns), conc_errname(CONC_EKILLED));
    CHECK(atomic_load(&echo_conns) == ECHO_CLIENTS);
    CHECK(conc_green_killed(srv));
    conc_green_free(srv);
    conc_close(lfd);
    return 0;
}

/* ---- green/future: waiting on a thread pool while the others run ---- */

static atomic_int ticks, ticks_at_result, waiting_done;

static void *slow_square(void *arg) /* runs on a pool worker (an OS thread) */
{
    conc_sleep_thread(0.2); /* stands for blocking work: a C library call, disk... */
    intptr_t x = (intptr_t)arg;
    return (void *)(x * x);
}

static void *await_future(void *arg)
{
    void *r = NULL;
    int rc = conc_future_result(arg, 10.0, &r); /* parks this green thread only */
    atomic_store(&ticks_at_result, atomic_load(&ticks));
    atomic_store(&waiting_done, 1);
    return rc == 0 ? r : conc_fail(rc, "result: %s", conc_strerror(rc));
}

static void *ticker(void *arg)
{
    double t0 = *(double *)arg;
    while (!atomic_load(&waiting_done)) {
        int n = atomic_fetch_add(&ticks, 1) + 1;
        printf("    ticker: tick %d at %3.0f ms\n", n, (conc_monotonic() - t0) * 1e3);
        conc_sleep(0.05);
    }
    return NULL;
}

static int sec_future(void)
{
    conc_executor_t *ex = NULL;
    conc_thread_pool_opts_t o = {.max_workers = 1, .thread_name_prefix = "Worker"};
    CHECK(conc_thread_pool_new(&ex, &o) == 0);
    if (!ex)
        return 1;
    atomic_store(&ticks, 0);
    atomic_store(&waiting_done, 0);
    conc_future_t *f = NULL;
    CHECK(conc_submit(ex, &f, slow_square, (void *)(intptr_t)12) == 0);
    double t0 = conc_monotonic();
    printf("  a pool worker computes 12*12 slowly (0.2 s); green thread A waits on the\n"
           "  future with conc_future_result, green thread B ticks meanwhile:\n");
    conc_green_t *g[2];
    CHECK(conc_go(&g[0], await_future, f) == 0);
    CHECK(conc_go(&g[1], ticker, &t0) == 0);
    void *r = NULL;
    CHECK(conc_green_get(g[0], 10.0, &r) == 0);
    CHECK(conc_green_join(g[1], 10.0) == 0);
    printf("  A got %ld after %.0f ms; B had ticked %d times by then: waiting on the\n"
           "  future parked only A, not the OS thread\n",
           (long)(intptr_t)r, (conc_monotonic() - t0) * 1e3, atomic_load(&ticks_at_result));
    CHECK((intptr_t)r == 144);
    CHECK(atomic_load(&ticks_at_result) >= 1);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    conc_future_free(f);
    conc_executor_free(ex);

    /* the shorthand: gevent's get_hub().threadpool.spawn(fn, arg).get() */
    CHECK(conc_green_offload(slow_square, (void *)(intptr_t)7, &r) == 0);
    printf("  conc_green_offload(slow_square, 7) -> %ld (conc's default pool; the caller parks)\n",
           (long)(intptr_t)r);
    CHECK((intptr_t)r == 49);
    return 0;
}

/* ---- green/timeout: a Timeout scope cuts a wait ---- */

static void *impatient(void *arg)
{
    conc_queue_t *q = arg;
    void *item;
    double t0 = conc_monotonic();
    conc_timeout_begin(0.1); /* with gevent.Timeout(0.1): */
    int rc = conc_queue_get(q, &item, true, CONC_FOREVER);
    int fired = conc_timeout_end();
    printf("    with Timeout(0.1): q.get() -> %s after %.0f ms; the scope fired: %s\n",
           conc_errname(rc), (conc_monotonic() - t0) * 1e3, fired == 1 ? "yes" : "no");
    if (rc != CONC_ETIMEDOUT || fired != 1)
        return conc_fail(CONC_EFAILED, "scope did not cut the get");

    t0 = conc_monotonic();
    conc_timeout_begin(5.0);
    conc_timeout_begin(0.05); /* nested: the earliest deadline wins */
    rc = conc_sleep(10);
    int inner = conc_timeout_end(), outer = conc_timeout_end();
    printf("    Timeout(5) around Timeout(0.05): sleep(10) -> %s after %.0f ms; fired: inner %s, "
           "outer %s\n",
           conc_errname(rc), (conc_monotonic() - t0) * 1e3, inner == 1 ? "yes" : "no",
           outer == 1 ? "yes" : "no");
    if (rc != CONC_ETIMEDOUT || inner != 1 || outer != 0)
        return conc_fail(CONC_EFAILED, "nested scopes");

    conc_timeout_begin(1.0);
    rc = conc_queue_get(q, &item, true, 0.02); /* its own, shorter timeout */
    int fired2 = conc_timeout_end();
    printf("    Timeout(1) around q.get(timeout=0.02) -> %s (its own timeout: queue.Empty, not\n"
           "    TimeoutError, so the two can be told apart); the scope fired: %s\n",
           conc_errname(rc), fired2 == 1 ? "yes" : "no");
    if (rc != CONC_EEMPTY || fired2 != 0)
        return conc_fail(CONC_EFAILED, "own timeout");
    return NULL;
}

static int sec_timeout(void)
{
    conc_queue_t *q = NULL;
    CHECK(conc_queue_new(&q, CONC_FIFO, 0) == 0);
    if (!q)
        return 1;
    printf("  a green thread waits on an empty queue with no timeout of its own, inside\n"
           "  a scope: whatever blocks in the scope gives up when the scope runs out\n");
    conc_green_t *g;
    CHECK(conc_go(&g, impatient, q) == 0);
    void *r;
    int rc = conc_green_get(g, 10.0, &r);
    if (rc != 0) {
        const char *msg = NULL;
        conc_green_exception(g, &msg);
        printf("    !! %s\n", msg ? msg : conc_errname(rc));
    }
    CHECK(rc == 0);
    conc_green_free(g);
    conc_queue_free(q, NULL);
    return 0;
}

/* ---- green/kill: Greenlet.kill ---- */

static atomic_int victim_rc, never_ran;

static void *victim(void *arg)
{
    (void)arg;
    atomic_store(&victim_rc, conc_sleep(10)); /* a long nap... */
    return (void *)"returned after the kill"; /* get() reports NULL: killed is a clean end */
}

static void *never(void *arg)
{
    (void)arg;
    atomic_store(&never_ran, 1);
    return NULL;
}

static void obituary(conc_green_t *g, void *arg)
{
    (void)arg;
    printf("    link: %s ended (killed: %s)\n", conc_green_name(g), conc_green_killed(g) ? "yes" : "no");
}

static int sec_kill(void)
{
    conc_green_opts_t o = {.name = "Sleepy"};
    conc_green_t *g, *h;
    atomic_store(&victim_rc, 99);
    atomic_store(&never_ran, 0);
    CHECK(conc_go_opts(&g, &o, victim, NULL) == 0);
    CHECK(conc_green_link(g, obituary, NULL) == 0);
    conc_sleep(0.02); /* Sleepy starts and dozes off */
    double t0 = conc_monotonic();
    CHECK(conc_green_kill(g, true, 5.0) == 0);
    printf("  Sleepy was in sleep(10); kill(block=True) returned after %.1f ms; inside Sleepy\n"
           "  sleep() returned %s at once, and Sleepy returned\n",
           (conc_monotonic() - t0) * 1e3, conc_errname(atomic_load(&victim_rc)));
    CHECK(atomic_load(&victim_rc) == CONC_EKILLED);
    void *r = (void *)1;
    CHECK(conc_green_get(g, 0, &r) == 0);
    printf("  get() -> OK with result %s, successful() = %s: a kill is a clean end (GreenletExit)\n",
           r ? "set" : "NULL", conc_green_successful(g) ? "true" : "false");
    CHECK(r == NULL && conc_green_killed(g) && conc_green_successful(g));
    conc_green_free(g);

    o.name = "Unlucky";
    CHECK(conc_go_opts(&h, &o, never, NULL) == 0);
    CHECK(conc_green_link(h, obituary, NULL) == 0);
    CHECK(conc_green_kill(h, false, 0) == 0); /* before it ever ran */
    CHECK(conc_green_join(h, 5.0) == 0);
    printf("  Unlucky was killed before it started: started() = %s, its function never ran\n",
           conc_green_started(h) ? "true" : "false");
    CHECK(!conc_green_started(h) && !atomic_load(&never_ran));
    conc_green_free(h);
    return 0;
}

/* ---- green/outcome: what a wait reports, and what nothing changes ---- */

static void *gives_up(void *arg)
{
    (void)arg;
    conc_sleep(0.01);
    return conc_fail(CONC_ETIMEDOUT, "the server did not answer"); /* the task's own timeout */
}

static void *naps(void *arg)
{
    conc_sleep(*(double *)arg);
    return (void *)"rested";
}

static void meddling_link(conc_green_t *g, void *arg)
{
    (void)g;
    (void)arg;
    conc_fail(CONC_EINVAL, "a link that fails"); /* reported; changes nothing */
}

static void *kills_itself(void *arg)
{
    int *rcs = arg;
    rcs[0] = conc_green_kill(conc_green_current(), true, 1.0); /* gevent: GreenletExit at once */
    rcs[1] = conc_sleep(0.001);                               /* delivered once: not again */
    return NULL;
}

static int sec_outcome(void)
{
    conc_green_t *g;
    void *r = NULL;
    const char *msg = NULL;
    printf("  a green thread fails with a code of its own, CONC_ETIMEDOUT; get() says\n"
           "  CONC_EFAILED (it failed), never the wait's own codes:\n");
    CHECK(conc_go(&g, gives_up, NULL) == 0);
    CHECK(conc_green_link(g, meddling_link, NULL) == 0);
    expected_stderr_begin("a link callback that fails is reported");
    int rc = conc_green_get(g, 5.0, &r);
    expected_stderr_end();
    int code = conc_green_exception(g, &msg);
    printf("    get(g, 5.0) -> %s; exception(g) -> %s: %s\n", conc_errname(rc), conc_errname(code),
           msg ? msg : "");
    printf("    (the link above failed: it was reported on stderr, and the outcome stayed)\n");
    CHECK(rc == CONC_EFAILED && code == CONC_ETIMEDOUT);
    conc_green_free(g);

    double nap = 10;
    CHECK(conc_go(&g, naps, &nap) == 0);
    rc = conc_green_get(g, 0, &r);
    printf("  get(g, 0) on one that has not run yet is a pure poll -> %s (it did not run: "
           "started() = %s)\n",
           conc_errname(rc), conc_green_started(g) ? "true" : "false");
    CHECK(rc == CONC_ETIMEDOUT && !conc_green_started(g));
    rc = conc_green_get(g, 0.02, &r);
    printf("  get(g, 0.02) while it naps -> %s: the wait's own timeout, g is fine\n", conc_errname(rc));
    CHECK(rc == CONC_ETIMEDOUT && conc_green_exception(g, NULL) == 0);
    CHECK(conc_green_kill(g, true, 5.0) == 0);
    rc = conc_green_get(g, 0, &r);
    printf("  killed, then get() -> %s with result %s, successful() = %s (GreenletExit)\n",
           conc_errname(rc), r ? "set" : "NULL", conc_green_successful(g) ? "true" : "false");
    CHECK(rc == 0 && r == NULL && conc_green_successful(g));
    conc_green_free(g);

    int rcs[2] = {99, 99};
    CHECK(conc_go(&g, kills_itself, rcs) == 0);
    CHECK(conc_green_join(g, 5.0) == 0);
    printf("  a green thread kills itself with block: kill() -> %s at once, its next\n"
           "  sleep -> %s; it ends as killed: %s\n",
           conc_errname(rcs[0]), conc_errname(rcs[1]), conc_green_killed(g) ? "yes" : "no");
    CHECK(rcs[0] == CONC_EKILLED && rcs[1] == 0 && conc_green_killed(g));
    conc_green_free(g);
    return 0;
}

/* ---- green/pool: at most N at once ---- */

enum { POOL_SIZE = 3, POOL_JOBS = 8 };
static atomic_int pool_now, pool_max;

static void *pool_job(void *arg)
{
    int now = atomic_fetch_add(&pool_now, 1) + 1;
    int m = atomic_load(&pool_max);
    while (now > m && !atomic_compare_exchange_weak(&pool_max, &m, now))
        ;
    conc_sleep(0.02);
    atomic_fetch_sub(&pool_now, 1);
    return arg;
}

static int sec_pool(void)
{
    conc_green_pool_t *p = NULL;
    CHECK(conc_green_pool_new(&p, POOL_SIZE) == 0);
    if (!p)
        return 1;
    atomic_store(&pool_now, 0);
    atomic_store(&pool_max, 0);
    double t0 = conc_monotonic();
    for (intptr_t i = 0; i < POOL_JOBS; i++)
        CHECK(conc_green_pool_spawn(p, NULL, pool_job, (void *)i, 5.0) == 0); /* waits for a slot */
    CHECK(conc_green_pool_join(p, 5.0) == 0);
    printf("  Pool(%d): %d jobs of 20 ms each; spawn waited for a free slot; at most %d ran\n"
           "  at once; all done in %.0f ms (about %d rounds)\n",
           POOL_SIZE, POOL_JOBS, atomic_load(&pool_max), (conc_monotonic() - t0) * 1e3,
           (POOL_JOBS + POOL_SIZE - 1) / POOL_SIZE);
    CHECK(atomic_load(&pool_max) >= 1 && atomic_load(&pool_max) <= POOL_SIZE);
    CHECK(conc_green_pool_size(p) == 0);
    CHECK(conc_green_pool_free(p) == 0);
    return 0;
}

/* ---- green/loopexit: blocking with nothing left that could wake you ---- */

static void *wait_forever(void *ev)
{
    conc_event_wait(ev, CONC_FOREVER); /* nobody will ever set it */
    return NULL;
}

static void *library_helper(void *arg)
{
    (void)arg;
    for (;;)
        pause(); /* a thread some library started: it never calls conc */
    return NULL;
}

static int loopexit_child(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    alarm(20); /* a hang would be a bug: die instead */
    pthread_t helper;
    if (pthread_create(&helper, NULL, library_helper, NULL) != 0)
        return 3;
    char nthreads[32] = "?";
    proc_stat(0, 20, nthreads, sizeof nthreads);
    conc_event_t ev = CONC_EVENT_INIT;
    conc_green_t *g;
    if (conc_go(&g, wait_forever, &ev) != 0)
        return 2;
    double t0 = conc_monotonic();
    int rc = conc_green_join(g, CONC_FOREVER);
    say("    child %d (%s threads: it and a library's helper conc never saw): a green\n"
        "    thread waits on an Event nobody sets; join(g) with no timeout -> %s after\n"
        "    %.1f ms instead of hanging\n",
        (int)getpid(), nthreads, conc_errname(rc), (conc_monotonic() - t0) * 1e3);
    int krc = conc_green_kill(g, true, 5.0);
    conc_green_free(g);
    return rc == CONC_ELOOPEXIT && krc == 0 ? 0 : 1;
}
CONC_REGISTER(loopexit_child);

static int sec_loopexit(void)
{
    char nthreads[32] = "?";
    proc_stat(0, 20, nthreads, sizeof nthreads);
    conc_event_t ev = CONC_EVENT_INIT;
    conc_green_t *g;
    CHECK(conc_go(&g, wait_forever, &ev) == 0);
    int rc = conc_green_join(g, 0.1);
    printf("  here a green thread waits on an Event nobody sets, and join(g, timeout=0.1)\n"
           "  -> %s: the join's own timer could end the wait, so it is not hopeless.\n"
           "  Without a timeout, LoopExit needs nothing pending and no other thread conc\n"
           "  knows of (its own threads, threads that used conc: the tour's other chapters\n"
           "  leave thread pools behind; threads now: %s). Threads conc never saw do not\n"
           "  count,\n",
           conc_errname(rc), nthreads);
    CHECK(rc == CONC_ETIMEDOUT);
    CHECK(conc_green_kill(g, true, 5.0) == 0);
    conc_green_free(g);
    printf("  so that part runs in a fresh process (start method spawn):\n");
    struct kid k;
    memset(&k, 0, sizeof k);
    conc_process_t *p = start_kid(loopexit_child, &k, "LoopExit", CONC_SPAWN);
    int code = finish(p, 20.0);
    printf("  child exitcode %d (0: it got LoopExit)\n", code);
    CHECK(code == 0);
    return 0;
}

static const struct section green_sections[] = {
    {"switch", "switching tasks and keeping their state: two green threads take turns",
     sec_switch, "def play(): for i in range(4): log(i); gevent.sleep(0)"},
    {"sleepers", "10,000 green threads sleeping at once: wall time and memory",
     sec_sleepers, "gevent.joinall([gevent.spawn(gevent.sleep, 0.2) for _ in range(10000)])"},
    {"echo", "a green echo server (a green thread per connection) and green clients",
     sec_echo, "gevent.server.StreamServer(('127.0.0.1', 0), handle).start()"},
    {"future", "a green thread waits on a thread-pool future while the others run",
     sec_future, "pool.submit(slow_square, 12).result()  # in a greenlet: only it waits"},
    {"timeout", "Timeout scopes: every blocking call inside gives up at the deadline",
     sec_timeout, "with gevent.Timeout(0.1): q.get()"},
    {"kill", "Greenlet.kill: the next blocking call returns GreenletExit; links",
     sec_kill, "g.kill(block=True)"},
    {"outcome", "get(): failed, timed out and killed told apart; links cannot rewrite; self-kill",
     sec_outcome, "try: g.get(timeout=0.02) except gevent.Timeout: ...  # vs g.exception"},
    {"pool", "gevent.pool.Pool: at most N green threads at once",
     sec_pool, "p = Pool(3); [p.spawn(job, i) for i in range(8)]; p.join()"},
    {"loopexit", "LoopExit: a wait nothing could ever end returns an error, not a hang",
     sec_loopexit, "g.join()  # gevent: LoopExit('This operation would block forever')"},
    {NULL, NULL, NULL, NULL},
};

/* ================================================ the table of chapters */

#include "tour/selectors.h"
#include "tour/io_models.h"
#include "tour/states.h"
#include "tour/gevent_more.h"
#include "tour/banker.h"
#include "tour/deadlock.h"
#include "tour/gil.h"

static const struct chapter chapters[] = {
    {"threads", "threading: Thread, Lock, RLock, Condition, Semaphore, Event, Barrier, "
                "Timer, local",
     threads_sections},
    {"queue", "queue: 生产者消费者模型 — the producer-consumer model -- Queue, LifoQueue, "
              "PriorityQueue, SimpleQueue, select",
     queue_sections},
    {"futures", "concurrent.futures: 回调函数 — callbacks -- Future, ThreadPoolExecutor, "
                "then, map, as_completed, wait, cancel",
     futures_sections},
    {"processes", "multiprocessing: 进程 — processes -- Process, start methods "
                  "(fork/spawn/forkserver), process states, Pipe, Queue",
     processes_sections},
    {"mutex", "multiprocessing: 互斥锁 — mutual exclusion lock -- a shared Value with and without its "
              "lock, a Lock whose holder dies",
     mutex_sections},
    {"pools", "multiprocessing + concurrent.futures: 进程池 — process pools -- threads vs "
              "processes on a CPU-bound job, Pool.map/imap_unordered with a progress bar, "
              "a killed worker (BrokenProcessPool), Manager",
     pools_sections},
    {"green", "gevent: 协程 — coroutines (green threads) -- switching, 10,000 sleepers, an echo "
              "server, waiting on a thread pool, Timeout, kill, Pool, LoopExit",
     green_sections},
    {"selectors", "selectors: 多路复用 — I/O multiplexing -- one readiness loop on select, poll, "
                  "epoll, io_uring and signal-driven I/O; the SIGIO rescan; select in a green thread",
     selectors_sections},
    {"io_models", "I/O模型 — the five I/O models: blocking, non-blocking, select/poll/epoll, "
                  "signal-driven, io_uring, and green threads -- one echo load on each",
     io_models_sections},
    {"states", "task states: 进程的状态 — process states -- running, ready, blocked, live: "
               "a trace, a timeline picture, wait profiles, counters",
     states_sections},
    {"gevent", "gevent, the rest: Pool.imap_unordered and PoolFull, Timeout objects, Channel, wait",
     gevent_more_sections},
    {"deadlock", "死锁 — deadlock: dining philosophers, the detector, four fixes (the last: "
                 "银行家算法 — the banker's algorithm), Coffman's conditions, lock-order "
                 "checking, the dump",
     deadlock_sections},
    {"gil", "GIL: 全局解释器锁 — global interpreter lock -- CPU-bound threads under a GIL, "
            "without it and in processes; an I/O-bound thread beside a CPU-bound one",
     gil_sections},
    {NULL, NULL, NULL},
};

/* The tour's last screen: one line per chapter that ran (what it showed,
 * where to read more). A chapter missing here gets its title and the
 * guide's index. */
static const struct {
    const char *chapter, *showed, *read;
} summary[] = {
    {"threads", "Thread, Lock, RLock, Condition, Event, Barrier", "docs/threading.md"},
    {"queue", "back-pressure, join, shutdown, select on queues", "docs/queue.md"},
    {"futures", "thread pools, callbacks, then, map, as_completed", "docs/futures.md"},
    {"processes", "fork/spawn/forkserver, states, Pipe, Queue", "docs/process.md"},
    {"mutex", "a shared Value with and without its lock", "docs/ipc.md"},
    {"pools", "threads vs processes, imap, a killed worker", "docs/pool.md"},
    {"green", "switching, 10,000 sleepers, echo, Timeout", "docs/green.md"},
    {"selectors", "select, poll, epoll, io_uring, signal-driven", "docs/selectors.md"},
    {"io_models", "one echo load on every I/O model", "docs/io.md"},
    {"states", "running/ready/blocked: trace, wait profiles", "docs/trace.md"},
    {"gevent", "imap_unordered, Timeout objects, Channel, wait", "docs/green.md"},
    {"deadlock", "dining philosophers, detector, four fixes", "docs/deadlock.md"},
    {"gil", "CPU- and I/O-bound threads under a GIL", "docs/gil.md"},
};

static void print_summary(const bool *ran)
{
    printf("\n=== Summary: what the tour showed ===\n");
    int i = 0;
    for (const struct chapter *c = chapters; c->name; c++, i++) {
        if (!ran[i])
            continue;
        const char *showed = c->title, *read = "docs/README.md";
        for (size_t k = 0; k < sizeof summary / sizeof summary[0]; k++)
            if (strcmp(summary[k].chapter, c->name) == 0)
                showed = summary[k].showed, read = summary[k].read;
        printf("  %-9s %-48.48s  %s\n", c->name, showed, read);
    }
    printf("\nRead more: README.md (start here: install, use from your project), docs/README.md\n"
           "(one guide per module), the API reference (make docs, then open\n"
           "build/docs/html/index.html). Run one part again: build/tour <chapter>[/<section>];\n"
           "build/tour --list lists them. Lines marked [expected error output] on stderr are\n"
           "reports the tour provoked on purpose.\n");
}

static void run_section(const struct chapter *c, const struct section *s)
{
    printf("\n-- %s/%s: %s\n", c->name, s->name, s->python);
    if (s->snippet)
        printf("   python> %s\n", s->snippet);
    fflush(stdout);
    if (s->run() != 0)
        failures++;
    fflush(stdout);
}

static void run_chapter(const struct chapter *c, const char *only)
{
    printf("\n=== Chapter: %s ===\n", c->title);
    for (const struct section *s = c->sections; s->name; s++)
        if (!only || strcmp(only, s->name) == 0)
            run_section(c, s);
}

static int usage(void)
{
    printf("usage: tour [chapter[/section]] | --list\n");
    for (const struct chapter *c = chapters; c->name; c++) {
        printf("  %s\n", c->name);
        for (const struct section *s = c->sections; s->name; s++)
            printf("    %s/%-13s %s\n", c->name, s->name, s->python);
    }
    return 2;
}

/* Finds the chapter named by want ("threads" or "threads/race"); *only is
 * the section name or NULL. NULL if nothing matches. */
static const struct chapter *lookup(const char *want, const char **only)
{
    for (const struct chapter *c = chapters; c->name; c++) {
        size_t len = strlen(c->name);
        if (strncmp(want, c->name, len) != 0 || (want[len] && want[len] != '/'))
            continue;
        *only = want[len] == '/' ? want + len + 1 : NULL;
        if (!*only)
            return c;
        for (const struct section *s = c->sections; s->name; s++)
            if (strcmp(s->name, *only) == 0)
                return c;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    CONC_PROCESS_MAIN(argc, argv); /* a spawned child runs its function here and exits */
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *want = argc > 1 ? argv[1] : NULL, *only = NULL;
    const struct chapter *one = NULL;
    if (want && (strcmp(want, "--list") == 0 || strcmp(want, "-h") == 0 ||
                 strcmp(want, "--help") == 0)) {
        usage();
        return 0;
    }
    if (want && !(one = lookup(want, &only)))
        return usage();
    printf("conc tour: Python's concurrency toolbox, in C.\n");
    bool ran[sizeof chapters / sizeof chapters[0]] = {false};
    if (one) {
        run_chapter(one, only);
        ran[one - chapters] = true;
    } else {
        for (const struct chapter *c = chapters; c->name; c++) {
            run_chapter(c, NULL);
            ran[c - chapters] = true;
        }
    }
    print_summary(ran);
    printf("\n%s\n", failures ? "tour finished with failed checks" : "tour finished: all checks passed");
    return failures ? 1 : 0;
}
