/*
 * bench/selectors_bench.c — conc/selectors.h (issue 15): select() calls
 * per second on each backend, with Python's selectors.DefaultSelector
 * (epoll) as the peer for the same work.
 *
 * Rows:
 *   selectors.sparse_10     10 fds registered for reading, 1 ready
 *   selectors.sparse_1000   1000 fds registered for reading, 1 ready
 * The idle fds are unbound UDP sockets (never readable, one fd each, so
 * 1000 of them stay below FD_SETSIZE for the select backend); the ready
 * one is a socketpair end holding one unread byte, so it stays ready
 * (level-triggered) and every select(0) must report exactly that key
 * (checked on every call). Each measurement runs select(0) in a loop for
 * 0.1 s * scale and reports calls/s.
 *
 * Impls: conc_select, conc_poll, conc_epoll, conc_uring (skipped with a
 * note where io_uring is refused), conc_signal, and python
 * (bench/selectors_python.py with /usr/bin/python3, DefaultSelector).
 * One discarded warm-up per impl, then the repetitions interleaved;
 * medians.
 *
 * Usage: selectors_bench [--reps N] [--scale F] [--only row,row] [--jsonl FILE]
 *                        [--python PYTHON --python-script selectors_python.py]
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "conc/selectors.h"

enum { NCONC = 5 };
static const conc_selector_backend_t backends[NCONC] = {CONC_SEL_SELECT, CONC_SEL_POLL, CONC_SEL_EPOLL,
                                                        CONC_SEL_URING, CONC_SEL_SIGNAL};
static const char *impl_names[NCONC + 1] = {"conc_select", "conc_poll", "conc_epoll",
                                            "conc_uring",  "conc_signal", "python"};

static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_only;
static const char *opt_jsonl;
static const char *opt_python;
static const char *opt_python_script;

typedef struct {
    conc_selector_t *s;
    int *idle;
    int nidle;
    int pair[2];
    bool ok;
} setup_t;

static int setup(setup_t *st, conc_selector_backend_t b, int nfds, char *why, size_t whylen)
{
    memset(st, 0, sizeof *st);
    int rc = conc_selector_new(&st->s, b);
    if (rc) {
        snprintf(why, whylen, "%s", rc == CONC_ENOTSUP ? "io_uring refused by the kernel here"
                                                       : conc_strerror(rc));
        return rc;
    }
    st->idle = calloc((size_t)nfds, sizeof *st->idle);
    for (int i = 0; i < nfds - 1; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        st->idle[st->nidle++] = fd;
        if (fd < 0 || (rc = conc_selector_register(st->s, fd, CONC_SEL_READ, NULL, NULL))) {
            snprintf(why, whylen, "register idle fd %d: %s", fd, fd < 0 ? strerror(errno) : conc_strerror(rc));
            return -1;
        }
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, st->pair) ||
        (rc = conc_selector_register(st->s, st->pair[0], CONC_SEL_READ, st, NULL)) ||
        write(st->pair[1], "x", 1) != 1) {
        snprintf(why, whylen, "active fd: %s", rc ? conc_strerror(rc) : strerror(errno));
        return -1;
    }
    return 0;
}

static void teardown(setup_t *st)
{
    conc_selector_close(st->s);
    for (int i = 0; i < st->nidle; i++)
        if (st->idle[i] >= 0)
            close(st->idle[i]);
    free(st->idle);
    if (st->pair[0] > 0)
        close(st->pair[0]), close(st->pair[1]);
}

/* select(0) calls/s for `seconds`; NAN (with why) when a call misreports. */
static double measure(setup_t *st, double seconds, char *why, size_t whylen)
{
    conc_selector_ready_t ev[4];
    long calls = 0;
    double t0 = bench_now(), end = t0 + seconds, now;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            int n = conc_selector_select(st->s, 0, ev, 4);
            if (n != 1 || ev[0].key->data != st) {
                snprintf(why, whylen, "select reported %d keys", n);
                return NAN;
            }
        }
        calls += 64;
        if ((now = bench_now()) >= end)
            break;
    }
    return (double)calls / (now - t0);
}

