/* Process-shared locks know their holder beyond its pid (issue 11, section
 * 4): a holder that dies is taken over within 100 ms of its death even
 * when an unrelated process got its pid in between (forced through
 * ns_last_pid, in a child pid namespace so the host's pid allocation is
 * left alone), and the taker is told with CONC_EOWNERDEAD (the robust
 * mutex's EOWNERDEAD) — for Lock, RLock, a Condition's lock and a Value's
 * lock. Children are plain fork()s. */
#include "test_util.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <pthread.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "conc/ipc.h"

TU_MAIN_WITH_PROCESS_GUARD()

typedef struct {
    conc_plock_t lock;
    conc_prlock_t rlock;
    conc_plock_t cond_lock;
    conc_pcond_t cond;
    _Atomic int ready, holder_pid, reused, rc;
    _Atomic int64_t death_ns, taken_ns;
} owner_t;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static pid_t fork_fn(int (*fn)(owner_t *, int), owner_t *s, int arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fn(s, arg));
    return pid;
}

static int reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1000;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

enum { LOCK, RLOCK };

static int hold_forever(owner_t *s, int kind)
{
    int rc = kind == LOCK ? conc_plock_acquire(&s->lock, true, CONC_FOREVER)
                          : conc_prlock_acquire(&s->rlock, true, CONC_FOREVER);
    if (rc != 0)
        return 1;
    atomic_store(&s->holder_pid, (int)getpid());
    atomic_store(&s->ready, 1);
    for (;;)
        pause();
}

static int take_over(owner_t *s, int kind)
{
    int rc = kind == LOCK ? conc_plock_acquire(&s->lock, true, 5.0)
                          : conc_prlock_acquire(&s->rlock, true, 5.0);
    atomic_store(&s->taken_ns, now_ns());
    atomic_store(&s->rc, rc);
    return 0;
}

static int squat(owner_t *s, int unused)
{
    (void)unused;
    atomic_store(&s->reused, getpid() == atomic_load(&s->holder_pid) ? 1 : -1);
    for (;;)
        pause();
    return 0;
}

/* The holder's pid goes to a thread of another process, not to a
 * process (a pid the kernel hands out is a thread id as often). */
static bool g_thread_squat;

static _Atomic int squat_tid;

static void *squat_thread(void *arg)
{
    (void)arg;
    atomic_store(&squat_tid, (int)syscall(SYS_gettid));
    for (;;)
        pause();
    return NULL;
}

/* Threads until one gets the holder's pid (a runtime, e.g. TSan's, may
 * take some ids first). */
static int squat_in_a_thread(owner_t *s, int unused)
{
    (void)unused;
    int want = atomic_load(&s->holder_pid), got = 0;
    for (int i = 0; i < 16 && got < want; i++) {
        atomic_store(&squat_tid, 0);
        pthread_t t;
        if (pthread_create(&t, NULL, squat_thread, NULL) != 0) {
            atomic_store(&s->reused, -2); /* TSan: no threads in a fork child of a threaded process */
            for (;;)
                pause();
        }
        while ((got = atomic_load(&squat_tid)) == 0)
            usleep(100);
    }
    char task[64]; /* any thread of this process (a runtime's too) with the holder's id */
    snprintf(task, sizeof task, "/proc/self/task/%d", want);
    atomic_store(&s->reused, want != getpid() && access(task, F_OK) == 0 ? 1 : -1);
    for (;;)
        pause();
    return 0;
}

static bool set_last_pid(int pid)
{
    int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char b[32];
    int n = snprintf(b, sizeof b, "%d", pid);
    bool ok = write(fd, b, (size_t)n) == n;
    close(fd);
    return ok;
}

/* Runs as pid 1 of a fresh pid namespace. The holder dies; its pid goes
 * to an unrelated process at once; a waiter (already asleep when
 * waiter_first, else started after the reuse) must take over within
 * 100 ms of the death, with CONC_EOWNERDEAD. Exit codes: 0 pass, 2 the
 * pid was not reused, 3 wrong return code, 4 too slow (ms in *s), 5 setup. */
