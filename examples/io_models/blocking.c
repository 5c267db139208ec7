/*
 * blocking.c — model 1, blocking I/O: one thread per connection.
 *
 *   accept() blocks until a client comes; a conc thread is started for it;
 *   that thread's read() blocks until bytes arrive, write() until the
 *   kernel took them. The code reads top to bottom, like the protocol.
 *
 * Costs: one OS thread (a stack, a kernel task, a scheduler entry) per
 * connection, and every message wakes a thread through the kernel
 * scheduler: two context switches per round trip. Fine for tens of
 * connections, heavy for tens of thousands.
 */
#include "io_model.h"

#include <stdint.h>

#include <conc/thread.h>

static void *serve(void *arg)
{
    int c = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t n;
    while ((n = read(c, buf, sizeof buf)) > 0)      /* blocks this thread only */
        for (ssize_t off = 0, w; off < n; off += w)
            if ((w = write(c, buf + off, (size_t)(n - off))) <= 0)
                goto out;
out:
    close(c);
    return NULL;
}

int main(int argc, char **argv)
{
    int lfd = io_model_listen(argc, argv, 0);
    conc_thread_opts_t o = {.daemon = true, .stack_size = 64 * 1024};
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);  /* blocks */
        conc_thread_t *t;
        if (c < 0)
            continue;
        if (conc_thread_spawn(&t, serve, (void *)(intptr_t)c, &o) != 0) {
            close(c); /* out of threads: refuse this one */
            continue;
        }
        conc_thread_free(t); /* the thread runs on; we do not join it */
    }
}
