/*
 * The Manager's newer proxies (issue 17), ported from CPython's
 * _test_multiprocessing: _TestNamespace.test_namespace, _TestValue
 * (through a manager), _TestContainers.test_dict / test_dict_iter /
 * test_dict_proxy_nested / test_list_proxy_in_list, _TestMyManager's
 * registered types (exposed methods, a method that is not exposed),
 * _TestManagerInitializer (Manager(initializer, initargs)) — plus the rest
 * of DictProxy (get with a default, setdefault, pop with a default,
 * popitem, update, items/values/copy), a registered method's call cut
 * short by a kill and by a Timeout scope, a manager handed to a child
 * with its own authkey (fork, spawn, forkserver), and malformed requests
 * of the new ops (the server answers, closes only that connection).
 *
 * Own main: spawned servers and children run a fresh copy of this file.
 */
#include "manager_util.h"

#include <limits.h>
#include <time.h>

#include <conc/green.h>
#include <conc/manager.h>

#include "manager/client.h"
#include "manager/internal.h"

TestSuite(manager_more, .init = mu_setup, .timeout = TU_TIMEOUT);

static conc_manager_t *start_with(conc_start_method_t method)
{
    return mu_start(
        (conc_manager_opts_t){.authkey = "secret", .authkey_len = 6, .timeout = 10, .method = method});
}

static conc_manager_t *start(void) { return start_with(CONC_START_DEFAULT); }

static bool bytes_eq(const void *got, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(got, want, n) == 0;
}

/* d[key] as a string compare (frees the value). */
static void assert_get(conc_mdict_t *d, const char *key, const char *want)
{
    void *v = NULL;
    size_t n = 0;
    int rc = conc_mdict_get(d, key, strlen(key), &v, &n);
    cr_assert_eq(rc, 0, "get %s: %s", key, conc_strerror(rc));
    cr_assert(bytes_eq(v, n, want), "d[%s] = %.*s, want %s", key, (int)n, (char *)v, want);
    free(v);
}

static void put(conc_mdict_t *d, const char *key, const char *val)
{
    cr_assert_eq(conc_mdict_set(d, key, strlen(key), val, strlen(val)), 0);
}

/* ----------------------------------------------------------- Namespace */

Test(manager_more, namespace)
{
    conc_manager_t *m = start();
    conc_mns_t *n;
    cr_assert_eq(conc_manager_namespace(m, NULL, &n), 0);
    cr_assert_eq(conc_mns_set(n, "name", "Bob", 3), 0);
    cr_assert_eq(conc_mns_set(n, "job", "Builder", 7), 0);
    /* n._hidden: Python keeps it on the proxy; here it is refused */
    cr_assert_eq(conc_mns_set(n, "_hidden", "hidden", 6), CONC_EINVAL);
    cr_assert_eq(conc_mns_set(n, "", "x", 1), CONC_EINVAL);
    void *v;
    size_t vl;
    cr_assert_eq(conc_mns_get(n, "name", &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "Bob"));
    free(v);
    cr_assert_eq(conc_mns_get(n, "job", &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "Builder"));
    free(v);
    cr_assert_eq(conc_mns_del(n, "job"), 0);
    /* str(n) == "Namespace(name='Bob')": the names left */
    conc_mbytes_t *names;
    size_t nn;
    cr_assert_eq(conc_mns_names(n, &names, &nn), 0);
    cr_assert_eq(nn, 1);
    cr_assert(bytes_eq(names[0].data, names[0].len, "name"));
    free(names);
    bool has;
    cr_assert_eq(conc_mns_has(n, "name", &has), 0);
    cr_assert(has);
    cr_assert_eq(conc_mns_has(n, "job", &has), 0);
    cr_assert_not(has);
    /* AttributeError */
    cr_assert_eq(conc_mns_get(n, "job", &v, &vl), CONC_EATTR);
    cr_assert_eq(conc_mns_del(n, "job"), CONC_EATTR);
    void *px;
    cr_assert_eq(conc_mns_get_proxy(n, "job", &px, NULL), CONC_EATTR);
    cr_assert_eq(conc_mns_get_proxy(n, "name", &px, NULL), CONC_EINVAL); /* bytes, not a proxy */
    cr_assert_eq(conc_mns_set_proxy(n, "me", n), 0);                     /* ns.me = ns */
    conc_mns_t *me;
    conc_mkind_t kind;
    cr_assert_eq(conc_mns_get_proxy(n, "me", (void **)&me, &kind), 0);
    cr_assert_eq(kind, CONC_MK_NAMESPACE);
    cr_assert_eq(conc_mns_get(me, "name", &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "Bob"));
    free(v);
    conc_mns_free(me);
    cr_assert_eq(conc_mns_del(n, "me"), 0);
    cr_assert_eq(conc_mns_get(NULL, "job", &v, &vl), CONC_EINVAL);
    cr_assert_eq(conc_mns_get(n, NULL, &v, &vl), CONC_EINVAL);
    conc_mns_free(n);
    /* shared by name, seen from a second proxy; another kind's name is refused */
    conc_mns_t *a, *b;
    cr_assert_eq(conc_manager_namespace(m, "cfg", &a), 0);
    cr_assert_eq(conc_manager_namespace(m, "cfg", &b), 0);
    cr_assert_eq(conc_mns_set(a, "x", "1", 1), 0);
    cr_assert_eq(conc_mns_get(b, "x", &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "1"));
    free(v);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, "cfg", &d), CONC_EINVAL);
    conc_mns_free(a);
    conc_mns_free(b);
    conc_manager_free(m);
}

/* A forked child sets an attribute through an inherited proxy. */
static int ns_child(const void *arg, size_t len)
{
    (void)len;
    conc_mns_t *n = *(conc_mns_t *const *)arg;
    TU_CK(conc_mns_set(n, "from_child", "yes", 3) == 0);
    void *v;
    size_t vl;
    TU_CK(conc_mns_get(n, "from_parent", &v, &vl) == 0 && vl == 2);
    free(v);
    return 0;
}
CONC_REGISTER(ns_child);

Test(manager_more, namespace_across_fork)
{
    conc_manager_t *m = start();
    conc_mns_t *n;
    cr_assert_eq(conc_manager_namespace(m, NULL, &n), 0);
    cr_assert_eq(conc_mns_set(n, "from_parent", "ok", 2), 0);
    cr_assert_eq(mu_run_child(ns_child, &n, sizeof n, CONC_FORK, 30), 0);
    void *v;
    size_t vl;
    cr_assert_eq(conc_mns_get(n, "from_child", &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "yes"));
    free(v);
    conc_mns_free(n);
    conc_manager_free(m);
}

/* --------------------------------------------------------------- Value */

Test(manager_more, value)
{
    conc_manager_t *m = start();
    /* CPython's codes_values: (code, value, new value) */
    int i0 = 4343, i1 = 24234;
    double d0 = 3.625, d1 = -4.25;
    short h0 = -232, h1 = 234;
    long long q0 = 1ll << 33, q1 = 1ll << 34;
    char c0 = 'x', c1 = 'y';
    struct {
        char code;
        const void *v0, *v1;
        size_t n;
    } cv[] = {{'i', &i0, &i1, 4}, {'d', &d0, &d1, 8}, {'h', &h0, &h1, 2}, {'q', &q0, &q1, 8}, {'c', &c0, &c1, 1}};
    conc_mvalue_t *vs[5];
    for (int k = 0; k < 5; k++) {
        cr_assert_eq(conc_manager_value(m, NULL, cv[k].code, cv[k].v0, &vs[k]), 0);
        cr_assert_eq(conc_mvalue_typecode(vs[k]), cv[k].code);
        cr_assert_eq(conc_mvalue_size(cv[k].code), cv[k].n);
    }
    for (int k = 0; k < 5; k++) {
        unsigned char got[8] = {0};
        cr_assert_eq(conc_mvalue_get(vs[k], got), 0);
        cr_assert_eq(memcmp(got, cv[k].v0, cv[k].n), 0, "code %c", cv[k].code);
        cr_assert_eq(conc_mvalue_set(vs[k], cv[k].v1), 0);
        cr_assert_eq(conc_mvalue_get(vs[k], got), 0);
        cr_assert_eq(memcmp(got, cv[k].v1, cv[k].n), 0, "code %c", cv[k].code);
        conc_mvalue_free(vs[k]);
    }
    /* zero by default; bool stored as 0/1; named values are shared */
    conc_mvalue_t *a, *b;
    long z = 99;
    cr_assert_eq(conc_manager_value(m, "counter", 'l', NULL, &a), 0);
    cr_assert_eq(conc_mvalue_get(a, &z), 0);
    cr_assert_eq(z, 0);
    z = 41;
    cr_assert_eq(conc_mvalue_set(a, &z), 0);
    long other = 5;
    cr_assert_eq(conc_manager_value(m, "counter", 'l', &other, &b), 0); /* exists: init ignored */
    cr_assert_eq(conc_mvalue_get(b, &z), 0);
    cr_assert_eq(z, 41);
    conc_mvalue_t *bad;
    cr_assert_eq(conc_manager_value(m, "counter", 'd', NULL, &bad), CONC_EINVAL); /* another typecode */
    cr_assert_eq(conc_manager_value(m, NULL, 'z', NULL, &bad), CONC_EINVAL);
    cr_assert_eq(conc_mvalue_size('z'), 0);
    conc_mvalue_free(a);
    conc_mvalue_free(b);
    bool t = true;
    unsigned char raw = 7;
    cr_assert_eq(conc_manager_value(m, NULL, '?', &t, &a), 0);
    cr_assert_eq(conc_mvalue_set(a, &raw), 0);
    raw = 0;
    cr_assert_eq(conc_mvalue_get(a, &raw), 0);
    cr_assert_eq(raw, 1);
    conc_mvalue_free(a);
    cr_assert_eq(conc_mvalue_typecode(NULL), 0);
    cr_assert_eq(conc_mvalue_get(NULL, &raw), CONC_EINVAL);
    conc_manager_free(m);
}

/* ---------------------------------------------------------------- dict */

