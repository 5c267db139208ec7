/*
 * wire.c — how a start request travels to a spawned child or the fork
 * server: a fixed header, then the function name, the process name, its
 * identity, the parent's name and the argument bytes, on a Unix stream
 * socket. The header's sendmsg carries the file descriptors (SCM_RIGHTS):
 * first the fixed ones of the caller (a status socket, the parent's
 * pidfd), then the user's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "process/internal.h"

int conc__pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int conc__pidfd_send_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int conc__write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return CONC_ESYS;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int conc__read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return CONC_ESYS;
        }
        if (r == 0)
            return CONC_EEOF;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int conc__send_fds(int sock, const void *buf, size_t n, const int *fds, int nfds)
{
    union {
        char b[CMSG_SPACE(sizeof(int) * (CONC__MAX_FDS + 3))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {(void *)buf, n};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds > 0) {
        if (nfds > CONC__MAX_FDS + 3)
            return CONC_EINVAL;
        memset(&u, 0, sizeof u);
        m.msg_control = u.b;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t w;
    do
        w = sendmsg(sock, &m, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return CONC_ESYS;
    if ((size_t)w < n)
        return conc__write_all(sock, (const char *)buf + w, n - (size_t)w);
    return 0;
}

int conc__recv_fds(int sock, void *buf, size_t n, int *fds, int maxfds, int *nfds)
{
    union {
        char b[CMSG_SPACE(sizeof(int) * (CONC__MAX_FDS + 3))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {buf, n};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.b;
    m.msg_controllen = sizeof u.b;
    *nfds = 0;
    ssize_t r;
    do
        r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return CONC_ESYS;
    if (r == 0)
        return CONC_EEOF;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int got[CONC__MAX_FDS + 3];
        memcpy(got, CMSG_DATA(c), sizeof(int) * (size_t)k);
        for (int i = 0; i < k; i++) {
            if (*nfds < maxfds)
                fds[(*nfds)++] = got[i];
            else
                close(got[i]);
        }
    }
    if ((size_t)r < n)
        return conc__read_all(sock, (char *)buf + r, n - (size_t)r);
    return 0;
}

static uint32_t slen(const char *s) { return s ? (uint32_t)strlen(s) : 0; }

int conc__req_send(int sock, uint32_t kind, const conc__launch_t *l, const char *fn_name,
                   const int *fixed, int nfixed)
{
    conc__req_hdr_t h;
    memset(&h, 0, sizeof h);
    h.magic = CONC__REQ_MAGIC;
    h.kind = kind;
    const char *pname = conc__self_name();
    h.fn_len = slen(fn_name);
    h.name_len = slen(l->name);
    h.ident_len = slen(l->ident);
    h.parent_name_len = slen(pname);
    h.arg_len = l->len;
    h.parent_pid = (int32_t)getpid();
    h.nfds = (uint32_t)l->nfds;
    h.daemon = l->daemon;
    if (l->authkey_len > CONC__AUTHKEY_MAX)
        return CONC_EINVAL;
    h.authkey_len = (uint16_t)l->authkey_len;
    if (l->authkey_len)
        memcpy(h.authkey, l->authkey, l->authkey_len);
    int fds[CONC__MAX_FDS + 3];
    if (nfixed + l->nfds > CONC__MAX_FDS + 3)
        return CONC_EINVAL;
    for (int i = 0; i < nfixed; i++)
        fds[i] = fixed[i];
    for (int i = 0; i < l->nfds; i++)
        fds[nfixed + i] = l->fds[i];
    /* Small requests go in one message with the header. */
    size_t strs = (size_t)h.fn_len + h.name_len + h.ident_len + h.parent_name_len;
    char small[1024];
    if (sizeof h + strs + l->len <= sizeof small) {
        char *p = small;
        memcpy(p, &h, sizeof h), p += sizeof h;
        if (h.fn_len)
            memcpy(p, fn_name, h.fn_len), p += h.fn_len;
        if (h.name_len)
            memcpy(p, l->name, h.name_len), p += h.name_len;
        if (h.ident_len)
            memcpy(p, l->ident, h.ident_len), p += h.ident_len;
        if (h.parent_name_len)
            memcpy(p, pname, h.parent_name_len), p += h.parent_name_len;
        if (l->len)
            memcpy(p, l->arg, l->len), p += l->len;
        return conc__send_fds(sock, small, (size_t)(p - small), fds, nfixed + l->nfds);
    }
    int rc = conc__send_fds(sock, &h, sizeof h, fds, nfixed + l->nfds);
    if (!rc && h.fn_len)
        rc = conc__write_all(sock, fn_name, h.fn_len);
    if (!rc && h.name_len)
        rc = conc__write_all(sock, l->name, h.name_len);
    if (!rc && h.ident_len)
        rc = conc__write_all(sock, l->ident, h.ident_len);
    if (!rc && h.parent_name_len)
        rc = conc__write_all(sock, pname, h.parent_name_len);
    if (!rc && l->len)
        rc = conc__write_all(sock, l->arg, l->len);
    return rc;
}

void conc__req_free(conc__req_t *r)
{
    free(r->block);
    r->block = NULL;
}

int conc__req_recv(int sock, conc__req_t *r)
{
    memset(r, 0, sizeof *r);
    int rc = conc__recv_fds(sock, &r->h, sizeof r->h, r->fds, CONC__MAX_FDS + 3, &r->nrecv);
    if (rc)
        return rc;
    if (r->h.magic != CONC__REQ_MAGIC || r->h.nfds > CONC__MAX_FDS || r->h.authkey_len > CONC__AUTHKEY_MAX)
        return CONC_ESYS;
    size_t strs = (size_t)r->h.fn_len + r->h.name_len + r->h.ident_len + r->h.parent_name_len;
    if (r->h.fn_len > 4096 || r->h.name_len > 65536 || r->h.ident_len > 4096 ||
        r->h.parent_name_len > 65536 || r->h.arg_len > ((uint64_t)1 << 40))
        return CONC_ESYS;
    /* The argument goes at an offset aligned for any type (malloc's own
     * alignment), so a child may read *(const int *)arg or a struct. */
    size_t argoff = (strs + 4 + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
    size_t total = argoff + (size_t)r->h.arg_len + 1;
    char *b = malloc(total);
    if (!b)
        return CONC_ENOMEM;
    r->block = b;
    rc = conc__read_all(sock, b, strs);
    if (rc)
        return rc;
    /* Re-lay the strings out with terminators: copy from the back. */
    char *s = b + argoff;
    rc = conc__read_all(sock, s, (size_t)r->h.arg_len);
    if (rc)
        return rc;
    r->arg = s;
    char *tmp = malloc(strs + 4);
    if (!tmp)
        return CONC_ENOMEM;
    memcpy(tmp, b, strs);
    char *in = tmp, *out = b;
    uint32_t lens[4] = {r->h.fn_len, r->h.name_len, r->h.ident_len, r->h.parent_name_len};
    char **dst[4] = {&r->fn, &r->name, &r->ident, &r->parent_name};
    for (int i = 0; i < 4; i++) {
        *dst[i] = out;
        memcpy(out, in, lens[i]);
        out[lens[i]] = 0;
        in += lens[i];
        out += lens[i] + 1;
    }
    free(tmp);
    return 0;
}
