/*
 * tests/dump_test.c — conc_dump (conc/trace.h): a known program (a thread
 * blocked on a held Lock, a green thread sleeping, one on a queue get, a
 * thread joining a child process) dumped to a memstream, every expected
 * line checked; dump on a signal.
 */
#include "test_util.h"

/* A library configured with -DCONC_OBSERVE=OFF has none of this. */
#define NEED_OBSERVE()                                                              \
    do {                                                                            \
        if (conc_debug_enable(0) == CONC_EINVAL)                                    \
            cr_skip_test("conc was built with -DCONC_OBSERVE=OFF: nothing to test"); \
    } while (0)

#include <signal.h>
#include <sys/wait.h>

#include "core/sanitize.h"

static conc_lock_t L = CONC_LOCK_INIT;
static conc_event_t stop;
static conc_queue_t *q;

static conc_thread_t *start(const char *name, void *(*fn)(void *), void *arg)
{
    conc_thread_t *t;
    conc_thread_opts_t o = {.name = name};
    cr_assert_eq(conc_thread_new(&t, fn, arg, &o), 0);
    cr_assert_eq(conc_thread_start(t), 0);
    return t;
}

static atomic_int holding;

static void *holder(void *arg)
{
    (void)arg;
    conc_lock_acquire(&L, true, CONC_FOREVER);
    atomic_store(&holding, 1);
    conc_event_wait(&stop, CONC_FOREVER);
    conc_lock_release(&L);
    return NULL;
}

static void *waiter(void *arg)
{
    (void)arg;
    if (conc_lock_acquire(&L, true, CONC_FOREVER) == 0)
        conc_lock_release(&L);
    return NULL;
}

static void *g_sleep(void *arg)
{
    (void)arg;
    conc_sleep(30);
    return NULL;
}

static void *g_get(void *arg)
{
    (void)arg;
    void *item;
    conc_queue_get(q, &item, true, CONC_FOREVER);
    return NULL;
}

static conc_green_t *gs[2];

static void *hub_thread(void *arg)
{
    (void)arg;
    conc_green_opts_t o1 = {.name = "sleeper"}, o2 = {.name = "getter"};
    conc_go_opts(&gs[0], &o1, g_sleep, NULL);
    conc_go_opts(&gs[1], &o2, g_get, NULL);
    conc_event_wait(&stop, CONC_FOREVER);
    conc_green_kill(gs[0], true, CONC_FOREVER);
    conc_queue_put(q, NULL, true, CONC_FOREVER);
    conc_green_join(gs[1], CONC_FOREVER);
    conc_green_free(gs[0]);
    conc_green_free(gs[1]);
    return NULL;
}

static int child_sleep(const void *arg, size_t len)
{
    (void)arg, (void)len;
    tu_sleep(30);
    return 0;
}
CONC_REGISTER(child_sleep);

static void *pjoiner(void *arg)
{
    conc_process_join(arg, CONC_FOREVER);
    return NULL;
}

static void *pool_task(void *arg)
{
    (void)arg;
    conc_event_wait(&stop, CONC_FOREVER);
    return NULL;
}

static conc_future_t *futs[3];

static void *fwaiter(void *arg)
{
    (void)arg;
    conc_future_result(futs[0], CONC_FOREVER, NULL);
    return NULL;
}

static char *dump_to_string(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert(f);
    cr_assert_eq(conc_dump(f), 0);
    fclose(f);
    return buf;
}

/* The line of the dump that starts with prefix (after spaces). */
static char *line_of(const char *dump, const char *prefix)
{
    static char line[1024];
    const char *p = dump;
    while (p && *p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *s = p;
        while (*s == ' ')
            s++;
        if (strncmp(s, prefix, strlen(prefix)) == 0) {
            if (n >= sizeof line)
                n = sizeof line - 1;
            memcpy(line, p, n);
            line[n] = 0;
            return line;
        }
        p = e ? e + 1 : NULL;
    }
    return NULL;
}

static bool all_there(const char *d, char *want[], int n)
{
    for (int i = 0; i < n; i += 2) {
        char *l = line_of(d, want[i]);
        if (!l || !strstr(l, want[i + 1]))
            return false;
    }
    return true;
}

