/*
 * tests/test_util.h — small helpers shared by conc's Criterion tests.
 *
 * - tu_now()/tu_sleep(): clock and sleep that do not go through conc, so a
 *   test of conc's timing is not measured with conc's own clock.
 * - tu_iters(n): scale stress iterations. CONC_TEST_SCALE (a percentage,
 *   default 100) scales them; sanitizer builds default to 10%.
 * - TU_SLACK: generous upper slack (seconds) for "returned after roughly the
 *   timeout" checks; larger under sanitizers.
 * - tu_bunch_*: a bunch of raw pthreads running the same function (like
 *   lock_tests.Bunch). Raw pthreads keep the sync tests independent from
 *   conc's Thread implementation.
 * - TU_WAIT_UNTIL(expr, secs): poll expr until true or secs pass.
 * - tu_tid_sleeping(tid): true when /proc says that thread is blocked
 *   (state S), i.e. past any spinning and parked in the kernel.
 *
 * Worker threads never call cr_assert (it is only safe on the test's own
 * thread): they record what they saw and the test thread asserts.
 */
#ifndef CONC_TEST_UTIL_H
#define CONC_TEST_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <conc.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TU_SANITIZED 1
#endif
#endif
#ifndef TU_SANITIZED
#define TU_SANITIZED 0
#endif
/* TSan cannot start threads in a child forked from a threaded process. */
#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifndef TU_TSAN
#define TU_TSAN 0
#endif

/* Per-test timeout (seconds) for Criterion's .timeout. */
#define TU_TIMEOUT 60
/* Upper slack for timing checks. */
#define TU_SLACK (TU_SANITIZED ? 5.0 : 2.0)
/* Lower epsilon: a timed wait may return this much before its timeout. */
#define TU_EPS 0.005

