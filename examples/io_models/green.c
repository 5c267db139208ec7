/*
 * green.c — model 6, green threads: blocking-style code on an event loop.
 *
 *   The code is model 1's (a loop of read and write per connection), but
 *   each connection is a conc green thread, not an OS thread. conc_read
 *   tries the read; on EAGAIN it parks only this green thread and the hub
 *   (one per OS thread) waits on its poller — epoll today, the backend named
 *   by CONC_HUB_BACKEND where the hub has several — and switches to the
 *   green thread whose fd became ready. gevent's StreamServer, Go's
 *   goroutine per connection.
 *
 * Costs: a small lazily committed stack per connection (about a page while
 * it waits) and a user-space context switch per wake-up; all on one core.
 * Gains: the readability of model 1 with the scaling of model 3.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <conc.h>
#include <conc/green.h>
#include <conc/io.h>

static void *serve(void *arg)
{
    int c = (int)(intptr_t)arg;
    char buf[1024]; /* small: an idle connection's stack stays within a page or two */
    ssize_t n;
    while ((n = conc_read(c, buf, sizeof buf, CONC_FOREVER)) > 0) /* parks this green thread only */
        if (conc_write_all(c, buf, (size_t)n, NULL, CONC_FOREVER) != 0)
            break;
    conc_close(c);
    return NULL;
}

int main(int argc, char **argv)
{
    int lfd, c, rc = conc_tcp_listen("127.0.0.1", argc > 1 ? atoi(argv[1]) : 0, 0, &lfd);
    if (rc != 0) {
        fprintf(stderr, "green: listen: %s\n", conc_strerror(rc));
        return 1;
    }
    printf("ready %d\n", conc_socket_port(lfd));
    fflush(stdout);
    conc_green_opts_t o = {.stack_size = 32 * 1024}; /* an echo loop needs little stack */
    while ((c = conc_accept(lfd, NULL, NULL, CONC_FOREVER)) >= 0)
        if (conc_go_opts(NULL, &o, serve, (void *)(intptr_t)c) != 0)
            conc_close(c);
    return 1;
}
