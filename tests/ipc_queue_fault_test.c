/* conc_mpqueue_t under SIGKILL: producers and consumers killed at random
 * points of their loops (often with a lock held, mid-copy). Afterwards the
 * queue still works, every message whose put returned (acknowledged
 * through shared memory after put returns) is delivered exactly once and
 * intact, no fd leaks, every child reaped. */
#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "conc/ipc_queue.h"
#include "ipc/internal.h"
#include "ipc/queue_internal.h"

#define MAXLEN 1500

typedef struct {
    uint32_t producer;
    uint32_t seq;
    uint32_t len;
    uint32_t sum;
} msg_hdr_t;

static size_t make_msg(unsigned char *buf, uint32_t producer, uint32_t seq)
{
    size_t len = sizeof(msg_hdr_t) + (seq * 7919u + producer * 31u) % (MAXLEN - sizeof(msg_hdr_t));
    msg_hdr_t h = {.producer = producer, .seq = seq, .len = (uint32_t)len, .sum = 0};
    for (size_t k = sizeof h; k < len; k++) {
        buf[k] = (unsigned char)(seq * 13u + k + producer);
        h.sum += buf[k];
    }
    memcpy(buf, &h, sizeof h);
    return len;
}

/* 0 when buf holds an intact message; fills *h. */
static int check_msg(const unsigned char *buf, size_t len, msg_hdr_t *h)
{
    if (len < sizeof *h)
        return 1;
    memcpy(h, buf, sizeof *h);
    if (h->len != len)
        return 2;
    uint32_t sum = 0;
    for (size_t k = sizeof *h; k < len; k++) {
        if (buf[k] != (unsigned char)(h->seq * 13u + k + h->producer))
            return 3;
        sum += buf[k];
    }
    return sum == h->sum ? 0 : 4;
}

/* In a forked child: die with the test process, so no child outlives a
 * test that failed or was killed (a leftover producer would spin on). */
static void die_with_parent(void)
{
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void *shared_mem(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    return p;
}

static int reap(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return st;
}

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) != -1)
            n++;
    return n;
}

static bool no_zombie_children(void)
{
    return waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;
}

/* After the faults: the queue must still carry a message both ways. */
static void assert_queue_works(conc_mpqueue_t *q)
{
    unsigned char m[MAXLEN], b[MAXLEN];
    size_t len = make_msg(m, 9, 12345), n = 0;
    cr_assert_eq(conc_mpqueue_put(q, m, len, true, 5.0), 0);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, 5.0), 0);
    cr_assert(n == len && memcmp(m, b, n) == 0);
    cr_assert(conc_mpqueue_empty(q));
}

/* Whether this build and kernel let a queue lock be biased (queue.c:
 * global expedited membarrier, not under TSan). */
static bool bias_possible(void)
{
#if defined(__SANITIZE_THREAD__)
    return false;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    return false;
#endif
#endif
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    return cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED);
}

/* ------------------------------------------- producers killed in put */

/* The thread id inside an operation under q's put lock (0: none). A
 * biased holder (bit 63) keeps the lock between operations: it is inside
 * one only while it says busy. */
static pid_t put_lock_holder(conc_mpqueue_t *q)
{
    uint64_t w = atomic_load((_Atomic uint64_t *)&q->shm->put.lock);
    if ((w >> 63) && atomic_load((_Atomic uint32_t *)&q->shm->put.busy) == 0)
        return 0;
    return (pid_t)(uint32_t)w;
}

/* One try at catching child pid inside a put: stop it wherever it is;
 * true when it is stopped holding the put lock (a SIGKILL now lands
 * there for certain), else it is let go on and false. */
static bool stopped_in_put_lock(conc_mpqueue_t *q, pid_t pid)
{
    int st = 0;
    cr_assert_eq(kill(pid, SIGSTOP), 0);
    while (waitpid(pid, &st, WUNTRACED) < 0)
        cr_assert_eq(errno, EINTR);
    cr_assert(WIFSTOPPED(st), "child status 0x%x", st);
    if (put_lock_holder(q) == pid)
        return true;
    cr_assert_eq(kill(pid, SIGCONT), 0);
    return false;
}


typedef struct {
    atomic_uint acked; /* puts of the victim that returned */
    atomic_int started;
} prod_shared_t;

#define STEADY_MSGS 300