static void run_row(const char *row, int nfds)
{
    bench_row_t *r = bench_row_new(row, "calls/s", false);
    setup_t st[NCONC];
    char why[160];
    for (int i = 0; i <= NCONC; i++)
        bench_impl_add(r, impl_names[i]);
    /* set up (outside the clock) and warm up */
    for (int i = 0; i < NCONC; i++) {
        why[0] = 0;
        if (setup(&st[i], backends[i], nfds, why, sizeof why) != 0) {
            bench_impl_note(&r->impl[i], backends[i] == CONC_SEL_URING ? BENCH_SKIPPED : BENCH_FAILED,
                            "%s", why);
            teardown(&st[i]);
            st[i].s = NULL;
            continue;
        }
        if (isnan(measure(&st[i], 0.02, why, sizeof why)))
            bench_impl_note(&r->impl[i], BENCH_FAILED, "%s", why);
    }
    for (int rep = 0; rep < opt_reps; rep++)
        for (int i = 0; i < NCONC; i++) {
            if (!st[i].s || r->impl[i].status != BENCH_OK)
                continue;
            double v = measure(&st[i], 0.1 * opt_scale, why, sizeof why);
            if (isnan(v))
                bench_impl_note(&r->impl[i], BENCH_FAILED, "%s", why);
            else
                bench_impl_record(&r->impl[i], v);
        }
    for (int i = 0; i < NCONC; i++)
        if (st[i].s)
            teardown(&st[i]);
    /* the Python peer: one process, all repetitions */
    bench_impl_t *py = &r->impl[NCONC];
    if (!opt_python || !opt_python_script || access(opt_python, X_OK) != 0) {
        bench_impl_note(py, BENCH_SKIPPED, "%s", opt_python ? "interpreter not found" : "no --python given");
        return;
    }
    char reps[16], scale[32];
    snprintf(reps, sizeof reps, "%d", opt_reps);
    snprintf(scale, sizeof scale, "%g", opt_scale);
    char *argv[] = {(char *)opt_python, (char *)opt_python_script, "--reps", reps, "--scale", scale,
                    (char *)row, NULL};
    double vals[BENCH_MAX_REPS];
    int n = bench_run_peer(argv, vals, BENCH_MAX_REPS, why, sizeof why);
    if (n <= 0)
        bench_impl_note(py, BENCH_FAILED, "%s", n == 0 ? "python peer printed no value" : why);
    for (int i = 0; i < n; i++)
        bench_impl_record(py, vals[i]);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: selectors_bench [--reps N] [--scale F] [--only rows] [--jsonl FILE] "
               "[--python PY --python-script selectors_python.py]\n");
}

static void list_rows(void)
{
    printf("selectors.sparse_10\nselectors.sparse_1000\n");
}

int main(int argc, char **argv)
{
    /* --impls is accepted and ignored: all impls run */
    static const bench_args_t args = {
        .prog = "selectors_bench", .usage = usage, .list = list_rows, .reps = &opt_reps, .scale = &opt_scale,
        .only = &opt_only, .jsonl = &opt_jsonl, .python = &opt_python, .python_script = &opt_python_script};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    bench_note_load();
    double t_start = bench_now();
    if (bench_in_list(opt_only, "selectors.sparse_10"))
        run_row("selectors.sparse_10", 10);
    if (bench_in_list(opt_only, "selectors.sparse_1000"))
        run_row("selectors.sparse_1000", 1000);
    bench_print_header("selectors", opt_reps);
    printf("(select(0) with 1 ready fd among N registered; every call checked)\n");
    for (int k = 0; k < bench_nrows; k++)
        bench_print_row(&bench_rows[k]);
    printf("\nratios of medians (> 1: the conc backend makes more calls/s than Python's DefaultSelector):\n");
    for (int k = 0; k < bench_nrows; k++) {
        bench_row_t *r = &bench_rows[k];
        bench_impl_t *py = bench_impl_find(r, "python");
        printf("  %-22s", r->name);
        for (int i = 0; i < NCONC; i++) {
            bench_impl_t *im = &r->impl[i];
            if (bench_impl_ok(im) && bench_impl_ok(py))
                printf(" %s %.2fx", im->name + 5, bench_impl_median(im) / bench_impl_median(py));
            else
                printf(" %s -", im->name + 5);
        }
        printf("\n");
    }
    (void)bench_speedup;
    (void)bench_python_targets;
    bench_tally_t tally = {0, 0};
    return bench_finish("selectors", &tally, opt_jsonl, t_start);
}
