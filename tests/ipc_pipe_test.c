/* Pipe / Connection across processes: the behaviours of CPython's
 * _TestConnection (message boundaries, EOF, big messages, poll, too-long
 * messages, bad arguments) with fork children and an exec'd child. */
#include "test_util.h"

#include <signal.h>
#include <sys/time.h>

#include "conc/ipc.h"

/* ---------------------------------------------------------------- tests */

Test(ipc_pipe, bad_arguments, .timeout = TU_TIMEOUT)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, NULL, &b), CONC_EINVAL);
    cr_assert_eq(conc_pipe(true, &a, NULL), CONC_EINVAL);
    cr_assert_eq(conc_conn_from_fd(-1, true, true, &a), CONC_EINVAL);
    cr_assert_eq(conc_conn_from_fd(0, false, false, &a), CONC_EINVAL);
    cr_assert_eq(conc_conn_from_fd(0, true, false, NULL), CONC_EINVAL);
    cr_assert_eq(conc_conn_send_bytes(NULL, "x", 1), CONC_EINVAL);
    void *p;
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes(NULL, &p, &n, 0), CONC_EINVAL);
    cr_assert_eq(conc_conn_recv_bytes_into(NULL, &n, sizeof n, &n), CONC_EINVAL);
    cr_assert_eq(conc_conn_poll(NULL, 0), CONC_EINVAL);
    cr_assert_eq(conc_conn_fileno(NULL), CONC_EINVAL);
    cr_assert_eq(conc_conn_close(NULL), 0);

    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    cr_assert_eq(conc_conn_send_bytes(a, NULL, 3), CONC_EINVAL);
    cr_assert_eq(conc_conn_recv_bytes(b, NULL, &n, 0), CONC_EINVAL);
    cr_assert_eq(conc_conn_poll(b, -0.5), CONC_ETIMEDOUT); /* already up: a check */
    cr_assert_eq(conc_conn_poll(b, NAN), CONC_EINVAL);
    cr_assert_geq(conc_conn_fileno(a), 0);
    cr_assert_neq(conc_conn_fileno(a), conc_conn_fileno(b));
    conc_conn_close(a);
    conc_conn_close(b);
}

Test(ipc_pipe, duplex_both_ways_and_boundaries, .timeout = TU_TIMEOUT)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    cr_assert(conc_conn_readable(a) && conc_conn_writable(a));
    cr_assert(conc_conn_readable(b) && conc_conn_writable(b));
    /* several messages back to back, including an empty one, arrive one
     * by one with their own lengths */
    const char *msgs[] = {"hello", "", "a", "world!!", "x"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(conc_conn_send_bytes(a, msgs[i], strlen(msgs[i])), 0);
    for (int i = 0; i < 5; i++) {
        void *p;
        size_t n;
        cr_assert_eq(conc_conn_recv_bytes(b, &p, &n, 0), 0);
        cr_assert_eq(n, strlen(msgs[i]));
        cr_assert(memcmp(p, msgs[i], n) == 0);
        free(p);
    }
    cr_assert_eq(conc_conn_send_bytes(b, "back", 4), 0);
    char buf[16];
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes_into(a, buf, sizeof buf, &n), 0);
    cr_assert_eq(n, 4);
    cr_assert(memcmp(buf, "back", 4) == 0);
    cr_assert_eq(conc_conn_poll(a, 0), CONC_ETIMEDOUT);
    conc_conn_close(a);
    conc_conn_close(b);
}

Test(ipc_pipe, simplex_directions, .timeout = TU_TIMEOUT)
{
    conc_conn_t *r, *w;
    cr_assert_eq(conc_pipe(false, &r, &w), 0);
    cr_assert(conc_conn_readable(r) && !conc_conn_writable(r));
    cr_assert(!conc_conn_readable(w) && conc_conn_writable(w));
    cr_assert_eq(conc_conn_send_bytes(r, "x", 1), CONC_EINVAL);
    void *p;
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes(w, &p, &n, 0), CONC_EINVAL);
    cr_assert_eq(conc_conn_poll(w, 0), CONC_EINVAL);
    cr_assert_eq(conc_conn_send_bytes(w, "abc", 3), 0);
    cr_assert_eq(conc_conn_recv_bytes(r, &p, &n, 0), 0);
    cr_assert_eq(n, 3);
    free(p);
    conc_conn_close(r);
    conc_conn_close(w);
}

