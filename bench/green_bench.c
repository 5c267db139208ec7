/*
 * bench/green_bench.c — the green-thread benchmark (issue 7): conc's green
 * threads and cooperative I/O against Boost.Context, Go's goroutines,
 * greenlet, gevent and a plain epoll server, in the same run.
 *
 * Rows (see bench/README.md):
 *   green.switch        ns per switch: two green threads yield to each
 *                       other, 2M times each (4M switches)
 *                       conc boost boost_fiber go greenlet gevent
 *   green.spawn_join    ns per spawn + run of an empty body + join, 1M
 *                       times one after the other
 *                       conc boost boost_fiber go gevent
 *   green.chan_pingpong ns per hand-off: two green threads pass 1..N back
 *                       and forth through two channels (1M round trips,
 *                       2M hand-offs)
 *                       conc go boost_fiber
 *   green.idle_rss      bytes of RSS per idle green thread, 100k alive
 *                       conc go gevent
 *   green.idle_rss_1m   the same with 1M alive
 *                       conc
 *   echo.50conn         round trips/s: 50 loopback TCP connections, 64-byte
 *                       messages, closed loop, 2 s per measurement
 *                       conc epoll go gevent
 *
 * The impls:
 *   conc      switch: two conc_go green threads calling conc_yield, joined
 *             by the main thread (conc_green_join); spawn_join: conc_go +
 *             conc_green_join + conc_green_free; idle: green threads
 *             blocked in conc_event_wait; echo: a green thread per
 *             connection, conc_accept / conc_read / conc_write
 *   boost     Boost.Context fcontext (jump_fcontext between two contexts;
 *             make_fcontext on a stack from pooled_fixedsize_stack for
 *             spawn_join), bench/green_peers.cpp
 *             chan_pingpong: two CONC_FIFO queues of capacity 2 (a ring;
 *             a get on an empty one parks the green thread), the fastest
 *             conc queue for this: CONC_SIMPLE pays a membarrier whenever
 *             a getter goes to sleep, capacity 1 is heap-backed (see
 *             bench/README.md)
 *   boost_fiber  Boost.Fiber on the thread's round_robin scheduler:
 *             this_fiber::yield, fiber + join, buffered_channel<long>(2)
 *             ping-pong; bench/green_peers.cpp
 *   go        bench/green_go/main.go, GOMAXPROCS=1: runtime.Gosched
 *             ping-pong, `go f()` + sync.WaitGroup, unbuffered channel
 *             ping-pong, goroutines blocked on a channel, a goroutine per
 *             connection
 *   greenlet  bench/green_python.py: greenlet.switch ping-pong
 *   gevent    bench/green_python.py: gevent.sleep(0), spawn().join(),
 *             greenlets blocked in Event.wait(), StreamServer
 *   epoll     a plain single-threaded level-triggered epoll echo server in
 *             this file (serve_epoll)
 *
 * Everything that is measured runs on one OS thread, as green threads of
 * one hub do: Go with GOMAXPROCS=1, Python (one interpreter thread), the
 * epoll server single-threaded. echo.50conn runs every server in a process
 * of its own (conc and epoll: this program started again with --serve) and
 * the load generator (one thread, epoll, in this process). Nothing is
 * pinned: the kernel places the server and the load generator, alike for
 * every impl — often on one CPU, where they take turns. Pinning them to
 * one CPU each was measured (2026-12-06): conc vs epoll stayed at parity
 * (0.97-1.07x, both sides then ~90% busy: the row reaches the load
 * generator's limit, which costs about what the epoll server does), while
 * gevent's server got slower (16 against 9-10 us of CPU per round trip),
 * so every peer runs unpinned, at its best. The idle_rss rows start a fresh process per measurement
 * (this program with --child-idle-rss for conc): RSS that an earlier run
 * left behind (pooled stacks, a grown heap) would hide the cost.
 *
 * Method as in the other benches: one discarded warm-up per in-process
 * impl (a quarter of the work; the external peers warm up on a tenth
 * themselves, the echo load generator runs 0.3 s before it counts), then
 * the repetitions interleaved, the order rotated each time; medians.
 * Checks: both sides of a ping-pong count their iterations, and a yield
 * that came back without the other side having run is counted (more than
 * 2 fails the run: a yield that does not switch would look cheap); every
 * body of spawn_join counts its run; every green thread of idle_rss must
 * have started before the RSS is read and must end after the event is set;
 * every echoed message is compared byte for byte with what was sent.
 *
 * Usage: green_bench [--reps N] [--scale F] [--only row,row] [--impls a,b]
 *                    [--jsonl FILE] [--python PY --python-script green_python.py]
 *                    [--go green_go_peer] [--list]
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include "conc/base.h"
#include "conc/queue.h"
#include "conc/sync.h"
#ifdef CONC_BENCH_HAVE_GREEN
#include "conc/green.h"
#endif
#ifdef CONC_BENCH_HAVE_GREEN_IO
#include "conc/io.h"
#endif

/* bench/green_peers.cpp (Boost.Context), or stubs saying why it is absent */
int gpeer_boost_init(char *why, size_t whylen);
int gpeer_boost_switch(long n, char *why, size_t whylen);
int gpeer_boost_spawn_join(long n, char *why, size_t whylen);
int gpeer_fiber_switch(long n, char *why, size_t whylen);
int gpeer_fiber_spawn_join(long n, char *why, size_t whylen);
int gpeer_fiber_chan_pingpong(long n, char *why, size_t whylen);
#if !defined(CONC_BENCH_HAVE_BOOST) || !defined(CONC_BENCH_HAVE_BOOST_FIBER)
static int fiber_missing(char *why, size_t whylen)
{
    snprintf(why, whylen, "not built: CMake found no C++ compiler or no Boost.Fiber (libboost-fiber-dev)");
    return -1;
}
int gpeer_fiber_switch(long n, char *why, size_t whylen)
{
    (void)n;
    return fiber_missing(why, whylen);
}
int gpeer_fiber_spawn_join(long n, char *why, size_t whylen)
{
    (void)n;
    return fiber_missing(why, whylen);
}
int gpeer_fiber_chan_pingpong(long n, char *why, size_t whylen)
{
    (void)n;
    return fiber_missing(why, whylen);
}
#endif
#ifndef CONC_BENCH_HAVE_BOOST
int gpeer_boost_init(char *why, size_t whylen)
{
    snprintf(why, whylen, "not built: CMake found no C++ compiler or no Boost.Context (libboost-context-dev)");
    return 0;
}
int gpeer_boost_switch(long n, char *why, size_t whylen)
{
    (void)n;
    return gpeer_boost_init(why, whylen) - 1;
}
int gpeer_boost_spawn_join(long n, char *why, size_t whylen)
{
    (void)n;
    return gpeer_boost_init(why, whylen) - 1;
}
#endif

