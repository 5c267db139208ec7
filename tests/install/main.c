/* Consumer of an installed conc: two threads add under a Lock. */
#include <conc.h>
#include <stdio.h>

static conc_lock_t lock = CONC_LOCK_INIT;
static long total;

static void *add(void *arg)
{
    long n = *(long *)arg;
    for (long i = 0; i < n; i++) {
        conc_lock_acquire(&lock, true, CONC_FOREVER);
        total++;
        conc_lock_release(&lock);
    }
    return NULL;
}

int main(void)
{
    long n = 100000;
    conc_thread_t *t;
    int rc = conc_thread_spawn(&t, add, &n, NULL);
    if (rc != 0) {
        fprintf(stderr, "spawn: %s\n", conc_strerror(rc));
        return 1;
    }
    add(&n);
    rc = conc_thread_join(t, CONC_FOREVER, NULL);
    conc_thread_free(t);
    if (rc != 0 || total != 2 * n) {
        fprintf(stderr, "join: %s, total %ld\n", conc_strerror(rc), total);
        return 1;
    }
    printf("consumer ok: total=%ld\n", total);
    return 0;
}
