/*
 * io_test.c — cooperative I/O (conc/io.h).
 *
 * Part 1, OS threads (conc__fd_wait polls): read/write/recv/send/accept/
 * connect with timeouts over socketpairs, pipes, loopback TCP (127.0.0.1,
 * ::1 when the machine has it) and Unix sockets (files and abstract names);
 * EOF, partial writes, connection refused, blocking fds, SIGPIPE, timeout
 * scopes, bad fds and bad arguments.
 * Part 2, green threads: see the section below.
 */
#include "test_util.h"

#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "conc/green.h"
#include "conc/io.h"

static void pair(int fds[2]) { cr_assert_eq(conc_socketpair(fds), 0); }

static bool nonblocking(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }
static bool cloexec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

/* A fd number that is surely not open. */
static int closed_fd(void)
{
    int fd = dup(0);
    cr_assert_geq(fd, 0);
    close(fd);
    return fd;
}

/* ======================================================= byte streams */

Test(io, socketpair_roundtrip_and_eof, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    cr_assert(nonblocking(s[0]) && nonblocking(s[1]) && cloexec(s[0]) && cloexec(s[1]));
    cr_assert_eq(conc_write(s[0], "hello", 5, 1.0), 5);
    char buf[16] = {0};
    cr_assert_eq(conc_read(s[1], buf, sizeof buf, 1.0), 5);
    cr_assert_str_eq(buf, "hello");
    cr_assert_eq(conc_send(s[1], "pong", 4, 0, 1.0), 4);
    cr_assert_eq(conc_recv(s[0], buf, 4, MSG_PEEK, 1.0), 4, "peek");
    memset(buf, 0, sizeof buf);
    cr_assert_eq(conc_recv(s[0], buf, sizeof buf, 0, 1.0), 4);
    cr_assert_str_eq(buf, "pong");
    cr_assert_eq(conc_close(s[0]), 0);
    cr_assert_eq(conc_read(s[1], buf, sizeof buf, 1.0), 0, "EOF is 0");
    cr_assert_eq(conc_read(s[1], buf, sizeof buf, 1.0), 0, "EOF stays 0");
    cr_assert_eq(conc_close(s[1]), 0);
}

Test(io, read_timeout_and_zero_timeout, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    char buf[8];
    double t = tu_now();
    cr_assert_eq(conc_read(s[0], buf, sizeof buf, 0.2), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.2);
    t = tu_now();
    cr_assert_eq(conc_recv(s[0], buf, sizeof buf, 0, 0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_read(s[0], buf, sizeof buf, 0), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t, 0.1, "timeout 0 waited");
    /* timeout 0 with data there succeeds */
    cr_assert_eq(write(s[1], "x", 1), 1);
    cr_assert_eq(conc_read(s[0], buf, sizeof buf, 0), 1);
    cr_assert_eq(conc_wait_read(s[0], 0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_wait_write(s[0], 0), 0);
    cr_assert_eq(write(s[1], "y", 1), 1);
    cr_assert_eq(conc_wait_read(s[0], 0), 0);
    cr_assert_eq(conc_wait_read(s[0], 1.0), 0);
    conc_close(s[0]);
    conc_close(s[1]);
}

/* A thread that writes after a delay: the reader must be woken. */
typedef struct {
    int fd;
    double delay;
    const char *msg;
    size_t len;
    atomic_long result;
    char *big;
    size_t big_n;
} io_job_t;

static void delayed_write_fn(void *p, int i)
{
    (void)i;
    io_job_t *j = p;
    tu_sleep(j->delay);
    atomic_store(&j->result, conc_write_all(j->fd, j->msg, j->len, NULL, 5.0));
}

Test(io, blocked_reader_is_woken, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    static io_job_t j;
    static tu_bunch_t b;
    j = (io_job_t){.fd = s[1], .delay = 0.1, .msg = "wake", .len = 4};
    tu_bunch_start(&b, 1, delayed_write_fn, &j);
    char buf[8];
    double t = tu_now();
    size_t got = 0;
    cr_assert_eq(conc_read_exact(s[0], buf, 4, &got, CONC_FOREVER), 0);
    cr_assert_eq(got, 4);
    cr_assert_eq(memcmp(buf, "wake", 4), 0);
    cr_assert_geq(tu_now() - t, 0.1 - TU_EPS);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&j.result), 0);
    conc_close(s[0]);
    conc_close(s[1]);
}

Test(io, partial_write_then_write_all_timeout, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    static char chunk[1 << 16];
    memset(chunk, 'a', sizeof chunk);
    /* fill the socket buffer: conc_write returns partial counts, then times out */
    size_t total = 0;
    ssize_t r;
    int rounds = 0;
    while ((r = conc_write(s[0], chunk, sizeof chunk, 0)) > 0) {
        total += (size_t)r;
        cr_assert_lt(++rounds, 100000);
    }
    cr_assert_eq(r, CONC_ETIMEDOUT);
    cr_assert_gt(total, 0);
    /* write_all keeps what it wrote when the timeout ends it */
    char buf[4096];
    cr_assert_eq(conc_read(s[1], buf, sizeof buf, 1.0), (ssize_t)sizeof buf); /* make some room */
    size_t sent = 12345;
    double t = tu_now();
    cr_assert_eq(conc_write_all(s[0], chunk, sizeof chunk, &sent, 0.2), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.2);
    cr_assert_lt(sent, sizeof chunk);
    cr_assert_eq(conc_sendall(s[0], chunk, sizeof chunk, 0, 0.05), CONC_ETIMEDOUT);
    conc_close(s[0]);
    conc_close(s[1]);
}