extern char **environ;

enum { I_CONC, I_BOOST, I_FIBER, I_GO, I_GREENLET, I_GEVENT, I_EPOLL, NIMPLS };
static const char *impl_names[] = {"conc", "boost", "boost_fiber", "go", "greenlet", "gevent", "epoll"};

#define SWITCH_N 2000000L    /* yields per green thread (C and Go) */
#define SWITCH_PY_N 200000L  /* greenlet switches per greenlet */
#define SWITCH_GEV_N 50000L  /* gevent.sleep(0) per greenlet */
#define SPAWN_N 1000000L     /* spawn + join (C and Go) */
#define SPAWN_GEV_N 20000L   /* gevent.spawn().join() */
#define CHAN_N 1000000L      /* green.chan_pingpong round trips */
#define IDLE_N 100000L       /* green.idle_rss */
#define IDLE_1M_N 1000000L   /* green.idle_rss_1m */
#define ECHO_CONNS 50
#define ECHO_MSG 64
#define ECHO_SECONDS 2.0
#define ECHO_WARM_SECONDS 0.3
#define ECHO_STALL_SECONDS 10.0

static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_only;
static const char *opt_impls;
static const char *opt_jsonl;
static const char *opt_python;
static const char *opt_python_script;
#ifdef CONC_BENCH_GO_PEER
static const char *opt_go = CONC_BENCH_GO_PEER;
#else
static const char *opt_go;
#endif
static char self_exe[4096]; /* this program, for --serve / --child-idle-rss */

static bool g_warmup; /* the discarded warm-up of an in-process impl does a quarter */

static long scaled(long n)
{
    long v = (long)((double)n * opt_scale * (g_warmup ? 0.25 : 1.0));
    return v < 1 ? 1 : v;
}

#define FAIL(...) (snprintf(why, whylen, __VA_ARGS__), NAN)
#define WHY(...) snprintf(why, whylen, __VA_ARGS__)

static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = -1;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &resident) != 2)
            resident = -1;
        fclose(f);
    }
    return resident < 0 ? NAN : (double)resident * (double)sysconf(_SC_PAGESIZE);
}

/* ------------------------------------------------------- child processes */

/* Start argv[0] with stdin and stdout on pipes (posix_spawn: no fork, so
 * no copy-on-write faults in this process afterwards; see futures_bench).
 * *in_fd is the write end of its stdin (close it to tell a server to end),
 * *out_fd the read end of its stdout. Returns the pid or -1 with why. */
static pid_t spawn_child(char *const argv[], int *in_fd, int *out_fd, char *why, size_t whylen)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        snprintf(why, whylen, "pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0); /* dup2 clears CLOEXEC */
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    fflush(stdout);
    fflush(stderr);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        snprintf(why, whylen, "cannot run %s: %s", argv[0], strerror(rc));
        return -1;
    }
    *in_fd = in[1];
    *out_fd = out[0];
    return pid;
}

/* Read one line from fd within timeout seconds. Returns its length, or -1
 * (EOF, error or timeout). */
static int read_line(int fd, char *buf, size_t len, double timeout)
{
    size_t got = 0;
    double end = bench_now() + timeout;
    while (got + 1 < len) {
        int ms = (int)((end - bench_now()) * 1000);
        if (ms <= 0)
            return -1;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t n = read(fd, buf + got, 1);
        if (n <= 0)
            return -1;
        if (buf[got] == '\n') {
            buf[got] = 0;
            return (int)got;
        }
        got++;
    }
    return -1;
}

/* Wait for pid up to timeout seconds, then SIGKILL it. Returns the wait
 * status. */
static int reap(pid_t pid, double timeout)
{
    int st = 0;
    double end = bench_now() + timeout;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return -1;
        if (bench_now() > end) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
            }
            return st;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Run a peer that prints one value and exits. The whole run is bounded
 * (timeout seconds): a peer that hangs is killed and the run fails. */
static double run_peer_value(char *const argv[], double timeout, char *why, size_t whylen)
{
    int in_fd, out_fd;
    pid_t pid = spawn_child(argv, &in_fd, &out_fd, why, whylen);
    if (pid < 0)
        return NAN;
    char line[256];
    int n = read_line(out_fd, line, sizeof line, timeout);
    close(in_fd);
    close(out_fd);
    int st = reap(pid, n < 0 ? 0 : 10);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return FAIL("%s %s exited with %s %d%s", argv[0], argv[1], WIFEXITED(st) ? "status" : "signal",
                    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), n < 0 ? " (no value in time)" : "");
    char *end;
    double v = strtod(line, &end);
    if (n < 0 || end == line)
        return FAIL("%s %s printed no value", argv[0], argv[1]);
    return v;
}