Test(dump, known_program, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    /* the holder of a Lock is known with lock debugging on */
    conc_debug_enable(CONC_DEBUG_LOCKORDER);
    conc_event_init(&stop);
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 0), 0);
    conc_process_t *p;
    conc_process_opts_t po = {.method = CONC_FORK};
    cr_assert_eq(conc_process_new(&p, child_sleep, NULL, 0, &po), 0);
    cr_assert_eq(conc_process_start(p), 0);
    int pid = conc_process_pid(p);

    conc_thread_t *th = start("holder", holder, NULL);
    TU_WAIT_UNTIL(atomic_load(&holding), 10);
    conc_thread_t *tw = start("waiter", waiter, NULL);
    conc_thread_t *thub = start("hubthread", hub_thread, NULL);
    conc_thread_t *tj = start("pjoiner", pjoiner, p);
    conc_executor_t *ex;
    conc_thread_pool_opts_t xo = {.max_workers = 1};
    cr_assert_eq(conc_thread_pool_new(&ex, &xo), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_submit(ex, &futs[i], pool_task, NULL), 0);
    conc_thread_t *tf = start("fwaiter", fwaiter, NULL);

    char lockw[128], qw[128], pw[64], pl[64], fw[128], xl[128];
    snprintf(fw, sizeof fw, "blocked on result of a task of pool %p (future %p) for ", (void *)ex, (void *)futs[0]);
    snprintf(xl, sizeof xl, "%p \"", (void *)ex);
    snprintf(lockw, sizeof lockw, "blocked on Lock %p held by holder for ", (void *)&L);
    snprintf(qw, sizeof qw, "blocked on queue get on %p for ", (void *)q);
    snprintf(pw, sizeof pw, "blocked on join of process %d for ", pid);
    snprintf(pl, sizeof pl, "pid %d: running", pid);
    char *want[] = {
        "Thread \"waiter\"",    lockw,
        "Thread \"holder\"",    "blocked on Event",
        "green \"sleeper\"",    "blocked on sleep until +",
        "green \"getter\"",     qw,
        "Thread \"pjoiner\"",   pw,
        "Process ",             pl,
        "Thread \"MainThread\"", ": running",
        "Thread \"fwaiter\"",    fw,
        "Executor ThreadPoolExecutor", xl,
        "Executor ThreadPoolExecutor", ": 1 of 1 workers, 2 pending work items",
    };
    int nwant = (int)(sizeof want / sizeof want[0]);
    char *d = NULL;
    double t0 = tu_now();
    for (;;) {
        free(d);
        d = dump_to_string();
        if (all_there(d, want, nwant) || tu_now() - t0 > 10)
            break;
        tu_sleep(0.05);
    }
    for (int i = 0; i < nwant; i += 2) {
        char *l = line_of(d, want[i]);
        cr_expect(l && strstr(l, want[i + 1]), "want a line \"%s...%s\" in:\n%s", want[i], want[i + 1], d);
    }
    /* a suspended green thread is walked from its saved context */
    const char *gl = strstr(d, "green \"sleeper\"");
    cr_expect(gl && strncmp(strchr(gl, '\n') + 1, "      #0 ", 9) == 0, "no frames for a green thread:\n%s", d);
    /* backtraces: the main thread's own (the caller of conc_dump) */
    cr_expect(strstr(d, "#0 "), "no backtrace in:\n%s", d);
    cr_expect(strstr(d, "conc dump end:"));
    free(d);

    conc_event_set(&stop);
    cr_assert_eq(conc_thread_join(tf, 10, NULL), 0);
    conc_thread_free(tf);
    for (int i = 0; i < 3; i++) {
        conc_future_result(futs[i], 10, NULL);
        conc_future_free(futs[i]);
    }
    conc_executor_shutdown(ex, true, false);
    conc_executor_free(ex);
    conc_process_terminate(p);
    cr_assert_eq(conc_thread_join(tj, 10, NULL), 0);
    cr_assert_eq(conc_thread_join(th, 10, NULL), 0);
    cr_assert_eq(conc_thread_join(tw, 10, NULL), 0);
    cr_assert_eq(conc_thread_join(thub, 10, NULL), 0);
    conc_thread_free(th);
    conc_thread_free(tw);
    conc_thread_free(thub);
    conc_thread_free(tj);
    conc_process_free(p);
    conc_queue_free(q, NULL);
}

