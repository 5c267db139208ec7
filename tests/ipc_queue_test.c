/* conc_mpqueue_t: the behaviours of CPython's _test_multiprocessing
 * _TestQueue (put/get, nowait, timeouts, qsize, fork, JoinableQueue
 * task_done/join, closed queues, SimpleQueue) plus what is ours: byte
 * limits, too-small buffers, attach by fd (also from an exec'd child),
 * many producer and consumer processes, no leaked fds. */
#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "conc/ipc_queue.h"

#define PUTS(q, s) conc_mpqueue_put((q), (s), strlen(s), true, CONC_FOREVER)

static void get_str(conc_mpqueue_t *q, const char *want)
{
    char buf[256];
    size_t n = 0;
    int rc = conc_mpqueue_get(q, buf, sizeof buf, &n, true, 5.0);
    cr_assert_eq(rc, 0, "get: %s", conc_strerror(rc));
    cr_assert_eq(n, strlen(want));
    cr_assert(memcmp(buf, want, n) == 0, "got '%.*s', want '%s'", (int)n, buf, want);
}

/* Shared anonymous memory for side channels with children. */
static void *shared_mem(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    return p;
}

static int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return st;
}

static void assert_child_ok(pid_t pid)
{
    int st = wait_child(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed: status 0x%x", st);
}

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) != -1)
            n++;
    return n;
}

/* ------------------------------------------------------------ basics */

Test(ipc_queue, new_and_bad_args, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q = (conc_mpqueue_t *)1;
    cr_assert_eq(conc_mpqueue_new(NULL, CONC_MPQ_QUEUE, 0, 0), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_new(&q, (conc_mpqueue_kind_t)7, 0, 0), CONC_EINVAL);
    cr_assert_null(q);
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, CONC_MPQ_MAX_CAPACITY + 1), CONC_EINVAL);

    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 0), 0);
    cr_assert_eq(conc_mpqueue_capacity(q), CONC_MPQ_DEFAULT_CAPACITY);
    cr_assert_eq(conc_mpqueue_maxsize(q), 0);
    cr_assert(conc_mpqueue_empty(q));
    cr_assert_not(conc_mpqueue_full(q));
    cr_assert_eq(conc_mpqueue_qsize(q), 0);
    cr_assert_geq(conc_mpqueue_fd(q), 0);
    cr_assert_eq(conc_mpqueue_free(q), 0);

    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 5, 100), 0);
    cr_assert_eq(conc_mpqueue_capacity(q), 128, "capacity rounds up to a power of two");
    cr_assert_eq(conc_mpqueue_max_message(q), 112, "capacity minus a header and the end marker");
    cr_assert_eq(conc_mpqueue_maxsize(q), 5);
    char b[8];
    size_t n;
    cr_assert_eq(conc_mpqueue_put(NULL, "x", 1, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_put(q, NULL, 1, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_put(q, "x", 1, true, -0.5), 0); /* SemLock: a try, it has room */
    cr_assert_eq(conc_mpqueue_put(q, "x", 1, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get(NULL, b, sizeof b, &n, true, 0), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, NULL, true, 0), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get(q, NULL, 8, &n, true, 0), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get_alloc(q, NULL, &n, true, 0), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, -1.0), 0); /* the item of the put(-0.5) */
    cr_assert_eq(conc_mpqueue_qsize(q), 0, "an invalid call changed the queue");
    cr_assert_eq(conc_mpqueue_qsize(NULL), 0);
    cr_assert(conc_mpqueue_empty(NULL));
    cr_assert_not(conc_mpqueue_full(NULL));
    cr_assert_eq(conc_mpqueue_fd(NULL), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_close(NULL), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_free(NULL), 0);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* _TestQueue.test_put */
Test(ipc_queue, put_until_full, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 6, 0), 0);
    cr_assert(conc_mpqueue_empty(q));
    cr_assert_not(conc_mpqueue_full(q));
    cr_assert_eq(conc_mpqueue_put(q, "1", 1, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_mpqueue_put(q, "2", 1, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_mpqueue_put(q, "3", 1, true, 1.0), 0);
    cr_assert_eq(conc_mpqueue_put(q, "4", 1, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_mpqueue_put(q, "5", 1, false, 1.0), 0);
    cr_assert_eq(conc_mpqueue_put_nowait(q, "6", 1), 0);
    cr_assert_eq(conc_mpqueue_qsize(q), 6);
    cr_assert_not(conc_mpqueue_empty(q));
    cr_assert(conc_mpqueue_full(q));

    cr_assert_eq(conc_mpqueue_put(q, "7", 1, false, CONC_FOREVER), CONC_EFULL);
    cr_assert_eq(conc_mpqueue_put(q, "7", 1, false, 1.0), CONC_EFULL);
    cr_assert_eq(conc_mpqueue_put_nowait(q, "7", 1), CONC_EFULL);
    cr_assert_eq(conc_mpqueue_put(q, "7", 1, true, 0), CONC_EFULL);
    double t0 = tu_now();
    cr_assert_eq(conc_mpqueue_put(q, "7", 1, true, 0.1), CONC_EFULL);
    tu_assert_timeout(tu_now() - t0, 0.1);
    cr_assert_eq(conc_mpqueue_qsize(q), 6);

    for (int i = 1; i <= 6; i++) {
        char want[2] = {(char)('0' + i), 0};
        get_str(q, want);
    }
    cr_assert(conc_mpqueue_empty(q));
    cr_assert_not(conc_mpqueue_full(q));
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* _TestQueue.test_get */
Test(ipc_queue, get_until_empty, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 0), 0);
    for (int i = 1; i <= 5; i++) {
        char m[2] = {(char)('0' + i), 0};
        cr_assert_eq(PUTS(q, m), 0);
    }
    cr_assert_eq(conc_mpqueue_qsize(q), 5);
    char b[8];
    size_t n = 0;
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, CONC_FOREVER), 0);
    cr_assert(n == 1 && b[0] == '1');
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, 1.0), 0);
    cr_assert(n == 1 && b[0] == '2');
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, false, CONC_FOREVER), 0);
    cr_assert(n == 1 && b[0] == '3');
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, false, 1.0), 0);
    cr_assert(n == 1 && b[0] == '4');
    cr_assert_eq(conc_mpqueue_get_nowait(q, b, sizeof b, &n), 0);
    cr_assert(n == 1 && b[0] == '5');
    cr_assert(conc_mpqueue_empty(q));

    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, false, CONC_FOREVER), CONC_EEMPTY);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, false, 1.0), CONC_EEMPTY);
    cr_assert_eq(conc_mpqueue_get_nowait(q, b, sizeof b, &n), CONC_EEMPTY);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, 0), CONC_EEMPTY);
    double t0 = tu_now();
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, 0.1), CONC_EEMPTY);
    tu_assert_timeout(tu_now() - t0, 0.1);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

