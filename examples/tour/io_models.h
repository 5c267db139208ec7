/*
 * examples/tour/io_models.h — the tour's chapter "io_models" (I/O模型):
 * the five I/O models side by side. Included by examples/tour.c.
 *
 * Each model is a small server program in examples/io_models/ (built into
 * <build>/io_models/, CONC_IO_MODELS_DIR); this chapter starts each one on
 * a random loopback port, drives it with the same small closed-loop client
 * load (bench/io_load.h: every echo checked byte for byte), stops it, and
 * prints the table. `make bench BENCH=io` measures them properly, with
 * peers.
 */
#include "../../bench/io_load.h"

#ifndef CONC_IO_MODELS_DIR
#define CONC_IO_MODELS_DIR ""
#endif

static const struct {
    const char *name, *model, *how;
} io_tour_models[] = {
    {"blocking", "1 blocking", "a conc thread per connection, read/write block it"},
    {"nonblocking", "2 non-blocking", "one thread retries every fd; EAGAIN = try the next"},
    {"select", "3 multiplexing", "select(): bit sets, rescanned every call"},
    {"poll", "3 multiplexing", "poll(): an array of pollfd, rescanned every call"},
    {"epoll", "3 multiplexing", "epoll: the kernel keeps the set, returns the ready"},
    {"signal", "4 signal-driven", "O_ASYNC + F_SETSIG: a queued RT signal per event"},
    {"uring", "5 asynchronous", "io_uring: submit recv/send, reap completions"},
    {"green", "3 under 1's code", "green threads: blocking-style code on the hub"},
};

static bool io_tour_path(const char *name, char *path, size_t n)
{
    snprintf(path, n, "%s/io_model_%s", CONC_IO_MODELS_DIR, name);
    return CONC_IO_MODELS_DIR[0] && access(path, X_OK) == 0;
}

/* ---- io_models/table: the same echo load on every model ---- */
static int sec_io_table(void)
{
    enum { CONNS = 20, ROUNDS = 300 };
    printf("  %d connections x %d round trips of 64 bytes each, against each server in turn:\n\n", CONNS,
           ROUNDS);
    printf("    %-12s %-17s %-52s %10s\n", "server", "model", "how it waits", "rt/s");
    double epoll_rate = 0;
    int ran = 0;
    for (size_t i = 0; i < sizeof io_tour_models / sizeof *io_tour_models; i++) {
        char path[512], why[200] = "";
        io_server_t s;
        if (!io_tour_path(io_tour_models[i].name, path, sizeof path)) {
            printf("    %-12s %-17s %-52s %10s\n", io_tour_models[i].name, io_tour_models[i].model,
                   io_tour_models[i].how, "not built");
            continue;
        }
        char *argv[] = {path, "0", NULL};
        int rc = io_server_start(argv, NULL, 0, 10.0, &s, why, sizeof why);
        if (rc != 0) {
            printf("    %-12s %-17s %-52s %10s\n", io_tour_models[i].name, io_tour_models[i].model,
                   io_tour_models[i].how, rc == 1 ? "skipped" : "FAILED");
            CHECK(rc == 1);
            continue;
        }
        io_load_opts_t o = {.port = s.port, .conns = CONNS, .rounds = ROUNDS, .secs = 30, .stall = 10};
        io_load_result_t r;
        rc = io_load_run(&o, &r, why, sizeof why);
        io_server_stop(&s);
        CHECK(rc == 0 && r.all_done);
        if (rc != 0) {
            printf("    %-12s %-17s %-52s %10s  (%s)\n", io_tour_models[i].name, io_tour_models[i].model,
                   io_tour_models[i].how, "FAILED", why);
            continue;
        }
        if (strcmp(io_tour_models[i].name, "epoll") == 0)
            epoll_rate = r.rate;
        printf("    %-12s %-17s %-52s %10.0f\n", io_tour_models[i].name, io_tour_models[i].model,
               io_tour_models[i].how, r.rate);
        ran++;
    }
    printf("\n  every echo came back byte for byte (%d servers ran; epoll did %.0f rt/s).\n"
           "  A tiny load on a shared machine: the ranking wobbles. What stays: the busy loop burns\n"
           "  a CPU while idle, select stops at fd 1024, threads cost a stack each, and the green\n"
           "  server keeps model 1's code at model 3's cost. `make bench BENCH=io` has the numbers.\n",
           ran, epoll_rate);
    CHECK(ran > 0);
    return 0;
}

/* ---- io_models/http: a keep-alive HTTP/1.1 server on green threads ---- */
static int sec_io_http(void)
{
    char path[512], why[200] = "", buf[1024];
    io_server_t s;
    if (!io_tour_path("http", path, sizeof path)) {
        printf("  io_model_http is not built here: skipped\n");
        return 0;
    }
    char *argv[] = {path, "0", NULL};
    if (io_server_start(argv, NULL, 0, 10.0, &s, why, sizeof why) != 0) {
        printf("  io_model_http: %s\n", why);
        CHECK(0);
        return 0;
    }
    int fd;
    CHECK(io_dial_many(s.port, 1, &fd, why, sizeof why) == 0);
    fcntl(fd, F_SETFL, 0);
    static const char req[] = "GET /one HTTP/1.1\r\nHost: tour\r\n\r\nGET /two HTTP/1.1\r\nHost: tour\r\n\r\n";
    printf("  two pipelined requests on one keep-alive connection:\n    > %s",
           "GET /one HTTP/1.1 ... GET /two HTTP/1.1 ...\n");
    CHECK(send(fd, req, sizeof req - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof req - 1));
    size_t have = 0;
    int answers = 0;
    while (answers < 2 && have < sizeof buf - 1) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 5000) != 1)
            break;
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        answers = 0;
        for (const char *p = buf; (p = strstr(p, "hello\n")); p++)
            answers++;
    }
    buf[have] = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
        printf("    < %s\n", line);
    CHECK(answers == 2);
    close(fd);
    io_server_stop(&s);
    printf("  (`wrk -c100` against it is the bench's io.http.hello row)\n");
    return 0;
}

static const struct section io_models_sections[] = {
    {"table", "the five I/O models serving one echo load", sec_io_table,
     "selectors.DefaultSelector() / socketserver.ThreadingTCPServer / asyncio / gevent"},
    {"http", "HTTP/1.1 keep-alive hello on green threads", sec_io_http,
     "gevent.pywsgi.WSGIServer(('127.0.0.1', 8000), app).serve_forever()"},
    {NULL, NULL, NULL, NULL},
};
