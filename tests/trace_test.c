/*
 * trace_test.c — conc_trace_*, conc_profile_*, conc_stats (issue 13).
 *
 * The trace tests run a known program under a trace, then read the file
 * back with tests/trace/check_trace.py (Python's json): every block has its
 * wake, timestamps rise per track, flows connect, nothing is dropped below
 * the buffer limit, and the dropped count is written when a tiny buffer
 * overflows.
 */
#include "test_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char trace_path[256];

static void make_path(const char *tag)
{
    snprintf(trace_path, sizeof trace_path, "/tmp/conc_trace_test_%ld_%s.json", (long)getpid(), tag);
}

static const char *python(void)
{
    if (access("/usr/bin/python3", X_OK) == 0)
        return "/usr/bin/python3";
    return NULL;
}

/* Run the checker on trace_path with extra arguments; its exit status. */
static int check(const char *args)
{
    const char *py = python();
    if (!py)
        return -1;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s %s/trace/check_trace.py %s %s", py, dir, trace_path, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

#define NEED_PYTHON()                                                                   \
    do {                                                                                \
        if (!python())                                                                  \
            cr_skip_test("/usr/bin/python3 is not installed (Debian python3): cannot read the trace back"); \
    } while (0)

/* ------------------------------------------------------ the known program */

static conc_lock_t lock = CONC_LOCK_INIT;

static void *locker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        conc_lock_acquire(&lock, true, CONC_FOREVER);
        tu_sleep(0.002); /* hold it: the others block */
        conc_lock_release(&lock);
        tu_sleep(0.0005);
    }
    return NULL;
}

static conc_queue_t *gq;

static void *green_producer(void *arg)
{
    (void)arg;
    for (intptr_t i = 1; i <= 3; i++) {
        conc_sleep(0.002);
        conc_queue_put(gq, (void *)i, true, CONC_FOREVER);
    }
    return NULL;
}

static void *green_consumer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        void *item;
        conc_queue_get(gq, &item, true, CONC_FOREVER);
    }
    return NULL;
}

static void *task(void *arg)
{
    tu_sleep(0.001);
    return arg;
}

static void known_program(void)
{
    /* three threads on a Lock */
    conc_thread_t *t[3];
    for (int i = 0; i < 3; i++) {
        char name[24];
        snprintf(name, sizeof name, "locker-%d", i);
        conc_thread_opts_t o = {.name = name};
        cr_assert_eq(conc_thread_new(&t[i], locker, NULL, &o), 0);
        cr_assert_eq(conc_thread_start(t[i]), 0);
    }
    /* green threads sleeping and on a queue */
    cr_assert_eq(conc_queue_new(&gq, CONC_FIFO, 0), 0);
    conc_green_t *g[2];
    conc_green_opts_t po = {.name = "producer"}, co = {.name = "consumer"};
    cr_assert_eq(conc_go_opts(&g[1], &co, green_consumer, NULL), 0);
    cr_assert_eq(conc_go_opts(&g[0], &po, green_producer, NULL), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    conc_queue_free(gq, NULL);
    /* a thread pool */
    conc_executor_t *ex;
    conc_thread_pool_opts_t popts = {.max_workers = 2, .thread_name_prefix = "pool"};
    cr_assert_eq(conc_thread_pool_new(&ex, &popts), 0);
    conc_future_t *f[6];
    for (intptr_t i = 0; i < 6; i++)
        cr_assert_eq(conc_submit(ex, &f[i], task, (void *)i), 0);
    for (int i = 0; i < 6; i++) {
        void *r;
        cr_assert_eq(conc_future_result(f[i], 10.0, &r), 0);
        conc_future_free(f[i]);
    }
    conc_executor_shutdown(ex, true, false);
    conc_executor_free(ex);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_thread_join(t[i], 10.0, NULL), 0);
        conc_thread_free(t[i]);
    }
}

Test(trace, known_program_reads_back)
{
    NEED_PYTHON();
    make_path("known");
    cr_assert_eq(conc_trace_start(trace_path), 0);
    cr_assert(conc_trace_active());
    known_program();
    cr_assert_eq(conc_trace_stop(), 0);
    cr_assert(!conc_trace_active());
    int rc = check("--no-drops --names locker-0,locker-1,locker-2,producer,consumer,MainThread "
                   "--min blocked=4 --min wakes=4 --min tasks=6 --min submits=6 --min spawns=2 "
                   "--min green_tracks=2 --min thread_tracks=4 --min ready=4");
    cr_assert_eq(rc, 0, "the checker found faults in %s (exit %d)", trace_path, rc);
    unlink(trace_path);
}

