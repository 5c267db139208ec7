/*
 * examples/tour/gil.h — the tour's chapter "gil" (全局解释器锁, the global
 * interpreter lock), included by examples/tour.c (it uses the tour's
 * CHECK, struct section and the includes there).
 *
 *   gil/cpu     the same CPU-bound work on 1 thread, 2 threads under a GIL,
 *               2 threads without it, 2 processes: a table of times
 *   gil/convoy  an I/O-bound thread's response time beside a CPU-bound
 *               one: with the GIL at two switch intervals, and without it
 */

/* ---- gil/cpu: why CPython threads do not run CPU-bound code in parallel ---- */

enum { GIL_WORK = 60000000 }; /* hash steps: a few hundred ms on one CPU */

struct gil_job {
    conc_gil_t *gil; /* NULL: no GIL */
    long steps;
    uint64_t seed, result;
    atomic_int *inside, *most_inside;
};

/* The CPU-bound work: a hash chain. Under a GIL it runs holding the GIL
 * and calls conc_gil_check every 1024 steps (CPython checks between
 * bytecodes); it notes how many workers ran their steps at once. */
static uint64_t gil_hash_steps(uint64_t x, long n)
{
    for (long i = 0; i < n; i++)
        x = (x ^ (x >> 29)) * 0xbf58476d1ce4e5b9ull + (uint64_t)i;
    return x;
}

/* The same work in chunks of 1024 steps (as the workers do it). */
static uint64_t gil_work(uint64_t x, long steps)
{
    for (long done = 0; done < steps; done += 1024)
        x = gil_hash_steps(x, steps - done < 1024 ? steps - done : 1024);
    return x;
}

static void *gil_worker(void *arg)
{
    struct gil_job *j = arg;
    uint64_t x = j->seed;
    if (j->gil)
        conc_gil_acquire(j->gil, CONC_FOREVER);
    for (long done = 0; done < j->steps; done += 1024) {
        int now = atomic_fetch_add(j->inside, 1) + 1;
        int most = atomic_load(j->most_inside);
        while (now > most && !atomic_compare_exchange_weak(j->most_inside, &most, now)) {
        }
        long n = j->steps - done < 1024 ? j->steps - done : 1024;
        x = gil_hash_steps(x, n);
        atomic_fetch_sub(j->inside, 1);
        if (j->gil)
            conc_gil_check(j->gil);
    }
    if (j->gil)
        conc_gil_release(j->gil);
    j->result = x;
    return NULL;
}

/* A child process does half of the work; its exit code says whether it
 * got the expected hash (passed in the argument). */
struct gil_half {
    uint64_t seed, expect;
    long steps;
};

static int gil_half_child(const void *arg, size_t len)
{
    struct gil_half h;
    if (len != sizeof h)
        return 2;
    memcpy(&h, arg, sizeof h);
    return gil_work(h.seed, h.steps) == h.expect ? 0 : 1;
}
CONC_REGISTER(gil_half_child);

/* Run the work on `nthreads` threads (the halves in parallel) with or
 * without gil; returns seconds; *most = most workers seen running at once. */
