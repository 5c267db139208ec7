/*
 * forkserver.c — the fork server: a spawned copy of this program, so it is
 * single-threaded, that forks children on request.
 *
 * Start (client, on first use, under fs_lock): make a private 0700
 * directory (mkdtemp), bind and listen on a Unix socket in it, draw a
 * 32-byte random token, spawn the server (mode 's') and hand it the
 * listening socket and the token over the bootstrap socketpair. Then
 * connect and send the token; once connected, unlink the socket and remove
 * the directory — nobody else ever needs to connect. The server accepts a
 * connection only when SO_PEERCRED says the peer is its parent (pid and
 * uid) and it sends the token; anything else is closed unread.
 *
 * Requests travel on that one connection (wire.c), serialised by fs_lock;
 * each carries a fresh socketpair end (the child's status socket) and the
 * client's pidfd as SCM_RIGHTS. The server forks; the child becomes the
 * requested process (its parent_process is the client) and runs the
 * function. The server sends the child's pid and pidfd back on the status
 * socket, reaps the child when SIGCHLD arrives (signalfd) and writes its
 * exit code (int32, -signum if killed) there, then closes it.
 *
 * The server exits when the connection closes: at the client's exit (the
 * exit hook calls conc__forkserver_stop, which also reaps the server) or
 * when the client dies. A forked copy of the client forgets the server (its
 * fds are closed in the child) and starts its own when needed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/park.h"
#include "process/internal.h"
#include "sync/internal.h"

#define TOKEN_LEN 32

static conc_lock_t fs_lock = CONC_LOCK_INIT;
static pid_t fs_pid;
static int fs_pidfd = -1;
static int fs_ctl = -1; /* the authenticated connection */
static int fs_live;      /* atomic: fork-server children not yet reaped */

void conc__forkserver_child_done(void) { atomic_fetch_sub_explicit(CONC__A(&fs_live), 1, RLX); }

static void fs_acquire(void) { conc__lock_hold(&fs_lock); }
static void fs_release(void) { conc_lock_release(&fs_lock); }

/* -------------------------------------------------------------- client */

/* Reap the server (it exits on EOF); gives it 5 s, then SIGKILL. */
static void reap_server_locked(void)
{
    if (fs_ctl >= 0)
        close(fs_ctl);
    fs_ctl = -1;
    if (fs_pidfd >= 0) {
        struct pollfd pf = {fs_pidfd, POLLIN, 0};
        int n;
        do
            n = poll(&pf, 1, 5000);
        while (n < 0 && errno == EINTR);
        if (n == 0)
            conc__pidfd_send_signal(fs_pidfd, SIGKILL);
        siginfo_t si;
        while (waitid(P_PIDFD, (id_t)fs_pidfd, &si, WEXITED) < 0 && errno == EINTR) {
        }
        close(fs_pidfd);
    }
    fs_pidfd = -1;
    fs_pid = 0;
}

static int start_server_locked(void)
{
    char dir[] = "/tmp/conc-fs-XXXXXX";
    const char *tmp = getenv("TMPDIR");
    char dbuf[256];
    char *d;
    if (tmp && *tmp && strlen(tmp) < 200) {
        snprintf(dbuf, sizeof dbuf, "%s/conc-fs-XXXXXX", tmp);
        d = mkdtemp(dbuf);
        if (!d)
            d = mkdtemp(dir);
    } else {
        d = mkdtemp(dir); /* mode 0700 */
    }
    if (!d)
        return CONC_ESYS;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int rc = CONC_ESYS;
    if (strlen(d) + 3 >= sizeof sa.sun_path) {
        rmdir(d);
        return CONC_ESYS;
    }
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/s", d);
    int ls = -1, ctl = -1, boot = -1;
    unsigned char token[TOKEN_LEN];
    size_t got = 0;
    while (got < sizeof token) {
        ssize_t r = getrandom(token + got, sizeof token - got, 0);
        if (r < 0 && errno != EINTR)
            goto out;
        if (r > 0)
            got += (size_t)r;
    }
    ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4) < 0)
        goto out;
    pid_t pid;
    rc = conc__spawn_program(&pid, &boot, 's');
    if (rc)
        goto out;
    fs_pid = pid;
    fs_pidfd = conc__pidfd_open(pid);
    rc = conc__send_fds(boot, token, sizeof token, &ls, 1);
    close(boot);
    boot = -1;
    if (!rc) {
        rc = CONC_ESYS;
        ctl = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (ctl >= 0 && connect(ctl, (struct sockaddr *)&sa, sizeof sa) == 0)
            rc = conc__write_all(ctl, token, sizeof token);
    }
    if (rc) {
        if (ctl >= 0)
            close(ctl);
        ctl = -1;
        reap_server_locked();
        goto out;
    }
    fs_ctl = ctl;
