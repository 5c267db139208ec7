/* SharedMemory and Value/Array across processes (CPython's
 * _TestSharedMemory, _TestValue, _TestArray), plus the sweep of segments
 * a SIGKILLed owner left behind. */
#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "conc/ipc.h"

static bool shm_exists(const char *name)
{
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/%s", name[0] == '/' ? name + 1 : name);
    return access(path, F_OK) == 0;
}

static void test_name(char *out, size_t cap, const char *tag)
{
    snprintf(out, cap, "conc_test_%d_%s", (int)getpid(), tag);
    conc_shm_unlink_name(out); /* leftovers of an earlier run */
}

/* ------------------------------------------------------------ SharedMemory */

Test(ipc_shm, bad_arguments, .timeout = TU_TIMEOUT)
{
    conc_shm_t *s;
    cr_assert_eq(conc_shm_create(NULL, 0, 0, &s), CONC_EINVAL);
    cr_assert_eq(conc_shm_create(NULL, 10, 0, NULL), CONC_EINVAL);
    cr_assert_eq(conc_shm_create("a/b", 10, 0, &s), CONC_EINVAL);
    cr_assert_eq(conc_shm_create("", 10, 0, &s), CONC_EINVAL);
    cr_assert_eq(conc_shm_create("/", 10, 0, &s), CONC_EINVAL);
    cr_assert_eq(conc_shm_create(NULL, 10, 0x100, &s), CONC_EINVAL);
    cr_assert_eq(conc_shm_attach(NULL, &s), CONC_EINVAL);
    cr_assert_eq(conc_shm_attach("x", NULL), CONC_EINVAL);
    cr_assert_eq(conc_shm_unlink(NULL), CONC_EINVAL);
    cr_assert_eq(conc_shm_unlink_name(NULL), CONC_EINVAL);
    cr_assert_eq(conc_shm_adopt(NULL), CONC_EINVAL);
    cr_assert_eq(conc_shm_close(NULL), 0);
    cr_assert_null(conc_shm_buf(NULL));
    cr_assert_eq(conc_shm_size(NULL), 0);
    char name[64];
    test_name(name, sizeof name, "missing");
    errno = 0;
    cr_assert_eq(conc_shm_attach(name, &s), CONC_ESYS);
    cr_assert_eq(errno, ENOENT); /* FileNotFoundError */
}

static int child_writes(void *arg)
{
    conc_shm_t *s;
    if (conc_shm_attach(arg, &s) != 0)
        return 1;
    if (conc_shm_size(s) != 100 || strcmp(conc_shm_buf(s), "from parent") != 0)
        return 2;
    strcpy((char *)conc_shm_buf(s) + 50, "from child");
    conc_shm_close(s);
    return 0;
}

Test(ipc_shm, create_attach_unlink_by_name, .timeout = TU_TIMEOUT)
{
    char name[64];
    test_name(name, sizeof name, "basic");
    conc_shm_t *s;
    cr_assert_eq(conc_shm_create(name, 100, 0, &s), 0);
    cr_assert_str_eq(conc_shm_name(s), name);
    cr_assert_eq(conc_shm_size(s), 100);
    unsigned char *buf = conc_shm_buf(s);
    cr_assert_eq((uintptr_t)buf % 4096, 0, "page aligned");
    for (int i = 0; i < 100; i++)
        cr_assert_eq(buf[i], 0, "zero-filled");
    strcpy((char *)buf, "from parent");
    cr_assert(shm_exists(name));

    /* the same name again: FileExistsError */
    conc_shm_t *dup;
    errno = 0;
    cr_assert_eq(conc_shm_create(name, 100, 0, &dup), CONC_ESYS);
    cr_assert_eq(errno, EEXIST);

    pid_t pid = tu_fork_child(child_writes, name);
    cr_assert_eq(tu_wait_child(pid, 20), 0);
    cr_assert_str_eq((char *)buf + 50, "from child");

    /* a second attach in this process sees the same bytes; a leading '/' is fine */
    char slash[80];
    snprintf(slash, sizeof slash, "/%s", name);
    conc_shm_t *again;
    cr_assert_eq(conc_shm_attach(slash, &again), 0);
    cr_assert_str_eq((char *)conc_shm_buf(again) + 50, "from child");
    cr_assert_str_eq(conc_shm_name(again), name);

    cr_assert_eq(conc_shm_unlink(s), 0);
    cr_assert_not(shm_exists(name));
    errno = 0;
    cr_assert_eq(conc_shm_unlink(s), CONC_ESYS);
    cr_assert_eq(errno, ENOENT);
    /* mappings stay valid after the unlink */
    strcpy((char *)conc_shm_buf(again), "still mapped");
    cr_assert_str_eq((char *)buf, "still mapped");
    cr_assert_eq(conc_shm_attach(name, &dup), CONC_ESYS);
    conc_shm_close(again);
    conc_shm_close(s);
}

