/*
 * tests/hub_backend_test.c — the hub's pollers (io/poller.h): choosing a
 * backend (option, CONC_HUB_BACKEND, fallback when io_uring is refused),
 * io_uring's completion-based operations (cancellation by kill, Timeout
 * scope and deadline with the buffer untouched afterwards; multishot
 * accept), an echo load on every backend, wake-ups from other threads on
 * every backend, and select's FD_SETSIZE limit.
 *
 * The rest of the green and io suites runs on every backend too: CTest
 * reruns them with CONC_HUB_BACKEND set (tests/CMakeLists.txt block in the
 * top CMakeLists).
 */
#include "test_util.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "green/internal.h"
#include "core/fdwait.h"
#include "io/poller.h"

#define PTR(i) ((void *)(intptr_t)(i))

static long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1L << 20 : (long)rl.rlim_cur;
}

static void use_backend(conc_hub_backend_t b)
{
    if (b == CONC_HUB_URING && !conc__uring_available())
        cr_skip_test("io_uring is not available here (disabled, filtered or too old a kernel)");
    conc_hub_opts_t o = {.backend = b};
    cr_assert_eq(conc_hub_init(&o), 0);
    cr_assert_eq(conc_hub_backend(), b);
}

/* ------------------------------------------------------------- choosing */

/* In a fresh child: CONC_HUB_BACKEND=env (NULL: unset), io_uring's probe
 * failing with fail_errno (0: real), then init with `ask`. Exit status:
 * the backend, or 100 + -code. */
static int child_backend(const char *env, int fail_errno, conc_hub_backend_t ask)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (env)
            setenv("CONC_HUB_BACKEND", env, 1);
        else
            unsetenv("CONC_HUB_BACKEND");
        if (fail_errno)
            conc__uring_test_fail(fail_errno);
        conc_hub_opts_t o = {.backend = ask};
        int rc = conc_hub_init(&o);
        _exit(rc ? 100 - rc : (int)conc_hub_backend());
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

Test(hub_choice, by_environment)
{
    cr_assert_eq(child_backend("epoll", 0, CONC_HUB_DEFAULT), CONC_HUB_EPOLL);
    cr_assert_eq(child_backend("poll", 0, CONC_HUB_DEFAULT), CONC_HUB_POLL);
    cr_assert_eq(child_backend("select", 0, CONC_HUB_DEFAULT), CONC_HUB_SELECT);
    int u = child_backend("uring", 0, CONC_HUB_DEFAULT);
    cr_assert_eq(u, conc__uring_available() ? CONC_HUB_URING : CONC_HUB_EPOLL);
    /* nonsense is ignored: the default */
    int d = child_backend(NULL, 0, CONC_HUB_DEFAULT);
    cr_assert_eq(child_backend("bogus", 0, CONC_HUB_DEFAULT), d);
    cr_assert(d == CONC_HUB_EPOLL || d == CONC_HUB_URING);
    /* an explicit option wins over the environment */
    cr_assert_eq(child_backend("select", 0, CONC_HUB_POLL), CONC_HUB_POLL);
}

Test(hub_choice, uring_refused_falls_back_to_epoll)
{
    /* seccomp / io_uring_disabled: EPERM; an old kernel: ENOSYS */
    cr_assert_eq(child_backend("uring", EPERM, CONC_HUB_DEFAULT), CONC_HUB_EPOLL);
    cr_assert_eq(child_backend("uring", ENOSYS, CONC_HUB_DEFAULT), CONC_HUB_EPOLL);
    cr_assert_eq(child_backend(NULL, EPERM, CONC_HUB_DEFAULT), CONC_HUB_EPOLL);
    /* asked for in code: refused, not replaced */
    cr_assert_eq(child_backend(NULL, EPERM, CONC_HUB_URING), 100 - CONC_ENOTSUP);
}

static int fdwait_pair[2];
static void *wait_readable(void *arg)
{
    (void)arg;
    return PTR(conc_wait_read(fdwait_pair[0], 5.0));
}

Test(hub_choice, option_per_hub)
{
    cr_assert_eq(conc_hub_backend(), CONC_HUB_DEFAULT); /* no hub yet */
    cr_assert_str_eq(conc_hub_backend_name(CONC_HUB_URING), "uring");
    cr_assert_str_eq(conc_hub_backend_name(CONC_HUB_SELECT), "select");
    cr_assert_null(conc_hub_backend_name((conc_hub_backend_t)9));
    conc_hub_opts_t bad = {.backend = (conc_hub_backend_t)9};
    cr_assert_eq(conc_hub_init(&bad), CONC_EINVAL);
    use_backend(CONC_HUB_POLL);
    use_backend(CONC_HUB_SELECT); /* idle: switched */
    use_backend(CONC_HUB_EPOLL);
    /* busy: a green thread waits on an fd */
    cr_assert_eq(conc_socketpair(fdwait_pair), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, wait_readable, NULL), 0);
    cr_assert_eq(conc_sleep(0.02), 0);
    conc_hub_opts_t o = {.backend = CONC_HUB_POLL};
    cr_assert_eq(conc_hub_init(&o), CONC_EPERM);
    cr_assert_eq(conc_hub_backend(), CONC_HUB_EPOLL);
    cr_assert_eq(write(fdwait_pair[1], "x", 1), 1);
    void *r;
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq((intptr_t)r, 0);
    conc_green_free(g);
    /* other threads get their own hub, with the process default */
    conc_close(fdwait_pair[0]);
    conc_close(fdwait_pair[1]);
}

/* --------------------------------------------------- wake-ups, every one */

static conc_event_t wake_ev;
static void *setter(void *arg)
{
    (void)arg;
    tu_sleep(0.05);
    conc_event_set(&wake_ev);
    return NULL;
}
static void *wait_event(void *arg)
{
    (void)arg;
    return PTR(conc_event_wait(&wake_ev, 5.0) ? 0 : 1);
}

static void remote_wake(conc_hub_backend_t b)
{
    use_backend(b);
    for (int round = 0; round < 3; round++) {
        conc_event_clear(&wake_ev);
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, wait_event, NULL), 0);
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, setter, NULL), 0);
        void *r;
        double t0 = tu_now();
        cr_assert_eq(conc_green_get(g, 5.0, &r), 0); /* the hub sleeps in its poller meanwhile */
        cr_assert_eq((intptr_t)r, 1, "the event was not seen");
        cr_assert_lt(tu_now() - t0, 2.0);
        pthread_join(t, NULL);
        conc_green_free(g);
    }
}