Test(ipc_queue, byte_limits_and_short_buffers, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 64), 0);
    cr_assert_eq(conc_mpqueue_max_message(q), 48);
    char big[100];
    memset(big, 'b', sizeof big);
    cr_assert_eq(conc_mpqueue_put(q, big, 49, true, CONC_FOREVER), CONC_ERANGE,
                 "a message that can never fit must not block");
    cr_assert_eq(conc_mpqueue_put(q, big, 48, true, CONC_FOREVER), 0);
    cr_assert(conc_mpqueue_full(q), "the ring has no room left");
    cr_assert_eq(conc_mpqueue_put_nowait(q, NULL, 0), CONC_EFULL);

    char small[10];
    size_t n = 0;
    cr_assert_eq(conc_mpqueue_get(q, small, sizeof small, &n, true, 1.0), CONC_ERANGE);
    cr_assert_eq(n, 48, "the needed size is reported");
    cr_assert_eq(conc_mpqueue_qsize(q), 1, "the message stays in the queue");
    cr_assert_eq(conc_mpqueue_get_nowait(q, NULL, 0, &n), CONC_ERANGE);
    char out[48];
    cr_assert_eq(conc_mpqueue_get_nowait(q, out, sizeof out, &n), 0);
    cr_assert(n == 48 && memcmp(out, big, 48) == 0);

    /* empty messages are messages */
    cr_assert_eq(conc_mpqueue_put_nowait(q, NULL, 0), 0);
    cr_assert_eq(conc_mpqueue_put_nowait(q, "", 0), 0);
    cr_assert_eq(conc_mpqueue_qsize(q), 2);
    n = 99;
    cr_assert_eq(conc_mpqueue_get_nowait(q, NULL, 0, &n), 0);
    cr_assert_eq(n, 0);
    void *p = NULL;
    cr_assert_eq(conc_mpqueue_get_alloc(q, &p, &n, false, 0), 0);
    cr_assert(p != NULL && n == 0);
    free(p);
    cr_assert_eq(conc_mpqueue_get_alloc(q, &p, &n, false, 0), CONC_EEMPTY);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* Variable sizes through a small ring: every wrap position, intact bytes. */