/* The child echoes every message until EOF, then exits 0. */
static int echo_child(void *arg)
{
    conc_conn_t **ends = arg;
    conc_conn_close(ends[0]);
    for (;;) {
        void *p;
        size_t n;
        int rc = conc_conn_recv_bytes(ends[1], &p, &n, 0);
        if (rc == CONC_EEOF)
            return 0;
        if (rc)
            return 10 - rc;
        rc = conc_conn_send_bytes(ends[1], p, n);
        free(p);
        if (rc)
            return 30 - rc;
    }
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 131u + seed) >> 3);
}

Test(ipc_pipe, echo_through_a_fork_child, .timeout = TU_TIMEOUT)
{
    conc_conn_t *ends[2];
    cr_assert_eq(conc_pipe(true, &ends[0], &ends[1]), 0);
    pid_t pid = tu_fork_child(echo_child, ends);
    conc_conn_close(ends[1]);
    /* sizes around the small/large and buffer thresholds */
    size_t sizes[] = {0, 1, 7, 8, 9, 4095, 4096, 4097, 30000, 32768, 65535, 65536, 65537, 200000, 1 << 20};
    unsigned char *buf = malloc(1 << 20), *in = malloc(1 << 20);
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        fill_pattern(buf, sizes[k], (unsigned)k);
        cr_assert_eq(conc_conn_send_bytes(ends[0], buf, sizes[k]), 0);
        size_t n;
        cr_assert_eq(conc_conn_recv_bytes_into(ends[0], in, 1 << 20, &n), 0, "size %zu", sizes[k]);
        cr_assert_eq(n, sizes[k]);
        cr_assert(memcmp(in, buf, n) == 0, "size %zu corrupted", sizes[k]);
    }
    /* many small ones in flight at once keep their boundaries */
    for (int i = 0; i < 200; i++)
        cr_assert_eq(conc_conn_send_bytes(ends[0], &i, sizeof i), 0);
    for (int i = 0; i < 200; i++) {
        int v;
        size_t n;
        cr_assert_eq(conc_conn_recv_bytes_into(ends[0], &v, sizeof v, &n), 0);
        cr_assert_eq(n, sizeof v);
        cr_assert_eq(v, i);
    }
    conc_conn_close(ends[0]); /* child reads EOF and exits 0 */
    cr_assert_eq(tu_wait_child(pid, 20), 0);
    free(buf);
    free(in);
}

/* 16 MiB each way, through a simplex pipe pair, while a timer interrupts
 * both processes' reads and writes (EINTR, partial writes). */
static volatile sig_atomic_t ticks;
static void on_tick(int sig)
{
    (void)sig;
    ticks++;
}

static void start_ticks(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_tick; /* no SA_RESTART: syscalls fail with EINTR */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 500}, {0, 500}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static void stop_ticks(void)
{
    struct itimerval it = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &it, NULL);
    signal(SIGALRM, SIG_IGN);
}

#define BIG (16u << 20)

static int big_child(void *arg)
{
    conc_conn_t **c = arg; /* c[0] child reads, c[1] child writes */
    start_ticks();
    void *p;
    size_t n;
    int rc = conc_conn_recv_bytes(c[0], &p, &n, 0);
    if (rc)
        return 10 - rc;
    if (n != BIG)
        return 40;
    rc = conc_conn_send_bytes(c[1], p, n);
    stop_ticks();
    free(p);
    return rc ? 30 - rc : 0;
}

Test(ipc_pipe, sixteen_mib_survives_partial_writes_and_eintr, .timeout = TU_TIMEOUT)
{
    conc_conn_t *down_r, *down_w, *up_r, *up_w;
    cr_assert_eq(conc_pipe(false, &down_r, &down_w), 0);
    cr_assert_eq(conc_pipe(false, &up_r, &up_w), 0);
    conc_conn_t *cc[2] = {down_r, up_w};
    pid_t pid = tu_fork_child(big_child, cc);
    conc_conn_close(down_r);
    conc_conn_close(up_w);
    unsigned char *buf = malloc(BIG);
    fill_pattern(buf, BIG, 7);
    start_ticks();
    cr_assert_eq(conc_conn_send_bytes(down_w, buf, BIG), 0);
    void *p;
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes(up_r, &p, &n, 0), 0);
    stop_ticks();
    cr_assert_eq(n, BIG);
    cr_assert(memcmp(p, buf, BIG) == 0);
    cr_assert_eq(tu_wait_child(pid, 30), 0);
    free(p);
    free(buf);
    conc_conn_close(down_w);
    conc_conn_close(up_r);
}

static int send_then_exit(void *arg)
{
    conc_conn_t **ends = arg;
    conc_conn_close(ends[0]);
    int rc = conc_conn_send_bytes(ends[1], "last words", 10);
    return rc ? 1 : 0; /* exiting closes the end */
}