static void producer_loop(conc_mpqueue_t *q, uint32_t id, uint32_t n, prod_shared_t *sh)
{
    unsigned char m[MAXLEN];
    die_with_parent();
    atomic_fetch_add(&sh->started, 1);
    for (uint32_t seq = 0; seq < n; seq++) {
        size_t len = make_msg(m, id, seq);
        if (conc_mpqueue_put(q, m, len, true, 20.0) != 0)
            _exit(3);
        if (sh && id == 0)
            atomic_store(&sh->acked, seq + 1);
    }
    _exit(0);
}

Test(ipc_queue_fault, producer_killed_mid_put, .timeout = TU_TIMEOUT)
{
    const int runs = (int)tu_iters(100);
    int fds = count_fds();
    prod_shared_t *sh = shared_mem(sizeof *sh);
    unsigned long recoveries = 0;
    unsigned seed = 12345;
    for (int run = 0; run < runs; run++) {
        conc_mpqueue_t *q;
        cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 8192), 0);
        atomic_store(&sh->acked, 0);
        atomic_store(&sh->started, 0);
        fflush(NULL);
        pid_t victim = fork();
        cr_assert_neq(victim, -1);
        if (victim == 0)
            producer_loop(q, 0, UINT32_MAX, sh);
        pid_t steady = fork(); /* competes for the put lock, finds it dead */
        cr_assert_neq(steady, -1);
        if (steady == 0)
            producer_loop(q, 1, STEADY_MSGS, sh);

        /* consume concurrently, then kill the victim at a random point */
        uint32_t next[2] = {0, 0};
        unsigned char b[MAXLEN];
        cr_assert(TU_WAIT_UNTIL(atomic_load(&sh->started) == 2, 10.0));
        double kill_at = tu_now() + (rand_r(&seed) % 3000) * 1e-6;
        /* Odd runs aim the kill at a moment the victim holds the put lock
         * (mid-copy or mid-commit): stop it, kill it if it is inside, else
         * let it go on and try again after the next get (for 20 ms). */
        bool aim = run % 2 == 1;
        bool killed = false, steady_done = false;
        for (;;) {
            double now = tu_now();
            if (!killed && now >= kill_at &&
                (!aim || now >= kill_at + 0.02 || stopped_in_put_lock(q, victim))) {
                cr_assert_eq(kill(victim, SIGKILL), 0);
                int st = reap(victim);
                cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "victim status 0x%x", st);
                killed = true;
            }
            size_t n = 0;
            int rc = conc_mpqueue_get(q, b, sizeof b, &n, true, killed ? 0.01 : 0.0005);
            if (rc == CONC_EEMPTY) {
                if (killed && steady_done)
                    break;
                if (killed && !steady_done) {
                    pid_t r = waitpid(steady, NULL, WNOHANG);
                    if (r == steady) {
                        steady_done = true;
                        continue; /* drain what it left */
                    }
                }
                continue;
            }
            cr_assert_eq(rc, 0, "run %d: get: %s", run, conc_strerror(rc));
            msg_hdr_t h;
            int bad = check_msg(b, n, &h);
            cr_assert_eq(bad, 0, "run %d: corrupted message (%d)", run, bad);
            cr_assert(h.producer < 2);
            cr_assert_eq(h.seq, next[h.producer], "run %d: producer %u: got %u, expected %u", run,
                         h.producer, h.seq, next[h.producer]);
            next[h.producer]++;
        }
        unsigned acked = atomic_load(&sh->acked);
        cr_assert(next[0] == acked || next[0] == acked + 1,
                  "run %d: %u of the victim's messages arrived, %u were acknowledged", run, next[0],
                  acked);
        cr_assert_eq(next[1], STEADY_MSGS, "run %d: the other producer lost messages", run);
        assert_queue_works(q); /* takes the put lock: repairs if the victim held it */
        recoveries += conc_mpqueue_recoveries(q);
        cr_assert_eq(conc_mpqueue_free(q), 0);
    }
    cr_assert(no_zombie_children());
    cr_assert_eq(count_fds(), fds, "leaked fds");
    munmap(sh, sizeof *sh);
    cr_log_info("producer kills: %d runs, %lu lock recoveries", runs, recoveries);
    fprintf(stderr, "producer kills: %d runs, %lu lock recoveries\n", runs, recoveries);
}

/* ------------------------------------------- consumers killed in get */

