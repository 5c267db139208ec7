/*
 * bench/bench_util.h — small helpers shared by conc's benchmark programs.
 *
 * A benchmark program measures one "row" (a named piece of work) for
 * several implementations ("impls": conc and its peers) in the same run,
 * takes the median of several repetitions of each, and then
 *   - prints a readable table with the impls side by side and, for every
 *     peer, the conc-vs-peer ratio oriented so that > 1 means conc is
 *     better (faster, or more throughput);
 *   - appends one JSON object per (row, impl) to a JSON-lines file, exactly
 *     {"bench":"lock.uncontended","impl":"conc","value":6.1,"unit":"ns","better":"lower"}
 *     (DESIGN.md §5).
 *
 * Methodology helpers: a CLOCK_MONOTONIC clock, medians, a compiler
 * barrier for tight loops, and a runner for an external peer program (the
 * Python peer) that prints one measured value per line.
 *
 * Everything is static: include it from one .c file per benchmark program.
 */
#ifndef CONC_BENCH_UTIL_H
#define CONC_BENCH_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getloadavg; include this header first */
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Keep the compiler from merging, hoisting or deleting loop bodies. */
#define BENCH_CLOBBER() __asm__ __volatile__("" ::: "memory")
/* Make the compiler believe v is read (and may be changed) here. */
#define BENCH_USE(v) __asm__ __volatile__("" : "+r"(v) : : "memory")

#define BENCH_MAX_REPS 64
#define BENCH_MAX_IMPLS 24 /* io_bench compares 18 echo servers */
#define BENCH_MAX_ROWS 64 /* scaling_bench has 40 rows */

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench__cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n values (n >= 1); v is not modified. */
static double bench_median(const double *v, int n)
{
    double s[BENCH_MAX_REPS];
    if (n <= 0)
        return NAN;
    if (n > BENCH_MAX_REPS)
        n = BENCH_MAX_REPS;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, bench__cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2.0;
}

static double bench_min(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] < m)
            m = v[i];
    return m;
}

