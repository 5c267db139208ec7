/*
 * bench/process_bench.c — the multiprocessing module's benchmark (issue 5,
 * part 1): conc's Process, Pipe, cross-process Queue and shared Value
 * against a bare fork/pipe in C and against CPython's multiprocessing, in
 * the same run.
 *
 * Rows (see bench/README.md):
 *   process.start_join       us per new + start + join + free of a child
 *                            that does nothing (lower is better)
 *                            conc_fork conc_forkserver conc_spawn raw_fork
 *                            python_fork python_forkserver python_spawn
 *   pipe.pingpong            round trips/s of a 16-byte message between the
 *                            parent and a forked child that echoes it
 *                                        conc raw_pipe python
 *   ipc_queue.1p1c           items/s of 64-byte messages from a producer
 *                            process to a consumer process (the parent)
 *                                        conc python
 *   ipc_queue.green_consumer items/s of the same messages from a producer
 *                            process to 100 green threads on the parent's
 *                            one OS thread (issue 11)           conc
 *   ipc_queue.green_ticker_gap  ms: the largest gap a ticker green thread
 *                            beside those consumers saw between its 1 ms
 *                            sleeps, per green_consumer run (lower is
 *                            better)                            conc
 *   shared_value.contended2  locked increments/s of one shared long by two
 *                            processes at once        conc python
 *
 * The impls:
 *   conc_fork, conc_forkserver, conc_spawn
 *            conc_process_new(empty_child, method) + conc_process_start +
 *            conc_process_join(CONC_FOREVER) + exit code check +
 *            conc_process_free, all inside the clock. The fork server is
 *            started by the discarded warm-up run (Python's is started by
 *            its script's warm-up too)
 *   raw_fork fork(); the child _exit(0)s; waitpid in the parent
 *   python_<method>  bench/process_python.py: multiprocessing's
 *            get_context(method).Process(target=empty).start()/.join()
 *   conc (pipe)      two one-way conc_pipe(false) (pipes, like raw_pipe);
 *            conc_conn_send_bytes / conc_conn_recv_bytes_into on both sides
 *   raw_pipe two pipe2()s; write(16) / read until 16 bytes on both sides
 *   python (pipe)    two multiprocessing.Pipe(duplex=False) with
 *            send_bytes / recv_bytes, fork context
 *   conc (queue)     conc_mpqueue_new(CONC_MPQ_QUEUE, no maxsize, default
 *            1 MiB ring); producer conc_mpqueue_put(block, CONC_FOREVER),
 *            consumer conc_mpqueue_get into a 64-byte buffer
 *   conc (green queue) the same producer; the consumer is 100 green
 *            threads (conc_go) on the parent's thread, each in a loop of
 *            conc_mpqueue_get(block, CONC_FOREVER), with a conc_yield()
 *            after every 8th item (it stands for the work a consumer does
 *            between items: a green thread that never blocks would starve
 *            its siblings; a yield per item measures green switches, not
 *            the queue: about 0.35x 1p1c where this is about 0.5x),
 *            until n gets were claimed; every message is checked against
 *            its own sequence number, and the sequence numbers must sum
 *            to n(n-1)/2. A ticker green thread conc_sleep(0.001)s in a
 *            loop and records its largest gap while the clock runs (the
 *            consumers are all parked on the empty queue before it starts)
 *   python (queue)   multiprocessing.Queue() with 64-byte bytes objects,
 *            put / get, fork context
 *   conc (value)     conc_value_new(sizeof(long), 0, lock=true); each child
 *            does conc_value_acquire; ++*(long *)conc_value_ptr(v);
 *            conc_value_release
 *   python (value)   multiprocessing.Value('l', 0) (lock=True, an RLock),
 *            `with v.get_lock(): v.value += 1`, fork context
 *
 * Checks (a run that fails one is FAILED, the program exits 1): every call
 * returns 0 and every child's exit code is 0; each echo carries the round
 * trip's sequence number; the consumer gets every message in order with
 * its sequence number and filler bytes intact; the shared counter ends at
 * exactly 2 x the increments.
 *
 * Timing: the children of the pipe, queue and value rows are started with
 * fork (conc_process CONC_FORK, or fork for raw_pipe) and report ready
 * before the clock starts; they then wait on a gate (a pipe the parent
 * writes to). The pipe row's clock runs in the parent; the queue row's from
 * opening the gate to the consumer's last get; the value row's from
 * opening the gate to the later of the two children's own end times
 * (CLOCK_MONOTONIC is one clock for all processes). Start and exit of the
 * helper processes are never inside the clock (the Python peer does the
 * same).
 *
 * Method as in queue_bench.c: one discarded warm-up run per C impl, then
 * the repetitions interleaved, the order rotated each time; medians. The
 * Python peer is run once per repetition in the rotation (posix_spawn, its
 * own process group); each run warms up on a fraction of the work. A short
 * pause precedes every measurement (--settle). Every measurement runs
 * under a watchdog (alarm): one that takes too long kills its children and
 * the peer's process group and the program exits 1.
 *
 * Usage: process_bench [--reps N] [--scale F] [--only row,row] [--impls a,b] [--settle MS]
 *                      [--jsonl FILE] [--python PYTHON --python-script process_python.py] [--list]
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

#include "conc/base.h"
#include "conc/green.h"
#include "conc/ipc.h"
#include "conc/ipc_queue.h"
#include "conc/process.h"

/* ----------------------------------------------------------- settings */

