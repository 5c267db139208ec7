/*
 * tests/patch/static_warns.c — a program with its own copy of libconc
 * (linked statically), run with LD_PRELOAD=libconc_patch.so. The patch
 * links libconc.so, a second copy that cannot see this program's green
 * threads; the first blocking call made on one must say so (ctest checks
 * the message) and go to libc unchanged (so it still works).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>

#include <conc.h>

static void *body(void *arg)
{
    int *rc = arg;
    *rc = usleep(1000); /* not patched: blocks this OS thread for 1 ms */
    return NULL;
}

int main(void)
{
    int rc = -7;
    conc_green_t *g;
    if (conc_go(&g, body, &rc) != 0 || conc_green_join(g, 10) != 0)
        return 2;
    conc_green_free(g);
    printf("usleep on a green thread of a static libconc returned %d\n", rc);
    return rc == 0 ? 0 : 1;
}