static double bench_max(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

/* ------------------------------------------------------------ results */

enum bench_status { BENCH_OK, BENCH_SKIPPED, BENCH_FAILED };

typedef struct bench_impl {
    const char *name;
    enum bench_status status;
    char note[160];            /* why skipped / failed */
    int n;                     /* measured repetitions */
    double vals[BENCH_MAX_REPS];
} bench_impl_t;

typedef struct bench_row {
    const char *name;  /* "lock.uncontended" */
    const char *unit;  /* "ns", "ops/s", "us", "ms" */
    bool lower_better; /* time: true; throughput: false */
    int nimpl;
    bench_impl_t impl[BENCH_MAX_IMPLS];
} bench_row_t;

static bench_row_t bench_rows[BENCH_MAX_ROWS];
static int bench_nrows;

static bench_row_t *bench_row_new(const char *name, const char *unit, bool lower_better)
{
    bench_row_t *r = &bench_rows[bench_nrows++];
    memset(r, 0, sizeof *r);
    r->name = name;
    r->unit = unit;
    r->lower_better = lower_better;
    return r;
}

static bench_impl_t *bench_impl_add(bench_row_t *r, const char *name)
{
    bench_impl_t *im = &r->impl[r->nimpl++];
    memset(im, 0, sizeof *im);
    im->name = name;
    return im;
}

static bench_impl_t *bench_impl_find(bench_row_t *r, const char *name)
{
    for (int i = 0; i < r->nimpl; i++)
        if (strcmp(r->impl[i].name, name) == 0)
            return &r->impl[i];
    return NULL;
}

static bench_row_t *bench_row_find(const char *name)
{
    for (int i = 0; i < bench_nrows; i++)
        if (strcmp(bench_rows[i].name, name) == 0)
            return &bench_rows[i];
    return NULL;
}

static void bench_impl_note(bench_impl_t *im, enum bench_status st, const char *fmt, ...)
{
    va_list ap;
    if (im->status == BENCH_FAILED)
        return; /* keep the first failure */
    im->status = st;
    va_start(ap, fmt);
    vsnprintf(im->note, sizeof im->note, fmt, ap);
    va_end(ap);
}

static void bench_impl_record(bench_impl_t *im, double v)
{
    if (im->n < BENCH_MAX_REPS)
        im->vals[im->n++] = v;
}

static bool bench_impl_ok(const bench_impl_t *im)
{
    return im && im->status == BENCH_OK && im->n > 0;
}

static double bench_impl_median(const bench_impl_t *im)
{
    return bench_median(im->vals, im->n);
}

/* conc-vs-peer ratio for row r, oriented so > 1 means conc is better.
 * NAN when either side has no valid measurement. */
static double bench_speedup(bench_row_t *r, const char *peer)
{
    bench_impl_t *c = bench_impl_find(r, "conc"), *p = bench_impl_find(r, peer);
    if (!bench_impl_ok(c) || !bench_impl_ok(p))
        return NAN;
    double cv = bench_impl_median(c), pv = bench_impl_median(p);
    if (!(cv > 0) || !(pv > 0))
        return NAN;
    return r->lower_better ? pv / cv : cv / pv;
}

/* A number printed plainly (valid JSON, no exponent), with sensible
 * precision for its size. */
static const char *bench_fmt(char *buf, size_t n, double v)
{
    double a = fabs(v);
    if (a >= 1000)
        snprintf(buf, n, "%.0f", v);
    else if (a >= 100)
        snprintf(buf, n, "%.1f", v);
    else if (a >= 10)
        snprintf(buf, n, "%.2f", v);
    else if (a >= 1)
        snprintf(buf, n, "%.3f", v);
    else
        snprintf(buf, n, "%.4f", v);
    return buf;
}

/* Human-friendly form with thousands grouping for big numbers. */
static const char *bench_fmt_h(char *buf, size_t n, double v)
{
    if (fabs(v) >= 1e4 && fabs(v) < 1e18) {
        char raw[24], out[40];
        int len, j = 0;
        snprintf(raw, sizeof raw, "%.0f", v);
        len = (int)strlen(raw);
        for (int i = 0; i < len; i++) {
            out[j++] = raw[i];
            int rest = len - 1 - i;
            if (rest > 0 && rest % 3 == 0 && raw[i] != '-')
                out[j++] = ',';
        }
        out[j] = 0;
        snprintf(buf, n, "%s", out);
        return buf;
    }
    return bench_fmt(buf, n, v);
}

/* Load average when the program started (set by bench_note_load). */
static double bench_load_start = -1;

static void bench_note_load(void)
{
    double l[1];
    if (getloadavg(l, 1) == 1)
        bench_load_start = l[0];
}

static void bench_print_header(const char *module, int reps)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double l[1] = {-1};
    getloadavg(l, 1);
    printf("\n== %s: median of %d reps per impl (reps interleaved, warm-up discarded), %ld CPUs, "
           "load avg %.2f at start, %.2f now ==\n",
           module, reps, ncpu, bench_load_start, l[0]);
    printf("%-20s %-21s %16s %-6s %27s   %s\n", "bench", "impl", "median", "unit",
           "min .. max", "conc vs peer (>1: conc better)");
}

