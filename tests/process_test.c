/*
 * conc_process_t: the behaviours of CPython's _test_multiprocessing
 * _TestProcess (exit codes, join timeouts, is_alive, names, daemons,
 * sentinels, close, parent_process, active_children, cpu_count), for each
 * start method, plus the exit sequence and "no zombies".
 *
 * This file has its own main: spawn and the fork server run a fresh copy of
 * this executable, whose main must begin with CONC_PROCESS_MAIN. Criterion
 * runs every test in a worker started with BXFI_MAP in its environment; a
 * spawned copy inheriting it would take itself for a worker, so the suite's
 * init removes it (Criterion reads it only at start-up).
 *
 * Child functions check what they see and return 0, or 99 after printing
 * the failed check on stderr; the test asserts the exit code.
 */
#include "test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <conc/process.h>
#include <conc/queue.h>

#include "core/time.h"
#include "process/internal.h"

static const conc_start_method_t METHODS[] = {CONC_FORK, CONC_SPAWN, CONC_FORKSERVER};
#define NMETHODS 3

/* gcc 12's ASan can deadlock in a child forked from a threaded process. */
#define SKIP_FORK_AFTER_THREADS()                                                        \
    do {                                                                                 \
        if (TU_SANITIZED)                                                                \
            cr_skip_test("fork from a threaded process can deadlock under the sanitizer"); \
    } while (0)

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(process, .init = setup, .timeout = TU_TIMEOUT);

/* ------------------------------------------------------ child functions */

static int ret_byte(const void *arg, size_t len)
{
    return len ? *(const unsigned char *)arg : 0;
}
CONC_REGISTER(ret_byte);

static int fail_fn(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    conc_fail(CONC_EINVAL, "expected failure from a child (ignore this line)");
    return 0;
}
CONC_REGISTER(fail_fn);

static int sleeper(const void *arg, size_t len)
{
    double s = 30;
    if (len == sizeof s)
        memcpy(&s, arg, sizeof s);
    tu_sleep(s);
    return 0;
}
CONC_REGISTER(sleeper);

typedef struct {
    int parent_pid;
    bool daemon;
    char name[32];
} info_arg_t;

static int info_fn(const void *arg, size_t len)
{
    info_arg_t a;
    TU_CK(len == sizeof a);
    memcpy(&a, arg, sizeof a);
    conc_process_t *me = conc_current_process();
    TU_CK(strcmp(conc_process_name(me), a.name) == 0);
    TU_CK(conc_process_pid(me) == getpid());
    TU_CK(conc_process_daemon(me) == a.daemon);
    TU_CK(conc_process_is_alive(me));
    TU_CK(conc_process_join(me, 0) == CONC_EPERM);
    conc_process_t *pp = conc_parent_process();
    TU_CK(pp != NULL);
    TU_CK(conc_process_pid(pp) == a.parent_pid);
    TU_CK(strcmp(conc_process_name(pp), "MainProcess") == 0);
    TU_CK(conc_process_is_alive(pp));
    TU_CK(conc_process_join(pp, 0.01) == CONC_ETIMEDOUT);
    TU_CK(conc_process_sentinel(pp) >= 0);
    TU_CK(conc_process_terminate(pp) == CONC_EPERM);
    return 0;
}
CONC_REGISTER(info_fn);

static int sum_fn(const void *arg, size_t len)
{
    const unsigned char *b = arg;
    unsigned s = 0;
    for (size_t i = 0; i < len; i++)
        s += b[i];
    TU_CK(len == (1u << 20) + 3);
    return (int)(s & 0x7f);
}
CONC_REGISTER(sum_fn);

static int daemon_parent(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    conc_process_t *p;
    conc_process_opts_t o = {.method = CONC_FORK};
    TU_CK(conc_process_new(&p, ret_byte, NULL, 0, &o) == 0);
    TU_CK(conc_process_start(p) == CONC_EPERM); /* daemonic processes have no children */
    conc_process_free(p);
    return 0;
}
CONC_REGISTER(daemon_parent);

/* Writes 'N' to fd after 0.3 s. */
static int slow_writer(const void *arg, size_t len)
{
    int fd;
    TU_CK(len == sizeof fd);
    memcpy(&fd, arg, sizeof fd);
    tu_sleep(0.3);
    TU_CK(write(fd, "N", 1) == 1);
    return 0;
}
CONC_REGISTER(slow_writer);

/* Sleeps (a daemon the exit sequence must terminate). */
static int daemon_sleeper(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    tu_sleep(30);
    return 0;
}
CONC_REGISTER(daemon_sleeper);

/* Starts a slow non-daemon and a daemon grandchild and returns at once:
 * the exit sequence must join the first and terminate the second. */
static int exit_seq_fn(const void *arg, size_t len)
{
    int fd;
    TU_CK(len == sizeof fd);
    memcpy(&fd, arg, sizeof fd);
    conc_process_t *a, *b;
    conc_process_opts_t oa = {.method = CONC_FORK};
    conc_process_opts_t ob = {.method = CONC_FORK, .daemon = true};
    TU_CK(conc_process_new(&a, slow_writer, &fd, sizeof fd, &oa) == 0);
    TU_CK(conc_process_new(&b, daemon_sleeper, &fd, sizeof fd, &ob) == 0);
    TU_CK(conc_process_start(a) == 0);
    TU_CK(conc_process_start(b) == 0);
    char buf[1 + sizeof(int)];
    int dpid = conc_process_pid(b);
    buf[0] = 'D';
    memcpy(buf + 1, &dpid, sizeof dpid);
    TU_CK(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf);
    /* Names carry the creator's numbers: the child is Process-N. */
    const char *me = conc_process_name(conc_current_process());
    char want[64];
    snprintf(want, sizeof want, "%s:1", me);
    TU_CK(strncmp(me, "Process-", 8) == 0);
    TU_CK(strcmp(conc_process_name(a), want) == 0);
    conc_process_free(a);
    conc_process_free(b);
    return 0;
}
CONC_REGISTER(exit_seq_fn);