Test(ipc_pipe, eof_after_the_peer_closes, .timeout = TU_TIMEOUT)
{
    conc_conn_t *ends[2];
    cr_assert_eq(conc_pipe(true, &ends[0], &ends[1]), 0);
    pid_t pid = tu_fork_child(send_then_exit, ends);
    conc_conn_close(ends[1]);
    cr_assert_eq(tu_wait_child(pid, 20), 0);
    /* what was sent before the close still arrives, then EOF (every time) */
    cr_assert_eq(conc_conn_poll(ends[0], 5.0), 0);
    char buf[32];
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes_into(ends[0], buf, sizeof buf, &n), 0);
    cr_assert_eq(n, 10);
    cr_assert_eq(conc_conn_poll(ends[0], 5.0), 0, "poll reports EOF as readable");
    cr_assert_eq(conc_conn_recv_bytes_into(ends[0], buf, sizeof buf, &n), CONC_EEOF);
    void *p;
    cr_assert_eq(conc_conn_recv_bytes(ends[0], &p, &n, 0), CONC_EEOF);
    cr_assert_null(p);
    conc_conn_close(ends[0]);

    /* simplex: closing the writer gives the reader EOF */
    conc_conn_t *r, *w;
    cr_assert_eq(conc_pipe(false, &r, &w), 0);
    conc_conn_close(w);
    cr_assert_eq(conc_conn_recv_bytes(r, &p, &n, 0), CONC_EEOF);
    conc_conn_close(r);
}

static int half_message_child(void *arg)
{
    int fd = *(int *)arg;
    uint64_t len = 100;
    if (write(fd, &len, sizeof len) != (ssize_t)sizeof len || write(fd, "abc", 3) != 3)
        return 1;
    return 0;
}

Test(ipc_pipe, eof_inside_a_message_breaks_the_connection, .timeout = TU_TIMEOUT)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = tu_fork_child(half_message_child, &fds[1]);
    close(fds[1]);
    cr_assert_eq(tu_wait_child(pid, 20), 0);
    conc_conn_t *r;
    cr_assert_eq(conc_conn_from_fd(fds[0], true, false, &r), 0);
    void *p;
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes(r, &p, &n, 0), CONC_EEOF);
    cr_assert_eq(conc_conn_recv_bytes(r, &p, &n, 0), CONC_EINVAL, "broken after a torn message");
    conc_conn_close(r);
}

Test(ipc_pipe, poll_waits_and_does_not_consume, .timeout = TU_TIMEOUT)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    cr_assert_eq(conc_conn_poll(b, 0), CONC_ETIMEDOUT);
    double t0 = tu_now();
    cr_assert_eq(conc_conn_poll(b, 0.1), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.1);
    cr_assert_eq(conc_conn_send_bytes(a, "12345", 5), 0);
    cr_assert_eq(conc_conn_poll(b, CONC_FOREVER), 0);
    cr_assert_eq(conc_conn_poll(b, 0), 0);
    cr_assert_eq(conc_conn_poll(b, 1.0), 0);
    char buf[8];
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes_into(b, buf, sizeof buf, &n), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(conc_conn_poll(b, 0), CONC_ETIMEDOUT);
    /* two messages in one read: the second is still reported */
    cr_assert_eq(conc_conn_send_bytes(a, "1", 1), 0);
    cr_assert_eq(conc_conn_send_bytes(a, "2", 1), 0);
    tu_sleep(0.01);
    cr_assert_eq(conc_conn_recv_bytes_into(b, buf, sizeof buf, &n), 0);
    cr_assert_eq(buf[0], '1');
    cr_assert_eq(conc_conn_poll(b, 0), 0);
    cr_assert_eq(conc_conn_recv_bytes_into(b, buf, sizeof buf, &n), 0);
    cr_assert_eq(buf[0], '2');
    conc_conn_close(a);
    conc_conn_close(b);
}

static int late_sender(void *arg)
{
    conc_conn_t **ends = arg;
    conc_conn_close(ends[0]);
    tu_sleep(0.2);
    return conc_conn_send_bytes(ends[1], "late", 4) ? 1 : 0;
}

