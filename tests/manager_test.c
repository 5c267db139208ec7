/*
 * conc_manager_t and its proxies: the behaviours of CPython's
 * _test_multiprocessing _TestMyManager / _TestRemoteManager /
 * _TestManagerRestart, the dict and list proxy tests, the Lock and Queue
 * through a manager, _TestListenerClient's authentication (a wrong key is
 * refused), plus what conc adds: a dead server gives CONC_EBROKEN instead
 * of a hang, malformed frames close only their own connection, a lock
 * held by a vanished client is released. SHA-256 and HMAC-SHA256 are
 * checked against FIPS 180-4 examples and the RFC 4231 vectors.
 *
 * Own main: spawned children (a process the manager's owner did not
 * fork, connecting by address) run a fresh copy of this executable.
 */
#include "manager_util.h"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <conc/green.h>
#include <conc/manager.h>

#include "core/time.h"
#include "manager/internal.h"
#include "manager/sha256.h"

TestSuite(manager, .init = mu_setup, .timeout = TU_TIMEOUT);

/* ----------------------------------------------------------- SHA / HMAC */

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

/* Hex digits, or "#xxN": N bytes of 0xxx. */
static void unhex(const char *s, uint8_t *out, size_t *n)
{
    size_t k = 0;
    if (s[0] == '#') {
        unsigned b;
        sscanf(s + 1, "%2x", &b);
        *n = (size_t)atoi(s + 3);
        memset(out, (int)b, *n);
        return;
    }
    for (; s[0] && s[1]; s += 2)
        sscanf(s, "%2hhx", &out[k++]);
    *n = k;
}

