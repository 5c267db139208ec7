/*
 * bench/io_load.h — the echo load generator and server harness shared by
 * bench/io_bench.c, tests/io_models_test.c and the tour's io_models chapter.
 *
 * Servers are programs that print "ready <port>" on stdout once they accept
 * connections (examples/io_models/, the bench's peers). io_server_start
 * starts one in a process group of its own, with an optional extra
 * environment variable (CONC_HUB_BACKEND=...), and waits for that line;
 * io_server_stop ends the group (SIGTERM, then SIGKILL) and reaps it.
 *
 * io_load_run is a closed-loop client on one thread and one epoll set:
 * `conns` loopback connections, each with one 64-byte message in flight —
 * the next goes out when the echo of the last is back in full and equal,
 * byte for byte, to what was sent (every message differs). Bounded in
 * count (rounds per connection, 0 = no bound) and in time (warm-up not
 * counted, then `secs`); a server that goes quiet for `stall` seconds, a
 * closed connection or a wrong byte ends the run with why.
 *
 * Everything is static: include it from one .c file per program.
 */
#ifndef CONC_IO_LOAD_H
#define CONC_IO_LOAD_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IO_MSG 64        /* bytes per message */
#define IO_SKIPPED 77    /* a server's exit status for "cannot run here" */

static inline double io_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void io_why(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    if (!why || !n)
        return;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
}

/* Raise RLIMIT_NOFILE to at least want (up to the hard limit; as root the
 * hard limit too). Returns the soft limit now. */
static inline long io_raise_nofile(long want)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0)
        return -1;
    if ((long)r.rlim_cur >= want)
        return (long)r.rlim_cur;
    struct rlimit n = {.rlim_cur = (rlim_t)want, .rlim_max = r.rlim_max};
    if ((long)r.rlim_max < want)
        n.rlim_max = (rlim_t)want; /* works as root only */
    if (setrlimit(RLIMIT_NOFILE, &n) != 0) {
        n.rlim_cur = n.rlim_max = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &n);
    }
    getrlimit(RLIMIT_NOFILE, &r);
    return (long)r.rlim_cur;
}

/* A free loopback TCP port (for servers that take a port in a config). */
static inline int io_pick_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* ------------------------------------------------------------ servers */

typedef struct io_server {
    pid_t pid; /* also its process group */
    int port;
} io_server_t;

extern char **environ;

/* Start argv (argv[0] a path) with env_extra ("NAME=value" or NULL) added
 * to the environment. If wait_port > 0 the server is not expected to print
 * "ready": we wait until wait_port accepts connections instead. Returns 0
 * (server running, port known), 1 (the server exited with status 77: it
 * cannot run here; why says so) or -1 (failed; why). */