static void *ev_waiter(void *arg)
{
    (void)arg;
    conc_event_wait(&stop, CONC_FOREVER);
    return NULL;
}

Test(dump, blocked_os_thread_backtrace, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_event_init(&stop);
    conc_thread_t *tw = start("evwaiter", ev_waiter, NULL);
    char *d = NULL;
    double t0 = tu_now();
    const char *l = NULL;
    do {
        free(d);
        tu_sleep(0.02);
        d = dump_to_string();
        l = strstr(d, "Thread \"evwaiter\"");
    } while ((!l || !strstr(line_of(d, "Thread \"evwaiter\""), "blocked on Event")) && tu_now() - t0 < 10);
    cr_assert(l, "%s", d);
    const char *next = strchr(l, '\n');
    cr_assert(next);
    if (TU_TSAN)
        cr_expect(strncmp(next + 1, "    (no backtrace: skipped under ThreadSanitizer)", 48) == 0, "%s", d);
    else
        cr_expect(strncmp(next + 1, "    #0 ", 7) == 0, "no backtrace for a blocked thread:\n%s", d);
    free(d);
    conc_event_set(&stop);
    cr_assert_eq(conc_thread_join(tw, 10, NULL), 0);
    conc_thread_free(tw);
}

/* With every observation off a park does not read the clock: a wait that
 * began then has no "for … s"; once a dump was asked for, new waits do. */
static conc_event_t e_early, e_late;
static atomic_int early_in;
static void *early_waiter(void *arg)
{
    (void)arg;
    atomic_store(&early_in, 1);
    conc_event_wait(&e_early, CONC_FOREVER);
    return NULL;
}
static void *late_waiter(void *arg)
{
    (void)arg;
    conc_event_wait(&e_late, CONC_FOREVER);
    return NULL;
}

static char *dump_until_blocked(const char *who)
{
    char *d = NULL, *l = NULL;
    double t0 = tu_now();
    do {
        free(d);
        tu_sleep(0.02);
        d = dump_to_string();
        l = line_of(d, who);
    } while ((!l || !strstr(l, "blocked on Event")) && tu_now() - t0 < 10);
    cr_assert(l && strstr(l, "blocked on Event"), "%s", d);
    return d;
}

Test(dump, how_long_only_for_waits_begun_under_observation, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_event_init(&e_early);
    conc_event_init(&e_late);
    conc_thread_t *a = start("early", early_waiter, NULL);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&early_in) && tu_tid_sleeping(conc_thread_native_id(a)), 10));
    tu_sleep(0.05);
    char *d = dump_until_blocked("Thread \"early\"");
    cr_expect(!strstr(line_of(d, "Thread \"early\""), " for "), "blocked before any observation: %s", d);
    free(d);
    conc_thread_t *b = start("late", late_waiter, NULL);
    d = dump_until_blocked("Thread \"late\"");
    cr_expect(strstr(line_of(d, "Thread \"late\""), " for "), "blocked after a dump: %s", d);
    free(d);
    conc_event_set(&e_early);
    conc_event_set(&e_late);
    cr_assert_eq(conc_thread_join(a, 10, NULL), 0);
    cr_assert_eq(conc_thread_join(b, 10, NULL), 0);
    conc_thread_free(a);
    conc_thread_free(b);
}

Test(dump, on_signal, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    cr_assert_eq(conc_dump_on_signal(SIGKILL), CONC_EINVAL);
    cr_assert_eq(conc_dump_on_signal(0), CONC_EINVAL);
    cr_assert_eq(conc_dump(NULL), CONC_EINVAL);
    /* stderr to a file, raise the signal, wait for the dump */
    char path[] = "/tmp/conc_dump_testXXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    cr_assert_eq(conc_dump_on_signal(SIGUSR2), 0);
    raise(SIGUSR2);
    bool seen = false;
    double t0 = tu_now();
    while (!seen && tu_now() - t0 < 10) {
        tu_sleep(0.02);
        char buf[8192];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = 0;
            seen = strstr(buf, "conc dump end:") != NULL;
        }
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    signal(SIGUSR2, SIG_DFL);
    cr_assert(seen, "no dump after the signal");
}