static void drain_fn(void *p, int i)
{
    (void)i;
    io_job_t *j = p;
    size_t got = 0;
    int rc = conc_read_exact(j->fd, j->big, j->big_n, &got, 10.0);
    atomic_store(&j->result, rc == 0 ? (long)got : rc);
}

Test(io, write_all_large_with_reader, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    size_t n = 4u << 20;
    char *src = malloc(n);
    static io_job_t j;
    static tu_bunch_t b;
    j = (io_job_t){.fd = s[1], .big = malloc(n), .big_n = n};
    cr_assert(src && j.big);
    for (size_t i = 0; i < n; i++)
        src[i] = (char)(i * 7 + i / 4099);
    tu_bunch_start(&b, 1, drain_fn, &j);
    size_t sent = 0;
    cr_assert_eq(conc_write_all(s[0], src, n, &sent, 10.0), 0);
    cr_assert_eq(sent, n);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&j.result), (long)n);
    cr_assert_eq(memcmp(src, j.big, n), 0, "bytes differ");
    free(src);
    free(j.big);
    conc_close(s[0]);
    conc_close(s[1]);
}

Test(io, read_exact_eof, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    char buf[8];
    size_t got = 99;
    cr_assert_eq(conc_write(s[1], "abc", 3, 1.0), 3);
    cr_assert_eq(conc_read_exact(s[0], buf, 8, &got, 0.1), CONC_ETIMEDOUT);
    cr_assert_eq(got, 3, "bytes read before the timeout are counted");
    conc_close(s[1]);
    cr_assert_eq(conc_read_exact(s[0], buf, 8, &got, 1.0), CONC_EEOF);
    cr_assert_eq(got, 0, "clean EOF between messages");
    cr_assert_eq(conc_read_exact(s[0], buf, 0, &got, 1.0), 0, "n = 0 is done at once");
    conc_close(s[0]);

    pair(s);
    cr_assert_eq(conc_write(s[1], "abc", 3, 1.0), 3);
    conc_close(s[1]);
    cr_assert_eq(conc_read_exact(s[0], buf, 8, &got, 1.0), CONC_EEOF);
    cr_assert_eq(got, 3, "EOF in the middle of a message");
    cr_assert_eq(memcmp(buf, "abc", 3), 0);
    conc_close(s[0]);
}

Test(io, no_sigpipe, .timeout = TU_TIMEOUT)
{
    /* default SIGPIPE disposition: a signal would kill this test */
    signal(SIGPIPE, SIG_DFL);
    int s[2];
    pair(s);
    conc_close(s[1]);
    errno = 0;
    cr_assert_eq(conc_write(s[0], "x", 1, 1.0), CONC_ESYS);
    cr_assert_eq(errno, EPIPE);
    cr_assert_eq(conc_send(s[0], "x", 1, 0, 1.0), CONC_ESYS);
    cr_assert_eq(conc_write_all(s[0], "xy", 2, NULL, 1.0), CONC_ESYS);
    conc_close(s[0]);

    int p[2];
    cr_assert_eq(pipe(p), 0);
    close(p[0]);
    errno = 0;
    cr_assert_eq(conc_write(p[1], "x", 1, 1.0), CONC_ESYS);
    cr_assert_eq(errno, EPIPE);
    /* a caller that blocks SIGPIPE itself keeps its mask */
    sigset_t set, old, now;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    cr_assert_eq(conc_write(p[1], "x", 1, 1.0), CONC_ESYS);
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    cr_assert(sigismember(&now, SIGPIPE));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    conc_close(p[1]);
}

Test(io, pipes_blocking_and_nonblocking, .timeout = TU_TIMEOUT)
{
    char buf[16];
    for (int nb = 0; nb < 2; nb++) {
        int p[2];
        cr_assert_eq(pipe2(p, nb ? O_NONBLOCK : 0), 0);
        /* a blocking pipe must not hang the caller past its timeout */
        double t = tu_now();
        cr_assert_eq(conc_read(p[0], buf, sizeof buf, 0.1), CONC_ETIMEDOUT, "nb=%d", nb);
        tu_assert_timeout(tu_now() - t, 0.1);
        cr_assert_eq(conc_read(p[0], buf, sizeof buf, 0), CONC_ETIMEDOUT);
        cr_assert_eq(conc_write(p[1], "pipe", 4, 0), 4, "nb=%d", nb);
        cr_assert_eq(conc_read(p[0], buf, sizeof buf, 0), 4, "nb=%d: timeout 0 with data", nb);
        cr_assert_eq(memcmp(buf, "pipe", 4), 0);
        /* flags are left alone */
        cr_assert_eq(nonblocking(p[0]), nb == 1);
        cr_assert_eq(conc_recv(p[0], buf, 1, 0, 0), CONC_ESYS, "recv on a pipe");
        cr_assert_eq(errno, ENOTSOCK);
        conc_close(p[1]);
        cr_assert_eq(conc_read(p[0], buf, sizeof buf, 1.0), 0, "EOF");
        conc_close(p[0]);
    }
}

