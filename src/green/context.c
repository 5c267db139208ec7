/*
 * context.c — conc_context_kind (conc/green.h): what the calling context
 * is, read from the thread-local current context without creating one (a
 * thread that never used conc is a plain OS thread). Interposers
 * (libconc_patch.so) call it on every intercepted libc call, so it is one
 * TLS load and two compares (two more loads for an OS thread's own context, whose
 * ctx->green is main's also while the loop runs).
 */
#include "green/internal.h"

int conc_context_kind(void)
{
    conc__ctx_t *ctx = conc__cur;
    if (!ctx || !ctx->green)
        return CONC_CTX_THREAD;
    conc__gs_t *gs = ctx->green;
    if (gs->kind == GS_GREEN)
        return CONC_CTX_GREEN;
    /* the loop runs on the OS thread's own context: ctx->green is main's */
    conc__hub_t *h = gs->hub;
    return __atomic_load_n(&h->cur, __ATOMIC_RELAXED) == &h->loop ? CONC_CTX_HUB : CONC_CTX_MAIN;
}
