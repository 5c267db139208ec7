/*
 * child.c — starting, waiting for and signalling one child process
 * (conc__child_t), whatever the start method. process.c builds the public
 * Process on it; pools use it directly (see internal.h).
 *
 * Every child is known by a pidfd: fork and spawn children are ours, so
 * the pidfd is polled and then reaped with waitid(P_PIDFD). A fork-server
 * child is the server's: the server sends us its pidfd (the sentinel, it
 * still becomes readable when the child ends) and, once it has reaped the
 * child, its exit code on a per-child status socket; we wait on that
 * socket. Reaping is serialised by the child's lock so several threads may
 * wait at once; `done` is published last.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trace/obs.h"
#include "core/park.h"
#include "core/time.h"
#include "core/fdwait.h"
#include "core/sys.h"
#include "process/internal.h"
#include "sync/internal.h"

/* -------------------------------------------------------- start method */

static int default_method; /* atomic conc_start_method_t */

int conc_set_start_method(conc_start_method_t m)
{
    if ((int)m < CONC_START_DEFAULT || m > CONC_FORKSERVER)
        return CONC_EINVAL;
    conc__store(&default_method, (int)m, RLX);
    return 0;
}

conc_start_method_t conc_get_start_method(void)
{
    return (conc_start_method_t)conc__load(&default_method, RLX);
}

const char *conc_start_method_name(conc_start_method_t m)
{
    switch (m) {
    case CONC_FORK: return "fork";
    case CONC_SPAWN: return "spawn";
    case CONC_FORKSERVER: return "forkserver";
    case CONC_START_DEFAULT: return "default";
    }
    return "unknown";
}

conc_start_method_t conc__resolve_method(conc_start_method_t m)
{
    if (m == CONC_START_DEFAULT)
        m = (conc_start_method_t)conc__load(&default_method, RLX);
    if (m == CONC_START_DEFAULT)
        m = conc__process_threads() == 1 ? CONC_FORK : CONC_FORKSERVER;
    return m;
}

/* ---------------------------------------------------------------- fork */

static int fork_start(conc__child_t *c, const conc__launch_t *l)
{
    conc_process_fn fn = l->entry ? (conc_process_fn)(void (*)(void))l->entry->fn : l->fork_fn;
    if (!fn)
        return CONC_EINVAL;
    int ppidfd = conc__self_pidfd(); /* inherited: the child's parent pidfd */
    pid_t ppid = getpid();
    conc__flush_std(); /* buffered output is written once, not once per process */
    pid_t pid = fork();
    if (pid < 0)
        return errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS;
    if (pid == 0) {
        conc__child_info_t info = {l->name, l->ident, l->daemon, NULL, ppid, ppidfd, l->fds, l->nfds, true,
                                   CONC_FORK, l->authkey, l->authkey_len};
        conc__become_child(&info);
        conc__child_exit(conc__run_child_fn(fn, l->arg, l->len));
    }
    c->pid = pid;
    c->pidfd = conc__pidfd_open(pid);
    if (c->pidfd < 0) {
        int e = errno;
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        errno = e;
        return CONC_ESYS;
    }
    return 0;
}

/* --------------------------------------------------------------- start */

int conc__child_start(conc__child_t *c, const conc__launch_t *l)
{
    if (!c || !l || l->nfds < 0 || l->nfds > CONC__MAX_FDS || (l->nfds && !l->fds) || (l->len && !l->arg))
        return CONC_EINVAL;
    memset(c, 0, sizeof *c);
    c->pidfd = -1;
    c->statusfd = -1;
    conc_lock_init(&c->mu);
    if (conc__unguarded()) {
        fprintf(stderr, "conc: a child started by spawn tried to start a process before "
                        "CONC_PROCESS_MAIN(argc, argv) ran: call it first thing in main\n");
        return CONC_EPERM;
    }
    conc_start_method_t m = conc__resolve_method(l->method);
    c->method = m;
    conc__process_exit_hook_once();
    if (m != CONC_FORK && (!l->entry || !l->entry->fn || l->entry->sig != CONC_SIG_PROCESS))
        return CONC_EINVAL;
    int rc;
    switch (m) {
    case CONC_FORK: rc = fork_start(c, l); break;
    case CONC_SPAWN: rc = conc__spawn_start(c, l); break;
    case CONC_FORKSERVER: rc = conc__forkserver_start(c, l); break;
    default: return CONC_EINVAL;
    }
    if (rc == 0 && conc__obs_on(CONC__OBS_TRACE))
        conc__trace_process(CONC__PROC_START, (long)c->pid, 0);
    return rc;
}