/* Internal API: reverse the argument into the first passed fd. */
static int pipe_writer(const void *arg, size_t len)
{
    const int *fds;
    TU_CK(conc__child_fds(&fds) == 1);
    char buf[64];
    TU_CK(len <= sizeof buf);
    for (size_t i = 0; i < len; i++)
        buf[i] = ((const char *)arg)[len - 1 - i];
    TU_CK(write(fds[0], buf, len) == (ssize_t)len);
    return 0;
}
CONC_REGISTER(pipe_writer);

/* Reports its parent's pid (the fork server's) on the first passed fd. */
static int report_ppid(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    const int *fds;
    TU_CK(conc__child_fds(&fds) == 1);
    int pid = getppid();
    TU_CK(write(fds[0], &pid, sizeof pid) == (ssize_t)sizeof pid);
    return 0;
}
CONC_REGISTER(report_ppid);

/* Starts a fork-server child that reports the server's pid, then waits to
 * be killed. */
static int server_owner(const void *arg, size_t len)
{
    int fd;
    TU_CK(len == sizeof fd);
    memcpy(&fd, arg, sizeof fd);
    conc__child_t c;
    conc__launch_t l = {.entry = conc_registry_find("report_ppid"), .method = CONC_FORKSERVER,
                        .name = "reporter", .fds = &fd, .nfds = 1};
    TU_CK(conc__child_start(&c, &l) == 0);
    TU_CK(conc__child_wait(&c, CONC__NO_DEADLINE) == 0);
    TU_CK(c.exitcode == 0);
    conc__child_release(&c);
    tu_sleep(30);
    return 0;
}
CONC_REGISTER(server_owner);

static int not_registered(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    return 5;
}

/* -------------------------------------------------------------- helpers */

static conc_process_t *start(conc_process_fn fn, const void *arg, size_t len, conc_start_method_t m,
                             bool daemon, const char *name)
{
    conc_process_opts_t o = {.method = m, .daemon = daemon, .name = name};
    conc_process_t *p = NULL;
    cr_assert_eq(conc_process_new(&p, fn, arg, len, &o), 0);
    int rc = conc_process_start(p);
    cr_assert_eq(rc, 0, "start (%s): %s", conc_start_method_name(m), conc_strerror(rc));
    return p;
}

static int exitcode_of(conc_process_t *p)
{
    int code = -1000;
    int rc = conc_process_exitcode(p, &code);
    cr_assert_eq(rc, 0, "exitcode: %s", conc_strerror(rc));
    return code;
}

static int join_code(conc_process_t *p)
{
    cr_assert_eq(conc_process_join(p, 20), 0);
    return exitcode_of(p);
}

/* Not a zombie of ours: our own child is reaped (ECHILD) and, for any
 * child, /proc shows no zombie with that pid. */
static bool reaped(pid_t pid, bool ours)
{
    if (ours) {
        int st;
        if (waitpid(pid, &st, WNOHANG) != -1 || errno != ECHILD)
            return false;
    }
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return !(p && p[1] == ' ' && p[2] == 'Z');
}

static ssize_t read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static bool fd_readable(int fd, int ms)
{
    struct pollfd pf = {fd, POLLIN, 0};
    return poll(&pf, 1, ms) == 1;
}

/* ------------------------------------------------------------- registry */

Test(process, registry)
{
    const conc_registration_t *r = conc_registry_find("ret_byte");
    cr_assert_not_null(r);
    cr_assert_eq(r->sig, CONC_SIG_PROCESS);
    cr_assert(r->fn == (void (*)(void))ret_byte);
    cr_assert_eq(conc_registry_find_fn((void (*)(void))ret_byte), r);
    cr_assert_null(conc_registry_find("no_such_function"));
    cr_assert_null(conc_registry_find(NULL));
    cr_assert_null(conc_registry_find_fn((void (*)(void))not_registered));
    cr_assert_eq(conc_register(NULL), CONC_EINVAL);
}

static void *task_shape(void *a) { return a; }
CONC_REGISTER(task_shape);

Test(process, registry_signature_tags)
{
    const conc_registration_t *r = conc_registry_find("task_shape");
    cr_assert_not_null(r);
    cr_assert_eq(r->sig, CONC_SIG_TASK);
}

/* -------------------------------------------------------------- current */

Test(process, current)
{
    conc_process_t *me = conc_current_process();
    cr_assert_not_null(me);
    cr_assert_str_eq(conc_process_name(me), "MainProcess");
    cr_assert_eq(conc_process_pid(me), getpid());
    cr_assert(conc_process_is_alive(me));
    cr_assert_not(conc_process_daemon(me));
    cr_assert_eq(conc_process_join(me, 0), CONC_EPERM);
    cr_assert_eq(conc_process_start(me), CONC_EPERM);
    cr_assert_eq(conc_process_free(me), CONC_EINVAL);
    cr_assert_null(conc_parent_process());
}

Test(process, cpu_count)
{
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    int n = conc_cpu_count();
    cr_assert_geq(n, 1);
    cr_assert_eq(n, CPU_COUNT(&set));
}

Test(process, bad_arguments)
{
    conc_process_t *p;
    cr_assert_eq(conc_process_new(NULL, ret_byte, NULL, 0, NULL), CONC_EINVAL);
    cr_assert_eq(conc_process_new(&p, NULL, NULL, 0, NULL), CONC_EINVAL);
    cr_assert_eq(conc_process_new(&p, ret_byte, NULL, 3, NULL), CONC_EINVAL);
    conc_process_opts_t o = {.method = (conc_start_method_t)42};
    cr_assert_eq(conc_process_new(&p, ret_byte, NULL, 0, &o), CONC_EINVAL);
    cr_assert_eq(conc_process_start(NULL), CONC_EINVAL);
    cr_assert_eq(conc_process_join(NULL, 0), CONC_EINVAL);
    cr_assert_not(conc_process_is_alive(NULL));
    cr_assert_eq(conc_process_pid(NULL), CONC_EINVAL);
    cr_assert_eq(conc_process_sentinel(NULL), CONC_EINVAL);
    cr_assert_eq(conc_process_terminate(NULL), CONC_EINVAL);
    cr_assert_eq(conc_process_close(NULL), CONC_EINVAL);
    cr_assert_eq(conc_process_free(NULL), CONC_EINVAL);
    cr_assert_eq(conc_set_start_method((conc_start_method_t)9), CONC_EINVAL);
    cr_assert_eq(conc_process_new(&p, ret_byte, NULL, 0, NULL), 0);
    cr_assert_eq(conc_process_join(p, -2), CONC_EPERM); /* not started (a negative timeout is a poll) */
    cr_assert_eq(conc_process_join(p, NAN), CONC_EINVAL);
    int code;
    cr_assert_eq(conc_process_exitcode(p, NULL), CONC_EINVAL);
    cr_assert_eq(conc_process_exitcode(p, &code), CONC_EAGAIN);
    conc_process_free(p);
}

