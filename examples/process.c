/* process.c — multiprocessing.Process: the same function run by fork, spawn
 * and the fork server, a byte argument in, an exit code out. */
#include <conc.h>
#include <conc/process.h>
#include <stdio.h>

static int square(const void *arg, size_t len)
{
    int x = *(const int *)arg;
    (void)len;
    printf("%s (pid %d) computes %d*%d\n", conc_process_name(conc_current_process()),
           conc_process_pid(conc_current_process()), x, x);
    return x * x; /* the exit code (0..255) */
}
CONC_REGISTER(square); /* so spawn and forkserver children find it by name */

int main(int argc, char **argv)
{
    CONC_PROCESS_MAIN(argc, argv); /* if __name__ == '__main__': */
    conc_start_method_t methods[] = {CONC_FORK, CONC_SPAWN, CONC_FORKSERVER};
    for (int i = 0; i < 3; i++) {
        int x = 5 + i, code;
        conc_process_opts_t o = {.method = methods[i]};
        conc_process_t *p;
        conc_process_new(&p, square, &x, sizeof x, &o);   /* Process(target=square, args=(x,)) */
        conc_process_start(p);                           /* p.start() */
        conc_process_join(p, CONC_FOREVER);              /* p.join() */
        conc_process_exitcode(p, &code);                 /* p.exitcode */
        printf("%s: exitcode %d\n", conc_start_method_name(methods[i]), code);
        conc_process_free(p);
    }
    printf("cpu_count: %d\n", conc_cpu_count());
    return 0;
}
