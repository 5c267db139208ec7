/*
 * signal.c — model 4, signal-driven I/O (O_ASYNC + F_SETSIG).
 *
 *   Each socket is told to raise a real-time signal when it becomes
 *   readable or writable (fcntl O_ASYNC, F_SETOWN, F_SETSIG). The signal is
 *   blocked and read from a signalfd instead of a handler: each siginfo
 *   names the fd (si_fd) and what happened (si_band, POLLIN/POLLOUT bits).
 *   The kernel only says "something changed", so a notified fd is drained
 *   until EAGAIN (edge-triggered, like EPOLLET).
 *
 * The limit: real-time signals queue, up to RLIMIT_SIGPENDING per user.
 * When the queue is full the kernel drops the event and raises plain SIGIO
 * instead (which carries no fd), so on SIGIO the server rescans every fd —
 * the select-style fallback. Costs: a siginfo of 128 bytes per event
 * copied through the signal queue, one fcntl trio per new connection, and
 * unbounded work after an overflow. Few servers use it (it predates epoll).
 */
#include "io_model.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>

#define MAXFD 65536

static int sigsock; /* SIGRTMIN + 1: the per-fd readiness signal */
static struct conn {
    int len, off;
    char buf[4096];
} *conns[MAXFD];

static void arm(int fd)
{
    struct f_owner_ex me = {.type = F_OWNER_TID, .pid = gettid()};
    fcntl(fd, F_SETOWN_EX, &me);                      /* signal this thread */
    fcntl(fd, F_SETSIG, sigsock);                     /* a queued RT signal with si_fd, not SIGIO */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK);
}

/* Echo everything fd has until EAGAIN; false when it is finished. */
static int drain(int fd)
{
    struct conn *k = conns[fd];
    for (;;) {
        if (k->off == k->len) {
            ssize_t n = read(fd, k->buf, sizeof k->buf);
            if (n < 0 && errno == EAGAIN)
                return 1;
            if (n <= 0)
                break;
            k->off = 0, k->len = (int)n;
        }
        ssize_t w = write(fd, k->buf + k->off, (size_t)(k->len - k->off));
        if (w < 0 && errno == EAGAIN)
            return 1; /* a POLLOUT signal will come when there is room */
        if (w <= 0)
            break;
        k->off += (int)w;
    }
    close(fd);
    free(k);
    conns[fd] = NULL;
    return 0;
}

static void accept_all(int lfd)
{
    int c;
    while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        if (c >= MAXFD || !(conns[c] = calloc(1, sizeof **conns))) {
            close(c);
            continue;
        }
        arm(c);
        drain(c); /* bytes that came before O_ASYNC was set raised no signal */
    }
}

int main(int argc, char **argv)
{
    sigset_t set;
    sigsock = SIGRTMIN + 1;
    sigemptyset(&set);
    sigaddset(&set, sigsock);
    sigaddset(&set, SIGIO); /* the overflow signal */
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0)
        io_model_die("signalfd");
    int lfd = io_model_listen(argc, argv, 1);
    arm(lfd);
    accept_all(lfd);
    for (;;) {
        struct signalfd_siginfo si[64];
        ssize_t n = read(sfd, si, sizeof si); /* blocks until some signal is queued */
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            io_model_die("read signalfd");
        for (size_t i = 0; i < (size_t)n / sizeof *si; i++) {
            if ((int)si[i].ssi_signo == SIGIO) { /* the queue overflowed: events were lost */
                accept_all(lfd);
                for (int fd = 0; fd < MAXFD; fd++)
                    if (conns[fd])
                        drain(fd);
                continue;
            }
            int fd = si[i].ssi_fd;
            if (fd == lfd)
                accept_all(lfd);
            else if (fd >= 0 && fd < MAXFD && conns[fd]) /* stale signals of closed fds are skipped */
                drain(fd);
        }
    }
}
