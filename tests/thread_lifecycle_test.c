/* A thread's life from its first instruction to process exit: the
 * behaviours of CPython's Lib/test/test_threading.py about exit and
 * lifecycle (test_join_from_non_daemon_thread_to_main / _shutdown marking
 * the main thread, SystemExit in a thread, ident at start, atexit after the
 * joins, main_thread after fork from a foreign thread, dummy threads,
 * default names, excepthook failures). The exit cases run in a child
 * process (TU_MAIN_WITH_SCENARIOS). */
#include "test_util.h"

#include <conc/futures.h>
#include <signal.h>

TestSuite(thread_life);

/* ---- exit: a non-daemon thread joining the main thread (Python marks the
 * main thread finished in threading._shutdown) */

static void *join_main(void *arg)
{
    (void)arg;
    conc_thread_t *m = conc_main_thread();
    int rc = conc_thread_join(m, 20, NULL);
    char buf[64];
    int n = snprintf(buf, sizeof buf, "main-joined %d alive %d\n", rc, (int)conc_thread_is_alive(m));
    if (write(1, buf, (size_t)n) != n)
        return NULL;
    return NULL;
}

/* The same, then end the process (under TSan its own thread never ends,
 * so a process whose main thread left through pthread_exit would not). */
static void *join_main_then_exit(void *arg)
{
    join_main(arg);
    _exit(0);
}

/* ---- exit: atexit handlers run after the joins (Python runs atexit
 * callbacks after threading._shutdown) */

static atomic_int slow_done;
static conc_executor_t *early_pool;

static void *slow_setter(void *arg)
{
    (void)arg;
    tu_sleep(0.3);
    atomic_store(&slow_done, 1);
    return NULL;
}

static void *nop(void *arg) { return arg; }

static void program_cleanup(void)
{
    conc_executor_t *p = NULL;
    conc_future_t *f = NULL;
    int rc_new = conc_thread_pool_new(&p, NULL);
    int sub_new = rc_new ? rc_new : conc_submit(p, &f, nop, NULL);
    int sub_old = conc_submit(early_pool, &f, nop, NULL);
    char buf[128];
    int n = snprintf(buf, sizeof buf, "cleanup done=%d new=%s old=%s\n", atomic_load(&slow_done),
                     conc_errname(sub_new), conc_errname(sub_old));
    if (write(1, buf, (size_t)n) != n)
        return;
    if (p)
        conc_executor_free(p);
}

static void *exits_early(void *arg);

static int scenario(const char *name)
{
    if (strcmp(name, "join_main") == 0) {
        conc_thread_t *t;
        if (conc_thread_spawn(&t, join_main, NULL, NULL) != 0)
            return 2;
        conc_thread_free(t);
        return 0; /* the exit step marks main finished: the joiner returns */
    }
    if (strcmp(name, "atexit_order") == 0) {
        atexit(program_cleanup); /* before the threads, as programs do */
        conc_future_t *f;
        if (conc_thread_pool_new(&early_pool, NULL) != 0 || conc_submit(early_pool, &f, nop, NULL) != 0)
            return 3;
        conc_future_free(f);
        conc_thread_t *t;
        if (conc_thread_spawn(&t, slow_setter, NULL, NULL) != 0)
            return 2;
        conc_thread_free(t);
        return 0;
    }
    if (strcmp(name, "pthread_exit_at_exit") == 0) {
        alarm(20); /* a hang at exit would be the bug: die of SIGALRM instead */
        conc_thread_t *t;
        if (conc_thread_spawn(&t, exits_early, NULL, NULL) != 0)
            return 2;
        conc_thread_free(t);
        if (write(1, "main done\n", 10) != 10)
            return 3;
        return 0; /* the exit step must not wait forever for it */
    }
    if (strcmp(name, "main_pthread_exit") == 0) {
        alarm(30);
        conc_thread_t *t;
        if (conc_thread_spawn(&t, join_main_then_exit, NULL, NULL) != 0)
            return 2;
        conc_thread_free(t);
        pthread_exit(NULL); /* the C idiom: let the other threads finish */
    }
    return 99;
}

TU_MAIN_WITH_SCENARIOS(scenario)

Test(thread_life, pthread_exit_thread_does_not_hang_exit, .timeout = TU_TIMEOUT)
{
    char out[256];
    double secs;
    int st = tu_run_scenario("pthread_exit_at_exit", out, sizeof out, &secs);
    cr_assert(WIFEXITED(st), "child status %#x (SIGALRM: exit hung)", st);
    cr_assert_eq(WEXITSTATUS(st), 0);
    cr_assert_str_eq(out, "main done\n");
    cr_assert_lt(secs, 10.0);
}