/* ---------------------------------------------------------------- wait */

static int status_code(const siginfo_t *si)
{
    if (si->si_code == CLD_EXITED)
        return si->si_status;
    return -si->si_status; /* CLD_KILLED, CLD_DUMPED */
}

static void publish(conc__child_t *c, int code)
{
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__trace_process(CONC__PROC_EXIT, (long)c->pid, code);
    c->exitcode = code;
    conc__store(&c->done, 1, REL);
}

/* Under c->mu: try to collect the exit status without blocking. */
static bool reap_locked(conc__child_t *c)
{
    if (conc__load(&c->done, ACQ))
        return true;
    if (c->method == CONC_FORKSERVER) {
        /* The sentinel (the pidfd) turns readable when the child dies; the
         * status comes a moment later, once the server has reaped it. Both
         * must tell the same story: a dead child is waited for until its
         * status is in (the server does that at once; 10 s covers a
         * stopped or swamped server, after which the child counts as
         * still running). */
        struct pollfd pf[2] = {{c->statusfd, POLLIN, 0}, {c->pidfd, POLLIN, 0}};
        int n;
        do
            n = poll(pf, c->pidfd >= 0 ? 2 : 1, 0);
        while (n < 0 && errno == EINTR);
        if (n > 0 && !pf[0].revents) {
            do
                n = poll(pf, 1, 10000);
            while (n < 0 && errno == EINTR);
        }
        if (n <= 0 || !pf[0].revents)
            return false;
        int32_t code;
        if (conc__read_all(c->statusfd, &code, sizeof code) != 0)
            code = 255; /* the server went away: nobody knows */
        publish(c, code);
        conc__forkserver_child_done();
        return true;
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r;
    do
        r = waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        publish(c, 255); /* ECHILD: reaped behind our back (SIGCHLD ignored?) */
        return true;
    }
    if (si.si_pid == 0)
        return false;
    publish(c, status_code(&si));
    return true;
}

bool conc__child_poll(conc__child_t *c)
{
    if (conc__load(&c->done, ACQ))
        return true;
    conc__lock_hold(&c->mu);
    bool r = reap_locked(c);
    conc_lock_release(&c->mu);
    return r;
}

int conc__child_wait(conc__child_t *c, int64_t deadline)
{
    int fd = c->method == CONC_FORKSERVER ? c->statusfd : c->pidfd;
    for (;;) {
        if (conc__child_poll(c))
            return 0;
        /* Parks only the caller: a green thread waits in its hub's epoll,
         * an OS thread in poll(2). */
        int rc = conc__fd_wait(fd, CONC__FD_READ, deadline);
        if (rc == CONC_ETIMEDOUT || (rc != 0 && rc != CONC_ESYS))
            return conc__child_poll(c) ? 0 : rc; /* timeout, kill, timeout scope */
    }
}

int conc__child_signal(conc__child_t *c, int sig)
{
    if (conc__load(&c->done, ACQ) || c->pidfd < 0)
        return 0;
    if (conc__pidfd_send_signal(c->pidfd, sig) == 0 || errno == ESRCH)
        return 0;
    return CONC_ESYS;
}

void conc__child_release(conc__child_t *c)
{
    if (c->method == CONC_FORKSERVER && c->statusfd >= 0 && !conc__load(&c->done, ACQ))
        conc__forkserver_child_done(); /* abandoned unreaped */
    if (c->pidfd >= 0) {
        conc__fd_forget(c->pidfd); /* a hub may watch it */
        close(c->pidfd);
    }
    if (c->statusfd >= 0) {
        conc__fd_forget(c->statusfd);
        close(c->statusfd);
    }
    c->pidfd = c->statusfd = -1;
}