/* ============================================================ sockets */

static void set_tcp(int *lfd, int *port)
{
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 0, 0, lfd), 0);
    *port = conc_socket_port(*lfd);
    cr_assert_gt(*port, 0);
}

static bool nodelay(int fd)
{
    int v = 0;
    socklen_t l = sizeof v;
    return getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &l) == 0 && v;
}

Test(io, tcp_listen_dial_accept_echo, .timeout = TU_TIMEOUT)
{
    int lfd, port;
    set_tcp(&lfd, &port);
    cr_assert(nonblocking(lfd) && cloexec(lfd));
    int c;
    cr_assert_eq(conc_tcp_dial("localhost", port, 2.0, &c), 0);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    int a = conc_accept(lfd, (struct sockaddr *)&peer, &plen, 2.0);
    cr_assert_geq(a, 0, "accept: %s", conc_strerror(a));
    cr_assert_eq(peer.ss_family, AF_INET);
    cr_assert(nonblocking(a) && cloexec(a) && nonblocking(c) && cloexec(c));
    cr_assert(nodelay(c), "dialed socket lacks TCP_NODELAY");
    cr_assert(nodelay(a), "accepted socket lacks TCP_NODELAY");
    char buf[32];
    for (int i = 0; i < 100; i++) {
        int n = snprintf(buf, sizeof buf, "msg %d", i);
        cr_assert_eq(conc_sendall(c, buf, (size_t)n, 0, 2.0), 0);
        char in[32];
        size_t got;
        cr_assert_eq(conc_read_exact(a, in, (size_t)n, &got, 2.0), 0);
        cr_assert_eq(conc_write_all(a, in, got, NULL, 2.0), 0);
        cr_assert_eq(conc_read_exact(c, in, (size_t)n, NULL, 2.0), 0);
        cr_assert_eq(memcmp(in, buf, (size_t)n), 0);
    }
    conc_close(c);
    cr_assert_eq(conc_read(a, buf, sizeof buf, 2.0), 0, "EOF over TCP");
    conc_close(a);
    conc_close(lfd);
}

Test(io, accept_timeout_and_blocking_listener, .timeout = TU_TIMEOUT)
{
    int lfd, port;
    set_tcp(&lfd, &port);
    double t = tu_now();
    cr_assert_eq(conc_accept(lfd, NULL, NULL, 0.2), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.2);
    cr_assert_eq(conc_accept(lfd, NULL, NULL, 0), CONC_ETIMEDOUT);
    conc_close(lfd);

    /* a blocking listening socket made by hand: timeouts still hold */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(s, 8), 0);
    port = conc_socket_port(s);
    t = tu_now();
    cr_assert_eq(conc_accept(s, NULL, NULL, 0.1), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.1);
    int c;
    cr_assert_eq(conc_tcp_dial("127.0.0.1", port, 2.0, &c), 0);
    int acc = conc_accept(s, NULL, NULL, 0);
    cr_assert_geq(acc, 0, "timeout 0 with a connection waiting: %d", acc);
    cr_assert(nonblocking(acc));
    cr_assert_not(nonblocking(s), "listener flags changed");
    conc_close(acc);
    conc_close(c);
    conc_close(s);
}

