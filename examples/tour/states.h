/*
 * tour/states.h — chapter "states": 进程的状态 (process states), live.
 *
 * The classic diagram has three states and four arrows: running -> blocked
 * (waits for something), blocked -> ready (what it waited for happened),
 * ready -> running (the scheduler picks it), running -> ready (it yields or
 * is preempted). Here a few tasks walk those arrows for real, conc traces
 * every step, and the trace becomes a timeline: ASCII on the terminal, an
 * SVG picture on disk and a JSON file for Perfetto.
 */

/* ---- states/timeline: three green threads and two OS threads ---- */

static conc_queue_t *st_q;
static conc_lock_t st_lock = CONC_LOCK_INIT;

static void st_busy(double seconds)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9 < seconds);
}

/* runs in bursts, naps between them: running -> blocked -> ready -> ... */
static void *st_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 4; i++) {
        st_busy(0.001);
        conc_sleep(0.0005);
    }
    conc_queue_put(st_q, (void *)1, true, CONC_FOREVER);
    return NULL;
}

/* waits on the queue: blocked until the worker puts, then ready */
static void *st_waiter(void *arg)
{
    (void)arg;
    void *item;
    conc_queue_get(st_q, &item, true, CONC_FOREVER);
    st_busy(0.001);
    return NULL;
}

/* sleeps: blocked until its timer fires */
static void *st_sleeper(void *arg)
{
    (void)arg;
    conc_sleep(0.003);
    st_busy(0.001);
    return NULL;
}

/* two OS threads on one Lock: the second blocks until the first lets go */
static void *st_holder(void *arg)
{
    (void)arg;
    conc_lock_acquire(&st_lock, true, CONC_FOREVER);
    st_busy(0.004);
    conc_lock_release(&st_lock);
    return NULL;
}

static int sec_states_timeline(void)
{
    const char *json = "/tmp/conc_tour_states.json", *svg = "/tmp/conc_tour_states.svg";
    const char *env_svg = getenv("CONC_TOUR_STATES_SVG"); /* docs/trace-states.svg is made so */
    if (env_svg && *env_svg)
        svg = env_svg;
    printf("  three green threads on this thread's hub (a worker that runs in bursts and\n"
           "  naps, a waiter on a queue the worker fills, a sleeper) and two OS threads on\n"
           "  one Lock, traced. A green thread is ready when it could run but its hub runs\n"
           "  another one (the hub runs one at a time); blocked when it waits:\n\n");
    conc_trace_opts_t o = {.svg_path = svg, .ascii = stdout, .ascii_width = 60};
    int rc = conc_trace_start_opts(json, &o);
    CHECK(rc == 0);
    if (rc)
        return 1;
    conc_queue_new(&st_q, CONC_FIFO, 0);
    conc_thread_t *t[2];
    conc_thread_opts_t h1 = {.name = "holder"}, h2 = {.name = "contender"};
    conc_thread_new(&t[0], st_holder, NULL, &h1);
    conc_thread_new(&t[1], st_holder, NULL, &h2);
    conc_thread_start(t[0]);
    while (!conc_lock_locked(&st_lock)) /* the contender comes when it is taken */
        sched_yield();
    conc_thread_start(t[1]);
    conc_green_t *g[3];
    conc_green_opts_t wo = {.name = "worker"}, qo = {.name = "waiter"}, so = {.name = "sleeper"};
    conc_go_opts(&g[0], &wo, st_worker, NULL);
    conc_go_opts(&g[1], &qo, st_waiter, NULL);
    conc_go_opts(&g[2], &so, st_sleeper, NULL);
    CHECK(conc_green_joinall(g, 3, 10.0) == 0);
    for (int i = 0; i < 3; i++)
        conc_green_free(g[i]);
    for (int i = 0; i < 2; i++) {
        CHECK(conc_thread_join(t[i], 10.0, NULL) == 0);
        conc_thread_free(t[i]);
    }
    conc_queue_free(st_q, NULL);
    rc = conc_trace_stop();
    CHECK(rc == 0);
    printf("\n  the same as a picture: %s (open it in a browser); the full trace,\n"
           "  with an arrow from every waker to the task it woke: %s -- open it in\n"
           "  https://ui.perfetto.dev or chrome://tracing\n", svg, json);
    FILE *f = fopen(json, "r");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    return 0;
}

/* ---- states/profile: who waited on what, and where ---- */

static conc_lock_t st_plock = CONC_LOCK_INIT;

static void *st_contend(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        conc_lock_acquire(&st_plock, true, CONC_FOREVER);
        st_busy(0.0005);
        conc_lock_release(&st_plock);
    }
    return NULL;
}

static int sec_states_profile(void)
{
    printf("  three threads take one Lock 5 times each, holding it 0.5 ms; the wait\n"
           "  profile (Go's mutex profile, mutrace) names what they waited on:\n\n");
    conc_profile_reset();
    CHECK(conc_profile_start() == 0);
    conc_thread_t *t[3];
    for (int i = 0; i < 3; i++)
        conc_thread_spawn(&t[i], st_contend, NULL, NULL);
    for (int i = 0; i < 3; i++) {
        conc_thread_join(t[i], 10.0, NULL);
        conc_thread_free(t[i]);
    }
    conc_profile_stop();
    conc_profile_print(stdout, 3);
    conc_profile_entry_t e[1];
    CHECK(conc_profile_top(e, 1) >= 0);
    return 0;
}

/* ---- states/stats: counters ---- */

static void *st_yield10(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++)
        conc_yield();
    return NULL;
}

static int sec_states_stats(void)
{
    conc_stats_reset();
    conc_stats_enable(true);
    conc_green_t *g[2];
    conc_go(&g[0], st_yield10, NULL);
    conc_go(&g[1], st_yield10, NULL);
    conc_green_joinall(g, 2, 10.0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    conc_stats_t s;
    conc_stats(&s);
    conc_stats_enable(false);
    printf("  two green threads yield 10 times each: %llu switches, %llu parks\n"
           "  (conc_stats: parks, spins that won, futex sleeps, green switches, steals,\n"
           "  timer fires -- counted only while enabled)\n",
           s.green_switches, s.parks);
    CHECK(s.green_switches >= 20);
    return 0;
}

static const struct section states_sections[] = {
    {"timeline", "running, ready, blocked -- the state diagram, live, from a real trace",
     sec_states_timeline, "# no Python equivalent: viztracer / py-spy record --format chrometrace"},
    {"profile", "which lock, queue or future made tasks wait, and where (wait profile)",
     sec_states_profile, "# Go: runtime.SetMutexProfileFraction; mutrace"},
    {"stats", "counters: parks, spins, futex sleeps, switches, steals, timers",
     sec_states_stats, NULL},
    {NULL, NULL, NULL, NULL},
};
