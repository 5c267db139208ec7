/* examples/ipc.c — multiprocessing's Pipe, Value, SharedMemory and a
 * process-shared Lock, with plain fork() children.
 *
 *   1. a Pipe: the child answers the parent's messages;
 *   2. three processes print "<pid> is running" / "<pid> is done":
 *      interleaved without a lock, one after the other with one;
 *   3. a shared counter incremented by two processes, without and with the
 *      Value's lock: the first loses updates, the second does not;
 *   4. SharedMemory found by name.
 */
#define _GNU_SOURCE
#include <conc.h>
#include <conc/ipc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void pipe_demo(void)
{
    conc_conn_t *parent, *child;
    conc_pipe(true, &parent, &child);
    pid_t pid = fork();
    if (pid == 0) {
        conc_conn_close(parent);
        void *msg;
        size_t len;
        while (conc_conn_recv_bytes(child, &msg, &len, 0) == 0) { /* until EOF */
            char reply[64];
            int n = snprintf(reply, sizeof reply, "got %zu bytes", len);
            conc_conn_send_bytes(child, reply, (size_t)n);
            free(msg);
        }
        _exit(0);
    }
    conc_conn_close(child);
    const char *words[] = {"hello", "from the", "parent"};
    for (int i = 0; i < 3; i++) {
        char buf[64];
        size_t n;
        conc_conn_send_bytes(parent, words[i], strlen(words[i]));
        conc_conn_recv_bytes_into(parent, buf, sizeof buf - 1, &n);
        buf[n] = 0;
        printf("pipe: sent '%s', child says '%s'\n", words[i], buf);
    }
    conc_conn_close(parent); /* the child reads EOF and exits */
    waitpid(pid, NULL, 0);
}

static void run_three(conc_plock_t *lock)
{
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        if ((kids[i] = fork()) == 0) {
            if (lock)
                conc_plock_acquire(lock, true, CONC_FOREVER);
            printf("  %d is running\n", (int)getpid());
            fflush(stdout);
            conc_sleep_thread(0.05);
            printf("  %d is done\n", (int)getpid());
            fflush(stdout);
            if (lock)
                conc_plock_release(lock);
            _exit(0);
        }
    }
    for (int i = 0; i < 3; i++)
        waitpid(kids[i], NULL, 0);
}

static void count(conc_value_t *v, bool locked, long n)
{
    volatile long *x = conc_value_ptr(v);
    for (long i = 0; i < n; i++) {
        if (locked)
            conc_value_acquire(v, true, CONC_FOREVER);
        long old = *x;
        if (i % 64 == 0)
            sched_yield(); /* widen the race window */
        *x = old + 1;
        if (locked)
            conc_value_release(v);
    }
}

static void counter_demo(bool locked)
{
    const long n = 20000;
    conc_value_t *v;
    conc_value_new(sizeof(long), NULL, true, &v);
    pid_t pid = fork();
    count(v, locked, n);
    if (pid == 0)
        _exit(0);
    waitpid(pid, NULL, 0);
    printf("counter %s the lock: %ld (expected %ld)\n", locked ? "with" : "without",
           *(long *)conc_value_ptr(v), 2 * n);
    conc_value_free(v);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    pipe_demo();

    printf("three processes, no lock:\n");
    run_three(NULL);
    conc_plock_t *lock;
    conc_plock_new(&lock);
    printf("three processes, one process-shared lock:\n");
    run_three(lock);
    conc_shared_free(lock);

    counter_demo(false);
    counter_demo(true);

    conc_shm_t *shm, *view;
    conc_shm_create(NULL, 64, 0, &shm);
    strcpy(conc_shm_buf(shm), "found by name");
    conc_shm_attach(conc_shm_name(shm), &view); /* what a spawned child does */
    printf("shared memory %s: '%s'\n", conc_shm_name(shm), (char *)conc_shm_buf(view));
    conc_shm_close(view);
    conc_shm_unlink(shm);
    conc_shm_close(shm);
    return 0;
}
