/*
 * green_smoke.c — a self-checking tour of the green-thread machinery that
 * needs nothing but libc: run natively under Valgrind (`make
 * test-valgrind`) and cross-compiled for AArch64 under qemu-user (`make
 * test-arch`). It checks what a context switch must preserve
 * (callee-saved integer and floating-point registers, the stack), and the
 * hub's paths: yield, timers, a wakeup from another OS thread, kill,
 * locals, a thread-pool offload. Exit status 0 means all good.
 */
#include <conc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c)) {                                                          \
            fprintf(stderr, "green_smoke: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            failures++;                                                      \
        }                                                                    \
    } while (0)

/* Values live in registers across many switches (the compiler keeps them
 * in callee-saved registers: integer and, on AArch64, d8-d15). */
static void *pinger(void *arg)
{
    long id = (long)arg;
    double a = 1.5 * (double)id, b = 0.25, acc = 0;
    long x = id * 1000003, y = id ^ 0x5a5a;
    for (int i = 0; i < 20000; i++) {
        acc += a * b;
        x = x * 31 + y;
        if (conc_yield() != 0)
            return NULL;
    }
    long want_x = id * 1000003;
    for (int i = 0; i < 20000; i++)
        want_x = want_x * 31 + (id ^ 0x5a5a);
    if (acc != 20000 * (1.5 * (double)id * 0.25) || x != want_x)
        return NULL;
    return arg;
}

static long depth(long n)
{
    volatile char pad[512];
    memset((char *)pad, (int)n, sizeof pad);
    return n == 0 ? 0 : pad[7] + depth(n - 1) - (char)n + 1;
}

static void *deep(void *arg)
{
    (void)arg;
    return (void *)depth(100); /* ~60 KiB of a 128 KiB stack */
}

static conc_event_t ev = CONC_EVENT_INIT;

static void *event_waiter(void *arg)
{
    (void)arg;
    return (void *)(long)conc_event_wait(&ev, 10);
}

static void *setter(void *arg)
{
    (void)arg;
    conc_sleep(0.02);
    conc_event_set(&ev);
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    return (void *)(long)conc_sleep(10);
}

static void *square(void *arg)
{
    long v = (long)arg;
    return (void *)(v * v);
}

#if defined(__aarch64__)
/* The FP control register is per context, as MXCSR and the x87 control
 * word are on x86-64: a green thread's rounding mode stays its own. */
static unsigned long get_fpcr(void)
{
    unsigned long v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    return v;
}
static void set_fpcr(unsigned long v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v)); }
#define RMODE_TOWARDZERO (3ul << 22)
static void *fpcr_keeper(void *arg)
{
    unsigned long mine = (unsigned long)arg;
    set_fpcr(mine);
    for (int i = 0; i < 100; i++) {
        if (conc_yield() != 0 || get_fpcr() != mine)
            return NULL;
    }
    set_fpcr(0);
    return arg;
}

/* A green thread starts with its spawner's FPCR, whatever the one that
 * ran on its recycled stack left there. */
static void *fpcr_leave_dirty(void *arg)
{
    (void)arg;
    set_fpcr(1ul << 22); /* round up, left set at the end */
    return NULL;
}
static void *fpcr_report(void *arg)
{
    (void)arg;
    return (void *)get_fpcr();
}
static unsigned long fpcr_of_next_spawn(void)
{
    conc_green_t *g;
    void *r = NULL;
    if (conc_go(&g, fpcr_leave_dirty, NULL) != 0 || conc_green_join(g, 30) != 0)
        return ~0ul;
    conc_green_free(g);
    if (conc_go(&g, fpcr_report, NULL) != 0 || conc_green_get(g, 30, &r) != 0)
        return ~0ul;
    conc_green_free(g);
    return (unsigned long)r;
}
#endif

static conc_local_t *loc;

static void *with_local(void *arg)
{
    conc_local_set(loc, arg, NULL);
    conc_yield();
    return conc_local_get(loc);
}