Test(manager_more, dict_methods)
{
    conc_manager_t *m = start();
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    /* test_dict: d[i] = chr(i) for i in 65..69; copy, keys, values, items */
    for (int i = 65; i < 70; i++) {
        char k[3] = {'k', (char)i, 0}, v[2] = {(char)i, 0};
        put(d, k, v);
    }
    conc_mitem_t *it;
    size_t n;
    cr_assert_eq(conc_mdict_copy(d, &it, &n), 0);
    cr_assert_eq(n, 5);
    for (int i = 0; i < 5; i++) {
        char k[3] = {'k', (char)(65 + i), 0}, v[2] = {(char)(65 + i), 0};
        cr_assert(bytes_eq(it[i].key.data, it[i].key.len, k));
        cr_assert(bytes_eq(it[i].value.data, it[i].value.len, v));
        cr_assert_eq(it[i].kind, CONC_MK_BYTES);
    }
    free(it);
    cr_assert_eq(conc_mdict_values(d, &it, &n), 0);
    cr_assert_eq(n, 5);
    cr_assert_null(it[0].key.data);
    cr_assert(bytes_eq(it[4].value.data, it[4].value.len, "E"));
    free(it);
    /* get(k, default), pop(k, default): the default only when absent */
    void *v;
    size_t vl;
    cr_assert_eq(conc_mdict_get_default(d, "kA", 2, "dflt", 4, &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "A"));
    free(v);
    cr_assert_eq(conc_mdict_get_default(d, "zz", 2, "dflt", 4, &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "dflt"));
    free(v);
    cr_assert_eq(conc_mdict_get_default(d, "zz", 2, NULL, 0, &v, &vl), 0);
    cr_assert_eq(vl, 0);
    free(v);
    cr_assert_eq(conc_mdict_pop_default(d, "zz", 2, "x", 1, &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "x"));
    free(v);
    cr_assert_eq(conc_mdict_pop_default(d, "kB", 2, "x", 1, &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "B"));
    free(v);
    cr_assert_eq(conc_mdict_pop(d, "kB", 2, &v, &vl), CONC_EKEY); /* KeyError, distinct from Empty */
    /* setdefault: stores once, returns what is there */
    cr_assert_eq(conc_mdict_setdefault(d, "new", 3, "first", 5, &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "first"));
    free(v);
    cr_assert_eq(conc_mdict_setdefault(d, "new", 3, "second", 6, &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "first"));
    free(v);
    /* popitem: LIFO */
    void *k;
    size_t kl;
    cr_assert_eq(conc_mdict_popitem(d, &k, &kl, &v, &vl), 0);
    cr_assert(bytes_eq(k, kl, "new"));
    cr_assert(bytes_eq(v, vl, "first"));
    free(k);
    free(v);
    cr_assert_eq(conc_mdict_popitem(d, &k, &kl, &v, &vl), 0);
    cr_assert(bytes_eq(k, kl, "kE"));
    free(k);
    free(v);
    /* update: one request; later pairs win; insertion order kept for old keys */
    conc_mbytes_t ks[3] = {{"kA", 2}, {"u1", 2}, {"u1", 2}}, vs[3] = {{"a", 1}, {"one", 3}, {"uno", 3}};
    cr_assert_eq(conc_mdict_update(d, ks, vs, 3), 0);
    cr_assert_eq(conc_mdict_update(d, NULL, NULL, 0), 0);
    cr_assert_eq(conc_mdict_update(d, NULL, vs, 1), CONC_EINVAL);
    assert_get(d, "kA", "a");
    assert_get(d, "u1", "uno");
    cr_assert_eq(conc_mdict_items(d, &it, &n), 0);
    cr_assert_eq(n, 4); /* kA kC kD u1 */
    cr_assert(bytes_eq(it[0].key.data, it[0].key.len, "kA"));
    cr_assert(bytes_eq(it[3].key.data, it[3].key.len, "u1"));
    free(it);
    /* len, contains, del, clear; popitem of an empty dict is KeyError */
    size_t len;
    bool has;
    cr_assert_eq(conc_mdict_len(d, &len), 0);
    cr_assert_eq(len, 4);
    cr_assert_eq(conc_mdict_contains(d, "kC", 2, &has), 0);
    cr_assert(has);
    cr_assert_eq(conc_mdict_del(d, "kC", 2), 0);
    cr_assert_eq(conc_mdict_del(d, "kC", 2), CONC_EKEY);
    cr_assert_eq(conc_mdict_clear(d), 0);
    cr_assert_eq(conc_mdict_len(d, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(conc_mdict_popitem(d, &k, &kl, &v, &vl), CONC_EKEY);
    cr_assert_eq(conc_mdict_items(d, &it, &n), 0);
    cr_assert_eq(n, 0);
    free(it);
    cr_assert_eq(conc_mdict_setdefault(d, "k", 1, "v", 1, NULL, &vl), CONC_EINVAL);
    cr_assert_eq(conc_mdict_popitem(NULL, &k, &kl, &v, &vl), CONC_EINVAL);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* ------------------------------------------------------ nested proxies */

static int dict_int(conc_mdict_t *d, const char *key)
{
    void *v;
    size_t vl;
    int rc = conc_mdict_get(d, key, strlen(key), &v, &vl);
    cr_assert_eq(rc, 0, "get %s: %s", key, conc_strerror(rc));
    cr_assert_eq(vl, sizeof(int));
    int x;
    memcpy(&x, v, sizeof x);
    free(v);
    return x;
}

static void set_int(conc_mdict_t *d, const char *key, int x)
{
    cr_assert_eq(conc_mdict_set(d, key, strlen(key), &x, sizeof x), 0);
}

/* d[key] read back as a dict proxy. */
static conc_mdict_t *sub(conc_mdict_t *d, const char *key)
{
    void *p = NULL;
    conc_mkind_t kind = CONC_MK_BYTES;
    int rc = conc_mdict_get_proxy(d, key, strlen(key), &p, &kind);
    cr_assert_eq(rc, 0, "get_proxy %s: %s", key, conc_strerror(rc));
    cr_assert_eq(kind, CONC_MK_DICT);
    return p;
}

/* CPython's test_dict_proxy_nested, step by step. */
Test(manager_more, dict_proxy_nested)
{
    conc_manager_t *m = start();
    conc_mdict_t *pets, *supplies, *d;
    cr_assert_eq(conc_manager_dict(m, NULL, &pets), 0);
    cr_assert_eq(conc_manager_dict(m, NULL, &supplies), 0);
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    set_int(pets, "ferrets", 2);
    set_int(pets, "hamsters", 4);
    set_int(supplies, "water", 10);
    set_int(supplies, "feed", 3);
    cr_assert_eq(conc_mdict_set_proxy(d, "pets", 4, pets), 0);
    cr_assert_eq(conc_mdict_set_proxy(d, "supplies", 8, supplies), 0);

    cr_assert_eq(dict_int(supplies, "water"), 10);
    conc_mdict_t *s = sub(d, "supplies");
    cr_assert_eq(dict_int(s, "water"), 10);
    set_int(s, "blankets", 5); /* d['supplies']['blankets'] = 5 */
    conc_mdict_free(s);
    cr_assert_eq(dict_int(supplies, "blankets"), 5);
    s = sub(d, "supplies");
    cr_assert_eq(dict_int(s, "blankets"), 5);
    set_int(s, "water", 7);
    conc_mdict_free(s);
    cr_assert_eq(dict_int(supplies, "water"), 7);

    /* del pets; del supplies: the container keeps them alive */
    conc_mdict_free(pets);
    conc_mdict_free(supplies);
    conc_mdict_t *p2 = sub(d, "pets");
    cr_assert_eq(dict_int(p2, "ferrets"), 2);
    conc_mdict_free(p2);
    s = sub(d, "supplies");
    set_int(s, "blankets", 11);
    cr_assert_eq(dict_int(s, "blankets"), 11);
    conc_mdict_free(s);

    pets = sub(d, "pets");
    supplies = sub(d, "supplies");
    set_int(supplies, "water", 7);
    cr_assert_eq(dict_int(supplies, "water"), 7);

    /* d.clear(): the proxies we hold keep their objects */
    cr_assert_eq(conc_mdict_clear(d), 0);
    size_t len;
    cr_assert_eq(conc_mdict_len(d, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(dict_int(supplies, "water"), 7);
    cr_assert_eq(dict_int(pets, "hamsters"), 4);

    /* l = list([pets, supplies]); l[0]['marmots'] = 1 */
    conc_mlist_t *l;
    cr_assert_eq(conc_manager_list(m, NULL, &l), 0);
    cr_assert_eq(conc_mlist_append_proxy(l, pets), 0);
    cr_assert_eq(conc_mlist_append_proxy(l, supplies), 0);
    void *px;
    conc_mkind_t kind;
    cr_assert_eq(conc_mlist_get_proxy(l, 0, &px, &kind), 0);
    cr_assert_eq(kind, CONC_MK_DICT);
    set_int(px, "marmots", 1);
    conc_mproxy_free(px);
    cr_assert_eq(dict_int(pets, "marmots"), 1);
    conc_mdict_free(pets);
    conc_mdict_free(supplies);
    cr_assert_eq(conc_mlist_get_proxy(l, 0, &px, NULL), 0);
    cr_assert_eq(dict_int(px, "marmots"), 1);
    conc_mproxy_free(px);

    /* outer = list([[88, 99], l]): the first is plain bytes, not a proxy */
    conc_mlist_t *outer;
    cr_assert_eq(conc_manager_list(m, NULL, &outer), 0);
    cr_assert_eq(conc_mlist_append(outer, "88,99", 5), 0);
    cr_assert_eq(conc_mlist_append_proxy(outer, l), 0);
    cr_assert_eq(conc_mlist_get_proxy(outer, 0, &px, &kind), CONC_EINVAL);
    void *v;
    size_t vl;
    cr_assert_eq(conc_mlist_get(outer, 0, &v, &vl), 0);
    free(v);
    cr_assert_eq(conc_mlist_get(outer, -1, &v, &vl), CONC_EINVAL); /* a proxy, not bytes */
    conc_mlist_free(l);
    conc_mlist_t *inner;
    cr_assert_eq(conc_mlist_get_proxy(outer, -1, (void **)&inner, &kind), 0); /* outer[-1][-1]['feed'] */
    cr_assert_eq(kind, CONC_MK_LIST);
    conc_mdict_t *feed;
    cr_assert_eq(conc_mlist_get_proxy(inner, -1, (void **)&feed, NULL), 0);
    cr_assert_eq(dict_int(feed, "feed"), 3);
    conc_mdict_free(feed);
    conc_mlist_free(inner);
    cr_assert_eq(conc_mlist_get_proxy(outer, 5, &px, NULL), CONC_ERANGE);
    conc_mlist_free(outer);
    cr_assert_eq(conc_mdict_get_proxy(d, "nope", 4, &px, NULL), CONC_EKEY);
    put(d, "plain", "bytes");
    cr_assert_eq(conc_mdict_get_proxy(d, "plain", 5, &px, NULL), CONC_EINVAL);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* CPython's test_list_proxy_in_list, and b.append(b). */
Test(manager_more, list_proxy_in_list)
{
    conc_manager_t *m = start();
    conc_mlist_t *a;
    cr_assert_eq(conc_manager_list(m, NULL, &a), 0);
    for (int i = 0; i < 3; i++) {
        conc_mlist_t *in;
        cr_assert_eq(conc_manager_list(m, NULL, &in), 0);
        for (char c = '0'; c < '3'; c++)
            cr_assert_eq(conc_mlist_append(in, &c, 1), 0);
        cr_assert_eq(conc_mlist_append_proxy(a, in), 0);
        conc_mlist_free(in); /* a keeps it */
    }
    conc_mlist_t *x;
    cr_assert_eq(conc_mlist_get_proxy(a, 0, (void **)&x, NULL), 0);
    cr_assert_eq(conc_mlist_set(x, -1, "5", 1), 0); /* a[0][-1] = 55 */
    conc_mlist_free(x);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_mlist_get_proxy(a, i, (void **)&x, NULL), 0);
        void *v;
        size_t vl;
        cr_assert_eq(conc_mlist_get(x, -1, &v, &vl), 0);
        cr_assert_eq(*(char *)v, i == 0 ? '5' : '2');
        free(v);
        conc_mlist_free(x);
    }
    cr_assert_eq(conc_mlist_get_proxy(a, 1, (void **)&x, NULL), 0);
    void *v;
    size_t vl, len;
    cr_assert_eq(conc_mlist_pop(x, -1, &v, &vl), 0); /* a[1].pop() */
    free(v);
    conc_mlist_free(x);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_mlist_get_proxy(a, i, (void **)&x, NULL), 0);
        cr_assert_eq(conc_mlist_len(x, &len), 0);
        cr_assert_eq(len, i == 1 ? 2u : 3u);
        conc_mlist_free(x);
    }
    /* a[2] = a[0]: both slots refer to one list; the old a[2] goes */
    cr_assert_eq(conc_mlist_get_proxy(a, 0, (void **)&x, NULL), 0);
    cr_assert_eq(conc_mlist_set_proxy(a, 2, x), 0);
    cr_assert_eq(conc_mlist_append(x, "z", 1), 0);
    conc_mlist_free(x);
    cr_assert_eq(conc_mlist_get_proxy(a, 2, (void **)&x, NULL), 0);
    cr_assert_eq(conc_mlist_len(x, &len), 0);
    cr_assert_eq(len, 4);
    conc_mlist_free(x);
    cr_assert_eq(conc_mlist_set_proxy(a, 7, a), CONC_ERANGE);
    cr_assert_eq(conc_mlist_append_proxy(a, NULL), CONC_EINVAL);
    cr_assert_eq(conc_mlist_clear(a), 0);
    conc_mlist_free(a);
    /* b = list(); b.append(b); del b: a cycle, freed when the server ends */
    conc_mlist_t *b;
    cr_assert_eq(conc_manager_list(m, NULL, &b), 0);
    cr_assert_eq(conc_mlist_append_proxy(b, b), 0);
    conc_mlist_t *bb;
    cr_assert_eq(conc_mlist_get_proxy(b, 0, (void **)&bb, NULL), 0);
    cr_assert_eq(conc_mlist_len(bb, &len), 0);
    cr_assert_eq(len, 1);
    conc_mlist_free(bb);
    conc_mlist_free(b);
    /* a proxy of another server is refused */
    conc_manager_t *m2 = start();
    conc_mlist_t *c, *other;
    cr_assert_eq(conc_manager_list(m, NULL, &c), 0);
    cr_assert_eq(conc_manager_list(m2, NULL, &other), 0);
    cr_assert_eq(conc_mlist_append_proxy(c, other), CONC_EINVAL);
    conc_mlist_free(c);
    conc_mlist_free(other);
    conc_manager_free(m2);
    conc_manager_free(m);
}

/* A forked child mutates through a nested proxy it read back itself. */
static int nested_child(const void *arg, size_t len)
{
    (void)len;
    conc_mdict_t *d = *(conc_mdict_t *const *)arg;
    conc_mns_t *ns;
    TU_CK(conc_mdict_get_proxy(d, "ns", 2, (void **)&ns, NULL) == 0);
    TU_CK(conc_mns_set(ns, "seen", "by child", 8) == 0);
    conc_mvalue_t *v;
    conc_mkind_t k;
    TU_CK(conc_mns_get_proxy(ns, "counter", (void **)&v, &k) == 0 && k == CONC_MK_VALUE);
    int x = 0;
    TU_CK(conc_mvalue_get(v, &x) == 0 && x == 5 && conc_mvalue_typecode(v) == 'i');
    x = 6;
    TU_CK(conc_mvalue_set(v, &x) == 0);
    conc_mvalue_free(v);
    conc_mns_free(ns);
    return 0;
}
CONC_REGISTER(nested_child);

Test(manager_more, nested_seen_across_processes)
{
    conc_manager_t *m = start();
    conc_mdict_t *d;
    conc_mns_t *ns;
    conc_mvalue_t *v;
    int five = 5;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    cr_assert_eq(conc_manager_namespace(m, NULL, &ns), 0);
    cr_assert_eq(conc_manager_value(m, NULL, 'i', &five, &v), 0);
    cr_assert_eq(conc_mns_set_proxy(ns, "counter", v), 0);
    cr_assert_eq(conc_mdict_set_proxy(d, "ns", 2, ns), 0);
    cr_assert_eq(conc_mns_get(ns, "counter", &(void *){0}, &(size_t){0}), CONC_EINVAL);
    cr_assert_eq(mu_run_child(nested_child, &d, sizeof d, CONC_FORK, 30), 0);
    void *b;
    size_t bl;
    cr_assert_eq(conc_mns_get(ns, "seen", &b, &bl), 0);
    cr_assert(bytes_eq(b, bl, "by child"));
    free(b);
    int x = 0;
    cr_assert_eq(conc_mvalue_get(v, &x), 0);
    cr_assert_eq(x, 6);
    conc_mvalue_free(v);
    conc_mns_free(ns);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* Stress the reference counts: containers dropped in every order while
 * nested references come and go; the server must neither leak nor free
 * early (ASan/LSan in the server process would report either). */
Test(manager_more, nested_refcounts)
{
    conc_manager_t *m = start();
    conc_mdict_t *root;
    cr_assert_eq(conc_manager_dict(m, NULL, &root), 0);
    conc_mlist_t *chain;
    cr_assert_eq(conc_manager_list(m, NULL, &chain), 0);
    cr_assert_eq(conc_mdict_set_proxy(root, "chain", 5, chain), 0);
    /* a chain 200 deep: freeing it must not recurse */
    conc_mlist_t *cur = chain;
    for (int i = 0; i < 200; i++) {
        conc_mlist_t *next;
        cr_assert_eq(conc_manager_list(m, NULL, &next), 0);
        cr_assert_eq(conc_mlist_append_proxy(cur, next), 0);
        if (cur != chain)
            conc_mlist_free(cur);
        cur = next;
    }
    cr_assert_eq(conc_mlist_append(cur, "end", 3), 0);
    conc_mlist_free(cur);
    conc_mlist_free(chain);
    /* walk it back */
    conc_mlist_t *w;
    cr_assert_eq(conc_mdict_get_proxy(root, "chain", 5, (void **)&w, NULL), 0);
    for (int i = 0; i < 200; i++) {
        conc_mlist_t *nx;
        cr_assert_eq(conc_mlist_get_proxy(w, 0, (void **)&nx, NULL), 0, "depth %d", i);
        conc_mlist_free(w);
        w = nx;
    }
    void *v;
    size_t vl;
    cr_assert_eq(conc_mlist_get(w, 0, &v, &vl), 0);
    cr_assert(bytes_eq(v, vl, "end"));
    free(v);
    conc_mlist_free(w);
    /* overwrite, pop, popitem and update drop references */
    conc_mdict_t *leaf;
    cr_assert_eq(conc_manager_dict(m, NULL, &leaf), 0);
    cr_assert_eq(conc_mdict_set_proxy(root, "leaf", 4, leaf), 0);
    conc_mdict_free(leaf);
    cr_assert_eq(conc_mdict_pop(root, "leaf", 4, &v, &vl), CONC_EINVAL); /* a proxy: not popped as bytes */
    void *k;
    size_t kl;
    cr_assert_eq(conc_mdict_popitem(root, &k, &kl, &v, &vl), 0);
    cr_assert(bytes_eq(k, kl, "leaf"));
    cr_assert_null(v); /* it was a nested proxy */
    free(k);
    cr_assert_eq(conc_mdict_del(root, "chain", 5), 0); /* frees the 201 lists */
    size_t len;
    cr_assert_eq(conc_mdict_len(root, &len), 0);
    cr_assert_eq(len, 0);
    conc_mdict_free(root);
    conc_manager_free(m);
}

/* Several threads (own proxies each) replace, read back, mutate and drop
 * nested references in one dict at once: the server's reference counts
 * must hold (a freed-too-early object would fail a bind or crash the
 * server; a leak shows under LeakSanitizer). */
typedef struct churn {
    conc_manager_t *m;
    int id, rc, rounds;
} churn_t;

static void *churn_main(void *arg)
{
    churn_t *c = arg;
    conc_mdict_t *d;
    if ((c->rc = conc_manager_dict(c->m, "churn", &d)) != 0)
        return NULL;
    for (int i = 0; i < c->rounds && !c->rc; i++) {
        conc_mlist_t *l, *back = NULL;
        const char *key = (i % 2) ? "a" : "b";
        if ((c->rc = conc_manager_list(c->m, NULL, &l)) != 0)
            break;
        if (!(c->rc = conc_mlist_append(l, &c->id, sizeof c->id)))
            c->rc = conc_mdict_set_proxy(d, key, 1, l); /* replaces (drops) another thread's list */
        conc_mlist_free(l);
        if (c->rc)
            break;
        int rc = conc_mdict_get_proxy(d, key, 1, (void **)&back, NULL);
        if (rc == 0) { /* whoever's list is there now: alive and usable */
            size_t n;
            c->rc = conc_mlist_len(back, &n);
            if (!c->rc && n < 1)
                c->rc = -1000;
            if (!c->rc)
                c->rc = conc_mlist_append(back, "x", 1);
            conc_mlist_free(back);
        } else if (rc != CONC_EKEY) { /* deleted meanwhile: fine */
            c->rc = rc;
        }
        if (!c->rc && i % 5 == 4 && (rc = conc_mdict_del(d, key, 1)) != 0 && rc != CONC_EKEY)
            c->rc = rc; /* absent: another thread deleted it first */
    }
    conc_mdict_free(d);
    return NULL;
}

Test(manager_more, nested_refcount_churn)
{
    conc_manager_t *m = start();
    churn_t c[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (churn_t){m, i, 0, TU_SANITIZED ? 30 : 150};
        cr_assert_eq(pthread_create(&th[i], NULL, churn_main, &c[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(c[i].rc, 0, "thread %d: %d %s", i, c[i].rc, conc_strerror(c[i].rc));
    }
    conc_manager_free(m);
}

/* ---------------------------------------------------- registered types */

typedef struct counter {
    long long n;
} counter_t;

static _Atomic long long destroyed; /* in the server (destroy and methods of other instances run concurrently) */

static int counter_new(const void *args, size_t len, void **self)
{
    if (len && len != sizeof(long long))
        return CONC_EINVAL;
    counter_t *c = calloc(1, sizeof *c);
    if (!c)
        return CONC_ENOMEM;
    if (len)
        memcpy(&c->n, args, len);
    *self = c;
    return 0;
}

static void counter_free(void *self)
{
    free(self);
    destroyed++;
}

static int reply_ll(long long x, void **out, size_t *outlen)
{
    if (!(*out = malloc(sizeof x)))
        return CONC_ENOMEM;
    memcpy(*out, &x, sizeof x);
    *outlen = sizeof x;
    return 0;
}

static int counter_incr(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    counter_t *c = self;
    long long d = 1;
    if (len == sizeof d)
        memcpy(&d, args, sizeof d);
    else if (len)
        return CONC_EINVAL;
    c->n += d;
    return reply_ll(c->n, out, outlen);
}

static int counter_destroyed(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    (void)self, (void)args, (void)len;
    return reply_ll(destroyed, out, outlen);
}

static int counter_fail(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    (void)self, (void)args, (void)len, (void)out, (void)outlen;
    return 12345; /* not a CONC_E* code: CONC_EFAILED */
}

static int counter_range(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    (void)self, (void)args, (void)len, (void)out, (void)outlen;
    return CONC_ERANGE;
}

static int counter_nothing(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    (void)self, (void)args, (void)len, (void)out, (void)outlen;
    return 0;
}

static int counter_slow(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    (void)args, (void)len;
    struct timespec ts = {0, 400 * 1000000L};
    nanosleep(&ts, NULL);
    return counter_incr(self, NULL, 0, out, outlen);
}

static const conc_mmethod_t counter_methods[] = {
    {"incr", counter_incr},     {"destroyed", counter_destroyed}, {"fail", counter_fail},
    {"range", counter_range},   {"nothing", counter_nothing},     {"slow", counter_slow},
    {NULL, NULL}};
CONC_MANAGER_REGISTER("Counter", counter_new, counter_free, counter_methods);

static long long call_ll(conc_mobject_t *o, const char *method, long long arg, bool with_arg)
{
    void *out = NULL;
    size_t n = 0;
    int rc = conc_mobject_call(o, method, with_arg ? &arg : NULL, with_arg ? sizeof arg : 0, &out, &n);
    cr_assert_eq(rc, 0, "%s: %s", method, conc_strerror(rc));
    cr_assert_eq(n, sizeof(long long));
    long long x;
    memcpy(&x, out, sizeof x);
    free(out);
    return x;
}

static void registered_type(conc_start_method_t method)
{
    conc_manager_t *m = start_with(method);
    conc_mobject_t *c;
    long long start10 = 10;
    cr_assert_eq(conc_manager_make(m, "Counter", NULL, &start10, sizeof start10, &c), 0);
    cr_assert_eq(call_ll(c, "incr", 0, false), 11);
    cr_assert_eq(call_ll(c, "incr", 5, true), 16);
    /* the method's own code comes back; a foreign one is CONC_EFAILED */
    void *out = (void *)1;
    size_t n = 1;
    cr_assert_eq(conc_mobject_call(c, "range", NULL, 0, &out, &n), CONC_ERANGE);
    cr_assert_eq(conc_mobject_call(c, "fail", NULL, 0, &out, &n), CONC_EFAILED);
    cr_assert_eq(conc_mobject_call(c, "incr", "x", 1, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_mobject_call(c, "nothing", NULL, 0, &out, &n), 0);
    cr_assert_null(out);
    cr_assert_eq(n, 0);
    /* exposed check: AttributeError */
    cr_assert_eq(conc_mobject_call(c, "_private", NULL, 0, NULL, NULL), CONC_EATTR);
    cr_assert_eq(conc_mobject_call(c, "incr2", NULL, 0, NULL, NULL), CONC_EATTR);
    cr_assert_eq(conc_mobject_call(c, "", NULL, 0, NULL, NULL), CONC_EATTR);
    cr_assert_eq(conc_mobject_call(c, NULL, NULL, 0, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(call_ll(c, "incr", 0, false), 17); /* still usable */
    /* a name shares one instance; its constructor runs once */
    conc_mobject_t *a, *b;
    long long start100 = 100;
    cr_assert_eq(conc_manager_make(m, "Counter", "shared", &start100, sizeof start100, &a), 0);
    cr_assert_eq(conc_manager_make(m, "Counter", "shared", NULL, 0, &b), 0);
    cr_assert_eq(call_ll(a, "incr", 0, false), 101);
    cr_assert_eq(call_ll(b, "incr", 0, false), 102);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, "shared", &d), CONC_EINVAL);
    /* errors of make */
    conc_mobject_t *x;
    cr_assert_eq(conc_manager_make(m, "NoSuchType", NULL, NULL, 0, &x), CONC_EKEY);
    cr_assert_eq(conc_manager_make(m, "Counter", NULL, "bad", 3, &x), CONC_EINVAL); /* create said so */
    /* a named instance whose create failed is forgotten: the name can be made again */
    cr_assert_eq(conc_manager_make(m, "Counter", "retry", "bad", 3, &x), CONC_EINVAL);
    cr_assert_eq(conc_manager_make(m, "Counter", "retry", &start10, sizeof start10, &x), 0);
    cr_assert_eq(call_ll(x, "incr", 0, false), 11);
    conc_mobject_free(x);
    /* a Value's bad init, an unknown type: nothing is made under the name */
    conc_mvalue_t *mv;
    cr_assert_eq(conc_manager_make(m, "NoSuchType", "nst", NULL, 0, &x), CONC_EKEY);
    cr_assert_eq(conc_manager_value(m, "nst", 'i', NULL, &mv), 0);
    conc_mvalue_free(mv);
    cr_assert_eq(conc_manager_make(m, "", NULL, NULL, 0, &x), CONC_EINVAL);
    cr_assert_eq(conc_manager_make(NULL, "Counter", NULL, NULL, 0, &x), CONC_EINVAL);
    /* destroy runs when the last proxy goes (anonymous instances) */
    long long before = call_ll(a, "destroyed", 0, false);
    conc_mobject_free(c); /* the server sees the connection close a moment later */
    cr_assert(TU_WAIT_UNTIL(call_ll(a, "destroyed", 0, false) == before + 1, 10));
    /* an instance held in a dict lives on after its proxy */
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    cr_assert_eq(conc_manager_make(m, "Counter", NULL, NULL, 0, &c), 0);
    cr_assert_eq(conc_mdict_set_proxy(d, "c", 1, c), 0);
    conc_mobject_free(c);
    conc_mkind_t kind;
    cr_assert_eq(conc_mdict_get_proxy(d, "c", 1, (void **)&c, &kind), 0);
    cr_assert_eq(kind, CONC_MK_OBJECT);
    cr_assert_eq(call_ll(c, "incr", 0, false), 1);
    conc_mobject_free(c);
    conc_mdict_free(d);
    conc_mobject_free(a);
    conc_mobject_free(b);
    conc_manager_free(m);
}

Test(manager_more, register_fork)
{
    if (TU_TSAN) /* the forked server starts threads in a child of a threaded process */
        cr_skip_test("TSan: threads after a fork from a threaded process (the spawn variant runs)");
    registered_type(CONC_FORK);
}

/* The server is a new program: it finds the type through the registry. */
Test(manager_more, register_spawn) { registered_type(CONC_SPAWN); }

/* A registered method's call, cut short by a Timeout scope (OS thread and
 * green thread) and by a kill; the proxy stays usable and the method ran. */
static void *slow_call(void *arg)
{
    conc_mobject_t *c = arg;
    return (void *)(intptr_t)conc_mobject_call(c, "slow", NULL, 0, NULL, NULL);
}

static void *slow_call_scoped(void *arg)
{
    conc_timeout_begin(0.1);
    void *r = slow_call(arg);
    conc_timeout_end();
    return r;
}

Test(manager_more, call_cut_by_timeout_and_kill)
{
    conc_manager_t *m = start();
    conc_mobject_t *c;
    cr_assert_eq(conc_manager_make(m, "Counter", NULL, NULL, 0, &c), 0);
    /* a Timeout scope on this OS thread */
    double t0 = tu_now();
    cr_assert_eq(conc_timeout_begin(0.1), 0);
    int rc = conc_mobject_call(c, "slow", NULL, 0, NULL, NULL);
    int fired = conc_timeout_end();
    double took = tu_now() - t0;
    cr_assert_eq(rc, CONC_ETIMEDOUT, "%s", conc_strerror(rc));
    cr_assert_eq(fired, 1);
    cr_assert_lt(took, 0.1 + TU_SLACK);
    if (!TU_SANITIZED)
        cr_assert_lt(took, 0.35, "cut at 0.1 s, not when the 0.4 s method ended");
    /* the method ran (once) all the same: the next call waits for it */
    cr_assert_eq(call_ll(c, "incr", 0, false), 2);
    /* a Timeout scope in a green thread */
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, slow_call_scoped, c), 0);
    cr_assert_eq(conc_green_join(g, 10), 0);
    void *res;
    cr_assert_eq(conc_green_get(g, 10, &res), 0);
    cr_assert_eq((int)(intptr_t)res, CONC_ETIMEDOUT);
    conc_green_free(g);
    /* a kill of the green thread waiting in the call */
    cr_assert_eq(conc_go(&g, slow_call, c), 0);
    conc_sleep(0.1);
    t0 = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 10.0), 0);
    took = tu_now() - t0;
    cr_assert(conc_green_killed(g));
    if (!TU_SANITIZED)
        cr_assert_lt(took, 0.25, "kill took %.3f s", took);
    conc_green_free(g);
    /* an uncut call waits for the slow method, however long */
    cr_assert_eq(call_ll(c, "slow", 0, false), 5); /* slow, incr, slow, slow (each cut) ran */
    conc_mobject_free(c);
    conc_manager_free(m);
}

/* --------------------------------------------------------- initializer */

static char init_seen[64];
static int init_runs;

static int server_init(const void *arg, size_t len)
{
    init_runs++;
    if (len == 4 && memcmp(arg, "fail", 4) == 0)
        return 1;
    snprintf(init_seen, sizeof init_seen, "%.*s", (int)len, (const char *)arg);
    return 0;
}
CONC_REGISTER(server_init);

static int probe_new(const void *args, size_t len, void **self)
{
    (void)args, (void)len;
    *self = NULL;
    return 0;
}

static int probe_seen(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    (void)self, (void)args, (void)len;
    char buf[96];
    int n = snprintf(buf, sizeof buf, "%d:%s", init_runs, init_seen);
    if (!(*out = malloc((size_t)n)))
        return CONC_ENOMEM;
    memcpy(*out, buf, (size_t)n);
    *outlen = (size_t)n;
    return 0;
}

static const conc_mmethod_t probe_methods[] = {{"seen", probe_seen}, {NULL, NULL}};
CONC_MANAGER_REGISTER("Probe", probe_new, NULL, probe_methods);

static void initializer(conc_start_method_t method)
{
    conc_manager_opts_t o = {.method = method, .initializer = server_init, .initargs = "hello", .initargs_len = 5};
    conc_manager_t *m;
    cr_assert_eq(conc_manager_start(&m, &o), 0);
    for (int i = 0; i < 2; i++) { /* once, whatever the number of clients */
        conc_mobject_t *p;
        cr_assert_eq(conc_manager_make(m, "Probe", NULL, NULL, 0, &p), 0);
        void *out;
        size_t n;
        cr_assert_eq(conc_mobject_call(p, "seen", NULL, 0, &out, &n), 0);
        cr_assert(bytes_eq(out, n, "1:hello"), "%.*s", (int)n, (char *)out);
        free(out);
        conc_mobject_free(p);
    }
    cr_assert_eq(init_runs, 0, "ran in this process");
    conc_manager_free(m);
    /* a failing initializer: the server never serves */
    o.initargs = "fail";
    o.initargs_len = 4;
    cr_assert_eq(conc_manager_start(&m, &o), CONC_EBROKEN);
}

Test(manager_more, initializer_fork)
{
    if (TU_TSAN)
        cr_skip_test("TSan: threads after a fork from a threaded process (the spawn variant runs)");
    initializer(CONC_FORK);
}
Test(manager_more, initializer_spawn) { initializer(CONC_SPAWN); }

static int not_registered(const void *arg, size_t len)
{
    (void)arg, (void)len;
    return 0;
}

Test(manager_more, initializer_bad)
{
    conc_manager_t *m;
    conc_manager_opts_t o = {.initializer = not_registered};
    cr_assert_eq(conc_manager_start(&m, &o), CONC_EINVAL);
    o.initializer = server_init;
    o.initargs_len = 3; /* NULL initargs with a length */
    cr_assert_eq(conc_manager_start(&m, &o), CONC_EINVAL);
}

/* ------------------------------------------- a manager handed to a child */

/* arg: a manager reference (conc_manager_ref). Exit codes: 0 attached and
 * used; 4 EPERM; 5 EINVAL; 6 other. */
static int attach_child(const void *arg, size_t len)
{
    conc_manager_t *m;
    int rc = conc_manager_attach(&m, arg, len, 10);
    if (rc)
        return rc == CONC_EPERM ? 4 : rc == CONC_EINVAL ? 5 : 6;
    conc_mdict_t *d;
    TU_CK(conc_manager_dict(m, "from_children", &d) == 0);
    TU_CK(conc_mdict_set(d, "k", 1, "v", 1) == 0);
    conc_mdict_free(d);
    conc_manager_free(m);
    return 0;
}
CONC_REGISTER(attach_child);

CONC_REGISTER(mu_connect_child); /* a child connects with authkey None */

Test(manager_more, authkey_reaches_children)
{
    conc_manager_t *m = start(); /* its own key, not the process's */
    void *ref;
    size_t rlen;
    cr_assert_eq(conc_manager_ref(m, &ref, &rlen), 0);
    const char *addr = conc_manager_address(m);
    conc_start_method_t ms[] = {CONC_FORK, CONC_SPAWN, CONC_FORKSERVER};
    for (int i = 0; i < 3; i++) {
        /* by address with authkey None: the child's key is not the manager's */
        cr_assert_eq(mu_run_child(mu_connect_child, addr, strlen(addr), ms[i], 30), 4, "method %d", ms[i]);
        /* with the reference: authenticated */
        cr_assert_eq(mu_run_child(attach_child, ref, rlen, ms[i], 30), 0, "method %d", ms[i]);
    }
    /* a wrong key is refused; bytes that are no reference are CONC_EINVAL */
    unsigned char *bad = malloc(rlen);
    memcpy(bad, ref, rlen);
    bad[rlen - 1] ^= 1;
    cr_assert_eq(mu_run_child(attach_child, bad, rlen, CONC_FORK, 30), 4);
    cr_assert_eq(mu_run_child(attach_child, bad, rlen - 1, CONC_FORK, 30), 5);
    cr_assert_eq(mu_run_child(attach_child, "garbage!garbage!", 16, CONC_FORK, 30), 5);
    free(bad);
    conc_manager_t *m2;
    cr_assert_eq(conc_manager_attach(&m2, ref, 3, 1), CONC_EINVAL);
    cr_assert_eq(conc_manager_attach(NULL, ref, rlen, 1), CONC_EINVAL);
    cr_assert_eq(conc_manager_ref(NULL, &ref, &rlen), CONC_EINVAL);
    free(ref);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, "from_children", &d), 0);
    size_t n;
    cr_assert_eq(conc_mdict_len(d, &n), 0);
    cr_assert_eq(n, 1);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* A proxy cast to another type (say one from a *_get_proxy) is refused
 * before anything is sent, and stays usable. */
Test(manager_more, wrong_kind_is_einval)
{
    conc_manager_t *m = start();
    conc_mlist_t *l;
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_list(m, NULL, &l), 0);
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    void *v;
    size_t vl;
    conc_mitem_t *it;
    cr_assert_eq(conc_mdict_setdefault((conc_mdict_t *)l, "k", 1, "v", 1, &v, &vl), CONC_EINVAL);
    cr_assert_eq(conc_mdict_items((conc_mdict_t *)l, &it, &vl), CONC_EINVAL);
    cr_assert_eq(conc_mns_set((conc_mns_t *)d, "a", "b", 1), CONC_EINVAL);
    cr_assert_eq(conc_mvalue_get((conc_mvalue_t *)d, &vl), CONC_EINVAL);
    cr_assert_eq(conc_mobject_call((conc_mobject_t *)d, "incr", NULL, 0, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_mlist_append_proxy((conc_mlist_t *)d, l), CONC_EINVAL);
    cr_assert_eq(conc_mdict_set_proxy((conc_mdict_t *)l, "k", 1, d), CONC_EINVAL);
    cr_assert_eq(conc_mlist_append(l, "x", 1), 0);
    put(d, "k", "v");
    assert_get(d, "k", "v");
    conc_mlist_free(l);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* ------------------------------------------------- malformed new requests */

static int32_t reply_code(const uint8_t *r) { return (int32_t)((uint32_t)r[0] | (uint32_t)r[1] << 8 | (uint32_t)r[2] << 16 | (uint32_t)r[3] << 24); }

/* One request body on a socket-less connection: its reply code and the
 * dispatcher's verdict (0 keep going, CONC_EINVAL close). */
static int one(conc__mgr_conn_t *c, const void *req, size_t n, int32_t *code)
{
    const uint8_t *rep;
    size_t rl;
    int rc = conc__mgr_dispatch(c, req, n, &rep, &rl);
    cr_assert_geq(rl, 4);
    *code = reply_code(rep);
    return rc;
}

Test(manager_more, malformed_requests)
{
    conc__mgr_server_t *s;
    cr_assert_eq(conc__mgr_server_new(&s, "k", 1, true), 0);
    conc__mgr_conn_t *c = conc__mgr_conn_new(s, -1);
    int32_t code;
    /* a Value with a wrong-size init, a bad typecode, init on a dict */
    static const uint8_t v_bad[] = {3, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* no name */
                                    3, 0, 0, 0, 'i', 1, 2};
    cr_assert_eq(one(c, v_bad, sizeof v_bad, &code), 0);
    cr_assert_eq(code, CONC_EINVAL);
    static const uint8_t v_tc[] = {3, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 'z', 1};
    cr_assert_eq(one(c, v_tc, sizeof v_tc, &code), 0);
    cr_assert_eq(code, CONC_EINVAL);
    static const uint8_t d_init[] = {3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(one(c, d_init, sizeof d_init, &code), 0);
    cr_assert_eq(code, CONC_EINVAL);
    /* an unknown kind, a truncated init: malformed (close) */
    static const uint8_t k_bad[] = {3, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(one(c, k_bad, sizeof k_bad, &code), CONC_EINVAL);
    static const uint8_t i_trunc[] = {3, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 'i'};
    cr_assert_eq(one(c, i_trunc, sizeof i_trunc, &code), CONC_EINVAL);
    /* a registered type without any init bytes (found by the fuzzer: NULL + 0) */
    static const uint8_t u_noinit[] = {3, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(one(c, u_noinit, sizeof u_noinit, &code), 0);
    cr_assert_eq(code, CONC_EINVAL);
    static const uint8_t v_noinit[] = {3, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(one(c, v_noinit, sizeof v_noinit, &code), 0);
    cr_assert_eq(code, CONC_EINVAL);
        /* a registered type that does not exist; a typeid with a NUL */
    static const uint8_t u_none[] = {3, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0,
                                     4, 0, 0, 0, 'N', 'o', 'p', 'e', 0, 0, 0, 0};
    cr_assert_eq(one(c, u_none, sizeof u_none, &code), 0);
    cr_assert_eq(code, CONC_EKEY);
    static const uint8_t u_nul[] = {3, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0,
                                    4, 0, 0, 0, 'C', 0, 'o', 'u', 0, 0, 0, 0};
    cr_assert_eq(one(c, u_nul, sizeof u_nul, &code), 0);
    cr_assert_eq(code, CONC_EKEY);
    /* BIND_ITEM of nothing, with a bad selector, truncated */
    static const uint8_t bi_none[] = {12, 9, 9, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(one(c, bi_none, sizeof bi_none, &code), 0);
    cr_assert_eq(code, CONC_EINVAL);
    static const uint8_t bi_sel[] = {12, 1, 0, 0, 0, 0, 0, 0, 0, 7};
    cr_assert_eq(one(c, bi_sel, sizeof bi_sel, &code), CONC_EINVAL);
    static const uint8_t bi_tr[] = {12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 'a'};
    cr_assert_eq(one(c, bi_tr, sizeof bi_tr, &code), CONC_EINVAL);
    /* bind a dict, then the new dict ops malformed */
    static const uint8_t bind_d[] = {3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(one(c, bind_d, sizeof bind_d, &code), 0);
    cr_assert_eq(code, 0);
    static const uint8_t upd_tr[] = {194, 2, 0, 0, 0, 1, 0, 0, 0, 'k', 1, 0, 0, 0, 'v'}; /* says 2 pairs, has 1 */
    cr_assert_eq(one(c, upd_tr, sizeof upd_tr, &code), CONC_EINVAL);
    cr_assert_eq(one(c, bind_d, sizeof bind_d, &code), 0);
    static const uint8_t upd_huge[] = {194, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(one(c, upd_huge, sizeof upd_huge, &code), CONC_EINVAL);
    cr_assert_eq(one(c, bind_d, sizeof bind_d, &code), 0);
    static const uint8_t ref_none[] = {196, 1, 0, 0, 0, 'k', 0x77, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(one(c, ref_none, sizeof ref_none, &code), 0);
    cr_assert_eq(code, CONC_EINVAL); /* no object 0x77 */
    static const uint8_t vget_on_dict[] = {208};
    cr_assert_eq(one(c, vget_on_dict, sizeof vget_on_dict, &code), CONC_EINVAL);
    cr_assert_eq(one(c, bind_d, sizeof bind_d, &code), 0);
    static const uint8_t unknown_op[] = {250};
    cr_assert_eq(one(c, unknown_op, sizeof unknown_op, &code), CONC_EINVAL);
    /* a self-reference through the wire, then the connection goes: freed at the end */
    uint8_t selfref[] = {196, 1, 0, 0, 0, 's', 0, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(one(c, bind_d, sizeof bind_d, &code), 0);
    const uint8_t *rep;
    size_t rl;
    cr_assert_eq(conc__mgr_dispatch(c, bind_d, sizeof bind_d, &rep, &rl), 0);
    memcpy(selfref + 6, rep + 4, 8); /* the id just bound */
    cr_assert_eq(one(c, selfref, sizeof selfref, &code), 0);
    cr_assert_eq(code, 0);
    conc__mgr_conn_free(c);
    conc__mgr_server_free(s);
}

/* ------------------------------------------------ ListProxy, the rest */

#define NO CONC_MLIST_NONE
#include "manager_list_cases.h"
#undef NO

/* l = list(chars): one byte per item. */
static void fill(conc_mlist_t *l, const char *chars)
{
    cr_assert_eq(conc_mlist_clear(l), 0);
    size_t n = strlen(chars);
    conc_mbytes_t items[64];
    for (size_t i = 0; i < n; i++)
        items[i] = (conc_mbytes_t){(void *)(chars + i), 1};
    cr_assert_eq(conc_mlist_extend(l, items, n), 0);
}

/* The list's items joined, '|' between them when sep (a nested proxy: '@'). */
static char *joined(conc_mlist_t *l, bool sep)
{
    conc_mitem_t *it;
    size_t n;
    int rc = conc_mlist_slice(l, CONC_MLIST_NONE, CONC_MLIST_NONE, CONC_MLIST_NONE, &it, &n);
    cr_assert_eq(rc, 0, "slice: %s", conc_strerror(rc));
    static char out[4096];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (sep && i)
            out[k++] = '|';
        if (it[i].kind != CONC_MK_BYTES) {
            cr_assert_null(it[i].value.data);
            out[k++] = '@';
            continue;
        }
        memcpy(out + k, it[i].value.data, it[i].value.len);
        k += it[i].value.len;
    }
    out[k] = 0;
    free(it);
    return out;
}

Test(manager_more, list_contains_del)
{
    conc_manager_t *m = start();
    conc_mlist_t *l, *inner;
    cr_assert_eq(conc_manager_list(m, NULL, &l), 0);
    cr_assert_eq(conc_manager_list(m, NULL, &inner), 0);
    cr_assert_eq(conc_mlist_contains(l, "a", 1), 0); /* empty list */
    fill(l, "abc");
    cr_assert_eq(conc_mlist_append(l, "", 0), 0);
    cr_assert_eq(conc_mlist_append(l, "bc", 2), 0);
    cr_assert_eq(conc_mlist_append_proxy(l, inner), 0);
    cr_assert_eq(conc_mlist_contains(l, "b", 1), 1);
    cr_assert_eq(conc_mlist_contains(l, "bc", 2), 1);
    cr_assert_eq(conc_mlist_contains(l, "", 0), 1);
    cr_assert_eq(conc_mlist_contains(l, NULL, 0), 1);
    cr_assert_eq(conc_mlist_contains(l, "d", 1), 0);
    cr_assert_eq(conc_mlist_contains(l, "bcd", 3), 0); /* the proxy equals no bytes */
    cr_assert_eq(conc_mlist_contains(l, NULL, 1), CONC_EINVAL);
    cr_assert_eq(conc_mlist_contains(NULL, "a", 1), CONC_EINVAL);
    /* del l[i]: as Python's, IndexError (CONC_ERANGE) out of range */
    cr_assert_str_eq(joined(l, true), "a|b|c||bc|@");
    cr_assert_eq(conc_mlist_del(l, 6), CONC_ERANGE);
    cr_assert_eq(conc_mlist_del(l, -7), CONC_ERANGE);
    cr_assert_eq(conc_mlist_del(l, LONG_MAX), CONC_ERANGE);
    cr_assert_eq(conc_mlist_del(l, LONG_MIN), CONC_ERANGE);
    cr_assert_eq(conc_mlist_del(l, -1), 0); /* the nested proxy: its reference goes */
    cr_assert_eq(conc_mlist_del(l, 0), 0);
    cr_assert_eq(conc_mlist_del(l, -2), 0);
    cr_assert_str_eq(joined(l, true), "b|c|bc");
    cr_assert_eq(conc_mlist_del(l, 1), 0);
    cr_assert_eq(conc_mlist_del(l, -2), 0);
    cr_assert_eq(conc_mlist_del(l, 0), 0);
    cr_assert_eq(conc_mlist_del(l, 0), CONC_ERANGE);
    cr_assert_eq(conc_mlist_del(l, -1), CONC_ERANGE);
    cr_assert_eq(conc_mlist_del(NULL, 0), CONC_EINVAL);
    cr_assert_eq(conc_mlist_append(inner, "x", 1), 0); /* still alive through its proxy */
    conc_mlist_free(inner);
    conc_mlist_free(l);
    conc_manager_free(m);
}

Test(manager_more, list_slices)
{
    conc_manager_t *m = start();
    conc_mlist_t *l;
    cr_assert_eq(conc_manager_list(m, NULL, &l), 0);
    fill(l, "0123456789");
    for (size_t i = 0; i < sizeof slice_cases / sizeof *slice_cases; i++) {
        const struct slice_case *sc = &slice_cases[i];
        conc_mitem_t *it;
        size_t n;
        cr_assert_eq(conc_mlist_slice(l, sc->a, sc->b, sc->s, &it, &n), 0);
        char got[16] = {0};
        cr_assert_leq(n, 10);
        for (size_t k = 0; k < n; k++) {
            cr_assert_eq(it[k].value.len, 1);
            cr_assert_eq(it[k].key.len, 0);
            got[k] = *(char *)it[k].value.data;
        }
        free(it);
        cr_assert_str_eq(got, sc->got, "l[%ld:%ld:%ld] = %s, want %s", sc->a, sc->b, sc->s, got,
                         sc->got);
        cr_assert_eq(conc_mlist_del_slice(l, sc->a, sc->b, sc->s), 0);
        cr_assert_str_eq(joined(l, false), sc->left, "del l[%ld:%ld:%ld]", sc->a, sc->b, sc->s);
        if (strcmp(sc->left, "0123456789") != 0)
            fill(l, "0123456789");
    }
    /* step 0: ValueError, nothing changes */
    conc_mitem_t *it = NULL;
    size_t n = 0;
    cr_assert_eq(conc_mlist_slice(l, 0, 5, 0, &it, &n), CONC_EINVAL);
    cr_assert_eq(conc_mlist_del_slice(l, 0, 5, 0), CONC_EINVAL);
    cr_assert_eq(conc_mlist_slice(l, 0, 5, 1, NULL, &n), CONC_EINVAL);
    cr_assert_eq(conc_mlist_slice(NULL, 0, 5, 1, &it, &n), CONC_EINVAL);
    cr_assert_eq(conc_mlist_del_slice(NULL, 0, 5, 1), CONC_EINVAL);
    cr_assert_str_eq(joined(l, false), "0123456789");
    /* extreme bounds and steps */
    cr_assert_eq(conc_mlist_slice(l, LONG_MAX, LONG_MIN + 1, -(LONG_MAX), &it, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(*(char *)it[0].value.data, '9');
    free(it);
    cr_assert_eq(conc_mlist_slice(l, LONG_MIN + 1, LONG_MAX, LONG_MAX, &it, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(*(char *)it[0].value.data, '0');
    free(it);
    cr_assert_eq(conc_mlist_slice(l, -1, CONC_MLIST_NONE, LONG_MAX, &it, &n), 0); /* l[9::huge] */
    cr_assert_eq(n, 1);
    cr_assert_eq(*(char *)it[0].value.data, '9');
    free(it);
    cr_assert_eq(conc_mlist_slice(l, 0, CONC_MLIST_NONE, -(LONG_MAX), &it, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(*(char *)it[0].value.data, '0');
    free(it);
    cr_assert_eq(conc_mlist_del_slice(l, -1, CONC_MLIST_NONE, LONG_MAX), 0);
    cr_assert_eq(conc_mlist_del_slice(l, 0, CONC_MLIST_NONE, -(LONG_MAX)), 0);
    cr_assert_str_eq(joined(l, false), "12345678");
    fill(l, "0123456789");
    /* an empty list, a nested proxy in a slice (data NULL, kind set) */
    cr_assert_eq(conc_mlist_clear(l), 0);
    cr_assert_eq(conc_mlist_slice(l, CONC_MLIST_NONE, CONC_MLIST_NONE, -1, &it, &n), 0);
    cr_assert_eq(n, 0);
    free(it);
    cr_assert_eq(conc_mlist_del_slice(l, CONC_MLIST_NONE, CONC_MLIST_NONE, -2), 0);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    cr_assert_eq(conc_mlist_append(l, "ab", 2), 0);
    cr_assert_eq(conc_mlist_append_proxy(l, d), 0);
    cr_assert_eq(conc_mlist_append(l, "", 0), 0);
    cr_assert_eq(conc_mlist_slice(l, CONC_MLIST_NONE, CONC_MLIST_NONE, -1, &it, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(it[0].kind, CONC_MK_BYTES);
    cr_assert_eq(it[0].value.len, 0);
    cr_assert_not_null(it[0].value.data);
    cr_assert_eq(it[1].kind, CONC_MK_DICT);
    cr_assert_null(it[1].value.data);
    cr_assert(bytes_eq(it[2].value.data, it[2].value.len, "ab"));
    free(it);
    cr_assert_eq(conc_mlist_del_slice(l, 1, 2, 1), 0); /* drops the reference */
    cr_assert_str_eq(joined(l, true), "ab|");
    put(d, "k", "v"); /* its own proxy keeps it */
    conc_mdict_free(d);
    conc_mlist_free(l);
    conc_manager_free(m);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

Test(manager_more, list_sort)
{
    conc_manager_t *m = start();
    conc_mlist_t *l;
    cr_assert_eq(conc_manager_list(m, NULL, &l), 0);
    cr_assert_eq(conc_mlist_sort(l, false), 0); /* empty */
    static const char *words[] = {"b", "abc", "ab", "", "b", "a", "\xff", "ab\x01", "ab\x00"};
    size_t nw = sizeof words / sizeof *words;
    for (size_t i = 0; i < nw; i++)
        cr_assert_eq(conc_mlist_append(l, words[i], i == nw - 1 ? 3 : strlen(words[i])), 0);
    cr_assert_eq(conc_mlist_sort(l, false), 0);
    conc_mitem_t *it;
    size_t n;
    /* memcmp, then the shorter first: "ab" < "ab\0" < "ab\1" < "abc" */
    static const char *want[] = {"", "a", "ab", "ab\x00", "ab\x01", "abc", "b", "b", "\xff"};
    static const size_t wlen[] = {0, 1, 2, 3, 3, 3, 1, 1, 1};
    cr_assert_eq(conc_mlist_slice(l, CONC_MLIST_NONE, CONC_MLIST_NONE, CONC_MLIST_NONE, &it, &n), 0);
    cr_assert_eq(n, nw);
    for (size_t i = 0; i < n; i++)
        cr_assert(it[i].value.len == wlen[i] && memcmp(it[i].value.data, want[i], wlen[i]) == 0,
                  "item %zu", i);
    free(it);
    cr_assert_eq(conc_mlist_sort(l, true), 0);
    cr_assert_eq(conc_mlist_slice(l, CONC_MLIST_NONE, CONC_MLIST_NONE, CONC_MLIST_NONE, &it, &n), 0);
    for (size_t i = 0; i < n; i++)
        cr_assert(it[i].value.len == wlen[n - 1 - i] &&
                      memcmp(it[i].value.data, want[n - 1 - i], wlen[n - 1 - i]) == 0,
                  "reversed item %zu", i);
    free(it);
    /* many random items against qsort */
    srand(17);
    char buf[300][8];
    const char *ptr[300];
    conc_mbytes_t items[300];
    for (int i = 0; i < 300; i++) {
        snprintf(buf[i], sizeof buf[i], "%d", rand() % 1000);
        ptr[i] = buf[i];
        items[i] = (conc_mbytes_t){buf[i], strlen(buf[i])};
    }
    cr_assert_eq(conc_mlist_clear(l), 0);
    cr_assert_eq(conc_mlist_extend(l, items, 300), 0);
    cr_assert_eq(conc_mlist_sort(l, false), 0);
    qsort(ptr, 300, sizeof *ptr, cmp_str); /* the same order for digit strings */
    cr_assert_eq(conc_mlist_slice(l, CONC_MLIST_NONE, CONC_MLIST_NONE, CONC_MLIST_NONE, &it, &n), 0);
    cr_assert_eq(n, 300);
    for (size_t i = 0; i < n; i++)
        cr_assert(bytes_eq(it[i].value.data, it[i].value.len, ptr[i]), "item %zu", i);
    free(it);
    /* a nested proxy has no order (TypeError); alone it sorts */
    conc_mlist_t *inner;
    cr_assert_eq(conc_manager_list(m, NULL, &inner), 0);
    cr_assert_eq(conc_mlist_append_proxy(l, inner), 0);
    cr_assert_eq(conc_mlist_sort(l, false), CONC_EINVAL);
    cr_assert_eq(conc_mlist_len(l, &n), 0);
    cr_assert_eq(n, 301);
    void *last;
    cr_assert_eq(conc_mlist_get_proxy(l, 300, &last, NULL), 0); /* still last */
    conc_mproxy_free(last);
    cr_assert_eq(conc_mlist_clear(l), 0);
    cr_assert_eq(conc_mlist_append_proxy(l, inner), 0);
    cr_assert_eq(conc_mlist_sort(l, true), 0);
    cr_assert_eq(conc_mlist_sort(NULL, true), CONC_EINVAL);
    conc_mlist_free(inner);
    conc_mlist_free(l);
    conc_manager_free(m);
}

Test(manager_more, list_imul)
{
    conc_manager_t *m = start();
    conc_mlist_t *l, *inner;
    cr_assert_eq(conc_manager_list(m, NULL, &l), 0);
    cr_assert_eq(conc_manager_list(m, NULL, &inner), 0);
    cr_assert_eq(conc_mlist_imul(l, 5), 0); /* [] * 5 */
    cr_assert_str_eq(joined(l, true), "");
    fill(l, "ab");
    cr_assert_eq(conc_mlist_append(l, "", 0), 0);
    cr_assert_eq(conc_mlist_imul(l, 1), 0);
    cr_assert_str_eq(joined(l, true), "a|b|");
    cr_assert_eq(conc_mlist_imul(l, 3), 0);
    cr_assert_str_eq(joined(l, true), "a|b||a|b||a|b|");
    cr_assert_eq(conc_mlist_imul(l, 0), 0);
    cr_assert_str_eq(joined(l, true), "");
    fill(l, "xy");
    cr_assert_eq(conc_mlist_imul(l, -4), 0);
    cr_assert_str_eq(joined(l, true), "");
    fill(l, "xy");
    cr_assert_eq(conc_mlist_imul(l, LONG_MIN), 0);
    cr_assert_str_eq(joined(l, true), "");
    /* too large: MemoryError, nothing changes */
    fill(l, "xy");
    cr_assert_eq(conc_mlist_imul(l, LONG_MAX), CONC_ENOMEM);
    cr_assert_eq(conc_mlist_imul(l, 1L << 40), CONC_ENOMEM);
    cr_assert_eq(conc_mlist_imul(l, (1L << 19) + 1), CONC_ENOMEM); /* past 2^20 items */
    static char big[1 << 16];
    cr_assert_eq(conc_mlist_append(l, big, sizeof big), 0);
    cr_assert_eq(conc_mlist_imul(l, 1025), CONC_ENOMEM); /* past 64 MiB of bytes */
    cr_assert_eq(conc_mlist_del(l, -1), 0);
    cr_assert_str_eq(joined(l, true), "x|y");
    /* nested proxies repeat as references to the same object */
    cr_assert_eq(conc_mlist_append_proxy(l, inner), 0);
    cr_assert_eq(conc_mlist_imul(l, 2), 0);
    cr_assert_str_eq(joined(l, true), "x|y|@|x|y|@");
    conc_mlist_t *again;
    cr_assert_eq(conc_mlist_get_proxy(l, -1, (void **)&again, NULL), 0);
    cr_assert_eq(conc_mlist_append(again, "seen", 4), 0);
    conc_mlist_free(again);
    cr_assert_eq(conc_mlist_contains(inner, "seen", 4), 1);
    cr_assert_eq(conc_mlist_del(l, 2), 0); /* one reference goes, the other stays */
    cr_assert_eq(conc_mlist_get_proxy(l, -1, (void **)&again, NULL), 0);
    cr_assert_eq(conc_mlist_contains(again, "seen", 4), 1);
    conc_mlist_free(again);
    cr_assert_eq(conc_mlist_imul(l, 0), 0);
    cr_assert_eq(conc_mlist_contains(inner, "seen", 4), 1);
    cr_assert_eq(conc_mlist_imul(NULL, 2), CONC_EINVAL);
    conc_mlist_free(inner);
    conc_mlist_free(l);
    conc_manager_free(m);
}

/* A forked child uses every new list call on the parent's list. */
static int list_more_child(const void *arg, size_t len)
{
    (void)len;
    conc_mlist_t *l = *(conc_mlist_t *const *)arg;
    TU_CK(conc_mlist_contains(l, "c", 1) == 1);
    TU_CK(conc_mlist_contains(l, "z", 1) == 0);
    TU_CK(conc_mlist_del(l, -1) == 0);                       /* "dcbae" -> "dcba" */
    TU_CK(conc_mlist_sort(l, false) == 0);                   /* "abcd" */
    TU_CK(conc_mlist_del_slice(l, CONC_MLIST_NONE, CONC_MLIST_NONE, 2) == 0); /* "bd" */
    TU_CK(conc_mlist_imul(l, 2) == 0);                       /* "bdbd" */
    conc_mitem_t *it;
    size_t n;
    TU_CK(conc_mlist_slice(l, -1, CONC_MLIST_NONE, -2, &it, &n) == 0 && n == 2);
    TU_CK(*(char *)it[0].value.data == 'd' && *(char *)it[1].value.data == 'd');
    free(it);
    return 0;
}
CONC_REGISTER(list_more_child);

Test(manager_more, list_more_across_fork)
{
    conc_manager_t *m = start();
    conc_mlist_t *l;
    cr_assert_eq(conc_manager_list(m, NULL, &l), 0);
    fill(l, "dcbae");
    cr_assert_eq(mu_run_child(list_more_child, &l, sizeof l, CONC_FORK, 30), 0);
    cr_assert_str_eq(joined(l, false), "bdbd");
    conc_mlist_free(l);
    conc_manager_free(m);
}

Test(manager_more, list_more_malformed)
{
    conc__mgr_server_t *s;
    cr_assert_eq(conc__mgr_server_new(&s, "k", 1, true), 0);
    conc__mgr_conn_t *c = conc__mgr_conn_new(s, -1);
    int32_t code;
    static const uint8_t bind_l[] = {3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t bind_d[] = {3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    /* each malformed request closes the connection: bind again after it */
    static const struct { uint8_t b[32]; size_t n; } bad[] = {
        {{224}, 1},                                  /* contains without a value */
        {{224, 5, 0, 0, 0, 'a'}, 6},                 /* a value shorter than it says */
        {{224, 1, 0, 0, 0, 'a', 0}, 7},              /* a trailing byte */
        {{225, 1, 0, 0}, 4},                         /* del: a short index */
        {{225, 1, 0, 0, 0, 0, 0, 0, 0, 9}, 10},
        {{226, 0, 0, 0, 0, 0, 0, 0, 0}, 9},          /* slice: one bound of three */
        {{227, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}, 19},
        {{228}, 1},                                  /* sort: no flag */
        {{228, 2}, 2},                               /* sort: a flag neither 0 nor 1 */
        {{228, 0, 0}, 3},
        {{229, 3}, 2},                               /* imul: a short count */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(one(c, bind_l, sizeof bind_l, &code), 0);
        cr_assert_eq(code, 0);
        cr_assert_eq(one(c, bad[i].b, bad[i].n, &code), CONC_EINVAL, "request %zu", i);
    }
    /* the new ops on a dict: not for the bound object */
    cr_assert_eq(one(c, bind_d, sizeof bind_d, &code), 0);
    static const uint8_t sort_d[] = {228, 0};
    cr_assert_eq(one(c, sort_d, sizeof sort_d, &code), CONC_EINVAL);
    /* well-formed: step 0 is answered (ValueError), the connection stays */
    cr_assert_eq(one(c, bind_l, sizeof bind_l, &code), 0);
    static const uint8_t step0[25] = {226};
    cr_assert_eq(one(c, step0, sizeof step0, &code), 0);
    cr_assert_eq(code, CONC_EINVAL);
    static const uint8_t app[] = {32, 1, 0, 0, 0, 'q'};
    cr_assert_eq(one(c, app, sizeof app, &code), 0);
    cr_assert_eq(code, 0);
    static const uint8_t has[] = {224, 1, 0, 0, 0, 'q'};
    cr_assert_eq(one(c, has, sizeof has, &code), 0);
    cr_assert_eq(code, 0);
    static const uint8_t big[] = {229, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    cr_assert_eq(one(c, big, sizeof big, &code), 0);
    cr_assert_eq(code, CONC_ENOMEM);
    conc__mgr_conn_free(c);
    conc__mgr_server_free(s);
}

/* The client's decoder of items replies (dict items/values/copy, list
 * slices), fed by hand: the server is untrusted, so a reply whose count or
 * sizes do not match its bytes breaks the proxy instead of being read. */
static int take(bool keyed, bool with_keys, conc__wbuf_t *w, conc_mitem_t **items, size_t *n,
                bool *broken)
{
    mproxy_t p = {.fd = -1};
    conc__rbuf_t rep = {w->p, w->p + w->len, false};
    int rc = conc__mp_take_items(&p, &rep, keyed, with_keys, items, n);
    *broken = p.broken;
    conc__wb_reset(w);
    return rc;
}

Test(manager_more, items_replies_decoded_and_checked)
{
    conc__wbuf_t w = {0};
    conc_mitem_t *it;
    size_t n;
    bool broken;
    /* a slice: bytes, a nested proxy, empty bytes */
    conc__wb_u64(&w, 3);
    conc__wb_u8(&w, CONC_MK_BYTES), conc__wb_bytes(&w, "ab", 2);
    conc__wb_u8(&w, CONC_MK_DICT);
    conc__wb_u8(&w, CONC_MK_BYTES), conc__wb_bytes(&w, "", 0);
    cr_assert_eq(take(false, false, &w, &it, &n, &broken), 0);
    cr_assert_eq(n, 3);
    cr_assert(it[0].kind == CONC_MK_BYTES && bytes_eq(it[0].value.data, it[0].value.len, "ab"));
    cr_assert(it[1].kind == CONC_MK_DICT && !it[1].value.data && !it[1].key.data);
    cr_assert(it[2].kind == CONC_MK_BYTES && it[2].value.data && it[2].value.len == 0);
    free(it);
    /* dict items, with and without the keys */
    for (int wk = 0; wk < 2; wk++) {
        conc__wb_u64(&w, 2);
        conc__wb_bytes(&w, "k1", 2), conc__wb_u8(&w, CONC_MK_BYTES), conc__wb_bytes(&w, "v1", 2);
        conc__wb_bytes(&w, "k2", 2), conc__wb_u8(&w, CONC_MK_LIST);
        cr_assert_eq(take(true, wk, &w, &it, &n, &broken), 0);
        cr_assert_eq(n, 2);
        cr_assert(bytes_eq(it[0].value.data, it[0].value.len, "v1"));
        cr_assert_eq(it[1].kind, CONC_MK_LIST);
        if (wk) {
            cr_assert(bytes_eq(it[0].key.data, it[0].key.len, "k1"));
            cr_assert(bytes_eq(it[1].key.data, it[1].key.len, "k2"));
        } else {
            cr_assert(!it[0].key.data && !it[1].key.data);
        }
        free(it);
    }
    /* more items announced than the bytes can hold; a short value; a
     * trailing byte: each breaks the proxy */
    conc__wb_u64(&w, 1000);
    conc__wb_u8(&w, CONC_MK_BYTES), conc__wb_bytes(&w, "x", 1);
    cr_assert_eq(take(false, false, &w, &it, &n, &broken), CONC_EBROKEN);
    cr_assert(broken);
    conc__wb_u64(&w, 1);
    conc__wb_u8(&w, CONC_MK_BYTES), conc__wb_u32(&w, 5), conc__wb_put(&w, "ab", 2);
    cr_assert_eq(take(false, false, &w, &it, &n, &broken), CONC_EBROKEN);
    conc__wb_u64(&w, 1);
    conc__wb_bytes(&w, "k", 1), conc__wb_u8(&w, CONC_MK_LIST), conc__wb_u8(&w, 0);
    cr_assert_eq(take(true, true, &w, &it, &n, &broken), CONC_EBROKEN);
    conc__wb_u64(&w, 0);
    cr_assert_eq(take(true, true, &w, &it, &n, &broken), 0);
    cr_assert_eq(n, 0);
    free(it);
    conc__wb_free(&w);
}

TU_MAIN_WITH_PROCESS_GUARD()