/* ------------------------------------------------- each start method */

Test(process, exitcodes_each_method)
{
    for (int i = 0; i < NMETHODS; i++) {
        conc_start_method_t m = METHODS[i];
        unsigned char v = (unsigned char)(40 + i);
        conc_process_t *p = start(ret_byte, &v, 1, m, false, NULL);
        cr_assert_eq(conc_process_method(p), m);
        pid_t pid = conc_process_pid(p);
        cr_assert_gt(pid, 0);
        cr_assert_eq(join_code(p), 40 + i, "%s", conc_start_method_name(m));
        cr_assert_not(conc_process_is_alive(p));
        cr_assert(reaped(pid, m != CONC_FORKSERVER), "%s child left a zombie", conc_start_method_name(m));
        conc_process_free(p);

        /* conc_fail -> 1 */
        p = start(fail_fn, NULL, 0, m, false, NULL);
        cr_assert_eq(join_code(p), 1, "%s", conc_start_method_name(m));
        conc_process_free(p);
    }
}

Test(process, terminate_and_kill_each_method)
{
    for (int i = 0; i < NMETHODS; i++) {
        conc_start_method_t m = METHODS[i];
        conc_process_t *p = start(sleeper, NULL, 0, m, false, NULL);
        cr_assert(conc_process_is_alive(p));
        int code;
        cr_assert_eq(conc_process_exitcode(p, &code), CONC_EAGAIN);
        double t0 = tu_now();
        cr_assert_eq(conc_process_join(p, 0.1), CONC_ETIMEDOUT);
        double dt = tu_now() - t0;
        tu_assert_timeout(dt, 0.1);
        cr_assert_eq(conc_process_join(p, 0), CONC_ETIMEDOUT);
        cr_assert(conc_process_is_alive(p));
        cr_assert_eq(conc_process_terminate(p), 0);
        cr_assert_eq(join_code(p), -SIGTERM, "%s", conc_start_method_name(m));
        cr_assert_not(conc_process_is_alive(p));
        cr_assert_eq(conc_process_terminate(p), 0); /* harmless once it ended */
        pid_t pid = conc_process_pid(p);
        cr_assert(reaped(pid, m != CONC_FORKSERVER));
        conc_process_free(p);

        p = start(sleeper, NULL, 0, m, false, NULL);
        cr_assert_eq(conc_process_kill(p), 0);
        cr_assert_eq(join_code(p), -SIGKILL, "%s", conc_start_method_name(m));
        conc_process_free(p);
    }
}

Test(process, info_in_child_each_method)
{
    for (int i = 0; i < NMETHODS; i++) {
        conc_start_method_t m = METHODS[i];
        info_arg_t a = {.parent_pid = getpid(), .daemon = (i % 2) == 1};
        snprintf(a.name, sizeof a.name, "info-%s", conc_start_method_name(m));
        conc_process_t *p = start(info_fn, &a, sizeof a, m, a.daemon, a.name);
        cr_assert_str_eq(conc_process_name(p), a.name);
        cr_assert_eq(conc_process_daemon(p), a.daemon);
        cr_assert_eq(join_code(p), 0, "%s: see the child's line above", conc_start_method_name(m));
        conc_process_free(p);
    }
}

Test(process, big_argument_each_method)
{
    size_t n = (1u << 20) + 3;
    unsigned char *buf = malloc(n);
    cr_assert_not_null(buf);
    unsigned s = 0;
    for (size_t i = 0; i < n; i++) {
        buf[i] = (unsigned char)(i * 7 + 3);
        s += buf[i];
    }
    for (int i = 0; i < NMETHODS; i++) {
        conc_process_t *p = start(sum_fn, buf, n, METHODS[i], false, NULL);
        memset(buf, 0, 16); /* the argument was copied at new */
        for (size_t k = 0; k < 16; k++)
            buf[k] = (unsigned char)(k * 7 + 3);
        cr_assert_eq(join_code(p), (int)(s & 0x7f), "%s", conc_start_method_name(METHODS[i]));
        conc_process_free(p);
    }
    free(buf);
}

Test(process, sentinel_each_method)
{
    for (int i = 0; i < NMETHODS; i++) {
        double s = 0.3;
        conc_process_t *p = start(sleeper, &s, sizeof s, METHODS[i], false, NULL);
        int fd = conc_process_sentinel(p);
        cr_assert_geq(fd, 0);
        cr_assert_not(fd_readable(fd, 0));
        cr_assert(fd_readable(fd, 10000), "%s: sentinel never readable", conc_start_method_name(METHODS[i]));
        cr_assert_eq(join_code(p), 0);
        cr_assert(fd_readable(fd, 0));
        conc_process_free(p);
    }
}