Test(hub_wake, epoll) { remote_wake(CONC_HUB_EPOLL); }
Test(hub_wake, uring) { remote_wake(CONC_HUB_URING); }
Test(hub_wake, poll) { remote_wake(CONC_HUB_POLL); }
Test(hub_wake, select) { remote_wake(CONC_HUB_SELECT); }

/* ------------------------------------------------- uring: cancellation */

static int sp[2];
static unsigned char rbuf[64];
static void *recv_forever(void *arg)
{
    (void)arg;
    return PTR(conc_recv(sp[0], rbuf, sizeof rbuf, 0, CONC_FOREVER));
}
static _Atomic int scope_fired;
static void *recv_in_scope(void *arg)
{
    (void)arg;
    conc_timeout_begin(0.05);
    ssize_t r = conc_recv(sp[0], rbuf, sizeof rbuf, 0, CONC_FOREVER);
    atomic_store(&scope_fired, conc_timeout_end());
    return PTR(r);
}
static void *read_with_timeout(void *arg)
{
    (void)arg;
    return PTR(conc_read(sp[0], rbuf, sizeof rbuf, 0.05));
}

/* After the call returned: data that arrives is not written into rbuf,
 * and is still there for the next call. */
static void check_untouched(void)
{
    for (size_t i = 0; i < sizeof rbuf; i++)
        cr_assert_eq(rbuf[i], 0xAA, "rbuf[%zu] was written after the call returned", i);
    cr_assert_eq(write(sp[1], "hello", 5), 5);
    cr_assert_eq(conc_sleep(0.05), 0); /* hub turns: a live operation would complete now */
    for (size_t i = 0; i < sizeof rbuf; i++)
        cr_assert_eq(rbuf[i], 0xAA, "rbuf[%zu] was written after the call returned", i);
    char b[16];
    cr_assert_eq(conc_recv(sp[0], b, sizeof b, 0, 1.0), 5, "the bytes were consumed");
    cr_assert_eq(memcmp(b, "hello", 5), 0);
}

static conc_green_t *start_reader(void *(*fn)(void *))
{
    use_backend(CONC_HUB_URING);
    cr_assert_eq(conc_socketpair(sp), 0);
    memset(rbuf, 0xAA, sizeof rbuf);
    conc_green_t *g;
    unsigned long before = conc__tl_hub->nsubmit;
    cr_assert_eq(conc_go(&g, fn, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_gt(conc__tl_hub->nsubmit, before, "the recv was not submitted as an operation");
    return g;
}

Test(hub_uring, recv_cancelled_by_kill, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_reader(recv_forever);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert(conc_green_killed(g));
    check_untouched();
    conc_green_free(g);
    conc_close(sp[0]);
    conc_close(sp[1]);
}

static _Atomic intptr_t killed_rc;
static void *recv_report(void *arg)
{
    (void)arg;
    atomic_store(&killed_rc, (intptr_t)conc_recv(sp[0], rbuf, sizeof rbuf, 0, CONC_FOREVER));
    return NULL;
}
static conc_green_t *remote_target;
static void *remote_killer(void *arg)
{
    (void)arg;
    tu_sleep(0.05);
    conc_green_kill(remote_target, false, 0);
    return NULL;
}

Test(hub_uring, recv_cancelled_by_kill_from_another_thread, .timeout = TU_TIMEOUT)
{
    atomic_store(&killed_rc, 1);
    remote_target = start_reader(recv_report);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, remote_killer, NULL), 0);
    cr_assert_eq(conc_green_join(remote_target, 5.0), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&killed_rc), CONC_EKILLED);
    check_untouched();
    conc_green_free(remote_target);
    conc_close(sp[0]);
    conc_close(sp[1]);
}

Test(hub_uring, recv_cancelled_by_timeout_scope, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_reader(recv_in_scope);
    void *r;
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq((intptr_t)r, CONC_ETIMEDOUT);
    cr_assert_eq(atomic_load(&scope_fired), 1);
    check_untouched();
    conc_green_free(g);
    conc_close(sp[0]);
    conc_close(sp[1]);
}

Test(hub_uring, read_cancelled_by_its_timeout, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_reader(read_with_timeout);
    void *r;
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq((intptr_t)r, CONC_ETIMEDOUT);
    check_untouched();
    conc_green_free(g);
    conc_close(sp[0]);
    conc_close(sp[1]);
}

/* A cancel that cannot be queued (the SQ ring full) is asked for again:
 * the timed-out read ends instead of waiting forever for its data. */
Test(hub_uring, read_timeout_when_the_cancel_fails_at_first, .timeout = TU_TIMEOUT)
{
    conc__uring_test_cancel_fail(3);
    conc_green_t *g = start_reader(read_with_timeout);
    void *r;
    int rc = conc_green_get(g, 5.0, &r);
    conc__uring_test_cancel_fail(0);
    cr_assert_eq(rc, 0, "the read was never cut short: %d", rc);
    cr_assert_eq((intptr_t)r, CONC_ETIMEDOUT);
    check_untouched();
    conc_green_free(g);
    conc_close(sp[0]);
    conc_close(sp[1]);
}

static void *recv_closed(void *arg)
{
    (void)arg;
    ssize_t r = conc_recv(sp[0], rbuf, sizeof rbuf, 0, 5.0);
    return PTR(r == CONC_ESYS ? -errno : r);
}

Test(hub_uring, close_wakes_a_pending_recv, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_reader(recv_closed);
    int fd = sp[0];
    cr_assert_eq(conc_close(fd), 0); /* gevent's cancel_wait: the waiter sees EBADF */
    void *r;
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq((intptr_t)r, -EBADF);
    conc_green_free(g);
    conc_close(sp[1]);
}

/* ------------------------------------------------- uring: multishot accept */

enum { NACC = 200 };
static int acc_lfd, acc_port;
static _Atomic int acc_ok;