int main(void)
{
    conc_green_t *g[4];
    void *r;
    for (long i = 0; i < 4; i++)
        CHECK(conc_go(&g[i], pinger, (void *)(i + 1)) == 0);
    for (long i = 0; i < 4; i++) {
        CHECK(conc_green_get(g[i], 30, &r) == 0 && r == (void *)(i + 1));
        conc_green_free(g[i]);
    }

    CHECK(conc_go(&g[0], deep, NULL) == 0);
    CHECK(conc_green_get(g[0], 30, &r) == 0 && (long)r == 100);
    conc_green_free(g[0]);

    /* a wakeup from another OS thread */
    conc_thread_t *t;
    CHECK(conc_go(&g[0], event_waiter, NULL) == 0);
    CHECK(conc_thread_spawn(&t, setter, NULL, NULL) == 0);
    CHECK(conc_green_get(g[0], 30, &r) == 0 && r == NULL);
    conc_green_free(g[0]);
    CHECK(conc_thread_join(t, 30, NULL) == 0);
    conc_thread_free(t);

    /* timers and kill */
    CHECK(conc_go(&g[0], sleeper, NULL) == 0);
    CHECK(conc_sleep(0.01) == 0);
    CHECK(conc_green_kill(g[0], true, 30) == 0 && conc_green_killed(g[0]));
    conc_green_free(g[0]);

#if defined(__aarch64__)
    /* FPCR per context: two green threads with their own rounding modes
     * and main's, switching among each other */
    {
        unsigned long main_fpcr = get_fpcr();
        CHECK(conc_go(&g[0], fpcr_keeper, (void *)RMODE_TOWARDZERO) == 0);
        CHECK(conc_go(&g[1], fpcr_keeper, (void *)(1ul << 22)) == 0);
        for (int i = 0; i < 50; i++) {
            conc_yield();
            CHECK(get_fpcr() == main_fpcr);
        }
        CHECK(conc_green_get(g[0], 30, &r) == 0 && r == (void *)RMODE_TOWARDZERO);
        CHECK(conc_green_get(g[1], 30, &r) == 0 && r == (void *)(1ul << 22));
        CHECK(get_fpcr() == main_fpcr);
        conc_green_free(g[0]);
        conc_green_free(g[1]);
        /* a new green thread gets its spawner's FPCR on a recycled stack */
        CHECK(fpcr_of_next_spawn() == main_fpcr);
        set_fpcr(main_fpcr | RMODE_TOWARDZERO | (1ul << 24)); /* + flush-to-zero */
        CHECK(fpcr_of_next_spawn() == (main_fpcr | RMODE_TOWARDZERO | (1ul << 24)));
        set_fpcr(main_fpcr);
    }
#endif
    /* green-thread locals */
    CHECK(conc_local_new(&loc, NULL) == 0);
    CHECK(conc_go(&g[0], with_local, (void *)1) == 0 && conc_go(&g[1], with_local, (void *)2) == 0);
    CHECK(conc_green_get(g[0], 30, &r) == 0 && r == (void *)1);
    CHECK(conc_green_get(g[1], 30, &r) == 0 && r == (void *)2);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    conc_local_free(loc);

    /* offload to the thread pool, parking only this context */
    CHECK(conc_green_offload(square, (void *)12, &r) == 0 && (long)r == 144);

    /* many short-lived green threads (stacks are reused) */
    for (int i = 0; i < 2000; i++) {
        CHECK(conc_go(&g[0], square, (void *)(long)i) == 0);
        CHECK(conc_green_get(g[0], 30, &r) == 0 && (long)r == (long)i * i);
        conc_green_free(g[0]);
    }
    if (failures) {
        fprintf(stderr, "green_smoke: %d check(s) failed\n", failures);
        return 1;
    }
    printf("green_smoke: all checks passed\n");
    return 0;
}