#define NMSG 1500
typedef struct {
    atomic_int started;
    atomic_uint nrec[2];
    atomic_uint rec[2][NMSG]; /* seqs each consumer got, after get returned */
} cons_shared_t;

static void consumer_loop(conc_mpqueue_t *q, int id, cons_shared_t *sh)
{
    unsigned char b[MAXLEN];
    die_with_parent();
    atomic_fetch_add(&sh->started, 1);
    for (;;) {
        size_t n = 0;
        int rc = conc_mpqueue_get(q, b, sizeof b, &n, true, 20.0);
        if (rc != 0)
            _exit(3);
        if (n == 0)
            _exit(0); /* the end */
        msg_hdr_t h;
        if (check_msg(b, n, &h) != 0 || h.producer != 0 || h.seq >= NMSG)
            _exit(4);
        unsigned i = atomic_load(&sh->nrec[id]);
        atomic_store(&sh->rec[id][i], h.seq);
        atomic_store(&sh->nrec[id], i + 1);
    }
}

Test(ipc_queue_fault, consumer_killed_mid_get, .timeout = TU_TIMEOUT)
{
    const int runs = (int)tu_iters(60);
    int fds = count_fds();
    cons_shared_t *sh = shared_mem(sizeof *sh);
    unsigned seed = 777;
    unsigned char *seen = malloc(NMSG);
    for (int run = 0; run < runs; run++) {
        conc_mpqueue_t *q;
        cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 8192), 0);
        memset(sh, 0, sizeof *sh);
        fflush(NULL);
        pid_t c[2];
        for (int i = 0; i < 2; i++) {
            c[i] = fork();
            cr_assert_neq(c[i], -1);
            if (c[i] == 0)
                consumer_loop(q, i, sh);
        }
        cr_assert(TU_WAIT_UNTIL(atomic_load(&sh->started) == 2, 10.0));
        unsigned char m[MAXLEN];
        unsigned kill_after = (unsigned)(rand_r(&seed) % (NMSG / 2));
        for (uint32_t seq = 0; seq < NMSG; seq++) {
            if (seq == kill_after) {
                cr_assert_eq(kill(c[0], SIGKILL), 0);
                int st = reap(c[0]);
                cr_assert(WIFSIGNALED(st), "victim status 0x%x", st);
            }
            size_t len = make_msg(m, 0, seq);
            cr_assert_eq(conc_mpqueue_put(q, m, len, true, 10.0), 0, "run %d: put %u", run, seq);
        }
        cr_assert_eq(conc_mpqueue_put(q, NULL, 0, true, 10.0), 0);
        int st = reap(c[1]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "run %d: survivor status 0x%x", run, st);

        memset(seen, 0, NMSG);
        for (int i = 0; i < 2; i++) {
            unsigned n = atomic_load(&sh->nrec[i]), last = 0;
            for (unsigned k = 0; k < n; k++) {
                unsigned s = atomic_load(&sh->rec[i][k]);
                cr_assert(k == 0 || s > last, "run %d: consumer %d out of order", run, i);
                last = s;
                cr_assert_eq(seen[s], 0, "run %d: message %u delivered twice", run, s);
                seen[s] = 1;
            }
        }
        unsigned char b[MAXLEN];
        size_t n;
        while (conc_mpqueue_get_nowait(q, b, sizeof b, &n) == 0) {
            msg_hdr_t h;
            cr_assert_eq(check_msg(b, n, &h), 0);
            cr_assert_eq(seen[h.seq], 0, "run %d: message %u delivered twice", run, h.seq);
            seen[h.seq] = 1;
        }
        /* at most the one message the victim took and never recorded */
        unsigned missing = 0;
        for (unsigned s = 0; s < NMSG; s++)
            missing += !seen[s];
        cr_assert_leq(missing, 1, "run %d: %u messages lost", run, missing);
        assert_queue_works(q);
        cr_assert_eq(conc_mpqueue_free(q), 0);
    }
    free(seen);
    cr_assert(no_zombie_children());
    cr_assert_eq(count_fds(), fds, "leaked fds");
    munmap(sh, sizeof *sh);
}

/* A process killed while it holds the put lock, in the middle of a large
 * copy (the kill is aimed at a moment the lock word names it): the next
 * put (the next round's child) repairs and goes on. */
