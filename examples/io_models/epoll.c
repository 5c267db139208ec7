/*
 * epoll.c — model 3c, I/O multiplexing with epoll(7).
 *
 *   The interest list lives in the kernel (epoll_ctl adds an fd once);
 *   epoll_wait sleeps and returns only the fds that are ready. One thread,
 *   a level-triggered loop: read what is there, write it back.
 *
 * Costs: a wake-up costs O(ready fds), not O(connections), which is why
 * nginx, Redis, libuv and Go's netpoller sit on it. Still one epoll_ctl
 * per change of interest (here: only when a write is short), and the
 * program is inverted into callbacks on a state machine per connection.
 * This is also the bench's plain C "epoll" peer.
 */
#include "io_model.h"

#include <sys/epoll.h>

struct conn {
    int fd;
    int len, off;
    char buf[4096];
};

int main(int argc, char **argv)
{
    int lfd = io_model_listen(argc, argv, 1), ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256]; /* NULL: the listener */
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0)
        io_model_die("epoll");
    for (;;) {
        int k = epoll_wait(ep, evs, 256, -1);
        if (k < 0 && errno != EINTR)
            io_model_die("epoll_wait");
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) { /* the listener: take every waiting connection */
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    if (!(c = calloc(1, sizeof *c))) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (c->off == c->len) {
                ssize_t n = read(c->fd, c->buf, sizeof c->buf);
                if (n < 0 && errno == EAGAIN)
                    continue;
                if (n <= 0)
                    goto drop;
                c->off = 0, c->len = (int)n;
            }
            ssize_t w = write(c->fd, c->buf + c->off, (size_t)(c->len - c->off));
            if (w > 0)
                c->off += (int)w;
            else if (!(w < 0 && errno == EAGAIN))
                goto drop;
            if (c->off < c->len || evs[i].events & EPOLLOUT) { /* switch interest only when it changes */
                ev = (struct epoll_event){.events = c->off < c->len ? EPOLLOUT : EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
            continue;
        drop:
            close(c->fd); /* closing also takes it out of the epoll set */
            free(c);
        }
    }
}