/* In a child started by this program: die with the parent. */
static void child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(1);
}

/* --------------------------------------------------------- conc: switch */

#ifdef CONC_BENCH_HAVE_GREEN
typedef struct pingpong {
    long n;
    long turn;   /* iterations of both, in order */
    long missed; /* yields that came back without the other side running */
    int err;
} pingpong_t;

static void *conc_switch_body(void *arg)
{
    pingpong_t *p = arg;
    for (long i = 0; i < p->n; i++) {
        long before = ++p->turn;
        int rc = conc_yield();
        if (rc != 0) {
            p->err = rc;
            break;
        }
        if (p->turn == before)
            p->missed++;
    }
    return NULL;
}

static double conc_switch(long n, char *why, size_t whylen)
{
    pingpong_t p = {n, 0, 0, 0};
    conc_green_t *a, *b;
    double t0 = bench_now();
    int rc = conc_go(&a, conc_switch_body, &p);
    if (rc != 0)
        return FAIL("conc_go: %s", conc_errname(rc));
    rc = conc_go(&b, conc_switch_body, &p);
    if (rc != 0)
        return FAIL("conc_go: %s", conc_errname(rc));
    int ra = conc_green_join(a, CONC_FOREVER), rb = conc_green_join(b, CONC_FOREVER);
    double t1 = bench_now();
    conc_green_free(a);
    conc_green_free(b);
    if (ra != 0 || rb != 0)
        return FAIL("conc_green_join: %s", conc_errname(ra ? ra : rb));
    if (p.err)
        return FAIL("conc_yield: %s", conc_errname(p.err));
    if (p.turn != 2 * n)
        return FAIL("%ld iterations instead of %ld", p.turn, 2 * n);
    if (p.missed > 2)
        return FAIL("%ld conc_yield calls came back without the other green thread running", p.missed);
    return (t1 - t0) * 1e9 / (double)(2 * n);
}

/* ----------------------------------------------------- conc: spawn_join */

static void *conc_empty_body(void *arg)
{
    ++*(long *)arg;
    return NULL;
}

static double conc_spawn_join(long n, char *why, size_t whylen)
{
    long ran = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        conc_green_t *g;
        int rc = conc_go(&g, conc_empty_body, &ran);
        if (rc != 0)
            return FAIL("conc_go: %s", conc_errname(rc));
        rc = conc_green_join(g, CONC_FOREVER);
        conc_green_free(g);
        if (rc != 0)
            return FAIL("conc_green_join: %s", conc_errname(rc));
    }
    double t1 = bench_now();
    if (ran != n)
        return FAIL("%ld bodies ran instead of %ld", ran, n);
    return (t1 - t0) * 1e9 / (double)n;
}

/* -------------------------------------------------- conc: chan_pingpong */

/* Two green threads hand 1..n back and forth through two conc queues:
 * A puts i on ping and gets it back from pong; B gets from ping and puts
 * what it got on pong. Every get parks the green thread until the other
 * side has put (a hub-local hand-off: no OS thread sleeps). The waits have
 * no timeout, like the other rows' joins (a deadline costs a clock read per
 * wait). */
typedef struct chanpp {
    conc_queue_t *ping, *pong;
    long n, bad, done;
    int err;
} chanpp_t;

static void *chan_a_body(void *arg)
{
    chanpp_t *c = arg;
    for (long i = 1; i <= c->n; i++) {
        void *x = NULL;
        int rc = conc_queue_put(c->ping, (void *)(uintptr_t)i, true, CONC_FOREVER);
        if (rc == 0)
            rc = conc_queue_get(c->pong, &x, true, CONC_FOREVER);
        if (rc != 0) {
            c->err = rc;
            break;
        }
        c->bad += (uintptr_t)x != (uintptr_t)i;
        c->done++;
    }
    return NULL;
}

static void *chan_b_body(void *arg)
{
    chanpp_t *c = arg;
    for (long i = 1; i <= c->n; i++) {
        void *x = NULL;
        int rc = conc_queue_get(c->ping, &x, true, CONC_FOREVER);
        if (rc == 0)
            rc = conc_queue_put(c->pong, x, true, CONC_FOREVER);
        if (rc != 0) {
            c->err = rc;
            break;
        }
    }
    return NULL;
}

/* CONC_FIFO of capacity 2 by default; CONC_BENCH_CHAN=<capacity> measures
 * another capacity (0: CONC_SIMPLE, unbounded), to compare. */
