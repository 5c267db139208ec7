/*
 * tests/io_models_test.c — the servers of examples/io_models/ (issue 15):
 * each is started on a random loopback port, driven by 50 connections that
 * each make a few hundred 64-byte round trips (every echo checked byte for
 * byte by bench/io_load.h's closed-loop client), and stopped. The green
 * HTTP server is checked with keep-alive, pipelined, HEAD, HTTP/1.0 and
 * "Connection: close" requests. A model the kernel cannot run here
 * (io_uring switched off) or one that was not built is skipped with a note.
 */
#include "test_util.h"

#include "../bench/io_load.h"

#ifndef CONC_IO_MODELS_DIR
#define CONC_IO_MODELS_DIR ""
#endif

enum { CONNS = 50 };

/* Starts io_model_<name>; 0 ok, 1 skipped (the test is then skipped). */
static int start(const char *name, io_server_t *s)
{
    char path[512], why[256];
    if (!CONC_IO_MODELS_DIR[0])
        cr_skip_test("the io_models examples are not built (CONC_BUILD_EXAMPLES=OFF)");
    snprintf(path, sizeof path, "%s/io_model_%s", CONC_IO_MODELS_DIR, name);
    if (access(path, X_OK) != 0)
        cr_skip_test("%s was not built (liburing-dev missing?)", path);
    char *argv[] = {path, "0", NULL};
    int rc = io_server_start(argv, NULL, 0, 20.0, s, why, sizeof why);
    if (rc == 1)
        cr_skip_test("io_model_%s: %s", name, why);
    cr_assert_eq(rc, 0, "io_model_%s: %s", name, why);
    return 0;
}

static void echo_model(const char *name)
{
    io_server_t s;
    start(name, &s);
    io_load_opts_t o = {.port = s.port, .conns = CONNS, .rounds = tu_iters(300) < 30 ? 30 : tu_iters(300),
                        .secs = 60, .stall = 20};
    io_load_result_t r;
    char why[256] = "";
    int rc = io_load_run(&o, &r, why, sizeof why);
    io_server_stop(&s);
    cr_assert_eq(rc, 0, "io_model_%s: %s", name, why);
    cr_assert(r.all_done, "io_model_%s: only %ld round trips in %.1f s", name, r.round_trips, r.seconds);
    cr_assert_eq(r.round_trips, (long)CONNS * o.rounds);
}

Test(io_models, blocking, .timeout = 90) { echo_model("blocking"); }
Test(io_models, nonblocking, .timeout = 90) { echo_model("nonblocking"); }
Test(io_models, select, .timeout = 90) { echo_model("select"); }
Test(io_models, poll, .timeout = 90) { echo_model("poll"); }
Test(io_models, epoll, .timeout = 90) { echo_model("epoll"); }
Test(io_models, signal, .timeout = 90) { echo_model("signal"); }
/* The signal queue overflows (RLIMIT_SIGPENDING of 2, inherited by the
 * server): events are lost, SIGIO comes instead, the server rescans every
 * fd, and no echo is lost. */
Test(io_models, signal_queue_overflow, .timeout = 90)
{
    struct rlimit r = {2, 2};
    cr_assert_eq(setrlimit(RLIMIT_SIGPENDING, &r), 0); /* this test's own process (Criterion forks one) */
    echo_model("signal");
}
Test(io_models, uring, .timeout = 90) { echo_model("uring"); }
Test(io_models, green, .timeout = 90) { echo_model("green"); }

/* A client of the HTTP server: sends req, reads until it has want_bytes or
 * the server closes; returns the bytes read (buf NUL-terminated). */