Test(process, pipe_result_internal_api_each_method)
{
    const conc_registration_t *e = conc_registry_find("pipe_writer");
    cr_assert_not_null(e);
    for (int i = 0; i < NMETHODS; i++) {
        int pp[2];
        cr_assert_eq(pipe2(pp, O_CLOEXEC), 0);
        conc__child_t c;
        conc__launch_t l = {.entry = e, .arg = "abcdef", .len = 6, .method = METHODS[i],
                            .name = "piper", .fds = &pp[1], .nfds = 1};
        cr_assert_eq(conc__child_start(&c, &l), 0, "%s", conc_start_method_name(METHODS[i]));
        close(pp[1]);
        char buf[16] = {0};
        cr_assert_eq(read_full(pp[0], buf, 6), 6);
        cr_assert_str_eq(buf, "fedcba");
        cr_assert_eq(conc__child_wait(&c, CONC__NO_DEADLINE), 0);
        cr_assert_eq(c.exitcode, 0);
        cr_assert(conc__child_poll(&c));
        char x;
        cr_assert_eq(read(pp[0], &x, 1), 0); /* every copy of the write end is closed */
        conc__child_release(&c);
        close(pp[0]);
    }
}

/* ------------------------------------------------------ misuse, states */

Test(process, start_twice_join_unstarted)
{
    conc_process_t *p;
    cr_assert_eq(conc_process_new(&p, ret_byte, NULL, 0, NULL), 0);
    cr_assert_eq(conc_process_join(p, 0), CONC_EPERM);
    cr_assert_eq(conc_process_sentinel(p), CONC_EPERM);
    cr_assert_eq(conc_process_terminate(p), CONC_EPERM);
    cr_assert_eq(conc_process_kill(p), CONC_EPERM);
    cr_assert_eq(conc_process_pid(p), 0);
    cr_assert_not(conc_process_is_alive(p));
    cr_assert_eq(conc_process_set_daemon(p, true), 0);
    cr_assert_eq(conc_process_set_daemon(p, false), 0);
    cr_assert_eq(conc_process_start(p), 0);
    cr_assert_eq(conc_process_start(p), CONC_EPERM);
    cr_assert_eq(conc_process_set_daemon(p, true), CONC_EPERM);
    cr_assert_eq(join_code(p), 0);
    cr_assert_eq(conc_process_start(p), CONC_EPERM);
    conc_process_free(p);
}

Test(process, close)
{
    conc_process_t *p;
    cr_assert_eq(conc_process_new(&p, sleeper, NULL, 0, NULL), 0);
    cr_assert_eq(conc_process_start(p), 0);
    cr_assert_eq(conc_process_close(p), CONC_EINVAL); /* still running */
    cr_assert_eq(conc_process_terminate(p), 0);
    cr_assert_eq(conc_process_join(p, 20), 0);
    cr_assert_eq(conc_process_close(p), 0);
    cr_assert_eq(conc_process_close(p), 0);
    int code;
    cr_assert_eq(conc_process_pid(p), CONC_EINVAL);
    cr_assert_eq(conc_process_sentinel(p), CONC_EINVAL);
    cr_assert_eq(conc_process_join(p, 0), CONC_EINVAL);
    cr_assert_eq(conc_process_exitcode(p, &code), CONC_EINVAL);
    cr_assert_eq(conc_process_terminate(p), CONC_EINVAL);
    cr_assert_eq(conc_process_start(p), CONC_EINVAL);
    cr_assert_not(conc_process_is_alive(p));
    cr_assert_str_eq(conc_process_name(p), "Process-1");
    conc_process_free(p);

    cr_assert_eq(conc_process_new(&p, ret_byte, NULL, 0, NULL), 0);
    cr_assert_eq(conc_process_close(p), 0); /* never started */
    cr_assert_eq(conc_process_start(p), CONC_EINVAL);
    conc_process_free(p);
}

Test(process, names)
{
    conc_process_t *a, *b;
    cr_assert_eq(conc_process_new(&a, ret_byte, NULL, 0, NULL), 0);
    cr_assert_eq(conc_process_new(&b, ret_byte, NULL, 0, NULL), 0);
    cr_assert_str_eq(conc_process_name(a), "Process-1");
    cr_assert_str_eq(conc_process_name(b), "Process-2");
    cr_assert_eq(conc_process_set_name(a, "renamed"), 0);
    cr_assert_str_eq(conc_process_name(a), "renamed");
    cr_assert_eq(conc_process_set_name(a, NULL), CONC_EINVAL);
    conc_process_free(a);
    conc_process_free(b);
}

Test(process, unregistered_function_needs_fork)
{
    conc_process_opts_t o = {.method = CONC_SPAWN};
    conc_process_t *p;
    cr_assert_eq(conc_process_new(&p, not_registered, NULL, 0, &o), 0);
    cr_assert_eq(conc_process_start(p), CONC_EINVAL);
    /* the failure names the function and the fix */
    const char *msg = NULL;
    cr_assert_eq(conc_failure(&msg), CONC_EINVAL);
    cr_assert(strstr(msg, "not_registered") && strstr(msg, "CONC_REGISTER(not_registered)") &&
                  strstr(msg, "spawn"), "message: %s", msg);
    cr_assert_eq(conc_process_pid(p), 0); /* still new: it can be fixed and started */
    conc_process_free(p);
    o.method = CONC_FORKSERVER;
    cr_assert_eq(conc_process_new(&p, not_registered, NULL, 0, &o), 0);
    conc_fail_clear();
    cr_assert_eq(conc_process_start(p), CONC_EINVAL);
    cr_assert_eq(conc_failure(&msg), CONC_EINVAL);
    cr_assert(strstr(msg, "CONC_REGISTER(not_registered)") && strstr(msg, "forkserver"), "message: %s", msg);
    conc_process_free(p);
    o.method = CONC_FORK;
    cr_assert_eq(conc_process_new(&p, not_registered, NULL, 0, &o), 0);
    cr_assert_eq(conc_process_start(p), 0);
    cr_assert_eq(join_code(p), 5);
    conc_process_free(p);
}

/* ----------------------------------------------- what a user tripped on */

static int arg_aligned(const void *arg, size_t len)
{
    TU_CK(((uintptr_t)arg % _Alignof(max_align_t)) == 0);
    TU_CK(len >= sizeof(int) && *(const int *)arg == 42); /* what our examples do */
    return 0;
}
CONC_REGISTER(arg_aligned);

