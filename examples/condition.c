/* condition.c — threading.Condition: wait_for a predicate, notify. */
#include <conc.h>
#include <stdio.h>

static conc_cond_t cond = CONC_COND_INIT; /* Condition() owns an RLock */
static int items;

static bool have_item(void *arg) { (void)arg; return items > 0; }

static void *consumer(void *arg)
{
    conc_cond_acquire(&cond, true, CONC_FOREVER);         /* with cond:        */
    conc_cond_wait_for(&cond, have_item, NULL, CONC_FOREVER); /* cond.wait_for() */
    printf("consumer got item %d\n", items--);
    conc_cond_release(&cond);
    return arg;
}

int main(void)
{
    conc_thread_t *t;
    conc_thread_spawn(&t, consumer, NULL, NULL);
    conc_sleep_thread(0.05);
    conc_cond_acquire(&cond, true, CONC_FOREVER);
    items = 1;
    conc_cond_notify(&cond, 1); /* cond.notify() */
    conc_cond_release(&cond);
    conc_thread_join(t, CONC_FOREVER, NULL);
    conc_thread_free(t);
    return items == 0 ? 0 : 1;
}
