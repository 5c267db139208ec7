/*
 * Passing file descriptors over a Pipe: send_handle / recv_handle
 * (conc_conn_send_handle / conc_conn_recv_handle in conc/ipc.h), ported
 * from CPython's _test_multiprocessing.py _TestPicklingConnections /
 * test_fd_transfer (a child writes through an fd it received), plus:
 * handles interleave with ordinary messages (also when everything arrived
 * in one read); received fds are close-on-exec; a simplex (OS) pipe is
 * CONC_ENOTSUP; a hostile peer (extra fds, no fd, control data cut short,
 * stray fds on ordinary messages, a plain message where a handle is
 * expected) gets CONC_EBROKEN and leaks nothing; recv_handle is colorless.
 */
#include "test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <conc/ipc.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(fdpass, .init = setup, .timeout = TU_TIMEOUT);

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the DIR's own fd */
}

Test(fdpass, roundtrip_in_process)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(conc_conn_send_handle(a, p[1]), 0);
    int fd = -1;
    cr_assert_eq(conc_conn_recv_handle(b, &fd), 0);
    cr_assert_geq(fd, 0);
    cr_assert_neq(fd, p[1]);
    cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "received fds are close-on-exec");
    cr_assert_eq(write(fd, "hi", 2), 2);
    char buf[4] = {0};
    cr_assert_eq(read(p[0], buf, sizeof buf), 2);
    cr_assert_str_eq(buf, "hi");
    close(fd);
    close(p[0]);
    close(p[1]);
    conc_conn_close(a);
    conc_conn_close(b);
}

/* test_fd_transfer: the child gets a file's fd and writes to it */
Test(fdpass, child_writes_through_received_fd)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    char path[] = "/tmp/conc_fdpass_XXXXXX";
    int f = mkstemp(path);
    cr_assert_geq(f, 0);
    unlink(path);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd;
        if (conc_conn_recv_handle(b, &fd) != 0)
            _exit(1);
        if (write(fd, "foo", 3) != 3)
            _exit(2);
        _exit(0);
    }
    cr_assert_eq(conc_conn_send_handle(a, f), 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    char buf[8] = {0};
    cr_assert_eq(pread(f, buf, sizeof buf, 0), 3);
    cr_assert_str_eq(buf, "foo");
    close(f);
    conc_conn_close(a);
    conc_conn_close(b);
}