static void bench_print_row(bench_row_t *r)
{
    char a[64], b[64], c[64];
    for (int i = 0; i < r->nimpl; i++) {
        bench_impl_t *im = &r->impl[i];
        const char *bn = i == 0 ? r->name : "";
        if (im->status != BENCH_OK || im->n == 0) {
            printf("%-20s %-21s %16s %-6s   %s: %s\n", bn, im->name, "-", r->unit,
                   im->status == BENCH_FAILED ? "FAILED" : "skipped",
                   im->note[0] ? im->note : "no measurement");
            continue;
        }
        double med = bench_impl_median(im);
        char range[80];
        snprintf(range, sizeof range, "%s .. %s", bench_fmt_h(b, sizeof b, bench_min(im->vals, im->n)),
                 bench_fmt_h(c, sizeof c, bench_max(im->vals, im->n)));
        printf("%-20s %-21s %16s %-6s %27s", bn, im->name, bench_fmt_h(a, sizeof a, med), r->unit, range);
        if (strcmp(im->name, "conc") != 0) {
            double s = bench_speedup(r, im->name);
            if (!isnan(s))
                printf("   conc is %.2fx %s", s, im->name);
        }
        printf("\n");
    }
}

/* Append every valid (row, impl) median to path as JSON lines. Creates the
 * parent directory if needed. Returns the number of lines written, -1 on
 * error. */