Test(ipc_shm, generated_names, .timeout = TU_TIMEOUT)
{
    conc_shm_t *a, *b;
    cr_assert_eq(conc_shm_create(NULL, 1, 0, &a), 0);
    cr_assert_eq(conc_shm_create(NULL, 1, 0, &b), 0);
    cr_assert_eq(strncmp(conc_shm_name(a), "psm_", 4), 0, "%s", conc_shm_name(a));
    cr_assert_str_neq(conc_shm_name(a), conc_shm_name(b));
    cr_assert(shm_exists(conc_shm_name(a)));
    cr_assert_eq(conc_shm_unlink(a), 0);
    cr_assert_eq(conc_shm_unlink(b), 0);
    conc_shm_close(a);
    conc_shm_close(b);
}

/* A child that creates a segment, reports, then dies by SIGKILL. */
struct killed_owner {
    char name[64];
    int flags;
    int adopt_by_parent;
};

static int create_then_die(void *arg)
{
    struct killed_owner *k = arg;
    conc_shm_t *s;
    if (conc_shm_create(k->name, 4096, k->flags, &s) != 0)
        return 1;
    strcpy(conc_shm_buf(s), "orphan");
    if (!shm_exists(k->name))
        return 3;
    kill(getpid(), SIGKILL);
    return 2;
}

static void leave_orphan(const char *name, int flags, bool reap)
{
    struct killed_owner k = {.flags = flags};
    snprintf(k.name, sizeof k.name, "%s", name);
    pid_t pid = tu_fork_child(create_then_die, &k);
    if (reap) {
        cr_assert_eq(tu_wait_child(pid, 20), -SIGKILL);
    } else { /* leave it a zombie: the sweep must see it as dead too */
        siginfo_t si;
        cr_assert_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
        cr_assert_eq(si.si_code, CLD_KILLED);
    }
    /* (no check that it still exists: any conc_shm_create on this machine
     * may sweep it from now on, which is the point) */
}

Test(ipc_shm, sweep_removes_segments_of_a_killed_owner, .timeout = TU_TIMEOUT)
{
    char dead[64], zombie[64], untracked[64], mine[64];
    test_name(dead, sizeof dead, "dead");
    test_name(zombie, sizeof zombie, "zombie");
    test_name(untracked, sizeof untracked, "untracked");
    test_name(mine, sizeof mine, "mine");
    /* (every create sweeps, so the dead owner's segment comes last) */
    leave_orphan(untracked, CONC_SHM_UNTRACKED, true);
    conc_shm_t *live;
    cr_assert_eq(conc_shm_create(mine, 10, 0, &live), 0);
    leave_orphan(dead, 0, true);

    /* attaching to an orphan works until a sweep (unless a concurrent
     * create elsewhere on this machine swept it already) */
    conc_shm_t *o = NULL;
    errno = 0;
    int rc = conc_shm_attach(dead, &o);
    cr_assert(rc == 0 || errno == ENOENT, "attach: %d errno %d", rc, errno);
    if (rc == 0) {
        cr_assert_str_eq(conc_shm_buf(o), "orphan");
        cr_assert_eq(conc_shm_size(o), 4096);
    }

    cr_assert_geq(conc_shm_sweep(), 0);
    cr_assert_not(shm_exists(dead), "a dead owner's segment is swept");
    cr_assert(shm_exists(untracked), "untracked segments are left alone");
    cr_assert(shm_exists(mine), "a live owner's segment is left alone");
    if (o)
        cr_assert_str_eq(conc_shm_buf(o), "orphan", "existing mappings survive the sweep");
    conc_shm_close(o);

    /* a zombie owner (killed, not reaped yet) counts as dead; the sweep
     * also runs by itself at the next create */
    leave_orphan(zombie, 0, false);
    conc_shm_t *other;
    cr_assert_eq(conc_shm_create(NULL, 10, 0, &other), 0);
    cr_assert_not(shm_exists(zombie), "create sweeps a zombie owner's segment");
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }

    cr_assert_eq(conc_shm_unlink_name(untracked), 0);
    conc_shm_unlink(live);
    conc_shm_unlink(other);
    conc_shm_close(live);
    conc_shm_close(other);
}