Test(ipc_queue, wraparound_keeps_bytes, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 256), 0);
    unsigned char m[248], out[248];
    unsigned put_i = 0, get_i = 0;
    for (int round = 0; round < 3000; round++) {
        /* put as many as fit, then take some */
        for (;;) {
            size_t len = (put_i * 37u) % 120;
            for (size_t k = 0; k < len; k++)
                m[k] = (unsigned char)(put_i + k * 7);
            int rc = conc_mpqueue_put_nowait(q, m, len);
            if (rc == CONC_EFULL)
                break;
            cr_assert_eq(rc, 0);
            put_i++;
        }
        int take = 1 + round % 3;
        for (int t = 0; t < take && get_i < put_i; t++) {
            size_t n = 0, want = (get_i * 37u) % 120;
            void *p = NULL;
            int rc = round & 1 ? conc_mpqueue_get_alloc(q, &p, &n, false, 0)
                               : conc_mpqueue_get_nowait(q, out, sizeof out, &n);
            cr_assert_eq(rc, 0);
            unsigned char *d = round & 1 ? p : out;
            cr_assert_eq(n, want, "message %u: length %zu, want %zu", get_i, n, want);
            for (size_t k = 0; k < n; k++)
                cr_assert_eq(d[k], (unsigned char)(get_i + k * 7), "message %u byte %zu", get_i, k);
            free(p);
            get_i++;
        }
        cr_assert_eq(conc_mpqueue_qsize(q), put_i - get_i);
    }
    cr_assert_gt(put_i, 1000u);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* _TestQueue.test_closed_queue_put_get_exceptions */
Test(ipc_queue, closed_queue, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_JOINABLE, 0, 0), 0);
    cr_assert_eq(PUTS(q, "a"), 0);
    cr_assert_eq(conc_mpqueue_close(q), 0);
    char b[4];
    size_t n;
    void *p;
    cr_assert_eq(PUTS(q, "b"), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_put_nowait(q, "b", 1), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get_nowait(q, b, sizeof b, &n), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_get_alloc(q, &p, &n, true, 0), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_task_done(q), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_join(q, 0), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_fd(q), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_qsize(q), 0);
    cr_assert_eq(conc_mpqueue_close(q), CONC_EINVAL, "closing twice");
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* _TestQueue.test_fork: messages put by a child that exits at once are
 * all there (no feeder thread to flush). */
Test(ipc_queue, fork_child_puts_then_exits, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 1 << 16), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        for (int i = 0; i < 1000; i++)
            if (conc_mpqueue_put(q, &i, sizeof i, true, 5.0) != 0)
                _exit(1);
        _exit(0); /* no flush, no atexit */
    }
    assert_child_ok(pid);
    cr_assert_eq(conc_mpqueue_qsize(q), 1000);
    for (int i = 0; i < 1000; i++) {
        int v = -1;
        size_t n = 0;
        cr_assert_eq(conc_mpqueue_get(q, &v, sizeof v, &n, true, 1.0), 0);
        cr_assert(n == sizeof v && v == i);
    }
    cr_assert(conc_mpqueue_empty(q));
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* A get blocked in the parent is woken by a child's put; a put blocked on
 * a full queue is woken by a child's get. Both must actually sleep. */
Test(ipc_queue, blocking_wakeups_across_processes, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 1, 0), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        tu_sleep(0.1);
        if (PUTS(q, "wake") != 0)
            _exit(1);
        /* now wait until the parent filled the queue and blocks on put */
        char b[16];
        size_t n;
        tu_sleep(0.1);
        if (conc_mpqueue_get(q, b, sizeof b, &n, true, 5.0) != 0 || n != 4 || memcmp(b, "full", 4))
            _exit(2);
        _exit(0);
    }
    double t0 = tu_now();
    get_str(q, "wake");
    double dt = tu_now() - t0;
    cr_assert(dt > 0.05 && dt < TU_SLACK, "get returned after %.3fs", dt);
    cr_assert_eq(PUTS(q, "full"), 0);
    t0 = tu_now();
    cr_assert_eq(conc_mpqueue_put(q, "next", 4, true, 5.0), 0);
    dt = tu_now() - t0;
    cr_assert(dt > 0.05 && dt < TU_SLACK, "put returned after %.3fs", dt);
    assert_child_ok(pid);
    get_str(q, "next");
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* Many producers and consumers, all processes: every message delivered
 * exactly once, each producer's messages in order for every consumer. */
#define NPROD 3
#define NCONS 3
typedef struct {
    atomic_int seen[NPROD][4096];
    atomic_int bad;
} mpmc_shared_t;

typedef struct {
    int producer, seq;
    char pad[20];
} mpmc_msg_t;