out:
    if (ls >= 0)
        close(ls);
    unlink(sa.sun_path);
    rmdir(d);
    return rc;
}

static int request_locked(const conc__launch_t *l, int status_remote)
{
    if (fs_ctl < 0) {
        int rc = start_server_locked();
        if (rc)
            return rc;
    }
    int self = conc__self_pidfd();
    int fixed[2] = {status_remote, self};
    return conc__req_send(fs_ctl, CONC__REQ_PROCESS, l, l->entry->name, fixed, self >= 0 ? 2 : 1);
}

int conc__forkserver_start(conc__child_t *c, const conc__launch_t *l)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return CONC_ESYS;
    fs_acquire();
    int rc = request_locked(l, sv[1]);
    if (rc == CONC_ESYS && fs_ctl >= 0) {
        /* The server died since the last start: start another, once. */
        reap_server_locked();
        rc = request_locked(l, sv[1]);
    }
    fs_release();
    close(sv[1]);
    if (rc) {
        close(sv[0]);
        return rc;
    }
    int32_t pid = 0;
    int fd = -1, nfd = 0;
    rc = conc__recv_fds(sv[0], &pid, sizeof pid, &fd, 1, &nfd);
    if (rc || pid <= 0) {
        if (nfd)
            close(fd);
        close(sv[0]);
        if (!rc)
            errno = -pid;
        return pid == -ENOMEM ? CONC_ENOMEM : CONC_ESYS;
    }
    c->pid = (pid_t)pid;
    c->pidfd = nfd ? fd : -1;
    c->statusfd = sv[0];
    atomic_fetch_add_explicit(CONC__A(&fs_live), 1, RLX);
    return 0;
}

bool conc__forkserver_stop(void)
{
    /* Children someone still waits for (a pool's workers) keep it. */
    if (conc__load(&fs_live, RLX) > 0)
        return false;
    fs_acquire();
    bool had = fs_ctl >= 0 || fs_pidfd >= 0;
    if (had)
        reap_server_locked();
    fs_release();
    return had;
}

void conc__forkserver_atfork_prepare(void) { fs_acquire(); }
void conc__forkserver_atfork_parent(void) { fs_release(); }

void conc__forkserver_atfork_child(void)
{
    conc_lock_init(&fs_lock);
    if (fs_ctl >= 0)
        close(fs_ctl);
    if (fs_pidfd >= 0)
        close(fs_pidfd);
    fs_ctl = fs_pidfd = -1;
    fs_pid = 0;
    fs_live = 0;
}

/* -------------------------------------------------------------- server */

typedef struct {
    pid_t pid;
    int fd;
} kid_t;

