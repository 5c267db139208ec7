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

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    fflush(stdout);
    conc_thread_spawn(&t, parse_config, NULL, &o);
    conc_thread_join(t, CONC_FOREVER, NULL);
    conc_thread_free(t);
    fflush(stderr);
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

/* ================================================ the table of chapters */

static const struct chapter chapters[] = {
    {"threads", "threading: Thread, Lock, RLock, Condition, Semaphore, Event, Barrier, "
                "Timer, local",
     threads_sections},
    /* later: queue, futures, processes, green threads, I/O models ... */
    {NULL, NULL, NULL},
};

static void run_section(const struct chapter *c, const struct section *s)
{
    printf("\n-- %s/%s: %s\n", c->name, s->name, s->python);
    if (s->snippet)
        printf("   python> %s\n", s->snippet);
    fflush(stdout);
    s->run();
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
            printf("    %s/%-11s %s\n", c->name, s->name, s->python);
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
    if (one)
        run_chapter(one, only);
    else
        for (const struct chapter *c = chapters; c->name; c++)
            run_chapter(c, NULL);
    printf("\n%s\n", failures ? "tour finished with failed checks" : "tour finished: all checks passed");
    return failures ? 1 : 0;
}
