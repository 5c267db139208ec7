/*
 * examples/tour/one_word.h — the pools chapter's section "one-word"
 * (included by examples/tour.c, before pools_sections: it uses the tour's
 * CHECK, struct section, the span type and primes_in_process there).
 *
 *   pools/one-word  the same bytes task, submit and map on a
 *                   ThreadPoolExecutor and on a ProcessPoolExecutor: only
 *                   the constructor differs; conc_submit with a pointer on
 *                   the process pool is refused (CONC_ENOTSUP)
 */

/* The body that does not know which pool it got. */
static int one_word_job(conc_executor_t *ex, long *total, long *first)
{
    struct span spans[PRIME_SPANS];
    for (int i = 0; i < PRIME_SPANS; i++) {
        spans[i].lo = (long)PRIME_LIMIT * i / PRIME_SPANS;
        spans[i].hi = (long)PRIME_LIMIT * (i + 1) / PRIME_SPANS;
    }
    conc_future_t *f = NULL;
    int rc = conc_submit_bytes(ex, &f, primes_in_process, &spans[0], sizeof spans[0]);
    const void *r;
    size_t n;
    if (rc == 0)
        rc = conc_future_bytes(f, 60.0, &r, &n);
    if (rc == 0 && n == sizeof *first)
        memcpy(first, r, sizeof *first);
    conc_future_free(f);
    conc_results_t *res = NULL;
    long counts[PRIME_SPANS];
    if (rc == 0)
        rc = conc_map_bytes(ex, primes_in_process, spans, sizeof spans[0], PRIME_SPANS, 2, 60.0, &res);
    if (rc == 0)
        rc = conc_results_copy(res, counts, sizeof counts[0]);
    conc_results_free(res);
    *total = 0;
    for (int i = 0; rc == 0 && i < PRIME_SPANS; i++)
        *total += counts[i];
    return rc;
}

static void *one_word_ptr_task(void *arg) { return arg; }
CONC_REGISTER(one_word_ptr_task);

static int sec_one_word(void)
{
    printf("  In Python, moving work from ThreadPoolExecutor to ProcessPoolExecutor\n"
           "  changes one word. Here too, with a bytes task:\n"
           "      conc_thread_pool_new(&ex, NULL);   // or: conc_process_pool_new(&ex, NULL);\n"
           "      conc_submit_bytes(ex, &f, primes_in_process, &span, sizeof span);\n"
           "      conc_future_bytes(f, CONC_FOREVER, &r, &n);\n"
           "      conc_map_bytes(ex, primes_in_process, spans, sizeof *spans, n, 2, CONC_FOREVER, &res);\n");
    long tt = 0, tf = 0, pt = 0, pf = 0;
    conc_executor_t *ex = NULL;
    int trc = conc_thread_pool_new(&ex, &(conc_thread_pool_opts_t){.max_workers = PRIME_WORKERS});
    if (trc == 0) {
        trc = one_word_job(ex, &tt, &tf);
        CHECK(conc_executor_free(ex) == 0);
    }
    ex = NULL;
    int prc = conc_process_pool_new(&ex, &(conc_process_pool_opts_t){.max_workers = PRIME_WORKERS});
    int refused = 0;
    if (prc == 0) {
        prc = one_word_job(ex, &pt, &pf);
        long x = 42;
        conc_future_t *f = NULL;
        refused = conc_submit(ex, &f, one_word_ptr_task, &x); /* a pointer to another process? */
        CHECK(conc_executor_free(ex) == 0);
    }
    printf("    ThreadPoolExecutor    first span %ld primes, all spans %ld (%s)\n", tf, tt, conc_errname(trc));
    printf("    ProcessPoolExecutor   first span %ld primes, all spans %ld (%s)\n", pf, pt, conc_errname(prc));
    printf("  The same body ran on both. What does not switch: conc_submit(ex, &f, fn, &x)\n"
           "  hands over a pointer, which means nothing in a worker process, so the\n"
           "  process pool refuses it instead of sending the pointer's value:\n"
           "  %s (CONC_ENOTSUP).\n",
           conc_strerror(refused));
    CHECK(trc == 0 && prc == 0);
    CHECK(tt == PRIMES_BELOW_LIMIT && pt == PRIMES_BELOW_LIMIT && tf == pf && tf > 0);
    CHECK(refused == CONC_ENOTSUP);
    return 0;
}
