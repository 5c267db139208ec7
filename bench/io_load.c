/*
 * bench/io_load.c — the echo load generator of bench/io_load.h as a
 * command, for poking at one server by hand (perf, strace, a new model):
 *
 *     io_load PORT [CONNS=50] [SECONDS=2] [ROUNDS=0]
 *
 * Closed loop on 127.0.0.1:PORT, CONNS connections with one 64-byte
 * message each in flight, every echo checked; prints round trips/s.
 */
#include "io_load.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: io_load PORT [CONNS=50] [SECONDS=2] [ROUNDS=0]\n");
        return 2;
    }
    io_load_opts_t o = {.port = atoi(argv[1]), .conns = argc > 2 ? atoi(argv[2]) : 50,
                        .secs = argc > 3 ? atof(argv[3]) : 2.0, .rounds = argc > 4 ? atol(argv[4]) : 0,
                        .warm = 0.2, .stall = 10};
    io_load_result_t r;
    char why[256] = "";
    io_raise_nofile(o.conns + 100L);
    if (o.conns < 1 || io_load_run(&o, &r, why, sizeof why) != 0) {
        fprintf(stderr, "io_load: %s\n", why[0] ? why : "bad arguments");
        return 1;
    }
    printf("%ld round trips in %.2f s: %.0f rt/s (%d connections)\n", r.round_trips, r.seconds, r.rate,
           o.conns);
    return 0;
}