static int reuse_scenario(owner_t *s, int kind, bool waiter_first)
{
    if (mount("proc", "/proc", "proc", 0, NULL) != 0)
        return 5; /* our /proc must show this namespace's pids */
    if (g_thread_squat) { /* leave a free pid below the holder's for the squatter process */
        pid_t d = fork();
        if (d == 0)
            _exit(0);
        reap(d);
    }
    pid_t holder = fork_fn(hold_forever, s, kind);
    for (int i = 0; i < 5000 && !atomic_load(&s->ready); i++)
        usleep(1000);
    if (!atomic_load(&s->ready))
        return 5;
    pid_t waiter = -1;
    if (waiter_first) {
        waiter = fork_fn(take_over, s, kind);
        usleep(120 * 1000); /* asleep in the kernel, past a liveness check or two */
    }
    atomic_store(&s->death_ns, now_ns());
    kill(holder, SIGKILL);
    reap(holder);
    if (!set_last_pid(holder - (g_thread_squat ? 2 : 1)))
        return 5;
    pid_t squatter = fork_fn(g_thread_squat ? squat_in_a_thread : squat, s, 0);
    for (int i = 0; i < 50000 && !atomic_load(&s->reused); i++) /* a thread may take a while (TSan) */
        usleep(100);
    if (!waiter_first)
        waiter = fork_fn(take_over, s, kind);
    reap(waiter);
    kill(squatter, SIGKILL);
    reap(squatter);
    if (atomic_load(&s->reused) == -2)
        return 6;
    if (atomic_load(&s->reused) != 1)
        return 2;
    if (atomic_load(&s->rc) != CONC_EOWNERDEAD)
        return 3;
    int64_t ms = (atomic_load(&s->taken_ns) - atomic_load(&s->death_ns)) / 1000000;
    atomic_store(&s->taken_ns, ms);
    return ms <= 100 ? 0 : 4;
}

static bool probe_ns(void)
{
    /* Can this process make a pid namespace (root, no seccomp veto)? */
    fflush(NULL);
    pid_t p = fork();
    if (p == 0)
        _exit(unshare(CLONE_NEWPID | CLONE_NEWNS) == 0 ? 0 : 1);
    return reap(p) == 0;
}