static double conc_chan_pingpong(long n, char *why, size_t whylen)
{
    chanpp_t c = {.n = n};
    const char *k = getenv("CONC_BENCH_CHAN");
    long cap = k ? atol(k) : 2;
    conc_queue_kind_t kind = cap > 0 ? CONC_FIFO : CONC_SIMPLE;
    int rc = conc_queue_new(&c.ping, kind, cap);
    if (rc == 0)
        rc = conc_queue_new(&c.pong, kind, cap);
    if (rc != 0)
        return FAIL("conc_queue_new: %s", conc_errname(rc));
    conc_green_t *a, *b;
    double t0 = bench_now();
    rc = conc_go(&a, chan_a_body, &c);
    if (rc != 0)
        return FAIL("conc_go: %s", conc_errname(rc));
    rc = conc_go(&b, chan_b_body, &c);
    if (rc != 0)
        return FAIL("conc_go: %s", conc_errname(rc));
    int ra = conc_green_join(a, CONC_FOREVER), rb = conc_green_join(b, CONC_FOREVER);
    double t1 = bench_now();
    conc_green_free(a);
    conc_green_free(b);
    conc_queue_free(c.ping, NULL);
    conc_queue_free(c.pong, NULL);
    if (ra != 0 || rb != 0)
        return FAIL("conc_green_join: %s", conc_errname(ra ? ra : rb));
    if (c.err)
        return FAIL("conc_queue_put/get: %s", conc_errname(c.err));
    if (c.bad || c.done != n)
        return FAIL("%ld of %ld round trips came back wrong", c.bad + (n - c.done), n);
    return (t1 - t0) * 1e9 / (double)(2 * n);
}

/* ------------------------------------------ conc: idle_rss (child process) */

static conc_event_t idle_ev;
static atomic_long idle_started;

static void *conc_idle_body(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&idle_started, 1, memory_order_relaxed);
    int rc = conc_event_wait(&idle_ev, CONC_FOREVER);
    return (void *)(intptr_t)(rc == 0 ? 1 : 2);
}

/* green_bench --child-idle-rss N: print the bytes of RSS per green thread
 * with N green threads alive, each blocked in conc_event_wait. The handle
 * array is allocated and touched, and the hub made (one green thread
 * started and joined), before the first reading. */
static int child_idle_rss(long n)
{
    child_setup();
    conc_green_t **gs = calloc((size_t)n, sizeof *gs);
    if (!gs || conc_event_init(&idle_ev) != 0) {
        fprintf(stderr, "green_bench: idle_rss: out of memory\n");
        return 1;
    }
    memset(gs, 0xff, (size_t)n * sizeof *gs);
    long one = 0;
    conc_green_t *g;
    if (conc_go(&g, conc_empty_body, &one) != 0 || conc_green_join(g, CONC_FOREVER) != 0 || one != 1) {
        fprintf(stderr, "green_bench: idle_rss: the first green thread did not run\n");
        return 1;
    }
    conc_green_free(g);
    double before = rss_bytes();
    for (long i = 0; i < n; i++) {
        int rc = conc_go(&gs[i], conc_idle_body, NULL);
        if (rc != 0) {
            fprintf(stderr, "green_bench: idle_rss: conc_go #%ld of %ld: %s\n", i, n, conc_errname(rc));
            return 1;
        }
    }
    double end = bench_now() + 120;
    while (atomic_load(&idle_started) < n) {
        conc_yield();
        if (bench_now() > end) {
            fprintf(stderr, "green_bench: idle_rss: only %ld of %ld green threads started in 120 s\n",
                    atomic_load(&idle_started), n);
            return 1;
        }
    }
    double after = rss_bytes();
    conc_event_set(&idle_ev);
    long bad = 0;
    for (long i = 0; i < n; i++) {
        void *res = NULL;
        int rc = conc_green_get(gs[i], 60, &res);
        bad += rc != 0 || res != (void *)1;
        conc_green_free(gs[i]);
    }
    if (bad) {
        fprintf(stderr, "green_bench: idle_rss: %ld of %ld green threads did not end cleanly\n", bad, n);
        return 1;
    }
    printf("%.4f\n", (after - before) / (double)n);
    return 0;
}
#endif /* CONC_BENCH_HAVE_GREEN */

/* ------------------------------------------------------ echo servers */

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* green_bench --serve epoll: the plain C echo server. One thread, one
 * epoll set, level-triggered; a readable connection gets one read of up to
 * 4096 bytes, written straight back (a short write — which 64-byte
 * messages on loopback never cause — waits for POLLOUT on that fd). */
static int serve_epoll(void)
{
    child_setup();
    int port, lfd = listen_loopback(&port);
    if (lfd < 0) {
        perror("green_bench: epoll server: listen");
        return 1;
    }
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("%d\n", port);
    fflush(stdout);
    char buf[4096];
    struct epoll_event evs[64];
    for (;;) {
        int k = epoll_wait(ep, evs, 64, -1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            perror("green_bench: epoll server: epoll_wait");
            return 1;
        }
        for (int i = 0; i < k; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    int one = 1; /* as conc_tcp_listen's and Go's accepted sockets */
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            ssize_t n = read(fd, buf, sizeof buf);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (n <= 0) {
                close(fd); /* also leaves the epoll set */
                continue;
            }
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(fd, buf + off, (size_t)(n - off));
                if (w > 0) {
                    off += w;
                } else if (w < 0 && errno == EAGAIN) {
                    struct pollfd p = {fd, POLLOUT, 0};
                    poll(&p, 1, 1000);
                } else if (!(w < 0 && errno == EINTR)) {
                    break;
                }
            }
        }
    }
}

#ifdef CONC_BENCH_HAVE_GREEN_IO
/* green_bench --serve conc: the conc echo server, as a user would write
 * it: conc_tcp_listen, then the main context accepts (conc_accept parks it
 * while no connection waits, so the connections' green threads run) and
 * starts a detached green thread per connection that reads up to 4096
 * bytes (conc_read) and writes them back (conc_write_all). */
static void *conc_echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    for (;;) {
        ssize_t n = conc_read(fd, buf, sizeof buf, CONC_FOREVER);
        if (n <= 0 || conc_write_all(fd, buf, (size_t)n, NULL, CONC_FOREVER) != 0)
            break;
    }
    conc_close(fd);
    return NULL;
}