static double gil_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double gil_run_threads_once(int nthreads, conc_gil_t *gil, uint64_t *res, int *most,
                                   double *cpu)
{
    atomic_int inside = 0, most_inside = 0;
    double c0 = gil_cpu_seconds();
    struct gil_job j[2];
    pthread_t t[2];
    double t0 = conc_monotonic();
    for (int i = 0; i < nthreads; i++) {
        j[i] = (struct gil_job){gil, GIL_WORK / nthreads, 1000u + (uint64_t)i, 0, &inside, &most_inside};
        pthread_create(&t[i], NULL, gil_worker, &j[i]);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    double dt = conc_monotonic() - t0;
    *cpu = gil_cpu_seconds() - c0;
    for (int i = 0; i < nthreads; i++)
        res[i] = j[i].result;
    *most = atomic_load(&most_inside);
    return dt;
}

/* Two processes, each with half of the work: seconds; their exit codes
 * (0: the hash they computed was the threads' one). */
static double gil_run_processes(const uint64_t expect[2], int codes[2])
{
    struct gil_half h[2];
    conc_process_t *p[2] = {NULL, NULL};
    double t0 = conc_monotonic();
    for (int i = 0; i < 2; i++) {
        h[i] = (struct gil_half){1000u + (uint64_t)i, expect[i], GIL_WORK / 2};
        conc_process_opts_t o = {.name = i ? "half-2" : "half-1"};
        int rc = conc_process_new(&p[i], gil_half_child, &h[i], sizeof h[i], &o);
        if (rc == 0)
            rc = conc_process_start(p[i]);
        CHECK(rc == 0);
    }
    for (int i = 0; i < 2; i++) {
        codes[i] = -1;
        if (!p[i])
            continue;
        if (conc_process_join(p[i], 60.0) == 0)
            conc_process_exitcode(p[i], &codes[i]);
        conc_process_free(p[i]);
    }
    return conc_monotonic() - t0;
}

/* The best of three runs: the machine may be busy with other work. */
static double gil_run_threads(int nthreads, conc_gil_t *gil, uint64_t *res, int *most, double *par)
{
    double best = 1e9;
    *par = 0;
    for (int r = 0; r < 3; r++) {
        int m = 0;
        double cpu;
        double t = gil_run_threads_once(nthreads, gil, res, &m, &cpu);
        if (t < best)
            best = t;
        if (cpu / t > *par)
            *par = cpu / t; /* CPU seconds per second: how many CPUs it used */
        if (r == 0 || m > *most)
            *most = m;
    }
    return best;
}

static int sec_gil_cpu(void)
{
    printf("  %d hash steps of CPU-bound work, done four ways (%ld CPUs here; the\n"
           "  best of three runs of each).\n",
           GIL_WORK, sysconf(_SC_NPROCESSORS_ONLN));
    uint64_t one[2], under[2], free2[2];
    int most1 = 0, most_gil = 0, most_free = 0;
    conc_gil_t gil = CONC_GIL_INIT;
    double p1, pg, pf;
    double t1 = gil_run_threads(1, NULL, one, &most1, &p1);
    double tg = gil_run_threads(2, &gil, under, &most_gil, &pg);
    double tf = gil_run_threads(2, NULL, free2, &most_free, &pf);

    /* two processes, each with half of the work (a GIL is per process) */
    int codes[2] = {-1, -1};
    double tp = 1e9;
    for (int r = 0; r < 3; r++) {
        double t = gil_run_processes(free2, codes);
        if (t < tp)
            tp = t;
    }

    printf("    %-31s %8s %6s %12s\n", "how", "seconds", "CPUs", "ran at once");
    printf("    %-31s %8.3f %6.2f %12d\n", "1 thread", t1, p1, most1);
    printf("    %-31s %8.3f %6.2f %12d   (%lu GIL switches)\n", "2 threads under the GIL", tg, pg,
           most_gil, conc_gil_switches(&gil));
    printf("    %-31s %8.3f %6.2f %12d\n", "2 threads, no GIL (C threads)", tf, pf, most_free);
    printf("    %-31s %8.3f %6s %12s   (exit codes %d %d)\n", "2 processes (a GIL each)", tp, "-", "2",
           codes[0], codes[1]);
    printf("  CPUs = CPU seconds per wall second. Under the GIL two threads take about\n"
           "  as long as one and use one CPU (they take turns, every %.0f ms); without\n"
           "  it, or in two processes, they use two CPUs when the machine has them free.\n",
           conc_gil_getswitchinterval(&gil) * 1e3);
    CHECK(most_gil == 1); /* never two at once under the GIL */
    CHECK(pg < 1.2);      /* ... so never more than one CPU busy */
    CHECK(under[0] == free2[0] && under[1] == free2[1]);
    CHECK(codes[0] == 0 && codes[1] == 0);
    return 0;
}

/* ---- gil/convoy: an I/O-bound thread beside a CPU-bound one ---- */

struct gil_hog {
    conc_gil_t *gil;
    atomic_int stop, started;
};

static void *gil_hog(void *arg)
{
    struct gil_hog *h = arg;
    if (h->gil)
        conc_gil_acquire(h->gil, CONC_FOREVER);
    atomic_store(&h->started, 1);
    uint64_t x = 1;
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        x = gil_hash_steps(x, 256);
        if (h->gil)
            conc_gil_check(h->gil);
    }
    if (h->gil)
        conc_gil_release(h->gil);
    return (void *)(uintptr_t)x;
}