Test(ipc_queue, many_producers_many_consumers, .timeout = TU_TIMEOUT)
{
    const int per = (int)tu_iters(4000) > 4096 ? 4096 : (int)tu_iters(4000);
    mpmc_shared_t *sh = shared_mem(sizeof *sh);
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 50, 4096), 0);
    pid_t pids[NPROD + NCONS];
    fflush(NULL);
    for (int c = 0; c < NCONS; c++) {
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            int last[NPROD];
            for (int p = 0; p < NPROD; p++)
                last[p] = -1;
            for (;;) {
                mpmc_msg_t m;
                size_t n = 0;
                if (conc_mpqueue_get(q, &m, sizeof m, &n, true, 20.0) != 0)
                    _exit(3);
                if (n == 0) /* the end */
                    _exit(0);
                if (n != sizeof m || m.producer < 0 || m.producer >= NPROD || m.seq < 0 ||
                    m.seq >= per || m.seq <= last[m.producer])
                    atomic_fetch_add(&sh->bad, 1);
                else
                    atomic_fetch_add(&sh->seen[m.producer][m.seq], 1);
                if (m.producer >= 0 && m.producer < NPROD)
                    last[m.producer] = m.seq;
            }
        }
        pids[c] = pid;
    }
    for (int p = 0; p < NPROD; p++) {
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            for (int i = 0; i < per; i++) {
                mpmc_msg_t m = {.producer = p, .seq = i};
                if (conc_mpqueue_put(q, &m, sizeof m, true, 20.0) != 0)
                    _exit(4);
            }
            _exit(0);
        }
        pids[NCONS + p] = pid;
    }
    for (int p = 0; p < NPROD; p++)
        assert_child_ok(pids[NCONS + p]);
    for (int c = 0; c < NCONS; c++)
        cr_assert_eq(conc_mpqueue_put(q, NULL, 0, true, 10.0), 0);
    for (int c = 0; c < NCONS; c++)
        assert_child_ok(pids[c]);
    cr_assert_eq(atomic_load(&sh->bad), 0, "out of order or malformed messages");
    for (int p = 0; p < NPROD; p++)
        for (int i = 0; i < per; i++)
            cr_assert_eq(atomic_load(&sh->seen[p][i]), 1, "producer %d message %d seen %d times", p, i,
                         atomic_load(&sh->seen[p][i]));
    cr_assert(conc_mpqueue_empty(q));
    cr_assert_eq(conc_mpqueue_recoveries(q), 0);
    cr_assert_eq(conc_mpqueue_free(q), 0);
    munmap(sh, sizeof *sh);
}

/* ------------------------------------------------------ JoinableQueue */

/* _TestQueue.test_task_done: worker processes get and task_done; join
 * returns once all are done. */
Test(ipc_queue, joinable_task_done_and_join, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_JOINABLE, 0, 0), 0);
    cr_assert_eq(conc_mpqueue_task_done(q), CONC_EINVAL, "task_done() called too many times");
    cr_assert_eq(conc_mpqueue_join(q, 0), 0, "nothing unfinished");
    enum { NW = 4, NITEMS = 40 };
    fflush(NULL);
    pid_t pids[NW];
    for (int w = 0; w < NW; w++) {
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            for (;;) {
                int v;
                size_t n;
                if (conc_mpqueue_get(q, &v, sizeof v, &n, true, 20.0) != 0)
                    _exit(1);
                if (v < 0) {
                    _exit(conc_mpqueue_task_done(q) == 0 ? 0 : 2);
                }
                tu_sleep(0.001);
                if (conc_mpqueue_task_done(q) != 0)
                    _exit(3);
            }
        }
        pids[w] = pid;
    }
    for (int i = 0; i < NITEMS; i++)
        cr_assert_eq(conc_mpqueue_put(q, &i, sizeof i, true, 5.0), 0);
    cr_assert_eq(conc_mpqueue_join(q, 20.0), 0);
    cr_assert_eq(conc_mpqueue_unfinished_tasks(q), 0);
    cr_assert(conc_mpqueue_empty(q));
    for (int w = 0; w < NW; w++) {
        int stop = -1;
        cr_assert_eq(conc_mpqueue_put(q, &stop, sizeof stop, true, 5.0), 0);
    }
    for (int w = 0; w < NW; w++)
        assert_child_ok(pids[w]);
    cr_assert_eq(conc_mpqueue_join(q, 5.0), 0);
    cr_assert_eq(conc_mpqueue_task_done(q), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

Test(ipc_queue, joinable_join_timeout_and_counts, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_JOINABLE, 0, 0), 0);
    cr_assert_eq(PUTS(q, "a"), 0);
    cr_assert_eq(PUTS(q, "b"), 0);
    cr_assert_eq(conc_mpqueue_unfinished_tasks(q), 2);
    cr_assert_eq(conc_mpqueue_join(q, 0), CONC_ETIMEDOUT);
    double t0 = tu_now();
    cr_assert_eq(conc_mpqueue_join(q, 0.1), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.1);
    cr_assert_eq(conc_mpqueue_join(q, NAN), CONC_EINVAL);
    /* task_done may precede get (Python counts puts, not gets) */
    cr_assert_eq(conc_mpqueue_task_done(q), 0);
    cr_assert_eq(conc_mpqueue_task_done(q), 0);
    cr_assert_eq(conc_mpqueue_task_done(q), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_unfinished_tasks(q), 0);
    cr_assert_eq(conc_mpqueue_join(q, CONC_FOREVER), 0);
    cr_assert_eq(conc_mpqueue_qsize(q), 2);
    cr_assert_eq(conc_mpqueue_free(q), 0);

    /* a plain Queue and a SimpleQueue have no task_done/join */
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 0), 0);
    cr_assert_eq(PUTS(q, "a"), 0);
    cr_assert_eq(conc_mpqueue_task_done(q), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_join(q, 0), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* A join blocked in the parent sleeps until a child's last task_done. */
Test(ipc_queue, join_woken_by_child, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_JOINABLE, 0, 0), 0);
    cr_assert_eq(PUTS(q, "job"), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        char b[8];
        size_t n;
        if (conc_mpqueue_get(q, b, sizeof b, &n, true, 5.0) != 0)
            _exit(1);
        tu_sleep(0.1);
        _exit(conc_mpqueue_task_done(q) == 0 ? 0 : 2);
    }
    double t0 = tu_now();
    cr_assert_eq(conc_mpqueue_join(q, 10.0), 0);
    double dt = tu_now() - t0;
    cr_assert(dt > 0.05 && dt < TU_SLACK, "join returned after %.3fs", dt);
    assert_child_ok(pid);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* _TestSimpleQueue: empty/put/get; unbounded in items. */