static void *acc_server(void *arg)
{
    (void)arg;
    int fds[NACC];
    int n = 0;
    for (; n < NACC; n++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int c = conc_accept(acc_lfd, (struct sockaddr *)&ss, &len, 10.0);
        if (c < 0)
            break;
        if (ss.ss_family != AF_INET)
            break;
        fds[n] = c;
    }
    for (int i = 0; i < n; i++) {
        char b;
        if (conc_read(fds[i], &b, 1, 5.0) == 1 && conc_write(fds[i], &b, 1, 5.0) == 1)
            atomic_fetch_add(&acc_ok, 1);
        conc_close(fds[i]);
    }
    return PTR(n);
}

static void *acc_client(void *arg)
{
    int fd;
    char b = (char)(intptr_t)arg, e = 0;
    if (conc_tcp_dial("127.0.0.1", acc_port, 10.0, &fd) != 0)
        return PTR(1);
    int bad = conc_write(fd, &b, 1, 10.0) != 1 || conc_read(fd, &e, 1, 10.0) != 1 || e != b;
    conc_close(fd);
    return PTR(bad);
}

Test(hub_uring, multishot_accept_of_many_connections, .timeout = TU_TIMEOUT)
{
    if (raise_nofile() < 2 * NACC + 64)
        cr_skip_test("fd limit too low");
    use_backend(CONC_HUB_URING);
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 0, 512, &acc_lfd), 0);
    acc_port = conc_socket_port(acc_lfd);
    conc_green_t *srv, *cl[NACC];
    cr_assert_eq(conc_go(&srv, acc_server, NULL), 0);
    for (int i = 0; i < NACC; i++)
        cr_assert_eq(conc_go(&cl[i], acc_client, PTR(i)), 0);
    cr_assert_eq(conc_green_joinall(cl, NACC, 30.0), 0);
    void *r;
    cr_assert_eq(conc_green_get(srv, 10.0, &r), 0);
    cr_assert_eq((intptr_t)r, NACC);
    cr_assert_eq(atomic_load(&acc_ok), NACC);
    for (int i = 0; i < NACC; i++) {
        cr_assert_eq(conc_green_get(cl[i], 0, &r), 0);
        cr_assert_eq((intptr_t)r, 0, "client %d failed", i);
        conc_green_free(cl[i]);
    }
    conc_green_free(srv);
    if (atomic_load(&conc__uring_multishot))
        cr_assert_lt(conc__tl_hub->narm, 10, "%lu accepts armed for %d connections: not multishot",
                     conc__tl_hub->narm, NACC);
    else
        cr_log_warn("this kernel has no multishot accept: one operation per connection");
    cr_assert_eq(conc_close(acc_lfd), 0);
}

/* ------------------------------------------- echo load, every backend */

static int echo_lfd, echo_port;
static _Atomic int echo_served;
/* Under a sanitizer (poll's scan of every fd each turn makes the load
 * quadratic there): 3 rounds, and 600 connections, 1200 fds, still past
 * FD_SETSIZE for the backends that have no such limit. */
enum { ECHO_ROUNDS = TU_SANITIZED ? 3 : 5, ECHO_MSG = 64, ECHO_MANY = TU_SANITIZED ? 600 : 1000 };

static void *echo_conn(void *arg)
{
    int c = (int)(intptr_t)arg;
    char buf[512];
    ssize_t n;
    while ((n = conc_read(c, buf, sizeof buf, 20.0)) > 0)
        if (conc_write_all(c, buf, (size_t)n, NULL, 20.0) != 0)
            break;
    conc_close(c);
    atomic_fetch_add(&echo_served, 1);
    return NULL;
}

static void *echo_server(void *arg)
{
    (void)arg;
    int c;
    while ((c = conc_accept(echo_lfd, NULL, NULL, CONC_FOREVER)) >= 0)
        if (conc_go(NULL, echo_conn, PTR(c)) != 0)
            conc_close(c);
    return NULL;
}

static void *echo_client(void *arg)
{
    int fd, id = (int)(intptr_t)arg;
    if (conc_tcp_dial("127.0.0.1", echo_port, 20.0, &fd) != 0)
        return PTR(1);
    char out[ECHO_MSG], in[ECHO_MSG];
    int bad = 0;
    for (int r = 0; r < ECHO_ROUNDS && !bad; r++) {
        memset(out, 'a' + (id + r) % 26, sizeof out);
        memcpy(out, &id, sizeof id);
        bad = conc_write_all(fd, out, sizeof out, NULL, 20.0) != 0 ||
              conc_read_exact(fd, in, sizeof in, NULL, 20.0) != 0 || memcmp(in, out, sizeof in) != 0;
    }
    conc_close(fd);
    return PTR(bad ? 2 : 0);
}

static void echo_load(conc_hub_backend_t b, int n)
{
    long lim = raise_nofile();
    if (lim < 2 * n + 64)
        n = (int)(lim - 64) / 2;
    use_backend(b);
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 0, 1024, &echo_lfd), 0);
    echo_port = conc_socket_port(echo_lfd);
    conc_green_t *srv, **cl = calloc((size_t)n, sizeof *cl);
    cr_assert(cl);
    cr_assert_eq(conc_go(&srv, echo_server, NULL), 0);
    double t0 = tu_now();
    for (int i = 0; i < n; i++)
        cr_assert_eq(conc_go(&cl[i], echo_client, PTR(i)), 0);
    cr_assert_eq(conc_green_joinall(cl, (size_t)n, 40.0), 0, "clients did not finish");
    double dt = tu_now() - t0;
    for (int i = 0; i < n; i++) {
        void *r;
        cr_assert_eq(conc_green_get(cl[i], 0, &r), 0);
        cr_assert_eq((intptr_t)r, 0, "client %d failed (%d)", i, (int)(intptr_t)r);
        conc_green_free(cl[i]);
    }
    free(cl);
    cr_assert_eq(conc_green_kill(srv, true, 5.0), 0);
    conc_green_free(srv);
    conc_close(echo_lfd);
    cr_log_info("%s: %d connections x %d round trips in %.3f s", conc_hub_backend_name(b), n, ECHO_ROUNDS, dt);
}