Test(io, connect_blocking_socket_keeps_its_flags, .timeout = TU_TIMEOUT)
{
    int lfd, port;
    set_tcp(&lfd, &port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(conc_connect(s, (struct sockaddr *)&a, sizeof a, 2.0), 0);
    cr_assert_not(nonblocking(s));
    /* a blocking socket still honours timeouts in recv/read */
    char buf[4];
    double t = tu_now();
    cr_assert_eq(conc_read(s, buf, sizeof buf, 0.1), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.1);
    int acc = conc_accept(lfd, NULL, NULL, 2.0);
    cr_assert_geq(acc, 0);
    cr_assert_eq(conc_write(acc, "ok", 2, 1.0), 2);
    cr_assert_eq(conc_read_exact(s, buf, 2, NULL, 1.0), 0);
    conc_close(acc);
    conc_close(s);
    conc_close(lfd);
}

Test(io, connect_refused, .timeout = TU_TIMEOUT)
{
    int lfd, port;
    set_tcp(&lfd, &port);
    conc_close(lfd);
    int c = -7;
    errno = 0;
    cr_assert_eq(conc_tcp_dial("127.0.0.1", port, 2.0, &c), CONC_ESYS);
    cr_assert_eq(errno, ECONNREFUSED);
    cr_assert_eq(c, -7, "fd written on failure");
}

Test(io, ipv6_loopback, .timeout = TU_TIMEOUT)
{
    int lfd;
    int rc = conc_tcp_listen("::1", 0, 16, &lfd);
    if (rc == CONC_ESYS && (errno == EADDRNOTAVAIL || errno == EAFNOSUPPORT)) {
        cr_log_warn("no IPv6 loopback here: skipped");
        return;
    }
    cr_assert_eq(rc, 0);
    int port = conc_socket_port(lfd);
    cr_assert_gt(port, 0);
    int c;
    cr_assert_eq(conc_tcp_dial("[::1]", port, 2.0, &c), 0);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    int a = conc_accept(lfd, (struct sockaddr *)&peer, &plen, 2.0);
    cr_assert_geq(a, 0);
    cr_assert_eq(peer.ss_family, AF_INET6);
    cr_assert_eq(conc_write(c, "6", 1, 1.0), 1);
    char b;
    cr_assert_eq(conc_read(a, &b, 1, 1.0), 1);
    cr_assert_eq(b, '6');
    conc_close(a);
    conc_close(c);
    conc_close(lfd);
}

static void unix_roundtrip(const char *path)
{
    int lfd, c;
    cr_assert_eq(conc_unix_listen(path, 0, &lfd), 0, "%s", path);
    cr_assert_eq(conc_socket_port(lfd), CONC_EINVAL, "a Unix socket has no port");
    cr_assert_eq(conc_unix_dial(path, 2.0, &c), 0);
    int a = conc_accept(lfd, NULL, NULL, 2.0);
    cr_assert_geq(a, 0);
    cr_assert_eq(conc_write_all(c, "unix", 4, NULL, 1.0), 0);
    char buf[4];
    cr_assert_eq(conc_read_exact(a, buf, 4, NULL, 1.0), 0);
    cr_assert_eq(memcmp(buf, "unix", 4), 0);
    conc_close(a);
    conc_close(c);
    conc_close(lfd);
}

Test(io, unix_sockets, .timeout = TU_TIMEOUT)
{
    char dir[64], path[128], abs[64];
    snprintf(dir, sizeof dir, "/tmp/io-test-%d", (int)getpid());
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/sock", dir);
    unlink(path);
    unix_roundtrip(path);
    /* the file stays: listening again is EADDRINUSE, until unlinked */
    int lfd;
    cr_assert_eq(conc_unix_listen(path, 0, &lfd), CONC_ESYS);
    cr_assert_eq(errno, EADDRINUSE);
    int c;
    cr_assert_eq(conc_unix_dial(path, 1.0, &c), CONC_ESYS, "nobody listens");
    cr_assert_eq(errno, ECONNREFUSED);
    unlink(path);
    cr_assert_eq(conc_unix_dial(path, 1.0, &c), CONC_ESYS);
    cr_assert_eq(errno, ENOENT);
    rmdir(dir);

    snprintf(abs, sizeof abs, "@conc-io-test-%d", (int)getpid());
    unix_roundtrip(abs);
    cr_assert_eq(conc_unix_dial(abs, 1.0, &c), CONC_ESYS);
    cr_assert_eq(errno, ECONNREFUSED);
}

static void accept_later_fn(void *p, int i)
{
    (void)i;
    io_job_t *j = p;
    tu_sleep(j->delay);
    int n = 0;
    for (size_t k = 0; k < j->len; k++) {
        int a = conc_accept(j->fd, NULL, NULL, 2.0);
        if (a < 0)
            break;
        conc_close(a);
        n++;
    }
    atomic_store(&j->result, n);
}

Test(io, unix_backlog_full_waits, .timeout = TU_TIMEOUT)
{
    char abs[64];
    snprintf(abs, sizeof abs, "@conc-io-backlog-%d", (int)getpid());
    int lfd;
    cr_assert_eq(conc_unix_listen(abs, 1, &lfd), 0);
    int c[8];
    int n = 0, rc = 0;
    double t = 0;
    /* fill the backlog until a dial has to wait; it must time out */
    for (; n < 8; n++) {
        t = tu_now();
        if ((rc = conc_unix_dial(abs, 0.2, &c[n])) != 0)
            break;
    }
    cr_assert_eq(rc, CONC_ETIMEDOUT, "dial %d: %s", n, conc_strerror(rc));
    tu_assert_timeout(tu_now() - t, 0.2);
    cr_assert_geq(n, 1);
    /* a timeout scope cuts the back-off the same way */
    int extra;
    cr_assert_eq(conc_timeout_begin(0.1), 0);
    t = tu_now();
    cr_assert_eq(conc_unix_dial(abs, CONC_FOREVER, &extra), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    tu_assert_timeout(tu_now() - t, 0.1);
    /* once someone accepts, a waiting dial gets through */
    static io_job_t j;
    static tu_bunch_t b;
    j = (io_job_t){.fd = lfd, .delay = 0.1, .len = (size_t)n + 1};
    tu_bunch_start(&b, 1, accept_later_fn, &j);
    cr_assert_eq(conc_unix_dial(abs, 5.0, &extra), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&j.result), n + 1);
    conc_close(extra);
    for (int i = 0; i < n; i++)
        conc_close(c[i]);
    conc_close(lfd);
}

/* ================================================= timeout scopes */

Test(io, timeout_scope_cuts_io_waits, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    char buf[4];
    cr_assert_eq(conc_timeout_begin(0.15), 0);
    double t = tu_now();
    cr_assert_eq(conc_read(s[0], buf, sizeof buf, CONC_FOREVER), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.15);
    cr_assert_eq(conc_timeout_end(), 1, "the scope fired");

    /* the call's own shorter timeout is not the scope's */
    cr_assert_eq(conc_timeout_begin(5.0), 0);
    cr_assert_eq(conc_read(s[0], buf, sizeof buf, 0.05), CONC_ETIMEDOUT);
    cr_assert_eq(conc_write(s[1], "z", 1, CONC_FOREVER), 1, "scope not fired: I/O still works");
    cr_assert_eq(conc_read(s[0], buf, sizeof buf, CONC_FOREVER), 1);
    cr_assert_eq(conc_timeout_end(), 0);

    int lfd, port;
    set_tcp(&lfd, &port);
    cr_assert_eq(conc_timeout_begin(0.1), 0);
    t = tu_now();
    cr_assert_eq(conc_accept(lfd, NULL, NULL, CONC_FOREVER), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.1);
    cr_assert_eq(conc_timeout_end(), 1);

    cr_assert_eq(conc_timeout_begin(0.1), 0);
    cr_assert_eq(conc_wait_read(s[0], CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    conc_close(lfd);
    conc_close(s[0]);
    conc_close(s[1]);
}

/* ================================================ bad input */

Test(io, bad_fds_and_arguments, .timeout = TU_TIMEOUT)
{
    char buf[4];
    int bad = closed_fd();
    cr_assert_eq(conc_read(-1, buf, 4, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_write(-1, buf, 4, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_recv(-1, buf, 4, 0, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_send(-1, buf, 4, 0, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_accept(-1, NULL, NULL, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_close(-1), CONC_EINVAL);
    cr_assert_eq(conc_wait_read(-1, 1.0), CONC_EINVAL);
    errno = 0;
    cr_assert_eq(conc_read(bad, buf, 4, 1.0), CONC_ESYS);
    cr_assert_eq(errno, EBADF);
    cr_assert_eq(conc_write(bad, buf, 4, 1.0), CONC_ESYS);
    cr_assert_eq(errno, EBADF);
    cr_assert_eq(conc_accept(bad, NULL, NULL, 1.0), CONC_ESYS);
    cr_assert_eq(conc_read_exact(bad, buf, 4, NULL, 1.0), CONC_ESYS);
    cr_assert_eq(conc_close(bad), CONC_ESYS);
    cr_assert_eq(errno, EBADF);
    cr_assert_eq(conc_wait_read(bad, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_socket_port(bad), CONC_ESYS);
    struct sockaddr_in a = {.sin_family = AF_INET};
    cr_assert_eq(conc_connect(bad, (struct sockaddr *)&a, sizeof a, 1.0), CONC_ESYS);

    int s[2];
    pair(s);
    cr_assert_eq(conc_read(s[0], NULL, 4, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_read(s[0], buf, (size_t)SSIZE_MAX + 1, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_read(s[0], buf, 4, -2.0), CONC_EINVAL);
    cr_assert_eq(conc_read(s[0], buf, 4, -1.0), CONC_EINVAL); /* settimeout(-1): ValueError */
    cr_assert_eq(conc_read(s[0], buf, 4, NAN), CONC_EINVAL);
    cr_assert_eq(conc_write_all(s[0], NULL, 1, NULL, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_connect(s[0], NULL, 0, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_accept(s[0], (struct sockaddr *)&a, NULL, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_accept(s[0], NULL, NULL, 1.0), CONC_ESYS, "accept on a connected socket");
    cr_assert_neq(conc_read(s[0], NULL, 0, 0), CONC_EINVAL, "NULL with n = 0 is fine");
    conc_close(s[0]);
    conc_close(s[1]);

    int fd = 12345;
    cr_assert_eq(conc_tcp_listen("example.com", 0, 0, &fd), CONC_EINVAL, "names are not resolved");
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 70000, 0, &fd), CONC_EINVAL);
    cr_assert_eq(conc_tcp_listen("127.0.0.1", -1, 0, &fd), CONC_EINVAL);
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 0, -1, &fd), CONC_EINVAL);
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 0, 0, NULL), CONC_EINVAL);
    cr_assert_eq(conc_tcp_dial("127.0.0.1", 1, NAN, &fd), CONC_EINVAL);
    cr_assert_eq(conc_tcp_dial("[::1", 1, 1.0, &fd), CONC_EINVAL);
    cr_assert_eq(conc_unix_listen(NULL, 0, &fd), CONC_EINVAL);
    cr_assert_eq(conc_unix_listen("", 0, &fd), CONC_EINVAL);
    cr_assert_eq(conc_unix_listen("@", 0, &fd), CONC_EINVAL);
    char longp[200];
    memset(longp, 'p', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    longp[0] = '/';
    cr_assert_eq(conc_unix_listen(longp, 0, &fd), CONC_EINVAL);
    cr_assert_eq(conc_unix_dial(longp, 1.0, &fd), CONC_EINVAL);
    cr_assert_eq(conc_socketpair(NULL), CONC_EINVAL);
    cr_assert_eq(fd, 12345, "fd written on failure");
    cr_assert_eq(conc_socket_port(-1), CONC_EINVAL);
}

/* ================================================== green threads
 *
 * The hub parks a green thread on epoll while its fd is not ready; these
 * tests check that siblings run meanwhile, that kills and timeout scopes
 * reach a green thread blocked in I/O, and an echo server with a green
 * thread per connection serving 1,000 concurrent clients. Green threads
 * record what they saw; the test's own context asserts. */

#define PTR(x) ((void *)(intptr_t)(x))
#define INT(p) ((int)(intptr_t)(p))

/* Raise the soft fd limit to the hard one; returns the soft limit. */
static long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1L << 20 : (long)rl.rlim_cur;
}

/* conc_green_get, asserting a clean end; returns fn's result as an int. */
static int green_result(conc_green_t *g, double timeout)
{
    void *r = PTR(-999);
    int rc = conc_green_get(g, timeout, &r);
    cr_assert_eq(rc, 0, "green thread did not end cleanly: %s", conc_strerror(rc));
    conc_green_free(g);
    return INT(r);
}

/* ---- a green thread blocked in conc_read while its siblings run */

typedef struct {
    int rfd, wfd;
    double timeout;
    atomic_int ticks;      /* sibling progress */
    atomic_int ticks_seen; /* ticks when the reader woke */
    double took;
} green_rd_t;

static void *green_reader(void *arg)
{
    green_rd_t *r = arg;
    char buf[8];
    double t = tu_now();
    ssize_t n = conc_read(r->rfd, buf, sizeof buf, r->timeout);
    r->took = tu_now() - t;
    atomic_store(&r->ticks_seen, atomic_load(&r->ticks));
    return PTR(n);
}

static void *green_ticker(void *arg)
{
    green_rd_t *r = arg;
    for (int i = 0; i < 50; i++) {
        atomic_fetch_add(&r->ticks, 1);
        int rc = conc_sleep(i % 2 ? 0 : 0.001);
        if (rc != 0)
            return PTR(rc);
    }
    return PTR(r->wfd >= 0 ? conc_write(r->wfd, "go", 2, 1.0) : 0);
}

Test(io_green, blocked_reader_lets_siblings_run, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    static green_rd_t r;
    r = (green_rd_t){.rfd = s[0], .wfd = s[1], .timeout = 10.0};
    conc_green_t *a, *b;
    cr_assert_eq(conc_go(&a, green_reader, &r), 0);
    cr_assert_eq(conc_go(&b, green_ticker, &r), 0);
    cr_assert_eq(green_result(b, 10.0), 2, "the ticker's write");
    cr_assert_eq(green_result(a, 10.0), 2, "the reader got the bytes");
    cr_assert_eq(atomic_load(&r.ticks_seen), 50, "the reader woke before its sibling wrote");
    conc_close(s[0]);
    conc_close(s[1]);
}

Test(io_green, read_timeout_while_siblings_run, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    static green_rd_t r;
    r = (green_rd_t){.rfd = s[0], .wfd = -1, .timeout = 0.2};
    conc_green_t *a, *b;
    cr_assert_eq(conc_go(&a, green_reader, &r), 0);
    cr_assert_eq(conc_go(&b, green_ticker, &r), 0);
    cr_assert_eq(green_result(a, 10.0), CONC_ETIMEDOUT);
    tu_assert_timeout(r.took, 0.2);
    cr_assert_eq(green_result(b, 10.0), 0);
    cr_assert_eq(atomic_load(&r.ticks), 50);
    conc_close(s[0]);
    conc_close(s[1]);
}

/* ---- kills and scopes reach green threads blocked in I/O */

typedef struct {
    int fd;
    const char *path;
    atomic_int started;
    double scope;
    atomic_int rc; /* what the blocking call returned (a killed green
                      thread's own result is NULL, as in gevent) */
} green_blk_t;

static void *green_accept(void *arg)
{
    green_blk_t *b = arg;
    atomic_store(&b->started, 1);
    int rc = conc_accept(b->fd, NULL, NULL, CONC_FOREVER);
    atomic_store(&b->rc, rc);
    return PTR(rc);
}

static void *green_read_forever(void *arg)
{
    green_blk_t *b = arg;
    char c;
    atomic_store(&b->started, 1);
    if (b->scope > 0)
        conc_timeout_begin(b->scope);
    int rc = (int)conc_read(b->fd, &c, 1, CONC_FOREVER);
    if (b->scope > 0 && conc_timeout_end() != 1)
        rc = -1000; /* the scope did not say it fired */
    atomic_store(&b->rc, rc);
    return PTR(rc);
}

static void *green_dial_forever(void *arg)
{
    green_blk_t *b = arg;
    int fd = -1;
    atomic_store(&b->started, 1);
    int rc = conc_unix_dial(b->path, CONC_FOREVER, &fd);
    if (rc == 0)
        conc_close(fd);
    atomic_store(&b->rc, rc);
    return PTR(rc);
}

/* Start fn(b) and let it block (conc_sleep runs the hub), then kill it. */
static int kill_blocked(void *(*fn)(void *), green_blk_t *b)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fn, b), 0);
    cr_assert_eq(conc_sleep(0.05), 0);
    cr_assert(atomic_load(&b->started), "the green thread did not run");
    cr_assert_not(conc_green_dead(g), "it did not block");
    double t = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_lt(tu_now() - t, 2.0);
    cr_assert(conc_green_dead(g));
    cr_assert(conc_green_killed(g));
    green_result(g, 1.0);
    return atomic_load(&b->rc);
}

Test(io_green, kill_blocked_accept_read_and_dial, .timeout = TU_TIMEOUT)
{
    static green_blk_t b;
    int lfd, port;
    set_tcp(&lfd, &port);
    b = (green_blk_t){.fd = lfd};
    cr_assert_eq(kill_blocked(green_accept, &b), CONC_EKILLED, "accept");
    /* the listener still works afterwards (the hub forgot the old wait) */
    int c;
    cr_assert_eq(conc_tcp_dial("127.0.0.1", port, 2.0, &c), 0);
    int a = conc_accept(lfd, NULL, NULL, 2.0);
    cr_assert_geq(a, 0);
    conc_close(a);
    conc_close(c);
    conc_close(lfd);

    int s[2];
    pair(s);
    b = (green_blk_t){.fd = s[0]};
    cr_assert_eq(kill_blocked(green_read_forever, &b), CONC_EKILLED, "read");
    conc_close(s[0]);
    conc_close(s[1]);

    /* a dial backing off on a full Unix backlog is killable too */
    char abs[64];
    snprintf(abs, sizeof abs, "@conc-io-green-%d", (int)getpid());
    cr_assert_eq(conc_unix_listen(abs, 1, &lfd), 0);
    int held[8], n = 0;
    while (n < 8 && conc_unix_dial(abs, 0.05, &held[n]) == 0)
        n++;
    cr_assert_lt(n, 8, "the backlog never filled");
    b = (green_blk_t){.path = abs};
    cr_assert_eq(kill_blocked(green_dial_forever, &b), CONC_EKILLED, "dial");
    for (int i = 0; i < n; i++)
        conc_close(held[i]);
    conc_close(lfd);
}

Test(io_green, timeout_scope_in_green_thread, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    static green_blk_t b;
    b = (green_blk_t){.fd = s[0], .scope = 0.1};
    conc_green_t *g;
    double t = tu_now();
    cr_assert_eq(conc_go(&g, green_read_forever, &b), 0);
    cr_assert_eq(green_result(g, 10.0), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.1);
    conc_close(s[0]);
    conc_close(s[1]);
}

/* ---- two readers of one fd; closing wakes a waiter */

static void *green_close_fd(void *arg)
{
    green_blk_t *b = arg;
    return PTR(conc_close(b->fd));
}

Test(io_green, second_reader_is_refused_and_close_wakes, .timeout = TU_TIMEOUT)
{
    int s[2];
    pair(s);
    static green_blk_t b;
    b = (green_blk_t){.fd = s[0]};
    conc_green_t *g1, *g2, *g3;
    cr_assert_eq(conc_go(&g1, green_read_forever, &b), 0);
    cr_assert_eq(conc_sleep(0.02), 0);
    cr_assert_eq(conc_go(&g2, green_read_forever, &b), 0);
    cr_assert_eq(green_result(g2, 5.0), CONC_EPERM, "two green threads reading one fd");
    cr_assert_eq(conc_go(&g3, green_close_fd, &b), 0);
    cr_assert_eq(green_result(g3, 5.0), 0);
    errno = 0;
    cr_assert_eq(green_result(g1, 5.0), CONC_ESYS, "a reader of a closed fd wakes");
    conc_close(s[1]);
}

/* ---- echo server: a green thread per connection, 1,000 clients */

typedef struct {
    int lfd;
    atomic_int active, max_active, served;
    atomic_int connected; /* clients connected so far */
    conc_event_t all_connected;
    int nclients, rounds;
    atomic_int failures;
    atomic_int first_failure;
    atomic_int server_rc;
} echo_t;

static echo_t echo;

static void *echo_conn(void *arg)
{
    int c = INT(arg);
    int now = atomic_fetch_add(&echo.active, 1) + 1;
    int m = atomic_load(&echo.max_active);
    while (now > m && !atomic_compare_exchange_weak(&echo.max_active, &m, now)) {
    }
    char buf[1024];
    ssize_t n;
    while ((n = conc_read(c, buf, sizeof buf, 30.0)) > 0)
        if (conc_write_all(c, buf, (size_t)n, NULL, 30.0) != 0)
            break;
    if (n < 0) {
        atomic_fetch_add(&echo.failures, 1);
        int z = 0;
        atomic_compare_exchange_strong(&echo.first_failure, &z, (int)n);
    }
    conc_close(c);
    atomic_fetch_sub(&echo.active, 1);
    atomic_fetch_add(&echo.served, 1);
    return NULL;
}

static void *echo_server(void *arg)
{
    (void)arg;
    int c;
    while ((c = conc_accept(echo.lfd, NULL, NULL, CONC_FOREVER)) >= 0)
        if (conc_go(NULL, echo_conn, PTR(c)) != 0) {
            conc_close(c);
            atomic_fetch_add(&echo.failures, 1);
        }
    atomic_store(&echo.server_rc, c); /* CONC_EKILLED when the test stops it */
    return NULL;
}

/* One round trip of a message naming client id and round i. */
static int echo_once(int fd, int id, int i)
{
    char out[48], in[48];
    int n = snprintf(out, sizeof out, "client %d round %d", id, i);
    int rc = conc_write_all(fd, out, (size_t)n, NULL, 20.0);
    if (rc == 0)
        rc = conc_read_exact(fd, in, (size_t)n, NULL, 20.0);
    if (rc == 0 && memcmp(in, out, (size_t)n) != 0)
        rc = CONC_EFAILED;
    return rc;
}

static void *echo_client(void *arg)
{
    int id = INT(arg), fd, port = conc_socket_port(echo.lfd);
    int rc = conc_tcp_dial("127.0.0.1", port, 20.0, &fd);
    if (rc != 0)
        return PTR(rc);
    if (atomic_fetch_add(&echo.connected, 1) + 1 == echo.nclients)
        conc_event_set(&echo.all_connected);
    /* all connections are open at once before anyone talks */
    rc = conc_event_wait(&echo.all_connected, 20.0);
    for (int i = 0; rc == 0 && i < echo.rounds; i++)
        rc = echo_once(fd, id, i);
    conc_close(fd);
    return PTR(rc);
}

static void echo_setup(int nclients, int rounds)
{
    memset(&echo, 0, sizeof echo);
    conc_event_init(&echo.all_connected);
    echo.nclients = nclients;
    echo.rounds = rounds;
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 0, 0, &echo.lfd), 0);
}

static void echo_teardown(conc_green_t *srv)
{
    cr_assert_eq(conc_green_kill(srv, true, 5.0), 0);
    green_result(srv, 1.0);
    cr_assert_eq(atomic_load(&echo.server_rc), CONC_EKILLED, "server's accept");
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&echo.served) == echo.nclients), 10),
              "served %d of %d", atomic_load(&echo.served), echo.nclients);
    cr_assert_eq(atomic_load(&echo.failures), 0, "server side failures (first: %s)",
                 conc_strerror(atomic_load(&echo.first_failure)));
    conc_close(echo.lfd);
}

