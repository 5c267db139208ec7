/* timer.c — threading.Timer: run a function later, unless cancelled. */
#include <conc.h>
#include <stdio.h>

static double t0;
static void say(void *msg) { printf("%.2f s: %s\n", conc_monotonic() - t0, (const char *)msg); }

int main(void)
{
    conc_timer_t *hello, *never;
    t0 = conc_monotonic();
    conc_timer_start(&hello, 0.2, say, "hello, 0.2 s later"); /* Timer(0.2, say).start() */
    conc_timer_start(&never, 0.1, say, "never printed");
    conc_timer_cancel(never);                                 /* never.cancel() */
    conc_timer_join(hello, CONC_FOREVER);                     /* hello.join() */
    printf("hello fired: %d, never fired: %d\n", conc_timer_fired(hello), conc_timer_fired(never));
    conc_timer_free(hello);
    conc_timer_free(never);
    return 0;
}