Test(hub_echo, epoll_1000, .timeout = TU_TIMEOUT) { echo_load(CONC_HUB_EPOLL, ECHO_MANY); }
Test(hub_echo, uring_1000, .timeout = TU_TIMEOUT) { echo_load(CONC_HUB_URING, ECHO_MANY); }
Test(hub_echo, poll_1000, .timeout = TU_TIMEOUT) { echo_load(CONC_HUB_POLL, ECHO_MANY); }
/* 2 fds per connection in this process: select stays under FD_SETSIZE */
Test(hub_echo, select_400, .timeout = TU_TIMEOUT) { echo_load(CONC_HUB_SELECT, 400); }

/* ------------------------------------------------ select: FD_SETSIZE */

static int big_fd;
static void *wait_big(void *arg)
{
    (void)arg;
    char b[8];
    intptr_t r1 = conc_recv(big_fd, b, sizeof b, 0, 1.0);
    intptr_t r2 = conc_wait_read(big_fd, 1.0);
    return PTR(r1 == CONC_ERANGE && r2 == CONC_ERANGE);
}

Test(hub_select, fd_past_fd_setsize_is_a_clear_error, .timeout = TU_TIMEOUT)
{
    if (raise_nofile() < FD_SETSIZE + 100)
        cr_skip_test("fd limit under FD_SETSIZE");
    use_backend(CONC_HUB_SELECT);
    cr_assert_eq(conc_socketpair(sp), 0);
    big_fd = fcntl(sp[0], F_DUPFD_CLOEXEC, FD_SETSIZE + 20);
    cr_assert_geq(big_fd, FD_SETSIZE);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, wait_big, NULL), 0);
    void *r;
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq((intptr_t)r, 1, "a wait on fd %d did not return CONC_ERANGE", big_fd);
    conc_green_free(g);
    /* data already there needs no wait: it works */
    cr_assert_eq(write(sp[1], "abc", 3), 3);
    char b[8];
    cr_assert_eq(conc_recv(big_fd, b, sizeof b, 0, 1.0), 3);
    /* and fds under the limit still do */
    fdwait_pair[0] = sp[0];
    cr_assert_eq(conc_go(&g, wait_readable, NULL), 0);
    cr_assert_eq(write(sp[1], "x", 1), 1);
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq((intptr_t)r, 0);
    conc_green_free(g);
    conc_close(big_fd);
    conc_close(sp[0]);
    conc_close(sp[1]);
}

/* --------------------------------- epoll: the fast path of conc__fd_io */

/* A socket the hub knows (its first wait went the general way) is read
 * and written through conc__fd_io (hub_io.c): the hint, the system call
 * and a hub-local park in one function. These check each way out of that
 * park, and the cases that leave the fast path for the general one. */

static int fsp[2];
static char fbuf[16];
static _Atomic int fscope_fired;

/* Waits once (the general path registers fsp[0]), then reads again: the
 * first read was short, so the hub knows the socket ran dry and the fast
 * path parks at once. Returns the second read's result. */
static void *fast_read(void *arg)
{
    (void)arg;
    ssize_t r = conc_read(fsp[0], fbuf, sizeof fbuf, CONC_FOREVER);
    if (r <= 0)
        return PTR(r - 1000);
    return PTR(conc_read(fsp[0], fbuf, sizeof fbuf, CONC_FOREVER));
}

static conc_green_t *start_fast(void *(*fn)(void *))
{
    use_backend(CONC_HUB_EPOLL);
    cr_assert_eq(conc_socketpair(fsp), 0);
    memset(fbuf, 0, sizeof fbuf);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fn, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0); /* it waits: the general path */
    unsigned long before = conc__tl_hub->nfastwait;
    cr_assert_eq(write(fsp[1], "x", 1), 1);
    for (int i = 0; i < 2000 && conc__tl_hub->nfastwait == before; i++)
        conc_sleep(0.001);
    cr_assert_gt(conc__tl_hub->nfastwait, before, "the second read did not park on the fast path");
    return g;
}

static intptr_t fast_result(conc_green_t *g)
{
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    void *r = NULL;
    conc_green_get(g, 0, &r);
    conc_green_free(g);
    return (intptr_t)r;
}

static void fast_done(void)
{
    conc_close(fsp[0]);
    conc_close(fsp[1]);
}

Test(hub_fastio, data_wakes_the_parked_reader, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_fast(fast_read);
    cr_assert_eq(write(fsp[1], "hello", 5), 5);
    cr_assert_eq(fast_result(g), 5);
    cr_assert_eq(memcmp(fbuf, "hello", 5), 0);
    fast_done();
}

Test(hub_fastio, eof_wakes_the_parked_reader, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_fast(fast_read);
    cr_assert_eq(close(fsp[1]), 0);
    cr_assert_eq(fast_result(g), 0, "EOF");
    conc_close(fsp[0]);
}

Test(hub_fastio, reset_is_an_error, .timeout = TU_TIMEOUT)
{
    /* a TCP peer that resets the connection: recv says ECONNRESET */
    use_backend(CONC_HUB_EPOLL);
    int lfd, c;
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 0, 4, &lfd), 0);
    cr_assert_eq(conc_tcp_dial("127.0.0.1", conc_socket_port(lfd), 5.0, &c), 0);
    int s = conc_accept(lfd, NULL, NULL, 5.0);
    cr_assert_geq(s, 0);
    fsp[0] = s;
    fsp[1] = c;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fast_read, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    unsigned long before = conc__tl_hub->nfastwait;
    cr_assert_eq(write(c, "x", 1), 1);
    for (int i = 0; i < 2000 && conc__tl_hub->nfastwait == before; i++)
        conc_sleep(0.001);
    cr_assert_gt(conc__tl_hub->nfastwait, before);
    struct linger lg = {1, 0};
    cr_assert_eq(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    cr_assert_eq(close(c), 0); /* RST */
    cr_assert_eq(fast_result(g), CONC_ESYS);
    conc_close(s);
    conc_close(lfd);
}

Test(hub_fastio, kill_cuts_the_fast_park, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_fast(fast_read);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert(conc_green_killed(g));
    conc_green_free(g);
    /* nothing was read for it: the next read gets the bytes */
    cr_assert_eq(write(fsp[1], "later", 5), 5);
    char b[16];
    cr_assert_eq(conc_read(fsp[0], b, sizeof b, 1.0), 5);
    cr_assert_eq(memcmp(b, "later", 5), 0);
    fast_done();
}