Test(ipc_queue, simple_queue, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_SIMPLE, 3, 0), 0);
    cr_assert_eq(conc_mpqueue_maxsize(q), 0, "SimpleQueue ignores maxsize");
    cr_assert(conc_mpqueue_empty(q));
    for (int i = 0; i < 10; i++)
        cr_assert_eq(conc_mpqueue_put_nowait(q, &i, sizeof i), 0);
    cr_assert_not(conc_mpqueue_empty(q));
    cr_assert_not(conc_mpqueue_full(q));
    for (int i = 0; i < 10; i++) {
        int v;
        size_t n;
        cr_assert_eq(conc_mpqueue_get(q, &v, sizeof v, &n, true, CONC_FOREVER), 0);
        cr_assert_eq(v, i);
    }
    cr_assert(conc_mpqueue_empty(q));
    cr_assert_eq(conc_mpqueue_task_done(q), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* ------------------------------------------------------------ attach */

Test(ipc_queue, attach_by_fd, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *a, *b;
    cr_assert_eq(conc_mpqueue_new(&a, CONC_MPQ_JOINABLE, 7, 4096), 0);
    cr_assert_eq(conc_mpqueue_attach(&b, conc_mpqueue_fd(a)), 0);
    cr_assert_neq(conc_mpqueue_fd(b), conc_mpqueue_fd(a), "attach keeps its own fd");
    cr_assert_eq(conc_mpqueue_maxsize(b), 7);
    cr_assert_eq(conc_mpqueue_capacity(b), 4096);
    cr_assert_eq(PUTS(a, "via a"), 0);
    get_str(b, "via a");
    cr_assert_eq(conc_mpqueue_task_done(b), 0, "joinable through the attached handle");
    cr_assert_eq(conc_mpqueue_join(a, 0), 0);
    cr_assert_eq(conc_mpqueue_free(a), 0);
    /* b keeps the segment alive */
    cr_assert_eq(PUTS(b, "still here"), 0);
    get_str(b, "still here");
    cr_assert_eq(conc_mpqueue_free(b), 0);

    /* not a queue segment */
    conc_mpqueue_t *c = (conc_mpqueue_t *)1;
    cr_assert_eq(conc_mpqueue_attach(NULL, 0), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_attach(&c, -1), CONC_EINVAL);
    cr_assert_null(c);
    cr_assert_eq(conc_mpqueue_attach(&c, 987), CONC_EINVAL, "closed fd");
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(conc_mpqueue_attach(&c, p[0]), CONC_EINVAL, "a pipe");
    close(p[0]);
    close(p[1]);
    int fd = memfd_create("not-a-queue", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 1 << 16), 0);
    cr_assert_eq(conc_mpqueue_attach(&c, fd), CONC_EINVAL, "zeroed memory");
    close(fd);
}