/* One attempt in a child that owns a new pid and mount namespace. */
static int attempt(owner_t *s, int kind, bool waiter_first)
{
    memset(s, 0, sizeof *s);
    fflush(NULL);
    pid_t x = fork();
    if (x == 0) {
        if (unshare(CLONE_NEWPID | CLONE_NEWNS) != 0 ||
            mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
            _exit(5);
        pid_t init = fork(); /* pid 1 of the new namespace */
        if (init == 0)
            _exit(reuse_scenario(s, kind, waiter_first));
        _exit(reap(init));
    }
    return reap(x);
}

static void run_reuse(int kind, bool waiter_first)
{
    if (!probe_ns())
        cr_skip_test("cannot create a pid namespace here (needs root): pid reuse not tested");
    owner_t *s;
    cr_assert_eq(conc_shared_alloc(sizeof *s, (void **)&s), 0);
    /* The bound is on our code (one liveness period); a loaded machine
     * can delay any process by more: allow two more attempts. */
    int rc = -1;
    long ms[3] = {-1, -1, -1};
    for (int i = 0; i < 3 && rc != 0; i++) {
        rc = attempt(s, kind, waiter_first);
        ms[i] = (long)atomic_load(&s->taken_ns);
        if (rc == 6) {
            conc_shared_free(s);
            cr_skip_test("cannot start a thread in a fork child here: pid reuse by a thread not tested");
        }
        if (rc == 5 && i == 0) {
            conc_shared_free(s);
            cr_skip_test("cannot mount /proc or write ns_last_pid in a new pid namespace: "
                         "pid reuse not tested");
        }
        cr_assert(rc == 0 || rc == 4, "attempt %d: exit %d (2: pid not reused, 3: not "
                                      "CONC_EOWNERDEAD, 5: setup)", i, rc);
    }
    cr_assert_eq(rc, 0, "takeover took %ld, %ld, %ld ms after the death (> 100 ms)", ms[0], ms[1], ms[2]);
    conc_shared_free(s);
}

Test(ipc_owner, lock_pid_reused_waiter_started_after, .timeout = 60)
{
    run_reuse(LOCK, false);
}

Test(ipc_owner, lock_pid_reused_waiter_asleep_at_death, .timeout = 60)
{
    run_reuse(LOCK, true);
}

Test(ipc_owner, rlock_pid_reused_waiter_started_after, .timeout = 60)
{
    run_reuse(RLOCK, false);
}

Test(ipc_owner, rlock_pid_reused_waiter_asleep_at_death, .timeout = 60)
{
    run_reuse(RLOCK, true);
}

/* A Lock's holder is a process: its pid now naming a thread of another
 * process means the holder is gone (pidfd_open(pid, 0) fails with EINVAL
 * on Linux 6.9-6.1x, ENOENT later). */
Test(ipc_owner, lock_pid_reused_by_a_thread, .timeout = 60)
{
    if (TU_TSAN) /* a fork child of this threaded process cannot start threads under TSan */
        cr_skip_test("threads in fork children: not under TSan");
    g_thread_squat = true;
    run_reuse(LOCK, false);
}

Test(ipc_owner, rlock_tid_reused_by_a_thread, .timeout = 60)
{
    if (TU_TSAN)
        cr_skip_test("threads in fork children: not under TSan");
    g_thread_squat = true;
    run_reuse(RLOCK, true);
}

/* ---- the taker is told, for every lock kind ---- */

static int hold_cond_lock(owner_t *s, int unused)
{
    (void)unused;
    if (conc_pcond_acquire(&s->cond, true, CONC_FOREVER) != 0)
        return 1;
    atomic_store(&s->ready, 1);
    for (;;)
        pause();
}

static int kill_when_ready(owner_t *s, int victim)
{
    for (int i = 0; i < 10000 && !atomic_load(&s->ready); i++)
        usleep(1000);
    usleep(500 * 1000); /* the waiter is back in the lock by now */
    return kill(victim, SIGKILL) == 0 ? 0 : 1;
}

Test(ipc_owner, condition_wait_reports_ownerdead, .timeout = 60)
{
    owner_t *s;
    cr_assert_eq(conc_shared_alloc(sizeof *s, (void **)&s), 0);
    cr_assert_eq(conc_pcond_init(&s->cond, &s->cond_lock), 0);
    cr_assert_eq(conc_pcond_acquire(&s->cond, true, CONC_FOREVER), 0);
    /* the holder takes the lock while we wait, then dies with it (killed
     * by a third process while our wait is taking the lock back) */
    pid_t h = fork_fn(hold_cond_lock, s, 0);
    pid_t k = fork_fn(kill_when_ready, s, (int)h);
    int rc = conc_pcond_wait(&s->cond, 0.3);
    cr_assert_eq(reap(k), 0);
    reap(h);
    cr_assert_eq(rc, CONC_EOWNERDEAD, "the wait took its lock back from a dead holder: %d", rc);
    cr_assert_eq(conc_plock_recoveries(&s->cond_lock), 1);
    cr_assert_eq(conc_pcond_release(&s->cond), 0, "and holds it");
    cr_assert_eq(conc_pcond_acquire(&s->cond, true, 1.0), 0, "a clean lock again");
    cr_assert_eq(conc_pcond_release(&s->cond), 0);
    conc_shared_free(s);
}

Test(ipc_owner, condition_acquire_reports_ownerdead, .timeout = 60)
{
    owner_t *s;
    cr_assert_eq(conc_shared_alloc(sizeof *s, (void **)&s), 0);
    cr_assert_eq(conc_pcond_init_rlock(&s->cond, NULL), 0); /* its own RLock */
    pid_t h = fork_fn(hold_cond_lock, s, 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&s->ready), 10));
    kill(h, SIGKILL);
    reap(h);
    cr_assert_eq(conc_pcond_acquire(&s->cond, true, 2.0), CONC_EOWNERDEAD);
    cr_assert_eq(conc_pcond_notify_all(&s->cond), 0, "we own it");
    cr_assert_eq(conc_pcond_release(&s->cond), 0);
    conc_shared_free(s);
}

static conc_value_t *g_value;

static int hold_value(owner_t *s, int unused)
{
    (void)unused;
    if (conc_value_acquire(g_value, true, CONC_FOREVER) != 0)
        return 1;
    ((int *)conc_value_ptr(g_value))[0] = 1; /* half-way through an update */
    atomic_store(&s->ready, 1);
    for (;;)
        pause();
}

Test(ipc_owner, value_acquire_reports_ownerdead, .timeout = 60)
{
    owner_t *s;
    cr_assert_eq(conc_shared_alloc(sizeof *s, (void **)&s), 0);
    int zero[2] = {0, 0};
    cr_assert_eq(conc_array_new(sizeof(int), 2, zero, true, &g_value), 0);
    pid_t h = fork_fn(hold_value, s, 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&s->ready), 10));
    kill(h, SIGKILL);
    double t0 = tu_now();
    cr_assert_eq(conc_value_acquire(g_value, true, 5.0), CONC_EOWNERDEAD);
    cr_assert_lt(tu_now() - t0, 1.0);
    cr_assert_eq(conc_prlock_level(conc_value_get_lock(g_value)), 1);
    ((int *)conc_value_ptr(g_value))[1] = 1; /* the repair */
    cr_assert_eq(conc_value_release(g_value), 0);
    cr_assert_eq(conc_value_acquire(g_value, true, 1.0), 0);
    cr_assert_eq(conc_value_release(g_value), 0);
    reap(h);
    conc_value_free(g_value);
    conc_shared_free(s);
}

