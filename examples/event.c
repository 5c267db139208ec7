/* event.c — threading.Event: one set() releases every waiter. */
#include <conc.h>
#include <stdio.h>

static conc_event_t go = CONC_EVENT_INIT;

static void *runner(void *arg)
{
    conc_event_wait(&go, CONC_FOREVER); /* go.wait() */
    printf("runner %ld off\n", (long)arg);
    return NULL;
}

int main(void)
{
    conc_thread_t *t[3];
    for (long i = 0; i < 3; i++)
        conc_thread_spawn(&t[i], runner, (void *)i, NULL);
    printf("ready... ");
    conc_sleep_thread(0.1);
    printf("go!\n");
    conc_event_set(&go); /* go.set() */
    for (int i = 0; i < 3; i++) {
        conc_thread_join(t[i], CONC_FOREVER, NULL);
        conc_thread_free(t[i]);
    }
    return 0;
}
