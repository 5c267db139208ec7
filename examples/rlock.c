/* rlock.c — threading.RLock: the owner may take it again. */
#include <conc.h>
#include <stdio.h>

static conc_rlock_t r = CONC_RLOCK_INIT;

static long fact(long n)
{
    conc_rlock_acquire(&r, true, CONC_FOREVER); /* re-entered at each level */
    long v = n <= 1 ? 1 : n * fact(n - 1);
    printf("fact(%ld) computed at recursion level %lu\n", n, conc_rlock_level(&r));
    conc_rlock_release(&r);
    return v;
}

int main(void)
{
    printf("5! = %ld\n", fact(5));
    printf("owned after the last release? %s\n", conc_rlock_is_owned(&r) ? "yes" : "no");
    return 0;
}