Test(ipc_queue_fault, killed_lock_holder_is_recovered, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 1 << 20), 0);
    static unsigned char big[(1 << 20) - 64];
    memset(big, 0x5a, sizeof big);
    int rounds = (int)tu_iters(20);
    for (int r = 0; r < rounds; r++) {
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            die_with_parent();
            for (;;) /* large copies: most of the time is spent with the lock held */
                if (conc_mpqueue_put(q, big, sizeof big, true, 20.0) != 0)
                    _exit(3);
        }
        double until = tu_now() + 0.002 + 0.0007 * (r % 7), give_up = until + 0.15;
        void *p = NULL;
        size_t n = 0;
        /* Consume until the time is up and the child is caught holding
         * the put lock (aim the kill inside its copy), or long past it.
         * Once aiming, each get makes room, then a short random pause
         * lets the child into its next copy before the stop. */
        unsigned seed = (unsigned)r;
        for (;;) {
            double now = tu_now();
            if (now >= until && (now >= give_up || stopped_in_put_lock(q, pid)))
                break;
            if (conc_mpqueue_get_alloc(q, &p, &n, true, 0.001) == 0) {
                cr_assert_eq(n, sizeof big);
                cr_assert(memcmp(p, big, n) == 0);
                free(p);
            }
            if (now >= until)
                tu_sleep((20 + rand_r(&seed) % 200) * 1e-6);
        }
        kill(pid, SIGKILL);
        reap(pid);
        while (conc_mpqueue_get_alloc(q, &p, &n, false, 0) == 0) {
            cr_assert_eq(n, sizeof big);
            cr_assert(memcmp(p, big, n) == 0);
            free(p);
        }
    }
    unsigned long rec = conc_mpqueue_recoveries(q);
    if (!TU_SANITIZED)
        cr_assert_gt(rec, 0, "no kill landed inside a put in %d rounds", rounds);
    assert_queue_works(q);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* Every step of a put's and a get's commit: a process killed there (with
 * the lock held) leaves the message either wholly in the queue (put past
 * its header store; get before its head store) or wholly gone, and the
 * counts agree with what is there. */
extern int conc__mpq_fault_point; /* src/ipc/queue.c, tests only */