static int bench_write_jsonl(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        mkdir(dir, 0777); /* one level is enough for build/bench.jsonl */
    }
    FILE *f = fopen(path, "a");
    if (!f) {
        fprintf(stderr, "bench: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    int lines = 0;
    for (int i = 0; i < bench_nrows; i++) {
        bench_row_t *r = &bench_rows[i];
        for (int j = 0; j < r->nimpl; j++) {
            bench_impl_t *im = &r->impl[j];
            char v[64];
            if (!bench_impl_ok(im))
                continue;
            fprintf(f, "{\"bench\":\"%s\",\"impl\":\"%s\",\"value\":%s,\"unit\":\"%s\",\"better\":\"%s\"}\n",
                    r->name, im->name, bench_fmt(v, sizeof v, bench_impl_median(im)), r->unit,
                    r->lower_better ? "lower" : "higher");
            lines++;
        }
    }
    fclose(f);
    return lines;
}

/* ------------------------------------------------- targets (from issues) */

/* Check "conc is at least `want`x peer" on row, print one line, return
 * 1 met, 0 missed, -1 could not be checked. */
static int bench_target(const char *row, const char *peer, double want, const char *text)
{
    bench_row_t *r = bench_row_find(row);
    double s = r ? bench_speedup(r, peer) : NAN;
    if (isnan(s)) {
        printf("  [ n/a ] %-52s (no valid measurement)\n", text);
        return -1;
    }
    int met = s >= want;
    printf("  [%s] %-52s conc is %.2fx %s\n", met ? " MET " : "MISSED", text, s, peer);
    return met;
}

/* Tally of target checks for the closing summary. */
typedef struct bench_tally {
    int met, missed;
} bench_tally_t;

/* bench_target for a row that was run (rows left out by --only are not
 * counted), added to *t. */
static void bench_target_tally(bench_tally_t *t, const char *row, const char *peer, double want,
                               const char *text)
{
    if (!bench_row_find(row))
        return;
    int r = bench_target(row, peer, want, text);
    t->met += r == 1;
    t->missed += r == 0;
}

/* The peer with the best median on row among names (a NULL-terminated
 * list of variants of one peer: "moodycamel", "moodycamel_unbounded", ...),
 * or NULL when none has a valid measurement. */
static inline const char *bench_best_of(bench_row_t *r, const char *const *names)
{
    const char *best = NULL;
    double bv = 0;
    for (; r && *names; names++) {
        bench_impl_t *im = bench_impl_find(r, *names);
        if (!bench_impl_ok(im))
            continue;
        double v = bench_impl_median(im);
        if (!best || (r->lower_better ? v < bv : v > bv))
            best = *names, bv = v;
    }
    return best;
}

/* bench_target_tally against the fastest of a peer's variants (issue 18:
 * ratios are against the peer at its best); the line names the variant. */
static inline void bench_target_best(bench_tally_t *t, const char *row, const char *const *variants, double want,
                                     const char *text)
{
    bench_row_t *r = bench_row_find(row);
    if (!r)
        return;
    const char *best = bench_best_of(r, variants);
    bench_target_tally(t, row, best ? best : variants[0], want, text);
}

/* "conc >= want x python" on every row that has a python impl. */
static void bench_python_targets(bench_tally_t *t, double want)
{
    for (int i = 0; i < bench_nrows; i++) {
        if (!bench_impl_find(&bench_rows[i], "python"))
            continue;
        char text[96];
        snprintf(text, sizeof text, "%s: conc >= %gx python", bench_rows[i].name, want);
        bench_target_tally(t, bench_rows[i].name, "python", want, text);
    }
}

/* The common end of every bench program: the tally line, the JSON lines
 * (if jsonl), the time taken. Returns the exit status: 1 if an impl
 * FAILED its checks or the JSON lines could not be written, else 0. */
static int bench_finish(const char *module, const bench_tally_t *t, const char *jsonl, double t_start)
{
    printf("  %d met, %d missed\n", t->met, t->missed);
    int failed = 0;
    for (int i = 0; i < bench_nrows; i++)
        for (int j = 0; j < bench_rows[i].nimpl; j++)
            failed += bench_rows[i].impl[j].status == BENCH_FAILED;
    if (jsonl) {
        int lines = bench_write_jsonl(jsonl);
        if (lines >= 0)
            printf("\n%d rows appended to %s\n", lines, jsonl);
        else
            failed++;
    }
    printf("%s bench took %.0f s%s\n", module, bench_now() - t_start,
           failed ? "; some impls FAILED their checks (see above)" : "");
    return failed ? 1 : 0;
}

/* ------------------------------------------------------ command line */

/* The options every bench program takes from bench/run, parsed once here:
 *   --reps N  --scale F  --only row,row  --impls a,b  --jsonl FILE
 *   --python PY  --python-script FILE  --settle MS  --go PEER
 *   --list  -h/--help
 * A program points at the variables it uses; an option whose pointer is
 * NULL is accepted and ignored (bench/run passes the common ones to every
 * program). `extra` sees the options this parser does not know first: it
 * returns how many arguments it took (1: a flag, 2: an option with its
 * value), 0 for "not mine". `list` prints the rows for --list (NULL: --list
 * is refused). Returns -1 to go on, else the exit status for main: 0 after
 * --help / --list, 2 on a bad command line (with the usage on stderr). On
 * the way it checks --reps is 1..BENCH_MAX_REPS, --scale > 0 and --settle
 * >= 0 (each value a number as a whole: "5x" is refused), and notes
 * on stderr that fewer than 5 repetitions make poor medians. */
typedef struct bench_args {
    const char *prog;           /* "queue_bench": for the messages */
    void (*usage)(FILE *f);     /* NULL: a generic usage line */
    void (*list)(void);
    int (*extra)(const char *opt, const char *val);
    int *reps;
    double *scale;
    const char **only, **impls, **jsonl, **python, **python_script, **go;
    long *settle_ms;
} bench_args_t;

static void bench__usage(const bench_args_t *a, FILE *f)
{
    if (a->usage)
        a->usage(f);
    else
        fprintf(f, "usage: %s [--reps N] [--scale F] [--only row,row] [--jsonl FILE] [--list]\n", a->prog);
}

static int bench_parse_args(int argc, char **argv, const bench_args_t *a)
{
    for (int i = 1; i < argc;) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int took = a->extra ? a->extra(o, v) : 0;
        if (took > 0) {
            i += took;
            continue;
        }
        if (strcmp(o, "--list") == 0 && a->list) {
            a->list();
            return 0;
        }
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
            bench__usage(a, stdout);
            return 0;
        }
        static const char *const names[] = {"--reps",   "--scale",  "--only",          "--impls", "--jsonl",
                                            "--python", "--python-script", "--go", "--settle"};
        int k = 0, n = (int)(sizeof names / sizeof *names);
        while (k < n && strcmp(o, names[k]) != 0)
            k++;
        if (k == n || !v) {
            if (k == n)
                fprintf(stderr, "%s: unknown option %s\n", a->prog, o);
            bench__usage(a, stderr);
            return 2;
        }
        const char **str[] = {NULL, NULL, a->only, a->impls, a->jsonl, a->python, a->python_script, a->go, NULL};
        /* numbers: the whole value must be one ("5x", "", "1e999" are refused) */
        double num = 0;
        if (k == 0 || k == 1 || k == 8) {
            char *end;
            errno = 0;
            num = strtod(v, &end);
            if (end == v || *end || errno == ERANGE || !isfinite(num) ||
                ((k == 0 || k == 8) && (num != floor(num) || fabs(num) > 1e9))) {
                fprintf(stderr, "%s: %s %s: not a %s\n", a->prog, o, v, k == 1 ? "number" : "whole number");
                bench__usage(a, stderr);
                return 2;
            }
        }
        if (k == 0 && a->reps)
            *a->reps = (int)num;
        else if (k == 1 && a->scale)
            *a->scale = num;
        else if (k == 8 && a->settle_ms)
            *a->settle_ms = (long)num;
        else if (str[k])
            *str[k] = v;
        i += 2;
    }
    if ((a->reps && (*a->reps < 1 || *a->reps > BENCH_MAX_REPS)) || (a->scale && !(*a->scale > 0)) ||
        (a->settle_ms && *a->settle_ms < 0)) {
        fprintf(stderr, "%s: --reps must be 1..%d, --scale > 0 and --settle >= 0\n", a->prog, BENCH_MAX_REPS);
        return 2;
    }
    if (a->reps && *a->reps < 5)
        fprintf(stderr, "note: fewer than 5 repetitions: medians are not reliable\n");
    return -1;
}