/* A forked child keeps the dump on a signal (a dumping thread of its own:
 * the parent's does not exist there, and the signal was swallowed), and
 * a child forked while another thread was dumping can dump too. */
static atomic_int dumping_on;

static void *dump_loop(void *arg)
{
    (void)arg;
    FILE *f = fopen("/dev/null", "w");
    while (atomic_load(&dumping_on))
        conc_dump(f);
    fclose(f);
    return NULL;
}

#if !defined(CONC__TSAN)
/* True when every other thread of this process is blocked in the kernel
 * (the dumping thread conc_dump_on_signal started is up and waiting). */
static bool other_threads_sleeping(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return false;
    long me = tu_gettid();
    bool all = true;
    for (struct dirent *e; all && (e = readdir(d)) != NULL;) {
        long tid = atol(e->d_name);
        if (tid > 0 && tid != me && !tu_tid_sleeping(tid))
            all = false;
    }
    closedir(d);
    return all;
}

static int child_dump_on_signal(void)
{
    char path[] = "/tmp/conc_dump_childXXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 2;
    unlink(path);
    dup2(fd, 2);
    raise(SIGUSR2);
    double t0 = tu_now();
    while (tu_now() - t0 < 10) {
        tu_sleep(0.02);
        char buf[8192];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = 0;
            if (strstr(buf, "conc dump end:"))
                return 0;
        }
    }
    return 1;
}
#endif

