/*
 * nonblocking.c — model 2, non-blocking I/O with a busy retry loop.
 *
 *   Every socket is O_NONBLOCK. One thread sweeps all of them forever:
 *   try accept(), then try read() on each connection; EAGAIN means
 *   "nothing yet, try the next one". Nobody ever sleeps.
 *
 * Costs: a whole CPU at 100 % even when no client sends anything, and a
 * syscall per connection per sweep, most of them answered EAGAIN — the
 * work grows with the number of connections, not with the traffic.
 * Its virtue: one thread, no kernel wait mechanism at all.
 */
#include "io_model.h"

#define MAXC 65536

static struct conn {
    int fd;
    int len, off; /* echo bytes not yet written back */
    char buf[4096];
} *conns[MAXC];
static int nconn;

int main(int argc, char **argv)
{
    int lfd = io_model_listen(argc, argv, 1);
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); /* EAGAIN: none waiting */
        if (c >= 0 && nconn < MAXC && (conns[nconn] = calloc(1, sizeof **conns))) {
            conns[nconn++]->fd = c;
        } else if (c >= 0) {
            close(c);
        }
        for (int i = 0; i < nconn; i++) {
            struct conn *k = conns[i];
            if (k->off == k->len) { /* nothing pending: try to read */
                ssize_t n = read(k->fd, k->buf, sizeof k->buf);
                if (n < 0 && errno == EAGAIN)
                    continue;                   /* the busy part: retry next sweep */
                if (n <= 0)
                    goto drop;
                k->off = 0, k->len = (int)n;
            }
            ssize_t w = write(k->fd, k->buf + k->off, (size_t)(k->len - k->off));
            if (w > 0)
                k->off += (int)w;
            else if (!(w < 0 && errno == EAGAIN))
                goto drop;
            continue;
        drop:
            close(k->fd);
            free(k);
            conns[i--] = conns[--nconn]; /* swap the last one in, look at it next */
        }
    }
}