static size_t http_exchange(int fd, const char *req, char *buf, size_t cap, size_t want_bytes, bool *closed)
{
    size_t have = 0;
    *closed = false;
    cr_assert_eq(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    while (have < want_bytes && have < cap - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        cr_assert_gt(poll(&p, 1, 10000), 0, "the HTTP server did not answer in 10 s");
        ssize_t n = recv(fd, buf + have, cap - 1 - have, 0);
        if (n <= 0) {
            *closed = true;
            break;
        }
        have += (size_t)n;
    }
    buf[have] = 0;
    return have;
}

static int count(const char *hay, const char *needle)
{
    int k = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        k++;
    return k;
}

Test(io_models, http_keepalive_pipelined, .timeout = 60)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nServer: conc\r\nContent-Type: text/plain\r\n"
                             "Content-Length: 6\r\n\r\nhello\n";
    io_server_t s;
    start("http", &s);
    int fd;
    char why[256], buf[4096];
    bool closed;
    cr_assert_eq(io_dial_many(s.port, 1, &fd, why, sizeof why), 0, "%s", why);
    fcntl(fd, F_SETFL, 0);
    /* keep-alive: two requests one after the other on one connection */
    for (int i = 0; i < 2; i++) {
        size_t n = http_exchange(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf, sizeof ok - 1, &closed);
        cr_assert_eq(n, sizeof ok - 1);
        cr_assert_str_eq(buf, ok);
        cr_assert(!closed);
    }
    /* pipelined: three in one write (one split oddly), answered in order */
    size_t n = http_exchange(fd,
                             "GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
                             "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                             buf, sizeof buf, 3 * (sizeof ok - 1), &closed);
    cr_assert_eq(count(buf, "HTTP/1.1 200 OK"), 3, "%s", buf);
    cr_assert_eq(count(buf, "hello\n"), 2, "HEAD has no body: %s", buf);
    cr_assert_eq(n, 3 * (sizeof ok - 1) - 6);
    char tail;
    cr_assert_eq(recv(fd, &tail, 1, 0), 0, "Connection: close ends the connection");
    close(fd);
    /* HTTP/1.0 without keep-alive closes; a request split across writes works */
    cr_assert_eq(io_dial_many(s.port, 1, &fd, why, sizeof why), 0, "%s", why);
    fcntl(fd, F_SETFL, 0);
    cr_assert_eq(send(fd, "GET / HT", 8, MSG_NOSIGNAL), 8);
    usleep(20000);
    n = http_exchange(fd, "TP/1.0\r\n\r\n", buf, sizeof buf, sizeof ok, &closed);
    cr_assert_eq(n, sizeof ok - 1);
    cr_assert(closed);
    close(fd);
    /* not a GET: 400 and close */
    cr_assert_eq(io_dial_many(s.port, 1, &fd, why, sizeof why), 0, "%s", why);
    fcntl(fd, F_SETFL, 0);
    http_exchange(fd, "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", buf, sizeof buf, sizeof buf, &closed);
    cr_assert(strncmp(buf, "HTTP/1.1 400", 12) == 0, "%s", buf);
    cr_assert(closed);
    close(fd);
    io_server_stop(&s);
}

/* The harness: a server that exits with status 77 (io_uring refused, say)
 * is reported as skipped, one that dies early as failed, and a silent one
 * times out — never a hang. */
Test(io_models, harness_skip_and_failure, .timeout = 60)
{
    io_server_t s;
    char why[256];
    char *skip[] = {"/bin/sh", "-c", "echo 'cannot run here' >&2; exit 77", NULL};
    cr_assert_eq(io_server_start(skip, NULL, 0, 10.0, &s, why, sizeof why), 1, "%s", why);
    char *die[] = {"/bin/sh", "-c", "exit 3", NULL};
    cr_assert_eq(io_server_start(die, NULL, 0, 10.0, &s, why, sizeof why), -1);
    cr_assert(strstr(why, "status 3"), "%s", why);
    char *silent[] = {"/bin/sh", "-c", "exec sleep 30", NULL};
    cr_assert_eq(io_server_start(silent, NULL, 0, 0.5, &s, why, sizeof why), -1);
    cr_assert(strstr(why, "not ready"), "%s", why);
    char *env[] = {"/bin/sh", "-c", "echo ready $IO_TEST_PORT; exec sleep 30", NULL};
    cr_assert_eq(io_server_start(env, "IO_TEST_PORT=4242", 0, 10.0, &s, why, sizeof why), 0, "%s", why);
    cr_assert_eq(s.port, 4242, "the extra environment variable reaches the server");
    io_server_stop(&s);
    cr_assert_eq(s.pid, 0);
}