Test(io_green, echo_server_1000_green_clients, .timeout = TU_TIMEOUT)
{
    long lim = raise_nofile();
    int n = 1000;
    const char *be = getenv("CONC_HUB_BACKEND");
    if (be && strcmp(be, "select") == 0) {
        /* 2000 fds: past FD_SETSIZE, which the select hub refuses (CONC_ERANGE;
         * tests/hub_backend_test.c checks that) */
        n = 400;
        cr_log_info("CONC_HUB_BACKEND=select: %d clients (fds must stay under FD_SETSIZE)", n);
    }
    if (lim < 2 * n + 64) {
        n = (int)(lim - 64) / 2;
        cr_log_warn("fd limit %ld: scaled down to %d clients", lim, n);
    }
    echo_setup(n, TU_SANITIZED ? 2 : 5);
    conc_green_t *srv;
    conc_green_t **cl = calloc((size_t)n, sizeof *cl);
    cr_assert(cl);
    double t = tu_now();
    cr_assert_eq(conc_go(&srv, echo_server, NULL), 0);
    for (int i = 0; i < n; i++)
        cr_assert_eq(conc_go(&cl[i], echo_client, PTR(i)), 0);
    cr_assert_eq(conc_green_joinall(cl, (size_t)n, 30.0), 0, "clients did not finish in 30 s");
    double dt = tu_now() - t;
    int bad = 0, first = 0;
    for (int i = 0; i < n; i++) {
        int rc = green_result(cl[i], 1.0);
        if (rc != 0 && bad++ == 0)
            first = rc;
    }
    cr_assert_eq(bad, 0, "%d clients failed (first: %s)", bad, conc_strerror(first));
    cr_assert_eq(atomic_load(&echo.max_active), n, "connections were not all open at once");
    echo_teardown(srv);
    free(cl);
    cr_assert_lt(dt, TU_SANITIZED ? 30.0 : 10.0, "took %.2f s", dt);
    cr_log_info("echo: %d green clients x %d rounds in %.3f s", n, echo.rounds, dt);
}