Test(manager, sha256_fips_examples)
{
    uint8_t d[32];
    char h[65];
    conc__sha256("abc", 3, d);
    hex(d, 32, h);
    cr_assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    conc__sha256("", 0, d);
    hex(d, 32, h);
    cr_assert_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    conc__sha256(two, strlen(two), d);
    hex(d, 32, h);
    cr_assert_str_eq(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', fed in odd-sized pieces */
    conc__sha256_t s;
    conc__sha256_init(&s);
    char a[997];
    memset(a, 'a', sizeof a);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof a ? left : sizeof a;
        conc__sha256_update(&s, a, n);
        left -= n;
    }
    conc__sha256_final(&s, d);
    hex(d, 32, h);
    cr_assert_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Test(manager, hmac_sha256_rfc4231)
{
    static const struct {
        const char *key, *data, *mac; /* hex, or "=" + text for data */
        size_t trunc;
    } v[] = {
        {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "=Hi There",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", 32},
        {"4a656665", "=what do ya want for nothing?",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", 32},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "#dd50",
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe", 32},
        {"0102030405060708090a0b0c0d0e0f10111213141516171819", "#cd50",
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b", 32},
        {"0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c", "=Test With Truncation",
         "a3b6167473100ee06e0c796c2955552b", 16},
        {"#aa131",
         "=Test Using Larger Than Block-Size Key - Hash Key First",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", 32},
        {"#aa131",
         "=This is a test using a larger than block-size key and a larger than block-size data. The key "
         "needs to be hashed before being used by the HMAC algorithm.",
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2", 32},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t key[256], data[256], mac[32];
        size_t kn, dn;
        unhex(v[i].key, key, &kn);
        if (v[i].data[0] == '=') {
            dn = strlen(v[i].data + 1);
            memcpy(data, v[i].data + 1, dn);
        } else {
            unhex(v[i].data, data, &dn);
        }
        conc__hmac_sha256(key, kn, data, dn, mac);
        char h[65];
        hex(mac, v[i].trunc, h);
        cr_assert_str_eq(h, v[i].mac, "RFC 4231 test case %zu", i + 1);
    }
    cr_assert(conc__ct_equal("abc", "abc", 3));
    cr_assert_not(conc__ct_equal("abc", "abd", 3));
}

/* ------------------------------------------------------------- helpers */

static conc_manager_t *start(bool tcp)
{
    return mu_start((conc_manager_opts_t){.tcp = tcp, .authkey = "secret", .authkey_len = 6, .timeout = 10});
}

/* "address\0key" for children that connect by address. */
static size_t addr_arg(conc_manager_t *m, char *buf, size_t cap)
{
    size_t klen;
    const void *key = conc_manager_authkey(m, &klen);
    size_t alen = strlen(conc_manager_address(m));
    cr_assert_lt(alen + 1 + klen, cap);
    memcpy(buf, conc_manager_address(m), alen + 1);
    memcpy(buf + alen + 1, key, klen);
    return alen + 1 + klen;
}

static int connect_arg(const void *arg, size_t len, conc_manager_t **m)
{
    const char *addr = arg;
    size_t alen = strlen(addr);
    return conc_manager_connect(m, addr, addr + alen + 1, len - alen - 1, 10);
}

/* ---------------------------------------------------------- dict, list */

Test(manager, dict_proxy)
{
    conc_manager_t *m = start(false);
    struct stat st;
    const char *addr = conc_manager_address(m);
    cr_assert_eq(addr[0], '/');
    char dir[256];
    snprintf(dir, sizeof dir, "%s", addr);
    *strrchr(dir, '/') = 0;
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700, "socket directory mode %o", st.st_mode & 0777);
    cr_assert_gt(conc_manager_pid(m), 0);

    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    size_t n = 99;
    cr_assert_eq(conc_mdict_len(d, &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(conc_mdict_set(d, "a", 1, "1", 1), 0);
    cr_assert_eq(conc_mdict_set(d, "b", 1, "22", 2), 0);
    cr_assert_eq(conc_mdict_set(d, "", 0, "", 0), 0); /* empty key and value */
    cr_assert_eq(conc_mdict_set(d, "a", 1, "111", 3), 0); /* replace keeps order */
    void *v;
    size_t vl;
    cr_assert_eq(conc_mdict_get(d, "a", 1, &v, &vl), 0);
    cr_assert_eq(vl, 3);
    cr_assert_eq(memcmp(v, "111", 3), 0);
    free(v);
    cr_assert_eq(conc_mdict_get(d, "", 0, &v, &vl), 0);
    cr_assert_eq(vl, 0);
    free(v);
    cr_assert_eq(conc_mdict_get(d, "zz", 2, &v, &vl), CONC_EKEY); /* KeyError */
    bool has;
    cr_assert_eq(conc_mdict_contains(d, "b", 1, &has), 0);
    cr_assert(has);
    cr_assert_eq(conc_mdict_contains(d, "c", 1, &has), 0);
    cr_assert_not(has);
    conc_mbytes_t *keys;
    cr_assert_eq(conc_mdict_keys(d, &keys, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(keys[0].len, 1);
    cr_assert_eq(memcmp(keys[0].data, "a", 1), 0);
    cr_assert_eq(memcmp(keys[1].data, "b", 1), 0);
    cr_assert_eq(keys[2].len, 0);
    free(keys);
    cr_assert_eq(conc_mdict_pop(d, "b", 1, &v, &vl), 0);
    cr_assert_eq(vl, 2);
    free(v);
    cr_assert_eq(conc_mdict_pop(d, "b", 1, &v, &vl), CONC_EKEY);
    cr_assert_eq(conc_mdict_del(d, "a", 1), 0);
    cr_assert_eq(conc_mdict_del(d, "a", 1), CONC_EKEY);
    cr_assert_eq(conc_mdict_len(d, &n), 0);
    cr_assert_eq(n, 1);
    /* many keys: growth and lookups */
    for (int i = 0; i < 2000; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "key%d", i);
        cr_assert_eq(conc_mdict_set(d, k, (size_t)kl, &i, sizeof i), 0);
    }
    for (int i = 0; i < 2000; i += 7) {
        char k[16];
        int kl = snprintf(k, sizeof k, "key%d", i);
        cr_assert_eq(conc_mdict_get(d, k, (size_t)kl, &v, &vl), 0);
        cr_assert_eq(*(int *)v, i);
        free(v);
    }
    cr_assert_eq(conc_mdict_clear(d), 0);
    cr_assert_eq(conc_mdict_len(d, &n), 0);
    cr_assert_eq(n, 0);
    /* a large value (1 MiB) round-trips */
    size_t big = 1 << 20;
    char *b = malloc(big);
    for (size_t i = 0; i < big; i++)
        b[i] = (char)(i * 31);
    cr_assert_eq(conc_mdict_set(d, "big", 3, b, big), 0);
    cr_assert_eq(conc_mdict_get(d, "big", 3, &v, &vl), 0);
    cr_assert_eq(vl, big);
    cr_assert_eq(memcmp(v, b, big), 0);
    free(v);
    free(b);
    conc_mdict_free(d);
    cr_assert_eq(conc_manager_free(m), 0);
    cr_assert_neq(stat(dir, &st), 0, "socket directory left behind");
}

Test(manager, list_proxy)
{
    conc_manager_t *m = start(false);
    conc_mlist_t *l;
    cr_assert_eq(conc_manager_list(m, NULL, &l), 0);
    cr_assert_eq(conc_mlist_append(l, "x", 1), 0);
    conc_mbytes_t items[3] = {{"a", 1}, {"bb", 2}, {"ccc", 3}};
    cr_assert_eq(conc_mlist_extend(l, items, 3), 0);
    size_t n;
    cr_assert_eq(conc_mlist_len(l, &n), 0);
    cr_assert_eq(n, 4);
    void *v;
    size_t vl;
    cr_assert_eq(conc_mlist_get(l, -1, &v, &vl), 0);
    cr_assert_eq(vl, 3);
    free(v);
    cr_assert_eq(conc_mlist_get(l, 4, &v, &vl), CONC_ERANGE); /* IndexError */
    cr_assert_eq(conc_mlist_get(l, -5, &v, &vl), CONC_ERANGE);
    cr_assert_eq(conc_mlist_get(l, LONG_MIN, &v, &vl), CONC_ERANGE);
    cr_assert_eq(conc_mlist_set(l, 1, "A", 1), 0);
    cr_assert_eq(conc_mlist_set(l, 9, "A", 1), CONC_ERANGE);
    cr_assert_eq(conc_mlist_pop(l, 0, &v, &vl), 0); /* "x" */
    cr_assert_eq(vl, 1);
    cr_assert_eq(*(char *)v, 'x');
    free(v);
    cr_assert_eq(conc_mlist_get(l, 0, &v, &vl), 0);
    cr_assert_eq(*(char *)v, 'A');
    free(v);
    cr_assert_eq(conc_mlist_pop(l, -1, &v, &vl), 0);
    cr_assert_eq(vl, 3);
    free(v);
    cr_assert_eq(conc_mlist_clear(l), 0);
    cr_assert_eq(conc_mlist_pop(l, -1, &v, &vl), CONC_ERANGE); /* pop from empty list */
    conc_mlist_free(l);
    conc_manager_free(m);
}

Test(manager, names_and_bad_arguments)
{
    conc_manager_t *m = start(true); /* TCP this time */
    cr_assert_not_null(strstr(conc_manager_address(m), "127.0.0.1:"));
    conc_mdict_t *a, *b;
    cr_assert_eq(conc_manager_dict(m, "shared", &a), 0);
    cr_assert_eq(conc_manager_dict(m, "shared", &b), 0);
    cr_assert_eq(conc_mdict_set(a, "k", 1, "v", 1), 0);
    bool has = false;
    cr_assert_eq(conc_mdict_contains(b, "k", 1, &has), 0);
    cr_assert(has, "the same name must give the same object");
    conc_mlist_t *l;
    cr_assert_eq(conc_manager_list(m, "shared", &l), CONC_EINVAL); /* taken by a dict */
    conc_mdict_free(a);
    conc_mdict_free(b);
    /* a named object outlives its proxies */
    cr_assert_eq(conc_manager_dict(m, "shared", &a), 0);
    cr_assert_eq(conc_mdict_contains(a, "k", 1, &has), 0);
    cr_assert(has);
    conc_mdict_free(a);

    cr_assert_eq(conc_manager_dict(NULL, NULL, &a), CONC_EINVAL);
    cr_assert_eq(conc_manager_dict(m, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_mdict_set(NULL, "k", 1, "v", 1), CONC_EINVAL);
    cr_assert_eq(conc_manager_connect(&m, NULL, "k", 1, 1), CONC_EINVAL);
    conc_manager_t *x;
    cr_assert_eq(conc_manager_connect(&x, "127.0.0.1:notaport", "k", 1, 1), CONC_EINVAL);
    cr_assert_eq(conc_manager_connect(&x, "/nonexistent/conc/sock", "k", 1, 1), CONC_EBROKEN);
    conc_mlock_t *k;
    cr_assert_eq(conc_manager_lock(m, NULL, &k), 0);
    cr_assert_eq(conc_mlock_acquire(k, false, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_mlock_acquire(k, true, -2), CONC_EINVAL);
    cr_assert_eq(conc_mlock_acquire(k, true, NAN), CONC_EINVAL);
    conc_mlock_free(k);
    conc_manager_opts_t bad = {.timeout = -1};
    cr_assert_eq(conc_manager_start(&x, &bad), CONC_EINVAL);
    cr_assert_eq(conc_manager_free(NULL), CONC_EINVAL);
    conc_manager_free(m);
}

/* ------------------------------------------------- other processes */

static conc_mdict_t *g_dict; /* inherited through fork */

static int child_inherited(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    /* the inherited proxy reconnects in this process */
    TU_CK(conc_mdict_set(g_dict, "child", 5, "yes", 3) == 0);
    void *v;
    size_t vl;
    TU_CK(conc_mdict_get(g_dict, "parent", 6, &v, &vl) == 0 && vl == 2);
    free(v);
    for (int i = 0; i < 200; i++)
        TU_CK(conc_mdict_set(g_dict, &i, sizeof i, "", 0) == 0);
    return 0;
}
CONC_REGISTER(child_inherited);

static int child_by_address(const void *arg, size_t len)
{
    conc_manager_t *m;
    int rc = connect_arg(arg, len, &m);
    TU_CK(rc == 0);
    TU_CK(conc_manager_pid(m) == 0); /* not ours */
    conc_mdict_t *d;
    TU_CK(conc_manager_dict(m, "registry", &d) == 0);
    void *v;
    size_t vl;
    TU_CK(conc_mdict_get(d, "from", 4, &v, &vl) == 0 && vl == 6 && memcmp(v, "parent", 6) == 0);
    free(v);
    TU_CK(conc_mdict_set(d, "reply", 5, "spawned", 7) == 0);
    conc_mlist_t *l;
    TU_CK(conc_manager_list(m, "log", &l) == 0);
    TU_CK(conc_mlist_append(l, "hello", 5) == 0);
    conc_mlist_free(l);
    conc_mdict_free(d);
    TU_CK(conc_manager_free(m) == 0); /* does not stop the server */
    return 0;
}
CONC_REGISTER(child_by_address);

Test(manager, proxy_in_forked_child)
{
    conc_manager_t *m = start(false);
    cr_assert_eq(conc_manager_dict(m, NULL, &g_dict), 0);
    cr_assert_eq(conc_mdict_set(g_dict, "parent", 6, "ok", 2), 0);
    cr_assert_eq(mu_run_child(child_inherited, NULL, 0, CONC_FORK, 30), 0);
    void *v;
    size_t vl;
    cr_assert_eq(conc_mdict_get(g_dict, "child", 5, &v, &vl), 0); /* parent's connection intact */
    cr_assert_eq(vl, 3);
    free(v);
    size_t n;
    cr_assert_eq(conc_mdict_len(g_dict, &n), 0);
    cr_assert_eq(n, 202);
    conc_mdict_free(g_dict);
    conc_manager_free(m);
}

Test(manager, spawned_process_connects_by_address)
{
    conc_manager_t *m = start(false);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, "registry", &d), 0);
    cr_assert_eq(conc_mdict_set(d, "from", 4, "parent", 6), 0);
    char arg[512];
    size_t len = addr_arg(m, arg, sizeof arg);
    cr_assert_eq(mu_run_child(child_by_address, arg, len, CONC_SPAWN, 30), 0);
    void *v;
    size_t vl;
    cr_assert_eq(conc_mdict_get(d, "reply", 5, &v, &vl), 0);
    cr_assert_eq(vl, 7);
    free(v);
    conc_mlist_t *l;
    cr_assert_eq(conc_manager_list(m, "log", &l), 0);
    size_t n;
    cr_assert_eq(conc_mlist_len(l, &n), 0);
    cr_assert_eq(n, 1);
    conc_mlist_free(l);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* A server started with spawn (a fresh program, not a fork). */
Test(manager, spawned_server)
{
    conc_manager_opts_t o = {.method = CONC_SPAWN, .timeout = 10};
    conc_manager_t *m;
    cr_assert_eq(conc_manager_start(&m, &o), 0);
    size_t klen = 0;
    cr_assert_not_null(conc_manager_authkey(m, &klen));
    cr_assert_eq(klen, 32); /* a random key */
    conc_mqueue_t *q;
    cr_assert_eq(conc_manager_queue(m, NULL, 0, &q), 0);
    cr_assert_eq(conc_mqueue_put(q, "p", 1, true, CONC_FOREVER), 0);
    void *v;
    size_t vl;
    cr_assert_eq(conc_mqueue_get(q, &v, &vl, true, 1), 0);
    free(v);
    conc_mqueue_free(q);
    cr_assert_eq(conc_manager_shutdown(m), 0);
    cr_assert_eq(conc_manager_free(m), 0);
}

/* ---------------------------------------------------------------- lock */

static int child_lock(const void *arg, size_t len)
{
    conc_manager_t *m;
    TU_CK(connect_arg(arg, len, &m) == 0);
    conc_mlock_t *l;
    TU_CK(conc_manager_lock(m, "L", &l) == 0);
    /* the parent holds it */
    TU_CK(conc_mlock_acquire(l, false, CONC_FOREVER) == CONC_ETIMEDOUT);
    double t0 = tu_now();
    TU_CK(conc_mlock_acquire(l, true, 0.2) == CONC_ETIMEDOUT);
    TU_CK(tu_now() - t0 >= 0.19);
    bool locked = false;
    TU_CK(conc_mlock_locked(l, &locked) == 0 && locked);
    /* a Lock is not owned: this process may release what the parent took */
    TU_CK(conc_mlock_release(l) == 0);
    TU_CK(conc_mlock_release(l) == CONC_EPERM);
    TU_CK(conc_mlock_acquire(l, true, 5) == 0);
    /* dying while holding it: the server releases it for the parent */
    _exit(0);
}
CONC_REGISTER(child_lock);

Test(manager, lock_across_processes)
{
    conc_manager_t *m = start(false);
    conc_mlock_t *l;
    cr_assert_eq(conc_manager_lock(m, "L", &l), 0);
    cr_assert_eq(conc_mlock_acquire(l, true, CONC_FOREVER), 0);
    char arg[512];
    size_t len = addr_arg(m, arg, sizeof arg);
    cr_assert_eq(mu_run_child(child_lock, arg, len, CONC_FORK, 30), 0);
    /* the child took the lock and died: released by the server */
    cr_assert_eq(conc_mlock_acquire(l, true, 5), 0);
    cr_assert_eq(conc_mlock_release(l), 0);
    conc_mlock_free(l);
    conc_manager_free(m);
}

/* --------------------------------------------------------------- queue */

static int child_put_later(const void *arg, size_t len)
{
    conc_manager_t *m;
    TU_CK(connect_arg(arg, len, &m) == 0);
    conc_mqueue_t *q;
    TU_CK(conc_manager_queue(m, "Q", 2, &q) == 0);
    tu_sleep(0.2);
    TU_CK(conc_mqueue_put(q, "late", 4, true, CONC_FOREVER) == 0);
    conc_mqueue_free(q);
    conc_manager_free(m);
    return 0;
}
CONC_REGISTER(child_put_later);

Test(manager, queue_blocking_get_and_timeouts)
{
    conc_manager_t *m = start(false);
    conc_mqueue_t *q;
    cr_assert_eq(conc_manager_queue(m, "Q", 2, &q), 0);
    void *v;
    size_t vl, n;
    cr_assert_eq(conc_mqueue_get(q, &v, &vl, false, 0), CONC_EEMPTY);
    double t0 = tu_now();
    cr_assert_eq(conc_mqueue_get(q, &v, &vl, true, 0.2), CONC_EEMPTY);
    tu_assert_timeout(tu_now() - t0, 0.2);
    cr_assert_eq(conc_mqueue_get(q, &v, &vl, true, -3), CONC_EINVAL);
    /* a blocking get woken by another process's put */
    char arg[512];
    size_t len = addr_arg(m, arg, sizeof arg);
    conc_process_t *p = mu_run(child_put_later, arg, len, CONC_FORK);
    t0 = tu_now();
    cr_assert_eq(conc_mqueue_get(q, &v, &vl, true, 10), 0);
    cr_assert_lt(tu_now() - t0, 5);
    cr_assert_eq(vl, 4);
    cr_assert_eq(memcmp(v, "late", 4), 0);
    free(v);
    cr_assert_eq(mu_join_code(p, 30), 0);
    /* bounded: maxsize 2 */
    cr_assert_eq(conc_mqueue_put(q, "1", 1, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_mqueue_put(q, "2", 1, false, 0), 0);
    cr_assert_eq(conc_mqueue_put(q, "3", 1, false, 0), CONC_EFULL);
    t0 = tu_now();
    cr_assert_eq(conc_mqueue_put(q, "3", 1, true, 0.1), CONC_EFULL);
    tu_assert_timeout(tu_now() - t0, 0.1);
    cr_assert_eq(conc_mqueue_qsize(q, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(conc_mqueue_get(q, &v, &vl, true, CONC_FOREVER), 0); /* FIFO */
    cr_assert_eq(*(char *)v, '1');
    free(v);
    cr_assert_eq(conc_mqueue_get(q, &v, &vl, true, CONC_FOREVER), 0);
    cr_assert_eq(*(char *)v, '2');
    free(v);
    conc_mqueue_free(q);
    conc_manager_free(m);
}

/* ------------------------------------------------------ authentication */

Test(manager, wrong_authkey_refused)
{
    conc_manager_t *m = start(false);
    conc_manager_t *x = NULL;
    cr_assert_eq(conc_manager_connect(&x, conc_manager_address(m), "wrong", 5, 5), CONC_EPERM);
    cr_assert_eq(conc_manager_connect(&x, conc_manager_address(m), "", 0, 5), CONC_EINVAL); /* empty key */
    cr_assert_eq(conc_manager_connect(&x, conc_manager_address(m), "secretX", 7, 5), CONC_EPERM);
    /* a client that answers with garbage, or not at all, is dropped too */
    int fd;
    cr_assert_eq(conc_unix_dial(conc_manager_address(m), 5, &fd), 0);
    uint8_t junk[64];
    memset(junk, 0x41, sizeof junk);
    cr_assert_eq(conc_write_all(fd, junk, sizeof junk, NULL, 5), 0);
    uint8_t buf[256];
    ssize_t r;
    size_t got = 0;
    while ((r = conc_read(fd, buf, sizeof buf, 10)) > 0)
        got += (size_t)r;
    cr_assert_leq(got, 64, "the server sent more than its challenge");
    /* closed (with our junk unread, a Unix socket reports a reset) */
    cr_assert(r == 0 || (r == CONC_ESYS && errno == ECONNRESET), "server must close the connection");
    conc_close(fd);
    conc_manager_t *m2;
    cr_assert_eq(conc_manager_connect(&m2, conc_manager_address(m), "secret", 6, 5), 0);
    /* and the server goes on serving those with the key */
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m2, NULL, &d), 0);
    cr_assert_eq(conc_mdict_set(d, "k", 1, "v", 1), 0);
    conc_mdict_free(d);
    conc_manager_free(m2);
    conc_manager_free(m);
}

Test(manager, client_checks_server_key)
{
    /* A fake "server" that knows a different key: the client's challenge
     * fails even if the fake accepts whatever the client says. */
    int sv[2];
    cr_assert_eq(conc_socketpair(sv), 0);
    pid_t pid = fork();
    if (pid == 0) {
        conc__mgr_hs_server(sv[1], "other", 5, 5); /* refuses us, we refuse it */
        _exit(0);
    }
    cr_assert_eq(conc__mgr_hs_client(sv[0], "secret", 6, 5), CONC_EPERM);
    waitpid(pid, NULL, 0);
    close(sv[0]);
    close(sv[1]);
}

/* ----------------------------------------------------- broken server */

static void *blocked_get(void *arg)
{
    conc_mqueue_t *q = arg;
    void *v;
    size_t vl;
    return (void *)(intptr_t)conc_mqueue_get(q, &v, &vl, true, CONC_FOREVER);
}

Test(manager, server_killed_gives_ebroken)
{
    conc_manager_t *m = start(false);
    conc_mdict_t *d;
    conc_mqueue_t *q;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    cr_assert_eq(conc_manager_queue(m, NULL, 0, &q), 0);
    cr_assert_eq(conc_mdict_set(d, "k", 1, "v", 1), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, blocked_get, q), 0);
    tu_sleep(0.1);
    cr_assert_eq(kill(conc_manager_pid(m), SIGKILL), 0);
    void *res;
    pthread_join(th, &res); /* woken by EOF, not a timeout */
    cr_assert_eq((int)(intptr_t)res, CONC_EBROKEN);
    void *v;
    size_t vl;
    double t0 = tu_now();
    cr_assert_eq(conc_mdict_get(d, "k", 1, &v, &vl), CONC_EBROKEN);
    cr_assert_eq(conc_mdict_set(d, "k", 1, "v", 1), CONC_EBROKEN); /* stays broken */
    cr_assert_lt(tu_now() - t0, 2);
    conc_mdict_t *d2;
    cr_assert_eq(conc_manager_dict(m, NULL, &d2), CONC_EBROKEN);
    conc_mdict_free(d);
    conc_mqueue_free(q);
    cr_assert_eq(conc_manager_shutdown(m), CONC_EBROKEN);
    cr_assert_eq(conc_manager_free(m), 0);
}

Test(manager, shutdown_by_client_then_restart)
{
    conc_manager_t *m = start(false);
    char addr[256];
    snprintf(addr, sizeof addr, "%s", conc_manager_address(m));
    conc_manager_t *c;
    cr_assert_eq(conc_manager_connect(&c, addr, "secret", 6, 5), 0);
    conc_mlock_t *l;
    cr_assert_eq(conc_manager_lock(m, NULL, &l), 0);
    cr_assert_eq(conc_manager_shutdown(c), 0); /* any client may */
    bool locked;
    cr_assert(TU_WAIT_UNTIL(conc_mlock_locked(l, &locked) == CONC_EBROKEN, 5));
    conc_mlock_free(l);
    conc_manager_free(c);
    conc_manager_free(m);
    /* _TestManagerRestart: a new manager comes up fine afterwards */
    m = start(false);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    cr_assert_eq(conc_mdict_set(d, "k", 1, "v", 1), 0);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* True when pid has ended (gone, or a zombie nobody reaped yet). */
static bool ended(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return !p || p[2] == 'Z' || p[2] == 'X';
}

Test(manager, server_ends_with_its_starter)
{
    if (TU_TSAN) /* the server would start threads in a child of a forked child */
        cr_skip_test("TSan: threads after a fork from a threaded process");
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t starter = fork();
    if (starter == 0) {
        conc_manager_t *m;
        conc_manager_opts_t o = {.method = CONC_FORK};
        if (conc_manager_start(&m, &o) != 0)
            _exit(1);
        char line[256];
        int n = snprintf(line, sizeof line, "%d %s", conc_manager_pid(m), conc_manager_address(m));
        if (write(pfd[1], line, (size_t)n + 1) < 0)
            _exit(2);
        _exit(0); /* without freeing the manager */
    }
    close(pfd[1]);
    char line[256] = {0};
    cr_assert_gt(read(pfd[0], line, sizeof line - 1), 0);
    close(pfd[0]);
    int st;
    waitpid(starter, &st, 0);
    pid_t server = (pid_t)atoi(line);
    const char *path = strchr(line, ' ') + 1;
    cr_assert_gt(server, 0);
    cr_assert(TU_WAIT_UNTIL(ended(server), 10), "the server outlived the process that started it");
    struct stat sb;
    cr_assert(TU_WAIT_UNTIL(stat(path, &sb) != 0, 5), "socket %s left behind", path);
}

/* ------------------------------------------------------ malformed input */

/* A raw authenticated connection. */
static int raw_conn(conc_manager_t *m)
{
    int fd;
    cr_assert_eq(conc_unix_dial(conc_manager_address(m), 5, &fd), 0);
    cr_assert_eq(conc__mgr_hs_client(fd, "secret", 6, 5), 0);
    return fd;
}

/* Read until EOF; returns the reply code of the first frame (or 1 if none). */
static int code_then_eof(int fd)
{
    uint8_t buf[4096];
    size_t have = 0;
    ssize_t r;
    while ((r = conc_read(fd, buf + have, sizeof buf - have, 10)) > 0)
        have += (size_t)r;
    cr_assert(r == 0 || (r == CONC_ESYS && errno == ECONNRESET), "connection not closed (rc %zd)", r);
    conc_close(fd);
    if (have < 8)
        return 1;
    int32_t code;
    memcpy(&code, buf + 4, 4);
    return code;
}

static void send_raw(int fd, const void *p, size_t n)
{
    cr_assert_eq(conc_write_all(fd, p, n, NULL, 5), 0);
}

Test(manager, malformed_frames_close_only_that_connection)
{
    conc_manager_t *m = start(false);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    cr_assert_eq(conc_mdict_set(d, "k", 1, "v", 1), 0);

    /* a client stuck halfway through a frame does not hold up others */
    int idle = raw_conn(m);
    send_raw(idle, "\x10\x00\x00\x00\x01", 5);

    int fd = raw_conn(m); /* too long: refused before it is read */
    send_raw(fd, "\xff\xff\xff\x7f", 4);
    cr_assert_eq(code_then_eof(fd), CONC_ERANGE);

    fd = raw_conn(m); /* unknown op */
    send_raw(fd, "\x01\x00\x00\x00\xee", 5);
    cr_assert_eq(code_then_eof(fd), CONC_EINVAL);

    fd = raw_conn(m); /* ping with trailing bytes */
    send_raw(fd, "\x02\x00\x00\x00\x01\x00", 6);
    cr_assert_eq(code_then_eof(fd), CONC_EINVAL);

    fd = raw_conn(m); /* empty body */
    send_raw(fd, "\x00\x00\x00\x00", 4);
    cr_assert_eq(code_then_eof(fd), CONC_EINVAL);

    fd = raw_conn(m); /* a dict op on an unbound connection */
    send_raw(fd, "\x01\x00\x00\x00\x15", 5);
    cr_assert_eq(code_then_eof(fd), CONC_EINVAL);

    fd = raw_conn(m); /* a byte string longer than its frame */
    send_raw(fd, "\x0e\x00\x00\x00\x03\x01\x00\x00\x00\x00\x00\x00\x00\x00\xff\x00\x00\x00", 18);
    cr_assert_eq(code_then_eof(fd), CONC_EINVAL);

    fd = raw_conn(m); /* truncated, then the client goes away */
    send_raw(fd, "\x08\x00\x00\x00\x01\x02", 6);
    conc_close(fd);

    fd = raw_conn(m); /* a valid ping still gets its answer */
    send_raw(fd, "\x01\x00\x00\x00\x01", 5);
    uint8_t buf[8];
    cr_assert_eq(conc_read_exact(fd, buf, 8, NULL, 5), 0);
    cr_assert_eq(memcmp(buf, "\x04\x00\x00\x00\x00\x00\x00\x00", 8), 0);
    conc_close(fd);

    void *v;
    size_t vl;
    cr_assert_eq(conc_mdict_get(d, "k", 1, &v, &vl), 0, "the good client must still be served");
    free(v);
    conc_close(idle);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* The dispatcher without sockets: what the fuzzer drives. */
Test(manager, dispatcher_direct)
{
    conc__mgr_server_t *s;
    cr_assert_eq(conc__mgr_server_new(&s, "k", 1, true), 0);
    conc__mgr_conn_t *c = conc__mgr_conn_new(s, -1);
    conc__wbuf_t w = {0};
    conc__wb_begin_frame(&w);
    conc__wb_u8(&w, CONC__MOP_BIND_NEW);
    conc__wb_u8(&w, CONC__MK_LOCK);
    conc__wb_u64(&w, 0);
    conc__wb_bytes(&w, "L", 1);
    conc__wb_end_frame(&w);
    size_t bind_len = w.len;
    conc__wb_u32(&w, 10); /* acquire(true, FOREVER) */
    conc__wb_u8(&w, CONC__MOP_K_ACQUIRE);
    conc__wb_u8(&w, 1);
    conc__wb_f64(&w, CONC_FOREVER);
    cr_assert_eq(conc__mgr_feed(c, w.p, w.len), 0);
    /* a second acquire on a held lock does not sleep in noblock mode */
    cr_assert_eq(conc__mgr_feed(c, w.p + bind_len, w.len - bind_len), 0);
    cr_assert_eq(conc__mgr_feed(c, w.p, 3), CONC_EINVAL); /* truncated */
    cr_assert_eq(conc__mgr_feed(c, (const uint8_t *)"\xff\xff\xff\xff", 4), CONC_ERANGE);
    conc__mgr_conn_free(c);
    conc__wb_free(&w);
    conc__mgr_server_free(s);
}

/* ----------------------------------------------------- concurrent clients */

typedef struct {
    conc_manager_t *m;
    int rounds;
    int err;
} conc_args_t;

static void incr_worker(void *arg, int idx)
{
    (void)idx;
    conc_args_t *a = arg;
    conc_mdict_t *d;
    conc_mlock_t *l;
    if (conc_manager_dict(a->m, "counter", &d) || conc_manager_lock(a->m, "counter-lock", &l)) {
        a->err = 1;
        return;
    }
    for (int i = 0; i < a->rounds; i++) {
        void *v;
        size_t vl;
        long n = 0;
        if (conc_mlock_acquire(l, true, 10)) {
            a->err = 2;
            break;
        }
        if (conc_mdict_get(d, "n", 1, &v, &vl) == 0) {
            memcpy(&n, v, sizeof n);
            free(v);
        }
        n++;
        if (conc_mdict_set(d, "n", 1, &n, sizeof n) || conc_mlock_release(l)) {
            a->err = 3;
            break;
        }
    }
    conc_mlock_free(l);
    conc_mdict_free(d);
}

static int child_incr(const void *arg, size_t len)
{
    conc_args_t a = {0};
    TU_CK(connect_arg(arg, len, &a.m) == 0);
    a.rounds = (int)tu_iters(200);
    incr_worker(&a, 0);
    conc_manager_free(a.m);
    return a.err;
}
CONC_REGISTER(child_incr);

Test(manager, concurrent_clients)
{
    conc_manager_t *m = start(false);
    char arg[512];
    size_t len = addr_arg(m, arg, sizeof arg);
    conc_process_t *p[2];
    for (int i = 0; i < 2; i++)
        p[i] = mu_run(child_incr, arg, len, CONC_FORK);
    conc_args_t a = {m, (int)tu_iters(200), 0};
    if (!TU_TSAN)
        tu_run_threads(4, incr_worker, &a);
    else
        incr_worker(&a, 0);
    cr_assert_eq(a.err, 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(mu_join_code(p[i], 30), 0);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, "counter", &d), 0);
    void *v;
    size_t vl;
    cr_assert_eq(conc_mdict_get(d, "n", 1, &v, &vl), 0);
    long n;
    memcpy(&n, v, sizeof n);
    free(v);
    long want = a.rounds * ((TU_TSAN ? 1 : 4) + 2);
    cr_assert_eq(n, want, "counter %ld, expected %ld: the lock did not exclude", n, want);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* --------------------------------------------- shared-memory channel */

/* How many channel segments this process has mapped (one per proxy on
 * the shared-memory transport, the manager's own connection included). */
static int chan_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, "memfd:conc-manager") != NULL;
    fclose(f);
    return n;
}

/* set/get/keys round trips of every size class on a fresh dict proxy;
 * want_chan: the proxy must (or must not) be on a channel. */
static void dict_workout(conc_manager_t *m, long n, bool want_chan)
{
    int before = chan_maps();
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    cr_assert_eq(chan_maps(), before + (want_chan ? 1 : 0), "transport: want_chan=%d", want_chan);
    for (long i = 0; i < n; i++) {
        char k[32], v[64];
        size_t kl = (size_t)snprintf(k, sizeof k, "key%ld", i % 50);
        size_t vl = (size_t)snprintf(v, sizeof v, "value-%ld-%.*s", i, (int)(i % 30), "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        cr_assert_eq(conc_mdict_set(d, k, kl, v, vl), 0);
        void *g;
        size_t gl;
        cr_assert_eq(conc_mdict_get(d, k, kl, &g, &gl), 0);
        cr_assert(gl == vl && memcmp(g, v, vl) == 0, "call %ld: wrong value", i);
        free(g);
    }
    size_t len = 0;
    cr_assert_eq(conc_mdict_len(d, &len), 0);
    cr_assert_eq(len, (size_t)(n < 50 ? n : 50));
    /* a value larger than the channel keeps (its pages are given back
     * afterwards), then small calls again; one that can never fit */
    size_t big = 3u << 20;
    uint8_t *b = calloc(1, CONC_MANAGER_MAX_MESSAGE); /* the too-large call reads it all */
    for (size_t i = 0; i < big; i++)
        b[i] = (uint8_t)(i * 7);
    cr_assert_eq(conc_mdict_set(d, "big", 3, b, big), 0);
    void *g;
    size_t gl;
    cr_assert_eq(conc_mdict_get(d, "big", 3, &g, &gl), 0);
    cr_assert(gl == big && memcmp(g, b, big) == 0);
    free(g);
    cr_assert_eq(conc_mdict_set(d, "b", 1, b, CONC_MANAGER_MAX_MESSAGE), CONC_ERANGE);
    cr_assert_eq(conc_mdict_pop(d, "big", 3, &g, &gl), 0);
    free(g);
    free(b);
    conc_mbytes_t *keys;
    size_t nk;
    cr_assert_eq(conc_mdict_keys(d, &keys, &nk), 0);
    cr_assert_eq(nk, len);
    free(keys);
    cr_assert_eq(conc_mdict_get(d, "nope", 4, &g, &gl), CONC_EKEY);
    cr_assert_eq(conc_mdict_free(d), 0);
    cr_assert_eq(chan_maps(), before);
}

Test(manager, shm_transport_many_calls)
{
    conc_manager_t *m = start(false);
    cr_assert_eq(chan_maps(), 1); /* the manager's own connection */
    dict_workout(m, tu_iters(20000), true);
    conc_manager_free(m);
    cr_assert_eq(chan_maps(), 0);
}

Test(manager, socket_transport_forced)
{
    conc_manager_opts_t o = {.authkey = "secret", .authkey_len = 6, .timeout = 10, .socket_only = true};
    conc_manager_t *m;
    cr_assert_eq(conc_manager_start(&m, &o), 0);
    cr_assert_eq(chan_maps(), 0);
    dict_workout(m, tu_iters(5000), false);
    conc_manager_free(m);

    setenv("CONC_MANAGER_TRANSPORT", "socket", 1);
    m = start(false);
    dict_workout(m, tu_iters(2000), false);
    unsetenv("CONC_MANAGER_TRANSPORT");
    dict_workout(m, tu_iters(2000), true); /* the same server, a channel again */
    conc_manager_free(m);

    m = start(true); /* TCP never switches */
    dict_workout(m, tu_iters(2000), false);
    conc_manager_free(m);
}

static double g_fail_at;
static void *dict_hammer(void *arg)
{
    conc_mdict_t *d = arg;
    int rc = 0;
    for (long i = 0; rc == 0; i++) {
        rc = conc_mdict_set(d, "k", 1, &i, sizeof i);
        void *v;
        size_t vl;
        if (rc == 0 && (rc = conc_mdict_get(d, "k", 1, &v, &vl)) == 0)
            free(v);
    }
    g_fail_at = tu_now();
    return (void *)(intptr_t)rc;
}

Test(manager, shm_server_killed_mid_call)
{
    conc_manager_t *m = start(false);
    conc_mdict_t *d, *idle;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    cr_assert_eq(conc_manager_dict(m, NULL, &idle), 0);
    cr_assert_eq(chan_maps(), 3);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, dict_hammer, d), 0);
    tu_sleep(0.2);
    double t0 = tu_now();
    cr_assert_eq(kill(conc_manager_pid(m), SIGKILL), 0);
    void *res;
    pthread_join(th, &res);
    cr_assert_eq((int)(intptr_t)res, CONC_EBROKEN);
    cr_assert_lt(g_fail_at - t0, TU_SLACK / 2, "noticed after %.3f s", g_fail_at - t0);
    /* a proxy that was idle (its server thread asleep) fails at once too */
    t0 = tu_now();
    void *v;
    size_t vl;
    cr_assert_eq(conc_mdict_get(idle, "k", 1, &v, &vl), CONC_EBROKEN);
    cr_assert_eq(conc_mdict_set(d, "k", 1, "v", 1), CONC_EBROKEN);
    cr_assert_lt(tu_now() - t0, TU_SLACK / 2);
    conc_mdict_free(d);
    conc_mdict_free(idle);
    cr_assert_eq(conc_manager_shutdown(m), CONC_EBROKEN);
    conc_manager_free(m);
}

/* A child that holds the lock and calls in a loop until it is killed. */
static int child_hold_and_hammer(const void *arg, size_t len)
{
    conc_manager_t *m;
    TU_CK(connect_arg(arg, len, &m) == 0);
    conc_mdict_t *d;
    conc_mlock_t *l;
    TU_CK(conc_manager_dict(m, "shared", &d) == 0);
    TU_CK(conc_manager_lock(m, "L", &l) == 0);
    TU_CK(conc_mlock_acquire(l, true, 10) == 0);
    for (long i = 0;; i++) {
        TU_CK(conc_mdict_set(d, "started", 7, &i, sizeof i) == 0);
        void *v;
        size_t vl;
        TU_CK(conc_mdict_get(d, "started", 7, &v, &vl) == 0);
        free(v);
    }
}
CONC_REGISTER(child_hold_and_hammer);

Test(manager, shm_client_killed_mid_call)
{
    conc_manager_t *m = start(false);
    char arg[512];
    size_t len = addr_arg(m, arg, sizeof arg);
    conc_mdict_t *d;
    conc_mlock_t *l;
    cr_assert_eq(conc_manager_dict(m, "shared", &d), 0);
    cr_assert_eq(conc_manager_lock(m, "L", &l), 0);
    for (int round = 0; round < 4; round++) {
        conc_process_t *p = mu_run(child_hold_and_hammer, arg, len, CONC_FORK);
        bool has = false;
        cr_assert(TU_WAIT_UNTIL(conc_mdict_contains(d, "started", 7, &has) == 0 && has, 10));
        tu_sleep(0.01 * round);
        cr_assert_eq(conc_process_kill(p), 0);
        cr_assert_eq(conc_process_join(p, 10), 0);
        conc_process_free(p);
        /* the server let go of the dead client's lock and serves everyone */
        cr_assert_eq(conc_mlock_acquire(l, true, 5), 0, "round %d: the lock was not released", round);
        cr_assert_eq(conc_mlock_release(l), 0);
        cr_assert_eq(conc_mdict_del(d, "started", 7), 0);
    }
    conc_mdict_t *d2;
    cr_assert_eq(conc_manager_dict(m, "shared", &d2), 0);
    cr_assert_eq(conc_mdict_set(d2, "after", 5, "ok", 2), 0);
    conc_mdict_free(d2);
    conc_mlock_free(l);
    conc_mdict_free(d);
    conc_manager_free(m);
}

static int child_own_keys(const void *arg, size_t len)
{
    conc_manager_t *m;
    const char *addr = arg;
    size_t alen = strlen(addr);
    TU_CK(conc_manager_connect(&m, addr, addr + alen + 2, len - alen - 2, 10) == 0);
    char me = addr[alen + 1];
    conc_mdict_t *d;
    TU_CK(conc_manager_dict(m, "two", &d) == 0);
    long n = tu_iters(5000);
    for (long i = 0; i < n; i++) {
        char k[32];
        size_t kl = (size_t)snprintf(k, sizeof k, "%c%ld", me, i % 100);
        TU_CK(conc_mdict_set(d, k, kl, &i, sizeof i) == 0);
        void *v;
        size_t vl;
        TU_CK(conc_mdict_get(d, k, kl, &v, &vl) == 0);
        TU_CK(vl == sizeof i && memcmp(v, &i, sizeof i) == 0);
        free(v);
    }
    conc_mdict_free(d);
    conc_manager_free(m);
    return 0;
}
CONC_REGISTER(child_own_keys);

Test(manager, shm_two_clients_at_once)
{
    conc_manager_t *m = start(false);
    char arg[2][512];
    size_t alen = strlen(conc_manager_address(m));
    conc_process_t *p[2];
    for (int i = 0; i < 2; i++) {
        memcpy(arg[i], conc_manager_address(m), alen + 1);
        arg[i][alen + 1] = (char)('a' + i);
        memcpy(arg[i] + alen + 2, "secret", 6);
        p[i] = mu_run(child_own_keys, arg[i], alen + 8, CONC_FORK);
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(mu_join_code(p[i], 30), 0);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, "two", &d), 0);
    size_t n;
    cr_assert_eq(conc_mdict_len(d, &n), 0);
    cr_assert_eq(n, 200);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* A raw authenticated connection switched to a channel by hand. */
static conc__mgr_chan_t *raw_chan(int fd)
{
    send_raw(fd, "\x01\x00\x00\x00\x05", 5);
    cr_assert_eq(conc_wait_read(fd, 5), 0);
    uint8_t msg[8];
    struct iovec iov = {msg, sizeof msg};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cb;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof cb.b};
    cr_assert_eq(recvmsg(fd, &mh, MSG_CMSG_CLOEXEC), 8);
    cr_assert_eq(memcmp(msg, "\x04\0\0\0\0\0\0\0", 8), 0);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cr_assert(cm && cm->cmsg_type == SCM_RIGHTS);
    int mfd;
    memcpy(&mfd, CMSG_DATA(cm), sizeof mfd);
    /* sealed: a client cannot shrink it under the server's mapping */
    cr_assert_neq(ftruncate(mfd, 4096), 0);
    void *p = mmap(NULL, CONC__MGR_CHAN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    cr_assert_neq(p, MAP_FAILED);
    close(mfd);
    return p;
}

/* Post request seq (its bytes already in place), wait for the reply code. */
static int raw_chan_call(conc__mgr_chan_t *ch, int fd, uint32_t seq)
{
    uint32_t old = __atomic_load_n(&ch->rep_seq, __ATOMIC_ACQUIRE);
    conc__mgr_chan_post(&ch->req_seq, seq, &ch->srv_wait, fd);
    conc__spin_t sp = {0, 0};
    int rc = conc__mgr_chan_wait(&ch->rep_seq, old, &ch->cli_wait, fd, &sp,
                                 conc__now_ns() + 5000000000LL, NULL, false);
    cr_assert_eq(rc, 0, "no reply: %d", rc);
    cr_assert_geq(ch->rep_len, 4);
    int32_t code;
    memcpy(&code, conc__mgr_chan_data(ch), 4);
    return code;
}

static void raw_chan_close(conc__mgr_chan_t *ch, int fd, bool expect_eof)
{
    if (expect_eof) {
        uint8_t b[16];
        ssize_t r;
        while ((r = conc_read(fd, b, sizeof b, 5)) > 0) {
        }
        cr_assert_eq(r, 0, "the server kept a bad channel open");
    }
    conc_close(fd);
    munmap(ch, CONC__MGR_CHAN_SIZE);
}

Test(manager, shm_hostile_client)
{
    conc_manager_t *m = start(false);
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, NULL, &d), 0);
    cr_assert_eq(conc_mdict_set(d, "k", 1, "v", 1), 0);

    int fd = raw_conn(m); /* a length past the data area: refused, closed */
    conc__mgr_chan_t *ch = raw_chan(fd);
    ch->req_len = 0xffffffffu;
    cr_assert_eq(raw_chan_call(ch, fd, 1), CONC_ERANGE);
    raw_chan_close(ch, fd, true);

    fd = raw_conn(m); /* a ping works, an unknown op closes */
    ch = raw_chan(fd);
    conc__mgr_chan_data(ch)[0] = CONC__MOP_PING;
    ch->req_len = 1;
    cr_assert_eq(raw_chan_call(ch, fd, 1), 0);
    cr_assert_eq(ch->rep_len, 4);
    conc__mgr_chan_data(ch)[0] = 0xee;
    cr_assert_eq(raw_chan_call(ch, fd, 2), CONC_EINVAL);
    raw_chan_close(ch, fd, true);

    fd = raw_conn(m); /* a string longer than the request; sequence numbers jump */
    ch = raw_chan(fd);
    memcpy(conc__mgr_chan_data(ch), "\x03\x01\0\0\0\0\0\0\0\0\xff\xff\0\0", 14);
    ch->req_len = 14;
    cr_assert_eq(raw_chan_call(ch, fd, 77), CONC_EINVAL);
    raw_chan_close(ch, fd, true);

    fd = raw_conn(m); /* garbage in the wait words, then it leaves mid-request */
    ch = raw_chan(fd);
    ch->srv_wait = 0x12345678;
    ch->cli_wait = 3;
    conc__mgr_chan_data(ch)[0] = CONC__MOP_PING;
    ch->req_len = 1;
    __atomic_store_n(&ch->req_seq, 5, __ATOMIC_SEQ_CST); /* no wake-up sent */
    raw_chan_close(ch, fd, false);

    fd = raw_conn(m); /* frames after the switch request: closed */
    send_raw(fd, "\x01\x00\x00\x00\x05\x01\x00\x00\x00\x01", 10);
    uint8_t buf[64];
    ssize_t r;
    while ((r = conc_read(fd, buf, sizeof buf, 5)) > 0) {
    }
    cr_assert_eq(r, 0);
    conc_close(fd);

    void *v;
    size_t vl;
    cr_assert_eq(conc_mdict_get(d, "k", 1, &v, &vl), 0, "the good client must still be served");
    free(v);
    conc_mdict_free(d);
    conc_manager_free(m);
}

/* Green threads on the channel park (through conc/io.h) instead of
 * sleeping on the futex, so a get blocked on the server does not stop the
 * green thread that will satisfy it. */
typedef struct {
    conc_manager_t *m;
    int rc;
    long calls;
} green_arg_t;

static void *green_getter(void *arg)
{
    green_arg_t *a = arg;
    conc_mqueue_t *q;
    if ((a->rc = conc_manager_queue(a->m, "gq", 0, &q)) != 0)
        return NULL;
    void *v;
    size_t vl;
    a->rc = conc_mqueue_get(q, &v, &vl, true, 10);
    if (a->rc == 0) {
        a->rc = vl == 5 && memcmp(v, "hello", 5) == 0 ? 0 : CONC_EFAILED;
        free(v);
    }
    conc_mqueue_free(q);
    return NULL;
}

static void *green_putter(void *arg)
{
    green_arg_t *a = arg;
    conc_mqueue_t *q;
    conc_mdict_t *d;
    if ((a->rc = conc_manager_queue(a->m, "gq", 0, &q)) != 0 ||
        (a->rc = conc_manager_dict(a->m, NULL, &d)) != 0)
        return NULL;
    conc_sleep(0.05);
    for (long i = 0; i < 200 && !a->rc; i++, a->calls++) {
        void *v;
        size_t vl;
        if (!(a->rc = conc_mdict_set(d, "k", 1, &i, sizeof i)) &&
            !(a->rc = conc_mdict_get(d, "k", 1, &v, &vl)))
            free(v);
    }
    if (!a->rc)
        a->rc = conc_mqueue_put(q, "hello", 5, true, 5);
    conc_mdict_free(d);
    conc_mqueue_free(q);
    return NULL;
}

Test(manager, shm_green_threads_park)
{
    conc_manager_t *m = start(false);
    green_arg_t ga = {m, -1, 0}, pa = {m, -1, 0};
    conc_green_t *g1, *g2;
    cr_assert_eq(conc_go(&g1, green_getter, &ga), 0);
    cr_assert_eq(conc_go(&g2, green_putter, &pa), 0);
    cr_assert_eq(conc_green_join(g1, 20), 0);
    cr_assert_eq(conc_green_join(g2, 20), 0);
    cr_assert_eq(ga.rc, 0, "getter: %d", ga.rc);
    cr_assert_eq(pa.rc, 0, "putter: %d", pa.rc);
    cr_assert_eq(pa.calls, 200);
    conc_green_free(g1);
    conc_green_free(g2);
    conc_manager_free(m);
}

/* conc__mgr_chan_serve without processes: what the fuzzer drives. */
Test(manager, chan_serve_direct)
{
    conc__mgr_server_t *s;
    cr_assert_eq(conc__mgr_server_new(&s, "k", 1, true), 0);
    conc__mgr_conn_t *c = conc__mgr_conn_new(s, -1);
    size_t cap = 256;
    conc__mgr_chan_t *ch = aligned_alloc(4096, CONC__MGR_CHAN_HDR + 4096); /* a size multiple of the alignment */
    memset(ch, 0, CONC__MGR_CHAN_HDR + 4096);
    uint8_t *data = conc__mgr_chan_data(ch);
    memcpy(data, "\x03\x01\0\0\0\0\0\0\0\0\0\0\0", 14); /* bind a new dict */
    ch->req_len = 14;
    cr_assert_eq(conc__mgr_chan_serve(c, ch, cap), 0);
    cr_assert_eq(ch->rep_len, 4 + 8 + 1);
    cr_assert_eq(memcmp(data, "\0\0\0\0", 4), 0);
    ch->req_len = (uint32_t)cap + 1; /* past the area */
    cr_assert_eq(conc__mgr_chan_serve(c, ch, cap), CONC_ERANGE);
    cr_assert_eq(ch->rep_len, 4);
    ch->req_len = 0; /* empty: malformed */
    cr_assert_eq(conc__mgr_chan_serve(c, ch, cap), CONC_EINVAL);
    conc__mgr_conn_free(c);
    free(ch);
    conc__mgr_server_free(s);
}

TU_MAIN_WITH_PROCESS_GUARD()
