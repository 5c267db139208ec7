/*
 * fdwait.c — conc__fd_wait for OS threads: poll(2) with the deadline cut
 * to whole milliseconds (rounded up, so it never returns early), the
 * context's timeout scopes included. Green contexts go to their hub.
 */
#include "core/fdwait.h"

#include <errno.h>
#include <poll.h>

#include "conc/base.h"
#include "core/park.h"
#include "core/time.h"

static int fd_poll(conc__ctx_t *ctx, struct pollfd *pp, int64_t dl, int64_t deadline);

int conc__fd_wait(int fd, int events, int64_t deadline)
{
    if (fd < 0 || events <= 0 || (events & ~(CONC__FD_READ | CONC__FD_WRITE)))
        return CONC_EINVAL;
    conc__ctx_t *ctx = conc__ctx();
    if (ctx->ops && ctx->ops->fd_wait)
        return ctx->ops->fd_wait(fd, events, deadline);
    struct pollfd p = {.fd = fd, .events = 0};
    if (events & CONC__FD_READ)
        p.events |= POLLIN;
    if (events & CONC__FD_WRITE)
        p.events |= POLLOUT;
    ctx->cut_scope = -1; /* as conc__park: conc__park_interrupted reads it */
    int64_t dl = ctx->nointr ? deadline : conc__park_deadline(ctx, deadline);
    conc__obs_block(ctx, CONC__WAIT_FD_OBJ(fd, events), CONC__WAIT_FD, deadline);
    int rc = fd_poll(ctx, &p, dl, deadline);
    conc__obs_unblock(ctx);
    return rc;
}

static int fd_poll(conc__ctx_t *ctx, struct pollfd *pp, int64_t dl, int64_t deadline)
{
    struct pollfd p = *pp;
    for (;;) {
        int ms = -1;
        if (dl != CONC__NO_DEADLINE) {
            int64_t left = dl - conc__now_ns();
            if (left <= 0)
                return conc__park_cut(ctx, deadline);
            int64_t m = (left + 999999) / 1000000;
            ms = m > 1000000000 ? 1000000000 : (int)m;
        }
        int r = poll(&p, 1, ms);
        if (r > 0) {
            if (p.revents & POLLNVAL)
                return CONC_EINVAL;
            return 0;
        }
        if (r < 0 && errno != EINTR)
            return CONC_ESYS;
    }
}

void conc__fd_forget(int fd)
{
    conc__ctx_t *ctx = conc__ctx();
    if (ctx->ops && ctx->ops->fd_forget)
        ctx->ops->fd_forget(fd);
}
