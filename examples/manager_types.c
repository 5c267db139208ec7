/*
 * manager_types.c — a Manager's Namespace, Value, nested proxies and a
 * registered type, used by spawned children that attach with the
 * manager's own authkey.
 *
 * Python equivalent:
 *     class Counter:
 *         def __init__(self): self.n = 0
 *         def incr(self): self.n += 1; return self.n
 *     SyncManager.register("Counter", Counter)
 *     with SyncManager(authkey=b"example key") as m:
 *         ns = m.Namespace(); ns.greeting = "hello"
 *         hits = m.Value("i", 0); c = m.Counter()
 *         shared = m.dict(); shared["ns"] = ns; shared["hits"] = hits; shared["counter"] = c
 *         ps = [Process(target=work, args=(shared, lock)) for _ in range(3)] ...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <conc.h>

/* ------------------------------------------------ a registered type */

static int counter_new(const void *args, size_t len, void **self)
{
    (void)args, (void)len;
    *self = calloc(1, sizeof(long));
    return *self ? 0 : CONC_ENOMEM;
}

static int counter_incr(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    (void)args, (void)len;
    long *n = self;
    ++*n;
    if (!(*out = malloc(sizeof *n)))
        return CONC_ENOMEM;
    memcpy(*out, n, sizeof *n);
    *outlen = sizeof *n;
    return 0;
}

static const conc_mmethod_t counter_methods[] = {{"incr", counter_incr}, {NULL, NULL}};
CONC_MANAGER_REGISTER("Counter", counter_new, free, counter_methods);

/* ------------------------------------------------------- a worker */

/* arg: conc_manager_ref's bytes (address and key). */
static int work(const void *arg, size_t len)
{
    conc_manager_t *m;
    int rc = conc_manager_attach(&m, arg, len, 5.0);
    if (rc) {
        fprintf(stderr, "worker: attach: %s\n", conc_strerror(rc));
        return 1;
    }
    conc_mdict_t *shared;
    conc_mlock_t *lock;
    conc_mns_t *ns = NULL;
    conc_mvalue_t *hits = NULL;
    conc_mobject_t *counter = NULL;
    long n = 0;
    if (conc_manager_dict(m, "shared", &shared) || conc_manager_lock(m, "lock", &lock) ||
        conc_mdict_get_proxy(shared, "ns", 2, (void **)&ns, NULL) ||     /* ns = shared["ns"] */
        conc_mdict_get_proxy(shared, "hits", 4, (void **)&hits, NULL) ||
        conc_mdict_get_proxy(shared, "counter", 7, (void **)&counter, NULL))
        return 2;
    void *out = NULL;
    size_t outlen;
    if (conc_mobject_call(counter, "incr", NULL, 0, &out, &outlen) == 0) /* c.incr() */
        memcpy(&n, out, sizeof n);
    free(out);
    conc_mlock_acquire(lock, true, CONC_FOREVER); /* with lock: hits.value += 1 */
    int h = 0;
    conc_mvalue_get(hits, &h);
    h++;
    conc_mvalue_set(hits, &h);
    conc_mlock_release(lock);
    char msg[32];
    snprintf(msg, sizeof msg, "worker %ld", n);
    conc_mns_set(ns, "last", msg, strlen(msg)); /* ns.last = "worker N" */
    conc_mproxy_free(counter);
    conc_mvalue_free(hits);
    conc_mns_free(ns);
    conc_mlock_free(lock);
    conc_mdict_free(shared);
    conc_manager_free(m);
    return 0;
}
CONC_REGISTER(work);

int main(int argc, char **argv)
{
    CONC_PROCESS_MAIN(argc, argv);
    conc_manager_opts_t o = {.authkey = "example key", .authkey_len = 11};
    conc_manager_t *m;
    int rc = conc_manager_start(&m, &o);
    if (rc) {
        fprintf(stderr, "start: %s\n", conc_strerror(rc));
        return 1;
    }
    conc_mdict_t *shared;
    conc_mlock_t *lock;
    conc_mns_t *ns;
    conc_mvalue_t *hits;
    conc_mobject_t *counter;
    int zero = 0;
    conc_manager_dict(m, "shared", &shared);
    conc_manager_lock(m, "lock", &lock);
    conc_manager_namespace(m, NULL, &ns);
    conc_mns_set(ns, "greeting", "hello", 5);                /* ns.greeting = "hello" */
    conc_manager_value(m, NULL, 'i', &zero, &hits);          /* hits = m.Value("i", 0) */
    conc_manager_make(m, "Counter", NULL, NULL, 0, &counter); /* c = m.Counter() */
    conc_mdict_set_proxy(shared, "ns", 2, ns);               /* shared["ns"] = ns */
    conc_mdict_set_proxy(shared, "hits", 4, hits);
    conc_mdict_set_proxy(shared, "counter", 7, counter);

    void *ref;
    size_t reflen;
    conc_manager_ref(m, &ref, &reflen); /* the manager's address and key, for the children */
    conc_process_t *ps[3];
    conc_process_opts_t po = {.method = CONC_SPAWN};
    for (int i = 0; i < 3; i++) {
        conc_process_new(&ps[i], work, ref, reflen, &po);
        conc_process_start(ps[i]);
    }
    int failed = 0;
    for (int i = 0; i < 3; i++) {
        int code = -1;
        conc_process_join(ps[i], CONC_FOREVER);
        conc_process_exitcode(ps[i], &code);
        failed += code != 0;
        conc_process_free(ps[i]);
    }
    free(ref);

    int h = 0;
    conc_mvalue_get(hits, &h);
    void *last = NULL;
    size_t lastlen = 0;
    conc_mns_get(ns, "last", &last, &lastlen);
    printf("hits.value = %d (3 workers), ns.last = %.*s, failed workers: %d\n", h, (int)lastlen,
           last ? (char *)last : "", failed);
    free(last);
    conc_mobject_free(counter);
    conc_mvalue_free(hits);
    conc_mns_free(ns);
    conc_mlock_free(lock);
    conc_mdict_free(shared);
    conc_manager_free(m);
    return failed || h != 3;
}