static int serve_conc(void)
{
    child_setup();
    int lfd;
    int rc = conc_tcp_listen("127.0.0.1", 0, 128, &lfd);
    if (rc != 0) {
        fprintf(stderr, "green_bench: conc server: conc_tcp_listen: %s\n", conc_errname(rc));
        return 1;
    }
    printf("%d\n", conc_socket_port(lfd));
    fflush(stdout);
    for (;;) {
        int c = conc_accept(lfd, NULL, NULL, CONC_FOREVER);
        if (c < 0) {
            fprintf(stderr, "green_bench: conc server: conc_accept: %s\n", conc_errname(c));
            return 1;
        }
        rc = conc_go(NULL, conc_echo_conn, (void *)(intptr_t)c);
        if (rc != 0) {
            fprintf(stderr, "green_bench: conc server: conc_go: %s\n", conc_errname(rc));
            return 1;
        }
    }
}
#endif

/* ------------------------------------------------------ load generator */

typedef struct echo_conn {
    int fd;
    uint64_t seq;
    int got;
    unsigned char want[ECHO_MSG];
    unsigned char buf[ECHO_MSG];
} echo_conn_t;

static void echo_fill(echo_conn_t *c, int idx)
{
    uint64_t x = c->seq * 0x9E3779B97F4A7C15ULL ^ (uint64_t)idx;
    for (int i = 0; i < ECHO_MSG; i += 8) {
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ULL;
        memcpy(c->want + i, &x, 8);
    }
}

static int echo_send(echo_conn_t *c)
{
    for (int off = 0; off < ECHO_MSG;) {
        ssize_t w = write(c->fd, c->want + off, (size_t)(ECHO_MSG - off));
        if (w > 0) {
            off += (int)w;
        } else if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {c->fd, POLLOUT, 0};
            poll(&p, 1, 1000);
        } else if (!(w < 0 && errno == EINTR)) {
            return -1;
        }
    }
    return 0;
}

/* The load generator: ECHO_CONNS connections to 127.0.0.1:port, each with
 * one 64-byte message in flight (closed loop: the next goes out when the
 * echo of the last is back in full and matches). One thread, one epoll
 * set. Runs warm seconds uncounted, then counts round trips for secs.
 * Returns round trips/s or NAN with why. */
static double echo_load(int port, double warm, double secs, char *why, size_t whylen)
{
    echo_conn_t *cs = calloc(ECHO_CONNS, sizeof *cs);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    double result = NAN;
    if (!cs || ep < 0) {
        free(cs);
        return FAIL("out of memory / epoll_create1");
    }
    for (int i = 0; i < ECHO_CONNS; i++)
        cs[i].fd = -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < ECHO_CONNS; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cs[i].fd = fd;
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            WHY("connect to 127.0.0.1:%d: %s", port, strerror(errno));
            goto out;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    for (int i = 0; i < ECHO_CONNS; i++) {
        echo_fill(&cs[i], i);
        if (echo_send(&cs[i]) != 0) {
            WHY("write: %s", strerror(errno));
            goto out;
        }
    }
    struct epoll_event evs[ECHO_CONNS];
    long count = 0;
    bool counting = false;
    double start = bench_now(), t0 = start, now = start, last_echo = start;
    for (;;) {
        int k = epoll_wait(ep, evs, ECHO_CONNS, 100);
        if (k < 0 && errno != EINTR) {
            WHY("epoll_wait: %s", strerror(errno));
            goto out;
        }
        now = bench_now();
        if (!counting && now - start >= warm) {
            counting = true;
            count = 0;
            t0 = now;
        }
        if (counting && now - t0 >= secs)
            break;
        if (now - last_echo > ECHO_STALL_SECONDS) {
            WHY("no echo for %.0f s", ECHO_STALL_SECONDS);
            goto out;
        }
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            echo_conn_t *c = &cs[i];
            ssize_t n = read(c->fd, c->buf + c->got, (size_t)(ECHO_MSG - c->got));
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (n <= 0) {
                WHY("connection %d: %s", i, n == 0 ? "closed by the server" : strerror(errno));
                goto out;
            }
            c->got += (int)n;
            if (c->got < ECHO_MSG)
                continue;
            if (memcmp(c->buf, c->want, ECHO_MSG) != 0) {
                WHY("connection %d: message %llu came back different", i, (unsigned long long)c->seq);
                goto out;
            }
            count++;
            last_echo = now;
            c->got = 0;
            c->seq++;
            echo_fill(c, i);
            if (echo_send(c) != 0) {
                WHY("write: %s", strerror(errno));
                goto out;
            }
        }
    }
    if (count == 0)
        WHY("no round trip in %.1f s", secs);
    else
        result = (double)count / (now - t0);
out:
    for (int i = 0; i < ECHO_CONNS; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    close(ep);
    free(cs);
    return result;
}

/* ------------------------------------------------------------------ rows */

static double python_value(const char *impl, const char *row, long n, double timeout, char *why, size_t whylen)
{
    char nb[32];
    snprintf(nb, sizeof nb, "%ld", n);
    char *argv[] = {(char *)opt_python, (char *)opt_python_script, (char *)impl, (char *)row, nb, NULL};
    return run_peer_value(argv, timeout, why, whylen);
}

static double go_value(const char *row, long n, double timeout, char *why, size_t whylen)
{
    char nb[32];
    snprintf(nb, sizeof nb, "%ld", n);
    char *argv[] = {(char *)opt_go, (char *)row, nb, NULL};
    return run_peer_value(argv, timeout, why, whylen);
}