Test(ipc_queue_fault, every_commit_step, .timeout = TU_TIMEOUT)
{
    static const struct {
        int step;
        bool put;     /* the victim puts (else gets) */
        bool present; /* the victim's message is in the queue afterwards */
    } cases[] = {
        {1, true, false},  {2, true, false},  {3, true, false},  {4, true, false},
        {5, true, true},   {6, true, true},   {7, true, true},   {11, false, true},
        {12, false, true}, {13, false, false}, {14, false, false}, {15, false, false},
    };
    int fds = count_fds();
    /* Twice: the victim holds the lock plainly (the parent used both sides
     * first, so the victim revoked the parent's bias), then biased (the
     * first traffic came from a helper that closed its handle, so the
     * victim is the first to want the lock and keeps it between
     * operations — and dies inside one). */
    for (size_t i = 0; i < 2 * (sizeof cases / sizeof cases[0]); i++) {
        bool victim_biased = i >= sizeof cases / sizeof cases[0];
        size_t c = i % (sizeof cases / sizeof cases[0]);
        conc_mpqueue_t *q;
        cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_JOINABLE, 0, 4096), 0);
        unsigned char m[MAXLEN], b[MAXLEN];
        /* some traffic first, so positions are not zero and the ring wraps */
        pid_t helper = victim_biased ? fork() : 0;
        cr_assert_neq(helper, -1);
        if (helper == 0) {
            bool ok = true;
            for (uint32_t k = 0; k < 7 && ok; k++) {
                size_t len = make_msg(m, 1, k), n;
                ok = conc_mpqueue_put(q, m, len, true, 1.0) == 0 &&
                     conc_mpqueue_get(q, b, sizeof b, &n, true, 1.0) == 0 &&
                     conc_mpqueue_task_done(q) == 0;
            }
            if (victim_biased)
                _exit(ok && conc_mpqueue_free(q) == 0 ? 0 : 1); /* free gives its biases back */
            cr_assert(ok, "traffic failed");
        } else {
            int hst = reap(helper);
            cr_assert(WIFEXITED(hst) && WEXITSTATUS(hst) == 0, "helper status 0x%x", hst);
        }
        size_t vlen = make_msg(m, 0, 42);
        if (!cases[c].put)
            cr_assert_eq(conc_mpqueue_put(q, m, vlen, true, 1.0), 0);
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            die_with_parent();
            conc__mpq_fault_point = cases[c].step;
            size_t n;
            if (cases[c].put)
                conc_mpqueue_put(q, m, vlen, true, 5.0);
            else
                conc_mpqueue_get(q, b, sizeof b, &n, true, 5.0);
            _exit(0); /* the fault point was not reached */
        }
        int st = reap(pid);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "step %d: the victim did not die there",
                  cases[c].step);
        if (victim_biased && bias_possible()) {
            conc__mpq_side_t *sd = cases[c].put ? &q->shm->put : &q->shm->get;
            uint64_t w = atomic_load((_Atomic uint64_t *)&sd->lock);
            cr_assert((pid_t)(uint32_t)w == pid && (w >> 63) == 1 && atomic_load((_Atomic uint32_t *)&sd->busy) == 1,
                      "step %d: the victim did not die inside a biased operation (lock %#llx)",
                      cases[c].step, (unsigned long long)w);
        }
        /* the next lock holder repairs; the state must be exact */
        size_t want = cases[c].present ? 1 : 0;
        size_t n = 0;
        if (cases[c].put) {
            /* a put takes the put lock first: repair, then its message */
            size_t len = make_msg(m, 1, 100);
            cr_assert_eq(conc_mpqueue_put(q, m, len, true, 1.0), 0);
            cr_assert_eq(conc_mpqueue_recoveries(q), 1, "step %d", cases[c].step);
            cr_assert_eq(conc_mpqueue_qsize(q), want + 1, "step %d: qsize %zu", cases[c].step,
                         conc_mpqueue_qsize(q));
            cr_assert_eq(conc_mpqueue_unfinished_tasks(q), want + 1);
            if (want) {
                cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, 1.0), 0);
                msg_hdr_t h;
                cr_assert_eq(check_msg(b, n, &h), 0);
                cr_assert(h.producer == 0 && h.seq == 42, "step %d", cases[c].step);
            }
            cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, 1.0), 0);
            msg_hdr_t h;
            cr_assert_eq(check_msg(b, n, &h), 0);
            cr_assert(h.producer == 1 && h.seq == 100, "step %d", cases[c].step);
        } else {
            int rc = conc_mpqueue_get(q, b, sizeof b, &n, true, 0.05);
            cr_assert_eq(conc_mpqueue_recoveries(q), 1, "step %d", cases[c].step);
            if (want) {
                cr_assert_eq(rc, 0, "step %d: the message a dead get left is gone", cases[c].step);
                msg_hdr_t h;
                cr_assert_eq(check_msg(b, n, &h), 0);
                cr_assert(h.producer == 0 && h.seq == 42);
            } else {
                cr_assert_eq(rc, CONC_EEMPTY, "step %d: delivered twice", cases[c].step);
            }
            /* the counts must still be exact (qsize clamps at 0) */
            cr_assert_eq(conc_mpqueue_put(q, m, vlen, true, 1.0), 0);
            cr_assert_eq(conc_mpqueue_qsize(q), 1, "step %d: qsize %zu", cases[c].step,
                         conc_mpqueue_qsize(q));
            cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, 1.0), 0);
        }
        cr_assert_eq(conc_mpqueue_qsize(q), 0, "step %d", cases[c].step);
        assert_queue_works(q);
        cr_assert_eq(conc_mpqueue_free(q), 0);
    }
    cr_assert_eq(count_fds(), fds, "leaked fds");
}

/* The side locks record the holder's thread id and tag (pidfs inode or
 * start time). A waiter must not take the lock from a holder that lives,
 * must take it from a zombie, and must not be fooled by a thread id that
 * was reused (same id, another tag). The lock word is forged here to name a live
 * process that never touched the queue. */