/* A spawned (exec'd) child attaches through an inherited fd. */
static int scenario(const char *name)
{
    int fd = -1;
    if (sscanf(name, "attach_put:%d", &fd) == 1) {
        conc_mpqueue_t *q;
        if (conc_mpqueue_attach(&q, fd) != 0)
            return 10;
        close(fd);
        char b[32];
        size_t n;
        if (conc_mpqueue_get(q, b, sizeof b, &n, true, 5.0) != 0)
            return 11;
        /* echo it back, reversed */
        for (size_t i = 0; i < n / 2; i++) {
            char t = b[i];
            b[i] = b[n - 1 - i];
            b[n - 1 - i] = t;
        }
        if (conc_mpqueue_put(q, b, n, true, 5.0) != 0)
            return 12;
        printf("ok %d", conc_mpqueue_fd(q) >= 0);
        return conc_mpqueue_free(q) == 0 ? 0 : 13;
    }
    char qname[64];
    if (sscanf(name, "attach_name:%63s", qname) == 1) {
        conc_mpqueue_t *q;
        if (conc_mpqueue_attach_name(&q, qname) != 0)
            return 20;
        if (conc_mpqueue_put(q, "by name", 7, true, 5.0) != 0)
            return 21;
        printf("ok");
        return conc_mpqueue_free(q) == 0 ? 0 : 22;
    }
    return 99;
}

Test(ipc_queue, spawned_child_attaches, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 0), 0);
    int fd = fcntl(conc_mpqueue_fd(q), F_DUPFD, 100); /* inheritable copy */
    cr_assert_geq(fd, 0);
    cr_assert_eq(PUTS(q, "spawned"), 0);
    char name[64], out[256];
    snprintf(name, sizeof name, "attach_put:%d", fd);
    int st = tu_run_scenario(name, out, sizeof out, NULL);
    close(fd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x, out '%s'", st, out);
    cr_assert_str_eq(out, "ok 1");
    get_str(q, "denwaps");
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* A spawned child that inherits no fd attaches by name. */
Test(ipc_queue, attach_by_name, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q, *b;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 0), 0);
    char name[CONC_MPQ_NAME_MAX], out[256];
    char tiny[5];
    cr_assert_eq(conc_mpqueue_name(q, tiny, sizeof tiny), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_name(q, name, sizeof name), 0);
    cr_assert_eq(conc_mpqueue_name(NULL, name, sizeof name), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_attach_name(&b, name), 0);
    cr_assert_eq(PUTS(b, "same queue"), 0);
    get_str(q, "same queue");
    cr_assert_eq(conc_mpqueue_free(b), 0);
    char arg[128];
    snprintf(arg, sizeof arg, "attach_name:%s", name);
    int st = tu_run_scenario(arg, out, sizeof out, NULL);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
    get_str(q, "by name");
    cr_assert_eq(conc_mpqueue_attach_name(&b, "conc-mpq:1:x"), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_attach_name(&b, "nonsense"), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_attach_name(&b, NULL), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_attach_name(&b, "conc-mpq:999999999:3"), CONC_EINVAL);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

Test(ipc_queue, no_leaked_fds, .timeout = TU_TIMEOUT)
{
    int before = count_fds();
    for (int i = 0; i < 50; i++) {
        conc_mpqueue_t *q, *b;
        cr_assert_eq(conc_mpqueue_new(&q, (conc_mpqueue_kind_t)(i % 3), 0, 4096), 0);
        cr_assert_eq(conc_mpqueue_attach(&b, conc_mpqueue_fd(q)), 0);
        cr_assert_eq(PUTS(q, "x"), 0);
        if (i & 1)
            cr_assert_eq(conc_mpqueue_close(b), 0);
        cr_assert_eq(conc_mpqueue_free(b), 0);
        cr_assert_eq(conc_mpqueue_free(q), 0);
    }
    cr_assert_eq(count_fds(), before);
}

/* close() refuses while another thread of this process waits on q. */
static atomic_long blocked_tid;
static void *blocked_get(void *arg)
{
    char b[8];
    size_t n;
    atomic_store(&blocked_tid, tu_gettid());
    return (void *)(intptr_t)conc_mpqueue_get(arg, b, sizeof b, &n, true, 10.0);
}

Test(ipc_queue, close_while_waiting_is_eperm, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 0), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, blocked_get, q), 0);
    /* asleep in the kernel: past the point where it registered its wait */
    cr_assert(TU_WAIT_UNTIL(atomic_load(&blocked_tid) != 0 && tu_tid_sleeping(atomic_load(&blocked_tid)), 5.0));
    cr_assert_eq(conc_mpqueue_close(q), CONC_EPERM);
    cr_assert_eq(conc_mpqueue_free(q), CONC_EPERM);
    cr_assert_eq(PUTS(q, "go"), 0);
    void *r;
    pthread_join(th, &r);
    cr_assert_eq((int)(intptr_t)r, 0);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

TU_MAIN_WITH_SCENARIOS(scenario)

/* A put that finds the queue full after earlier gets (so the producer's
 * cached copy of the consumers' counters is old) sleeps until its
 * timeout: it neither returns early nor spins through the wait. Both
 * bounds: the ring's bytes (maxsize 0) and maxsize with room in the ring. */
