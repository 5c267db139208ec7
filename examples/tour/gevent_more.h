/*
 * examples/tour/gevent_more.h — the "gevent" chapter of the tour: the rest
 * of gevent's API beyond spawn/join/kill (the "green" chapter).
 *
 *   gevent/pool      Pool.imap_unordered, PoolFull on a full pool, apply
 *   gevent/timeout   Timeout objects cancelled out of order, a custom code,
 *                    with_timeout
 *   gevent/channel   a Channel: put returns only once a getter took it
 *   gevent/wait      gevent.wait over a green thread, an Event and a Queue
 *
 * Included by examples/tour.c (it uses struct section and CHECK).
 */

static void *gm_fetch(void *arg) /* a "download" that takes arg ms */
{
    conc_sleep((double)(intptr_t)arg / 1000.0);
    return arg;
}

static int sec_gm_pool(void)
{
    conc_green_pool_t *p;
    CHECK(conc_green_pool_new(&p, 2) == 0);                /* pool = Pool(2) */
    void *ms[5] = {(void *)60, (void *)10, (void *)40, (void *)20, (void *)5};
    conc_green_imap_opts_t o = {.unordered = true};
    conc_green_imap_t *it;
    CHECK(conc_green_pool_imap(&it, p, gm_fetch, ms, 5, &o) == 0); /* pool.imap_unordered(fetch, ms) */
    printf("  imap_unordered over 60,10,40,20,5 ms with 2 slots, as they finish:");
    void *r;
    size_t i;
    int n = 0;
    while (conc_green_imap_next(it, &r, &i) == 0) {
        printf(" %d", (int)(intptr_t)r);
        n++;
    }
    printf("\n");
    CHECK(n == 5);
    conc_green_imap_free(it);
    conc_green_pool_spawn(p, NULL, gm_fetch, (void *)50, 0);
    conc_green_pool_spawn(p, NULL, gm_fetch, (void *)50, 0);
    int rc = conc_green_pool_spawn(p, NULL, gm_fetch, (void *)1, 0); /* spawn on a full pool */
    printf("  full: %s, free_count %zu; a third spawn without waiting: CONC_EFULL (%s: PoolFull)\n",
           conc_green_pool_full(p) ? "yes" : "no", conc_green_pool_free_count(p), conc_errname(rc));
    CHECK(rc == CONC_EFULL);
    void *v = NULL;
    CHECK(conc_green_pool_apply(p, gm_fetch, (void *)7, &v) == 0); /* pool.apply(fetch, (7,)) */
    printf("  apply waited for a slot, then for its result: %d\n", (int)(intptr_t)v);
    conc_green_pool_join(p, 5);
    conc_green_pool_free(p);
    return 0;
}

static int sec_gm_timeout(void)
{
    conc_timeout_t outer, inner;
    conc_timeout_start_new(&outer, 0.01, CONC_ECANCELLED);  /* Timeout(0.01, MyError).start() */
    conc_timeout_start_new(&inner, 0.03, 0);                /* Timeout(0.03).start() */
    conc_timeout_cancel(&outer);                            /* the outer one first: allowed */
    int rc = conc_sleep(1);
    printf("  outer cancelled while inner open; the sleep was cut by the inner one: %s\n", conc_errname(rc));
    CHECK(rc == CONC_ETIMEDOUT);
    conc_timeout_cancel(&inner);
    conc_timeout_start_new(&outer, 0.01, CONC_ECANCELLED);
    rc = conc_sleep(1);
    printf("  a Timeout with its own code: the cut wait returns %s\n", conc_errname(rc));
    CHECK(rc == CONC_ECANCELLED);
    conc_timeout_cancel(&outer);
    void *r = NULL;
    rc = conc_with_timeout(0.01, gm_fetch, (void *)1000, (void *)-1, &r); /* with_timeout(.01, f, timeout_value=-1) */
    printf("  with_timeout(0.01, a 1 s job, timeout_value=-1) -> %d (%s)\n", (int)(intptr_t)r, conc_errname(rc));
    CHECK(rc == CONC_ETIMEDOUT && r == (void *)-1);
    return 0;
}

static conc_channel_t *gm_ch;
static void *gm_taker(void *arg)
{
    (void)arg;
    conc_sleep(0.02); /* late on purpose */
    void *x = NULL;
    conc_channel_get(gm_ch, &x, true, 5);
    return x;
}

static int sec_gm_channel(void)
{
    CHECK(conc_channel_new(&gm_ch) == 0);                   /* ch = Channel() */
    conc_green_t *g;
    conc_go(&g, gm_taker, NULL);
    double t0 = conc_monotonic();
    CHECK(conc_channel_put(gm_ch, (void *)42, true, 5) == 0); /* ch.put(42): waits for the getter */
    printf("  put returned after %.0f ms, when the late getter took the item\n",
           (conc_monotonic() - t0) * 1e3);
    void *got = NULL;
    conc_green_get(g, 5, &got);
    CHECK(got == (void *)42);
    int rc = conc_channel_put(gm_ch, (void *)1, false, 0);
    printf("  put_nowait with nobody waiting: %s\n", conc_errname(rc));
    CHECK(rc == CONC_EFULL);
    conc_green_free(g);
    conc_channel_free(gm_ch);
    return 0;
}

static conc_event_t gm_ev;
static void *gm_set(void *arg)
{
    (void)arg;
    conc_sleep(0.02);
    conc_event_set(&gm_ev);
    return NULL;
}

static int sec_gm_wait(void)
{
    conc_event_init(&gm_ev);
    conc_queue_t *q;
    conc_queue_new(&q, CONC_FIFO, 0);
    conc_green_t *worker, *setter;
    conc_go(&worker, gm_fetch, (void *)40);
    conc_go(&setter, gm_set, NULL);
    conc_queue_put(q, (void *)1, true, 1);
    conc_waitable_t objs[3] = {{.kind = CONC_WAITABLE_GREEN, .obj = worker},
                               {.kind = CONC_WAITABLE_EVENT, .obj = &gm_ev},
                               {.kind = CONC_WAITABLE_QUEUE, .obj = q}};
    const char *names[3] = {"green thread", "event", "queue"};
    size_t ready[3], n = 0;
    conc_green_wait(objs, 3, 0, 5, ready, &n);             /* for obj in gevent.iwait([...]): */
    printf("  ready in this order:");
    for (size_t i = 0; i < n; i++)
        printf(" %s%s", names[ready[i]], i + 1 < n ? "," : "\n");
    CHECK(n == 3 && ready[0] == 2 && ready[1] == 1 && ready[2] == 0);
    conc_green_free(worker);
    conc_green_join(setter, 5);
    conc_green_free(setter);
    conc_queue_free(q, NULL);
    return 0;
}

static const struct section gevent_more_sections[] = {
    {"pool", "gevent.pool.Pool: imap_unordered, PoolFull, apply", sec_gm_pool,
     "for r in Pool(2).imap_unordered(fetch, ms): print(r)"},
    {"timeout", "gevent.Timeout objects: cancel in any order, own exception, with_timeout", sec_gm_timeout,
     "t = Timeout(0.01, MyError); t.start(); ...; t.cancel()"},
    {"channel", "gevent.queue.Channel: a queue of size 0 (rendezvous)", sec_gm_channel,
     "ch = Channel(); ch.put(42)  # returns once a getter took it"},
    {"wait", "gevent.wait / iwait over a greenlet, an Event and a Queue", sec_gm_wait,
     "for obj in gevent.iwait([g, event, queue]): ..."},
    {NULL, NULL, NULL, NULL},
};
