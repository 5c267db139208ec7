/*
 * Fault injection for the process pools: a random worker is SIGKILLed in
 * the middle of a 1,000-task run, 100 times (scaled down under
 * sanitizers). Every future must resolve — with its right result or with
 * CONC_EBROKEN — nothing may hang, and at the end no zombie, no extra file
 * descriptor and no shared-memory segment (memfd mapping or /dev/shm
 * entry) may be left.
 *
 * Own main with CONC_PROCESS_MAIN (see tests/process_test.c).
 */
#include "test_util.h"

#include <dirent.h>
#include <signal.h>

#include <conc/pool.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(ppool_fault, .init = setup, .timeout = TU_TIMEOUT);

static int work(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int x;
    memcpy(&x, arg, sizeof x);
    volatile int spin = 0;
    for (int i = 0; i < 2000; i++)
        spin += i;
    (void)spin;
    int y = x * 3 + 1;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(work);

static int count_dir(const char *path)
{
    int n = 0;
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* Shared-memory segments this process still maps (memfd rings) plus
 * /dev/shm entries naming this process: what a leaked segment would be.
 * (Other programs on the machine create /dev/shm entries too.) */
static int shm_count(void)
{
    int n = 0;
    char line[512], me[32];
    FILE *f = fopen("/proc/self/maps", "r");
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, "/memfd:") != NULL;
    if (f)
        fclose(f);
    snprintf(me, sizeof me, "%d", (int)getpid());
    DIR *d = opendir("/dev/shm");
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += strstr(de->d_name, me) != NULL && strncmp(de->d_name, "bxf_", 4) != 0;
    if (d)
        closedir(d);
    return n;
}

#define NTASKS 1000

/* Submit NTASKS, kill a random worker after a random short delay, check
 * that every future resolves. Returns how many failed with EBROKEN. */
static int run_once(conc_pool_t *pool, conc_executor_t *ex, unsigned *seed)
{
    static conc_future_t *fs[NTASKS];
    for (int i = 0; i < NTASKS; i++) {
        int rc = pool ? conc_pool_apply_async(pool, work, &i, sizeof i, NULL, NULL, NULL, &fs[i])
                      : conc_process_pool_submit(ex, &fs[i], work, &i, sizeof i);
        cr_assert_eq(rc, 0, "submit %d: %d", i, rc);
    }
    tu_sleep((rand_r(seed) % 3000) / 1e6);
    int pids[8];
    size_t np = pool ? conc_pool_pids(pool, pids, 8) : conc_process_pool_pids(ex, pids, 8);
    if (np > 8)
        np = 8;
    if (np)
        kill(pids[rand_r(seed) % np], SIGKILL);
    int broken = 0;
    for (int i = 0; i < NTASKS; i++) {
        const void *d;
        size_t n;
        int rc = conc_future_bytes(fs[i], 20, &d, &n);
        cr_assert(rc == 0 || rc == CONC_EFAILED, "task %d: rc %d", i, rc);
        if (rc) { /* failed by the dead worker: its exception is CONC_EBROKEN */
            int code = 0;
            cr_assert_eq(conc_future_exception(fs[i], 0, &code, NULL), 0);
            cr_assert_eq(code, CONC_EBROKEN, "task %d: exception %d", i, code);
        }
        if (rc == 0) {
            int y;
            cr_assert_eq(n, sizeof y);
            memcpy(&y, d, sizeof y);
            cr_assert_eq(y, i * 3 + 1);
        } else {
            broken++;
        }
        conc_future_free(fs[i]);
    }
    return broken;
}

Test(ppool_fault, pool_kill_random_worker)
{
    int fds0 = count_dir("/proc/self/fd"), shm0 = shm_count();
    conc_pool_t *pool;
    cr_assert_eq(conc_pool_new(&pool, &(conc_pool_opts_t){.processes = 2}), 0);
    unsigned seed = 12345;
    long runs = tu_iters(100);
    long broken = 0;
    for (long r = 0; r < runs; r++)
        broken += run_once(pool, NULL, &seed);
    fprintf(stderr, "ppool_fault: %ld runs, %ld tasks failed with CONC_EBROKEN\n", runs, broken);
    cr_assert_eq(conc_pool_free(pool), 0);
    cr_assert_eq(tu_zombies(), 0);
    cr_assert_eq(shm_count(), shm0);
    /* conc keeps three for good: the fork server's socket and pidfd (it
     * starts the replacements) and a pidfd of this process (children
     * watch it); nothing per pool or per run */
    cr_assert_leq(count_dir("/proc/self/fd"), fds0 + 3);
}

Test(ppool_fault, executor_kill_random_worker)
{
    int fds0 = count_dir("/proc/self/fd"), shm0 = shm_count();
    unsigned seed = 777;
    long runs = tu_iters(20);
    for (long r = 0; r < runs; r++) {
        conc_executor_t *ex;
        cr_assert_eq(conc_process_pool_new(&ex, &(conc_process_pool_opts_t){.max_workers = 2}), 0);
        run_once(NULL, ex, &seed);
        conc_future_t *f;
        int i = 1;
        int rc = conc_process_pool_submit(ex, &f, work, &i, sizeof i);
        if (rc == 0) /* the kill may land after the last task: then not broken yet */
            conc_future_free(f);
        else
            cr_assert_eq(rc, CONC_EBROKEN);
        cr_assert_eq(conc_executor_free(ex), 0);
    }
    cr_assert_eq(tu_zombies(), 0);
    cr_assert_eq(shm_count(), shm0);
    cr_assert_leq(count_dir("/proc/self/fd"), fds0 + 3);
}

TU_MAIN_WITH_PROCESS_GUARD()