Test(process, argument_aligned_for_any_type_each_method)
{
    int v[8] = {42};
    /* names of every length move the strings before the argument */
    for (int m = 0; m < NMETHODS; m++)
        for (int k = 1; k <= 17; k += 3) {
            char name[32];
            snprintf(name, sizeof name, "%.*s", k, "abcdefghijklmnopqrstuvwxyz");
            conc_process_t *p = start(arg_aligned, v, sizeof v, METHODS[m], false, name);
            cr_assert_eq(join_code(p), 0, "%s, name of %d", conc_start_method_name(METHODS[m]), k);
            conc_process_free(p);
        }
}

static int report_method(const void *arg, size_t len)
{
    (void)arg, (void)len;
    return (int)conc_process_method(conc_current_process());
}
CONC_REGISTER(report_method);

Test(process, child_knows_its_start_method)
{
    cr_assert_eq(conc_process_method(conc_current_process()), CONC_START_DEFAULT);
    for (int m = 0; m < NMETHODS; m++) {
        conc_process_t *p = start(report_method, NULL, 0, METHODS[m], false, NULL);
        cr_assert_eq(join_code(p), (int)METHODS[m], "%s", conc_start_method_name(METHODS[m]));
        conc_process_free(p);
    }
}

static int quick_exit_fn(const void *arg, size_t len)
{
    (void)arg, (void)len;
    return 3;
}
CONC_REGISTER(quick_exit_fn);

Test(process, forkserver_sentinel_agrees_with_is_alive_and_join)
{
    for (int i = 0; i < 40; i++) {
        conc_process_t *p = start(quick_exit_fn, NULL, 0, CONC_FORKSERVER, false, NULL);
        int s = conc_process_sentinel(p);
        cr_assert_geq(s, 0);
        struct pollfd pf = {.fd = s, .events = POLLIN};
        cr_assert_eq(poll(&pf, 1, 20000), 1);
        /* the sentinel says it ended: so do is_alive and join(0) */
        cr_assert_not(conc_process_is_alive(p), "round %d: alive after its sentinel fired", i);
        cr_assert_eq(conc_process_join(p, 0), 0, "round %d", i);
        cr_assert_eq(exitcode_of(p), 3);
        conc_process_free(p);
    }
}

static int read_comm(const void *arg, size_t len)
{
    char comm[32] = {0};
    int fd = open("/proc/self/comm", O_RDONLY);
    TU_CK(fd >= 0);
    ssize_t n = read(fd, comm, sizeof comm - 1);
    close(fd);
    TU_CK(n > 0);
    if (comm[n - 1] == '\n')
        comm[n - 1] = 0;
    if (strcmp(comm, (const char *)arg) != 0 || len != strlen(arg) + 1) {
        fprintf(stderr, "child comm '%s', parent's '%s'\n", comm, (const char *)arg);
        return 98;
    }
    return 0;
}
CONC_REGISTER(read_comm);

Test(process, children_show_the_program_name)
{
    char comm[32] = {0};
    int fd = open("/proc/self/comm", O_RDONLY);
    cr_assert_geq(fd, 0);
    ssize_t n = read(fd, comm, sizeof comm - 1);
    close(fd);
    cr_assert_gt(n, 0);
    if (comm[n - 1] == '\n')
        comm[n - 1] = 0;
    cr_assert_str_neq(comm, "exe");
    for (int m = 0; m < NMETHODS; m++) {
        conc_process_t *p = start(read_comm, comm, strlen(comm) + 1, METHODS[m], false, NULL);
        cr_assert_eq(join_code(p), 0, "%s: the child is not called '%s' in ps", conc_start_method_name(METHODS[m]), comm);
        conc_process_free(p);
    }
}

