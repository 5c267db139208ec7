/*
 * Process.authkey, ported from CPython's _test_multiprocessing.py
 * (_TestProcess.test_current: authkey is bytes; test_process: a child's
 * authkey equals its parent's; BaseManager(authkey=None) uses
 * current_process().authkey): random 32 bytes in the main process,
 * inherited by children (fork and spawn), settable before start, and the
 * default key of a Manager and of connect.
 */
#include "manager_util.h"

#include <conc/manager.h>
#include <conc/process.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(mp_authkey, .init = setup, .timeout = TU_TIMEOUT);

/* The child exits 0 when its own authkey equals arg. */
static int check_key(const void *arg, size_t len)
{
    size_t klen;
    const void *k = conc_process_authkey(conc_current_process(), &klen);
    return klen == len && memcmp(k, arg, len) == 0 ? 0 : 3;
}
CONC_REGISTER(check_key);

static int run(conc_start_method_t method, const void *expect, size_t elen, const void *set, size_t slen)
{
    conc_process_t *p;
    conc_process_opts_t o = {.method = method};
    cr_assert_eq(conc_process_new(&p, check_key, expect, elen, &o), 0);
    if (set)
        cr_assert_eq(conc_process_set_authkey(p, set, slen), 0);
    cr_assert_eq(conc_process_start(p), 0);
    cr_assert_eq(conc_process_set_authkey(p, "late", 4), CONC_EPERM);
    cr_assert_eq(conc_process_join(p, 30), 0);
    int code = -1;
    conc_process_exitcode(p, &code);
    conc_process_free(p);
    return code;
}

Test(mp_authkey, main_key_is_random_and_stable)
{
    size_t n, n2;
    const unsigned char *k = conc_process_authkey(conc_current_process(), &n);
    cr_assert_eq(n, 32);
    const unsigned char *k2 = conc_process_authkey(conc_current_process(), &n2);
    cr_assert_eq(k, k2);
    int nonzero = 0;
    for (size_t i = 0; i < n; i++)
        nonzero += k[i] != 0;
    cr_assert_gt(nonzero, 16);
    cr_assert_null(conc_process_authkey(NULL, &n));
    cr_assert_eq(n, 0);
}

Test(mp_authkey, inherited_and_settable)
{
    size_t n;
    const void *k = conc_process_authkey(conc_current_process(), &n);
    unsigned char mine[32];
    memcpy(mine, k, n);
    /* a new Process carries the creator's key */
    conc_process_t *p;
    cr_assert_eq(conc_process_new(&p, check_key, NULL, 0, NULL), 0);
    size_t pn;
    const void *pk = conc_process_authkey(p, &pn);
    cr_assert_eq(pn, 32);
    cr_assert_eq(memcmp(pk, mine, 32), 0);
    conc_process_free(p);
    /* the child sees it as its own: fork and spawn */
    cr_assert_eq(run(CONC_FORK, mine, 32, NULL, 0), 0);
    cr_assert_eq(run(CONC_SPAWN, mine, 32, NULL, 0), 0);
    /* set before start */
    cr_assert_eq(run(CONC_FORK, "other key", 9, "other key", 9), 0);
    cr_assert_eq(run(CONC_SPAWN, "other key", 9, "other key", 9), 0);
    cr_assert_eq(run(CONC_FORK, mine, 32, "other key", 9), 3);
    /* bad input */
    cr_assert_eq(conc_process_new(&p, check_key, NULL, 0, NULL), 0);
    cr_assert_eq(conc_process_set_authkey(p, "", 0), CONC_EINVAL);
    cr_assert_eq(conc_process_set_authkey(p, NULL, 3), CONC_EINVAL);
    char big[300] = {0};
    cr_assert_eq(conc_process_set_authkey(p, big, sizeof big), CONC_EINVAL);
    cr_assert_eq(conc_process_set_authkey(NULL, "k", 1), CONC_EINVAL);
    conc_process_free(p);
}

CONC_REGISTER(mu_connect_child); /* a child connects with authkey None */

Test(mp_authkey, manager_uses_the_process_key)
{
    conc_manager_t *m;
    cr_assert_eq(conc_manager_start(&m, NULL), 0);
    size_t n, pn;
    const void *mk = conc_manager_authkey(m, &n);
    const void *pk = conc_process_authkey(conc_current_process(), &pn);
    cr_assert_eq(n, pn);
    cr_assert_eq(memcmp(mk, pk, n), 0);
    const char *addr = conc_manager_address(m);
    conc_process_t *p;
    cr_assert_eq(conc_process_new(&p, mu_connect_child, addr, strlen(addr), NULL), 0);
    cr_assert_eq(conc_process_start(p), 0);
    cr_assert_eq(conc_process_join(p, 30), 0);
    int code = -1;
    conc_process_exitcode(p, &code);
    cr_assert_eq(code, 0, "the child could not connect with the inherited key: %d", code);
    conc_process_free(p);
    /* a child with another key is refused */
    cr_assert_eq(conc_process_new(&p, mu_connect_child, addr, strlen(addr), NULL), 0);
    cr_assert_eq(conc_process_set_authkey(p, "nope", 4), 0);
    cr_assert_eq(conc_process_start(p), 0);
    cr_assert_eq(conc_process_join(p, 30), 0);
    conc_process_exitcode(p, &code);
    cr_assert_eq(code, 4);
    conc_process_free(p);
    conc_manager_free(m);
}

/* The fork server path: its children get the key of the process that asked
 * for them (not the fork server's own copy), and a manager whose server
 * the fork server started authenticates them with it. */
static int connect_by_forkserver(const char *addr, const char *set)
{
    conc_process_t *p;
    conc_process_opts_t o = {.method = CONC_FORKSERVER};
    cr_assert_eq(conc_process_new(&p, mu_connect_child, addr, strlen(addr), &o), 0);
    if (set)
        cr_assert_eq(conc_process_set_authkey(p, set, strlen(set)), 0);
    cr_assert_eq(conc_process_start(p), 0);
    cr_assert_eq(conc_process_join(p, 30), 0);
    int code = -1;
    conc_process_exitcode(p, &code);
    conc_process_free(p);
    return code;
}

Test(mp_authkey, forkserver)
{
    size_t n;
    const void *k = conc_process_authkey(conc_current_process(), &n);
    unsigned char mine[32];
    memcpy(mine, k, n);
    cr_assert_eq(run(CONC_FORKSERVER, mine, 32, NULL, 0), 0);
    cr_assert_eq(run(CONC_FORKSERVER, "fs key", 6, "fs key", 6), 0);
    cr_assert_eq(run(CONC_FORKSERVER, mine, 32, "fs key", 6), 3);
    conc_manager_t *m;
    conc_manager_opts_t mo = {.method = CONC_FORKSERVER};
    cr_assert_eq(conc_manager_start(&m, &mo), 0);
    const char *addr = conc_manager_address(m);
    cr_assert_eq(connect_by_forkserver(addr, NULL), 0, "authkey=None in a fork-server child");
    cr_assert_eq(connect_by_forkserver(addr, "nope"), 4, "another key is refused");
    conc_manager_free(m);
}

TU_MAIN_WITH_PROCESS_GUARD()