Test(dump, forked_child, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    int st;
#if defined(CONC__TSAN)
    fprintf(stderr, "dump/forked_child: the child's dump on a signal is not checked under TSan "
                    "(it starts no thread in a forked child)\n");
#else
    cr_assert_eq(conc_dump_on_signal(SIGUSR2), 0);
    /* fork once the dumping thread is up and waiting, not while it is
     * being created (a fork then can leave a sanitizer's runtime lock held
     * in the child, which then cannot start its own dumping thread) */
    cr_assert(TU_WAIT_UNTIL(other_threads_sleeping(), 10.0), "the dumping thread never waited");
    pid_t p = fork();
    cr_assert(p >= 0);
    if (p == 0) {
        alarm(20);
        _exit(child_dump_on_signal());
    }
    cr_assert_eq(waitpid(p, &st, 0), p);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's dump on SIGUSR2: status %d", st);
    signal(SIGUSR2, SIG_DFL);
#endif

    atomic_store(&dumping_on, 1);
    conc_thread_t *t = start("dumper", dump_loop, NULL);
    int hung = 0;
    for (int k = 0; k < 10; k++) {
        tu_sleep(0.01);
        pid_t c = fork();
        cr_assert(c >= 0);
        if (c == 0) {
            alarm(5); /* a dump_mu inherited locked would hang here */
            FILE *f = fopen("/dev/null", "w");
            conc_dump(f);
            _exit(0);
        }
        cr_assert_eq(waitpid(c, &st, 0), c);
        hung += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    atomic_store(&dumping_on, 0);
    cr_assert_eq(conc_thread_join(t, 30, NULL), 0);
    conc_thread_free(t);
    cr_expect_eq(hung, 0, "%d of 10 children forked during a dump could not dump", hung);
}

void conc__dump_env(void); /* core/observe.h */

Test(dump, env_bad_signal_is_said, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    char path[] = "/tmp/conc_dump_envXXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    setenv("CONC_DUMP_SIGNAL", "QUITT", 1);
    conc__dump_env();
    setenv("CONC_DUMP_SIGNAL", "3x", 1);
    conc__dump_env();
    unsetenv("CONC_DUMP_SIGNAL");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[1024] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    cr_assert(n > 0, "a bad CONC_DUMP_SIGNAL was silently ignored");
    cr_expect(strstr(buf, "CONC_DUMP_SIGNAL=QUITT") && strstr(buf, "CONC_DUMP_SIGNAL=3x"), "%s", buf);
}

/* A green thread blocked on a Lock held by a green thread of the same
 * hub: the dump, which walks that hub's list under its guard, looks the
 * holder up in the registry, whose walk takes the same guard. */
static conc_lock_t GL = CONC_LOCK_INIT;

static void *g_hold(void *arg)
{
    (void)arg;
    conc_lock_acquire(&GL, true, 5.0); /* the slow path: records this green thread as the owner */
    conc_sleep(0.5);
    conc_lock_release(&GL);
    return NULL;
}

static void *g_want(void *arg)
{
    (void)arg;
    conc_lock_acquire(&GL, true, CONC_FOREVER);
    conc_lock_release(&GL);
    return NULL;
}

static void *dump_soon(void *arg)
{
    (void)arg;
    tu_sleep(0.2);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    conc_dump(f);
    fclose(f);
    return buf;
}

Test(dump, green_waits_on_green_holder, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_green_opts_t o1 = {.name = "gholder"}, o2 = {.name = "gwanter"};
    conc_green_t *g[2];
    cr_assert_eq(conc_go_opts(&g[0], &o1, g_hold, NULL), 0);
    cr_assert_eq(conc_go_opts(&g[1], &o2, g_want, NULL), 0);
    conc_thread_t *t = start("dumper", dump_soon, NULL);
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    void *out = NULL;
    cr_assert_eq(conc_thread_join(t, 10, &out), 0, "the dump hung");
    conc_thread_free(t);
    cr_assert(out);
    cr_expect(strstr(out, "held by gholder"), "%s", (char *)out);
    free(out);
}

/* A process pool: 2 workers, 4 slow tasks. The dump lists the pool with
 * 2 running and 2 pending, each worker as a child process of the pool
 * with the task it runs, the pool's results thread by name, and a thread
 * waiting on a queued task's future by the task and the pool. */
static int dump_slow(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    struct timespec ts = {2, 0};
    nanosleep(&ts, NULL);
    return 0;
}
CONC_POOL_REGISTER(dump_slow);

static conc_future_t *pfuts[4];

static void *pfwaiter(void *arg)
{
    (void)arg;
    conc_future_result(pfuts[3], 30, NULL);
    return NULL;
}

Test(dump, process_pool, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_executor_t *ex;
    conc_process_pool_opts_t o = {.max_workers = 2, .method = CONC_FORK}; /* Criterion's main: no CONC_PROCESS_MAIN */
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_process_pool_submit(ex, &pfuts[i], dump_slow, NULL, 0), 0);
    conc_thread_t *tw = start("pfwaiter", pfwaiter, NULL);
    char *d = NULL;
    int pids[2] = {0, 0};
    char pidstr[2][32];
    bool ok = false;
    double t0 = tu_now();
    while (!ok && tu_now() - t0 < 10) {
        free(d);
        tu_sleep(0.05);
        if (conc_process_pool_pids(ex, pids, 2) != 2)
            continue;
        d = dump_to_string();
        snprintf(pidstr[0], sizeof pidstr[0], "pid %d: worker", pids[0]);
        snprintf(pidstr[1], sizeof pidstr[1], "pid %d: worker", pids[1]);
        const char *w = line_of(d, "Thread \"pfwaiter\"");
        ok = strstr(d, "2 pending work items, 2 running") && strstr(d, pidstr[0]) && strstr(d, pidstr[1]) &&
             w && strstr(w, "blocked on result of a task dump_slow of pool 0x");
        /* the results thread is blocked between two messages (it may be handling one) */
        const char *r = ok ? strstr(d, " results\" (ident") : NULL;
        const char *re = r ? strchr(r, '\n') : NULL;
        const char *rw = r ? strstr(r, "blocked on results from the worker processes of pool 0x") : NULL;
        ok = rw && rw < re;
    }
    cr_assert(ok, "%s", d);
    char *l = line_of(d, "Executor ProcessPoolExecutor");
    cr_expect(l && strstr(l, "2 of 2 worker processes, 2 pending work items, 2 running"), "%s", d);
    cr_expect(line_of(d, "pending: task dump_slow"), "%s", d);
    for (int i = 0; i < 2; i++) {
        const char *p = strstr(d, pidstr[i]);
        const char *e = p ? strchr(p, '\n') : NULL;
        cr_expect(p && e, "%s", d);
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)(e - p), p);
        cr_expect(strstr(line, "of ProcessPoolExecutor 0x") && strstr(line, "alive, running task dump_slow"),
                  "%s", d);
    }
    cr_expect(strstr(d, "watcher\""), "%s", d);
    l = strstr(d, "conc dump end:");
    cr_expect(l && strstr(l, "2 child processes"), "%s", d);
    free(d);
    cr_assert_eq(conc_thread_join(tw, 30, NULL), 0);
    conc_thread_free(tw);
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(conc_future_result(pfuts[i], 30, NULL), 0);
        conc_future_free(pfuts[i]);
    }
    conc_executor_free(ex);
}