static void *yielder(void *arg)
{
    for (int i = 0; i < (int)(intptr_t)arg; i++)
        conc_yield();
    return NULL;
}

/* Traces two green threads yielding n times each into trace_path, with
 * per-thread buffers of `buffer` events. */
static void trace_two_yielders(size_t buffer, int n)
{
    conc_trace_opts_t o = {.buffer_events = buffer};
    cr_assert_eq(conc_trace_start_opts(trace_path, &o), 0);
    conc_green_t *g[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_go(&g[i], yielder, (void *)(intptr_t)n), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    cr_assert_eq(conc_trace_stop(), 0);
}

Test(trace, nothing_lost_below_the_limit)
{
    NEED_PYTHON();
    make_path("full");
    /* 2 x 500 yields: ~1000 switches, each a record or two: fits in 8192 */
    trace_two_yielders(8192, 500);
    /* each green thread runs 501 times and is ready 500 times */
    int rc = check("--no-drops --min running=1000 --min ready=1000 --min green_tracks=2");
    cr_assert_eq(rc, 0, "checker exit %d on %s", rc, trace_path);
    unlink(trace_path);
}

Test(trace, tiny_buffer_counts_drops)
{
    NEED_PYTHON();
    make_path("tiny");
    trace_two_yielders(64, 300);
    int rc = check("--expect-dropped");
    cr_assert_eq(rc, 0, "checker exit %d on %s", rc, trace_path);
    /* and the count is in the file */
    FILE *f = fopen(trace_path, "r");
    cr_assert(f);
    char buf[512] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    cr_assert(n > 0);
    char *d = strstr(buf, "\"dropped_events\":");
    cr_assert(d, "no dropped_events in %s", buf);
    cr_assert_gt(atol(d + strlen("\"dropped_events\":")), 500);
    unlink(trace_path);
}

/* A CONC_TRACE_BUFFER that is not a number of events is said on stderr
 * (the default is used), like a bad CONC_TRACE or CONC_DEBUG. */
static int said_bad_buffer(const char *value)
{
    char out[128];
    snprintf(out, sizeof out, "/tmp/conc_trace_buf_%d.txt", (int)getpid());
    fflush(stderr);
    int saved = dup(2), fd = open(out, O_CREAT | O_TRUNC | O_RDWR, 0600);
    cr_assert(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    setenv("CONC_TRACE_BUFFER", value, 1);
    make_path("badbuf");
    int rc = conc_trace_start(trace_path);
    if (rc == 0)
        rc = conc_trace_stop();
    unsetenv("CONC_TRACE_BUFFER");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[1024] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(out);
    unlink(trace_path);
    cr_assert_eq(rc, 0);
    return n > 0 && strstr(buf, "conc: CONC_TRACE_BUFFER=") && strstr(buf, value);
}

Test(trace, bad_buffer_variable_is_said)
{
    cr_expect(said_bad_buffer("lots"), "CONC_TRACE_BUFFER=lots was silently ignored");
    cr_expect(said_bad_buffer("100k"), "CONC_TRACE_BUFFER=100k was silently ignored");
    cr_expect(said_bad_buffer("0"), "CONC_TRACE_BUFFER=0 was silently ignored");
    cr_expect(said_bad_buffer("999999999"), "CONC_TRACE_BUFFER=999999999 was silently ignored");
    cr_expect(!said_bad_buffer("4096"), "CONC_TRACE_BUFFER=4096 is fine");
}

Test(trace, picture_and_ascii)
{
    make_path("pic");
    char svg[300];
    snprintf(svg, sizeof svg, "%s.svg", trace_path);
    char *txt = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&txt, &len);
    conc_trace_opts_t o = {.svg_path = svg, .ascii = mem, .ascii_width = 40};
    cr_assert_eq(conc_trace_start_opts(trace_path, &o), 0);
    conc_green_t *g[2];
    cr_assert_eq(conc_go(&g[0], yielder, (void *)(intptr_t)20), 0);
    cr_assert_eq(conc_go(&g[1], yielder, (void *)(intptr_t)20), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    cr_assert_eq(conc_trace_stop(), 0);
    fclose(mem);
    cr_assert(strstr(txt, "# running"), "%s", txt);
    cr_assert(strstr(txt, "Green-"), "%s", txt);
    struct stat sb;
    cr_assert_eq(stat(svg, &sb), 0);
    cr_assert_gt(sb.st_size, 200);
    FILE *f = fopen(svg, "r");
    char head[64] = {0};
    cr_assert(fread(head, 1, sizeof head - 1, f) > 0);
    fclose(f);
    cr_assert(strncmp(head, "<svg", 4) == 0);
    free(txt);
    unlink(svg);
    unlink(trace_path);
}

Test(trace, errors)
{
    cr_assert_eq(conc_trace_stop(), CONC_EPERM);
    cr_assert_eq(conc_trace_start(NULL), CONC_EINVAL);
    cr_assert_eq(conc_trace_start(""), CONC_EINVAL);
    cr_assert_eq(conc_trace_start("/nonexistent-dir/x/trace.json"), CONC_ESYS);
    conc_trace_opts_t bad = {.buffer_events = (size_t)1 << 30};
    cr_assert_eq(conc_trace_start_opts("/tmp/x.json", &bad), CONC_EINVAL);
    make_path("err");
    cr_assert_eq(conc_trace_start(trace_path), 0);
    cr_assert_eq(conc_trace_start(trace_path), CONC_EPERM);
    cr_assert_eq(conc_trace_stop(), 0);
    cr_assert_eq(conc_trace_stop(), CONC_EPERM);
    /* a second trace after the first works */
    cr_assert_eq(conc_trace_start(trace_path), 0);
    conc_yield();
    cr_assert_eq(conc_trace_stop(), 0);
    unlink(trace_path);
}

/* --------------------------------------- process pool and green pool */

static int pp_square(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    long x;
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(pp_square);

static void *gp_task(void *arg)
{
    conc_sleep(0.001);
    return arg;
}

Test(trace, process_pool_and_green_pool)
{
    NEED_PYTHON();
    unsetenv("BXFI_MAP");
    make_path("pools");
    cr_assert_eq(conc_trace_start(trace_path), 0);
    /* green pool: 4 tasks, 2 at a time */
    conc_green_pool_t *gp;
    cr_assert_eq(conc_green_pool_new(&gp, 2), 0);
    for (intptr_t i = 0; i < 4; i++)
        cr_assert_eq(conc_green_pool_spawn(gp, NULL, gp_task, (void *)i, 10.0), 0);
    cr_assert_eq(conc_green_pool_join(gp, 10.0), 0);
    conc_green_pool_free(gp);
    /* process pool: 3 tasks, parent side */
    conc_executor_t *ex;
    conc_process_pool_opts_t o = {.max_workers = 2};
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    conc_future_t *f[3];
    for (long i = 0; i < 3; i++)
        cr_assert_eq(conc_process_pool_submit(ex, &f[i], pp_square, &i, sizeof i), 0);
    for (int i = 0; i < 3; i++) {
        const void *r;
        size_t n;
        cr_assert_eq(conc_future_bytes(f[i], 20.0, &r, &n), 0);
        conc_future_free(f[i]);
    }
    conc_executor_free(ex);
    cr_assert_eq(conc_trace_stop(), 0);
    int rc = check("--no-drops --min tasks=4 --min results=3 --min submits=7 --min pstarts=2");
    cr_assert_eq(rc, 0, "checker exit %d on %s", rc, trace_path);
    unlink(trace_path);
}

/* ------------------------------------------------------------- profiles */

static void *contender(void *arg)
{
    conc_lock_t *l = arg;
    for (int i = 0; i < 10; i++) {
        conc_lock_acquire(l, true, CONC_FOREVER);
        tu_sleep(0.001);
        conc_lock_release(l);
    }
    return NULL;
}

Test(profile, contended_lock_tops_the_table)
{
    static conc_lock_t l = CONC_LOCK_INIT;
    conc_profile_reset();
    cr_assert_eq(conc_profile_start(), 0);
    conc_thread_t *t[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_thread_new(&t[i], contender, &l, NULL) || conc_thread_start(t[i]), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_thread_join(t[i], 20.0, NULL), 0);
        conc_thread_free(t[i]);
    }
    cr_assert_eq(conc_profile_stop(), 0);
    cr_assert_eq(conc_profile_stop(), CONC_EPERM);
    conc_profile_entry_t e[8];
    int n = conc_profile_top(e, 8);
    cr_assert_gt(n, 0);
    /* longest first */
    for (int i = 1; i < n; i++)
        cr_assert_geq(e[i - 1].total_ns, e[i].total_ns);
    unsigned long long waits = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_leq(e[i].max_ns, e[i].total_ns);
        cr_assert_geq(e[i].site_ns, 1);
        cr_assert_not_null(e[i].site);
        cr_assert_not_null(e[i].kind);
        if (e[i].known)
            cr_assert(e[i].obj == &l || strcmp(e[i].kind, "Lock") != 0);
        waits += e[i].contended;
    }
    /* 30 acquires of a lock held 1 ms each by 3 threads: many park */
    cr_assert_geq(waits, 5, "only %llu contended waits", waits);
    cr_assert_gt(e[0].total_ns, 1000000);
    char *txt = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&txt, &len);
    cr_assert_eq(conc_profile_print(mem, 5), 0);
    fclose(mem);
    cr_assert(strstr(txt, "contended"), "%s", txt);
    cr_assert(strstr(txt, "call site"), "%s", txt);
    free(txt);
    cr_assert_eq(conc_profile_print(NULL, 5), CONC_EINVAL);
    cr_assert_eq(conc_profile_top(NULL, 5), CONC_EINVAL);
    /* stopped: nothing more is gathered */
    conc_profile_reset();
    conc_thread_t *u;
    cr_assert_eq(conc_thread_new(&u, contender, &l, NULL) || conc_thread_start(u), 0);
    contender(&l);
    conc_thread_join(u, 20.0, NULL);
    conc_thread_free(u);
    cr_assert_eq(conc_profile_top(e, 8), 0);
}

