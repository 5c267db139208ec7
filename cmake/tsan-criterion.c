/*
 * Linked into the test executables of TSan builds only (CONC_SANITIZE=thread).
 *
 * Why: Criterion (through BoxFort) places a shared arena at a random fixed
 * address drawn from rand_r(), between 0x2000'0000'0000 and 0x6000'0000'0000.
 * Under ThreadSanitizer almost all of that range is TSan's shadow or
 * protected memory; only 0x5500'0000'0000..0x5680'0000'0000 is application
 * memory, so Criterion gives up with "Could not initialize inheritable
 * arena" (Criterion issue 274). This file steers the draws that come from
 * libcriterion into that application window; every other caller of rand_r
 * gets the real function. BoxFort still probes that the spot is free before
 * mapping it, so a clash with the executable just means another draw.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__)
int rand_r(unsigned int *seed)
{
    static int (*real)(unsigned int *);
    if (!real)
        real = (int (*)(unsigned int *))dlsym(RTLD_NEXT, "rand_r");
    int v = real(seed);
    Dl_info info;
    if (dladdr(__builtin_return_address(0), &info) && info.dli_fname &&
        strstr(info.dli_fname, "libcriterion"))
        return 0x350000 + (v & 0xffff); /* base 0x5500'0000'0000 + <1 TiB */
    return v;
}
#endif