/* Forked from a green thread: the child's registry keeps the OS thread
 * that runs the forking green thread's hub, so the child's dump shows the
 * forking green thread (and its hub's others), and the deadlock detector
 * finds holders among them. */
static conc_lock_t FA = CONC_LOCK_INIT, FB = CONC_LOCK_INIT;

static void *g_sleep_short(void *arg)
{
    (void)arg;
    conc_sleep(0.3);
    return NULL;
}

static int fk_sib_rc;

static void *fk_sib(void *arg)
{
    (void)arg;
    conc_lock_acquire(&FB, true, CONC_FOREVER);
    if ((fk_sib_rc = conc_lock_acquire(&FA, true, 3)) == 0)
        conc_lock_release(&FA);
    conc_lock_release(&FB);
    return NULL;
}

static int fk_child(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return 10;
    conc_dump(f);
    fclose(f);
    int rc = 0;
    if (!strstr(buf, "green \"forker\": running"))
        rc = 11;
    else if (!strstr(buf, "green \"napper\""))
        rc = 12;
    if (rc) {
        fputs(buf, stderr);
        free(buf);
        return rc;
    }
    free(buf);
    /* the detector: forker holds FA; sib takes FB, then waits for FA;
     * forker waits for FB: one of the two gets CONC_EDEADLK */
    conc_green_t *s;
    conc_green_opts_t o = {.name = "sib"};
    if (conc_go_opts(&s, &o, fk_sib, NULL) != 0)
        return 13;
    conc_sleep(0.05);
    int d = conc_lock_acquire(&FB, true, 2);
    if (d == 0)
        conc_lock_release(&FB);
    conc_lock_release(&FA);
    conc_green_join(s, 5);
    conc_green_free(s);
    return (d == CONC_EDEADLK) + (fk_sib_rc == CONC_EDEADLK) == 1 ? 0 : 14;
}

static void *fk_green(void *arg)
{
    (void)arg;
    conc_lock_acquire(&FA, true, CONC_FOREVER);
    pid_t p = fork();
    if (p == 0) {
        alarm(20);
        _exit(fk_child());
    }
    conc_lock_release(&FA);
    int st = 0;
    if (p < 0 || waitpid(p, &st, 0) != p)
        return (void *)(intptr_t)-1;
    return (void *)(intptr_t)(WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st));
}

Test(dump, forked_from_a_green_thread, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    /* as green_fork_test notes: TSan loses the happens-before of fibers
     * made before the fork when the child switches to them */
    if (TU_TSAN)
        cr_skip_test("fork after threads: TSan reports its own fiber bookkeeping");
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_debug_set_delay(0.02);
    conc_green_t *n, *g;
    conc_green_opts_t on = {.name = "napper"}, of = {.name = "forker"};
    cr_assert_eq(conc_go_opts(&n, &on, g_sleep_short, NULL), 0);
    cr_assert_eq(conc_go_opts(&g, &of, fk_green, NULL), 0);
    void *res = NULL;
    cr_assert_eq(conc_green_get(g, 30, &res), 0);
    conc_green_join(n, 5);
    conc_green_free(g);
    conc_green_free(n);
    conc_debug_set_delay(0.1);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    cr_expect_eq((int)(intptr_t)res, 0,
                 "child status %d (11: dump lacks the forker, 12: lacks its sibling, 14: no CONC_EDEADLK)",
                 (int)(intptr_t)res);
}