Test(ipc_queue, full_put_sleeps_until_timeout, .timeout = TU_TIMEOUT)
{
    for (int bounded = 0; bounded < 2; bounded++) {
        conc_mpqueue_t *q;
        cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, bounded ? 5 : 0, 1024), 0);
        char m[40] = "x", b[40];
        size_t n;
        for (int i = 0; i < 3; i++) { /* move the consumers' counters */
            cr_assert_eq(conc_mpqueue_put(q, m, sizeof m, true, 1.0), 0);
            cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, 1.0), 0);
        }
        int put = 0;
        while (conc_mpqueue_put_nowait(q, m, sizeof m) == 0)
            put++;
        cr_assert(bounded ? put == 5 : put > 5, "%d puts", put);
        struct timespec c0, c1;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
        double t0 = tu_now();
        cr_assert_eq(conc_mpqueue_put(q, m, sizeof m, true, 0.3), CONC_EFULL);
        double wall = tu_now() - t0;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        double cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) * 1e-9;
        tu_assert_timeout(wall, 0.3);
        cr_assert_lt(cpu, 0.15, "bounded=%d: the full put burnt %.3f s of CPU in %.3f s", bounded,
                     cpu, wall);
        cr_assert_eq(conc_mpqueue_qsize(q), (size_t)put);
        cr_assert_eq(conc_mpqueue_free(q), 0);
    }
}

/* No lost wakeups: two processes bounce a counter through two queues,
 * the responder now and then pausing longer than a waiter spins and
 * yields, so the waiter sleeps and the wake races with its going to
 * sleep. Sleeps are uncapped here (a missed wakeup would be noticed only
 * at the 250 ms cap otherwise), so a lost wakeup shows as a round trip
 * that takes until the get's 20 s timeout. */
extern int64_t conc__mpq_sleep_cap_ns; /* src/ipc/queue.c, tests only */

static void pong_wait(unsigned *seed)
{
    unsigned r = rand_r(seed) % 8;
    if (r == 0)
        tu_sleep((rand_r(seed) % 400) * 1e-6 + 0.0002);
    else if (r == 1)
        sched_yield();
}

Test(ipc_queue, ping_pong_no_lost_wakeup, .timeout = TU_TIMEOUT)
{
    const int rounds = (int)tu_iters(3000);
    conc__mpq_sleep_cap_ns = 60 * 1000000000LL;
    conc_mpqueue_t *ping, *pong;
    cr_assert_eq(conc_mpqueue_new(&ping, CONC_MPQ_QUEUE, 0, 0), 0);
    cr_assert_eq(conc_mpqueue_new(&pong, CONC_MPQ_SIMPLE, 0, 4096), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        unsigned seed = 99;
        for (int i = 0; i < rounds; i++) {
            int v;
            size_t n;
            if (conc_mpqueue_get(ping, &v, sizeof v, &n, true, 20.0) != 0 || n != sizeof v || v != i)
                _exit(1);
            pong_wait(&seed);
            v = -v;
            if (conc_mpqueue_put(pong, &v, sizeof v, true, 20.0) != 0)
                _exit(2);
        }
        _exit(0);
    }
    unsigned seed = 7;
    double worst = 0;
    for (int i = 0; i < rounds; i++) {
        double t0 = tu_now();
        pong_wait(&seed);
        cr_assert_eq(conc_mpqueue_put(ping, &i, sizeof i, true, 20.0), 0);
        int v = 0;
        size_t n = 0;
        cr_assert_eq(conc_mpqueue_get(pong, &v, sizeof v, &n, true, 20.0), 0, "round %d", i);
        cr_assert(n == sizeof v && v == -i);
        double dt = tu_now() - t0;
        worst = dt > worst ? dt : worst;
    }
    assert_child_ok(pid);
    conc__mpq_sleep_cap_ns = 250000000LL;
    cr_assert_lt(worst, 5.0, "a round trip took %.3f s: a wakeup was lost", worst);
    cr_assert_eq(conc_mpqueue_free(ping), 0);
    cr_assert_eq(conc_mpqueue_free(pong), 0);
}

/* A side's lock may stay with its only user between operations (a bias).
 * Another process that wants it gets it at once — from a live holder
 * that is outside its operations, and from one that exited (without
 * closing) — and that is no repair: recoveries stays 0. */