static double timed_boost(int (*fn)(long, char *, size_t), long n, long per, char *why, size_t whylen)
{
    double t0 = bench_now();
    if (fn(n, why, whylen) != 0)
        return NAN;
    return (bench_now() - t0) * 1e9 / (double)(n * per);
}

static double row_switch(int impl, char *why, size_t whylen)
{
    switch (impl) {
#ifdef CONC_BENCH_HAVE_GREEN
    case I_CONC:
        return conc_switch(scaled(SWITCH_N), why, whylen);
#endif
    case I_BOOST:
        return timed_boost(gpeer_boost_switch, scaled(SWITCH_N), 2, why, whylen);
    case I_FIBER:
        return timed_boost(gpeer_fiber_switch, scaled(SWITCH_N), 2, why, whylen);
    case I_GO:
        return go_value("switch", scaled(SWITCH_N), 120, why, whylen);
    case I_GREENLET:
        return python_value("greenlet", "switch", scaled(SWITCH_PY_N), 120, why, whylen);
    case I_GEVENT:
        return python_value("gevent", "switch", scaled(SWITCH_GEV_N), 120, why, whylen);
    }
    return FAIL("impl not built in");
}

static double row_spawn_join(int impl, char *why, size_t whylen)
{
    switch (impl) {
#ifdef CONC_BENCH_HAVE_GREEN
    case I_CONC:
        return conc_spawn_join(scaled(SPAWN_N), why, whylen);
#endif
    case I_BOOST:
        return timed_boost(gpeer_boost_spawn_join, scaled(SPAWN_N), 1, why, whylen);
    case I_FIBER:
        return timed_boost(gpeer_fiber_spawn_join, scaled(SPAWN_N), 1, why, whylen);
    case I_GO:
        return go_value("spawn_join", scaled(SPAWN_N), 120, why, whylen);
    case I_GEVENT:
        return python_value("gevent", "spawn_join", scaled(SPAWN_GEV_N), 120, why, whylen);
    }
    return FAIL("impl not built in");
}

static double row_chan_pingpong(int impl, char *why, size_t whylen)
{
    switch (impl) {
#ifdef CONC_BENCH_HAVE_GREEN
    case I_CONC:
        return conc_chan_pingpong(scaled(CHAN_N), why, whylen);
#endif
    case I_FIBER:
        return timed_boost(gpeer_fiber_chan_pingpong, scaled(CHAN_N), 2, why, whylen);
    case I_GO:
        return go_value("pingpong", scaled(CHAN_N), 120, why, whylen);
    }
    return FAIL("impl not built in");
}

static double idle_rss(int impl, long n, char *why, size_t whylen)
{
    if (n < 1000)
        n = 1000;
    char nb[32];
    snprintf(nb, sizeof nb, "%ld", n);
    switch (impl) {
    case I_CONC: {
        char *argv[] = {self_exe, "--child-idle-rss", nb, NULL};
        return run_peer_value(argv, 300, why, whylen);
    }
    case I_GO:
        return go_value("idle_rss", n, 300, why, whylen);
    case I_GEVENT:
        return python_value("gevent", "idle_rss", n, 300, why, whylen);
    }
    return FAIL("impl not built in");
}

static double row_idle_rss(int impl, char *why, size_t whylen)
{
    return idle_rss(impl, scaled(IDLE_N), why, whylen);
}

static double row_idle_rss_1m(int impl, char *why, size_t whylen)
{
    return idle_rss(impl, scaled(IDLE_1M_N), why, whylen);
}

static double row_echo(int impl, char *why, size_t whylen)
{
    char *argv_conc[] = {self_exe, "--serve", "conc", NULL};
    char *argv_epoll[] = {self_exe, "--serve", "epoll", NULL};
    char *argv_go[] = {(char *)opt_go, "echo", NULL};
    char *argv_gevent[] = {(char *)opt_python, (char *)opt_python_script, "gevent", "echo", NULL};
    char *const *argv = impl == I_CONC    ? argv_conc
                        : impl == I_EPOLL ? argv_epoll
                        : impl == I_GO    ? argv_go
                                          : argv_gevent;
    int in_fd, out_fd;
    pid_t pid = spawn_child(argv, &in_fd, &out_fd, why, whylen);
    if (pid < 0)
        return NAN;
    char line[64];
    int n = read_line(out_fd, line, sizeof line, 30);
    int port = n > 0 ? atoi(line) : 0;
    double v;
    if (port <= 0 || port > 65535) {
        v = FAIL("the %s server printed no port", impl_names[impl]);
    } else {
        double secs = ECHO_SECONDS * opt_scale, warm = ECHO_WARM_SECONDS;
        if (secs < 0.3)
            secs = 0.3;
        if (opt_scale < 1)
            warm = 0.1;
        v = echo_load(port, warm, secs, why, whylen);
    }
    /* the server ends when its stdin closes (or with us: PDEATHSIG for the C
     * servers); it is killed anyway, nothing of it is measured any more */
    close(in_fd);
    close(out_fd);
    kill(pid, SIGKILL);
    int st = reap(pid, 10);
    if (!isnan(v) && WIFEXITED(st) && WEXITSTATUS(st) != 0)
        v = FAIL("the %s server exited with status %d", impl_names[impl], WEXITSTATUS(st));
    return v;
}

/* ------------------------------------------------------------- driver */

typedef double (*measure_fn)(int impl, char *why, size_t whylen);

typedef struct rowdef {
    const char *name;
    const char *unit;
    bool lower_better;
    measure_fn fn;
    int impls[NIMPLS];
    int nimpls;
} rowdef_t;