Test(ipc_pipe, poll_wakes_when_another_process_sends, .timeout = TU_TIMEOUT)
{
    conc_conn_t *ends[2];
    cr_assert_eq(conc_pipe(true, &ends[0], &ends[1]), 0);
    pid_t pid = tu_fork_child(late_sender, ends);
    conc_conn_close(ends[1]);
    double t0 = tu_now();
    cr_assert_eq(conc_conn_poll(ends[0], 10.0), 0);
    double dt = tu_now() - t0;
    cr_assert(dt >= 0.1 && dt < 5.0, "poll returned after %.3fs", dt);
    void *p;
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes(ends[0], &p, &n, 0), 0);
    cr_assert_eq(n, 4);
    free(p);
    cr_assert_eq(tu_wait_child(pid, 20), 0);
    conc_conn_close(ends[0]);
}

Test(ipc_pipe, too_long_message_breaks_the_connection, .timeout = TU_TIMEOUT)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    cr_assert_eq(conc_conn_send_bytes(a, "0123456789", 10), 0);
    cr_assert_eq(conc_conn_send_bytes(a, "ok", 2), 0);
    void *p;
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes(b, &p, &n, 9), CONC_ERANGE); /* bad message length */
    cr_assert_null(p);
    cr_assert_eq(conc_conn_recv_bytes(b, &p, &n, 0), CONC_EINVAL, "unusable afterwards");
    cr_assert_eq(conc_conn_poll(b, 0), CONC_EINVAL);
    cr_assert_eq(conc_conn_send_bytes(b, "x", 1), CONC_EINVAL);
    conc_conn_close(b);
    conc_conn_close(a);

    /* exactly the limit is fine */
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    cr_assert_eq(conc_conn_send_bytes(a, "0123456789", 10), 0);
    cr_assert_eq(conc_conn_recv_bytes(b, &p, &n, 10), 0);
    free(p);
    /* recv_into a short buffer: ERANGE with the needed length (BufferTooShort) */
    cr_assert_eq(conc_conn_send_bytes(a, "0123456789", 10), 0);
    char small[4];
    cr_assert_eq(conc_conn_recv_bytes_into(b, small, sizeof small, &n), CONC_ERANGE);
    cr_assert_eq(n, 10);
    cr_assert_eq(conc_conn_recv_bytes_into(b, small, sizeof small, &n), CONC_EINVAL);
    conc_conn_close(b);
    conc_conn_close(a);
}

Test(ipc_pipe, send_to_a_closed_peer_is_epipe_not_sigpipe, .timeout = TU_TIMEOUT)
{
    signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill this test */
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    conc_conn_close(b);
    errno = 0;
    cr_assert_eq(conc_conn_send_bytes(a, "x", 1), CONC_ESYS);
    cr_assert_eq(errno, EPIPE);
    conc_conn_close(a);

    cr_assert_eq(conc_pipe(false, &a, &b), 0);
    conc_conn_close(a);
    static char big[100000];
    errno = 0;
    cr_assert_eq(conc_conn_send_bytes(b, big, sizeof big), CONC_ESYS);
    cr_assert_eq(errno, EPIPE);
    sigset_t pend;
    sigpending(&pend);
    cr_assert_not(sigismember(&pend, SIGPIPE), "no SIGPIPE left pending");
    conc_conn_close(b);
}

/* ------------------------------------------------- an exec'd (spawned) child */

static int scenario(const char *name)
{
    int fd;
    if (sscanf(name, "echo:%d", &fd) != 1)
        return 2;
    conc_conn_t *c;
    if (conc_conn_from_fd(fd, true, true, &c) != 0)
        return 3;
    void *p;
    size_t n;
    if (conc_conn_recv_bytes(c, &p, &n, 0) != 0)
        return 4;
    int rc = conc_conn_send_bytes(c, p, n);
    free(p);
    printf("child echoed %zu bytes\n", n);
    conc_conn_close(c);
    return rc ? 5 : 0;
}

Test(ipc_pipe, spawned_child_gets_a_connection_by_fd, .timeout = TU_TIMEOUT)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    cr_assert_eq(conc_conn_set_inheritable(b, true), 0);
    cr_assert_eq(conc_conn_send_bytes(a, "through exec", 12), 0);
    char name[64], out[256];
    snprintf(name, sizeof name, "echo:%d", conc_conn_fileno(b));
    int st = tu_run_scenario(name, out, sizeof out, NULL);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d: %s", st, out);
    cr_assert(strstr(out, "echoed 12 bytes"), "%s", out);
    char buf[32];
    size_t n;
    cr_assert_eq(conc_conn_recv_bytes_into(a, buf, sizeof buf, &n), 0);
    cr_assert_eq(n, 12);
    cr_assert(memcmp(buf, "through exec", 12) == 0);
    conc_conn_close(a);
    conc_conn_close(b);
}

TU_MAIN_WITH_SCENARIOS(scenario)