/* ---- a live holder is never judged dead ---- */

#include <sys/resource.h>

/* In a child whose first look at holder identities happens while it is
 * out of file descriptors (pidfd_open fails with EMFILE): it must not
 * decide for good that this kernel has no pidfs, and even a process that
 * did use start times (old kernel, pidfd_open filtered) must not compare
 * them with a peer's pidfs inode tag: the live holder below would be
 * judged dead (two holders). Exit: 0 timed out as it should, 3 took a
 * live holder's lock, 5 setup. */
static int acquire_after_emfile(owner_t *s, int unused)
{
    (void)unused;
    struct rlimit old, low;
    if (getrlimit(RLIMIT_NOFILE, &old) != 0)
        return 5;
    int top = -1; /* fill every descriptor up to a small limit */
    low = old;
    low.rlim_cur = 64;
    if (setrlimit(RLIMIT_NOFILE, &low) != 0)
        return 5;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
        top = fd > top ? fd : top;
    }
    conc_plock_t scratch = CONC_PLOCK_INIT; /* its tag is made now, with no fd left */
    int rc = conc_plock_acquire(&scratch, true, 1.0);
    conc_plock_release(&scratch);
    setrlimit(RLIMIT_NOFILE, &old);
    for (int fd = 3; fd <= top; fd++)
        close(fd);
    if (rc != 0)
        return 5;
    while (!atomic_load(&s->ready))
        usleep(1000);
    rc = conc_plock_acquire(&s->lock, true, 0.5); /* several liveness checks */
    atomic_store(&s->rc, rc);
    return rc == CONC_ETIMEDOUT ? 0 : rc == CONC_EOWNERDEAD || rc == 0 ? 3 : 5;
}

Test(ipc_owner, live_holder_not_judged_dead_after_emfile, .timeout = 60)
{
    owner_t *s;
    cr_assert_eq(conc_shared_alloc(sizeof *s, (void **)&s), 0);
    /* fork before this process looks at any holder identity */
    pid_t c = fork_fn(acquire_after_emfile, s, 0);
    cr_assert_eq(conc_plock_acquire(&s->lock, true, 1.0), 0);
    atomic_store(&s->ready, 1);
    int ex = reap(c);
    cr_assert_eq(ex, 0, "child exit %d, rc %d (3: took the lock of a live holder)", ex, atomic_load(&s->rc));
    cr_assert_eq(conc_plock_release(&s->lock), 0, "still ours");
    conc_shared_free(s);
}

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* pidfd_open fails with EPERM from now on (as under a sandbox that
 * filters it): this process falls back to start-time tags for good. */
static bool filter_pidfd_open(void)
{
#ifdef SYS_pidfd_open
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
#else
    return false;
#endif
}

static int acquire_without_pidfd(owner_t *s, int kind)
{
    if (!filter_pidfd_open())
        return 5;
    while (!atomic_load(&s->ready))
        usleep(1000);
    int rc = kind == LOCK ? conc_plock_acquire(&s->lock, true, 0.5) : conc_prlock_acquire(&s->rlock, true, 0.5);
    atomic_store(&s->rc, rc);
    return rc == CONC_ETIMEDOUT ? 0 : rc == CONC_EOWNERDEAD || rc == 0 ? 3 : 6;
}

static void run_without_pidfd(int kind)
{
    owner_t *s;
    cr_assert_eq(conc_shared_alloc(sizeof *s, (void **)&s), 0);
    pid_t c = fork_fn(acquire_without_pidfd, s, kind);
    cr_assert_eq(kind == LOCK ? conc_plock_acquire(&s->lock, true, 1.0) : conc_prlock_acquire(&s->rlock, true, 1.0), 0);
    atomic_store(&s->ready, 1);
    int ex = reap(c);
    if (ex == 5)
        cr_skip_test("cannot install a seccomp filter here");
    cr_assert_eq(ex, 0, "child exit %d, rc %d (3: took the lock of a live holder)", ex, atomic_load(&s->rc));
    cr_assert_eq(kind == LOCK ? conc_plock_release(&s->lock) : conc_prlock_release(&s->rlock), 0, "still ours");
    conc_shared_free(s);
}

/* A waiter that cannot use pidfds (start-time tags) and a holder that
 * can (pidfs inode tag): the tags are of different kinds, never equal. */
Test(ipc_owner, live_holder_not_judged_dead_by_a_waiter_without_pidfd, .timeout = 60)
{
    run_without_pidfd(LOCK);
}

Test(ipc_owner, live_rlock_holder_not_judged_dead_by_a_waiter_without_pidfd, .timeout = 60)
{
    run_without_pidfd(RLOCK);
}