static const rowdef_t rowdefs[] = {
    {"green.switch", "ns", true, row_switch, {I_CONC, I_BOOST, I_FIBER, I_GO, I_GREENLET, I_GEVENT}, 6},
    {"green.spawn_join", "ns", true, row_spawn_join, {I_CONC, I_BOOST, I_FIBER, I_GO, I_GEVENT}, 5},
    {"green.chan_pingpong", "ns", true, row_chan_pingpong, {I_CONC, I_GO, I_FIBER}, 3},
    {"green.idle_rss", "bytes", true, row_idle_rss, {I_CONC, I_GO, I_GEVENT}, 3},
    {"green.idle_rss_1m", "bytes", true, row_idle_rss_1m, {I_CONC}, 1},
    {"echo.50conn", "rt/s", false, row_echo, {I_CONC, I_EPOLL, I_GO, I_GEVENT}, 4},
};
#define NROWDEFS ((int)(sizeof rowdefs / sizeof rowdefs[0]))

/* The external peers, the in-process ones and the rows that need parts of
 * conc that may not be built yet. */
static bool impl_available(const rowdef_t *d, int impl, char *why, size_t whylen)
{
    if (!bench_in_list(opt_impls, impl_names[impl])) {
        snprintf(why, whylen, "not in --impls");
        return false;
    }
    switch (impl) {
    case I_CONC:
#ifndef CONC_BENCH_HAVE_GREEN
        (void)d;
        snprintf(why, whylen, "conc's green threads (src/green) were not built into this conc");
        return false;
#else
        if (strcmp(d->name, "echo.50conn") == 0) {
#ifndef CONC_BENCH_HAVE_GREEN_IO
            snprintf(why, whylen, "conc's cooperative I/O (conc/io.h) was not built into this conc");
            return false;
#endif
        }
        return true;
#endif
    case I_BOOST:
        return gpeer_boost_init(why, whylen) != 0;
    case I_FIBER:
#if defined(CONC_BENCH_HAVE_BOOST) && defined(CONC_BENCH_HAVE_BOOST_FIBER)
        return true;
#else
        return fiber_missing(why, whylen) == 0;
#endif
    case I_GO:
        if (!opt_go) {
            snprintf(why, whylen, "no Go compiler (golang-go) when the bench was configured");
            return false;
        }
        if (access(opt_go, X_OK) != 0) {
            snprintf(why, whylen, "%s not built (go build failed?)", opt_go);
            return false;
        }
        return true;
    case I_GREENLET:
    case I_GEVENT: {
        if (!opt_python || !opt_python_script) {
            snprintf(why, whylen, "no Python interpreter given (--python)");
            return false;
        }
        if (access(opt_python, X_OK) != 0) {
            snprintf(why, whylen, "%s not found", opt_python);
            return false;
        }
        /* the script says which modules cannot be imported */
        static char missing[512];
        static bool asked;
        if (!asked) {
            asked = true;
            int in_fd, out_fd;
            char *argv[] = {(char *)opt_python, (char *)opt_python_script, "--missing", NULL};
            char w[128];
            pid_t pid = spawn_child(argv, &in_fd, &out_fd, w, sizeof w);
            if (pid >= 0) {
                close(in_fd);
                char line[256];
                while (read_line(out_fd, line, sizeof line, 30) >= 0) {
                    strncat(missing, line, sizeof missing - strlen(missing) - 2);
                    strcat(missing, "\n");
                }
                close(out_fd);
                reap(pid, 10);
            }
        }
        const char *mod = impl == I_GREENLET ? "greenlet:" : "gevent:";
        const char *m = strstr(missing, mod);
        if (m) {
            const char *e = strchr(m, '\n');
            snprintf(why, whylen, "python cannot import it (%.*s); Debian python3-%s", (int)(e ? e - m : 60), m,
                     impl_names[impl]);
            return false;
        }
        return true;
    }
    default:
        return true;
    }
}

/* In-process impls get a discarded warm-up; the external ones warm up
 * themselves, and idle_rss is a fresh process each time. */
static bool wants_warmup(const rowdef_t *d, int impl)
{
    return (impl == I_CONC || impl == I_BOOST || impl == I_FIBER) &&
           (d->fn == row_switch || d->fn == row_spawn_join || d->fn == row_chan_pingpong);
}

