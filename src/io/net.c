/*
 * net.c — listen/dial helpers for TCP and Unix stream sockets (conc/io.h),
 * so that a cooperative echo server is ten lines.
 *
 * Every socket is made O_NONBLOCK|O_CLOEXEC in the socket() call itself
 * (no window in which a fork+exec could inherit it). TCP sockets get
 * TCP_NODELAY: request/response traffic should not wait for Nagle. Linux
 * copies the option from a listening socket to the sockets accept()
 * returns, so setting it on the listener covers the server side.
 *
 * Hosts are literals only (inet_pton), plus "localhost": resolving a name
 * may block for seconds in the resolver, which would stall a hub.
 * On any failure the socket is closed with errno kept from the failing
 * call.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "conc/io.h"
#include "core/fdwait.h"

/* Close s keeping errno; return code. */
static int fail_close(int s, int code)
{
    int e = errno;
    close(s);
    errno = e;
    return code;
}

/* host:port -> address. dflt: the address NULL/"" stands for. */
static int ip_addr(const char *host, int port, const char *dflt, struct sockaddr_storage *ss, socklen_t *len)
{
    if (port < 0 || port > 65535)
        return CONC_EINVAL;
    if (!host || !*host)
        host = dflt;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        return 0;
    }
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { /* "[::1]" */
        if (n - 2 >= sizeof buf)
            return CONC_EINVAL;
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = 0;
        host = buf;
    }
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return 0;
    }
    return CONC_EINVAL;
}

/* path -> Unix address ('@' = abstract). */
static int unix_addr(const char *path, struct sockaddr_un *su, socklen_t *len)
{
    if (!path || !*path)
        return CONC_EINVAL;
    size_t n = strlen(path);
    if (n >= sizeof su->sun_path)
        return CONC_EINVAL;
    memset(su, 0, sizeof *su);
    su->sun_family = AF_UNIX;
    memcpy(su->sun_path, path, n);
    if (path[0] == '@') {
        if (n < 2)
            return CONC_EINVAL;
        su->sun_path[0] = 0; /* abstract: the name is exactly these bytes */
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

static int new_socket(int family, int *s)
{
    *s = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (*s < 0)
        return CONC_ESYS;
    conc__fd_forget(*s); /* a number closed behind our hub's back: not watched */
    if (family != AF_UNIX) {
        int one = 1;
        if (setsockopt(*s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
            return fail_close(*s, CONC_ESYS);
    }
    return 0;
}

static int listen_on(const struct sockaddr *a, socklen_t len, int backlog, int *fd)
{
    int s, rc = new_socket(a->sa_family, &s);
    if (rc)
        return rc;
    if (a->sa_family != AF_UNIX) {
        int one = 1;
        if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
            return fail_close(s, CONC_ESYS);
    }
    if (bind(s, a, len) < 0 || listen(s, backlog ? backlog : SOMAXCONN) < 0)
        return fail_close(s, CONC_ESYS);
    *fd = s;
    return 0;
}

static int dial(const struct sockaddr *a, socklen_t len, double timeout, int *fd)
{
    int s, rc = new_socket(a->sa_family, &s);
    if (rc)
        return rc;
    rc = conc_connect(s, a, len, timeout);
    if (rc)
        return fail_close(s, rc);
    *fd = s;
    return 0;
}

int conc_tcp_listen(const char *host, int port, int backlog, int *fd)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (!fd || backlog < 0 || ip_addr(host, port, "0.0.0.0", &ss, &len))
        return CONC_EINVAL;
    return listen_on((struct sockaddr *)&ss, len, backlog, fd);
}

int conc_tcp_dial(const char *host, int port, double timeout, int *fd)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (!fd || ip_addr(host, port, "127.0.0.1", &ss, &len))
        return CONC_EINVAL;
    if (timeout != CONC_FOREVER && !(timeout >= 0))
        return CONC_EINVAL;
    return dial((struct sockaddr *)&ss, len, timeout, fd);
}

int conc_unix_listen(const char *path, int backlog, int *fd)
{
    struct sockaddr_un su;
    socklen_t len;
    if (!fd || backlog < 0 || unix_addr(path, &su, &len))
        return CONC_EINVAL;
    return listen_on((struct sockaddr *)&su, len, backlog, fd);
}

int conc_unix_dial(const char *path, double timeout, int *fd)
{
    struct sockaddr_un su;
    socklen_t len;
    if (!fd || unix_addr(path, &su, &len))
        return CONC_EINVAL;
    if (timeout != CONC_FOREVER && !(timeout >= 0))
        return CONC_EINVAL;
    return dial((struct sockaddr *)&su, len, timeout, fd);
}

int conc_socketpair(int fds[2])
{
    if (!fds)
        return CONC_EINVAL;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
        return CONC_ESYS;
    conc__fd_forget(fds[0]); /* numbers closed behind our hub's back: not watched */
    conc__fd_forget(fds[1]);
    return 0;
}

int conc_socket_port(int fd)
{
    if (fd < 0)
        return CONC_EINVAL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return CONC_ESYS;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return CONC_EINVAL;
}
