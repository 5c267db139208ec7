/* thread_basics.c — threading.Thread: start, name, ident, join, excepthook. */
#include <conc.h>
#include <stdio.h>

static void *greet(void *arg)
{
    conc_thread_t *me = conc_current_thread(); /* threading.current_thread() */
    printf("hello from %s (ident %lu, native id %ld)\n", conc_thread_name(me),
           conc_get_ident(), conc_get_native_id());
    if (arg)
        return conc_fail(CONC_EINVAL, "bad input"); /* raise ValueError("bad input") */
    return NULL;
}

int main(void)
{
    conc_thread_opts_t opts = {.name = "greeter"};
    conc_thread_t *t, *u;
    conc_thread_spawn(&t, greet, NULL, &opts);     /* Thread(target=greet, name=...).start() */
    conc_thread_join(t, CONC_FOREVER, NULL);       /* t.join() */
    printf("%s alive after join? %s\n", conc_thread_name(t), conc_thread_is_alive(t) ? "yes" : "no");
    conc_thread_spawn(&u, greet, "fail", NULL);    /* its failure goes to excepthook (stderr) */
    conc_thread_join(u, CONC_FOREVER, NULL);
    conc_thread_free(t);
    conc_thread_free(u);
    return 0;
}
