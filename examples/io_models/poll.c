/*
 * poll.c — model 3b, I/O multiplexing with poll(2).
 *
 *   Like select, but the interest list is an array of struct pollfd (any
 *   fd number, events per entry) that the program keeps between calls; the
 *   kernel writes the results into revents.
 *
 * Costs: no FD_SETSIZE limit, but the whole array still crosses into the
 * kernel on every call and both sides still scan all of it: O(connections)
 * per wake-up.
 */
#include "io_model.h"

#include <poll.h>

#define MAXC 65536

static struct pollfd pfd[MAXC]; /* pfd[0] is the listener */
static struct conn {
    int len, off;
    char buf[4096];
} *conns[MAXC];
static int n = 1;

int main(int argc, char **argv)
{
    pfd[0] = (struct pollfd){.fd = io_model_listen(argc, argv, 1), .events = POLLIN};
    for (;;) {
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            io_model_die("poll");
        }
        for (int i = 1; i < n; i++) {
            struct conn *k = conns[i];
            if (!pfd[i].revents)
                continue;
            if (k->off == k->len) {
                ssize_t r = read(pfd[i].fd, k->buf, sizeof k->buf);
                if (r < 0 && errno == EAGAIN)
                    continue;
                if (r <= 0)
                    goto drop;
                k->off = 0, k->len = (int)r;
            }
            ssize_t w = write(pfd[i].fd, k->buf + k->off, (size_t)(k->len - k->off));
            if (w > 0)
                k->off += (int)w;
            else if (!(w < 0 && errno == EAGAIN))
                goto drop;
            pfd[i].events = k->off < k->len ? POLLOUT : POLLIN; /* wait to write the rest */
            continue;
        drop:
            close(pfd[i].fd);
            free(k);
            n--;
            pfd[i] = pfd[n], conns[i] = conns[n]; /* swap the last one in, look at it next */
            i--;
        }
        if (pfd[0].revents) {
            int c;
            while ((c = accept4(pfd[0].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                if (n == MAXC || !(conns[n] = calloc(1, sizeof **conns))) {
                    close(c);
                    continue;
                }
                pfd[n++] = (struct pollfd){.fd = c, .events = POLLIN};
            }
        }
    }
}