/* OS-thread clients (conc_* calls poll there) against the green server. */
#define OS_CLIENTS 4
#define OS_CONNS 50

static void os_client_fn(void *p, int idx)
{
    atomic_int *result = p;
    int fds[OS_CONNS], port = conc_socket_port(echo.lfd), rc = 0, k = 0;
    for (; rc == 0 && k < OS_CONNS; k++)
        if ((rc = conc_tcp_dial("127.0.0.1", port, 20.0, &fds[k])) != 0)
            k--;
    for (int i = 0; rc == 0 && i < echo.rounds; i++)
        for (int j = 0; rc == 0 && j < k; j++)
            rc = echo_once(fds[j], idx * OS_CONNS + j, i);
    for (int j = 0; j < k; j++)
        conc_close(fds[j]);
    atomic_store(&result[idx], rc == 0 ? 1 : rc);
}

Test(io_green, echo_server_os_thread_clients, .timeout = TU_TIMEOUT)
{
    raise_nofile();
    echo_setup(OS_CLIENTS * OS_CONNS, 5);
    conc_green_t *srv;
    cr_assert_eq(conc_go(&srv, echo_server, NULL), 0);
    static atomic_int result[OS_CLIENTS];
    static tu_bunch_t b;
    for (int i = 0; i < OS_CLIENTS; i++)
        atomic_store(&result[i], 0);
    tu_bunch_start(&b, OS_CLIENTS, os_client_fn, result);
    /* the main context waits in conc calls, so the hub serves meanwhile */
    double dl = tu_now() + 30;
    while (atomic_load(&b.finished) < OS_CLIENTS && tu_now() < dl)
        conc_sleep(0.005);
    cr_assert_eq(atomic_load(&b.finished), OS_CLIENTS, "OS-thread clients did not finish");
    tu_bunch_join(&b);
    for (int i = 0; i < OS_CLIENTS; i++)
        cr_assert_eq(atomic_load(&result[i]), 1, "client thread %d: %s", i, conc_strerror(atomic_load(&result[i])));
    echo_teardown(srv);
}