static int create_and_exit(void *arg)
{
    conc_shm_t *s;
    if (conc_shm_create(arg, 64, 0, &s) != 0)
        return 1;
    strcpy(conc_shm_buf(s), "handed over");
    conc_shm_close(s);
    return 0;
}

Test(ipc_shm, adopt_keeps_a_segment_past_its_creator, .timeout = TU_TIMEOUT)
{
    char name[64];
    test_name(name, sizeof name, "adopt");
    pid_t pid = tu_fork_child(create_and_exit, name);
    conc_shm_t *s = NULL;
    /* attach and adopt while the child may still run or be a zombie */
    for (int i = 0; i < 2000 && conc_shm_attach(name, &s) != 0; i++)
        tu_sleep(0.001);
    cr_assert_not_null(s);
    cr_assert_eq(conc_shm_adopt(s), 0);
    cr_assert_eq(tu_wait_child(pid, 20), 0);
    conc_shm_sweep();
    cr_assert(shm_exists(name), "adopted by a live process: kept");
    cr_assert_str_eq(conc_shm_buf(s), "handed over");
    cr_assert_eq(conc_shm_unlink(s), 0);
    conc_shm_close(s);
}

Test(ipc_shm, foreign_segments_are_attached_whole_and_never_swept, .timeout = TU_TIMEOUT)
{
    char name[64], full[80];
    test_name(name, sizeof name, "foreign");
    snprintf(full, sizeof full, "/%s", name);
    int fd = shm_open(full, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 8192), 0);
    close(fd);
    conc_shm_t *s;
    cr_assert_eq(conc_shm_attach(name, &s), 0);
    cr_assert_eq(conc_shm_size(s), 8192);
    cr_assert_eq(conc_shm_adopt(s), CONC_EINVAL, "not a conc segment");
    conc_shm_sweep();
    cr_assert(shm_exists(name));
    conc_shm_unlink(s);
    conc_shm_close(s);
}

/* ------------------------------------------------------------ Value/Array */