Test(thread_life, non_daemon_thread_joins_main_at_exit, .timeout = TU_TIMEOUT)
{
    char out[256];
    double secs;
    int st = tu_run_scenario("join_main", out, sizeof out, &secs);
    cr_assert(WIFEXITED(st), "child status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0);
    cr_assert_str_eq(out, "main-joined 0 alive 0\n");
    cr_assert_lt(secs, 10.0, "the exit waited for the joiner's timeout");
}

Test(thread_life, atexit_handlers_run_after_the_joins, .timeout = TU_TIMEOUT)
{
    char out[256];
    int st = tu_run_scenario("atexit_order", out, sizeof out, NULL);
    cr_assert(WIFEXITED(st), "child status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0);
    char want[128];
    snprintf(want, sizeof want, "cleanup done=1 new=%s old=%s\n", conc_errname(CONC_ESHUTDOWN),
             conc_errname(CONC_ESHUTDOWN));
    cr_assert_str_eq(out, want, "the program's atexit handler ran before conc joined its threads or "
                                "a submit after the exit step was accepted");
}

/* ---- pthread_exit() in a conc thread (Python: SystemExit ends the thread
 * normally) */

static void *exits_early(void *arg)
{
    (void)arg;
    pthread_exit((void *)0x99);
    return NULL;
}

Test(thread_life, pthread_exit_counts_as_finished, .timeout = TU_TIMEOUT)
{
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, exits_early, NULL, NULL), 0);
    void *r = (void *)1;
    cr_assert_eq(conc_thread_join(t, 10, &r), 0, "join timed out: the thread never counted as finished");
    cr_assert_null(r, "a thread ended by pthread_exit has no result");
    cr_assert_not(conc_thread_is_alive(t));
    conc_thread_t *all[64];
    size_t n = conc_thread_enumerate(all, 64);
    bool found = false;
    for (size_t i = 0; i < n && i < 64; i++) {
        found |= all[i] == t;
        conc_thread_free(all[i]);
    }
    cr_assert_not(found, "a thread ended by pthread_exit is still in enumerate");
    conc_thread_free(t);
}

/* ---- ident and native id from the thread's first instruction */

static atomic_int ident_bad;

static void *check_own_ident(void *arg)
{
    (void)arg;
    conc_thread_t *me = conc_current_thread();
    if (conc_thread_ident(me) != conc_get_ident() || conc_thread_native_id(me) != tu_gettid())
        atomic_fetch_add(&ident_bad, 1);
    return NULL;
}

static atomic_int spin_stop;

static void *spinner(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed)) {
    }
    return NULL;
}

Test(thread_life, ident_valid_at_start, .timeout = TU_TIMEOUT)
{
    enum { BATCH = 32, ROUNDS = 16, SPINNERS = 4 };
    /* Load, so the creator is often preempted right after pthread_create. */
    pthread_t sp[SPINNERS];
    for (int i = 0; i < SPINNERS; i++)
        cr_assert_eq(pthread_create(&sp[i], NULL, spinner, NULL), 0);
    for (int r = 0; r < ROUNDS; r++) {
        conc_thread_t *ts[BATCH];
        for (int i = 0; i < BATCH; i++)
            cr_assert_eq(conc_thread_spawn(&ts[i], check_own_ident, NULL, NULL), 0);
        for (int i = 0; i < BATCH; i++) {
            cr_assert_eq(conc_thread_join(ts[i], 10, NULL), 0);
            conc_thread_free(ts[i]);
        }
    }
    atomic_store(&spin_stop, 1);
    for (int i = 0; i < SPINNERS; i++)
        pthread_join(sp[i], NULL);
    cr_assert_eq(atomic_load(&ident_bad), 0, "%d threads saw a wrong ident at their start",
                 atomic_load(&ident_bad));
}

/* ---- foreign (dummy) threads */

typedef struct {
    conc_event_t published, release;
    _Atomic(conc_thread_t *) rec;
} foreign_t;

static void *foreign_main(void *p)
{
    foreign_t *f = p;
    atomic_store(&f->rec, conc_current_thread());
    conc_event_set(&f->published);
    conc_event_wait(&f->release, 30);
    return NULL;
}

Test(thread_life, join_dummy_thread_fails_at_once, .timeout = TU_TIMEOUT)
{
    static foreign_t f;
    conc_event_init(&f.published);
    conc_event_init(&f.release);
    pthread_t pt;
    cr_assert_eq(pthread_create(&pt, NULL, foreign_main, &f), 0);
    cr_assert_eq(conc_event_wait(&f.published, 10), 0);
    conc_thread_t *d = atomic_load(&f.rec);
    cr_assert_not_null(d);
    double t0 = tu_now();
    cr_assert_eq(conc_thread_join(d, 5, NULL), CONC_EPERM);
    cr_assert_eq(conc_thread_join(d, CONC_FOREVER, NULL), CONC_EPERM);
    cr_assert_lt(tu_now() - t0, 1.0, "joining a dummy thread waited");
    conc_event_set(&f.release);
    pthread_join(pt, NULL);
}