static int touch_flag(const void *arg, size_t len)
{
    (void)len;
    int fd = open((const char *)arg, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    return 0;
}
CONC_REGISTER(touch_flag);

/* main() skips the guard when CONC_TEST_NO_GUARD is set (see the end of
 * this file): the spawned copy then runs main instead of the target. */
Test(process, spawned_child_without_guard_exits_nonzero)
{
    char flag[] = "/tmp/conc-noguard-XXXXXX";
    int fd = mkstemp(flag);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(flag);
    setenv("CONC_TEST_NO_GUARD", "1", 1);
    conc_process_t *p = start(touch_flag, flag, sizeof flag, CONC_SPAWN, false, NULL);
    int code = join_code(p);
    unsetenv("CONC_TEST_NO_GUARD");
    conc_process_free(p);
    cr_assert_neq(access(flag, F_OK), 0, "the target ran without the guard?");
    cr_assert_neq(code, 0, "a child whose target never ran reported success");
}

/* A raw fork() from a threaded program while a thread hammers a queue:
 * the child's timed queue calls must honour their timeouts, whatever
 * internal spin lock (a wait list's guard, a store's lock) or half-done
 * slot the hammering thread left behind at the fork. */
typedef struct {
    conc_queue_t *q;
    int stop; /* atomic */
} hammer_t;

static void *hammer_queue(void *arg)
{
    hammer_t *h = arg;
    long i = 0;
    while (!__atomic_load_n(&h->stop, __ATOMIC_RELAXED)) {
        void *item;
        conc_queue_put(h->q, (void *)(intptr_t)(++i), true, 0.0005);
        conc_queue_get(h->q, &item, true, 0.0005);
        if (i % 3 == 0)
            conc_queue_get(h->q, &item, true, 0.0002); /* often empty: a waiter on the list */
    }
    return NULL;
}

/* In the child: every call returns within its timeout (plus slack). */
static int child_queue_calls(conc_queue_t *q)
{
    double t0 = tu_now();
    void *item;
    int rc = conc_queue_get(q, &item, true, 0.005);
    if (rc != 0 && rc != CONC_EEMPTY && rc != CONC_ETIMEDOUT)
        return 2;
    rc = conc_queue_put(q, (void *)1, true, 0.005);
    if (rc != 0 && rc != CONC_EFULL && rc != CONC_ETIMEDOUT)
        return 3;
    rc = conc_queue_get(q, &item, true, 0.005);
    if (rc != 0 && rc != CONC_EEMPTY && rc != CONC_ETIMEDOUT)
        return 4;
    return tu_now() - t0 < 2.0 ? 0 : 5;
}

Test(process, raw_fork_while_a_thread_uses_a_queue_timeouts_hold, .timeout = 180)
{
    SKIP_FORK_AFTER_THREADS();
    struct {
        conc_queue_kind_t kind;
        long maxsize;
    } kinds[] = {{CONC_FIFO, 4}, {CONC_FIFO, 0}, {CONC_LIFO, 4}, {CONC_PRIORITY, 0}};
    int hung = 0, bad = 0, iters = (int)tu_iters(300);
    for (int k = 0; k < 4; k++) {
        hammer_t h = {0};
        if (kinds[k].kind == CONC_PRIORITY)
            cr_assert_eq(conc_priority_queue_new(&h.q, kinds[k].maxsize, NULL), 0);
        else
            cr_assert_eq(conc_queue_new(&h.q, kinds[k].kind, kinds[k].maxsize), 0);
        pthread_t th[2];
        for (int t = 0; t < 2; t++)
            cr_assert_eq(pthread_create(&th[t], NULL, hammer_queue, &h), 0);
        for (int i = 0; i < iters / 4; i++) {
            pid_t pid = fork();
            cr_assert_geq(pid, 0);
            if (pid == 0)
                _exit(child_queue_calls(h.q));
            int pfd = conc__pidfd_open(pid);
            cr_assert_geq(pfd, 0);
            struct pollfd pf = {pfd, POLLIN, 0};
            if (poll(&pf, 1, 10000) != 1) {
                hung++;
                kill(pid, SIGKILL);
            }
            int st = 0;
            cr_assert_eq(waitpid(pid, &st, 0), pid);
            close(pfd);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                bad++;
        }
        __atomic_store_n(&h.stop, 1, __ATOMIC_RELAXED);
        for (int t = 0; t < 2; t++)
            pthread_join(th[t], NULL);
        void *item;
        while (conc_queue_get_nowait(h.q, &item) == 0) {
        }
        conc_queue_free(h.q, NULL);
        cr_assert_eq(hung, 0, "kind %d: %d children hung in a timed queue call", k, hung);
        cr_assert_eq(bad, 0, "kind %d: %d children failed", k, bad);
    }
}

Test(process, daemon_cannot_have_children)
{
    for (int i = 0; i < NMETHODS; i++) {
        conc_process_t *p = start(daemon_parent, NULL, 0, METHODS[i], true, NULL);
        cr_assert_eq(join_code(p), 0, "%s", conc_start_method_name(METHODS[i]));
        conc_process_free(p);
    }
}

/* ------------------------------------------------------ children, exit */

static bool contains(conc_process_t **v, size_t n, conc_process_t *p)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == p)
            return true;
    return false;
}

Test(process, active_children)
{
    conc_process_t *ps[3], *got[8];
    cr_assert_eq(conc_active_children(NULL, 0), 0);
    for (int i = 0; i < 3; i++)
        ps[i] = start(sleeper, NULL, 0, METHODS[i], false, NULL);
    size_t n = conc_active_children(got, 8);
    cr_assert_eq(n, 3);
    for (int i = 0; i < 3; i++)
        cr_assert(contains(got, n, ps[i]));
    for (size_t i = 0; i < n; i++)
        conc_process_free(got[i]);
    cr_assert_eq(conc_active_children(NULL, 0), 3);
    conc_process_terminate(ps[1]);
    cr_assert(TU_WAIT_UNTIL(conc_active_children(NULL, 0) == 2, 10));
    n = conc_active_children(got, 8);
    cr_assert_not(contains(got, n, ps[1]));
    for (size_t i = 0; i < n; i++)
        conc_process_free(got[i]);
    for (int i = 0; i < 3; i++) {
        conc_process_kill(ps[i]);
        cr_assert_eq(conc_process_join(ps[i], 20), 0);
        conc_process_free(ps[i]);
    }
    cr_assert_eq(conc_active_children(NULL, 0), 0);
}

Test(process, freed_running_child_is_still_reaped)
{
    double s = 0.1;
    conc_process_t *p = start(sleeper, &s, sizeof s, CONC_FORK, false, NULL);
    pid_t pid = conc_process_pid(p);
    conc_process_free(p);
    cr_assert_eq(conc_active_children(NULL, 0), 1);
    cr_assert(TU_WAIT_UNTIL(conc_active_children(NULL, 0) == 0, 10));
    cr_assert(reaped(pid, true));
}

Test(process, exit_sequence_joins_and_terminates_daemons)
{
    conc_start_method_t ms[] = {CONC_FORK, CONC_SPAWN};
    for (int i = 0; i < 2; i++) {
        int pp[2];
        cr_assert_eq(pipe(pp), 0); /* inheritable: the spawned child uses pp[1] too */
        conc_process_t *p = start(exit_seq_fn, &pp[1], sizeof pp[1], ms[i], false, NULL);
        close(pp[1]);
        cr_assert_eq(join_code(p), 0, "%s", conc_start_method_name(ms[i]));
        conc_process_free(p);
        /* The child has exited: the slow writer was joined before that,
         * the daemon sleeper terminated; EOF means no copy is left. */
        char buf[16];
        int got = 0, dpid = 0;
        bool saw_n = false;
        for (;;) {
            ssize_t r = read(pp[0], buf + got, sizeof buf - (size_t)got);
            if (r <= 0)
                break;
            got += (int)r;
        }
        close(pp[0]);
        for (int k = 0; k < got; k++) {
            if (buf[k] == 'N') {
                saw_n = true;
            } else if (buf[k] == 'D' && k + 1 + (int)sizeof dpid <= got) {
                memcpy(&dpid, buf + k + 1, sizeof dpid);
                k += (int)sizeof dpid;
            }
        }
        cr_assert(saw_n, "%s: the non-daemon grandchild was not joined", conc_start_method_name(ms[i]));
        cr_assert_gt(dpid, 0);
        cr_assert(reaped(dpid, false));
        cr_assert(kill(dpid, 0) == -1 && errno == ESRCH, "daemon grandchild %d still exists", dpid);
    }
}