static void *fast_killer(void *arg)
{
    tu_sleep(0.05);
    conc_green_kill(arg, false, 0);
    return NULL;
}

Test(hub_fastio, kill_from_another_thread_cuts_the_fast_park, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_fast(fast_read);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, fast_killer, g), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    pthread_join(t, NULL);
    cr_assert(conc_green_killed(g));
    conc_green_free(g);
    fast_done();
}

Test(hub_fastio, a_second_reader_is_refused, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_fast(fast_read);
    char b[4];
    /* from the main context, both kinds of wait: the fast park's check
     * (no deadline) and the general one's (a deadline) */
    cr_assert_eq(conc_read(fsp[0], b, sizeof b, CONC_FOREVER), CONC_EPERM);
    cr_assert_eq(conc_read(fsp[0], b, sizeof b, 1.0), CONC_EPERM);
    cr_assert_eq(write(fsp[1], "ok", 2), 2);
    cr_assert_eq(fast_result(g), 2);
    fast_done();
}

static void *fast_closer(void *arg)
{
    (void)arg;
    return PTR(conc_close(fsp[0]));
}

Test(hub_fastio, close_wakes_the_parked_reader, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = start_fast(fast_read);
    conc_green_t *c;
    cr_assert_eq(conc_go(&c, fast_closer, NULL), 0);
    cr_assert_eq(fast_result(c), 0);
    intptr_t r = fast_result(g);
    cr_assert_eq(r, CONC_ESYS, "the read of a closed fd: %ld", (long)r);
    conc_close(fsp[1]);
}

/* The waits the fast park leaves to the general one: a deadline, a
 * Timeout scope. */
static void *fast_read_deadline(void *arg)
{
    (void)arg;
    ssize_t r = conc_read(fsp[0], fbuf, sizeof fbuf, CONC_FOREVER);
    if (r <= 0)
        return PTR(r - 1000);
    return PTR(conc_read(fsp[0], fbuf, sizeof fbuf, 0.05));
}
static void *fast_read_scoped(void *arg)
{
    (void)arg;
    ssize_t r = conc_read(fsp[0], fbuf, sizeof fbuf, CONC_FOREVER);
    if (r <= 0)
        return PTR(r - 1000);
    conc_timeout_begin(0.05);
    r = conc_read(fsp[0], fbuf, sizeof fbuf, CONC_FOREVER);
    atomic_store(&fscope_fired, conc_timeout_end());
    return PTR(r);
}

static intptr_t run_registered(void *(*fn)(void *))
{
    use_backend(CONC_HUB_EPOLL);
    cr_assert_eq(conc_socketpair(fsp), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fn, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(write(fsp[1], "x", 1), 1);
    return fast_result(g);
}

Test(hub_fastio, deadline_and_scope_take_the_general_wait, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(run_registered(fast_read_deadline), CONC_ETIMEDOUT);
    fast_done();
    atomic_store(&fscope_fired, -1);
    cr_assert_eq(run_registered(fast_read_scoped), CONC_ETIMEDOUT);
    cr_assert_eq(atomic_load(&fscope_fired), 1, "the scope fired");
    fast_done();
}

/* The main context on the fast path, fed by a green thread and by an OS
 * thread. */
static void *fast_feed(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        conc_sleep(0.005);
        if (conc_write_all(fsp[1], "abcd", 4, NULL, CONC_FOREVER) != 0)
            return PTR(-1);
    }
    return PTR(0);
}
static void *os_feed(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        tu_sleep(0.005);
        if (write(fsp[1], "efgh", 4) != 4)
            return PTR(-1);
    }
    return NULL;
}

Test(hub_fastio, main_context_reads_from_green_and_os_threads, .timeout = TU_TIMEOUT)
{
    use_backend(CONC_HUB_EPOLL);
    cr_assert_eq(conc_socketpair(fsp), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fast_feed, NULL), 0);
    unsigned long before = conc__tl_hub->nfastwait;
    char b[64];
    size_t got = 0;
    while (got < 12) {
        ssize_t r = conc_read(fsp[0], b + got, sizeof b - got, CONC_FOREVER);
        cr_assert_gt(r, 0);
        got += (size_t)r;
    }
    cr_assert_eq(fast_result(g), 0);
    cr_assert_gt(conc__tl_hub->nfastwait, before, "the main context never parked on the fast path");
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, os_feed, NULL), 0);
    got = 0;
    while (got < 12) {
        ssize_t r = conc_read(fsp[0], b + got, sizeof b - got, CONC_FOREVER);
        cr_assert_gt(r, 0);
        got += (size_t)r;
    }
    pthread_join(t, NULL);
    cr_assert_eq(memcmp(b, "efghefghefgh", 12), 0);
    fast_done();
}

/* Writes wait for room the same way: a green writer pushes 4 MB through a
 * socket the main context drains slowly; every byte arrives in order. */
#define FAST_BIG (4 << 20)
static void *fast_big_writer(void *arg)
{
    unsigned char *p = arg;
    size_t sent = 0;
    int rc = conc_write_all(fsp[1], p, FAST_BIG, &sent, CONC_FOREVER);
    if (rc == 0)
        rc = conc_write_all(fsp[1], p, FAST_BIG, &sent, CONC_FOREVER); /* WRITE is registered now */
    return PTR(rc);
}

Test(hub_fastio, writer_waits_for_room, .timeout = TU_TIMEOUT)
{
    use_backend(CONC_HUB_EPOLL);
    cr_assert_eq(conc_socketpair(fsp), 0);
    unsigned char *p = malloc(FAST_BIG), *q = malloc(65536);
    cr_assert(p && q);
    for (size_t i = 0; i < FAST_BIG; i++)
        p[i] = (unsigned char)(i * 7 + (i >> 13));
    unsigned long before = conc__tl_hub->nfastwait;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fast_big_writer, p), 0);
    size_t got = 0;
    while (got < 2 * (size_t)FAST_BIG) {
        ssize_t r = conc_read(fsp[0], q, 65536, 5.0);
        cr_assert_gt(r, 0);
        for (ssize_t i = 0; i < r; i++)
            cr_assert_eq(q[i], p[(got + (size_t)i) % FAST_BIG], "byte %zu", got + (size_t)i);
        got += (size_t)r;
    }
    cr_assert_eq(fast_result(g), 0);
    cr_assert_gt(conc__tl_hub->nfastwait, before, "nobody parked on the fast path");
    free(p);
    free(q);
    fast_done();
}