Test(ipc_queue, lock_bias_handoff, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 4096), 0);
    /* the parent uses both sides first, then a child does, then the parent */
    cr_assert_eq(PUTS(q, "a"), 0);
    get_str(q, "a");
    cr_assert_eq(PUTS(q, "b"), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        char buf[8];
        size_t n;
        double t0 = tu_now();
        if (conc_mpqueue_get(q, buf, sizeof buf, &n, true, 5.0) != 0 || n != 1 || buf[0] != 'b')
            _exit(1);
        if (conc_mpqueue_put(q, "c", 1, true, 5.0) != 0)
            _exit(2);
        _exit(tu_now() - t0 < 1.0 ? 0 : 3);
    }
    assert_child_ok(pid);
    get_str(q, "c");
    cr_assert_eq(PUTS(q, "d"), 0);
    get_str(q, "d");
    cr_assert_eq(conc_mpqueue_recoveries(q), 0);
    cr_assert_eq(conc_mpqueue_free(q), 0);

    /* a child is the first user of both sides and exits holding them */
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 4096), 0);
    fflush(NULL);
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        char buf[8];
        size_t n;
        if (PUTS(q, "x") != 0 || PUTS(q, "y") != 0)
            _exit(1);
        if (conc_mpqueue_get(q, buf, sizeof buf, &n, true, 5.0) != 0 || n != 1 || buf[0] != 'x')
            _exit(2);
        _exit(0);
    }
    assert_child_ok(pid);
    double t0 = tu_now();
    get_str(q, "y");
    cr_assert_eq(PUTS(q, "z"), 0);
    get_str(q, "z");
    cr_assert_lt(tu_now() - t0, 1.0);
    cr_assert_eq(conc_mpqueue_recoveries(q), 0);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* Every small length, at every ring offset (a 256-byte ring wraps many
 * times): the bytes come back exact and nothing past len is written in
 * the caller's buffer. */
Test(ipc_queue, small_lengths_exact, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 256), 0);
    unsigned char m[100], b[100];
    for (int round = 0; round < 40; round++) {
        for (size_t len = 0; len <= 80; len++) {
            for (size_t k = 0; k < len; k++)
                m[k] = (unsigned char)(round * 7 + len * 3 + k);
            cr_assert_eq(conc_mpqueue_put(q, m, len, false, 0), 0, "len %zu", len);
            memset(b, 0xee, sizeof b);
            size_t n = 999;
            cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, false, 0), 0);
            cr_assert_eq(n, len);
            cr_assert(memcmp(b, m, len) == 0, "round %d len %zu: bytes differ", round, len);
            for (size_t k = len; k < sizeof b; k++)
                cr_assert_eq(b[k], 0xee, "round %d len %zu: byte %zu written", round, len, k);
        }
    }
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* Ring space freed through another process. A consumer thread here takes
 * a big message; a child's put, waiting for that room, refreshes the
 * producers' cached copy of head; then a put here trusts that copy and
 * writes over the bytes our consumer read, with no refresh of its own.
 * The order is real (consumer -> child -> put lock -> us) but runs
 * through a process TSan cannot see: unannotated, TSan reported this as a
 * race of the put's stores against ring_read (mppool_test did, now and
 * then: its result queue has producers in both). Every byte must arrive. */
static void *get_big_one(void *arg)
{
    unsigned char *b = malloc(4096);
    size_t n = 0;
    intptr_t bad = b == NULL;
    if (!bad && conc_mpqueue_get(arg, b, 4096, &n, true, 10.0) != 0)
        bad = 2;
    for (size_t k = 0; !bad && k < n; k++)
        bad = b[k] != 1 ? 3 : 0;
    if (!bad && n != 2040)
        bad = 4;
    free(b);
    return (void *)bad;
}

Test(ipc_queue, room_freed_through_another_process, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 4096), 0);
    cr_assert_eq(conc_mpqueue_capacity(q), 4096u);
    unsigned char m[4096];
    memset(m, 1, 2040); /* 2048 ring bytes with its header */
    cr_assert_eq(conc_mpqueue_put_nowait(q, m, 2040), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) { /* 2048 more: fits only once the first is taken */
        memset(m, 2, 2040);
        _exit(conc_mpqueue_put(q, m, 2040, true, 10.0) == 0 ? 0 : 1);
    }
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, get_big_one, q), 0);
    assert_child_ok(pid);
    /* ring offset 0: over the first message, room by the child's copy */
    memset(m, 3, 24);
    cr_assert_eq(conc_mpqueue_put_nowait(q, m, 24), 0);
    void *r;
    pthread_join(th, &r);
    cr_assert_eq((intptr_t)r, 0, "consumer thread: %d", (int)(intptr_t)r);
    unsigned char out[4096];
    size_t n = 0;
    cr_assert_eq(conc_mpqueue_get_nowait(q, out, sizeof out, &n), 0);
    cr_assert_eq(n, 2040u);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(out[k], 2);
    cr_assert_eq(conc_mpqueue_get_nowait(q, out, sizeof out, &n), 0);
    cr_assert_eq(n, 24u);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(out[k], 3);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}
