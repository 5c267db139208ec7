/*
 * bench/patch_bench.c — libconc_patch.so (issue 15): unmodified blocking
 * hiredis clients made cooperative by the interposer.
 *
 * Row (see bench/README.md):
 *   io.patch.redis   ops/s: 100 clients x 20 GETs each of one small key
 *                    against a redis-server on loopback, one connection per
 *                    client (made before the clock starts)
 *                    green threads sequential
 *
 * The impls:
 *   green       100 green threads on one OS thread, each calling hiredis's
 *               synchronous redisCommand: its blocking read(2)/write(2)
 *               go through libconc_patch.so and park only the green thread
 *   threads     the same on 100 OS threads (started before the clock, let
 *               go together); the patch passes their calls to libc
 *   sequential  one OS thread, one connection, all 2000 GETs in a row
 *
 * This program links libconc_patch.so before libc (the "linked first" way
 * of using the patch, instead of LD_PRELOAD), and libconc.so. The server
 * is started here (127.0.0.1, a free port, no persistence) and stopped at
 * the end; without redis-server every impl is skipped with a note.
 *
 * Method: one discarded warm-up per impl, then the repetitions interleaved
 * in a rotating order; medians. One measurement is 10 rounds of the work
 * (threads: started anew each round, before its clock starts), their
 * times added. Checks: every GET must return the value
 * that was SET, else the impl FAILS.
 *
 * Usage: patch_bench [--reps N] [--scale F] [--jsonl FILE]
 * (--scale multiplies the GETs per client.)
 */
#include "bench_util.h"

#include <pthread.h>
#include <stdatomic.h>

#include <conc.h>
#include <conc/patch.h>
#include <hiredis/hiredis.h>

#include "../tests/patch/redis_server.h"

enum { CLIENTS = 100, ROUNDS = 10 };
static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_jsonl;
static int gets_per_client = 20;
static redis_server_t server;
static redisContext *ctxs[CLIENTS];
static _Atomic long bad;

static void client_gets(redisContext *c)
{
    for (int i = 0; i < gets_per_client; i++) {
        redisReply *r = redisCommand(c, "GET conc:bench");
        if (!r || r->type != REDIS_REPLY_STRING || strcmp(r->str, "value") != 0)
            atomic_fetch_add(&bad, 1);
        if (r)
            freeReplyObject(r);
    }
}

static void *green_client(void *arg)
{
    client_gets(arg);
    return NULL;
}

static double run_green(void)
{
    conc_green_t *g[CLIENTS];
    double t0 = bench_now();
    for (int i = 0; i < CLIENTS; i++)
        if (conc_go(&g[i], green_client, ctxs[i]) != 0)
            return -1;
    for (int i = 0; i < CLIENTS; i++) {
        conc_green_join(g[i], CONC_FOREVER);
        conc_green_free(g[i]);
    }
    return bench_now() - t0;
}

static pthread_barrier_t gate;
static void *thread_client(void *arg)
{
    pthread_barrier_wait(&gate);
    client_gets(arg);
    return NULL;
}

static double run_threads(void)
{
    pthread_t t[CLIENTS];
    pthread_barrier_init(&gate, NULL, CLIENTS + 1);
    for (int i = 0; i < CLIENTS; i++)
        if (pthread_create(&t[i], NULL, thread_client, ctxs[i]) != 0) {
            fprintf(stderr, "patch_bench: cannot start thread %d\n", i);
            exit(1);
        }
    pthread_barrier_wait(&gate);
    double t0 = bench_now();
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(t[i], NULL);
    double took = bench_now() - t0;
    pthread_barrier_destroy(&gate);
    return took;
}

static double run_sequential(void)
{
    double t0 = bench_now();
    for (int i = 0; i < CLIENTS; i++)
        client_gets(ctxs[0]);
    return bench_now() - t0;
}

/* One measurement: ROUNDS rounds of the work, their times added up (a
 * round is short, ~30 ms: one alone is at the mercy of the scheduler on
 * a loaded machine). */
static double rounds(double (*round)(void))
{
    double total = 0;
    for (int i = 0; i < ROUNDS; i++) {
        double s = round();
        if (s < 0)
            return -1;
        total += s;
    }
    return total;
}
static double green_rounds(void) { return rounds(run_green); }
static double threads_rounds(void) { return rounds(run_threads); }
static double sequential_rounds(void) { return rounds(run_sequential); }

