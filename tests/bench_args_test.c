/*
 * tests/bench_args_test.c — bench_parse_args (bench/bench_util.h), the
 * command line every benchmark program shares: good values are taken, and
 * bad ones (unknown options, a missing value, "5x", out of range) give the
 * exit status 2 instead of a silent default or a run with garbage.
 */
#include "test_util.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "../bench/bench_util.h"
#pragma GCC diagnostic pop

static int reps;
static double scale;
static long settle;
static const char *only, *jsonl;

static int parse(int argc, const char **argv)
{
    reps = 5;
    scale = 1;
    settle = 30;
    only = jsonl = NULL;
    bench_args_t a = {.prog = "x_bench", .reps = &reps, .scale = &scale, .settle_ms = &settle,
                      .only = &only, .jsonl = &jsonl};
    return bench_parse_args(argc, (char **)argv, &a);
}

#define PARSE(...)                                                                                 \
    ({                                                                                             \
        const char *argv_[] = {"x_bench", __VA_ARGS__};                                            \
        parse((int)(sizeof argv_ / sizeof *argv_), argv_);                                          \
    })

Test(bench_args, good_values_are_taken)
{
    cr_assert_eq(PARSE("--reps", "7", "--scale", "0.25", "--settle", "0", "--only", "a,b", "--jsonl", "f"), -1);
    cr_assert_eq(reps, 7);
    cr_assert_float_eq(scale, 0.25, 1e-12);
    cr_assert_eq(settle, 0);
    cr_assert_str_eq(only, "a,b");
    cr_assert_str_eq(jsonl, "f");
    cr_assert_eq(PARSE("--scale", "1e-3"), -1);
    cr_assert_float_eq(scale, 1e-3, 1e-12);
}

Test(bench_args, bad_values_are_refused)
{
    cr_assert_eq(PARSE("--reps", "5x"), 2);
    cr_assert_eq(PARSE("--reps", ""), 2);
    cr_assert_eq(PARSE("--reps", "2.5"), 2);
    cr_assert_eq(PARSE("--reps", "0"), 2);
    cr_assert_eq(PARSE("--reps", "99999999999"), 2);
    cr_assert_eq(PARSE("--reps", "65"), 2);
    cr_assert_eq(PARSE("--scale", "abc"), 2);
    cr_assert_eq(PARSE("--scale", "0"), 2);
    cr_assert_eq(PARSE("--scale", "-1"), 2);
    cr_assert_eq(PARSE("--scale", "nan"), 2);
    cr_assert_eq(PARSE("--scale", "inf"), 2);
    cr_assert_eq(PARSE("--scale", "1e999"), 2);
    cr_assert_eq(PARSE("--settle", "-5"), 2);
    cr_assert_eq(PARSE("--settle", "10ms"), 2);
    cr_assert_eq(PARSE("--reps"), 2);        /* no value */
    cr_assert_eq(PARSE("--no-such-option"), 2);
}

Test(bench_args, help_exits_zero)
{
    cr_assert_eq(PARSE("--help"), 0);
}