/* An fd number closed behind the hub's back (close, not conc_close) and
 * reused for a pipe: the table still says "stream socket", recv says
 * ENOTSOCK, and the general path reads the pipe. */
static void *read_one(void *arg)
{
    (void)arg;
    return PTR(conc_read(fsp[0], fbuf, 1, CONC_FOREVER));
}

Test(hub_fastio, reused_fd_number_falls_back, .timeout = TU_TIMEOUT)
{
    use_backend(CONC_HUB_EPOLL);
    cr_assert_eq(conc_socketpair(fsp), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, read_one, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0); /* registered by its wait */
    cr_assert_eq(write(fsp[1], "x", 1), 1);
    cr_assert_eq(fast_result(g), 1); /* a full read: not marked dry */
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    cr_assert_eq(write(pfd[1], "pipe", 4), 4);
    cr_assert_eq(dup2(pfd[0], fsp[0]), fsp[0]); /* closes the socket under the hub */
    close(pfd[0]);
    char b[8];
    cr_assert_eq(conc_read(fsp[0], b, sizeof b, 1.0), 4);
    cr_assert_eq(memcmp(b, "pipe", 4), 0);
    conc_close(fsp[0]);
    conc_close(fsp[1]);
    close(pfd[1]);
}

/* ------------- epoll: a short read that does not mean "drained" (revecho) */

/* The fast path and conc__fd_short take a short read of a stream socket
 * as "drained": the next read skips the system call and parks until the
 * next edge. These are short reads with data still queued and no edge to
 * come: the next read must still get the data (it timed out before). */

/* A green thread that keeps the hub attached (with none left, the main
 * context goes back to plain parking and the hub forgets its fds). */
static void *keeper(void *arg)
{
    (void)arg;
    conc_sleep(30.0);
    return NULL;
}
static conc_green_t *keep_attached(void)
{
    conc_green_t *k;
    cr_assert_eq(conc_go(&k, keeper, NULL), 0);
    return k;
}
static void unkeep(conc_green_t *k)
{
    cr_assert_eq(conc_green_kill(k, true, 5.0), 0);
    conc_green_free(k);
}

/* A TCP pair whose server end s the hub watches for reads (its first
 * wait went the general way) and has seen every edge so far. */
static void tcp_pair_registered(int *lfd, int *s, int *c)
{
    use_backend(CONC_HUB_EPOLL);
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 0, 4, lfd), 0);
    cr_assert_eq(conc_tcp_dial("127.0.0.1", conc_socket_port(*lfd), 5.0, c), 0);
    *s = conc_accept(*lfd, NULL, NULL, 5.0);
    cr_assert_geq(*s, 0);
    fsp[0] = *s;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, read_one, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0); /* registered by its wait */
    cr_assert_eq(write(*c, "x", 1), 1);
    cr_assert_eq(fast_result(g), 1); /* a full read: not marked dry */
}

/* Let the data arrive and the hub reap its edges. */
static void settle(void)
{
    tu_sleep(0.05);
    for (int i = 0; i < 5; i++)
        conc_sleep(0.002);
}

Test(hub_fastio, tcp_urgent_mark_is_not_drained, .timeout = TU_TIMEOUT)
{
    int lfd, s, c;
    conc_green_t *k = keep_attached();
    tcp_pair_registered(&lfd, &s, &c);
    /* a read stops at the urgent mark: "abc" short, "def" still queued */
    cr_assert_eq(send(c, "abc", 3, 0), 3);
    cr_assert_eq(send(c, "X", 1, MSG_OOB), 1);
    cr_assert_eq(send(c, "def", 3, 0), 3);
    settle();
    char b[16];
    cr_assert_eq(conc_recv(s, b, sizeof b, 0, 1.0), 3);
    cr_assert_eq(memcmp(b, "abc", 3), 0);
    ssize_t r = conc_recv(s, b, sizeof b, 0, 1.0);
    cr_assert_eq(r, 3, "the data after the urgent mark: %zd", r);
    cr_assert_eq(memcmp(b, "def", 3), 0);
    conc_close(s);
    conc_close(c);
    conc_close(lfd);
    unkeep(k);
}

Test(hub_fastio, short_oob_read_is_not_drained, .timeout = TU_TIMEOUT)
{
    int lfd, s, c;
    conc_green_t *k = keep_attached();
    tcp_pair_registered(&lfd, &s, &c);
    cr_assert_eq(send(c, "X", 1, MSG_OOB), 1);
    cr_assert_eq(send(c, "def", 3, 0), 3);
    settle();
    char b[16];
    /* the urgent byte: a short read that says nothing of the stream */
    cr_assert_eq(conc_recv(s, b, sizeof b, MSG_OOB, 1.0), 1);
    cr_assert_eq(b[0], 'X');
    ssize_t r = conc_recv(s, b, sizeof b, 0, 1.0);
    cr_assert_eq(r, 3, "the data after the urgent byte: %zd", r);
    conc_close(s);
    conc_close(c);
    conc_close(lfd);
    unkeep(k);
}

/* Unix stream sockets: a read stops after a message that carried fds
 * (SCM_RIGHTS), and with SO_PASSCRED between messages of different
 * writers. */
static void send_with_fd(int sock, const char *data, size_t n, int passfd)
{
    struct iovec v = {(void *)data, n};
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &passfd, sizeof(int));
    cr_assert_eq(sendmsg(sock, &m, 0), (ssize_t)n);
}

Test(hub_fastio, unix_read_after_passed_fd_is_not_drained, .timeout = TU_TIMEOUT)
{
    use_backend(CONC_HUB_EPOLL);
    conc_green_t *k = keep_attached();
    cr_assert_eq(conc_socketpair(fsp), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, read_one, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0); /* registered by its wait */
    cr_assert_eq(write(fsp[1], "x", 1), 1);
    cr_assert_eq(fast_result(g), 1);
    send_with_fd(fsp[1], "ab", 2, 0); /* passes stdin along */
    cr_assert_eq(write(fsp[1], "cd", 2), 2);
    settle();
    char b[16];
    cr_assert_eq(conc_read(fsp[0], b, sizeof b, 1.0), 2); /* "ab": the passed fd ends the read */
    ssize_t r = conc_read(fsp[0], b, sizeof b, 1.0);
    cr_assert_eq(r, 2, "the data after the message with an fd: %zd", r);
    cr_assert_eq(memcmp(b, "cd", 2), 0);
    fast_done();
    unkeep(k);
}