Test(ipc_queue_fault, lock_holder_liveness, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 4096), 0);
    conc__mpq_shm_t *s = q->shm;
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        die_with_parent();
        for (;;)
            pause();
    }
    uint64_t tag = conc__ipc_tag(pid, true);
    cr_assert_neq(tag, 0, "no tag (pidfs inode or start time) for a live child");
    uint64_t live = (uint64_t)(uint32_t)pid | (tag & 0x7fffffffu) << 32;
    unsigned char m[64] = {1}, b[64];
    size_t n;

    /* a live holder keeps its lock: the put times out waiting for it */
    atomic_store((_Atomic uint64_t *)&s->put.lock, live);
    double t0 = tu_now();
    cr_assert_eq(conc_mpqueue_put(q, m, sizeof m, true, 0.1), CONC_EFULL);
    cr_assert_geq(tu_now() - t0, 0.09);
    cr_assert_eq(conc_mpqueue_recoveries(q), 0);
    cr_assert_eq(atomic_load((_Atomic uint64_t *)&s->put.lock), live);

    /* the same thread id with another tag: the holder died and its
     * id was reused, so the lock is taken over */
    atomic_store((_Atomic uint64_t *)&s->put.lock, live ^ ((uint64_t)1 << 36));
    t0 = tu_now();
    cr_assert_eq(conc_mpqueue_put(q, m, sizeof m, true, 5.0), 0);
    cr_assert_lt(tu_now() - t0, 1.0, "took %.3f s to take a dead lock over", tu_now() - t0);
    cr_assert_eq(conc_mpqueue_recoveries(q), 1);

    /* a killed holder that nobody reaped yet (a zombie) is dead too */
    cr_assert_eq(kill(pid, SIGKILL), 0);
    cr_assert(TU_WAIT_UNTIL(!conc__ipc_alive(pid, 0), 5.0));
    atomic_store((_Atomic uint64_t *)&s->get.lock, live);
    cr_assert_eq(conc_mpqueue_get(q, b, sizeof b, &n, true, 5.0), 0);
    cr_assert(n == sizeof m && memcmp(b, m, n) == 0);
    cr_assert_eq(conc_mpqueue_recoveries(q), 2);
    int st = reap(pid);
    cr_assert(WIFSIGNALED(st));
    assert_queue_works(q);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}

/* block=false never waits (Python's put_nowait/get_nowait): not even for
 * a side lock that a live process holds and does not let go (stopped,
 * hostile, or forged by a peer). The calls run in a child with an alarm:
 * before the fix they waited for the lock for ever. */
static int nowait_under_held_locks(conc_mpqueue_t *q)
{
    alarm(10);
    unsigned char m[16] = {1}, b[64];
    size_t n;
    double t0 = tu_now();
    int rp = conc_mpqueue_put_nowait(q, m, sizeof m);
    int rg = conc_mpqueue_get_nowait(q, b, sizeof b, &n);
    int rt = conc_mpqueue_put(q, m, sizeof m, false, 5.0); /* block=false: the timeout is ignored */
    double took = tu_now() - t0;
    if (rp != CONC_EFULL)
        return 1;
    if (rg != CONC_EEMPTY)
        return 2;
    if (rt != CONC_EFULL)
        return 3;
    return took < 1.0 ? 0 : 4;
}

Test(ipc_queue_fault, nowait_calls_do_not_wait_for_a_live_holder, .timeout = TU_TIMEOUT)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, 4096), 0);
    conc__mpq_shm_t *s = q->shm;
    unsigned char m[16] = {2};
    cr_assert_eq(conc_mpqueue_put(q, m, sizeof m, true, 1.0), 0); /* a message to get */
    fflush(NULL);
    pid_t holder = fork();
    cr_assert_neq(holder, -1);
    if (holder == 0) {
        die_with_parent();
        for (;;)
            pause();
    }
    uint64_t tag = conc__ipc_tag(holder, true);
    uint64_t live = (uint64_t)(uint32_t)holder | (tag & 0x7fffffffu) << 32;
    atomic_store((_Atomic uint64_t *)&s->put.lock, live);
    atomic_store((_Atomic uint64_t *)&s->get.lock, live);
    fflush(NULL);
    pid_t t = fork();
    cr_assert_neq(t, -1);
    if (t == 0)
        _exit(nowait_under_held_locks(q));
    int st = reap(t);
    kill(holder, SIGKILL);
    reap(holder);
    cr_assert(WIFEXITED(st), "a non-blocking call waited for the lock (killed by signal %d)",
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), 0, "exit %d (1 put_nowait, 2 get_nowait, 3 put(block=false), 4 slow)",
                 WEXITSTATUS(st));
    cr_assert_eq(conc_mpqueue_recoveries(q), 0, "a live holder's lock was not taken");
    atomic_store((_Atomic uint64_t *)&s->put.lock, (uint64_t)0);
    atomic_store((_Atomic uint64_t *)&s->get.lock, (uint64_t)0);
    cr_assert_eq(conc_mpqueue_free(q), 0);
}