static void run_row(const rowdef_t *d)
{
    bench_row_t *r = bench_row_new(d->name, d->unit, d->lower_better);
    bench_impl_t *ims[NIMPLS];
    char why[256];
    fprintf(stderr, "running %s ...\n", d->name);
    for (int i = 0; i < d->nimpls; i++) {
        ims[i] = bench_impl_add(r, impl_names[d->impls[i]]);
        why[0] = 0;
        if (!impl_available(d, d->impls[i], why, sizeof why)) {
            bench_impl_note(ims[i], BENCH_SKIPPED, "%s", why);
            continue;
        }
        if (!wants_warmup(d, d->impls[i]))
            continue;
        g_warmup = true;
        double v = d->fn(d->impls[i], why, sizeof why);
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
            double v = d->fn(d->impls[i], why, sizeof why);
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

/* A target on conc's own value (not a ratio): conc's median <= limit. */
static void target_at_most(bench_tally_t *t, const char *row, double limit, const char *text)
{
    bench_row_t *r = bench_row_find(row);
    if (!r)
        return;
    bench_impl_t *c = bench_impl_find(r, "conc");
    char b[64];
    if (!bench_impl_ok(c)) {
        printf("  [ n/a ] %-52s (no valid measurement)\n", text);
        return;
    }
    double v = bench_impl_median(c);
    int met = v <= limit;
    printf("  [%s] %-52s conc is %s %s\n", met ? " MET " : "MISSED", text, bench_fmt_h(b, sizeof b, v), r->unit);
    t->met += met;
    t->missed += !met;
}

/* A target that a row runs at all for conc. */
static void target_runs(bench_tally_t *t, const char *row, const char *text)
{
    bench_row_t *r = bench_row_find(row);
    if (!r)
        return;
    bench_impl_t *c = bench_impl_find(r, "conc");
    int met = bench_impl_ok(c);
    if (c && c->status == BENCH_SKIPPED) {
        printf("  [ n/a ] %-52s (skipped: %s)\n", text, c->note);
        return;
    }
    printf("  [%s] %-52s %s\n", met ? " MET " : "MISSED", text, met ? "it ran" : c ? c->note : "no conc impl");
    t->met += met;
    t->missed += !met;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: green_bench [--reps N] [--scale F] [--only row,row] [--impls a,b] [--jsonl FILE]\n"
               "                   [--python PY --python-script green_python.py] [--go green_go_peer] [--list]\n");
}

static void list_rows(void)
{
    for (int k = 0; k < NROWDEFS; k++)
        printf("%s\n", rowdefs[k].name);
}

int main(int argc, char **argv)
{
    ssize_t sl = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (sl <= 0) {
        perror("green_bench: readlink /proc/self/exe");
        return 1;
    }
    self_exe[sl] = 0;

    /* the child modes this program is started in by itself */
    if (argc == 3 && strcmp(argv[1], "--serve") == 0) {
        if (strcmp(argv[2], "epoll") == 0)
            return serve_epoll();
#ifdef CONC_BENCH_HAVE_GREEN_IO
        if (strcmp(argv[2], "conc") == 0)
            return serve_conc();
#endif
        fprintf(stderr, "green_bench: no %s server in this build\n", argv[2]);
        return 2;
    }
    if (argc == 3 && strcmp(argv[1], "--child-idle-rss") == 0) {
#ifdef CONC_BENCH_HAVE_GREEN
        return child_idle_rss(atol(argv[2]));
#else
        fprintf(stderr, "green_bench: conc's green threads are not built\n");
        return 2;
#endif
    }

    static const bench_args_t args = {
        .prog = "green_bench", .usage = usage, .list = list_rows, .reps = &opt_reps, .scale = &opt_scale,
        .only = &opt_only, .impls = &opt_impls, .jsonl = &opt_jsonl, .python = &opt_python,
        .python_script = &opt_python_script, .go = &opt_go};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    signal(SIGPIPE, SIG_IGN);
    (void)bench_run_peer;       /* peers are started by spawn_child instead */
    (void)bench_python_targets; /* no "python" impl here: greenlet, gevent */
    (void)rss_bytes;            /* used by the conc child only */

    bench_note_load();
    double t_start = bench_now();
    for (int k = 0; k < NROWDEFS; k++)
        if (bench_in_list(opt_only, rowdefs[k].name))
            run_row(&rowdefs[k]);
    if (bench_nrows == 0) {
        fprintf(stderr, "green_bench: no row matches --only %s\n", opt_only);
        return 2;
    }

    bench_print_header("green", opt_reps);
    printf("(every impl on one OS thread: go with GOMAXPROCS=1; echo: server and load generator in separate "
           "processes, %d connections, %d-byte messages, %.1f s per measurement)\n",
           ECHO_CONNS, ECHO_MSG, ECHO_SECONDS * opt_scale < 0.3 ? 0.3 : ECHO_SECONDS * opt_scale);
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);

    printf("\ntargets (issue 7, 2-core machine), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    bench_target_tally(&tally, "green.switch", "boost", 1.0, "green.switch: conc time <= 1.0x boost");
    bench_target_tally(&tally, "green.spawn_join", "boost", 1.0 / 0.7, "green.spawn_join: conc time <= 0.7x boost");
    target_at_most(&tally, "green.idle_rss", 4200, "green.idle_rss: conc <= 4,200 bytes");
    target_runs(&tally, "green.idle_rss_1m", "green.idle_rss_1m: the 1M row runs");
    bench_target_tally(&tally, "echo.50conn", "epoll", 0.95, "echo.50conn: conc >= 0.95x epoll");
    bench_target_tally(&tally, "echo.50conn", "gevent", 2.0, "echo.50conn: conc >= 2x gevent");
    printf("targets (issue 18: each peer at its best):\n");
    bench_target_tally(&tally, "green.switch", "boost", 1 / 1.5, "green.switch: conc time <= 1.5x boost (raw jump)");
    bench_target_tally(&tally, "green.switch", "boost_fiber", 1 / 0.5, "green.switch: conc time <= 0.5x boost_fiber");
    bench_target_tally(&tally, "green.spawn_join", "boost", 1 / 2.0,
                       "green.spawn_join: conc time <= 2.0x boost (pooled)");
    bench_target_tally(&tally, "green.spawn_join", "boost_fiber", 1 / 0.5,
                       "green.spawn_join: conc time <= 0.5x boost_fiber");
    bench_target_tally(&tally, "green.chan_pingpong", "go", 3.0, "green.chan_pingpong: conc >= 3x go");
    bench_target_tally(&tally, "echo.50conn", "epoll", 1.0, "echo.50conn: conc >= 1.0x epoll");
    printf("  (where conc's time goes on the missed ones: bench/README.md, \"Issue 18\")\n");
    return bench_finish("green", &tally, opt_jsonl, t_start);
}