Test(hub_fastio, unix_read_between_writers_with_passcred_is_not_drained, .timeout = TU_TIMEOUT)
{
    use_backend(CONC_HUB_EPOLL);
    conc_green_t *k = keep_attached();
    cr_assert_eq(conc_socketpair(fsp), 0);
    int one = 1;
    cr_assert_eq(setsockopt(fsp[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, read_one, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0); /* registered by its wait */
    cr_assert_eq(write(fsp[1], "x", 1), 1);
    cr_assert_eq(fast_result(g), 1);
    cr_assert_eq(write(fsp[1], "ab", 2), 2);
    pid_t pid = fork(); /* another writer: its messages are not glued to ours */
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(write(fsp[1], "cd", 2) == 2 ? 0 : 1);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    settle();
    char b[16];
    cr_assert_eq(conc_read(fsp[0], b, sizeof b, 1.0), 2); /* "ab": the writer changes */
    ssize_t r = conc_read(fsp[0], b, sizeof b, 1.0);
    cr_assert_eq(r, 2, "the other writer's data: %zd", r);
    cr_assert_eq(memcmp(b, "cd", 2), 0);
    fast_done();
    unkeep(k);
}

/* ------------- epoll: an fd closed behind the hub's back, its number reused
 *
 * The hub watched fsp[0] (edge-triggered: the interest stays), then the
 * socket went away without the hub hearing of it — close(2), dup2(2), or
 * conc_close on another hub's thread — and a new socket got the number.
 * The table still says "watched", so no epoll_ctl would add the new
 * socket, and a reader parked on it would wait for an edge that never
 * comes. The loop re-checks quiet registrations of fds waited on
 * (hub_io.c, FD_QUIET): the read completes (before: parked forever, the
 * join below timed out). conc's own socket makers forget a stale number
 * at creation. */
static int stale_rd;
static char stale_buf[8];
static void *stale_read(void *arg)
{
    (void)arg;
    return PTR(conc_read(stale_rd, stale_buf, sizeof stale_buf, CONC_FOREVER));
}

/* fsp[0] watched for reads by this hub; the returned keeper keeps the
 * hub attached (else it forgets every fd when nothing green is left). */
static conc_green_t *stale_setup(void)
{
    use_backend(CONC_HUB_EPOLL);
    conc_green_t *k = keep_attached();
    cr_assert_eq(conc_socketpair(fsp), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, read_one, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0); /* registered by its wait */
    cr_assert_eq(write(fsp[1], "x", 1), 1);
    cr_assert_eq(fast_result(g), 1);
    cr_assert(conc__tl_hub->fds[fsp[0]].interest & CONC__FD_READ);
    return k;
}

static int plain_pair(int np[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, np), 0);
    return np[0];
}

/* A green reader parks on rd, data comes 20 ms later: it gets it. */
static void stale_read_completes(int rd, int wr)
{
    stale_rd = rd;
    memset(stale_buf, 0, sizeof stale_buf);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, stale_read, NULL), 0);
    cr_assert_eq(conc_sleep(0.02), 0);
    cr_assert_eq(write(wr, "late", 4), 4);
    double t0 = tu_now();
    cr_assert_eq(conc_green_join(g, 10.0), 0, "the reader of a reused fd number never woke");
    void *r = NULL;
    conc_green_get(g, 0, &r);
    conc_green_free(g);
    cr_assert_eq((intptr_t)r, 4);
    cr_assert_eq(memcmp(stale_buf, "late", 4), 0);
    TU_TRACE("reused fd %d: read after %.3f s", rd, tu_now() - t0);
}

/* Closes the watched pair with plain close(2): behind the hub's back. */
static void close_watched_pair(void)
{
    cr_assert_eq(close(fsp[0]), 0);
    cr_assert_eq(close(fsp[1]), 0);
}

/* Makes a plain pair that must reuse the number old, reads from it (it
 * must not hang), closes it and lets the keeper k go. */
static void read_on_reused_plain_pair(conc_green_t *k, int old)
{
    int np[2];
    cr_assert_eq(plain_pair(np), old, "the number was not reused");
    stale_read_completes(np[0], np[1]);
    close(np[0]);
    close(np[1]);
    unkeep(k);
}

Test(hub_stale_fd, plain_close_then_reused_number_does_not_hang, .timeout = TU_TIMEOUT)
{
    conc_green_t *k = stale_setup();
    int old = fsp[0];
    close_watched_pair();
    read_on_reused_plain_pair(k, old);
}

Test(hub_stale_fd, dup2_over_a_watched_fd_does_not_hang, .timeout = TU_TIMEOUT)
{
    conc_green_t *k = stale_setup();
    int np[2];
    plain_pair(np);
    cr_assert_eq(dup2(np[0], fsp[0]), fsp[0]); /* the watched socket goes */
    close(np[0]);
    stale_read_completes(fsp[0], np[1]);
    close(fsp[0]);
    close(fsp[1]);
    close(np[1]);
    unkeep(k);
}

static void *closer_green(void *arg)
{
    (void)arg;
    conc_close(fsp[0]); /* forgets on this thread's hub, not the watcher's */
    conc_close(fsp[1]);
    return NULL;
}

static void *other_hub_closer(void *arg)
{
    (void)arg;
    conc_green_t *g;
    if (conc_go(&g, closer_green, NULL) != 0)
        return PTR(1);
    int rc = conc_green_join(g, 5.0);
    conc_green_free(g);
    return PTR(rc);
}

Test(hub_stale_fd, conc_close_on_another_hubs_thread_does_not_hang, .timeout = TU_TIMEOUT)
{
    conc_green_t *k = stale_setup();
    int old = fsp[0];
    pthread_t t;
    void *r = NULL;
    cr_assert_eq(pthread_create(&t, NULL, other_hub_closer, NULL), 0);
    cr_assert_eq(pthread_join(t, &r), 0);
    cr_assert_eq((intptr_t)r, 0);
    read_on_reused_plain_pair(k, old);
}