Test(ipc_value, bad_arguments, .timeout = TU_TIMEOUT)
{
    conc_array_t *a;
    cr_assert_eq(conc_array_new(0, 1, NULL, true, &a), CONC_EINVAL);
    cr_assert_eq(conc_array_new(4, 0, NULL, true, &a), CONC_EINVAL);
    cr_assert_eq(conc_array_new(SIZE_MAX / 2, 4, NULL, true, &a), CONC_EINVAL);
    cr_assert_eq(conc_array_new(4, 1, NULL, true, NULL), CONC_EINVAL);
    cr_assert_eq(conc_value_new(0, NULL, true, &a), CONC_EINVAL);
    cr_assert_eq(conc_array_attach(NULL, &a), CONC_EINVAL);
    cr_assert_null(conc_array_ptr(NULL));
    cr_assert_null(conc_array_get_lock(NULL));
    cr_assert_eq(conc_array_acquire(NULL, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_array_free(NULL), 0);
    /* a plain segment is not an Array */
    conc_shm_t *s;
    cr_assert_eq(conc_shm_create(NULL, 256, 0, &s), 0);
    cr_assert_eq(conc_array_attach(conc_shm_name(s), &a), CONC_EINVAL);
    conc_shm_unlink(s);
    conc_shm_close(s);
}

Test(ipc_value, value_and_lock, .timeout = TU_TIMEOUT)
{
    int64_t init = 42;
    conc_value_t *v;
    cr_assert_eq(conc_value_new(sizeof init, &init, true, &v), 0);
    cr_assert_eq(*(int64_t *)conc_value_ptr(v), 42);
    cr_assert_eq(conc_array_len(v), 1);
    cr_assert_eq(conc_array_elem_size(v), 8);
    cr_assert_eq((uintptr_t)conc_value_ptr(v) % 64, 0);
    conc_prlock_t *l = conc_value_get_lock(v);
    cr_assert_not_null(l);
    cr_assert_eq(conc_value_acquire(v, true, CONC_FOREVER), 0);
    cr_assert(conc_prlock_is_owned(l));
    cr_assert_eq(conc_value_acquire(v, true, CONC_FOREVER), 0, "an RLock, as in Python");
    cr_assert_eq(conc_prlock_level(l), 2);
    cr_assert_eq(conc_value_release(v), 0);
    cr_assert_eq(conc_value_release(v), 0);
    cr_assert_eq(conc_value_release(v), CONC_EPERM);
    conc_value_free(v);

    conc_value_t *raw;
    cr_assert_eq(conc_value_new(sizeof(double), NULL, false, &raw), 0);
    cr_assert_eq(*(double *)conc_value_ptr(raw), 0.0);
    cr_assert_null(conc_value_get_lock(raw)); /* lock=False */
    cr_assert_eq(conc_value_acquire(raw, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_value_release(raw), CONC_EINVAL);
    conc_value_free(raw);
}

struct incr_arg {
    conc_value_t *v;
    long n;
    bool locked;
};

static int incr_child(void *p)
{
    struct incr_arg *a = p;
    volatile int64_t *x = conc_value_ptr(a->v);
    for (long i = 0; i < a->n; i++) {
        if (a->locked && conc_value_acquire(a->v, true, CONC_FOREVER) != 0)
            return 1;
        *x = *x + 1;
        if (a->locked && conc_value_release(a->v) != 0)
            return 2;
    }
    return 0;
}

Test(ipc_value, contended_increments_from_two_processes_lose_nothing, .timeout = TU_TIMEOUT)
{
    conc_value_t *v;
    cr_assert_eq(conc_value_new(sizeof(int64_t), NULL, true, &v), 0);
    struct incr_arg a = {v, tu_iters(100000), true};
    pid_t p1 = tu_fork_child(incr_child, &a);
    pid_t p2 = tu_fork_child(incr_child, &a);
    cr_assert_eq(incr_child(&a), 0);
    cr_assert_eq(tu_wait_child(p1, 50), 0);
    cr_assert_eq(tu_wait_child(p2, 50), 0);
    cr_assert_eq(*(int64_t *)conc_value_ptr(v), 3 * a.n);
    conc_value_free(v);
}

static int array_child(void *p)
{
    conc_array_t *fork_view = p;
    /* through the inherited mapping */
    int *x = conc_array_ptr(fork_view);
    x[0] = -1;
    /* and through a fresh attach by name, as a spawned child does */
    conc_array_t *a;
    if (conc_array_attach(conc_array_name(fork_view), &a) != 0)
        return 1;
    if (conc_array_len(a) != 5 || conc_array_elem_size(a) != sizeof(int))
        return 2;
    int *y = conc_array_ptr(a);
    for (int i = 1; i < 5; i++)
        y[i] *= 10;
    if (conc_array_acquire(a, true, 1.0) != 0 || conc_array_release(a) != 0)
        return 3;
    conc_array_free(a);
    conc_array_free(fork_view); /* not the creator: must not unlink */
    return 0;
}

Test(ipc_array, shared_with_fork_and_attach, .timeout = TU_TIMEOUT)
{
    int init[5] = {1, 2, 3, 4, 5};
    conc_array_t *a;
    cr_assert_eq(conc_array_new(sizeof(int), 5, init, true, &a), 0);
    pid_t pid = tu_fork_child(array_child, a);
    cr_assert_eq(tu_wait_child(pid, 20), 0);
    int *x = conc_array_ptr(a);
    int want[5] = {-1, 20, 30, 40, 50};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(x[i], want[i], "x[%d] = %d", i, x[i]);
    char name[128];
    snprintf(name, sizeof name, "%s", conc_array_name(a));
    cr_assert(shm_exists(name), "a child's free did not unlink it");
    conc_array_free(a);
    cr_assert_not(shm_exists(name), "the creator's free unlinks it");
}

static int array_creator_dies(void *p)
{
    char *name_out = p; /* in shared memory */
    conc_array_t *a;
    if (conc_array_new(8, 8, NULL, true, &a) != 0)
        return 1;
    strcpy(name_out, conc_array_name(a));
    if (!shm_exists(name_out))
        return 3;
    kill(getpid(), SIGKILL);
    return 2;
}

Test(ipc_array, killed_creator_leaks_nothing_after_a_sweep, .timeout = TU_TIMEOUT)
{
    char *name;
    cr_assert_eq(conc_shared_alloc(256, (void **)&name), 0);
    pid_t pid = tu_fork_child(array_creator_dies, name);
    cr_assert_eq(tu_wait_child(pid, 20), -SIGKILL);
    cr_assert(name[0]);
    cr_assert_geq(conc_shm_sweep(), 0); /* (a concurrent create may have swept it first) */
    cr_assert_not(shm_exists(name));
    conc_shared_free(name);
}

/* ------------------------------------------------- exec'd (spawned) children */

static int scenario(const char *sc)
{
    char name[200];
    if (sscanf(sc, "shm:%199s", name) == 1) {
        conc_shm_t *s;
        if (conc_shm_attach(name, &s) != 0)
            return 3;
        printf("child read '%s'\n", (char *)conc_shm_buf(s));
        strcpy((char *)conc_shm_buf(s) + 100, "spawned child was here");
        conc_shm_close(s);
        return 0;
    }
    if (sscanf(sc, "array:%199s", name) == 1) {
        conc_array_t *a;
        if (conc_array_attach(name, &a) != 0)
            return 4;
        for (int i = 0; i < 1000; i++) {
            conc_array_acquire(a, true, CONC_FOREVER);
            ((long *)conc_array_ptr(a))[0]++;
            conc_array_release(a);
        }
        conc_array_free(a);
        printf("child done\n");
        return 0;
    }
    return 2;
}

Test(ipc_shm, spawned_child_attaches_by_name, .timeout = TU_TIMEOUT)
{
    conc_shm_t *s;
    cr_assert_eq(conc_shm_create(NULL, 200, 0, &s), 0);
    strcpy(conc_shm_buf(s), "hello spawn");
    char sc[128], out[512];
    snprintf(sc, sizeof sc, "shm:%s", conc_shm_name(s));
    int st = tu_run_scenario(sc, out, sizeof out, NULL);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d: %s", st, out);
    cr_assert(strstr(out, "child read 'hello spawn'"), "%s", out);
    cr_assert_str_eq((char *)conc_shm_buf(s) + 100, "spawned child was here");
    conc_shm_unlink(s);
    conc_shm_close(s);

    long zero = 0;
    conc_array_t *a;
    cr_assert_eq(conc_array_new(sizeof zero, 1, &zero, true, &a), 0);
    snprintf(sc, sizeof sc, "array:%s", conc_array_name(a));
    st = tu_run_scenario(sc, out, sizeof out, NULL);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d: %s", st, out);
    cr_assert_eq(((long *)conc_array_ptr(a))[0], 1000);
    conc_array_free(a);
}

TU_MAIN_WITH_SCENARIOS(scenario)

/* Value.unlink: the name goes at once (no new attach), the mapping stays. */
Test(ipc_value, unlink_removes_the_name_and_keeps_the_mapping, .timeout = TU_TIMEOUT)
{
    conc_array_t *a, *b;
    long init = 42;
    cr_assert_eq(conc_array_new(sizeof(long), 1, &init, true, &a), 0);
    char name[256];
    snprintf(name, sizeof name, "%s", conc_array_name(a));
    cr_assert_eq(conc_array_attach(name, &b), 0);
    conc_array_free(b);
    cr_assert_eq(conc_array_unlink(a), 0);
    cr_assert_neq(conc_array_attach(name, &b), 0);
    cr_assert_eq(*(long *)conc_array_ptr(a), 42);
    cr_assert_eq(conc_array_unlink(NULL), CONC_EINVAL);
    cr_assert_eq(conc_array_free(a), 0);
}

/* A process whose main thread returned through pthread_exit lives on in
 * its other threads; /proc shows its pid as a zombie ('Z') all the same.
 * Its segments are not a dead owner's: a sweep must leave them. */
#include <pthread.h>

static _Atomic int *g_live_on; /* shared: the child's other thread runs */

static void *live_on(void *arg)
{
    (void)arg;
    atomic_store(g_live_on, 1);
    for (;;)
        pause();
    return NULL;
}

static int create_then_main_thread_exits(void *arg)
{
    conc_shm_t *s;
    if (conc_shm_create(arg, 64, 0, &s) != 0)
        return 1;
    pthread_t t;
    if (pthread_create(&t, NULL, live_on, NULL) != 0)
        return 1;
    pthread_exit(NULL);
}

static bool proc_state_is(pid_t pid, char want)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] == want;
}

Test(ipc_shm, sweep_keeps_segments_of_an_owner_whose_main_thread_exited, .timeout = TU_TIMEOUT)
{
    char name[64];
    test_name(name, sizeof name, "mainexit");
    g_live_on = mmap(NULL, sizeof *g_live_on, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)g_live_on, MAP_FAILED);
    pid_t pid = tu_fork_child(create_then_main_thread_exits, name);
    bool ready = TU_WAIT_UNTIL(shm_exists(name) && proc_state_is(pid, 'Z'), 10.0);
    if (!atomic_load(g_live_on)) { /* TSan: no threads in a fork child of a threaded process */
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        conc_shm_unlink_name(name);
        cr_skip_test("cannot start a thread in a fork child here");
    }
    cr_assert(ready, "the child's main thread exits, its other thread runs on");
    cr_assert_geq(conc_shm_sweep(), 0);
    bool kept = shm_exists(name);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    conc_shm_unlink_name(name);
    cr_assert(kept, "a live owner's segment was swept");
}
