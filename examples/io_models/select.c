/*
 * select.c — model 3, I/O multiplexing with select(2).
 *
 *   One thread builds two bit sets (fds it wants to read, fds with echo
 *   bytes still to write), sleeps in select() until one of them is ready,
 *   then scans every fd to see which.
 *
 * Costs: the sets are rebuilt and copied into the kernel on every call, the
 * kernel and the program both scan every fd (O(connections) per wake-up
 * however few are ready), and fds at or above FD_SETSIZE (1024) cannot be
 * watched at all — this server refuses them.
 */
#include "io_model.h"

#include <sys/select.h>

static struct conn {
    int len, off; /* echo bytes not yet written back */
    char buf[4096];
} *conns[FD_SETSIZE];

int main(int argc, char **argv)
{
    int lfd = io_model_listen(argc, argv, 1);
    for (;;) {
        fd_set rd, wr;
        int maxfd = lfd;
        FD_ZERO(&rd);
        FD_ZERO(&wr);
        FD_SET(lfd, &rd);
        for (int fd = 0; fd < FD_SETSIZE; fd++)
            if (conns[fd]) {
                FD_SET(fd, conns[fd]->off < conns[fd]->len ? &wr : &rd);
                maxfd = fd > maxfd ? fd : maxfd;
            }
        if (select(maxfd + 1, &rd, &wr, NULL, NULL) < 0) {
            if (errno == EINTR)
                continue;
            io_model_die("select");
        }
        if (FD_ISSET(lfd, &rd)) {
            int c;
            while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                if (c >= FD_SETSIZE || !(conns[c] = calloc(1, sizeof **conns))) {
                    fprintf(stderr, "select: fd %d is past FD_SETSIZE: refused\n", c);
                    close(c);
                }
            }
        }
        for (int fd = 0; fd <= maxfd; fd++) {   /* the scan: which ones were ready? */
            struct conn *k = conns[fd];
            if (!k || !(FD_ISSET(fd, &rd) || FD_ISSET(fd, &wr)))
                continue;
            if (k->off == k->len) {
                ssize_t n = read(fd, k->buf, sizeof k->buf);
                if (n < 0 && errno == EAGAIN)
                    continue;
                if (n <= 0)
                    goto drop;
                k->off = 0, k->len = (int)n;
            }
            ssize_t w = write(fd, k->buf + k->off, (size_t)(k->len - k->off));
            if (w > 0)
                k->off += (int)w;
            else if (!(w < 0 && errno == EAGAIN))
                goto drop;
            continue;
        drop:
            close(fd);
            free(k);
            conns[fd] = NULL;
        }
    }
}