Test(hub_stale_fd, conc_socketpair_forgets_a_stale_number, .timeout = TU_TIMEOUT)
{
    conc_green_t *k = stale_setup();
    int old = fsp[0];
    close_watched_pair();
    int np[2];
    cr_assert_eq(conc_socketpair(np), 0);
    cr_assert_eq(np[0], old, "the number was not reused");
    cr_assert_eq(conc__tl_hub->fds[old].registered, 0, "the hub still thinks it watches the new socket");
    cr_assert_eq(conc__tl_hub->fds[old].interest, 0);
    stale_read_completes(np[0], np[1]);
    conc_close(np[0]);
    conc_close(np[1]);
    unkeep(k);
}

/* The same in a hub that never sleeps (a green thread yields all the
 * time, so every poll is a quick look and none is quiet): the check comes
 * from the poll count. */
static _Atomic int busy_stop;
static void *busy_yielder(void *arg)
{
    (void)arg;
    while (!atomic_load(&busy_stop))
        conc_yield();
    return NULL;
}

/* Closes the watched pair behind the hub's back, reuses the number for a
 * plain pair and reads from it while a green thread runs bg beside the
 * reader; returns how long the read took. */
static double stale_read_beside(void *(*bg)(void *))
{
    conc_green_t *k = stale_setup();
    int old = fsp[0];
    close_watched_pair();
    int np[2];
    cr_assert_eq(plain_pair(np), old, "the number was not reused");
    atomic_store(&busy_stop, 0);
    conc_green_t *y;
    cr_assert_eq(conc_go(&y, bg, NULL), 0);
    double t0 = tu_now();
    stale_read_completes(np[0], np[1]);
    double took = tu_now() - t0;
    atomic_store(&busy_stop, 1);
    cr_assert_eq(conc_green_join(y, 5.0), 0);
    conc_green_free(y);
    close(np[0]);
    close(np[1]);
    unkeep(k);
    return took;
}

Test(hub_stale_fd, reused_number_in_a_busy_hub_does_not_hang, .timeout = TU_TIMEOUT)
{
    stale_read_beside(busy_yielder);
}

/* The same in a hub whose sleeps are cut short by a timer (a green thread
 * ticks every 5 ms): no poll is a long quiet one and few are counted, so
 * the check must come from the sleeps that end with nothing to report —
 * within a check interval or two (0.1 s, 0.2 s), not after 2 x 256 ticks
 * (before: about 2.6 s). */
static void *ticker(void *arg)
{
    (void)arg;
    while (!atomic_load(&busy_stop))
        conc_sleep(0.005);
    return NULL;
}

Test(hub_stale_fd, reused_number_with_a_ticking_timer_wakes_within_a_second, .timeout = TU_TIMEOUT)
{
    double took = stale_read_beside(ticker);
    cr_assert_lt(took, 1.0, "a stale registration stayed unchecked for %.3f s under a ticking timer", took);
}

/* An OS thread whose green threads waited on a socket exits with its own
 * context still attached to its hub, idle (a join of the last green
 * thread leaves it so): the hub goes to the free list for the next
 * thread, and must not take the table along — else, once the socket is
 * closed (with conc_close, on a thread whose hub never saw it) and its
 * number reused, the next thread's reader of the new socket waits for an
 * edge that never comes until the stale check finds it (before: 0.1 s or
 * more after the data came). */
static conc__hub_t *exited_hub;
static void *watch_then_exit(void *arg)
{
    (void)arg;
    conc_hub_opts_t o = {.backend = CONC_HUB_EPOLL};
    if (conc_hub_init(&o) != 0 || conc_socketpair(fsp) != 0)
        return PTR(1);
    conc_green_t *g;
    if (conc_go(&g, read_one, NULL) != 0)
        return PTR(2);
    conc_sleep(0.01); /* registered by its wait */
    if (write(fsp[1], "x", 1) != 1 || conc_green_join(g, CONC_FOREVER) != 0) /* no deadline: stays attached */
        return PTR(3);
    conc_green_free(g);
    if (!(conc__tl_hub->fds[fsp[0]].interest & CONC__FD_READ))
        return PTR(4);
    exited_hub = conc__tl_hub;
    return NULL;
}

static void *read_reused_on_recycled_hub(void *arg)
{
    double *took = arg;
    conc_hub_opts_t o = {.backend = CONC_HUB_EPOLL};
    if (conc_hub_init(&o) != 0)
        return PTR(1);
    if (conc__tl_hub != exited_hub)
        return PTR(5); /* not the recycled hub */
    int np[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, np) != 0)
        return PTR(2);
    stale_rd = np[0];
    conc_green_t *g;
    if (conc_go(&g, stale_read, NULL) != 0)
        return PTR(3);
    conc_sleep(0.02);
    if (write(np[1], "late", 4) != 4)
        return PTR(4);
    double t0 = tu_now();
    int rc = conc_green_join(g, 5.0);
    *took = tu_now() - t0;
    void *r = NULL;
    conc_green_get(g, 0, &r);
    conc_green_free(g);
    close(np[0]);
    close(np[1]);
    return rc == 0 && (intptr_t)r == 4 ? NULL : PTR(6);
}

Test(hub_stale_fd, exited_threads_hub_forgets_its_fds, .timeout = TU_TIMEOUT)
{
    pthread_t t;
    void *r = PTR(9);
    cr_assert_eq(pthread_create(&t, NULL, watch_then_exit, NULL), 0);
    cr_assert_eq(pthread_join(t, &r), 0);
    cr_assert_null(r, "setup step %d failed", (int)(intptr_t)r);
    cr_assert_eq(conc_close(fsp[0]), 0);
    cr_assert_eq(conc_close(fsp[1]), 0);
    double took = -1;
    cr_assert_eq(pthread_create(&t, NULL, read_reused_on_recycled_hub, &took), 0);
    cr_assert_eq(pthread_join(t, &r), 0);
    if ((intptr_t)r == 5)
        cr_skip_test("the next thread did not get the exited thread's hub");
    cr_assert_null(r, "step %d failed", (int)(intptr_t)r);
    cr_assert_lt(took, 0.05, "the reader of a reused number on a recycled hub woke %.3f s after its data", took);
}
