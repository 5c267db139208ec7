/* sys.c — see sys.h. */
#define _GNU_SOURCE
#include "core/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

long conc__process_threads(void)
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    /* After the name: state is field 3, num_threads field 20; each step
     * moves p to the space before the next field. */
    for (int field = 2; field < 20 && p; field++)
        p = strchr(p + 1, ' ');
    return p ? strtol(p + 1, NULL, 10) : 0;
}

ssize_t conc__writev_nosigpipe(int fd, const struct iovec *iov, int n)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    bool was_pending = false;
    if (sigismember(&old, SIGPIPE)) { /* the caller blocks it: keep theirs */
        sigset_t pend;
        sigpending(&pend);
        was_pending = sigismember(&pend, SIGPIPE);
    }
    ssize_t r = n == 1 ? write(fd, iov[0].iov_base, iov[0].iov_len) : writev(fd, iov, n);
    if (r < 0 && errno == EPIPE && !was_pending) {
        int e = errno;
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
        }
        errno = e;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}