static inline int io_server_start(char *const argv[], const char *env_extra, int wait_port, double timeout,
                           io_server_t *s, char *why, size_t whylen)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        io_why(why, whylen, "pipe: %s", strerror(errno));
        return -1;
    }
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **envp = calloc(ne + 2, sizeof *envp);
    size_t k = 0;
    const char *eq = env_extra ? strchr(env_extra, '=') : NULL;
    for (size_t i = 0; i < ne; i++)
        if (!eq || strncmp(environ[i], env_extra, (size_t)(eq - env_extra) + 1) != 0)
            envp[k++] = environ[i];
    if (env_extra)
        envp[k++] = (char *)env_extra;
    envp[k] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawnattr_init(&at);
    posix_spawnattr_setpgroup(&at, 0);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, &at, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free(envp);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        io_why(why, whylen, "cannot start %s: %s", argv[0], strerror(rc));
        return -1;
    }
    s->pid = pid;
    s->port = -1;
    char line[128];
    size_t len = 0;
    double end = io_now() + timeout;
    while (s->port < 0 && io_now() < end) {
        if (wait_port > 0) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)wait_port),
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
                s->port = wait_port;
            close(fd);
        } else {
            struct pollfd pf = {p[0], POLLIN, 0};
            if (poll(&pf, 1, 50) > 0) {
                ssize_t n = read(p[0], line + len, sizeof line - 1 - len);
                if (n <= 0) {
                    wait_port = -1; /* stdout closed: the server is going away */
                } else {
                    len += (size_t)n;
                    line[len] = 0;
                    int port;
                    if (strchr(line, '\n') && sscanf(line, "ready %d", &port) == 1)
                        s->port = port;
                }
            }
        }
        int st;
        if (s->port < 0 && waitpid(pid, &st, WNOHANG) == pid) {
            close(p[0]);
            s->pid = 0;
            if (WIFEXITED(st) && WEXITSTATUS(st) == IO_SKIPPED) {
                io_why(why, whylen, "%s cannot run here (see its note)", argv[0]);
                return 1;
            }
            io_why(why, whylen, "%s exited (status %d) before it was ready", argv[0],
                   WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            return -1;
        }
        if (s->port < 0 && wait_port > 0)
            usleep(20000);
    }
    close(p[0]);
    if (s->port < 0) {
        io_why(why, whylen, "%s was not ready within %.0f s", argv[0], timeout);
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        s->pid = 0;
        return -1;
    }
    return 0;
}

/* End the server's process group: SIGTERM, up to 2 s, then SIGKILL. */
static inline void io_server_stop(io_server_t *s)
{
    if (s->pid <= 0)
        return;
    kill(-s->pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            kill(-s->pid, SIGKILL); /* stragglers of its group (nginx's worker) */
            s->pid = 0;
            return;
        }
        usleep(10000);
    }
    kill(-s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

/* Resident set size of pid in bytes (VmRSS), -1 if unknown. */
static inline long io_rss_bytes(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* CPU time (user + system, all threads) pid has used, in seconds; -1 if
 * unknown. Clock-tick resolution (10 ms): measure over a second or more. */
static inline double io_cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ------------------------------------------------------------ the client */

typedef struct io_load_opts {
    int port;
    int conns;      /* connections, all open before the first message */
    long rounds;    /* round trips per connection; 0 = until the time is up */
    double warm;    /* seconds run before counting */
    double secs;    /* seconds counted (an upper bound when rounds > 0) */
    double stall;   /* no echo for this long: failure (0 = 5 s) */
    void (*mark)(void *arg, int phase); /* optional: called as counting starts (0) and ends (1) */
    void *mark_arg;
} io_load_opts_t;

typedef struct io_load_result {
    long round_trips; /* counted (after the warm-up) */
    double seconds;   /* counted */
    double rate;      /* round trips per second */
    bool all_done;    /* with rounds > 0: every connection finished its rounds */
} io_load_result_t;

typedef struct io_conn {
    int fd;
    int got;
    long seq;
    unsigned char want[IO_MSG], buf[IO_MSG];
} io_conn_t;

static inline void io__fill(io_conn_t *c, int idx)
{
    uint64_t x = (uint64_t)c->seq * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)idx << 32 | 0x5bd1e995u);
    for (int i = 0; i < IO_MSG; i += 8) {
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ULL;
        x ^= x >> 32;
        memcpy(c->want + i, &x, 8);
    }
}

static inline int io__send(io_conn_t *c)
{
    for (int off = 0; off < IO_MSG;) {
        ssize_t w = send(c->fd, c->want + off, (size_t)(IO_MSG - off), MSG_NOSIGNAL);
        if (w > 0) {
            off += (int)w;
        } else if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {c->fd, POLLOUT, 0};
            poll(&p, 1, 1000);
        } else if (!(w < 0 && errno == EINTR)) {
            return -1;
        }
    }
    return 0;
}

/* Connect n sockets to 127.0.0.1:port (blocking connect, then TCP_NODELAY
 * and O_NONBLOCK). fds[i] = -1 for the ones not opened. Returns 0 or -1. */
