/*
 * More methods of a Manager's proxies. ListProxy insert / index / count /
 * remove / reverse with Python's list semantics (insert clamps its index;
 * index/remove of an absent value is ValueError: CONC_EEMPTY; a missing dict key is CONC_EKEY). Queue proxy
 * empty() / full(), ported from CPython's
 * _test_multiprocessing.py _TestQueue.test_put / test_get (empty and full
 * before, during and after filling a Queue(maxsize=6)), seen from a
 * second proxy of the same named queue too; an unbounded queue is never
 * full.
 */
#include "manager_util.h"

#include <conc/manager.h>

TestSuite(manager_methods, .init = mu_setup, .timeout = TU_TIMEOUT);

Test(manager_methods, empty_and_full)
{
    conc_manager_t *m = mu_start((conc_manager_opts_t){.timeout = 10});
    conc_mqueue_t *q, *q2;
    cr_assert_eq(conc_manager_queue(m, "Q", 6, &q), 0);
    cr_assert_eq(conc_manager_queue(m, "Q", 0, &q2), 0); /* the same queue */
    bool e = false, f = true;
    cr_assert_eq(conc_mqueue_empty(q, &e), 0);
    cr_assert_eq(conc_mqueue_full(q, &f), 0);
    cr_assert(e);
    cr_assert_not(f);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(conc_mqueue_put(q, &i, sizeof i, false, 0), 0);
        cr_assert_eq(conc_mqueue_empty(q2, &e), 0);
        cr_assert_not(e);
        cr_assert_eq(conc_mqueue_full(q2, &f), 0);
        cr_assert_eq(f, i == 5, "full after %d puts", i + 1);
    }
    cr_assert_eq(conc_mqueue_put(q, "x", 1, false, 0), CONC_EFULL);
    void *v;
    size_t n;
    cr_assert_eq(conc_mqueue_get(q, &v, &n, false, 0), 0);
    free(v);
    cr_assert_eq(conc_mqueue_full(q, &f), 0);
    cr_assert_not(f);
    for (int i = 1; i < 6; i++) {
        cr_assert_eq(conc_mqueue_get(q2, &v, &n, true, 5), 0);
        free(v);
    }
    cr_assert_eq(conc_mqueue_empty(q, &e), 0);
    cr_assert(e);
    /* unbounded: never full */
    conc_mqueue_t *u;
    cr_assert_eq(conc_manager_queue(m, NULL, 0, &u), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(conc_mqueue_put(u, &i, sizeof i, false, 0), 0);
    cr_assert_eq(conc_mqueue_full(u, &f), 0);
    cr_assert_not(f);
    /* bad input */
    cr_assert_eq(conc_mqueue_full(NULL, &f), CONC_EINVAL);
    cr_assert_eq(conc_mqueue_full(q, NULL), CONC_EINVAL);
    cr_assert_eq(conc_mqueue_empty(NULL, &e), CONC_EINVAL);
    cr_assert_eq(conc_mqueue_empty(q, NULL), CONC_EINVAL);
    conc_mqueue_free(u);
    conc_mqueue_free(q);
    conc_mqueue_free(q2);
    conc_manager_free(m);
}

static void expect_list(conc_mlist_t *l, const char *want)
{
    size_t n;
    cr_assert_eq(conc_mlist_len(l, &n), 0);
    cr_assert_eq(n, strlen(want), "length %zu, want %s", n, want);
    for (size_t i = 0; i < n; i++) {
        void *v;
        size_t vl;
        cr_assert_eq(conc_mlist_get(l, (long)i, &v, &vl), 0);
        cr_assert_eq(vl, 1);
        cr_assert_eq(*(char *)v, want[i], "item %zu is %c, want %s", i, *(char *)v, want);
        free(v);
    }
}

Test(manager_methods, list_methods)
{
    conc_manager_t *m = mu_start((conc_manager_opts_t){.timeout = 10});
    conc_mlist_t *l;
    cr_assert_eq(conc_manager_list(m, NULL, &l), 0);
    cr_assert_eq(conc_mlist_insert(l, 0, "b", 1), 0);      /* [b] */
    cr_assert_eq(conc_mlist_insert(l, 0, "a", 1), 0);      /* [a b] */
    cr_assert_eq(conc_mlist_insert(l, 99, "d", 1), 0);     /* clamped: append */
    cr_assert_eq(conc_mlist_insert(l, -1, "c", 1), 0);     /* before the last */
    cr_assert_eq(conc_mlist_insert(l, -99, "_", 1), 0);    /* clamped: front */
    expect_list(l, "_abcd");
    cr_assert_eq(conc_mlist_append(l, "b", 1), 0);
    size_t k;
    cr_assert_eq(conc_mlist_index(l, "b", 1, &k), 0);
    cr_assert_eq(k, 2);
    cr_assert_eq(conc_mlist_count(l, "b", 1, &k), 0);
    cr_assert_eq(k, 2);
    cr_assert_eq(conc_mlist_count(l, "z", 1, &k), 0);
    cr_assert_eq(k, 0);
    cr_assert_eq(conc_mlist_index(l, "z", 1, &k), CONC_EEMPTY);
    cr_assert_eq(conc_mlist_index(l, "bb", 2, &k), CONC_EEMPTY); /* equal means same bytes */
    cr_assert_eq(conc_mlist_remove(l, "b", 1), 0);         /* the first one */
    expect_list(l, "_acdb");
    cr_assert_eq(conc_mlist_remove(l, "z", 1), CONC_EEMPTY);
    cr_assert_eq(conc_mlist_reverse(l), 0);
    expect_list(l, "bdca_");
    cr_assert_eq(conc_mlist_clear(l), 0);
    cr_assert_eq(conc_mlist_reverse(l), 0);                /* empty: fine */
    cr_assert_eq(conc_mlist_insert(l, -5, "x", 1), 0);
    expect_list(l, "x");
    /* bad input */
    cr_assert_eq(conc_mlist_insert(NULL, 0, "x", 1), CONC_EINVAL);
    cr_assert_eq(conc_mlist_index(l, NULL, 1, &k), CONC_EINVAL);
    cr_assert_eq(conc_mlist_index(l, "x", 1, NULL), CONC_EINVAL);
    cr_assert_eq(conc_mlist_count(NULL, "x", 1, &k), CONC_EINVAL);
    cr_assert_eq(conc_mlist_remove(NULL, "x", 1), CONC_EINVAL);
    cr_assert_eq(conc_mlist_reverse(NULL), CONC_EINVAL);
    conc_mlist_free(l);
    conc_manager_free(m);
}

TU_MAIN_WITH_PROCESS_GUARD()