/* Progress lines on stderr when CONC_TEST_TRACE is set (debugging hangs). */
#define TU_TRACE(...)                                                        \
    do {                                                                     \
        if (getenv("CONC_TEST_TRACE")) {                                     \
            fprintf(stderr, "[trace] " __VA_ARGS__);                         \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

static inline double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void tu_sleep(double s)
{
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static inline long tu_gettid(void) { return (long)syscall(SYS_gettid); }

/* TU_CK(c): in a child process's body (returns its exit status), a check
 * that fails reports the child, the line and the expression on stderr and
 * ends the body with status 99 for the parent's assertion. */
#define TU_CK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "child %d: check failed at line %d: %s\n", (int)getpid(), \
                    __LINE__, #c);                                                \
            return 99;                                                            \
        }                                                                         \
    } while (0)

static inline long tu_iters(long n)
{
    static long pct = -1;
    if (pct < 0) {
        const char *e = getenv("CONC_TEST_SCALE");
        pct = e ? atol(e) : (TU_SANITIZED ? 10 : 100);
        if (pct <= 0)
            pct = 1;
    }
    long r = n * pct / 100;
    return r < 1 ? 1 : r;
}

/* Poll expr (every 0.5 ms) until it is true or secs passed; yields its value. */
#define TU_WAIT_UNTIL(expr, secs)                                            \
    ({                                                                       \
        double tu_dl_ = tu_now() + (secs);                                   \
        bool tu_ok_ = false;                                                 \
        for (;;) {                                                           \
            if (expr) {                                                      \
                tu_ok_ = true;                                               \
                break;                                                       \
            }                                                                \
            if (tu_now() > tu_dl_)                                           \
                break;                                                       \
            tu_sleep(0.0005);                                                \
        }                                                                    \
        tu_ok_;                                                              \
    })

/* True when thread tid of this process is blocked in the kernel. */
static inline bool tu_tid_sleeping(long tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the name may contain spaces */
    if (!p || p[1] != ' ')
        return false;
    return p[2] == 'S' || p[2] == 'D';
}

/* ---------------------------------------------------------------- Bunch */

#define TU_MAX_BUNCH 64

typedef struct tu_bunch tu_bunch_t;
typedef struct tu_member {
    tu_bunch_t *b;
    int idx;
} tu_member_t;

struct tu_bunch {
    void (*fn)(void *arg, int idx);
    void *arg;
    int n;
    atomic_int started, finished;
    atomic_long tids[TU_MAX_BUNCH];
    atomic_int done[TU_MAX_BUNCH];
    pthread_t th[TU_MAX_BUNCH];
    tu_member_t m[TU_MAX_BUNCH];
};

static void *tu__bunch_main(void *p)
{
    tu_member_t *m = p;
    atomic_store(&m->b->tids[m->idx], tu_gettid());
    atomic_fetch_add(&m->b->started, 1);
    m->b->fn(m->b->arg, m->idx);
    atomic_store(&m->b->done[m->idx], 1);
    atomic_fetch_add(&m->b->finished, 1);
    return NULL;
}

/* Start n raw pthreads running fn(arg, 0..n-1). */
static inline void tu_bunch_start(tu_bunch_t *b, int n, void (*fn)(void *, int), void *arg)
{
    cr_assert(n > 0 && n <= TU_MAX_BUNCH);
    memset(b, 0, sizeof *b);
    b->fn = fn;
    b->arg = arg;
    b->n = n;
    for (int i = 0; i < n; i++) {
        b->m[i].b = b;
        b->m[i].idx = i;
        int rc = pthread_create(&b->th[i], NULL, tu__bunch_main, &b->m[i]);
        cr_assert_eq(rc, 0, "pthread_create failed: %d", rc);
    }
}

static inline bool tu_bunch_wait_started(tu_bunch_t *b, double secs)
{
    return TU_WAIT_UNTIL(atomic_load(&b->started) == b->n, secs);
}

/* True when every member has started and is now blocked in the kernel or
 * has returned from its function. */
static inline bool tu_bunch_all_sleeping(tu_bunch_t *b)
{
    if (atomic_load(&b->started) != b->n)
        return false;
    for (int i = 0; i < b->n; i++)
        if (!atomic_load(&b->done[i]) && !tu_tid_sleeping(atomic_load(&b->tids[i])))
            return false;
    return true;
}

static inline void tu_bunch_join(tu_bunch_t *b)
{
    for (int i = 0; i < b->n; i++)
        pthread_join(b->th[i], NULL);
}

/* Run fn on n-1 new threads and on the calling thread (index n-1), then join. */
static inline void tu_run_threads(int n, void (*fn)(void *, int), void *arg)
{
    static tu_bunch_t b; /* one at a time per test process */
    if (n > 1)
        tu_bunch_start(&b, n - 1, fn, arg);
    fn(arg, n - 1);
    if (n > 1)
        tu_bunch_join(&b);
}

/* Assert that a measured wait of dt seconds honoured a timeout of t. */
#define tu_assert_timeout(dt, t)                                                      \
    do {                                                                              \
        double tu_dt_ = (dt), tu_t_ = (t);                                            \
        cr_assert_geq(tu_dt_, tu_t_ - TU_EPS, "returned after %.4fs, before the %.3fs timeout", \
                      tu_dt_, tu_t_);                                                 \
        cr_assert_lt(tu_dt_, tu_t_ + TU_SLACK, "returned after %.4fs for a %.3fs timeout",  \
                     tu_dt_, tu_t_);                                                  \
    } while (0)


/* ------------------------------------------------------- child scenarios
 *
 * Some behaviours are about process exit (conc joins non-daemon threads and
 * waits for pending timers when main returns). A test file that needs them
 * defines its own main with TU_MAIN_WITH_SCENARIOS(fn): run as usual it is
 * Criterion's main; run with CONC_TEST_SCENARIO=name it calls fn(name) and
 * returns fn's result from main, so the process exits the normal way.
 * tu_run_scenario() runs this binary that way, collects its stdout and
 * returns its wait status.
 */
#include <dirent.h>
#include <sys/wait.h>

/* Criterion's own main, for files that define theirs. */
static inline int tu_criterion_main(int argc, char *argv[])
{
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    return result;
}

#define TU_MAIN_WITH_SCENARIOS(fn)                                           \
    int main(int argc, char *argv[])                                         \
    {                                                                        \
        const char *sc = getenv("CONC_TEST_SCENARIO");                       \
        if (sc)                                                              \
            return fn(sc);                                                   \
        return tu_criterion_main(argc, argv);                                \
    }

/* For files whose tests start processes with spawn or the fork server:
 * the binary is re-executed for those children, so main begins with the
 * CONC_PROCESS_MAIN guard (conc/process.h). */
#define TU_MAIN_WITH_PROCESS_GUARD()                                         \
    int main(int argc, char *argv[])                                         \
    {                                                                        \
        CONC_PROCESS_MAIN(argc, argv);                                       \
        return tu_criterion_main(argc, argv);                                \
    }

/* Zombie children of this process (state Z in /proc). */
static inline int tu_zombies(void)
{
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char path[300], buf[512];
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = 0;
        char *rp = strrchr(buf, ')');
        char st;
        int ppid;
        if (rp && sscanf(rp + 2, "%c %d", &st, &ppid) == 2 && ppid == getpid() && st == 'Z')
            n++;
    }
    if (d)
        closedir(d);
    return n;
}

static inline int tu_run_scenario(const char *name, char *out, size_t cap, double *secs)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    cr_assert_gt(len, 0);
    self[len] = 0;
    char env[256];
    snprintf(env, sizeof env, "CONC_TEST_SCENARIO=%s", name);
    double t0 = tu_now();
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        char *argv[] = {self, NULL};
        char *envp[] = {env, NULL};
        execve(self, argv, envp);
        _exit(127);
    }
    close(p[1]);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(p[0], out + n, cap - 1 - n);
        if (r > 0 && n + (size_t)r < cap - 1) {
            n += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        break;
    }
    out[n] = 0;
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (secs)
        *secs = tu_now() - t0;
    return st;
}

/* tu_fork_child(fn, arg): a plain fork() whose child runs fn(arg) and
 * exits with its result. tu_wait_child(pid, secs): wait at most secs for
 * it (then SIGKILL it and fail the test); its exit status, or -signal. */
#include <signal.h>

static inline pid_t tu_fork_child(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(fn(arg));
    return pid;
}

static inline int tu_wait_child(pid_t pid, double secs)
{
    double dl = tu_now() + secs;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (tu_now() > dl) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            cr_assert_fail("child %d did not finish in %.0fs", (int)pid, secs);
        }
        tu_sleep(0.001);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

#endif /* CONC_TEST_UTIL_H */