enum {
    IMPL_CONC_FORK,
    IMPL_CONC_FORKSERVER,
    IMPL_CONC_SPAWN,
    IMPL_RAW_FORK,
    IMPL_PY_FORK,
    IMPL_PY_FORKSERVER,
    IMPL_PY_SPAWN,
    IMPL_CONC,
    IMPL_RAW_PIPE,
    IMPL_PYTHON,
    NIMPLS
};
static const char *impl_names[] = {"conc_fork",   "conc_forkserver",   "conc_spawn", "raw_fork",
                                   "python_fork", "python_forkserver", "python_spawn", "conc",
                                   "raw_pipe",    "python"};

/* Iterations per measurement at --scale 1 (each sized for roughly 0.1 to
 * 0.5 s per run on a quiet 2-core machine; the Python peer's counts are in
 * process_python.py). */
#define START_FORK_N 1000L /* conc_fork, raw_fork */
#define START_FS_N 600L    /* conc_forkserver */
#define START_SPAWN_N 200L /* conc_spawn */
#define PING_N 30000L      /* round trips */
#define QUEUE_N 500000L    /* messages */
#define VALUE_N 1000000L   /* increments per process */
#define PING_SIZE 16
#define QUEUE_MSG 64

static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_only;
static const char *opt_impls;
static long opt_settle_ms = 30;
static const char *opt_jsonl;
static const char *opt_python;
static const char *opt_python_script;

static bool g_warmup; /* the discarded warm-up run: a quarter of the work */

static long scaled(long n)
{
    double f = opt_scale * (g_warmup ? 0.25 : 1.0);
    long v = (long)((double)n * f);
    return v < 1 ? 1 : v;
}

#define FAIL(...) (snprintf(why, whylen, __VA_ARGS__), NAN)

/* ------------------------------------------------------------ watchdog */

/* Children of the current measurement (killed if it hangs) and the Python
 * peer's process group. */
#define MAX_KIDS 4
static volatile pid_t g_kids[MAX_KIDS];
static const char *volatile g_current = "";

static void kids_clear(void)
{
    for (int i = 0; i < MAX_KIDS; i++)
        g_kids[i] = 0;
}

static void kid_add(pid_t pid)
{
    for (int i = 0; i < MAX_KIDS; i++)
        if (g_kids[i] == 0) {
            g_kids[i] = pid;
            return;
        }
}

static void on_alarm(int sig)
{
    (void)sig;
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "\nprocess_bench: %s did not finish in time (a deadlock or a lost wake-up); "
                     "its processes are killed, exiting with status 1\n",
                     g_current);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    for (int i = 0; i < MAX_KIDS; i++)
        if (g_kids[i] > 0)
            kill(g_kids[i], SIGKILL);
    if (bench_peer_pgid > 0)
        kill(-bench_peer_pgid, SIGKILL);
    _exit(1);
}

/* ---------------------------------------------------- shared scratchpad */

/* Bench scaffolding shared with forked children (not the thing measured):
 * the children's own end times and error reports. */
typedef struct scratch {
    double t_end[2];
    long err[2]; /* nonzero: what went wrong in child i (a CONC_E* code or a count) */
} scratch_t;
static scratch_t *g_sh;

/* The gate: each child writes one byte to ready[1] and then reads one byte
 * from gate[0]; the parent reads one ready byte per child, starts the
 * clock and writes one gate byte per child. */
typedef struct gate {
    int ready[2], go[2];
} gate_t;

static int gate_open(gate_t *g)
{
    if (pipe2(g->ready, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(g->go, O_CLOEXEC) != 0) {
        close(g->ready[0]);
        close(g->ready[1]);
        return -1;
    }
    return 0;
}

static void gate_close(gate_t *g)
{
    close(g->ready[0]);
    close(g->ready[1]);
    close(g->go[0]);
    close(g->go[1]);
}

static int full_read(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int full_write(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* In a child: report ready, wait for the gate. */
static int gate_child(gate_t *g)
{
    char c = 'r';
    if (full_write(g->ready[1], &c, 1) != 0)
        return -1;
    return full_read(g->go[0], &c, 1);
}

/* In the parent: wait until n children are ready. */
static int gate_ready(gate_t *g, int n)
{
    char c[4];
    return full_read(g->ready[0], c, (size_t)n);
}

/* In the parent: let n children go. */
static int gate_go(gate_t *g, int n)
{
    char c[4] = {'g', 'g', 'g', 'g'};
    return full_write(g->go[1], c, (size_t)n);
}

/* ---------------------------------------------------- process.start_join */

static int empty_child(const void *arg, size_t len)
{
    (void)arg, (void)len;
    return 0;
}
CONC_REGISTER(empty_child);

static double start_join_conc(conc_start_method_t m, long n, char *why, size_t whylen)
{
    conc_process_opts_t o = {0};
    o.method = m;
    o.name = "bench-empty";
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        conc_process_t *p;
        int rc = conc_process_new(&p, empty_child, NULL, 0, &o);
        if (rc != 0)
            return FAIL("conc_process_new: %s", conc_errname(rc));
        rc = conc_process_start(p);
        if (rc != 0) {
            conc_process_free(p);
            return FAIL("conc_process_start (%s): %s", conc_start_method_name(m), conc_errname(rc));
        }
        kid_add(conc_process_pid(p)); /* for the watchdog (fork-server children too) */
        rc = conc_process_join(p, CONC_FOREVER);
        int code = -999;
        int rc2 = rc == 0 ? conc_process_exitcode(p, &code) : rc;
        conc_process_free(p);
        kids_clear();
        if (rc != 0)
            return FAIL("conc_process_join: %s", conc_errname(rc));
        if (rc2 != 0 || code != 0)
            return FAIL("child %ld: exitcode %s, code %d", i, conc_errname(rc2), code);
    }
    return (bench_now() - t0) / (double)n * 1e6;
}

static double start_join_raw(long n, char *why, size_t whylen)
{
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        fflush(NULL); /* nothing buffered is ever written twice */
        pid_t pid = fork();
        if (pid < 0)
            return FAIL("fork: %s", strerror(errno));
        if (pid == 0)
            _exit(0);
        int st;
        pid_t w;
        while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
        }
        if (w != pid)
            return FAIL("waitpid: %s", strerror(errno));
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return FAIL("child %ld ended with status %#x", i, st);
    }
    return (bench_now() - t0) / (double)n * 1e6;
}