Test(fdpass, interleaved_with_messages)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    /* everything is sent before the first read: one read may bring it all */
    cr_assert_eq(conc_conn_send_bytes(a, "one", 3), 0);
    cr_assert_eq(conc_conn_send_handle(a, p[0]), 0);
    cr_assert_eq(conc_conn_send_bytes(a, "two", 3), 0);
    cr_assert_eq(conc_conn_send_handle(a, p[1]), 0);
    cr_assert_eq(conc_conn_send_bytes(a, "three", 5), 0);
    char buf[8];
    size_t len;
    int r = -1, w = -1;
    cr_assert_eq(conc_conn_recv_bytes_into(b, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 3);
    cr_assert_eq(conc_conn_recv_handle(b, &r), 0);
    cr_assert_eq(conc_conn_recv_bytes_into(b, buf, sizeof buf, &len), 0);
    cr_assert_eq(memcmp(buf, "two", 3), 0);
    cr_assert_eq(conc_conn_recv_handle(b, &w), 0);
    cr_assert_eq(conc_conn_recv_bytes_into(b, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 5);
    /* r and w are the two ends of the same pipe */
    cr_assert_eq(write(w, "x", 1), 1);
    cr_assert_eq(read(r, buf, 1), 1);
    cr_assert_eq(buf[0], 'x');
    close(r), close(w), close(p[0]), close(p[1]);
    conc_conn_close(a);
    conc_conn_close(b);
}

Test(fdpass, bad_input)
{
    conc_conn_t *r, *w;
    cr_assert_eq(conc_pipe(false, &r, &w), 0); /* an OS pipe */
    int fd;
    cr_assert_eq(conc_conn_send_handle(w, 0), CONC_ENOTSUP);
    cr_assert_eq(conc_conn_recv_handle(r, &fd), CONC_ENOTSUP);
    cr_assert_eq(fd, -1);
    conc_conn_close(r);
    conc_conn_close(w);
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    cr_assert_eq(conc_conn_send_handle(a, -1), CONC_EINVAL);
    int dead = dup(0);
    close(dead);
    cr_assert_eq(conc_conn_send_handle(a, dead), CONC_EINVAL);
    cr_assert_eq(conc_conn_send_handle(NULL, 0), CONC_EINVAL);
    cr_assert_eq(conc_conn_recv_handle(b, NULL), CONC_EINVAL);
    cr_assert_eq(conc_conn_recv_handle(NULL, &fd), CONC_EINVAL);
    /* the connection is still fine */
    cr_assert_eq(conc_conn_send_bytes(a, "ok", 2), 0);
    char buf[4];
    size_t len;
    cr_assert_eq(conc_conn_recv_bytes_into(b, buf, sizeof buf, &len), 0);
    /* the peer closes: EOF */
    conc_conn_close(a);
    cr_assert_eq(conc_conn_recv_handle(b, &fd), CONC_EEOF);
    conc_conn_close(b);
}

/* ------------------------------------------------------------ hostile */

/* A raw frame (8-byte length + body) sent with nfds copies of fd. */
static void raw_send(int sock, const void *body, size_t len, int fd, int nfds)
{
    char msg[64];
    uint64_t h = len;
    memcpy(msg, &h, 8);
    memcpy(msg + 8, body, len);
    struct iovec iov = {msg, 8 + len};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(32 * sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
        ctl.h.cmsg_level = SOL_SOCKET;
        ctl.h.cmsg_type = SCM_RIGHTS;
        ctl.h.cmsg_len = CMSG_LEN(nfds * sizeof(int));
        for (int i = 0; i < nfds; i++)
            memcpy(CMSG_DATA(&ctl.h) + i * sizeof(int), &fd, sizeof fd);
        m.msg_control = &ctl;
        m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    }
    cr_assert_eq(sendmsg(sock, &m, 0), (ssize_t)(8 + len));
}

static const char HANDLE[12] = {'c', 'o', 'n', 'c', '-', 'f', 'd', 0, 1, 0, 0, 0};

Test(fdpass, hostile_peer_leaks_nothing)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    conc_conn_t *c;
    cr_assert_eq(conc_conn_from_fd(sv[0], true, true, &c), 0);
    int base = open_fds();
    int fd;
    /* extra fds with a handle message */
    raw_send(sv[1], HANDLE, sizeof HANDLE, 1, 3);
    cr_assert_eq(conc_conn_recv_handle(c, &fd), CONC_EBROKEN);
    cr_assert_eq(fd, -1);
    cr_assert_eq(open_fds(), base, "extra fds were kept");
    /* no fd at all */
    raw_send(sv[1], HANDLE, sizeof HANDLE, 1, 0);
    cr_assert_eq(conc_conn_recv_handle(c, &fd), CONC_EBROKEN);
    /* more fds than the control buffer holds: cut short (MSG_CTRUNC) */
    raw_send(sv[1], HANDLE, sizeof HANDLE, 1, 20);
    cr_assert_eq(conc_conn_recv_handle(c, &fd), CONC_EBROKEN);
    cr_assert_eq(open_fds(), base, "fds of a truncated message were kept");
    /* a count other than 1 / a bad magic */
    char bad[12];
    memcpy(bad, HANDLE, 12);
    bad[8] = 2;
    raw_send(sv[1], bad, sizeof bad, 1, 1);
    cr_assert_eq(conc_conn_recv_handle(c, &fd), CONC_EBROKEN);
    bad[8] = 1, bad[0] = 'X';
    raw_send(sv[1], bad, sizeof bad, 1, 1);
    cr_assert_eq(conc_conn_recv_handle(c, &fd), CONC_EBROKEN);
    cr_assert_eq(open_fds(), base);
    /* stray fds on ordinary messages: closed once the next is read */
    raw_send(sv[1], "abc", 3, 1, 2);
    raw_send(sv[1], "def", 3, -1, 0);
    char buf[8];
    size_t len;
    cr_assert_eq(conc_conn_recv_bytes_into(c, buf, sizeof buf, &len), 0);
    cr_assert_eq(conc_conn_recv_bytes_into(c, buf, sizeof buf, &len), 0);
    cr_assert_eq(memcmp(buf, "def", 3), 0);
    cr_assert_eq(open_fds(), base, "stray fds were kept");
    /* a good handle still works after all that */
    raw_send(sv[1], HANDLE, sizeof HANDLE, 1, 1);
    cr_assert_eq(conc_conn_recv_handle(c, &fd), 0);
    cr_assert_geq(fd, 0);
    close(fd);
    /* an ordinary message where a handle is expected: consumed, EBROKEN */
    raw_send(sv[1], "hello", 5, -1, 0);
    cr_assert_eq(conc_conn_recv_handle(c, &fd), CONC_EBROKEN);
    /* fds still queued at close are closed */
    raw_send(sv[1], "x", 1, 1, 4);
    cr_assert_eq(conc_conn_poll(c, 5), 0);
    cr_assert_eq(conc_conn_recv_bytes_into(c, buf, sizeof buf, &len), 0);
    cr_assert_eq(open_fds(), base + 4);
    conc_conn_close(c);
    cr_assert_eq(open_fds(), base - 1);
    close(sv[1]);
}

/* ------------------------------------------------------------ colorless */

typedef struct {
    conc_conn_t *c;
    int rc, fd;
} rw_t;

static void *green_recv(void *arg)
{
    rw_t *w = arg;
    w->rc = conc_conn_recv_handle(w->c, &w->fd);
    return NULL;
}

Test(fdpass, recv_handle_is_colorless)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    /* kill cuts it; the connection still works */
    rw_t w = {.c = b};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, green_recv, &w), 0);
    conc_sleep(0.05);
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    cr_assert_eq(w.rc, CONC_EKILLED);
    conc_green_free(g);
    /* a Timeout scope on this thread */
    conc_timeout_begin(0.05);
    int fd;
    cr_assert_eq(conc_conn_recv_handle(b, &fd), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    /* and a green receiver gets it while parked */
    rw_t v = {.c = b};
    cr_assert_eq(conc_go(&g, green_recv, &v), 0);
    conc_sleep(0.02);
    cr_assert_eq(conc_conn_send_handle(a, 0), 0);
    cr_assert_eq(conc_green_join(g, 5), 0);
    cr_assert_eq(v.rc, 0);
    cr_assert_geq(v.fd, 0);
    close(v.fd);
    conc_green_free(g);
    conc_conn_close(a);
    conc_conn_close(b);
}

TU_MAIN_WITH_PROCESS_GUARD()