/* Dumps from another OS thread while the hub spawns and ends green
 * threads as fast as it can: the hub changes its list of live green
 * threads under the writer side of an asymmetric guard (no atomic
 * read-modify-write; green/internal.h), the dump reads it under the
 * reader side. Every dump must list the steady green thread and each
 * spawned-but-not-yet-run one it caught; neither side may hang. */
static atomic_int race_done;

static void *g_steady(void *arg)
{
    (void)arg;
    while (!atomic_load(&race_done))
        conc_sleep(0.001);
    return NULL;
}

static void *g_nop(void *arg)
{
    ++*(long *)arg;
    return NULL;
}

static void *race_dumper(void *arg)
{
    int n = *(int *)arg, bad = 0;
    for (int i = 0; i < n; i++) {
        char *d = dump_to_string();
        if (!strstr(d, "steady"))
            bad++;
        free(d);
    }
    atomic_store(&race_done, 1);
    return (void *)(intptr_t)bad;
}

Test(dump, races_spawn_and_end, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    atomic_store(&race_done, 0);
    conc_green_opts_t os = {.name = "steady"};
    conc_green_t *st;
    cr_assert_eq(conc_go_opts(&st, &os, g_steady, NULL), 0);
    conc_yield(); /* steady is on the hub's list from its spawn on */
    int n = TU_SANITIZED ? 40 : 300;
    conc_thread_t *t = start("racer", race_dumper, &n);
    long ran = 0, spawned = 0;
    while (!atomic_load(&race_done)) {
        conc_green_t *g[4];
        for (int k = 0; k < 4; k++, spawned++)
            cr_assert_eq(conc_go(&g[k], g_nop, &ran), 0);
        for (int k = 0; k < 4; k++) {
            cr_assert_eq(conc_green_join(g[k], 10), 0);
            conc_green_free(g[k]);
        }
    }
    void *bad = NULL;
    cr_assert_eq(conc_thread_join(t, 30, &bad), 0, "the dumper hung");
    conc_thread_free(t);
    cr_assert_eq(conc_green_join(st, 10), 0);
    conc_green_free(st);
    cr_expect_eq((intptr_t)bad, 0, "%ld dumps lacked the steady green thread", (long)(intptr_t)bad);
    cr_expect_eq(ran, spawned);
}

/* The dump reads what a context waits on, then describes it: a green
 * thread that was being joined may have ended by then, and its record
 * gone back to its hub for the next spawn (poisoned under ASan). The
 * description looks the target up among the live green threads, under
 * their hub's guard, and never reads (nor names: conc_green_name writes a
 * default name) a record that is not live. (Review of the recycled
 * records: the dump read and named the kept record.) */
#include "core/observe.h"
#include "observe/internal.h"

static void *g_park_on(void *arg)
{
    conc_event_wait((conc_event_t *)arg, 10.0);
    return NULL;
}

Test(dump, describes_a_join_target_that_ended, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    long ran = 0;
    char buf[200], old[64];
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, g_nop, &ran), 0);
    cr_assert_eq(conc_green_join(g, 10), 0);
    snprintf(old, sizeof old, "%s", conc_green_name(g));
    cr_assert_eq(conc_green_free(g), 0); /* kept by its hub: no live green thread */
    conc__reg_lock();
    conc__describe_obj(buf, sizeof buf, g, CONC__WAIT_GREEN_JOIN);
    conc__reg_unlock();
    cr_expect(strstr(buf, "ended") && !strstr(buf, old), "%s", buf);
    /* a live one (the record reused) is described by its name */
    conc_event_t ev;
    cr_assert_eq(conc_event_init(&ev), 0);
    conc_green_opts_t o = {.name = "the-target"};
    cr_assert_eq(conc_go_opts(&g, &o, g_park_on, &ev), 0);
    cr_assert_eq(conc_yield(), 0);
    conc__reg_lock();
    conc__describe_obj(buf, sizeof buf, g, CONC__WAIT_GREEN_JOIN);
    conc__reg_unlock();
    cr_expect(strstr(buf, "join of green thread the-target"), "%s", buf);
    cr_assert_eq(conc_event_set(&ev), 0);
    cr_assert_eq(conc_green_join(g, 10), 0);
    cr_assert_eq(conc_green_free(g), 0);
    cr_assert_eq(ran, 1);
}
