/* green_demo.c — a program for the gdb helper's test (tests/gdb/check.sh):
 * three green threads, stopped at stop_here() while one runs, one sleeps
 * and one waits on an Event. */
#include <conc.h>
#include <stdio.h>
static conc_event_t ev = CONC_EVENT_INIT;
static void *waiter(void *a){ (void)a; conc_event_wait(&ev, CONC_FOREVER); return 0; }
static void *sleeper(void *a){ (void)a; conc_sleep(100); return 0; }
__attribute__((noinline)) void stop_here(void) { __asm__ volatile("" ::: "memory"); }
static void *runner(void *a){ (void)a; stop_here(); conc_event_set(&ev); return 0; }
int main(void){ conc_green_opts_t o = {.name = "the-waiter"}; conc_green_t *a,*b,*c; conc_go_opts(&a,&o,waiter,0); conc_go(&b,sleeper,0); conc_go(&c,runner,0); conc_yield(); conc_yield(); conc_green_kill(b,1,1); conc_green_join(a,1); printf("done\n"); return 0; }
