/* barrier.c — threading.Barrier: three parties meet twice; the action runs once per cycle. */
#include <conc.h>
#include <stdio.h>

static conc_barrier_t b;

static void all_here(void *arg) { (void)arg; printf("-- everyone arrived\n"); }

static void *party(void *arg)
{
    for (int round = 0; round < 2; round++) {
        int idx;
        conc_barrier_wait(&b, CONC_BARRIER_DEFAULT, &idx); /* b.wait() */
        printf("party %ld passed round %d with index %d\n", (long)arg, round, idx);
    }
    return NULL;
}

int main(void)
{
    conc_barrier_init(&b, 3, all_here, NULL, CONC_FOREVER); /* Barrier(3, action) */
    conc_thread_t *t[3];
    for (long i = 0; i < 3; i++)
        conc_thread_spawn(&t[i], party, (void *)i, NULL);
    for (int i = 0; i < 3; i++) {
        conc_thread_join(t[i], CONC_FOREVER, NULL);
        conc_thread_free(t[i]);
    }
    return 0;
}