/* --------------------------------------------------------- start method */

static void *block_thread(void *arg)
{
    int fd = *(int *)arg;
    char c;
    while (read(fd, &c, 1) < 0 && errno == EINTR) {
    }
    return NULL;
}

static long threads_now(void)
{
    FILE *f = fopen("/proc/self/stat", "r");
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    for (int field = 2; field < 20 && p; field++)
        p = strchr(p + 1, ' ');
    return p ? strtol(p + 1, NULL, 10) : -1;
}

Test(process, default_method_follows_threads)
{
    cr_assert_eq(conc_get_start_method(), CONC_START_DEFAULT);
    conc_process_t *p;
    if (threads_now() == 1) {
        p = start(ret_byte, NULL, 0, CONC_START_DEFAULT, false, NULL);
        cr_assert_eq(conc_process_method(p), CONC_FORK);
        cr_assert_eq(join_code(p), 0);
        conc_process_free(p);
    }
    int pp[2];
    cr_assert_eq(pipe(pp), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, block_thread, &pp[0]), 0);
    p = start(ret_byte, NULL, 0, CONC_START_DEFAULT, false, NULL);
    cr_assert_eq(conc_process_method(p), CONC_FORKSERVER);
    cr_assert_eq(join_code(p), 0);
    conc_process_free(p);

    cr_assert_eq(conc_set_start_method(CONC_SPAWN), 0);
    cr_assert_eq(conc_get_start_method(), CONC_SPAWN);
    p = start(ret_byte, NULL, 0, CONC_START_DEFAULT, false, NULL);
    cr_assert_eq(conc_process_method(p), CONC_SPAWN);
    cr_assert_eq(join_code(p), 0);
    conc_process_free(p);
    cr_assert_eq(conc_set_start_method(CONC_START_DEFAULT), 0);

    cr_assert_eq(write(pp[1], "x", 1), 1);
    pthread_join(th, NULL);
    close(pp[0]);
    close(pp[1]);
    cr_assert_str_eq(conc_start_method_name(CONC_FORKSERVER), "forkserver");
}

static void *fork_from_thread(void *arg)
{
    (void)arg;
    unsigned char v = 9;
    conc_process_opts_t o = {.method = CONC_FORK};
    conc_process_t *p;
    if (conc_process_new(&p, ret_byte, &v, 1, &o) || conc_process_start(p))
        return (void *)1;
    int code = -1;
    conc_process_join(p, 20);
    conc_process_exitcode(p, &code);
    conc_process_free(p);
    return (void *)(intptr_t)code;
}

Test(process, fork_from_a_thread)
{
    SKIP_FORK_AFTER_THREADS();
    if (TU_TSAN)
        cr_skip_test("TSan: fork from a threaded process");
    pthread_t th;
    void *res;
    cr_assert_eq(pthread_create(&th, NULL, fork_from_thread, NULL), 0);
    pthread_join(th, &res);
    cr_assert_eq((intptr_t)res, 9);
}

static int count_fs_dirs(void)
{
    const char *tmp = getenv("TMPDIR");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "find %s -maxdepth 1 -name 'conc-fs-*' -user %d 2>/dev/null | wc -l",
             tmp && *tmp ? tmp : "/tmp", (int)getuid());
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    int n = -1;
    cr_assert_eq(fscanf(f, "%d", &n), 1);
    pclose(f);
    return n;
}

Test(process, forkserver_leaves_no_socket_dir)
{
    /* The server's private directory is removed as soon as this process
     * is connected, before the first child even runs. */
    int before = count_fs_dirs();
    conc_process_t *p = start(sleeper, NULL, 0, CONC_FORKSERVER, false, NULL);
    cr_assert_leq(count_fs_dirs(), before, "a conc-fs-* directory was left behind");
    cr_assert_eq(conc_process_kill(p), 0);
    cr_assert_eq(join_code(p), -SIGKILL);
    conc_process_free(p);
}

static bool gone(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'); /* exited, maybe unreaped by init */
}

Test(process, forkserver_exits_when_its_parent_dies)
{
    int pp[2];
    cr_assert_eq(pipe2(pp, O_CLOEXEC), 0);
    conc_process_t *p = start(server_owner, &pp[1], sizeof pp[1], CONC_FORK, false, NULL);
    close(pp[1]);
    int spid = 0;
    cr_assert_eq(read_full(pp[0], &spid, sizeof spid), (ssize_t)sizeof spid);
    close(pp[0]);
    cr_assert_gt(spid, 0);
    cr_assert_neq(spid, conc_process_pid(p)); /* the server's, not the owner's */
    cr_assert_not(gone(spid));
    cr_assert_eq(conc_process_kill(p), 0);
    cr_assert_eq(join_code(p), -SIGKILL);
    conc_process_free(p);
    cr_assert(TU_WAIT_UNTIL(gone(spid), 10), "the fork server %d outlived its parent", spid);
}

Test(process, many_processes)
{
    int n = (int)tu_iters(30);
    for (int i = 0; i < NMETHODS; i++) {
        conc_process_t *ps[30];
        for (int k = 0; k < n; k++) {
            unsigned char v = (unsigned char)k;
            ps[k] = start(ret_byte, &v, 1, METHODS[i], false, NULL);
        }
        for (int k = 0; k < n; k++) {
            cr_assert_eq(join_code(ps[k]), k);
            conc_process_free(ps[k]);
        }
    }
    cr_assert_eq(conc_active_children(NULL, 0), 0);
}

/* ------------------------------------------- the guard, called directly */

/* conc_process_main is the guard of every spawned child; these call it by
 * hand in a forked child of the test, with the bootstrap variable a real
 * spawn would set (CONC_PROCESS_CHILD=<fd>:<mode>) and the request a real
 * parent would send on that fd. */

#define GUARD_ENV "CONC_PROCESS_CHILD"