static inline int io_dial_many(int port, int n, int *fds, char *why, size_t whylen)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < n; i++)
        fds[i] = -1;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            io_why(why, whylen, "connection %d to 127.0.0.1:%d: %s", i, port, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        fds[i] = fd;
    }
    return 0;
}

/* Run the closed loop. Returns 0 (result in *res) or -1 (why). */
static inline int io_load_run(const io_load_opts_t *o, io_load_result_t *res, char *why, size_t whylen)
{
    int n = o->conns, ep = epoll_create1(EPOLL_CLOEXEC), rc = -1, *fds = calloc((size_t)n, sizeof *fds);
    io_conn_t *cs = calloc((size_t)n, sizeof *cs);
    struct epoll_event *evs = calloc((size_t)n, sizeof *evs);
    double stall = o->stall > 0 ? o->stall : 5.0;
    memset(res, 0, sizeof *res);
    if (!fds || !cs || !evs || ep < 0) {
        io_why(why, whylen, "out of memory or epoll_create1");
        goto out;
    }
    if (io_dial_many(o->port, n, fds, why, whylen) != 0)
        goto out;
    for (int i = 0; i < n; i++) {
        cs[i].fd = fds[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    for (int i = 0; i < n; i++) {
        io__fill(&cs[i], i);
        if (io__send(&cs[i]) != 0) {
            io_why(why, whylen, "send: %s", strerror(errno));
            goto out;
        }
    }
    long count = 0, finished = 0;
    bool counting = o->warm <= 0;
    double start = io_now(), t0 = start, now = start, last = start;
    if (counting && o->mark)
        o->mark(o->mark_arg, 0);
    while (!(o->rounds > 0 && finished == n)) {
        int k = epoll_wait(ep, evs, n, 50);
        if (k < 0 && errno != EINTR) {
            io_why(why, whylen, "epoll_wait: %s", strerror(errno));
            goto out;
        }
        now = io_now();
        if (!counting && now - start >= o->warm) {
            counting = true;
            count = 0;
            t0 = now;
            if (o->mark)
                o->mark(o->mark_arg, 0);
        }
        if (counting && now - t0 >= o->secs)
            break;
        if (now - last > stall) {
            io_why(why, whylen, "no echo for %.0f s (%ld of %d connections done)", stall, finished, n);
            goto out;
        }
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            io_conn_t *c = &cs[i];
            ssize_t r = recv(c->fd, c->buf + c->got, (size_t)(IO_MSG - c->got), 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0) {
                io_why(why, whylen, "connection %d: %s", i, r == 0 ? "closed by the server" : strerror(errno));
                goto out;
            }
            c->got += (int)r;
            if (c->got < IO_MSG)
                continue;
            if (memcmp(c->buf, c->want, IO_MSG) != 0) {
                io_why(why, whylen, "connection %d: message %ld came back different", i, c->seq);
                goto out;
            }
            count++;
            last = now;
            c->got = 0;
            c->seq++;
            if (o->rounds > 0 && c->seq >= o->rounds) {
                finished++;
                continue;
            }
            io__fill(c, i);
            if (io__send(c) != 0) {
                io_why(why, whylen, "connection %d: send: %s", i, strerror(errno));
                goto out;
            }
        }
    }
    now = io_now();
    if (o->mark)
        o->mark(o->mark_arg, 1);
    res->round_trips = count;
    res->seconds = now - t0;
    res->rate = res->seconds > 0 ? (double)count / res->seconds : 0;
    res->all_done = o->rounds > 0 && finished == n;
    if (count == 0)
        io_why(why, whylen, "no round trip in %.1f s", res->seconds);
    else
        rc = 0;
out:
    if (fds)
        for (int i = 0; i < n; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    if (ep >= 0)
        close(ep);
    free(fds);
    free(cs);
    free(evs);
    return rc;
}

#endif /* CONC_IO_LOAD_H */