/* Is name in the comma-separated list? A NULL list holds everything
 * (--only and --impls left out). */
static inline bool bench_in_list(const char *list, const char *name)
{
    if (!list)
        return true;
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == len && strncmp(p, name, l) == 0)
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

/* ------------------------------------------------- external peer program */

/* Run argv (argv[0] is a path), collect one double per stdout line into
 * out (up to max). stderr passes through. Returns the number of values, or
 * -1 if the program could not run or exited non-zero (why goes to why).
 *
 * Started with posix_spawn, not fork: glibc's posix_spawn shares the
 * parent's memory until exec (CLONE_VM | CLONE_VFORK), while fork marks
 * every private page of the bench copy-on-write, so the next C run that
 * reuses its memory (recycled futures, pools' rings, allocators) would
 * page-fault on every page it writes — measuring the harness, not the
 * work. The peer gets a process group of its own, kept in bench_peer_pgid
 * while it runs, so a watchdog can kill it with its children. */
extern char **environ;
static volatile pid_t bench_peer_pgid;

static int bench_run_peer(char *const argv[], double *out, int max, char *why, size_t whylen)
{
    int fd[2];
    if (pipe2(fd, O_CLOEXEC) != 0) {
        snprintf(why, whylen, "pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1); /* dup2 clears CLOEXEC on fd 1 */
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    fflush(stdout);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(fd[1]);
    if (rc != 0) {
        close(fd[0]);
        snprintf(why, whylen, "cannot run %s: %s", argv[0], strerror(rc));
        return -1;
    }
    bench_peer_pgid = pid;
    FILE *f = fdopen(fd[0], "r");
    int n = 0;
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        char *end;
        double v = strtod(line, &end);
        if (end != line && n < max)
            out[n++] = v;
    }
    if (f)
        fclose(f);
    else
        close(fd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    bench_peer_pgid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(why, whylen, "%s exited with %s %d", argv[0], WIFEXITED(st) ? "status" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        return -1;
    }
    return n;
}

#endif /* CONC_BENCH_UTIL_H */