static double row_start_join(int impl, char *why, size_t whylen)
{
    switch (impl) {
    case IMPL_CONC_FORK:
        return start_join_conc(CONC_FORK, scaled(START_FORK_N), why, whylen);
    case IMPL_CONC_FORKSERVER:
        return start_join_conc(CONC_FORKSERVER, scaled(START_FS_N), why, whylen);
    case IMPL_CONC_SPAWN:
        return start_join_conc(CONC_SPAWN, scaled(START_SPAWN_N), why, whylen);
    case IMPL_RAW_FORK:
        return start_join_raw(scaled(START_FORK_N), why, whylen);
    default:
        return FAIL("no such impl");
    }
}

/* ----------------------------------------------------- helpers: children */

/* Start a child with conc (fork) running fn(&arg) and note it for the
 * watchdog. */
static int start_kid(conc_process_fn fn, const void *arg, size_t len, conc_process_t **out, char *why,
                     size_t whylen)
{
    conc_process_opts_t o = {0};
    o.method = CONC_FORK;
    int rc = conc_process_new(out, fn, arg, len, &o);
    if (rc == 0 && (rc = conc_process_start(*out)) != 0) {
        conc_process_free(*out);
        *out = NULL;
    }
    if (rc != 0) {
        snprintf(why, whylen, "starting a child: %s", conc_errname(rc));
        return rc;
    }
    kid_add(conc_process_pid(*out));
    return 0;
}

