/*
 * manager.c — multiprocessing.Manager: shared objects in a server process.
 *
 * The parent starts a manager, then three worker processes. Each one
 * connects by address and key (as a program on the same machine that was
 * never forked from us would), takes the shared Lock, bumps a counter in
 * the shared dict, appends to the shared list and reports on the Queue.
 *
 * Python equivalent:
 *     with Manager() as m:
 *         d, lock, q = m.dict(), m.Lock(), m.Queue()
 *         ps = [Process(target=work, args=(i, d, lock, q)) for i in range(3)]
 *         ...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <conc.h>
#include <conc/manager.h>

/* Argument for the workers: "address\0key" plus the worker's number. */
typedef struct {
    char address[160];
    unsigned char key[32];
    size_t keylen;
    int id;
} job_t;

static int work(const void *arg, size_t len)
{
    (void)len;
    const job_t *job = arg;
    conc_manager_t *m;
    int rc = conc_manager_connect(&m, job->address, job->key, job->keylen, 5.0);
    if (rc) {
        fprintf(stderr, "worker %d: connect: %s\n", job->id, conc_strerror(rc));
        return 1;
    }
    conc_mdict_t *d;
    conc_mlist_t *log;
    conc_mlock_t *lock;
    conc_mqueue_t *q;
    conc_manager_dict(m, "stats", &d); /* looked up by name */
    conc_manager_list(m, "log", &log);
    conc_manager_lock(m, "lock", &lock);
    conc_manager_queue(m, "done", 0, &q);

    for (int i = 0; i < 100; i++) {
        conc_mlock_acquire(lock, true, CONC_FOREVER); /* with lock: */
        long n = 0;
        void *v;
        size_t vlen;
        if (conc_mdict_get(d, "count", 5, &v, &vlen) == 0) { /* n = d.get("count", 0) */
            memcpy(&n, v, sizeof n);
            free(v);
        }
        n++;
        conc_mdict_set(d, "count", 5, &n, sizeof n); /* d["count"] = n + 1 */
        conc_mlock_release(lock);
    }
    char line[64];
    int k = snprintf(line, sizeof line, "worker %d did 100 increments", job->id);
    conc_mlist_append(log, line, (size_t)k);
    conc_mqueue_put(q, &job->id, sizeof job->id, true, CONC_FOREVER);

    conc_mqueue_free(q);
    conc_mlock_free(lock);
    conc_mlist_free(log);
    conc_mdict_free(d);
    conc_manager_free(m); /* only closes: the server is not ours */
    return 0;
}
CONC_REGISTER(work);

int main(int argc, char **argv)
{
    CONC_PROCESS_MAIN(argc, argv);
    conc_manager_t *m;
    int rc = conc_manager_start(&m, NULL); /* m = Manager() (random authkey) */
    if (rc) {
        fprintf(stderr, "manager: %s\n", conc_strerror(rc));
        return 1;
    }
    printf("manager serving at %s (pid %d)\n", conc_manager_address(m), conc_manager_pid(m));

    conc_mdict_t *d;
    conc_mlist_t *log;
    conc_mqueue_t *q;
    conc_manager_dict(m, "stats", &d);
    conc_manager_list(m, "log", &log);
    conc_manager_queue(m, "done", 0, &q);

    job_t job = {0};
    snprintf(job.address, sizeof job.address, "%s", conc_manager_address(m));
    const void *key = conc_manager_authkey(m, &job.keylen);
    memcpy(job.key, key, job.keylen);
    conc_process_t *ps[3];
    for (int i = 0; i < 3; i++) {
        job.id = i;
        conc_process_new(&ps[i], work, &job, sizeof job, NULL);
        conc_process_start(ps[i]);
    }
    for (int i = 0; i < 3; i++) { /* q.get() three times */
        void *v;
        size_t len;
        if (conc_mqueue_get(q, &v, &len, true, 10.0) == 0) {
            printf("worker %d reported\n", *(int *)v);
            free(v);
        }
    }
    for (int i = 0; i < 3; i++) {
        conc_process_join(ps[i], CONC_FOREVER);
        conc_process_free(ps[i]);
    }

    void *v;
    size_t len, n = 0;
    long count = 0;
    if (conc_mdict_get(d, "count", 5, &v, &len) == 0) {
        memcpy(&count, v, sizeof count);
        free(v);
    }
    printf("count = %ld (3 workers x 100, under the shared lock)\n", count);
    conc_mlist_len(log, &n);
    for (size_t i = 0; i < n; i++)
        if (conc_mlist_get(log, (long)i, &v, &len) == 0) {
            printf("log[%zu] = %.*s\n", i, (int)len, (char *)v);
            free(v);
        }

    conc_mqueue_free(q);
    conc_mlist_free(log);
    conc_mdict_free(d);
    conc_manager_free(m); /* m.shutdown() */
    return count == 300 ? 0 : 1;
}
