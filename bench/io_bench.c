/*
 * bench/io_bench.c — `make bench BENCH=io` (issue 15): the I/O models and
 * their peers serving the same echo protocol, and HTTP "hello" servers.
 *
 * Rows (all in one run, medians of --reps, reps interleaved across impls):
 *   io.echo.50, io.echo.1000   round trips/s: 50 / 1000 loopback
 *       connections, each with one 64-byte message in flight (the closed
 *       loop of bench/io_load.h, every echo checked byte for byte).
 *       impls: conc (examples/io_models/green.c on the default hub
 *       backend); conc_epoll, conc_uring, conc_poll, conc_select (the same
 *       server with CONC_HUB_BACKEND=<backend>: a hub that has only epoll
 *       ignores it); model_<m> (examples/io_models/<m>.c); epoll (the
 *       plain C epoll server: model_epoll's program, measured on its own);
 *       libuv (bench/io_uv.c); go (bench/io_go, GOMAXPROCS=1); gevent
 *       (StreamServer), asyncio and uvloop (Protocol) from io_python.py.
 *   io.echo.10k_idle_rss   bytes of RSS per idle connection: the green
 *       server's VmRSS with 10,000 connections (each echoed once, then
 *       idle) minus its VmRSS with one, divided by 10,000.
 *   io.http.hello   requests/s by wrk (1 thread, 100 connections,
 *       keep-alive): conc (examples/io_models/http.c), nginx (nginx-light,
 *       one worker, `return 200`, from a temporary config, current user, no
 *       daemon), go (net/http, GOMAXPROCS=1), gevent (pywsgi).
 *
 * Method: every server is a separate process started fresh for each
 * measurement (so a busy-looping server never runs beside another), on a
 * random loopback port; nothing is pinned; the load generator runs in this
 * process on one thread. A peer that is not installed is skipped with a note.
 */
#include "bench_util.h"

#include "io_load.h"

#ifndef CONC_IO_MODELS_DIR
#define CONC_IO_MODELS_DIR ""
#endif
#ifndef CONC_BENCH_IO_UV
#define CONC_BENCH_IO_UV ""
#endif
#ifndef CONC_BENCH_IO_GO
#define CONC_BENCH_IO_GO ""
#endif

static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_only, *opt_jsonl, *opt_python, *opt_python_script;

enum kind { K_MODEL, K_UV, K_GO, K_PY, K_NGINX };

typedef struct impl {
    const char *name;
    enum kind kind;
    const char *arg; /* model name / go mode / python impl */
    const char *env; /* extra environment, or NULL */
} impl_t;

static const impl_t echo_impls[] = {
    {"conc", K_MODEL, "green", NULL},
    {"conc_epoll", K_MODEL, "green", "CONC_HUB_BACKEND=epoll"},
    {"conc_uring", K_MODEL, "green", "CONC_HUB_BACKEND=uring"},
    {"conc_poll", K_MODEL, "green", "CONC_HUB_BACKEND=poll"},
    {"conc_select", K_MODEL, "green", "CONC_HUB_BACKEND=select"},
    {"model_blocking", K_MODEL, "blocking", NULL},
    {"model_nonblocking", K_MODEL, "nonblocking", NULL},
    {"model_select", K_MODEL, "select", NULL},
    {"model_poll", K_MODEL, "poll", NULL},
    {"model_epoll", K_MODEL, "epoll", NULL},
    {"model_signal", K_MODEL, "signal", NULL},
    {"model_uring", K_MODEL, "uring", NULL},
    {"epoll", K_MODEL, "epoll", NULL},
    {"libuv", K_UV, NULL, NULL},
    {"go", K_GO, "echo", "GOMAXPROCS=1"},
    {"gevent", K_PY, "gevent", NULL},
    {"asyncio", K_PY, "asyncio", NULL},
    {"uvloop", K_PY, "uvloop", NULL},
};
#define NECHO ((int)(sizeof echo_impls / sizeof *echo_impls))

