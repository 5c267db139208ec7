/*
 * examples/ipc_queue.c — multiprocessing.JoinableQueue between processes.
 *
 * Python:
 *     q = multiprocessing.JoinableQueue()
 *     def worker():
 *         while (job := q.get()) is not None:
 *             print(os.getpid(), "squares", job, "->", job * job)
 *             q.task_done()
 *     for _ in range(2): Process(target=worker).start()
 *     for job in range(1, 7): q.put(job)
 *     q.join()                          # every job processed
 *     for _ in range(2): q.put(None)    # stop the workers
 *
 * Here the workers are plain fork() children (they share the queue's
 * memory); a spawned program would receive conc_mpqueue_fd(q) and call
 * conc_mpqueue_attach. Messages are bytes: a job is an int, "None" is an
 * empty message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <conc.h>
#include <conc/ipc_queue.h>

static void worker(conc_mpqueue_t *q)
{
    for (;;) {
        int job;
        size_t n;
        if (conc_mpqueue_get(q, &job, sizeof job, &n, true, CONC_FOREVER) != 0 || n == 0)
            break; /* None: stop */
        printf("worker %d squares %d -> %d\n", (int)getpid(), job, job * job);
        fflush(stdout);
        conc_mpqueue_task_done(q);
    }
    conc_mpqueue_free(q);
    _exit(0);
}

int main(void)
{
    conc_mpqueue_t *q;
    int rc = conc_mpqueue_new(&q, CONC_MPQ_JOINABLE, 0, 0);
    if (rc != 0) {
        fprintf(stderr, "conc_mpqueue_new: %s\n", conc_strerror(rc));
        return 1;
    }
    pid_t workers[2];
    for (int i = 0; i < 2; i++) {
        fflush(stdout);
        if ((workers[i] = fork()) == 0)
            worker(q);
    }
    for (int job = 1; job <= 6; job++)
        conc_mpqueue_put(q, &job, sizeof job, true, CONC_FOREVER);
    conc_mpqueue_join(q, CONC_FOREVER); /* every job marked done */
    printf("all jobs done, %zu unfinished\n", conc_mpqueue_unfinished_tasks(q));
    for (int i = 0; i < 2; i++)
        conc_mpqueue_put(q, NULL, 0, true, CONC_FOREVER); /* None */
    for (int i = 0; i < 2; i++)
        waitpid(workers[i], NULL, 0);

    /* A small bounded queue: Full, and a buffer too short to hold a message. */
    conc_mpqueue_t *small;
    conc_mpqueue_new(&small, CONC_MPQ_QUEUE, 1, 0); /* Queue(maxsize=1) */
    conc_mpqueue_put(small, "hello, world", 12, true, CONC_FOREVER);
    rc = conc_mpqueue_put_nowait(small, "x", 1);
    printf("put_nowait on a full queue: %s\n", conc_errname(rc));
    char buf[4];
    size_t need;
    rc = conc_mpqueue_get(small, buf, sizeof buf, &need, true, CONC_FOREVER);
    printf("get into 4 bytes: %s, the message needs %zu (still queued: %zu)\n", conc_errname(rc),
           need, conc_mpqueue_qsize(small));
    conc_mpqueue_free(small);
    conc_mpqueue_free(q);
    return 0;
}
