/*
 * tests/manager_util.h — the shapes every Manager test repeats, held once
 * (as tests/test_util.h holds TU_CK):
 *
 * - mu_setup: the suites' .init; a spawned server or child runs a fresh
 *   copy of the test binary, which must not take itself for a Criterion
 *   worker (BXFI_MAP).
 * - mu_start(opts): start a manager that must start.
 * - mu_run(fn, arg, len, how): a started child process running the
 *   registered fn(arg, len), by fork, spawn or forkserver.
 * - mu_join_code(p, secs): join p (it must end within secs), free it and
 *   return its exit code; mu_run_child(fn, arg, len, how, secs) does both.
 * - mu_connect_child: a child body that connects to the manager at the
 *   address arg with authkey None (its Process.authkey); a file that runs
 *   it registers it with CONC_REGISTER(mu_connect_child).
 *
 * cr_assert is only called on the test's own thread, as everywhere.
 */
#ifndef CONC_TESTS_MANAGER_UTIL_H
#define CONC_TESTS_MANAGER_UTIL_H

#include "test_util.h"

#include <conc/manager.h>

static inline void mu_setup(void) { unsetenv("BXFI_MAP"); }

static inline conc_manager_t *mu_start(conc_manager_opts_t o)
{
    conc_manager_t *m = NULL;
    int rc = conc_manager_start(&m, &o);
    cr_assert_eq(rc, 0, "start: %s", conc_strerror(rc));
    return m;
}

static inline conc_process_t *mu_run(conc_process_fn fn, const void *arg, size_t len,
                                     conc_start_method_t how)
{
    conc_process_t *p;
    conc_process_opts_t o = {.method = how};
    cr_assert_eq(conc_process_new(&p, fn, arg, len, &o), 0);
    cr_assert_eq(conc_process_start(p), 0);
    return p;
}

static inline int mu_join_code(conc_process_t *p, double secs)
{
    cr_assert_eq(conc_process_join(p, secs), 0, "child did not end");
    int code = -1;
    cr_assert_eq(conc_process_exitcode(p, &code), 0);
    conc_process_free(p);
    return code;
}

static inline int mu_run_child(conc_process_fn fn, const void *arg, size_t len,
                               conc_start_method_t how, double secs)
{
    return mu_join_code(mu_run(fn, arg, len, how), secs);
}

/* arg: the address (len bytes, no NUL). 0: connected; 4: refused
 * (CONC_EPERM); 5: an address too long; 6: any other error. */
static inline int mu_connect_child(const void *arg, size_t len)
{
    char addr[256];
    if (len >= sizeof addr)
        return 5;
    memcpy(addr, arg, len);
    addr[len] = 0;
    conc_manager_t *m;
    int rc = conc_manager_connect(&m, addr, NULL, 0, 10);
    if (rc)
        return rc == CONC_EPERM ? 4 : 6;
    conc_manager_free(m);
    return 0;
}

#endif
