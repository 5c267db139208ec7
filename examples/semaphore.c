/* semaphore.c — threading.Semaphore: at most two downloads at a time. */
#include <conc.h>
#include <stdatomic.h>
#include <stdio.h>

static conc_semaphore_t slots = CONC_SEMAPHORE_INIT(2);
static atomic_int busy;

static void *download(void *arg)
{
    conc_semaphore_acquire(&slots, true, CONC_FOREVER); /* with slots: */
    printf("download %ld starts (%d running)\n", (long)arg, atomic_fetch_add(&busy, 1) + 1);
    conc_sleep_thread(0.05);
    atomic_fetch_sub(&busy, 1);
    conc_semaphore_release(&slots, 1);
    return NULL;
}

int main(void)
{
    conc_thread_t *t[6];
    for (long i = 0; i < 6; i++)
        conc_thread_spawn(&t[i], download, (void *)i, NULL);
    for (int i = 0; i < 6; i++) {
        conc_thread_join(t[i], CONC_FOREVER, NULL);
        conc_thread_free(t[i]);
    }
    return 0;
}