static const impl_t http_impls[] = {
    {"conc", K_MODEL, "http", NULL},
    {"nginx", K_NGINX, NULL, NULL},
    {"go", K_GO, "http", "GOMAXPROCS=1"},
    {"gevent", K_PY, "pywsgi", NULL},
};
#define NHTTP ((int)(sizeof http_impls / sizeof *http_impls))

static bool want_row(const char *row)
{
    if (!opt_only)
        return true;
    const char *p = strstr(opt_only, row);
    return p && (p == opt_only || p[-1] == ',') && (p[strlen(row)] == 0 || p[strlen(row)] == ',');
}

/* ------------------------------------------------------------ servers */

static char nginx_dir[64];

/* A temporary nginx prefix with a config for port: one worker, no daemon,
 * the current user, `return 200 "hello\n"`, keep-alive without a request
 * cap (like the other servers). Returns 0 or -1. */
static int nginx_config(int port, char *why, size_t whylen)
{
    if (!nginx_dir[0]) {
        snprintf(nginx_dir, sizeof nginx_dir, "/tmp/conc_io_nginx.XXXXXX");
        if (!mkdtemp(nginx_dir)) {
            io_why(why, whylen, "mkdtemp: %s", strerror(errno));
            nginx_dir[0] = 0;
            return -1;
        }
    }
    char path[128];
    snprintf(path, sizeof path, "%s/nginx.conf", nginx_dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        io_why(why, whylen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (geteuid() == 0)
        fprintf(f, "user root;\n"); /* workers stay the current user, not nobody */
    fprintf(f,
            "worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/error.log;\n"
            "events { worker_connections 4096; }\n"
            "http {\n  access_log off;\n  keepalive_requests 1000000;\n"
            "  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;\n"
            "  uwsgi_temp_path %s; scgi_temp_path %s;\n"
            "  server {\n    listen 127.0.0.1:%d;\n    location / { return 200 \"hello\\n\"; }\n  }\n}\n",
            nginx_dir, nginx_dir, nginx_dir, nginx_dir, nginx_dir, nginx_dir, nginx_dir, port);
    fclose(f);
    return 0;
}

static const char *find_prog(const char *const *cands)
{
    for (; *cands; cands++)
        if (access(*cands, X_OK) == 0)
            return *cands;
    return NULL;
}

/* Start impl's server. 0 ok, 1 skipped (why), -1 failed (why). */
static int impl_start(const impl_t *im, io_server_t *s, char *why, size_t whylen)
{
    char path[512], portb[16], cfg[160];
    char *argv[8] = {0};
    int wait_port = 0;
    switch (im->kind) {
    case K_MODEL:
        if (!CONC_IO_MODELS_DIR[0]) {
            io_why(why, whylen, "examples/io_models not built (CONC_BUILD_EXAMPLES=OFF)");
            return 1;
        }
        snprintf(path, sizeof path, "%s/io_model_%s", CONC_IO_MODELS_DIR, im->arg);
        if (access(path, X_OK) != 0) {
            io_why(why, whylen, "%s not built (liburing-dev missing?)", path);
            return 1;
        }
        argv[0] = path, argv[1] = "0";
        break;
    case K_UV:
        if (!CONC_BENCH_IO_UV[0] || access(CONC_BENCH_IO_UV, X_OK) != 0) {
            io_why(why, whylen, "libuv peer not built (libuv1-dev missing?)");
            return 1;
        }
        argv[0] = (char *)CONC_BENCH_IO_UV, argv[1] = "0";
        break;
    case K_GO:
        if (!CONC_BENCH_IO_GO[0] || access(CONC_BENCH_IO_GO, X_OK) != 0) {
            io_why(why, whylen, "go peer not built (golang-go missing?)");
            return 1;
        }
        argv[0] = (char *)CONC_BENCH_IO_GO, argv[1] = (char *)im->arg, argv[2] = "0";
        break;
    case K_PY:
        if (!opt_python || !opt_python_script || access(opt_python, X_OK) != 0) {
            io_why(why, whylen, "no Python interpreter (run through bench/run)");
            return 1;
        }
        argv[0] = (char *)opt_python, argv[1] = (char *)opt_python_script, argv[2] = (char *)im->arg,
        argv[3] = "0";
        break;
    case K_NGINX: {
        static const char *const nginx[] = {"/usr/sbin/nginx", "/usr/local/sbin/nginx", NULL};
        const char *bin = find_prog(nginx);
        if (!bin) {
            io_why(why, whylen, "nginx not installed (nginx-light)");
            return 1;
        }
        if ((wait_port = io_pick_port()) < 0 || nginx_config(wait_port, why, whylen) != 0)
            return -1;
        snprintf(cfg, sizeof cfg, "%s/nginx.conf", nginx_dir);
        argv[0] = (char *)bin, argv[1] = "-p", argv[2] = nginx_dir, argv[3] = "-c", argv[4] = cfg,
        argv[5] = "-e", argv[6] = "stderr";
        (void)portb;
        break;
    }
    }
    return io_server_start(argv, im->env, wait_port, 20.0, s, why, whylen);
}

/* ------------------------------------------------------------ measurements */

/* The server's CPU time at the start and the end of the counted window. */
typedef struct cpu_mark {
    pid_t pid;
    double at[2];
} cpu_mark_t;

static void cpu_mark(void *arg, int phase)
{
    cpu_mark_t *m = arg;
    m->at[phase] = io_cpu_seconds(m->pid);
}

/* Round trips/s of impl with conns connections; *cpu_us: the server's CPU
 * time per round trip in microseconds (NAN if unknown). */
static double measure_echo(const impl_t *im, int conns, double *cpu_us, char *why, size_t whylen, bool *skipped)
{
    io_server_t s;
    *cpu_us = NAN;
    int rc = impl_start(im, &s, why, whylen);
    *skipped = rc == 1;
    if (rc != 0)
        return NAN;
    double secs = (conns >= 1000 ? 1.0 : 0.8) * opt_scale;
    cpu_mark_t m = {.pid = s.pid, .at = {-1, -1}};
    io_load_opts_t o = {.port = s.port, .conns = conns, .warm = conns >= 1000 ? 0.3 : 0.2,
                        .secs = secs < 0.3 ? 0.3 : secs, .stall = 10, .mark = cpu_mark, .mark_arg = &m};
    io_load_result_t r;
    rc = io_load_run(&o, &r, why, whylen);
    io_server_stop(&s);
    if (rc == 0 && m.at[0] >= 0 && m.at[1] >= m.at[0] && r.round_trips > 0)
        *cpu_us = (m.at[1] - m.at[0]) * 1e6 / (double)r.round_trips;
    return rc == 0 ? r.rate : NAN;
}

/* wrk -t1 -c100 against port; requests/s or NAN. */
static double run_wrk(int port, char *why, size_t whylen)
{
    static const char *const wrks[] = {"/usr/bin/wrk", "/usr/local/bin/wrk", NULL};
    const char *wrk = find_prog(wrks);
    if (!wrk) {
        io_why(why, whylen, "wrk not installed");
        return NAN;
    }
    int secs = (int)(2 * opt_scale + 0.5);
    char cmd[512], line[512];
    snprintf(cmd, sizeof cmd, "%s -t1 -c100 -d%ds http://127.0.0.1:%d/ 2>&1", wrk, secs < 1 ? 1 : secs, port);
    FILE *p = popen(cmd, "r");
    double rps = NAN;
    long bad = 0;
    if (!p) {
        io_why(why, whylen, "popen wrk: %s", strerror(errno));
        return NAN;
    }
    while (fgets(line, sizeof line, p)) {
        sscanf(line, " Requests/sec: %lf", &rps);
        sscanf(line, " Non-2xx or 3xx responses: %ld", &bad);
    }
    int st = pclose(p);
    if (st != 0 || isnan(rps) || bad) {
        io_why(why, whylen, "wrk failed (status %d, %ld bad responses)", st, bad);
        return NAN;
    }
    return rps;
}

static double measure_http(const impl_t *im, char *why, size_t whylen, bool *skipped)
{
    io_server_t s;
    int rc = impl_start(im, &s, why, whylen);
    *skipped = rc == 1;
    if (rc != 0)
        return NAN;
    double v = run_wrk(s.port, why, whylen);
    io_server_stop(&s);
    return v;
}

/* io.echo.10k_idle_rss: the green server's RSS growth per idle connection. */
static double measure_idle_rss(int n, char *why, size_t whylen)
{
    static const impl_t conc = {"conc", K_MODEL, "green", NULL};
    if (io_raise_nofile(2L * n + 1000) < n + 100) {
        io_why(why, whylen, "cannot raise RLIMIT_NOFILE to %d (not root?)", n + 100);
        return NAN;
    }
    io_server_t s;
    bool skipped;
    if (impl_start(&conc, &s, why, whylen) != 0)
        return NAN;
    (void)skipped;
    int *fds = calloc((size_t)n, sizeof *fds);
    double v = NAN;
    long before = -1;
    unsigned char msg[IO_MSG], back[IO_MSG];
    for (int i = 0; i < IO_MSG; i++)
        msg[i] = (unsigned char)(i * 7 + 1);
    if (!fds)
        goto out;
    for (int i = 0; i < n; i++)
        fds[i] = -1;
    for (int i = 0; i < n; i++) {
        if (io_dial_many(s.port, 1, &fds[i], why, whylen) != 0)
            goto out;
        /* one echo: the connection's green thread is running and parked */
        struct pollfd pf = {fds[i], POLLIN, 0};
        if (send(fds[i], msg, IO_MSG, MSG_NOSIGNAL) != IO_MSG || poll(&pf, 1, 10000) != 1 ||
            recv(fds[i], back, IO_MSG, MSG_WAITALL) != IO_MSG || memcmp(back, msg, IO_MSG) != 0) {
            io_why(why, whylen, "connection %d: no echo", i);
            goto out;
        }
        if (i == 0) {
            usleep(100000);
            before = io_rss_bytes(s.pid);
        }
    }
    usleep(300000);
    long after = io_rss_bytes(s.pid);
    if (before < 0 || after < 0)
        io_why(why, whylen, "cannot read /proc/%d/status", (int)s.pid);
    else
        v = (double)(after - before) / (n - 1);
out:
    if (fds)
        for (int i = 0; i < n; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    free(fds);
    io_server_stop(&s);
    return v;
}

/* ------------------------------------------------------------ rows */

static void record(bench_impl_t *bi, double v, bool skipped, const char *why)
{
    if (!isnan(v))
        bench_impl_record(bi, v);
    else if (skipped)
        bench_impl_note(bi, BENCH_SKIPPED, "%s", why);
    else
        bench_impl_note(bi, BENCH_FAILED, "%s", why);
}

static bool dead(const bench_impl_t *bi) { return bi->status != BENCH_OK; }

static void run_echo_rows(void)
{
    static const int conns[2] = {50, 1000};
    static const char *const names[2] = {"io.echo.50", "io.echo.1000"};
    static const char *const cpu_names[2] = {"io.echo.50.server_cpu", "io.echo.1000.server_cpu"};
    bench_row_t *rows[2] = {NULL, NULL}, *cpu_rows[2] = {NULL, NULL};
    for (int r = 0; r < 2; r++)
        if (want_row(names[r])) {
            rows[r] = bench_row_new(names[r], "rt/s", false);
            for (int i = 0; i < NECHO; i++)
                bench_impl_add(rows[r], echo_impls[i].name);
        }
    for (int r = 0; r < 2; r++) /* the server's CPU per round trip, from the same runs */
        if (rows[r]) {
            cpu_rows[r] = bench_row_new(cpu_names[r], "us/rt", true);
            for (int i = 0; i < NECHO; i++)
                bench_impl_add(cpu_rows[r], echo_impls[i].name);
        }
    io_raise_nofile(4096);
    for (int rep = 0; rep < opt_reps; rep++)
        for (int r = 0; r < 2; r++) {
            if (!rows[r])
                continue;
            for (int j = 0; j < NECHO; j++) {
                int i = (j + rep * 7) % NECHO; /* each rep starts elsewhere: no impl always follows the same one */
                bench_impl_t *bi = &rows[r]->impl[i];
                char why[200] = "";
                bool skipped = false;
                if (dead(bi))
                    continue;
                double cpu;
                double v = measure_echo(&echo_impls[i], conns[r], &cpu, why, sizeof why, &skipped);
                record(bi, v, skipped, why);
                record(&cpu_rows[r]->impl[i], cpu, skipped || !isnan(v), why[0] ? why : "no CPU time");
                fprintf(stderr, "  %s %s rep %d: %.0f rt/s, %.2f us CPU/rt%s%s\n", names[r], bi->name, rep, v, cpu,
                        why[0] ? " " : "", why);
            }
        }
}

static void run_rss_row(void)
{
    if (!want_row("io.echo.10k_idle_rss"))
        return;
    bench_row_t *row = bench_row_new("io.echo.10k_idle_rss", "B/conn", true);
    bench_impl_t *bi = bench_impl_add(row, "conc");
    int reps = opt_reps < 5 ? opt_reps : 5;
    for (int rep = 0; rep < reps && !dead(bi); rep++) {
        char why[200] = "";
        double v = measure_idle_rss(10000, why, sizeof why);
        record(bi, v, false, why);
        fprintf(stderr, "  io.echo.10k_idle_rss rep %d: %.0f %s\n", rep, v, why);
    }
}

static void run_http_row(void)
{
    if (!want_row("io.http.hello"))
        return;
    bench_row_t *row = bench_row_new("io.http.hello", "req/s", false);
    for (int i = 0; i < NHTTP; i++)
        bench_impl_add(row, http_impls[i].name);
    for (int rep = 0; rep < opt_reps; rep++)
        for (int j = 0; j < NHTTP; j++) {
            int i = (j + rep) % NHTTP;
            bench_impl_t *bi = &row->impl[i];
            char why[200] = "";
            bool skipped = false;
            if (dead(bi))
                continue;
            double v = measure_http(&http_impls[i], why, sizeof why, &skipped);
            record(bi, v, skipped, why);
            fprintf(stderr, "  io.http.hello %s rep %d: %.0f %s\n", bi->name, rep, v, why);
        }
}

/* conc impl a vs conc impl b on row: a target between two of our own. */
static void target_between(bench_tally_t *t, const char *row, const char *a, const char *b, double want,
                           const char *text)
{
    bench_row_t *r = bench_row_find(row);
    bench_impl_t *x = r ? bench_impl_find(r, a) : NULL, *y = r ? bench_impl_find(r, b) : NULL;
    if (!r)
        return;
    if (!bench_impl_ok(x) || !bench_impl_ok(y)) {
        printf("  [ n/a ] %-52s (no valid measurement)\n", text);
        return;
    }
    double s = bench_impl_median(x) / bench_impl_median(y);
    printf("  [%s] %-52s %s is %.2fx %s\n", s >= want ? " MET " : "MISSED", text, a, s, b);
    t->met += s >= want;
    t->missed += s < want;
}

static void target_at_most(bench_tally_t *t, const char *row, double most, const char *text)
{
    bench_row_t *r = bench_row_find(row);
    bench_impl_t *c = r ? bench_impl_find(r, "conc") : NULL;
    if (!r)
        return;
    if (!bench_impl_ok(c)) {
        printf("  [ n/a ] %-52s (no valid measurement)\n", text);
        return;
    }
    double v = bench_impl_median(c);
    printf("  [%s] %-52s conc: %.0f\n", v <= most ? " MET " : "MISSED", text, v);
    t->met += v <= most;
    t->missed += v > most;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: io_bench [--reps N] [--scale X] [--only row,row] [--jsonl PATH]\n"
               "                [--python PY --python-script bench/io_python.py]\n"
               "rows: io.echo.50 io.echo.1000 io.echo.10k_idle_rss io.http.hello\n");
}

int main(int argc, char **argv)
{
    static const bench_args_t args = {
        .prog = "io_bench", .usage = usage, .reps = &opt_reps, .scale = &opt_scale, .only = &opt_only,
        .jsonl = &opt_jsonl, .python = &opt_python, .python_script = &opt_python_script};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    signal(SIGPIPE, SIG_IGN);
    (void)bench_run_peer;
    (void)bench_python_targets;

    bench_note_load();
    double t_start = bench_now();
    run_echo_rows();
    run_rss_row();
    run_http_row();
    if (bench_nrows == 0) {
        fprintf(stderr, "io_bench: no row matches --only %s\n", opt_only);
        return 2;
    }

    bench_print_header("io", opt_reps);
    printf("(servers in their own processes, started fresh per measurement, nothing pinned; echo: the "
           "closed-loop client of bench/io_load.h, 64-byte messages; http: wrk -t1 -c100 keep-alive;\n"
           " conc_<backend> sets CONC_HUB_BACKEND for the green server: a hub with epoll only ignores it)\n");
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);

    printf("\ntargets (issue 15, 2-core machine), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    static const char *const echo_rows[2] = {"io.echo.50", "io.echo.1000"};
    for (int r = 0; r < 2; r++) {
        char text[96];
        snprintf(text, sizeof text, "%s: conc >= 1.0x epoll", echo_rows[r]);
        bench_target_tally(&tally, echo_rows[r], "epoll", 1.0, text);
        snprintf(text, sizeof text, "%s: conc >= 1.0x libuv", echo_rows[r]);
        bench_target_tally(&tally, echo_rows[r], "libuv", 1.0, text);
        snprintf(text, sizeof text, "%s: conc >= 3x gevent", echo_rows[r]);
        bench_target_tally(&tally, echo_rows[r], "gevent", 3.0, text);
        snprintf(text, sizeof text, "%s: conc >= 1.5x uvloop", echo_rows[r]);
        bench_target_tally(&tally, echo_rows[r], "uvloop", 1.5, text);
    }
    printf("  (informational) the same targets by the server's CPU time per round trip (lower is better):\n");
    static const char *const cpu_rows[2] = {"io.echo.50.server_cpu", "io.echo.1000.server_cpu"};
    static const struct { const char *peer; double want; } cpu_t[4] = {{"epoll", 1.0}, {"libuv", 1.0}, {"gevent", 3.0}, {"uvloop", 1.5}};
    bench_tally_t info = {0, 0};
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 4; k++) {
            char text[96];
            snprintf(text, sizeof text, "%s: conc >= %gx %s", cpu_rows[r], cpu_t[k].want, cpu_t[k].peer);
            bench_target_tally(&info, cpu_rows[r], cpu_t[k].peer, cpu_t[k].want, text);
        }
    target_between(&tally, "io.echo.1000", "conc_uring", "conc_epoll", 1.2,
                   "io.echo.1000: conc_uring >= 1.2x conc_epoll");
    target_at_most(&tally, "io.echo.10k_idle_rss", 6144, "io.echo.10k_idle_rss: conc <= 6 KiB/conn");
    bench_target_tally(&tally, "io.http.hello", "nginx", 1.0, "io.http.hello: conc >= 1.0x nginx");
    if (nginx_dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", nginx_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "io_bench: could not remove %s\n", nginx_dir);
    }
    return bench_finish("io", &tally, opt_jsonl, t_start);
}
