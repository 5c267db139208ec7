/* local.c — threading.local: each thread sees its own value. */
#include <conc.h>
#include <stdio.h>
#include <stdlib.h>

static conc_local_t *user;

static void *serve(void *name)
{
    conc_local_set(user, name, NULL); /* local.user = name */
    conc_sleep_thread(0.01);          /* the other thread sets its own meanwhile */
    printf("%s sees user = %s\n", conc_thread_name(conc_current_thread()),
           (char *)conc_local_get(user));
    return NULL;
}

int main(void)
{
    conc_local_new(&user, NULL); /* no destructor: the values are string literals */
    conc_thread_t *a, *b;
    conc_thread_spawn(&a, serve, "alice", NULL);
    conc_thread_spawn(&b, serve, "bob", NULL);
    conc_thread_join(a, CONC_FOREVER, NULL);
    conc_thread_join(b, CONC_FOREVER, NULL);
    printf("main sees user = %s\n", conc_local_get(user) ? "set" : "(nothing)");
    conc_thread_free(a);
    conc_thread_free(b);
    conc_local_free(user);
    return 0;
}
