/*
 * The message for a function missing from the registry when no symbol
 * names it (a stripped program, code outside any object): it names the
 * address, and the fix it suggests still reads as code — never
 * "CONC_REGISTER(the function at 0x...)".
 */
#include "test_util.h"

#include <sys/mman.h>

#include <conc/process.h>

TestSuite(process_symname, .timeout = TU_TIMEOUT);

Test(process_symname, unnamed_function_gets_a_readable_fix)
{
    /* a "function" in an anonymous mapping: no object, no symbol (never called) */
    void *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(page, MAP_FAILED);
    conc_process_fn fn = (conc_process_fn)(uintptr_t)page;
    for (int m = 0; m < 2; m++) {
        conc_process_opts_t o = {.method = m ? CONC_FORKSERVER : CONC_SPAWN};
        conc_process_t *p;
        cr_assert_eq(conc_process_new(&p, fn, NULL, 0, &o), 0);
        cr_assert_eq(conc_process_start(p), CONC_EINVAL);
        const char *msg = "";
        cr_assert_eq(conc_failure(&msg), CONC_EINVAL);
        cr_assert(strstr(msg, "the function at 0x"), "%s", msg);
        cr_assert(strstr(msg, "CONC_REGISTER("), "%s", msg);
        cr_assert_null(strstr(msg, "CONC_REGISTER(the function"), "%s", msg);
        conc_process_free(p);
    }
    munmap(page, 4096);
}