static const struct {
    const char *name;
    double (*run)(void);
} impls[] = {{"green", green_rounds}, {"threads", threads_rounds}, {"sequential", sequential_rounds}};
enum { NIMPL = sizeof impls / sizeof impls[0] };

/* bench_util.h helpers this program has no use for */
static void unused_helpers(void) __attribute__((unused));
static void unused_helpers(void)
{
    (void)bench_run_peer;
    (void)bench_python_targets;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: patch_bench [--reps N] [--scale F] [--jsonl FILE]\n");
}

static void list_rows(void)
{
    printf("io.patch.redis\n");
}

int main(int argc, char **argv)
{
    static const bench_args_t args = {
        .prog = "patch_bench", .usage = usage, .list = list_rows, .reps = &opt_reps, .scale = &opt_scale,
        .jsonl = &opt_jsonl};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    gets_per_client = (int)(20 * opt_scale + 0.5);
    if (gets_per_client < 1)
        gets_per_client = 1;
    if (!conc_patch_active()) {
        fprintf(stderr, "patch_bench: libconc_patch.so is off (CONC_PATCH=0?): the green impl would stall\n");
        return 1;
    }

    bench_note_load();
    double t_start = bench_now();
    bench_row_t *row = bench_row_new("io.patch.redis", "ops/s", false);
    bench_impl_t *im[NIMPL];
    for (int i = 0; i < NIMPL; i++)
        im[i] = bench_impl_add(row, impls[i].name);

    char why[256];
    if (redis_server_start(&server, why, sizeof why) != 0) {
        for (int i = 0; i < NIMPL; i++)
            bench_impl_note(im[i], BENCH_SKIPPED, "%s", why);
    } else {
        bool ok = true;
        for (int i = 0; i < CLIENTS && ok; i++) {
            ctxs[i] = redisConnect("127.0.0.1", server.port);
            ok = ctxs[i] && !ctxs[i]->err;
        }
        redisReply *r = ok ? redisCommand(ctxs[0], "SET conc:bench value") : NULL;
        ok = ok && r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (!ok) {
            for (int i = 0; i < NIMPL; i++)
                bench_impl_note(im[i], BENCH_FAILED, "cannot connect to or SET on the redis-server");
        } else {
            double ops = (double)ROUNDS * CLIENTS * gets_per_client;
            for (int i = 0; i < NIMPL; i++) /* warm-up */
                impls[i].run();
            for (int rep = 0; rep < opt_reps; rep++)
                for (int k = 0; k < NIMPL; k++) {
                    int i = (k + rep) % NIMPL;
                    atomic_store(&bad, 0);
                    double s = impls[i].run();
                    if (s <= 0 || atomic_load(&bad))
                        bench_impl_note(im[i], BENCH_FAILED, "%ld GETs went wrong", atomic_load(&bad));
                    else
                        bench_impl_record(im[i], ops / s);
                }
            for (int i = 0; i < NIMPL; i++)
                if (im[i]->status == BENCH_OK && im[i]->n == 0)
                    bench_impl_note(im[i], BENCH_FAILED, "no measurement");
        }
        for (int i = 0; i < CLIENTS; i++)
            if (ctxs[i])
                redisFree(ctxs[i]);
        redis_server_stop(&server);
    }

    bench_print_header("patch", opt_reps);
    bench_print_row(row);
    printf("\ntargets (issue 15), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    if (bench_impl_ok(im[0]) && bench_impl_ok(im[1])) {
        double s = bench_impl_median(im[0]) / bench_impl_median(im[1]);
        bool met = s >= 0.8;
        printf("  [%s] %-52s green is %.2fx threads\n", met ? " MET " : "MISSED",
               "io.patch.redis: green ops/s >= 0.8x threads", s);
        tally.met += met;
        tally.missed += !met;
        if (bench_impl_ok(im[2]))
            printf("          (green is %.2fx sequential)\n", bench_impl_median(im[0]) / bench_impl_median(im[2]));
    } else {
        printf("  [ n/a ] %-52s (no valid measurement)\n", "io.patch.redis: green ops/s >= 0.8x threads");
    }
    return bench_finish("patch", &tally, opt_jsonl, t_start);
}
