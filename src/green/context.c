/*
 * context.c — conc_context_kind (conc/green.h): what the calling context
 * is, read from the thread-local current context without creating one (a
 * thread that never used conc is a plain OS thread). Interposers
 * (libconc_patch.so) call it on every intercepted libc call, so it is one
 * TLS load and two compares.
 */
#include "green/internal.h"

int conc_context_kind(void)
{
    conc__ctx_t *ctx = conc__cur;
    if (!ctx || !ctx->green)
        return CONC_CTX_THREAD;
    switch (((conc__gs_t *)ctx->green)->kind) {
    case GS_GREEN:
        return CONC_CTX_GREEN;
    case GS_LOOP:
        return CONC_CTX_HUB;
    default:
        return CONC_CTX_MAIN;
    }
}
