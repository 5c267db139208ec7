/* lock.c — threading.Lock: `with lock: counter += 1` from four threads. */
#include <conc.h>
#include <stdio.h>

static conc_lock_t lock = CONC_LOCK_INIT;
static long counter;

static void *work(void *arg)
{
    for (int i = 0; i < 100000; i++) {
        conc_lock_acquire(&lock, true, CONC_FOREVER); /* with lock: */
        counter++;
        conc_lock_release(&lock);
    }
    return arg;
}

int main(void)
{
    conc_thread_t *t[4];
    for (int i = 0; i < 4; i++)
        conc_thread_spawn(&t[i], work, NULL, NULL);
    for (int i = 0; i < 4; i++) {
        conc_thread_join(t[i], CONC_FOREVER, NULL);
        conc_thread_free(t[i]);
    }
    printf("counter = %ld (4 x 100000)\n", counter);
    printf("release of an unlocked Lock: %s\n", conc_errname(conc_lock_release(&lock)));
    return counter == 400000 ? 0 : 1;
}