TestSuite(process_guard, .init = setup, .timeout = TU_TIMEOUT);

/* What the guard's child sees: it returns 40 + a bit per wrong thing, so
 * the exit code says which check failed. */
static int guard_target(const void *arg, size_t len)
{
    int code = 40;
    if (len != 5 || memcmp(arg, "bytes", 5) != 0)
        code |= 1;
    if (getenv(GUARD_ENV))
        code |= 2; /* the bootstrap variable is gone before the function runs */
    const char *name = conc_process_name(conc_current_process());
    if (!name || strcmp(name, "GuardChild") != 0)
        code |= 4;
    if (conc_process_method(conc_current_process()) != CONC_SPAWN)
        code |= 8;
    conc_process_t *parent = conc_parent_process();
    if (!parent || conc_process_pid(parent) != getppid()) /* borrowed */
        code |= 16;
    return code;
}
CONC_REGISTER(guard_target);

static int guard_not_process(const void *arg, size_t len)
{
    (void)arg, (void)len;
    return 0;
}
CONC_REGISTER_AS(guard_not_process, "guard_not_process", 150); /* another signature tag */

/* Fork a child that sets GUARD_ENV to env (NULL: unset), with stderr into
 * a pipe, and calls conc_process_main; the child _exit(77)s if the guard
 * returned (after checking it returned 0). If fn_name is set, a request
 * for it goes on the socket whose child end the variable names (env is
 * then a format with one %d for the fd). Returns the exit status (or
 * 1000 + signal); the child's stderr is copied into err. */
static int guard_run(const char *env, const char *fn_name, char *err, size_t errcap)
{
    int sv[2] = {-1, -1}, ep[2];
    cr_assert_eq(pipe(ep), 0);
    if (fn_name)
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(ep[1], 2);
        close(ep[0]);
        char var[64];
        if (env) {
            snprintf(var, sizeof var, env, sv[1]);
            setenv(GUARD_ENV, var, 1);
        } else {
            unsetenv(GUARD_ENV);
        }
        if (sv[0] >= 0)
            close(sv[0]);
        char *argv[] = {(char *)"guard", NULL};
        int rc = conc_process_main(1, argv);
        _exit(rc == 0 ? 77 : 78);
    }
    close(ep[1]);
    if (fn_name) {
        close(sv[1]);
        conc__launch_t l = {.arg = "bytes", .len = 5, .name = "GuardChild", .ident = "9"};
        cr_assert_eq(conc__req_send(sv[0], CONC__REQ_PROCESS, &l, fn_name, NULL, 0), 0);
        close(sv[0]);
    }
    size_t n = 0;
    ssize_t k;
    while (n + 1 < errcap && (k = read(ep[0], err + n, errcap - 1 - n)) > 0)
        n += (size_t)k;
    err[n] = 0;
    close(ep[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
}

/* Outside a child started by conc: returns 0 at once, every time, with
 * any arguments; nothing else changes. */
Test(process_guard, returns_zero_outside_a_child)
{
    char err[256];
    unsetenv(GUARD_ENV);
    char *argv[] = {(char *)"x", NULL};
    cr_assert_eq(conc_process_main(0, NULL), 0);
    cr_assert_eq(conc_process_main(1, argv), 0);
    cr_assert_eq(conc_process_main(1, argv), 0, "twice");
    cr_assert_str_eq(argv[0], "x");
    cr_assert_str_eq(conc_process_name(conc_current_process()), "MainProcess");
    /* and in a fresh child, too: it returned and the program went on */
    cr_assert_eq(guard_run(NULL, NULL, err, sizeof err), 77);
    cr_assert_str_empty(err);
}

/* A malformed bootstrap value: a message on stderr and exit status 255,
 * never a return into main (which would start children forever). */
Test(process_guard, bad_bootstrap_value_exits_255)
{
    static const char *bad[] = {"", "x", "5", "5:", "5:q", "-1:p", "2000000:p", ":p", "5;p", "5:px", "x5:p"};
    char err[512];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(guard_run(bad[i], NULL, err, sizeof err), 255, "value '%s'", bad[i]);
        cr_assert(strstr(err, "bad " GUARD_ENV " value"), "value '%s': stderr '%s'", bad[i], err);
    }
}

/* A parent that went away before sending the request (the fd names a
 * socket whose other end is closed, or no open fd): exit 255, silently. */
Test(process_guard, no_request_exits_255)
{
    char err[512];
    cr_assert_eq(guard_run("900:p", NULL, err, sizeof err), 255); /* fd 900 is not open */
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[0]);
    char var[32];
    snprintf(var, sizeof var, "%d:p", sv[1]);
    cr_assert_eq(guard_run(var, NULL, err, sizeof err), 255);
    close(sv[1]);
}

/* In a spawned child: runs the requested registered function with the
 * argument bytes, as the named process, and exits with its return value;
 * it never returns into main. */
Test(process_guard, runs_the_requested_function_and_exits)
{
    char err[512];
    int code = guard_run("%d:p", "guard_target", err, sizeof err);
    cr_assert_eq(code, 40, "exit %d (40 + failed checks' bits), stderr '%s'", code, err);
}

/* A name that is not in the registry, or not a process function: 255 and
 * a message naming it. */
Test(process_guard, unknown_function_exits_255)
{
    char err[512];
    cr_assert_eq(guard_run("%d:p", "no_such_function_here", err, sizeof err), 255);
    cr_assert(strstr(err, "no process function 'no_such_function_here'"), "stderr '%s'", err);
    cr_assert_eq(guard_run("%d:p", "guard_not_process", err, sizeof err), 255);
    cr_assert(strstr(err, "no process function 'guard_not_process'"), "stderr '%s'", err);
}

int main(int argc, char *argv[])
{
    if (getenv("CONC_TEST_NO_GUARD") && getenv("CONC_PROCESS_CHILD"))
        return 0; /* a program that forgot the guard: returns from main at once */
    CONC_PROCESS_MAIN(argc, argv);
    return tu_criterion_main(argc, argv);
}
