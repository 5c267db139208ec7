/* callbacks.c — 回调函数: Future.add_done_callback, then() chains (beyond
 * Python) and a map that reports its progress. */
#include <conc.h>
#include <stdint.h>
#include <stdio.h>

#define N(p) ((int)(intptr_t)(p))
#define P(n) ((void *)(intptr_t)(n))

static conc_semaphore_t told = CONC_SEMAPHORE_INIT(0); /* one unit per callback */

static void *fetch_price(void *arg)
{
    conc_sleep_thread(0.02);
    if (N(arg) < 0)
        return conc_fail(CONC_EINVAL, "no item %d", N(arg));
    return P(100 + N(arg));
}

/* fn(future): runs once the future is done, in the thread that finished it
 * (or at once, in the caller, if it was done already). */
static void tell(conc_future_t *f, void *arg)
{
    void *price;
    int rc = conc_future_result(f, 0, &price);        /* done: never waits */
    int code = 0;
    conc_future_exception(f, 0, &code, NULL);         /* CONC_EFAILED: the task's own code */
    if (rc == 0)
        printf("  [%s] item %d costs %d\n", (const char *)arg, N(price) - 100, N(price));
    else
        printf("  [%s] failed: %s\n", (const char *)arg, conc_errname(code));
    conc_semaphore_release(&told, 1);
}

static void *with_tax(void *price, void *rate) { return P(N(price) * (100 + N(rate)) / 100); }
static void *in_cents(void *price, void *arg) { (void)arg; return P(N(price) * 100); }

static void progress(size_t done, size_t total, void *arg)
{
    (void)arg;
    if (done % 5 == 0 || done == total)
        printf("  %zu/%zu done\n", done, total);
}

int main(void)
{
    conc_executor_t *pool;
    conc_thread_pool_new(&pool, NULL);                /* ThreadPoolExecutor() */

    conc_future_t *a, *b;
    conc_submit(pool, &a, fetch_price, P(3));
    conc_submit(pool, &b, fetch_price, P(-1));
    conc_future_add_done_callback(a, tell, "first");  /* a.add_done_callback(tell) */
    conc_future_add_done_callback(b, tell, "second");
    for (int i = 0; i < 2; i++)                       /* both callbacks have run */
        conc_semaphore_acquire(&told, true, 5.0);
    conc_future_add_done_callback(a, tell, "now");    /* already done: runs right here */

    conc_future_t *taxed, *cents;                     /* beyond Python: then() */
    conc_future_then(a, &taxed, with_tax, P(20));     /* 103 -> 123 */
    conc_future_then(taxed, &cents, in_cents, NULL);  /* 123 -> 12300 */
    void *r;
    conc_future_result(cents, CONC_FOREVER, &r);
    printf("  then().then(): %d cents\n", N(r));

    void *args[20], *prices[20];
    for (int i = 0; i < 20; i++)
        args[i] = P(i);
    conc_map_opts_t opts = {.timeout = 10.0, .progress = progress};
    int rc = conc_map(pool, fetch_price, args, 20, prices, &opts);
    printf("  map: %s, last price %d\n", conc_errname(rc), N(prices[19]));

    conc_future_free(a);
    conc_future_free(b);
    conc_future_free(taxed);
    conc_future_free(cents);
    conc_executor_free(pool);
    return rc;
}
