/* green.c — gevent in C: spawn green threads, let them sleep, join them and
 * read their results; then a Pool that lets at most 2 run at once.
 *
 *     ./green          # about 0.3 s; exits 0 when every result is right
 */
#include <conc.h>
#include <stdint.h>
#include <stdio.h>

static void *nap(void *arg)
{
    intptr_t ms = (intptr_t)arg;
    printf("  %s: sleeping %ld ms\n", conc_green_name(conc_green_current()), (long)ms);
    conc_sleep((double)ms / 1000); /* gevent.sleep: parks only this green thread */
    printf("  %s: woke up\n", conc_green_name(conc_green_current()));
    return (void *)(ms * 2);
}

static int running, most; /* one OS thread runs every green thread: no lock needed */

static void *job(void *arg)
{
    if (++running > most)
        most = running;
    conc_sleep(0.05);
    running--;
    return arg;
}

int main(void)
{
    /* g = gevent.spawn(nap, ms) ... gevent.joinall(gs); g.get() */
    conc_green_t *g[3];
    for (intptr_t i = 0; i < 3; i++)
        conc_go(&g[i], nap, (void *)(100 - 30 * i)); /* they start when main blocks */
    double t0 = conc_monotonic();
    conc_green_joinall(g, 3, CONC_FOREVER); /* main blocks: the hub runs the three */
    int ok = 1;
    for (intptr_t i = 0; i < 3; i++) {
        void *r;
        int rc = conc_green_get(g[i], 0, &r); /* already ended: never waits */
        printf("%s returned %ld (%s)\n", conc_green_name(g[i]), (long)(intptr_t)r, conc_errname(rc));
        ok &= rc == 0 && (intptr_t)r == 2 * (100 - 30 * i);
        conc_green_free(g[i]);
    }
    printf("three naps of 100, 70 and 40 ms took %.0f ms together\n", (conc_monotonic() - t0) * 1e3);

    /* p = gevent.pool.Pool(2); for i in range(6): p.spawn(job, i); p.join() */
    conc_green_pool_t *p;
    conc_green_pool_new(&p, 2);
    for (intptr_t i = 0; i < 6; i++)
        conc_green_pool_spawn(p, NULL, job, (void *)i, CONC_FOREVER); /* waits for a free slot */
    conc_green_pool_join(p, CONC_FOREVER);
    conc_green_pool_free(p);
    printf("Pool(2): 6 jobs, at most %d ran at once\n", most);
    ok &= most == 2;
    return ok ? 0 : 1;
}