/* Join and free a child started by start_kid; 0 if it exited with 0. */
static int end_kid(conc_process_t *p, char *why, size_t whylen)
{
    if (!p)
        return 0;
    int code = -999;
    int rc = conc_process_join(p, CONC_FOREVER);
    if (rc == 0)
        rc = conc_process_exitcode(p, &code);
    conc_process_free(p);
    if (rc != 0) {
        snprintf(why, whylen, "joining a child: %s", conc_errname(rc));
        return -1;
    }
    if (code != 0) {
        snprintf(why, whylen, "a child exited with code %d", code);
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------- pipe.pingpong */

static conc_conn_t *g_p2c_r, *g_p2c_w, *g_c2p_r, *g_c2p_w;

typedef struct ping_arg {
    long n;
} ping_arg_t;

/* The echoing child (fork: it uses the parent's handles). */
static int ping_child_conc(const void *arg, size_t len)
{
    (void)len;
    long n = ((const ping_arg_t *)arg)->n;
    conc_conn_close(g_p2c_w); /* the parent's ends */
    conc_conn_close(g_c2p_r);
    char buf[PING_SIZE];
    size_t got;
    if (conc_conn_send_bytes(g_c2p_w, "ready", 5) != 0)
        return 2;
    for (long i = 0; i < n; i++) {
        int rc = conc_conn_recv_bytes_into(g_p2c_r, buf, sizeof buf, &got);
        if (rc != 0 || got != PING_SIZE)
            return 3;
        if (conc_conn_send_bytes(g_c2p_w, buf, got) != 0)
            return 4;
    }
    return 0;
}
CONC_REGISTER(ping_child_conc);

static double ping_conc(long n, char *why, size_t whylen)
{
    int rc = conc_pipe(false, &g_p2c_r, &g_p2c_w);
    if (rc != 0)
        return FAIL("conc_pipe: %s", conc_errname(rc));
    rc = conc_pipe(false, &g_c2p_r, &g_c2p_w);
    if (rc != 0) {
        conc_conn_close(g_p2c_r);
        conc_conn_close(g_p2c_w);
        return FAIL("conc_pipe: %s", conc_errname(rc));
    }
    ping_arg_t a = {n};
    conc_process_t *kid = NULL;
    double res = NAN;
    if (start_kid(ping_child_conc, &a, sizeof a, &kid, why, whylen) != 0)
        goto out;
    conc_conn_close(g_p2c_r); /* the child's ends */
    conc_conn_close(g_c2p_w);
    g_p2c_r = g_c2p_w = NULL;
    char msg[PING_SIZE], back[PING_SIZE + 8];
    size_t got;
    memset(msg, 'p', sizeof msg);
    if ((rc = conc_conn_recv_bytes_into(g_c2p_r, back, sizeof back, &got)) != 0) {
        res = FAIL("waiting for the child: %s", conc_errname(rc));
        goto out;
    }
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        memcpy(msg, &i, sizeof i);
        if ((rc = conc_conn_send_bytes(g_p2c_w, msg, sizeof msg)) != 0) {
            res = FAIL("send_bytes: %s", conc_errname(rc));
            goto out;
        }
        if ((rc = conc_conn_recv_bytes_into(g_c2p_r, back, sizeof back, &got)) != 0) {
            res = FAIL("recv_bytes_into: %s", conc_errname(rc));
            goto out;
        }
        if (got != PING_SIZE || memcmp(back, msg, PING_SIZE) != 0) {
            res = FAIL("round trip %ld: wrong echo (%zu bytes)", i, got);
            goto out;
        }
    }
    res = (double)n / (bench_now() - t0);
out:
    conc_conn_close(g_p2c_w); /* the child sees EOF if it still waits */
    conc_conn_close(g_c2p_r);
    conc_conn_close(g_p2c_r);
    conc_conn_close(g_c2p_w);
    g_p2c_r = g_p2c_w = g_c2p_r = g_c2p_w = NULL;
    {
        char w2[200];
        if (end_kid(kid, w2, sizeof w2) != 0 && !isnan(res))
            res = FAIL("%s", w2);
    }
    return res;
}

static double ping_raw(long n, char *why, size_t whylen)
{
    int p2c[2], c2p[2];
    if (pipe2(p2c, O_CLOEXEC) != 0)
        return FAIL("pipe: %s", strerror(errno));
    if (pipe2(c2p, O_CLOEXEC) != 0) {
        close(p2c[0]);
        close(p2c[1]);
        return FAIL("pipe: %s", strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(p2c[0]), close(p2c[1]), close(c2p[0]), close(c2p[1]);
        return FAIL("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        char buf[PING_SIZE];
        if (full_write(c2p[1], "r", 1) != 0)
            _exit(2);
        for (long i = 0; i < n; i++) {
            if (full_read(p2c[0], buf, sizeof buf) != 0)
                _exit(3);
            if (full_write(c2p[1], buf, sizeof buf) != 0)
                _exit(4);
        }
        _exit(0);
    }
    kid_add(pid);
    close(p2c[0]);
    close(c2p[1]);
    double res = NAN;
    char msg[PING_SIZE], back[PING_SIZE];
    memset(msg, 'p', sizeof msg);
    if (full_read(c2p[0], back, 1) != 0) {
        res = FAIL("the child did not start");
        goto out;
    }
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        memcpy(msg, &i, sizeof i);
        if (full_write(p2c[1], msg, sizeof msg) != 0) {
            res = FAIL("write: %s", strerror(errno));
            goto out;
        }
        if (full_read(c2p[0], back, sizeof back) != 0) {
            res = FAIL("read: %s", errno ? strerror(errno) : "EOF");
            goto out;
        }
        if (memcmp(back, msg, PING_SIZE) != 0) {
            res = FAIL("round trip %ld: wrong echo", i);
            goto out;
        }
    }
    res = (double)n / (bench_now() - t0);
out:
    close(p2c[1]);
    close(c2p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!isnan(res) && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))
        res = FAIL("the echo child ended with status %#x", st);
    return res;
}

static double row_pingpong(int impl, char *why, size_t whylen)
{
    long n = scaled(PING_N);
    return impl == IMPL_CONC ? ping_conc(n, why, whylen) : ping_raw(n, why, whylen);
}

/* --------------------------------------------------------- ipc_queue.1p1c */

static conc_mpqueue_t *g_q;
static gate_t g_gate;

typedef struct qarg {
    long n;
} qarg_t;

/* Message i: its number, then bytes (i + k) mod 256 — copied from a
 * table rather than computed byte by byte, so the producer's and the
 * checking consumer's own work stays small next to the queue's (Python's
 * peer builds its messages before the clock starts). */
static unsigned char g_qpat[QUEUE_MSG + 256]; /* g_qpat[x] == (unsigned char)x */
static void qmsg_fill(unsigned char *m, long i)
{
    if (g_qpat[1] != 1)
        for (int x = 0; x < (int)sizeof g_qpat; x++)
            g_qpat[x] = (unsigned char)x;
    memcpy(m, &i, sizeof i);
    memcpy(m + 8, g_qpat + ((unsigned long)(i + 8) & 0xff), QUEUE_MSG - 8);
}

static int queue_producer(const void *arg, size_t len)
{
    (void)len;
    long n = ((const qarg_t *)arg)->n;
    unsigned char m[QUEUE_MSG];
    if (gate_child(&g_gate) != 0)
        return 2;
    for (long i = 0; i < n; i++) {
        qmsg_fill(m, i);
        int rc = conc_mpqueue_put(g_q, m, sizeof m, true, CONC_FOREVER);
        if (rc != 0) {
            g_sh->err[0] = rc;
            return 3;
        }
    }
    return 0;
}
CONC_REGISTER(queue_producer);

static double row_queue(int impl, char *why, size_t whylen)
{
    (void)impl;
    long n = scaled(QUEUE_N);
    int rc = conc_mpqueue_new(&g_q, CONC_MPQ_QUEUE, 0, 0);
    if (rc != 0)
        return FAIL("conc_mpqueue_new: %s", conc_errname(rc));
    if (gate_open(&g_gate) != 0) {
        conc_mpqueue_free(g_q);
        return FAIL("pipe: %s", strerror(errno));
    }
    memset(g_sh, 0, sizeof *g_sh);
    qarg_t a = {n};
    conc_process_t *kid = NULL;
    double res = NAN;
    if (start_kid(queue_producer, &a, sizeof a, &kid, why, whylen) != 0)
        goto out;
    if (gate_ready(&g_gate, 1) != 0) {
        res = FAIL("the producer did not start");
        goto out;
    }
    unsigned char m[QUEUE_MSG], want[QUEUE_MSG];
    size_t got;
    double t0 = bench_now();
    gate_go(&g_gate, 1);
    for (long i = 0; i < n; i++) {
        rc = conc_mpqueue_get(g_q, m, sizeof m, &got, true, CONC_FOREVER);
        if (rc != 0) {
            res = FAIL("conc_mpqueue_get: %s", conc_errname(rc));
            goto out;
        }
        qmsg_fill(want, i);
        if (got != QUEUE_MSG || memcmp(m, want, QUEUE_MSG) != 0) {
            long seq;
            memcpy(&seq, m, sizeof seq);
            res = FAIL("message %ld: got seq %ld, %zu bytes (lost, reordered or torn)", i, seq, got);
            goto out;
        }
    }
    res = (double)n / (bench_now() - t0);
    if (!conc_mpqueue_empty(g_q))
        res = FAIL("the queue is not empty after %ld gets", n);
out:
    if (kid && isnan(res))
        conc_process_kill(kid); /* it may wait on the gate or a full queue */
    {
        char w2[200];
        if (end_kid(kid, w2, sizeof w2) != 0 && !isnan(res))
            res = FAIL("%s (producer error %s)", w2, g_sh->err[0] ? conc_errname((int)g_sh->err[0]) : "none");
    }
    gate_close(&g_gate);
    conc_mpqueue_free(g_q);
    g_q = NULL;
    return res;
}

/* ---------------------------------------------- ipc_queue.green_consumer */

#define GREEN_CONSUMERS 100
#define GREEN_YIELD_EVERY 8 /* gets between a consumer's yields (see the top) */

typedef struct gq {
    long n;
    long claimed; /* gets started (one OS thread: plain ints) */
    long got;
    unsigned long long seqsum;
    int err;
    long bad;
    bool stop;
    double from; /* the gate opened: gaps count from here */
    double max_gap;
} gq_t;

static void *gq_consumer(void *arg)
{
    gq_t *c = arg;
    unsigned char m[QUEUE_MSG], want[QUEUE_MSG];
    size_t got;
    while (c->claimed < c->n && !c->err) {
        c->claimed++;
        int rc = conc_mpqueue_get(g_q, m, sizeof m, &got, true, CONC_FOREVER);
        if (rc != 0) {
            c->err = rc;
            break;
        }
        long seq;
        memcpy(&seq, m, sizeof seq);
        qmsg_fill(want, seq);
        if (got != QUEUE_MSG || seq < 0 || seq >= c->n || memcmp(m, want, QUEUE_MSG) != 0)
            c->bad++;
        c->seqsum += (unsigned long long)seq;
        if (++c->got % GREEN_YIELD_EVERY == 0)
            conc_yield();
    }
    return NULL;
}

static void *gq_ticker(void *arg)
{
    gq_t *c = arg;
    double last = bench_now();
    while (!c->stop) {
        conc_sleep(0.001);
        double now = bench_now();
        if (c->from > 0 && last >= c->from && now - last > c->max_gap)
            c->max_gap = now - last;
        last = now;
    }
    return NULL;
}

/* The ticker gaps (ms) of the measured runs, for ipc_queue.green_ticker_gap. */
static double g_gaps[64];
static int g_ngaps;

static double row_queue_green(int impl, char *why, size_t whylen)
{
    (void)impl;
    long n = scaled(QUEUE_N);
    int rc = conc_mpqueue_new(&g_q, CONC_MPQ_QUEUE, 0, 0);
    if (rc != 0)
        return FAIL("conc_mpqueue_new: %s", conc_errname(rc));
    if (gate_open(&g_gate) != 0) {
        conc_mpqueue_free(g_q);
        return FAIL("pipe: %s", strerror(errno));
    }
    memset(g_sh, 0, sizeof *g_sh);
    qarg_t a = {n};
    conc_process_t *kid = NULL;
    double res = NAN;
    gq_t c = {.n = n};
    conc_green_t *gs[GREEN_CONSUMERS], *tk = NULL;
    int ng = 0;
    if (start_kid(queue_producer, &a, sizeof a, &kid, why, whylen) != 0)
        goto out;
    if (gate_ready(&g_gate, 1) != 0) {
        res = FAIL("the producer did not start");
        goto out;
    }
    for (; ng < GREEN_CONSUMERS; ng++)
        if ((rc = conc_go(&gs[ng], gq_consumer, &c)) != 0) {
            res = FAIL("conc_go: %s", conc_errname(rc));
            goto out;
        }
    if ((rc = conc_go(&tk, gq_ticker, &c)) != 0) {
        res = FAIL("conc_go: %s", conc_errname(rc));
        goto out;
    }
    conc_sleep(0.02); /* every consumer waits on the empty queue now */
    double t0 = bench_now();
    c.from = t0;
    gate_go(&g_gate, 1);
    rc = conc_green_joinall(gs, (size_t)ng, CONC_FOREVER);
    double t1 = bench_now();
    if (rc != 0)
        res = FAIL("joinall: %s", conc_errname(rc));
    else if (c.err)
        res = FAIL("conc_mpqueue_get: %s", conc_errname(c.err));
    else if (c.bad || c.got != n || c.seqsum != (unsigned long long)n * (unsigned long long)(n - 1) / 2)
        res = FAIL("%ld of %ld messages, %ld torn, sequence sum off: lost or duplicated", c.got, n, c.bad);
    else if (!conc_mpqueue_empty(g_q))
        res = FAIL("the queue is not empty after %ld gets", n);
    else
        res = (double)n / (t1 - t0);
out:
    c.stop = true;
    if (tk) {
        conc_green_join(tk, CONC_FOREVER);
        conc_green_free(tk);
    }
    if (!isnan(res) && !g_warmup && g_ngaps < (int)(sizeof g_gaps / sizeof g_gaps[0]))
        g_gaps[g_ngaps++] = c.max_gap * 1e3;
    if (kid && isnan(res)) {
        conc_process_kill(kid);
        c.err = c.err ? c.err : CONC_EBROKEN;
        for (int i = 0; i < ng; i++)
            conc_green_kill(gs[i], true, 5);
    }
    for (int i = 0; i < ng; i++)
        conc_green_free(gs[i]);
    {
        char w2[200];
        if (end_kid(kid, w2, sizeof w2) != 0 && !isnan(res))
            res = FAIL("%s (producer error %s)", w2, g_sh->err[0] ? conc_errname((int)g_sh->err[0]) : "none");
    }
    gate_close(&g_gate);
    conc_mpqueue_free(g_q);
    g_q = NULL;
    return res;
}

/* ------------------------------------------------ shared_value.contended2 */

static conc_value_t *g_val;

typedef struct varg {
    long n;
    int idx;
} varg_t;

static int value_child(const void *arg, size_t len)
{
    (void)len;
    const varg_t *a = arg;
    if (gate_child(&g_gate) != 0)
        return 2;
    long *cell = conc_value_ptr(g_val);
    for (long i = 0; i < a->n; i++) {
        int rc = conc_value_acquire(g_val, true, CONC_FOREVER);
        if (rc != 0) {
            g_sh->err[a->idx] = rc;
            return 3;
        }
        ++*(volatile long *)cell;
        rc = conc_value_release(g_val);
        if (rc != 0) {
            g_sh->err[a->idx] = rc;
            return 4;
        }
    }
    g_sh->t_end[a->idx] = bench_now();
    return 0;
}
CONC_REGISTER(value_child);

static double row_value(int impl, char *why, size_t whylen)
{
    (void)impl;
    long n = scaled(VALUE_N);
    long zero = 0;
    int rc = conc_value_new(sizeof(long), &zero, true, &g_val);
    if (rc != 0)
        return FAIL("conc_value_new: %s", conc_errname(rc));
    if (gate_open(&g_gate) != 0) {
        conc_value_free(g_val);
        return FAIL("pipe: %s", strerror(errno));
    }
    memset(g_sh, 0, sizeof *g_sh);
    conc_process_t *kid[2] = {NULL, NULL};
    double res = NAN;
    for (int k = 0; k < 2; k++) {
        varg_t a = {n, k};
        if (start_kid(value_child, &a, sizeof a, &kid[k], why, whylen) != 0)
            goto out;
    }
    if (gate_ready(&g_gate, 2) != 0) {
        res = FAIL("the children did not start");
        goto out;
    }
    double t0 = bench_now();
    gate_go(&g_gate, 2);
    char w2[200];
    int bad = 0;
    for (int k = 0; k < 2; k++) {
        if (end_kid(kid[k], w2, sizeof w2) != 0)
            bad = 1;
        kid[k] = NULL;
    }
    if (bad) {
        res = FAIL("%s (child errors %s, %s)", w2, conc_errname((int)g_sh->err[0]), conc_errname((int)g_sh->err[1]));
        goto out;
    }
    long total = *(long *)conc_value_ptr(g_val);
    if (total != 2 * n) {
        res = FAIL("the counter is %ld, not %ld: increments were lost", total, 2 * n);
        goto out;
    }
    double t1 = g_sh->t_end[0] > g_sh->t_end[1] ? g_sh->t_end[0] : g_sh->t_end[1];
    res = (double)(2 * n) / (t1 - t0);
out:
    for (int k = 0; k < 2; k++)
        if (kid[k]) {
            conc_process_kill(kid[k]);
            end_kid(kid[k], w2, sizeof w2);
        }
    gate_close(&g_gate);
    conc_value_free(g_val);
    g_val = NULL;
    return res;
}

/* ------------------------------------------------------------- driver */

typedef double (*measure_fn)(int impl, char *why, size_t whylen);

typedef struct rowdef {
    const char *name;
    const char *unit;
    bool lower_better;
    measure_fn fn;
    unsigned timeout; /* seconds per measurement (at scale 1; grows with --scale) */
    int impls[NIMPLS];
    int nimpls;
} rowdef_t;

static const rowdef_t rowdefs[] = {
    {"process.start_join", "us", true, row_start_join, 60,
     {IMPL_CONC_FORK, IMPL_CONC_FORKSERVER, IMPL_CONC_SPAWN, IMPL_RAW_FORK, IMPL_PY_FORK, IMPL_PY_FORKSERVER,
      IMPL_PY_SPAWN},
     7},
    {"pipe.pingpong", "trips/s", false, row_pingpong, 60, {IMPL_CONC, IMPL_RAW_PIPE, IMPL_PYTHON}, 3},
    {"ipc_queue.1p1c", "items/s", false, row_queue, 60, {IMPL_CONC, IMPL_PYTHON}, 2},
    {"ipc_queue.green_consumer", "items/s", false, row_queue_green, 60, {IMPL_CONC}, 1},
    {"shared_value.contended2", "incr/s", false, row_value, 60, {IMPL_CONC, IMPL_PYTHON}, 2},
};
#define NROWDEFS ((int)(sizeof rowdefs / sizeof rowdefs[0]))

static bool is_python(int impl)
{
    return impl == IMPL_PYTHON || impl == IMPL_PY_FORK || impl == IMPL_PY_FORKSERVER || impl == IMPL_PY_SPAWN;
}

static bool impl_available(int impl, char *why, size_t whylen)
{
    if (!bench_in_list(opt_impls, impl_names[impl])) {
        snprintf(why, whylen, "not selected (--impls %s)", opt_impls);
        return false;
    }
    if (!is_python(impl))
        return true;
    if (!opt_python || !opt_python_script) {
        snprintf(why, whylen, "no Python interpreter given (--python)");
        return false;
    }
    if (access(opt_python, X_OK) != 0) {
        snprintf(why, whylen, "%s not found", opt_python);
        return false;
    }
    return true;
}

/* One Python measurement: the script warms up, measures one run, prints it. */
static double python_once(const char *row, int impl, char *why, size_t whylen)
{
    char scale[32], prow[64];
    snprintf(scale, sizeof scale, "%g", opt_scale);
    if (impl == IMPL_PYTHON)
        snprintf(prow, sizeof prow, "%s", row);
    else /* python_fork -> process.start_join.fork */
        snprintf(prow, sizeof prow, "%s.%s", row, impl_names[impl] + strlen("python_"));
    char *argv[] = {(char *)opt_python, (char *)opt_python_script, "--reps", "1", "--scale", scale, prow, NULL};
    double val;
    int n = bench_run_peer(argv, &val, 1, why, whylen);
    if (n < 0)
        return NAN;
    if (n < 1)
        return FAIL("python peer printed no value");
    return val;
}

static double measure(const rowdef_t *d, int impl, char *why, size_t whylen)
{
    if (opt_settle_ms > 0) {
        struct timespec ts = {(time_t)(opt_settle_ms / 1000), (long)(opt_settle_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    g_current = impl_names[impl];
    unsigned t = (unsigned)((double)d->timeout * (opt_scale > 1 ? opt_scale : 1)) + (is_python(impl) ? 60 : 0);
    kids_clear();
    alarm(t);
    double v = is_python(impl) ? python_once(d->name, impl, why, whylen) : d->fn(impl, why, whylen);
    alarm(0);
    kids_clear();
    return v;
}

static void run_row(const rowdef_t *d)
{
    bench_row_t *r = bench_row_new(d->name, d->unit, d->lower_better);
    bench_impl_t *ims[NIMPLS];
    char why[200];
    fprintf(stderr, "running %s ...\n", d->name);
    for (int i = 0; i < d->nimpls; i++) {
        int impl = d->impls[i];
        ims[i] = bench_impl_add(r, impl_names[impl]);
        why[0] = 0;
        if (!impl_available(impl, why, sizeof why)) {
            bench_impl_note(ims[i], BENCH_SKIPPED, "%s", why);
            continue;
        }
        if (is_python(impl))
            continue; /* the script warms up on every run */
        g_warmup = true;
        double v = measure(d, impl, why, sizeof why); /* discarded */
        g_warmup = false;
        if (isnan(v))
            bench_impl_note(ims[i], BENCH_FAILED, "%s", why);
    }
    for (int rep = 0; rep < opt_reps; rep++) {
        for (int j = 0; j < d->nimpls; j++) {
            int i = (j + rep) % d->nimpls;
            if (ims[i]->status != BENCH_OK)
                continue;
            why[0] = 0;
            double v = measure(d, d->impls[i], why, sizeof why);
            if (isnan(v))
                bench_impl_note(ims[i], BENCH_FAILED, "%s", why);
            else
                bench_impl_record(ims[i], v);
        }
    }
    for (int i = 0; i < r->nimpl; i++)
        if (r->impl[i].status != BENCH_OK)
            fprintf(stderr, "note: %s: %s %s: %s\n", d->name, r->impl[i].name,
                    r->impl[i].status == BENCH_FAILED ? "FAILED" : "skipped", r->impl[i].note);
}

/* The conc impl a peer is compared with: "conc", except in
 * process.start_join, where each start method has its own (raw_fork and
 * python_fork against conc_fork, python_spawn against conc_spawn, ...). */
static const char *conc_for(const char *peer)
{
    if (strcmp(peer, "raw_fork") == 0 || strcmp(peer, "python_fork") == 0)
        return "conc_fork";
    if (strcmp(peer, "python_forkserver") == 0)
        return "conc_forkserver";
    if (strcmp(peer, "python_spawn") == 0)
        return "conc_spawn";
    return "conc";
}

/* median(a) / median(b) on row, NAN without valid measurements. */
static double pair_ratio(const char *row, const char *a, const char *b)
{
    bench_row_t *r = bench_row_find(row);
    bench_impl_t *x = r ? bench_impl_find(r, a) : NULL, *y = r ? bench_impl_find(r, b) : NULL;
    if (!bench_impl_ok(x) || !bench_impl_ok(y))
        return NAN;
    double xv = bench_impl_median(x), yv = bench_impl_median(y);
    return xv > 0 && yv > 0 ? xv / yv : NAN;
}

/* The table: bench_print_header/bench_print_row's layout with columns wide
 * enough for this module's impl and row names, and each peer compared with
 * its conc impl (conc_for), oriented so > 1 means conc did better. */
static void print_table(void)
{
    char a[64], b[64], c[64];
    double l[1] = {-1};
    getloadavg(l, 1);
    printf("\n== process: median of %d reps per impl (reps interleaved, warm-up discarded), %ld CPUs, "
           "load avg %.2f at start, %.2f now ==\n",
           opt_reps, sysconf(_SC_NPROCESSORS_ONLN), bench_load_start, l[0]);
    printf("%-23s %-17s %16s %-7s %27s   %s\n", "bench", "impl", "median", "unit", "min .. max",
           "conc vs peer (>1: conc better)");
    printf("(start_join children do nothing; the other rows' helpers are fork children; "
           "16-byte pings, 64-byte queue messages)\n");
    for (int k = 0; k < bench_nrows; k++) {
        bench_row_t *r = &bench_rows[k];
        for (int i = 0; i < r->nimpl; i++) {
            bench_impl_t *im = &r->impl[i];
            const char *bn = i == 0 ? r->name : "";
            if (!bench_impl_ok(im)) {
                printf("%-23s %-17s %16s %-7s   %s: %s\n", bn, im->name, "-", r->unit,
                       im->status == BENCH_FAILED ? "FAILED" : "skipped", im->note[0] ? im->note : "no measurement");
                continue;
            }
            char range[80];
            snprintf(range, sizeof range, "%s .. %s", bench_fmt_h(b, sizeof b, bench_min(im->vals, im->n)),
                     bench_fmt_h(c, sizeof c, bench_max(im->vals, im->n)));
            printf("%-23s %-17s %16s %-7s %27s", bn, im->name, bench_fmt_h(a, sizeof a, bench_impl_median(im)),
                   r->unit, range);
            if (strncmp(im->name, "conc", 4) != 0) {
                const char *ci = conc_for(im->name);
                double q = pair_ratio(r->name, ci, im->name);
                if (!isnan(q))
                    printf("   %s is %.2fx %s", ci, r->lower_better ? 1 / q : q, im->name);
            }
            printf("\n");
        }
    }
}

/* Target "a's time <= k x b's time" on a time row. */
static void pair_target(bench_tally_t *t, const char *row, const char *a, const char *b, double k)
{
    if (!bench_row_find(row))
        return;
    char text[96];
    snprintf(text, sizeof text, "%s: %s time <= %gx %s", row, a, k, b);
    double q = pair_ratio(row, a, b);
    if (isnan(q)) {
        printf("  [ n/a ] %-52s (no valid measurement)\n", text);
        return;
    }
    int met = q <= k;
    printf("  [%s] %-52s %s takes %.3fx %s\n", met ? " MET " : "MISSED", text, a, q, b);
    t->met += met;
    t->missed += !met;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: process_bench [--reps N] [--scale F] [--only row,row] [--impls impl,impl] [--settle MS]\n"
               "                     [--jsonl FILE] [--python PYTHON --python-script process_python.py] [--list]\n");
}

static void list_rows(void)
{
    for (int k = 0; k < NROWDEFS; k++)
        printf("%s\n", rowdefs[k].name);
}

int main(int argc, char **argv)
{
    CONC_PROCESS_MAIN(argc, argv); /* spawned and fork-server children stop here */

    static const bench_args_t args = {
        .prog = "process_bench", .usage = usage, .list = list_rows, .reps = &opt_reps, .scale = &opt_scale,
        .only = &opt_only, .impls = &opt_impls, .jsonl = &opt_jsonl, .python = &opt_python,
        .python_script = &opt_python_script, .settle_ms = &opt_settle_ms};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    (void)bench_python_targets; /* the targets differ per row (see the end of main) */
    (void)bench_print_header; /* print_table: wider columns for this module's names */
    (void)bench_print_row;

    g_sh = mmap(NULL, sizeof *g_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_sh == MAP_FAILED) {
        fprintf(stderr, "process_bench: mmap: %s\n", strerror(errno));
        return 1;
    }
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    {
        char why[200];
        if (!impl_available(IMPL_PYTHON, why, sizeof why))
            fprintf(stderr, "note: python peers skipped: %s\n", why);
    }

    bench_note_load();
    double t_start = bench_now();
    for (int k = 0; k < NROWDEFS; k++)
        if (bench_in_list(opt_only, rowdefs[k].name))
            run_row(&rowdefs[k]);
    if (bench_nrows == 0) {
        fprintf(stderr, "process_bench: no row matches --only %s\n", opt_only);
        return 2;
    }

    if (g_ngaps > 0) {
        /* the ticker gaps of the green_consumer runs, as a row of their own */
        bench_row_t *r = bench_row_new("ipc_queue.green_ticker_gap", "ms", true);
        bench_impl_t *im = bench_impl_add(r, "conc");
        for (int i = 0; i < g_ngaps; i++)
            bench_impl_record(im, g_gaps[i]);
    }

    print_table();

    printf("\ntargets (issue 5, 2-core machine), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    pair_target(&tally, "process.start_join", "conc_fork", "raw_fork", 1.2);
    pair_target(&tally, "process.start_join", "conc_forkserver", "python_forkserver", 0.1);
    pair_target(&tally, "process.start_join", "conc_spawn", "python_spawn", 0.1);
    bench_target_tally(&tally, "pipe.pingpong", "raw_pipe", 0.9, "pipe.pingpong: conc >= 0.9x raw_pipe");
    bench_target_tally(&tally, "ipc_queue.1p1c", "python", 100.0, "ipc_queue.1p1c: conc >= 100x python");
    bench_target_tally(&tally, "shared_value.contended2", "python", 10.0,
                       "shared_value.contended2: conc >= 10x python");
    if (bench_row_find("ipc_queue.green_consumer")) {
        /* issue 11: green consumers keep up with an OS-thread consumer,
         * and parking them never stalls a sibling */
        bench_row_t *g = bench_row_find("ipc_queue.green_consumer"), *o = bench_row_find("ipc_queue.1p1c");
        bench_impl_t *gi = bench_impl_find(g, "conc"), *oi = o ? bench_impl_find(o, "conc") : NULL;
        const char *text = "ipc_queue.green_consumer: conc >= 0.5x ipc_queue.1p1c conc";
        if (bench_impl_ok(gi) && bench_impl_ok(oi)) {
            double q = bench_impl_median(gi) / bench_impl_median(oi);
            int met = q >= 0.5;
            printf("  [%s] %-52s green is %.2fx os-thread\n", met ? " MET " : "MISSED", text, q);
            tally.met += met;
            tally.missed += !met;
        } else {
            printf("  [ n/a ] %-52s (no valid measurement)\n", text);
        }
        bench_row_t *gr = bench_row_find("ipc_queue.green_ticker_gap");
        bench_impl_t *ti = gr ? bench_impl_find(gr, "conc") : NULL;
        if (bench_impl_ok(ti)) {
            double gap = bench_impl_median(ti);
            int met = gap <= 2.0;
            printf("  [%s] %-52s %.2f ms\n", met ? " MET " : "MISSED", "ipc_queue.green_ticker_gap: <= 2 ms", gap);
            tally.met += met;
            tally.missed += !met;
        }
    }
    int status = bench_finish("process", &tally, opt_jsonl, t_start);
    munmap(g_sh, sizeof *g_sh);
    return status;
}