/* ---- fork from a thread conc never saw: it is the child's main thread */

static int fork_child_checks(void)
{
    int bad = 0;
    conc_thread_t *m = conc_main_thread();
    if (!m)
        return 1;
    if (m != conc_current_thread())
        bad |= 2;
    if (strcmp(conc_thread_name(m), "MainThread") != 0)
        bad |= 4;
    if (conc_thread_ident(m) != conc_get_ident() || conc_thread_native_id(m) != tu_gettid())
        bad |= 8;
    if (!conc_thread_is_alive(m) || conc_active_count() != 1)
        bad |= 16;
    return bad;
}

static void *fork_from_foreign(void *arg)
{
    bool known = arg != NULL;
    if (known)
        conc_current_thread(); /* conc knows it (a dummy record) */
    pid_t pid = fork();
    if (pid == 0)
        _exit(fork_child_checks());
    int st = -1;
    waitpid(pid, &st, 0);
    return (void *)(intptr_t)st;
}

Test(thread_life, fork_from_foreign_thread, .timeout = TU_TIMEOUT)
{
    for (int known = 0; known < 2; known++) {
        fflush(NULL);
        pthread_t pt;
        void *r;
        cr_assert_eq(pthread_create(&pt, NULL, fork_from_foreign, known ? (void *)1 : NULL), 0);
        pthread_join(pt, &r);
        int st = (int)(intptr_t)r;
        cr_assert(WIFEXITED(st), "child status %#x", st);
        cr_assert_eq(WEXITSTATUS(st), 0, "child checks failed (known=%d): mask %#x", known, WEXITSTATUS(st));
    }
}

/* ---- names and the excepthook */

Test(thread_life, empty_name_gets_default, .timeout = TU_TIMEOUT)
{
    conc_thread_opts_t o = {.name = ""};
    conc_thread_t *t;
    cr_assert_eq(conc_thread_new(&t, nop, NULL, &o), 0);
    cr_assert_eq(strncmp(conc_thread_name(t), "Thread-", 7), 0, "name: '%s'", conc_thread_name(t));
    conc_thread_free(t);
}

/* Run fn with stderr captured into out. */
static void capture_stderr(void (*fn)(void), char *out, size_t cap)
{
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, cap - 1, tmp);
    out[n] = 0;
    fclose(tmp);
}

static void call_default_hook_without_thread(void)
{
    conc_excepthook_fn def = conc_set_excepthook(NULL, NULL);
    def(NULL, CONC_EINVAL, "no thread given", NULL);
}

Test(thread_life, default_excepthook_without_thread_names_caller, .timeout = TU_TIMEOUT)
{
    char out[1024];
    capture_stderr(call_default_hook_without_thread, out, sizeof out);
    char want[128];
    snprintf(want, sizeof want, "Exception in thread %s: ", conc_thread_name(conc_current_thread()));
    cr_assert_not_null(strstr(out, want), "stderr: %s", out);
    cr_assert_not_null(strstr(out, "no thread given"), "stderr: %s", out);
}

static void failing_hook(conc_thread_t *t, int code, const char *msg, void *arg)
{
    (void)t, (void)code, (void)msg, (void)arg;
    conc_fail(CONC_EINVAL, "the hook broke");
}

static void *fails(void *arg)
{
    (void)arg;
    return conc_fail(CONC_EEMPTY, "task failed");
}

static void run_thread_with_failing_hook(void)
{
    conc_set_excepthook(failing_hook, NULL);
    conc_thread_t *t;
    if (conc_thread_spawn(&t, fails, NULL, NULL) == 0) {
        conc_thread_join(t, 10, NULL);
        conc_thread_free(t);
    }
    conc_set_excepthook(NULL, NULL);
}

Test(thread_life, failing_excepthook_is_reported, .timeout = TU_TIMEOUT)
{
    char out[1024];
    capture_stderr(run_thread_with_failing_hook, out, sizeof out);
    cr_assert_not_null(strstr(out, "Exception in threading.excepthook"), "stderr: %s", out);
    cr_assert_not_null(strstr(out, "the hook broke"), "stderr: %s", out);
}

/* The main thread that ends with pthread_exit() (a common C idiom: the
 * process lives until its last thread ends) is over: a thread joining it
 * returns at once, as for a main thread that returned. */
Test(thread_life, main_thread_pthread_exit_counts_as_finished, .timeout = TU_TIMEOUT)
{
    char out[256];
    double secs;
    int st = tu_run_scenario("main_pthread_exit", out, sizeof out, &secs);
    cr_assert(WIFEXITED(st), "child status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0);
    cr_assert_str_eq(out, "main-joined 0 alive 0\n");
    cr_assert_lt(secs, 10.0, "the joiner waited for its timeout");
}