static void *q_getter(void *arg)
{
    void *item;
    conc_queue_get(arg, &item, true, CONC_FOREVER);
    return NULL;
}

Test(profile, green_queue_waits)
{
    conc_profile_reset();
    cr_assert_eq(conc_profile_start(), 0);
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 0), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, q_getter, q), 0);
    conc_sleep(0.01); /* g parks on the queue */
    conc_queue_put(q, (void *)1, true, CONC_FOREVER);
    cr_assert_eq(conc_green_join(g, 10.0), 0);
    conc_green_free(g);
    conc_profile_stop();
    conc_profile_entry_t e[8];
    int n = conc_profile_top(e, 8);
    cr_assert_gt(n, 0);
    unsigned long long total = 0;
    for (int i = 0; i < n; i++)
        total += e[i].total_ns;
    cr_assert_gt(total, 5000000ull, "the queue wait (~10 ms) is not counted: %llu", total);
    conc_queue_free(q, NULL);
}

/* --------------------------------------------------------------- stats */

static void *sleeper(void *arg)
{
    (void)arg;
    conc_sleep(0.002);
    return NULL;
}

Test(stats, counters_count_only_while_enabled)
{
    conc_stats_t s;
    cr_assert_eq(conc_stats(NULL), CONC_EINVAL);
    conc_stats_enable(false);
    conc_stats_reset();
    conc_green_t *g[2];
    cr_assert_eq(conc_go(&g[0], yielder, (void *)(intptr_t)50), 0);
    cr_assert_eq(conc_go(&g[1], yielder, (void *)(intptr_t)50), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    cr_assert_eq(conc_stats(&s), 0);
    cr_assert_eq(s.green_switches, 0);
    cr_assert_eq(s.parks, 0);

    cr_assert(!conc_stats_enable(true));
    cr_assert_eq(conc_go(&g[0], yielder, (void *)(intptr_t)50), 0);
    cr_assert_eq(conc_go(&g[1], yielder, (void *)(intptr_t)50), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    cr_assert_eq(conc_go(&g[0], sleeper, NULL), 0); /* a green timer fires */
    cr_assert_eq(conc_green_join(g[0], 10.0), 0);
    conc_green_free(g[0]);
    static conc_lock_t l = CONC_LOCK_INIT;
    conc_thread_t *t[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_thread_new(&t[i], contender, &l, NULL) || conc_thread_start(t[i]), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_thread_join(t[i], 20.0, NULL), 0);
        conc_thread_free(t[i]);
    }
    cr_assert_eq(conc_stats(&s), 0);
    cr_assert(conc_stats_enable(false));
    cr_assert_geq(s.green_switches, 100, "%llu", s.green_switches);
    cr_assert_geq(s.parks, 3, "%llu", s.parks);
    cr_assert_geq(s.timer_fires, 1, "%llu", s.timer_fires);
    cr_assert_geq(s.futex_sleeps + s.spins_won, 1);
    /* ended threads' counts stay in the sums */
    conc_stats_t s2;
    conc_stats(&s2);
    cr_assert_geq(s2.parks, s.parks);
    conc_stats_reset();
    conc_stats(&s2);
    cr_assert_eq(s2.parks, 0);
}

/* ---------------------------------------------------- CONC_TRACE=path */

/* Runs only in the child started below: some work, then the process
 * exits with the trace still running; the atexit handler writes it. */
Test(trace_env, child)
{
    if (!getenv("CONC_TRACE_TEST_CHILD"))
        cr_skip_test("runs only as the child of trace_env/written_at_exit");
    cr_assert(conc_trace_active());
    conc_green_t *g[2];
    cr_assert_eq(conc_go(&g[0], yielder, (void *)(intptr_t)10), 0);
    cr_assert_eq(conc_go(&g[1], yielder, (void *)(intptr_t)10), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    fflush(NULL);
    exit(0);
}

Test(trace_env, written_at_exit)
{
    NEED_PYTHON();
    /* %p: each process (Criterion's runner and its worker) its own file */
    char pattern[128], cmd[1024];
    snprintf(pattern, sizeof pattern, "/tmp/conc_trace_env_%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "unset BXFI_MAP; CONC_TRACE_TEST_CHILD=1 CONC_TRACE=%s_%%p.json /proc/%d/exe "
             "--filter=trace_env/child >/dev/null 2>&1",
             pattern, (int)getpid());
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    /* the file of the process that ran the green threads passes */
    char ls[256];
    snprintf(ls, sizeof ls, "ls %s_*.json 2>/dev/null", pattern);
    FILE *p = popen(ls, "r");
    cr_assert(p);
    int files = 0, passed = 0;
    char line[200];
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        files++;
        snprintf(trace_path, sizeof trace_path, "%s", line);
        if (check("--no-drops --min green_tracks=2 --min ready=20 >/dev/null") == 0)
            passed++;
        unlink(line);
    }
    pclose(p);
    cr_assert_geq(files, 1, "no trace file %s_<pid>.json was written", pattern);
    cr_assert_eq(passed, 1, "%d of %d trace files hold the child's run", passed, files);
}
/* A CONC_TRACE that cannot be opened, or a trace that cannot be written
 * at exit, is said on stderr (the process has no other way to hear of it). */
static void env_trace_to(const char *target, const char *expect)
{
    char out[128], cmd[1024];
    snprintf(out, sizeof out, "/tmp/conc_trace_env_err_%d.txt", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "unset BXFI_MAP; CONC_TRACE_TEST_CHILD=1 CONC_TRACE=%s /proc/%d/exe "
             "--filter=trace_env/child_quiet >/dev/null 2>%s",
             target, (int)getpid(), out);
    int st = system(cmd);
    cr_expect(WIFEXITED(st), "child status %d", st);
    FILE *f = fopen(out, "r");
    cr_assert(f);
    char buf[4096] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    unlink(out);
    cr_expect(strstr(buf, expect) != NULL, "CONC_TRACE=%s: \"%s\" expected on stderr, got: %s", target, expect, buf);
}

Test(trace_env, child_quiet)
{
    if (!getenv("CONC_TRACE_TEST_CHILD"))
        cr_skip_test("runs only as the child of trace_env/bad_path_and_write_error_are_said");
    conc_yield();
    fflush(NULL);
    exit(0);
}

Test(trace_env, bad_path_and_write_error_are_said)
{
    env_trace_to("/nonexistent-dir/x/trace.json", "conc: CONC_TRACE: no trace");
    if (access("/dev/full", W_OK) == 0)
        env_trace_to("/dev/full", "conc: CONC_TRACE: the trace could not be written");
}
TU_MAIN_WITH_PROCESS_GUARD()