static int gil_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* p50 and p99 (ms) of how late a 1 ms sleep ends, beside a CPU-bound hog. */
static void gil_convoy(double interval, double *p50, double *p99)
{
    enum { SAMPLES = 60 };
    conc_gil_t gil = CONC_GIL_INIT;
    if (interval > 0)
        conc_gil_setswitchinterval(&gil, interval);
    struct gil_hog h = {.gil = interval > 0 ? &gil : NULL};
    pthread_t t;
    pthread_create(&t, NULL, gil_hog, &h);
    while (!atomic_load(&h.started))
        sched_yield();
    double lat[SAMPLES];
    if (h.gil)
        conc_gil_acquire(h.gil, CONC_FOREVER);
    for (int i = 0; i < SAMPLES; i++) {
        double t0 = conc_monotonic();
        if (h.gil)
            conc_gil_begin_allow(h.gil); /* Py_BEGIN_ALLOW_THREADS */
        conc_sleep_thread(0.001);        /* the "I/O" */
        if (h.gil)
            conc_gil_end_allow(h.gil);   /* Py_END_ALLOW_THREADS: wait for the GIL */
        lat[i] = (conc_monotonic() - t0 - 0.001) * 1e3;
    }
    if (h.gil)
        conc_gil_release(h.gil);
    atomic_store(&h.stop, 1);
    pthread_join(t, NULL);
    qsort(lat, SAMPLES, sizeof *lat, gil_cmp_double);
    *p50 = lat[SAMPLES / 2];
    *p99 = lat[SAMPLES - 1];
}

static int sec_gil_convoy(void)
{
    printf("  A thread that sleeps 1 ms (its \"I/O\", with the GIL released) beside one\n"
           "  that computes holding the GIL: how late does the sleeper run again? It\n"
           "  asks for the GIL after one switch interval; the computing thread drops\n"
           "  it at its next check. (CPython 3.2+; before, the I/O thread could wait\n"
           "  much longer: Beazley's convoy effect.)\n");
    double a50, a99, b50, b99, c50, c99;
    gil_convoy(0.005, &a50, &a99);
    gil_convoy(0.001, &b50, &b99);
    gil_convoy(0, &c50, &c99);
    printf("    %-36s %9s %9s\n", "", "p50 ms", "max ms");
    printf("    %-36s %9.3f %9.3f\n", "GIL, switch interval 5 ms (default)", a50, a99);
    printf("    %-36s %9.3f %9.3f\n", "GIL, setswitchinterval(0.001)", b50, b99);
    printf("    %-36s %9.3f %9.3f\n", "no GIL", c50, c99);
    CHECK(a50 >= 4.0); /* it waited about an interval */
    CHECK(b50 < a50);
    CHECK(c50 < a50);
    return 0;
}

static const struct section gil_sections[] = {
    {"cpu", "one CPU-bound job: 1 thread, 2 threads under a GIL, 2 without, 2 processes",
     sec_gil_cpu, "threading.Thread(target=count) x2  # CPython: no faster than one"},
    {"convoy", "an I/O-bound thread's response time beside a CPU-bound one, with and without a GIL",
     sec_gil_convoy, "sys.setswitchinterval(0.001)"},
    {NULL, NULL, NULL, NULL},
};