static int accept_parent(int ls, const unsigned char *token)
{
    for (;;) {
        struct pollfd pf = {ls, POLLIN, 0};
        int n = poll(&pf, 1, 10000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1; /* nobody came */
        int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        struct ucred cr;
        socklen_t len = sizeof cr;
        unsigned char got[TOKEN_LEN];
        bool ok = getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.pid == getppid() &&
                  cr.uid == getuid();
        if (ok) {
            struct pollfd pc = {c, POLLIN, 0};
            ok = poll(&pc, 1, 5000) == 1 && conc__read_all(c, got, sizeof got) == 0;
        }
        if (ok) {
            unsigned char diff = 0;
            for (int i = 0; i < TOKEN_LEN; i++)
                diff |= (unsigned char)(got[i] ^ token[i]);
            ok = diff == 0;
        }
        if (ok)
            return c;
        close(c);
    }
}

static void report(kid_t *kids, int *nkids, pid_t pid, int code)
{
    for (int i = 0; i < *nkids; i++) {
        if (kids[i].pid == pid) {
            int32_t v = code;
            conc__write_all(kids[i].fd, &v, sizeof v);
            close(kids[i].fd);
            kids[i] = kids[--*nkids];
            return;
        }
    }
}

_Noreturn void conc__forkserver_main(int boot)
{
    unsigned char token[TOKEN_LEN];
    int ls = -1, nls = 0;
    if (conc__recv_fds(boot, token, sizeof token, &ls, 1, &nls) || nls != 1)
        _exit(255);
    close(boot);
    int ctl = accept_parent(ls, token);
    close(ls);
    if (ctl < 0)
        _exit(255);

    signal(SIGINT, SIG_IGN); /* Ctrl-C is for the parent; EOF ends us */
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        _exit(255);

    kid_t *kids = NULL;
    int nkids = 0, cap = 0;
    for (;;) {
        struct pollfd pf[2] = {{ctl, POLLIN, 0}, {sfd, POLLIN, 0}};
        int n = poll(pf, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0) {
            }
            int st;
            pid_t pid;
            while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
                report(kids, &nkids, pid, WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
        }
        if (!pf[0].revents)
            continue;
        conc__req_t r;
        if (conc__req_recv(ctl, &r))
            break; /* EOF (the parent is gone) or garbage */
        int nfixed = r.nrecv - (int)r.h.nfds;
        if (nfixed < 1) {
            for (int i = 0; i < r.nrecv; i++)
                close(r.fds[i]);
            conc__req_free(&r);
            continue;
        }
        int status = r.fds[0];
        int ppidfd = nfixed > 1 ? r.fds[1] : -1;
        const conc_registration_t *entry = conc_registry_find(r.fn);
        if (nkids == cap) {
            int ncap = cap ? cap * 2 : 16;
            kid_t *nk = realloc(kids, (size_t)ncap * sizeof *nk);
            if (nk) {
                kids = nk;
                cap = ncap;
            }
        }
        pid_t pid = -1;
        int e = 0;
        if (!entry || entry->sig != CONC_SIG_PROCESS)
            e = EINVAL;
        else if (nkids == cap)
            e = ENOMEM;
        else if ((pid = fork()) < 0)
            e = errno;
        if (pid == 0) {
            close(ctl);
            close(sfd);
            close(status);
            for (int i = 0; i < nkids; i++)
                close(kids[i].fd);
            signal(SIGINT, SIG_DFL);
            sigprocmask(SIG_SETMASK, &old, NULL);
            conc__child_info_t info = {r.name, r.ident, r.h.daemon != 0, r.parent_name,
                                       (pid_t)r.h.parent_pid, ppidfd, r.fds + nfixed,
                                       r.nrecv - nfixed, true, CONC_FORKSERVER, r.h.authkey,
                                       r.h.authkey_len};
            conc__become_child(&info);
            conc__child_exit(conc__run_child_fn((conc_process_fn)(void (*)(void))entry->fn, r.arg,
                                                (size_t)r.h.arg_len));
        }
        for (int i = 1; i < r.nrecv; i++)
            close(r.fds[i]);
        conc__req_free(&r);
        if (pid < 0) {
            int32_t v = -e;
            conc__write_all(status, &v, sizeof v);
            close(status);
            continue;
        }
        int pfd = conc__pidfd_open(pid);
        int32_t v = (int32_t)pid;
        conc__send_fds(status, &v, sizeof v, &pfd, pfd >= 0 ? 1 : 0);
        if (pfd >= 0)
            close(pfd);
        kids[nkids].pid = pid;
        kids[nkids].fd = status;
        nkids++;
    }
    _exit(0);
}
