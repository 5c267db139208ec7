/* timer.c — threading.Timer: run a function later, unless cancelled. */
#include <conc.h>
#include <stdio.h>

static void say(void *msg) { printf("%.2fs: %s\n", conc_monotonic(), (const char *)msg); }

int main(void)
{
    conc_timer_t *hello, *never;
    printf("%.2fs: start\n", conc_monotonic());
    conc_timer_start(&hello, 0.2, say, "hello, 0.2 s later"); /* Timer(0.2, say).start() */
    conc_timer_start(&never, 0.1, say, "never printed");
    conc_timer_cancel(never);                                 /* .cancel() */
    conc_timer_join(hello, CONC_FOREVER);                     /* .join() */
    printf("hello fired: %d, never fired: %d\n", conc_timer_fired(hello), conc_timer_fired(never));
    conc_timer_free(hello);
    conc_timer_free(never);
    return 0;
}
